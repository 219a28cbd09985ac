//! What the gateway records of each request, as one thin call at its start
//! ([`Observer::begin`]) and one at its answer ([`Seen::finish`]): the ids the application
//! receives, the duration histogram, the token endpoint's counters, the access-log line and
//! the audit line of a client that failed to authenticate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use hyper::body::Body;
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, Consumer, Service};
use tollgate_oauth::{OAuthResponse, Params};

use crate::access_log::{self, AccessLine, AccessLogFormat, LineSink};
use crate::metrics::{DurationSeries, Metrics, ServiceLabels};
use crate::routes::Endpoint;
use crate::trace_context::{self, NewRequestId, REQUEST_ID, RequestId, TraceId};

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

/// One request, from its head to its answer. Small, as it rides in every request's future:
/// what only the access log reads is boxed, and only made with the log on.
#[derive(Debug)]
pub struct Seen {
    started: Instant,
    /// The client sent no `X-Request-Id` that is kept: the application gets a new one.
    /// Only a flag: with the log off the id is made as the head is written, so the
    /// request's future (which hyper moves by value) carries none.
    needs_request_id: bool,
    /// The route kind the request was routed to; `None` until it is. Its service's series
    /// are the snapshot's, which the caller holds: none is shared here.
    endpoint: Option<Endpoint>,
    /// With the access log on only.
    logged: Option<Box<Logged>>,
}

/// What the access log says of a request that the answer does not: read as it starts.
#[derive(Debug)]
struct Logged {
    /// The client's `X-Request-Id`, when it is the one the application receives.
    sent_request_id: Option<http::HeaderValue>,
    /// Else the one this hop made, which the application receives.
    new_request_id: Option<RequestId>,
    trace_id: Option<TraceId>,
    client: SocketAddr,
    method: Method,
    /// The normalised path (its query is never logged), once the request is read one way:
    /// a share of the request's own bytes, not a copy.
    path: Option<PathAndQuery>,
    /// Noted by the proxy path once the application answered.
    proxied: Option<ProxySeen>,
}

/// A service's `tollgate_request_duration_seconds` series, one per route kind: made with
/// each snapshot the gateway serves, so a request's observation hashes no label.
#[derive(Debug)]
pub(crate) struct ServiceDurations {
    /// By [`Endpoint`]'s discriminant.
    by_endpoint: [DurationSeries; ENDPOINTS.len()],
}

/// Every endpoint, in the order of its discriminant.
const ENDPOINTS: [Endpoint; 6] = [
    Endpoint::Token,
    Endpoint::Authorize,
    Endpoint::Introspect,
    Endpoint::Revoke,
    Endpoint::Metadata,
    Endpoint::Proxy,
];

/// What the proxy path learns that the access log says, with the access log on only. Who called is found again in the snapshot by index, rather
/// than copied out of it.
#[derive(Debug, Clone)]
pub(crate) struct ProxySeen {
    upstream_duration: Option<Duration>,
    who: Who,
}

/// A request id as an audit line names it.
#[derive(Debug)]
pub(crate) enum RequestIdText {
    Sent(Option<String>),
    New(RequestId),
}

impl RequestIdText {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            RequestIdText::Sent(sent) => sent.as_deref(),
            RequestIdText::New(id) => Some(id.as_str()),
        }
    }
}

/// An OAuth endpoint's request, as [`Observer::oauth_answered`] reads it.
#[derive(Clone, Copy)]
pub struct OAuthRequest<'a> {
    pub endpoint: Endpoint,
    pub service: &'a Service,
    pub params: &'a Params,
    /// The service's auth header, for the client id of Basic credentials.
    pub auth_header: Option<&'a str>,
    /// Its `X-Request-Id`: the client's, or the one this hop made.
    pub request_id: Option<&'a str>,
    pub client: SocketAddr,
}

/// Who a proxied request came from, kept for the access log: the snapshot it was
/// authenticated under, and its consumer's and application's places in it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Who {
    snapshot: Option<Arc<Snapshot>>,
    consumer: Option<usize>,
    application: Option<usize>,
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
    pub fn begin<B>(&self, request: &mut Request<B>, client: SocketAddr) -> Seen {
        let propagated =
            trace_context::propagate(request.headers_mut(), self.max_request_id_length);
        let logged = self.logs().then(|| {
            Box::new(Logged {
                sent_request_id: request.headers().get(REQUEST_ID).cloned(),
                new_request_id: propagated.needs_request_id.then(RequestId::new),
                trace_id: propagated.trace_id,
                client,
                method: request.method().clone(),
                path: None,
                proxied: None,
            })
        });
        Seen {
            started: Instant::now(),
            needs_request_id: propagated.needs_request_id,
            endpoint: None,
            logged,
        }
    }

    /// Who a proxied request came from; nothing with the access log off.
    pub(crate) fn who(
        &self,
        snapshot: &Arc<Snapshot>,
        consumer: &Consumer,
        application: Option<&Application>,
    ) -> Who {
        if !self.logs() {
            return Who::default();
        }
        Who {
            snapshot: Some(snapshot.clone()),
            consumer: index_in(&snapshot.consumers, consumer),
            application: application.and_then(|a| index_in(&snapshot.applications, a)),
        }
    }

    /// Counts an OAuth endpoint's answer (the token endpoint's by grant and error), and logs
    /// a client that failed to authenticate.
    pub fn oauth_answered(&self, request: OAuthRequest<'_>, response: &OAuthResponse) {
        let OAuthRequest {
            endpoint,
            service,
            params,
            auth_header,
            request_id,
            client,
        } = request;
        let error = error_code(response);
        if endpoint == Endpoint::Token {
            let grant = grant_label(params.text("grant_type"));
            self.metrics.count_token(grant, error.unwrap_or("none"));
        }
        if error == Some("invalid_client") {
            let request_id = request_id.unwrap_or("-");
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
    pub fn read(&mut self, uri: &http::Uri) {
        if let Some(logged) = &mut self.logged {
            logged.path = uri.path_and_query().cloned();
        }
    }

    /// The `X-Request-Id` the application's head gets from this hop; `None` when the
    /// client's is kept (and in the request's headers).
    pub(crate) fn new_request_id(&self) -> Option<NewRequestId<'_>> {
        if !self.needs_request_id {
            return None;
        }
        let logged = self.logged.as_ref().and_then(|l| l.new_request_id.as_ref());
        Some(logged.map_or(NewRequestId::Make, NewRequestId::Made))
    }

    /// The request id an audit line names: the client's (in `headers`), the one the access
    /// log says, or a new one.
    pub(crate) fn audit_request_id(&self, headers: &http::HeaderMap) -> RequestIdText {
        match self.new_request_id() {
            None => RequestIdText::Sent(
                headers
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            ),
            Some(NewRequestId::Made(id)) => RequestIdText::New(*id),
            Some(NewRequestId::Make) => RequestIdText::New(RequestId::new()),
        }
    }

    /// When the application was sent the request: read for the access log only.
    pub(crate) fn upstream_started(&self) -> Option<Instant> {
        self.logged.is_some().then(Instant::now)
    }

    /// What the proxy path learnt once the application answered: who called, and the
    /// application's time (from `upstream`, `None` when it was not timed). Nothing is kept
    /// with the access log off.
    pub(crate) fn proxied(&mut self, upstream: Option<Instant>, who: Who) {
        if let Some(logged) = &mut self.logged {
            logged.proxied = Some(ProxySeen {
                upstream_duration: upstream.map(|started| started.elapsed()),
                who,
            });
        }
    }

    /// The request was routed to a service's `endpoint`.
    pub(crate) fn routed(&mut self, endpoint: Endpoint) {
        self.endpoint = Some(endpoint);
    }

    /// Records the answer, and gives it back.
    /// `service`: the series of the service it was routed to, from the snapshot it was
    /// routed by.
    pub(crate) fn finish<T: Body>(
        self,
        observer: &Observer,
        service: Option<&ServiceDurations>,
        response: Response<T>,
    ) -> Response<T> {
        let duration = self.started.elapsed();
        let series = match (service, self.endpoint) {
            (Some(service), Some(endpoint)) => service.of(endpoint),
            _ => observer.metrics.unrouted_durations(),
        };
        series.observe(&observer.metrics, response.status(), duration);
        let Some(logged) = &self.logged else {
            return response;
        };
        let proxied = logged.proxied.as_ref();
        let who = proxied.map(|p| &p.who);
        let snapshot = who.and_then(|who| who.snapshot.as_deref());
        let consumer = who
            .and_then(|who| snapshot?.consumers.get(who.consumer?))
            .map(|c| c.username.as_str());
        let client_id = who
            .and_then(|who| snapshot?.applications.get(who.application?))
            .map(|a| a.client_id.as_str());
        let line = AccessLine {
            time: SystemTime::now() - duration,
            request_id: logged
                .new_request_id
                .as_ref()
                .map(RequestId::as_str)
                .or_else(|| logged.sent_request_id.as_ref()?.to_str().ok())
                .unwrap_or("-"),
            client: logged.client,
            method: logged.method.as_str(),
            path: logged.path.as_ref().map(PathAndQuery::path),
            service: series
                .service()
                .map(|s| (s.namespace.as_str(), s.service.as_str())),
            route: series.route(),
            status: response.status().as_u16(),
            bytes: response.body().size_hint().exact(),
            duration,
            upstream_duration: proxied.and_then(|p| p.upstream_duration),
            consumer,
            client_id,
            trace_id: logged.trace_id,
        };
        observer.sink.write_access_line(&line, observer.format);
        response
    }
}

// === impl ServiceDurations ===

impl ServiceDurations {
    pub(crate) fn new(service: &ServiceLabels) -> Self {
        Self {
            by_endpoint: ENDPOINTS
                .map(|endpoint| DurationSeries::new(Some(service.clone()), endpoint.route_label())),
        }
    }

    fn of(&self, endpoint: Endpoint) -> &DurationSeries {
        &self.by_endpoint[endpoint as usize]
    }
}

/// The place of `one` in `all`, when it is one of its elements: found from its address, as a
/// scan of a large snapshot's consumers would cost a request its time.
fn index_in<T>(all: &[T], one: &T) -> Option<usize> {
    let offset = (one as *const T as usize).wrapping_sub(all.as_ptr() as usize);
    let index = offset / size_of::<T>().max(1);
    all.get(index)
        .filter(|found| std::ptr::eq(*found, one))
        .map(|_| index)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_is_found_by_its_address_and_a_copy_is_not() {
        let all = vec![String::from("a"), String::from("b"), String::from("c")];
        assert_eq!(index_in(&all, &all[0]), Some(0));
        assert_eq!(index_in(&all, &all[2]), Some(2));
        let copy = all[1].clone();
        assert_eq!(index_in(&all, &copy), None);
        assert_eq!(index_in(&all[..1], &all[2]), None);
    }

    #[test]
    fn each_endpoint_observes_into_its_own_route_label() {
        let service = ServiceLabels {
            namespace: Arc::new("team-a".into()),
            service: Arc::new("orders".into()),
        };
        let durations = ServiceDurations::new(&service);
        for endpoint in ENDPOINTS {
            assert_eq!(durations.of(endpoint).route(), endpoint.route_label());
            assert_eq!(durations.of(endpoint).service(), Some(&service));
        }
    }
}
