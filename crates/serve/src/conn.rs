//! The client-side timeouts hyper does not keep by itself, kept on the connection's IO: the
//! wait for a request head, the wait for a next request on a kept-alive connection, and the
//! lingering close that lets a client still sending a refused body read its response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limits::{Lingering, ListenerLimits};

/// What the requests of one connection tell its IO: whether one is in flight, and whether a
/// request body was left unread (so the connection must linger before it closes).
///
/// It also holds the connection's place under `--max-connections`: the IO holds this state,
/// so the place is given back when the socket closes, also when an upgrade took the socket
/// away from hyper's connection task (a WebSocket tunnel is a connection like any other).
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    _slot: Option<ConnectionSlot>,
    in_flight: AtomicUsize,
    /// Requests finished, so the IO sees a new idle period start even between two polls.
    finished: AtomicU64,
    linger: AtomicBool,
    /// The IO's reader, waiting while busy: woken when the last request in flight ends, so
    /// the idle timeout starts then and not at the client's next byte.
    idle_waiter: AtomicWaker,
}

/// One connection's place under `--max-connections`, and in the open connections count.
pub(crate) struct ConnectionSlot {
    pub(crate) _open: crate::memory::OpenConnection,
    pub(crate) _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

impl ConnState {
    /// The state of a connection that holds `slot` for as long as it is open.
    pub(crate) fn holding(slot: ConnectionSlot) -> Self {
        Self {
            _slot: Some(slot),
            ..Self::default()
        }
    }

    /// Counts a request in flight until the returned guard is dropped (with its response
    /// body, once sent).
    pub(crate) fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// An HTTP/1.1 request body was dropped before its end: the client may still be sending.
    pub(crate) fn linger(&self) {
        self.linger.store(true, Ordering::Relaxed);
    }
}

/// One request in flight on a connection; or a WebSocket tunnel, which keeps the connection
/// busy for its life, so the client timeouts of HTTP leave it to the tunnel's own.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_waiter.wake();
        }
    }
}

/// What a connection is waiting for, and so which timeout applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A request is in flight: its body and the upstream have their own timeouts.
    Busy,
    /// Nothing: kept alive between requests.
    NextRequest,
    /// The rest of a request head (HTTP/1.1), or the first request of a new connection.
    Head,
}

/// Closes a connection that waits too long for a request head or for its next request.
/// Wraps the IO hyper reads, above TLS, so it sees the request bytes themselves.
pub(crate) struct ClientTimeouts<T> {
    io: T,
    state: Arc<ConnState>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// HTTP/2 has no request head to time on the connection: its frames (pings, settings)
    /// say nothing about a request, so only the idle timeout applies.
    http2: bool,
    /// No byte read yet: a plaintext connection is known to be HTTP/2 by its first bytes.
    first_read: bool,
    wait: Wait,
    /// `ConnState::finished` when the current wait began.
    seen_finished: u64,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer is set to `deadline`.
    armed: bool,
}

impl<T> ClientTimeouts<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>, limits: &ListenerLimits, http2: bool) -> Self {
        let (wait, timeout) = if http2 {
            (Wait::NextRequest, limits.idle_timeout)
        } else {
            (Wait::Head, limits.header_timeout)
        };
        Self {
            io,
            state,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            http2,
            first_read: true,
            wait,
            seen_finished: 0,
            deadline: Instant::now() + timeout,
            timer: None,
            armed: false,
        }
    }

    fn enter(&mut self, wait: Wait) {
        self.wait = wait;
        self.armed = false;
        self.deadline = Instant::now()
            + match wait {
                Wait::Head => self.header_timeout,
                Wait::NextRequest | Wait::Busy => self.idle_timeout,
            };
    }

    /// Brings `wait` up to date with the connection's requests.
    fn refresh(&mut self) {
        if self.state.in_flight.load(Ordering::Relaxed) > 0 {
            self.wait = Wait::Busy;
            return;
        }
        let finished = self.state.finished.load(Ordering::Relaxed);
        if self.wait == Wait::Busy || finished != self.seen_finished {
            self.seen_finished = finished;
            self.enter(Wait::NextRequest);
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        if std::mem::take(&mut self.first_read) && bytes.starts_with(b"PRI * HTTP/2.0") {
            self.http2 = true;
            self.enter(Wait::NextRequest);
            return;
        }
        self.refresh();
        if self.wait == Wait::NextRequest && !self.http2 {
            self.enter(Wait::Head);
        }
    }

    /// Ready when the current wait has lasted its timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Wait> {
        self.refresh();
        if self.wait == Wait::Busy {
            self.state.idle_waiter.register(cx.waker());
            // The request may have ended in between.
            self.refresh();
            if self.wait == Wait::Busy {
                return Poll::Pending;
            }
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(self.wait)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientTimeouts<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_bytes(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match ready!(this.poll_expired(cx)) {
                // As if the client had closed: hyper ends a kept-alive connection quietly.
                Wait::NextRequest => {
                    tracing::debug!("client connection idle for --client-idle-timeout: closed");
                    Poll::Ready(Ok(()))
                }
                _ => {
                    tracing::debug!("request head not received within --client-header-timeout");
                    Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                }
            },
            error => error,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientTimeouts<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// nginx's lingering close, on the socket itself (below TLS): when a request body was left
/// unread, shutting the connection down sends the response's end and then reads and
/// discards what the client still sends, for a bounded time, before the socket closes.
/// Closed at once, the kernel would answer those bytes with a reset, and the client would
/// lose the response it had not read yet.
pub(crate) struct LingeringClose<T> {
    io: T,
    state: Arc<ConnState>,
    lingering: Lingering,
    drain: Option<Drain>,
}

struct Drain {
    until: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<T> LingeringClose<T> {
    pub(crate) fn new(io: T, state: Arc<ConnState>, lingering: Lingering) -> Self {
        Self {
            io,
            state,
            lingering,
            drain: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LingeringClose<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LingeringClose<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.drain.is_none() {
            // The response's end goes out first, whether or not the client is still sending.
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.state.linger.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            let now = Instant::now();
            let until = now + this.lingering.time;
            let first = until.min(now + this.lingering.timeout);
            this.drain = Some(Drain {
                until,
                timer: Box::pin(tokio::time::sleep_until(first)),
            });
        }
        let Some(drain) = &mut this.drain else {
            unreachable!("set above")
        };
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let next = drain.until.min(Instant::now() + this.lingering.timeout);
                    drain.timer.as_mut().reset(next);
                }
                // The client reset or the socket failed: nothing more to wait for.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    ready!(drain.timer.as_mut().poll(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn limits() -> ListenerLimits {
        ListenerLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ListenerLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let (_client, server) = duplex(64);
        let state = Arc::new(ConnState::default());
        let mut io = ClientTimeouts::new(server, state, &limits(), false);
        let started = Instant::now();
        let err = io.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_ends_after_the_idle_timeout_and_not_while_busy() {
        let (mut client, server) = duplex(64);
        let state = Arc::new(ConnState::default());
        let mut io = ClientTimeouts::new(server, state.clone(), &limits(), false);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let request = state.start_request();
        // Busy: no client timeout runs, however long the request takes.
        let waited = tokio::time::timeout(Duration::from_secs(600), io.read(&mut buf)).await;
        assert!(waited.is_err(), "the connection stayed open while busy");
        drop(request);
        let idle_from = Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "closed as at EOF");
        assert_eq!(idle_from.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_only_have_the_idle_timeout() {
        let (mut client, server) = duplex(64);
        let state = Arc::new(ConnState::default());
        let mut io = ClientTimeouts::new(server, state, &limits(), false);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let started = Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap(), 0);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_close_reads_until_the_client_stops_sending() {
        let (mut client, server) = duplex(64);
        let state = Arc::new(ConnState::default());
        state.linger();
        let lingering = Lingering {
            time: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        };
        let mut io = LingeringClose::new(server, state, lingering);
        let sender = tokio::spawn(async move {
            for _ in 0..10 {
                client.write_all(&[b'x'; 1000]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            client
        });
        let started = Instant::now();
        io.shutdown().await.unwrap();
        // The last bytes come at 9 s; then the lingering timeout (the client stays open).
        assert_eq!(started.elapsed(), Duration::from_secs(14));
        let mut client = sender.await.unwrap();
        assert_eq!(
            client.read(&mut [0; 8]).await.unwrap(),
            0,
            "the write side was shut"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_close_is_bounded_by_the_lingering_time() {
        let (mut client, server) = duplex(64);
        let state = Arc::new(ConnState::default());
        state.linger();
        let lingering = Lingering {
            time: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        };
        let mut io = LingeringClose::new(server, state, lingering);
        tokio::spawn(async move {
            while client.write_all(b"x").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        io.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_unread_body_a_close_does_not_linger() {
        let (_client, server) = duplex(64);
        let state = Arc::new(ConnState::default());
        let mut io = LingeringClose::new(
            server,
            state,
            Lingering {
                time: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
            },
        );
        let started = Instant::now();
        io.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
