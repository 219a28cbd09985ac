//! Request bodies as every listener's handlers receive them: hyper's, with the time allowed
//! between two reads (`--client-body-timeout`), a lingering end when a handler leaves one
//! unread, and a bounded, budgeted read of a whole body for the handlers that need one.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};

use crate::conn::{ConnState, InFlight};
use crate::limits::Lingering;

/// A request body. Each wait for more of it may last the listener's body timeout; past it,
/// reading fails with [`BodyError::TimedOut`].
///
/// Dropped before its end, it makes sure the client can still read the response: an
/// HTTP/1.1 connection lingers as it closes; an HTTP/2 stream keeps granting flow-control
/// window and discarding DATA, within the lingering bounds, before it is reset.
pub struct Incoming {
    /// What was read of the body before a handler chose to stream it after all: sent first.
    prefix: Option<Bytes>,
    inner: Option<hyper::body::Incoming>,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the current wait.
    armed: bool,
    conn: Arc<ConnState>,
    http2: bool,
    lingering: Lingering,
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// No more of it came within `--client-body-timeout`.
    TimedOut,
    /// The connection failed or the client gave up.
    Hyper(hyper::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut => f.write_str("no more of the request body within the body timeout"),
            Self::Hyper(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for BodyError {}

impl Incoming {
    pub(crate) fn new(
        inner: hyper::body::Incoming,
        conn: Arc<ConnState>,
        http2: bool,
        timeout: Duration,
        lingering: Lingering,
    ) -> Self {
        Self {
            prefix: None,
            inner: Some(inner),
            timeout,
            timer: None,
            armed: false,
            conn,
            http2,
            lingering,
        }
    }

    /// Keeps this request's connection busy until the guard is dropped: a connection whose
    /// socket an upgrade took over is no longer waiting for a request head, nor idle.
    pub fn keep_connection_busy(&self) -> InFlight {
        self.conn.start_request()
    }

    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        timer.as_mut().poll(cx)
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => {
                ready!(this.poll_timeout(cx));
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
            Poll::Ready(polled) => {
                this.armed = false;
                Poll::Ready(polled.map(|frame| frame.map_err(BodyError::Hyper)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() {
            return;
        }
        if !self.http2 {
            self.conn.linger();
            return;
        }
        // Reading the rest releases its flow-control window; dropped, the stream is reset.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let lingering = self.lingering;
        runtime.spawn(discard(inner, lingering));
    }
}

/// Reads and drops the rest of an HTTP/2 request body, within the lingering bounds.
async fn discard(mut body: hyper::body::Incoming, lingering: Lingering) {
    let until = Instant::now() + lingering.time;
    loop {
        let next = until.min(Instant::now() + lingering.timeout);
        match tokio::time::timeout_at(next, body.frame()).await {
            Ok(Some(Ok(_))) => continue,
            _ => return,
        }
    }
}

/// Bytes of request bodies held in memory across the whole process: each body read whole
/// takes its bytes from here as they arrive and gives them back when it is dropped.
#[derive(Debug, Clone)]
pub struct BodyBudget(Arc<BudgetInner>);

#[derive(Debug)]
struct BudgetInner {
    used: AtomicUsize,
    limit: usize,
}

/// Bytes taken from a [`BodyBudget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: BodyBudget,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BudgetInner {
            used: AtomicUsize::new(0),
            limit,
        }))
    }

    /// An empty reservation, to grow with [`Reservation::grow`].
    pub fn reserve(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    pub fn in_use(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        self.0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.0.limit)
            })
            .is_ok()
    }
}

impl Reservation {
    /// Takes `bytes` more, or nothing when the budget has not that many left.
    #[must_use]
    pub fn grow(&mut self, bytes: usize) -> bool {
        let taken = self.budget.take(bytes);
        if taken {
            self.bytes += bytes;
        }
        taken
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.0.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A whole request body, and its place in the budget: keep it for as long as the bytes.
#[derive(Debug)]
pub struct Buffered {
    pub bytes: Bytes,
    pub reservation: Reservation,
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// The process's body budget is spent; the client may try again shortly.
    BudgetSpent,
    /// No more of it came within `--client-body-timeout`.
    TimedOut,
    /// The client went away, or sent a body that was not well framed.
    Aborted,
}

/// Reads a whole body of at most `limit` bytes, each of them taken from `budget` first.
pub async fn read_bounded(
    body: Incoming,
    limit: usize,
    budget: &BodyBudget,
) -> Result<Buffered, ReadError> {
    match read_up_to(body, limit, budget).await? {
        Ok(buffered) => Ok(buffered),
        Err(_longer) => Err(ReadError::TooLarge),
    }
}

/// Reads a whole body when it is at most `limit` bytes; a longer one comes back unread, as
/// a body that replays what was read of it first, for the caller to stream.
pub async fn read_up_to(
    mut body: Incoming,
    limit: usize,
    budget: &BodyBudget,
) -> Result<Result<Buffered, Incoming>, ReadError> {
    if body.size_hint().lower() > limit as u64 {
        return Ok(Err(body));
    }
    let mut reservation = budget.reserve();
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let joined = |first: Option<Bytes>, rest: Option<BytesMut>| match (first, rest) {
        (_, Some(rest)) => rest.freeze(),
        (Some(first), None) => first,
        (None, None) => Bytes::new(),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| match error {
            BodyError::TimedOut => ReadError::TimedOut,
            BodyError::Hyper(_) => ReadError::Aborted,
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.as_ref().map_or(0, BytesMut::len);
        if so_far + data.len() > limit {
            let mut read = BytesMut::from(joined(first, rest));
            read.extend_from_slice(&data);
            body.prefix = Some(read.freeze());
            return Ok(Err(body));
        }
        if !reservation.grow(data.len()) {
            return Err(ReadError::BudgetSpent);
        }
        // The usual body is one frame: kept as it came, with no copy.
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(first), None) => {
                let mut both = BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(first);
                both.extend_from_slice(&data);
                rest = Some(both);
            }
            (Some(_), Some(rest)) => rest.extend_from_slice(&data),
        }
    }
    Ok(Ok(Buffered {
        bytes: joined(first, rest),
        reservation,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve();
        let mut b = budget.reserve();
        assert!(a.grow(60));
        assert!(!b.grow(41), "past the budget");
        assert!(b.grow(40));
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
