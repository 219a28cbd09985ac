//! A WebSocket connection: the handshake a request asks for ([`Handshake`]), and once the
//! application has switched, the tunnel between the client's upgraded connection and the
//! application's socket, bytes copied both ways until both sides have closed (a side
//! that closes its half gets the other's end passed on, and may still receive), or until
//! neither has sent a byte for `--upgrade-idle-timeout`.
//!
//! The bytes are not read as WebSocket frames: the handshake was checked like any request, and
//! what follows is the client's and the application's business, as behind Kong.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tollgate_h1 as h1;
use tollgate_serve::InFlight;

use crate::body::RequestBody;

/// What WebSockets may hold of the sidecar and of the application.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeLimits {
    /// `--upgrade-idle-timeout`.
    pub idle_timeout: std::time::Duration,
    /// WebSockets open at once, over every listener: `--max-connections`. Over HTTP/1.1 each
    /// is a connection already; over HTTP/2 a connection may carry many, each holding an
    /// application connection, so they are counted apart.
    pub max_open: usize,
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum Ended {
    /// Both sides closed; the bytes each sent.
    Closed {
        from_client: u64,
        to_client: u64,
    },
    /// Neither side sent a byte for the idle timeout.
    Idle,
    Failed(io::Error),
}

/// A WebSocket handshake: what switching it takes, once the application has answered 101.
/// It is checked as any request first.
pub struct Handshake {
    /// The client connection (HTTP/1.1) or stream (HTTP/2), handed over by hyper once the
    /// 101 or 200 is sent.
    pub client: OnUpgrade,
    /// Keeps the client connection's HTTP timeouts off the tunnel.
    pub busy: Option<InFlight>,
}

impl Handshake {
    /// The handshake `parts` asks for, taken out of the request: an HTTP/1.1 GET without a
    /// body whose fields ask to switch to `websocket` (RFC 6455 §4.1), or an HTTP/2 CONNECT
    /// whose `:protocol` is `websocket` (RFC 8441 §4). hyper leaves an upgrade in a request
    /// only when it has `Upgrade` or is a CONNECT: any other request pays one look at its
    /// extensions. Other upgrades (`h2c`, say) are never forwarded: their fields are a hop's.
    pub fn take<B: RequestBody>(parts: &mut http::request::Parts, body: &B) -> Option<Self> {
        parts.extensions.get::<OnUpgrade>()?;
        let asks = match parts.version {
            Version::HTTP_11 => {
                parts.method == Method::GET
                    && body.is_end_stream()
                    && h1::wire::asks_websocket_upgrade(&parts.headers)
            }
            Version::HTTP_2 => {
                let protocol = parts.extensions.get::<hyper::ext::Protocol>();
                parts.method == Method::CONNECT
                    && protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
            }
            _ => false,
        };
        if !asks {
            return None;
        }
        Some(Self {
            client: parts.extensions.remove()?,
            busy: body.hold_connection_busy(),
        })
    }
}

/// Runs the tunnel of one switched connection: waits for hyper to have sent the client the
/// 101, then copies. `_held` is kept for the tunnel's life: what keeps the client
/// connection's HTTP timeouts off it (when it came on one), and its place among the
/// WebSockets open.
pub async fn run(
    client: OnUpgrade,
    application: h1::Upgraded,
    idle_timeout: Duration,
    _held: (Option<InFlight>, OwnedSemaphorePermit),
) {
    let client = match client.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "the client connection was not upgraded");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let h1::Upgraded {
        io: mut application,
        read_ahead,
    } = application;
    // What the application sent right behind its 101 was read with the 101: it goes first.
    if !read_ahead.is_empty()
        && let Err(error) = client.write_all(&read_ahead).await
    {
        tracing::debug!(%error, "WebSocket tunnel failed");
        return;
    }
    match copy_until_idle(&mut client, &mut application, idle_timeout).await {
        Ended::Closed {
            from_client,
            to_client,
        } => tracing::debug!(from_client, to_client, "WebSocket tunnel closed"),
        Ended::Idle => tracing::debug!(
            idle_timeout_s = idle_timeout.as_secs(),
            "WebSocket tunnel idle for --upgrade-idle-timeout: closed"
        ),
        Ended::Failed(error) => tracing::debug!(%error, "WebSocket tunnel failed"),
    }
}

/// Copies between `client` and `application` both ways until both have closed, or until
/// no byte came from either for `idle_timeout`. An end of stream from one side shuts the
/// other's write half, and the other way keeps going.
pub async fn copy_until_idle<C, A>(
    client: &mut C,
    application: &mut A,
    idle_timeout: Duration,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Watched {
        io: client,
        activity: &activity,
    };
    let mut application = Watched {
        io: application,
        activity: &activity,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut application);
    tokio::pin!(copy);
    let idle = tokio::time::sleep_until(activity.last() + idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            copied = &mut copy => {
                return match copied {
                    Ok((from_client, to_client)) => Ended::Closed { from_client, to_client },
                    Err(error) => Ended::Failed(error),
                };
            }
            () = &mut idle => {
                // The timer was set at the last byte seen then; bytes since push it on.
                let deadline = activity.last() + idle_timeout;
                if deadline <= Instant::now() {
                    return Ended::Idle;
                }
                idle.as_mut().reset(deadline);
            }
        }
    }
}

/// When either side last sent bytes, as time since the tunnel began.
struct Activity {
    start: Instant,
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_nanos: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed))
    }
}

/// One side of the tunnel, noting each read that brought bytes.
struct Watched<'a, T> {
    io: &'a mut T,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn bytes_go_both_ways_and_a_half_close_is_passed_on() {
        let (mut client, mut client_side) = duplex(64);
        let (mut application, mut application_side) = duplex(64);
        let tunnel = tokio::spawn(async move {
            copy_until_idle(&mut client_side, &mut application_side, IDLE).await
        });
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        application.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // The client is done sending; the application still answers, then closes.
        client.shutdown().await.unwrap();
        assert_eq!(
            application.read(&mut buf).await.unwrap(),
            0,
            "the end passed on"
        );
        application.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        application.shutdown().await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        match tunnel.await.unwrap() {
            Ended::Closed {
                from_client,
                to_client,
            } => assert_eq!((from_client, to_client), (4, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_idle_for_the_timeout_ends_and_traffic_pushes_the_end_on() {
        let (mut client, mut client_side) = duplex(64);
        let (mut application, mut application_side) = duplex(64);
        let started = Instant::now();
        let tunnel = tokio::spawn(async move {
            copy_until_idle(&mut client_side, &mut application_side, IDLE).await
        });
        // A byte each way at 50 s and 100 s: each restarts the idle time.
        let mut byte = [0u8; 1];
        tokio::time::sleep(Duration::from_secs(50)).await;
        client.write_all(b"a").await.unwrap();
        application.read_exact(&mut byte).await.unwrap();
        tokio::time::sleep(Duration::from_secs(50)).await;
        application.write_all(b"b").await.unwrap();
        client.read_exact(&mut byte).await.unwrap();
        let ended = tunnel.await.unwrap();
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(160));
        // Both ends were dropped with the tunnel: each side sees the end.
        assert_eq!(client.read(&mut byte).await.unwrap(), 0);
        assert_eq!(application.read(&mut byte).await.unwrap(), 0);
    }
}
