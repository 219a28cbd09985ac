//! What the gateway records of each request, as one thin call at its start
//! ([`Observer::begin`]) and one at its answer ([`Seen::finish`]): the ids the application
//! receives, the duration histogram, the token endpoint's counters, the access-log line and
//! the audit line of a client that failed to authenticate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderMap;
use http::{Method, Request, Response};
use hyper::body::Body;
use tollgate_api::snapshot::{Application, Consumer, Service};
use tollgate_oauth::{OAuthResponse, Params};

use crate::access_log::{self, AccessLine, AccessLogFormat, LineSink};
use crate::metrics::{Metrics, RequestLabels, ServiceLabels};
use crate::routes::Endpoint;
use crate::trace_context::{self, REQUEST_ID, TraceId};

/// The recording half of the gateway: one per gateway, shared by its requests.
#[derive(Debug)]
pub struct Observer {
    metrics: Arc<Metrics>,
    format: AccessLogFormat,
    max_request_id_length: usize,
    sink: LineSink,
}

/// `--access-log` and `--max-request-id-length`, and where the lines go.
#[derive(Debug, Clone)]
pub struct ObserveSettings {
    pub access_log: AccessLogFormat,
    pub max_request_id_length: usize,
    pub sink: LineSink,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        Self {
            access_log: AccessLogFormat::Off,
            max_request_id_length: trace_context::DEFAULT_MAX_REQUEST_ID_LENGTH,
            sink: LineSink::Stdout,
        }
    }
}

/// One request, from its head to its answer.
#[derive(Debug)]
pub struct Seen {
    observer: Arc<Observer>,
    started: Instant,
    /// With the access log on only: the `X-Request-Id` the application receives.
    request_id: Option<http::HeaderValue>,
    trace_id: Option<TraceId>,
    client: SocketAddr,
    method: Method,
    /// With the access log on: the normalised path, once the request is read one way.
    path: Option<String>,
    service: Option<ServiceLabels>,
    route: &'static str,
}

/// What the proxy path learns that the access log says: put in the response's extensions,
/// with the access log on only (they cost an allocation).
#[derive(Debug, Clone)]
pub(crate) struct ProxySeen {
    upstream_duration: Option<Duration>,
    consumer: Option<String>,
    client_id: Option<String>,
}

/// An OAuth endpoint's request, as [`Observer::oauth_answered`] reads it.
#[derive(Clone, Copy)]
pub struct OAuthRequest<'a> {
    pub endpoint: Endpoint,
    pub service: &'a Service,
    pub params: &'a Params,
    /// The service's auth header, for the client id of Basic credentials.
    pub auth_header: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client: SocketAddr,
}

/// Who a proxied request came from, kept for the access log.
#[derive(Debug, Default)]
pub(crate) struct Who {
    consumer: Option<String>,
    client_id: Option<String>,
}

// === impl Observer ===

impl Observer {
    pub fn new(metrics: Arc<Metrics>, settings: ObserveSettings) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            format: settings.access_log,
            max_request_id_length: settings.max_request_id_length,
            sink: settings.sink,
        })
    }

    fn logs(&self) -> bool {
        self.format != AccessLogFormat::Off
    }

    /// Starts recording a request, and sets the `X-Request-Id` and `traceparent` its
    /// application receives.
    pub fn begin<B>(self: &Arc<Self>, request: &mut Request<B>, client: SocketAddr) -> Seen {
        let propagated =
            trace_context::propagate(request.headers_mut(), self.max_request_id_length);
        Seen {
            observer: self.clone(),
            started: Instant::now(),
            request_id: self
                .logs()
                .then(|| request.headers().get(REQUEST_ID).cloned())
                .flatten(),
            trace_id: propagated.trace_id,
            client,
            method: request.method().clone(),
            path: None,
            service: None,
            route: "none",
        }
    }

    /// Who a proxied request came from; nothing with the access log off.
    pub(crate) fn who(&self, consumer: &Consumer, application: Option<&Application>) -> Who {
        if !self.logs() {
            return Who::default();
        }
        Who {
            consumer: Some(consumer.username.clone()),
            client_id: application.map(|a| a.client_id.clone()),
        }
    }

    /// Notes what the proxy path learnt on the response: the application's time, who.
    pub(crate) fn proxied<T>(
        &self,
        response: &mut Response<T>,
        upstream: Option<Instant>,
        who: Who,
    ) {
        if !self.logs() {
            return;
        }
        response.extensions_mut().insert(ProxySeen {
            upstream_duration: upstream.map(|started| started.elapsed()),
            consumer: who.consumer,
            client_id: who.client_id,
        });
    }

    /// Counts an OAuth endpoint's answer (the token endpoint's by grant and error), and logs
    /// a client that failed to authenticate.
    pub fn oauth_answered(&self, request: OAuthRequest<'_>, response: &OAuthResponse) {
        let OAuthRequest {
            endpoint,
            service,
            params,
            auth_header,
            headers,
            client,
        } = request;
        let error = error_code(response);
        if endpoint == Endpoint::Token {
            let grant = grant_label(params.text("grant_type"));
            self.metrics.count_token(grant, error.unwrap_or("none"));
        }
        if error == Some("invalid_client") {
            let request_id = headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            access_log::failed_client_authentication(
                endpoint.route_label(),
                (&service.namespace, &service.name),
                client,
                claimed_client_id(params, auth_header).as_deref(),
                request_id,
            );
        }
    }
}

// === impl Seen ===

impl Seen {
    /// The request was read one way: its normalised path, for the access log.
    pub fn read(&mut self, path: &str) {
        if self.observer.logs() {
            self.path = Some(path.to_owned());
        }
    }

    /// The request was routed to `service`'s `endpoint`.
    pub fn routed(&mut self, service: &ServiceLabels, endpoint: Endpoint) {
        self.service = Some(service.clone());
        self.route = endpoint.route_label();
    }

    /// Records the answer, and gives it back.
    pub fn finish<T: Body>(self, mut response: Response<T>) -> Response<T> {
        let duration = self.started.elapsed();
        let observer = &self.observer;
        let labels = RequestLabels::new(self.service.clone(), self.route, response.status());
        observer.metrics.observe_request(&labels, duration);
        if !observer.logs() {
            return response;
        }
        let proxied = response.extensions_mut().remove::<ProxySeen>();
        let line = AccessLine {
            time: SystemTime::now() - duration,
            request_id: self
                .request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .unwrap_or("-"),
            client: self.client,
            method: self.method.as_str(),
            path: self.path.as_deref(),
            service: self
                .service
                .as_ref()
                .map(|s| (s.namespace.as_str(), s.service.as_str())),
            route: self.route,
            status: response.status().as_u16(),
            bytes: response.body().size_hint().exact(),
            duration,
            upstream_duration: proxied.as_ref().and_then(|p| p.upstream_duration),
            consumer: proxied.as_ref().and_then(|p| p.consumer.as_deref()),
            client_id: proxied.as_ref().and_then(|p| p.client_id.as_deref()),
            trace_id: self.trace_id,
        };
        if let Some(line) = line.format(observer.format) {
            observer.sink.write(&line);
        }
        response
    }
}

/// The `grant` label: the grant types the token endpoint knows, `other` for any else.
pub fn grant_label(grant_type: Option<&str>) -> &'static str {
    match grant_type {
        Some("authorization_code") => "authorization_code",
        Some("client_credentials") => "client_credentials",
        Some("password") => "password",
        Some("refresh_token") => "refresh_token",
        None => "none",
        Some(_) => "other",
    }
}

/// The OAuth `error` of a refusal, as a bounded label; `None` for a success.
pub fn error_code(response: &OAuthResponse) -> Option<&'static str> {
    if response.status.is_success() || response.status.is_redirection() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<String>,
    }
    let body: Option<ErrorBody> = serde_json::from_slice::<ErrorBody>(&response.body).ok();
    Some(match body.and_then(|b| b.error).as_deref() {
        Some("invalid_request") => "invalid_request",
        Some("invalid_client") => "invalid_client",
        Some("invalid_grant") => "invalid_grant",
        Some("unauthorized_client") => "unauthorized_client",
        Some("unsupported_grant_type") => "unsupported_grant_type",
        Some("invalid_scope") => "invalid_scope",
        Some("access_denied") => "access_denied",
        Some("unsupported_response_type") => "unsupported_response_type",
        Some("invalid_provision_key") => "invalid_provision_key",
        Some("temporarily_unavailable") => "temporarily_unavailable",
        Some("server_error") => "server_error",
        Some(_) => "other",
        None => "no_error_code",
    })
}

/// The client id a request claims: `client_id` in its parameters, else the user of its
/// Basic credentials. Never the secret beside it.
fn claimed_client_id(params: &Params, auth_header: Option<&str>) -> Option<String> {
    if let Some(id) = params.text("client_id") {
        return Some(id.to_owned());
    }
    let encoded = auth_header?.strip_prefix("Basic ")?.trim();
    let decoded =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, _secret) = text.split_once(':')?;
    Some(id.to_owned())
}
