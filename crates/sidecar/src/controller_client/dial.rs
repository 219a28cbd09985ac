//! Dialing the controller: TCP, TLS trusting only its CA, and HTTP/2, each step bounded in
//! time; and reading a refusal's Kong-style message. The snapshot stream and the certificate
//! requests both go through it.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::StreamError;
use super::source::ControllerSource;

/// A controller that does not answer a connection in this long is treated as down.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/2 connection to the controller over TLS trusting only its CA; the connection's
/// task ends when the guard returned with it is dropped.
pub(crate) async fn connect(
    source: &ControllerSource,
) -> Result<(SendRequest<Full<Bytes>>, AbortOnDrop), StreamError> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((source.host.as_str(), source.port)),
    )
    .await
    .map_err(|_| StreamError::Connect("timed out".into()))?
    .map_err(|e| StreamError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(source.tls.clone()).connect(source.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| StreamError::Connect("TLS handshake timed out".into()))?
    .map_err(|e| StreamError::Connect(format!("TLS: {e}")))?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| StreamError::Connect(format!("HTTP/2: {e}")))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "controller connection ended");
        }
    });
    Ok((sender, AbortOnDrop(driver)))
}

/// The error of a response other than 200: its status and Kong-style `message`.
pub(crate) async fn refusal(status: StatusCode, body: hyper::body::Incoming) -> StreamError {
    let bytes = tokio::time::timeout(CONNECT_TIMEOUT, body.collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default();
    StreamError::Refused { status, message }
}

/// Ends the connection's task when the request that needed it is done.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
