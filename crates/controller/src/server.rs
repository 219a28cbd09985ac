//! Accept loops for the controller's listeners: TCP, optional TLS, HTTP/2 and HTTP/1.1, and a
//! drain when the process stops. Bodies may stream (the snapshot stream never ends on its own).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_serve::{Incoming, ListenerLimits};

/// Every response body of the controller.
pub type Body = BoxBody<Bytes, Infallible>;

/// Serves `handler` on `listener` until `shutdown` turns true, then drains: the sidecar's
/// accept loop, whose handlers also get the connection, which the controller's do not need.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    tollgate_serve::serve(listener, tls, limits, shutdown, move |request, _conn| {
        handler(request)
    })
    .await;
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// A response with a body and its content type.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Kong's error envelope, `{"message": …}`.
pub fn message(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    response(status, "application/json; charset=utf-8", body)
}
