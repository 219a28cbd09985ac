//! The mutating webhook's HTTPS listener (:9443), for the controller to mount.
//!
//! Two paths, one per webhook of the chart's MutatingWebhookConfiguration, because the API
//! server does not tell a webhook the labels of the pod's namespace:
//! - `POST /mutate`: namespaces not labelled `tollgate.dev/inject`; only pods annotated
//!   `tollgate.dev/inject: enabled` are injected ([`Scope::PodAnnotation`]);
//! - `POST /mutate/namespace`: namespaces labelled `tollgate.dev/inject=enabled`; every pod is
//!   injected unless annotated `disabled` ([`Scope::Namespace`]).
//!
//! [`handle`] is the whole HTTP behaviour as a function of a buffered request, so it is
//! tested without a socket; [`serve_webhook`] adds TLS, HTTP/1.1 and HTTP/2, the listener's
//! client timeouts, a body limit within the process's body budget, and a graceful drain.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_serve::body::{ReadError, Reservation, read_bounded};
pub use tollgate_serve::{BodyBudget, ListenerLimits};

use crate::review::{Outcome, review_with_outcome};
use crate::{InjectConfig, Scope};

/// The webhook for pods that opt in by annotation.
pub const MUTATE_PATH: &str = "/mutate";
/// The webhook for namespaces that opt in by label.
pub const MUTATE_NAMESPACE_PATH: &str = "/mutate/namespace";
/// The webhook's port, apart from the snapshot stream (:8090), the admin API (:8444) and
/// metrics (:9090), the ports the chart exposes.
pub const DEFAULT_WEBHOOK_LISTEN: &str = "0.0.0.0:9443";
/// The API server's own limit on a request body, 3 MiB: an AdmissionReview holds one object
/// (at most 1.5 MiB) plus a little. Anything larger is not from the API server.
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// The API server gives up on a webhook after its timeoutSeconds (the chart sets 5 s); a
/// request still unread after this is not from it.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one buffered HTTP request. This is the one place HTTP errors are made.
pub fn handle(request: Request<Bytes>, config: &InjectConfig) -> Response<Bytes> {
    let scope = match request.uri().path() {
        MUTATE_PATH => Scope::PodAnnotation,
        MUTATE_NAMESPACE_PATH => Scope::Namespace,
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    if request.method() != Method::POST {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
        response
            .headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return response;
    }
    match review_with_outcome(request.body(), config, scope) {
        Ok(reviewed) => {
            match &reviewed.outcome {
                Outcome::Injected => tracing::info!(pod = %reviewed.pod, "sidecar injected"),
                Outcome::Refused(reason) => {
                    tracing::info!(pod = %reviewed.pod, %reason, "pod refused")
                }
                Outcome::Skipped(reason) => {
                    tracing::debug!(pod = %reviewed.pod, reason = %reason.describe(), "not injected")
                }
                Outcome::Ignored => {}
            }
            let mut response = Response::new(Bytes::from(reviewed.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => {
            tracing::warn!(%error, "bad webhook request");
            plain(StatusCode::BAD_REQUEST, &format!("{error}\n"))
        }
    }
}

/// The webhook listener's client limits, and the controller's budget of buffered bodies.
#[derive(Debug, Clone)]
pub struct WebhookLimits {
    pub listener: ListenerLimits,
    pub budget: BodyBudget,
}

/// Serves the webhook on `listener` with `tls` until `shutdown` turns true, then drains,
/// through the accept loop every tollgate listener shares.
///
/// `tls` is the controller's: its certificate resolver may rotate the serving certificate;
/// ALPN should offer `h2` and `http/1.1` (the API server speaks both).
pub async fn serve_webhook(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: Arc<InjectConfig>,
    limits: WebhookLimits,
    shutdown: watch::Receiver<bool>,
) {
    let WebhookLimits {
        listener: listener_limits,
        budget,
    } = limits;
    tollgate_serve::serve(
        listener,
        Some(tls),
        listener_limits,
        shutdown,
        move |request, _conn| {
            let config = config.clone();
            let budget = budget.clone();
            async move {
                let response = match buffer(request, &budget).await {
                    // The review's bytes stay in the budget until it has been answered.
                    Ok((request, _reservation)) => handle(request, &config),
                    Err(response) => response,
                };
                response.map(Full::new)
            }
        },
    )
    .await;
}

/// Reads the whole body, at most [`MAX_REVIEW_BYTES`] within the process's body budget, and
/// within [`BODY_READ_TIMEOUT`] in all.
async fn buffer(
    request: Request<tollgate_serve::Incoming>,
    budget: &BodyBudget,
) -> Result<(Request<Bytes>, Reservation), Response<Bytes>> {
    let (parts, body) = request.into_parts();
    let read = read_bounded(body, MAX_REVIEW_BYTES, budget);
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(buffered)) => Ok((
            Request::from_parts(parts, buffered.bytes),
            buffered.reservation,
        )),
        Ok(Err(ReadError::TooLarge)) => Err(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "AdmissionReview too large\n",
        )),
        Ok(Err(ReadError::BudgetSpent)) => {
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many reviews at once\n",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            Err(response)
        }
        Ok(Err(ReadError::Aborted)) => {
            Err(plain(StatusCode::BAD_REQUEST, "cannot read the body\n"))
        }
        Ok(Err(ReadError::TimedOut)) | Err(_) => {
            Err(plain(StatusCode::REQUEST_TIMEOUT, "body read timed out\n"))
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
