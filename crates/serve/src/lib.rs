//! The accept loop every tollgate listener shares (the sidecar's proxy, admin and metrics
//! ports, the controller's stream and admin API, the injection webhook): TCP, optional TLS,
//! HTTP/1.1 and HTTP/2 on one port, and a graceful drain when the process is asked to stop.
//! With it, [`runtime`]: what both processes do around their listeners.
// One exception, `memory::trim`, calls glibc's malloc_trim.
#![deny(unsafe_code)]

pub mod body;
mod conn;
pub mod limits;
pub mod memory;
pub mod process;
pub mod runtime;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use http::{Request, Response};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

pub use crate::body::{BodyBudget, BodyError, Incoming};
pub use crate::conn::InFlight;
use crate::conn::{ClientTimeouts, ConnState, ConnectionSlot, LingeringClose};
pub use crate::limits::{ListenerLimitArgs, ListenerLimits};

/// A client that opens a connection and never finishes the handshake must not hold a task
/// and a socket for ever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after a stop signal; Kubernetes's default grace
/// period is 30 s, so this leaves room for the rest of the pod to stop.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler knows about the connection a request came on.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// The certificate chain (leaf first) a client presented in the TLS handshake, in each of its
/// requests' extensions. Only a listener whose TLS configuration asks for client certificates
/// gets one; what the chain is worth is the handler's to decide (rustls has checked only that
/// the client holds the leaf's key, when the configuration's verifier accepts any chain).
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<[rustls::pki_types::CertificateDer<'static>]>);

/// Serves `handler` on `listener` until `shutdown` turns true, then drains.
///
/// Generic over the response body, so the controller's streaming responses are served by the
/// same loop as the sidecar's.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_per_connection(listener, tls, limits, shutdown, move |conn| {
        let handler = handler.clone();
        move |request| handler(request, conn)
    })
    .await
}

/// Like [`serve`], but builds the handler once per connection with `for_connection`, so a
/// handler can keep state for the life of its connection (the sidecar keeps the upstream
/// connection its client's last request used). The handler is dropped when the connection
/// closes.
///
/// A handler may take a connection over: with a 101 to an HTTP/1.1 upgrade, or a 2xx to an
/// HTTP/2 extended CONNECT (RFC 8441, announced on every listener), and
/// `hyper::upgrade::on`. The connection keeps its place under `--max-connections` until its
/// socket closes, and [`Incoming::keep_connection_busy`] keeps the HTTP timeouts off it.
pub async fn serve_per_connection<M, H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    mut shutdown: watch::Receiver<bool>,
    for_connection: M,
) where
    M: Fn(ConnInfo) -> H,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At --max-connections, new connections wait in the kernel's accept queue.
        let accepted = tokio::select! {
            accepted = accept(&listener, &connections) => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, remote, slot) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let conn = ConnInfo {
            remote,
            local,
            tls: acceptor.is_some(),
        };
        let state = Arc::new(ConnState::holding(ConnectionSlot {
            _open: memory::OpenConnection::track(),
            _permit: slot,
        }));
        let handler = for_connection(conn);
        let lingering = limits.lingering;
        let body_timeout = limits.body_timeout;
        let service_state = state.clone();
        // A combinator, not an `async` block: a block that awaits the handler's future keeps
        // a second copy of it, and hyper moves the whole of it with every request.
        // Built once the handshake is done, with the certificates the client presented.
        let service = move |peer: Option<PeerCertificates>| {
            service_fn(move |request: Request<hyper::body::Incoming>| {
                let in_flight = service_state.start_request();
                let http2 = request.version() == http::Version::HTTP_2;
                let mut request = request.map(|body| {
                    Incoming::new(body, service_state.clone(), http2, body_timeout, lingering)
                });
                if let Some(peer) = &peer {
                    request.extensions_mut().insert(peer.clone());
                }
                handler(request).map(move |response| {
                    Ok::<_, Infallible>(response.map(|body| Counted {
                        body,
                        _in_flight: in_flight,
                    }))
                })
            })
        };
        let builder = builder(&limits);
        let stream = LingeringClose::new(stream, state.clone(), lingering);
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(error)) => {
                                tracing::debug!(%remote, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .filter(|chain| !chain.is_empty())
                        .map(|chain| PeerCertificates(chain.iter().cloned().collect()));
                    let io = ClientTimeouts::new(tls, state, &limits, http2);
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(io), service(peer))
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%remote, %error, "connection ended with an error");
                    }
                });
            }
            None => {
                let io = ClientTimeouts::new(stream, state, &limits, false);
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service(None))
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%remote, %error, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?local,
            "connections still open after the drain period were closed"
        );
    }
}

/// Accepts a connection once a slot under --max-connections is free; the slot is held for the
/// connection's life.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
) -> std::io::Result<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = connections
        .clone()
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let (stream, remote) = listener.accept().await?;
    Ok((stream, remote, slot))
}

/// The HTTP/1.1 and HTTP/2 settings of a listener's connections.
fn builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The request head's timeout is kept on the IO (`ClientTimeouts`): hyper's own would also
    // end kept-alive connections after the header timeout, not the idle one.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        // RFC 8441's extended CONNECT: how an HTTP/2 client opens a WebSocket. A handler
        // that answers such a request 2xx takes the stream over with `hyper::upgrade::on`.
        .enable_connect_protocol();
    builder
}

/// A response body that counts its request as in flight until it has been sent (or dropped),
/// so the connection's idle timeout starts only then.
struct Counted<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
