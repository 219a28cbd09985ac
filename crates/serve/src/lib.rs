//! The accept loop every tollgate listener shares (the sidecar's proxy, admin and metrics
//! ports, the controller's stream and admin API, the injection webhook): TCP, optional TLS,
//! HTTP/1.1 and HTTP/2 on one port, and a graceful drain when the process is asked to stop.
// One exception, `memory::trim`, calls glibc's malloc_trim.
#![deny(unsafe_code)]

pub mod memory;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use http::{Request, Response};
pub use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

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

/// Serves `handler` on `listener` until `shutdown` turns true, then drains.
///
/// Generic over the response body, so the controller's streaming responses are served by the
/// same loop as the sidecar's.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>, ConnInfo) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_per_connection(listener, tls, shutdown, move |conn| {
        let handler = handler.clone();
        move |request| handler(request, conn)
    })
    .await
}

/// Like [`serve`], but builds the handler once per connection with `for_connection`, so a
/// handler can keep state for the life of its connection (the sidecar keeps the upstream
/// connection its client's last request used). The handler is dropped when the connection
/// closes.
pub async fn serve_per_connection<M, H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
    for_connection: M,
) where
    M: Fn(ConnInfo) -> H,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, remote) = match accepted {
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
        let open = memory::OpenConnection::track();
        let handler = for_connection(conn);
        // A combinator, not an `async` block: a block that awaits the handler's future keeps
        // a second copy of it, and hyper moves the whole of it with every request.
        let service = service_fn(move |request| handler(request).map(Ok::<_, Infallible>));
        let builder = auto::Builder::new(TokioExecutor::new());
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _open = open;
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
                    let connection = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%remote, %error, "connection ended with an error");
                    }
                });
            }
            None => {
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _open = open;
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
