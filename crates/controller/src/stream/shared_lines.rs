//! The stream's lines, made once and shared: every pod of a Deployment is sent the same
//! snapshot, and the same delta between the same two versions, so 1,000 replicas cost one
//! diff and one serialization per change, not 1,000.
//!
//! A line is keyed by the pod's namespace and the versions it goes from and to. Versions are
//! unique across the controller's snapshots (a distinct snapshot always has a version of its
//! own), and the namespace is part of the key besides, so a stream is never handed a line
//! made for another namespace's snapshot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// The default of `--stream-line-cache-bytes`.
pub const DEFAULT_LINE_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// At most this many lines are kept, however small.
const MAX_LINES: usize = 1024;

/// What a line carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LineKey {
    pub namespace: String,
    /// `None`: the whole snapshot of `to`; `Some(from)`: the change from `from` to `to`.
    pub from: Option<u64>,
    pub to: u64,
}

/// A bounded cache of lines, oldest evicted first. A line being made is made once: the
/// streams that want it meanwhile wait for it rather than making it again.
pub(crate) struct SharedLines {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    cells: HashMap<LineKey, Arc<OnceCell<Bytes>>>,
    order: VecDeque<LineKey>,
    bytes: usize,
}

impl SharedLines {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    /// The line of `key`, made by `make` unless another stream made it (or is making it).
    pub(crate) async fn get_or_make(&self, key: LineKey, make: impl FnOnce() -> Bytes) -> Bytes {
        let cell = {
            let mut inner = self.lock();
            match inner.cells.get(&key) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    inner.cells.insert(key.clone(), cell.clone());
                    inner.order.push_back(key.clone());
                    cell
                }
            }
        };
        let mut made = false;
        let line = cell
            .get_or_init(|| async {
                made = true;
                make()
            })
            .await
            .clone();
        if made {
            let mut inner = self.lock();
            // Counted only while the cell is still the cache's: an evicted one is not.
            if inner.cells.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inner.bytes += line.len();
            }
            inner.evict(self.max_bytes);
        }
        line
    }

    /// How many lines and bytes are kept, for tests.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.cells.len(), inner.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache is only ever left consistent: a panic elsewhere does not poison its use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn evict(&mut self, max_bytes: usize) {
        while self.bytes > max_bytes || self.cells.len() > MAX_LINES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(cell) = self.cells.remove(&oldest) {
                self.bytes -= cell.get().map_or(0, Bytes::len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, from: Option<u64>, to: u64) -> LineKey {
        LineKey {
            namespace: namespace.into(),
            from,
            to,
        }
    }

    #[tokio::test]
    async fn a_line_is_made_once_per_namespace_and_versions() {
        let lines = SharedLines::new(1024);
        let mut makes = 0;
        for _ in 0..3 {
            let line = lines
                .get_or_make(key("a", Some(1), 2), || {
                    makes += 1;
                    Bytes::from_static(b"a 1-2")
                })
                .await;
            assert_eq!(line, "a 1-2");
        }
        assert_eq!(makes, 1);
        // Another namespace with the same versions, the whole snapshot, another base: each
        // is a line of its own.
        for (other, text) in [
            (key("b", Some(1), 2), "b 1-2"),
            (key("a", None, 2), "a 2"),
            (key("a", Some(0), 2), "a 0-2"),
        ] {
            let line = lines
                .get_or_make(other, || Bytes::from(text.as_bytes().to_vec()))
                .await;
            assert_eq!(line, text);
        }
        assert_eq!(lines.size(), (4, 5 + 5 + 3 + 5));
    }

    #[tokio::test]
    async fn streams_waiting_together_share_one_making() {
        let lines = Arc::new(SharedLines::new(1024));
        let makes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let lines = lines.clone();
                let makes = makes.clone();
                tokio::spawn(async move {
                    lines
                        .get_or_make(key("a", Some(1), 2), || {
                            makes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            Bytes::from_static(b"delta")
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), "delta");
        }
        assert_eq!(makes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_oldest_lines_go_first_past_the_budget() {
        let lines = SharedLines::new(10);
        for to in 0..4 {
            lines
                .get_or_make(key("a", None, to), || Bytes::from_static(b"1234"))
                .await;
        }
        assert_eq!(lines.size(), (2, 8));
        // The newest are kept: no new making for them.
        let kept = lines
            .get_or_make(key("a", None, 3), || Bytes::from_static(b"made again"))
            .await;
        assert_eq!(kept, "1234");
        let evicted = lines
            .get_or_make(key("a", None, 0), || Bytes::from_static(b"made again"))
            .await;
        assert_eq!(evicted, "made again");
        // A line over the whole budget is handed out, not kept.
        let huge = lines
            .get_or_make(key("a", None, 9), || Bytes::from(vec![b'x'; 100]))
            .await;
        assert_eq!(huge.len(), 100);
        assert_eq!(lines.size().1, 0);
    }
}
