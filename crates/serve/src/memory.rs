//! Hands memory that closed connections freed back to the operating system.
//!
//! glibc's malloc keeps freed memory in its heap for the next allocation. Each client
//! connection that has carried a request holds about 40 KiB of TLS and HTTP buffers, so after
//! a burst of a few hundred connections the sidecar would keep 10–20 MiB it no longer uses,
//! in every pod, until the next burst. When the number of open connections has fallen to half
//! its peak, [`reclaim_freed_memory`] calls `malloc_trim`, which returns the free pages.
//!
//! The counts are process-wide statics because the allocator they describe is process-wide:
//! every listener's connections draw on the same heap.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};

/// Below this many connections at the peak, what a trim could return is too small to matter.
const MIN_PEAK: i64 = 16;
/// Connections of one burst close over a few milliseconds; waiting lets one trim cover them.
const SETTLE: Duration = Duration::from_millis(100);

/// Client connections open on every listener of this process.
pub static OPEN_CONNECTIONS: LazyLock<Gauge> = LazyLock::new(Gauge::default);
/// Times freed memory was handed back to the operating system.
pub static MEMORY_TRIMS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// The most connections open at once since the last trim.
static PEAK: AtomicI64 = AtomicI64::new(0);
static CONNECTIONS_FELL: Notify = Notify::const_new();

/// Registers `open_connections` and `memory_trims` with a process's metrics.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "open_connections",
        "Client connections open on this process's listeners",
        OPEN_CONNECTIONS.clone(),
    );
    registry.register(
        "memory_trims",
        "Times memory freed by closed connections was returned to the OS",
        MEMORY_TRIMS.clone(),
    );
}

/// Counts one open connection for as long as it lives.
pub struct OpenConnection(());

impl OpenConnection {
    pub fn track() -> Self {
        let open = OPEN_CONNECTIONS.inc() + 1;
        PEAK.fetch_max(open, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let open = OPEN_CONNECTIONS.dec() - 1;
        if worth_trimming(open, PEAK.load(Ordering::Relaxed)) {
            // Stores a permit when the reclaimer is busy, so no fall is missed.
            CONNECTIONS_FELL.notify_one();
        }
    }
}

/// Whether so many connections have closed since the peak that a trim would pay.
fn worth_trimming(open: i64, peak: i64) -> bool {
    peak >= MIN_PEAK && open <= peak / 2
}

/// Trims the heap each time open connections fall to half their peak, until `stop`.
pub async fn reclaim_freed_memory(mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = CONNECTIONS_FELL.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        tokio::time::sleep(SETTLE).await;
        let open = OPEN_CONNECTIONS.get();
        let peak = PEAK.swap(open, Ordering::Relaxed);
        if !worth_trimming(open, peak) {
            continue; // a wave of new connections arrived while settling
        }
        let released = trim();
        MEMORY_TRIMS.inc();
        tracing::debug!(open, peak, released, "returned freed memory to the OS");
    }
}

/// Returns what a replaced configuration freed to the operating system now: a snapshot of
/// 10,000 applications is megabytes, freed in one go, which glibc would otherwise keep.
pub fn reclaim_now() -> bool {
    let released = trim();
    MEMORY_TRIMS.inc();
    released
}

/// Returns the allocator's free pages to the OS; true when some were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim takes the allocator's own locks and only releases pages that hold
    // no live allocation; glibc documents it as safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl's, for one) give memory back on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::worth_trimming;

    #[test]
    fn trims_once_half_the_peak_has_closed() {
        assert!(worth_trimming(128, 256));
        assert!(worth_trimming(0, 16));
        assert!(!worth_trimming(129, 256));
    }

    #[test]
    fn small_peaks_are_not_worth_a_trim() {
        assert!(!worth_trimming(0, 15));
        assert!(!worth_trimming(0, 0));
    }
}
