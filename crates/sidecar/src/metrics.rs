//! Prometheus metrics, and the plain-HTTP `/metrics`, `/healthz` and `/readyz` endpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use tollgate_serve::memory;
use tollgate_store::StoreKeys;

use crate::pool::PoolMetrics;

/// What happened to a request: a fixed set, so the label never grows without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Unauthorized,
    StoreError,
    AnonymousMissing,
    NoRoute,
    UpstreamError,
    UpstreamTimeout,
    TokenEndpoint,
    AuthorizeEndpoint,
    IntrospectEndpoint,
    RevokeEndpoint,
    MetadataEndpoint,
    /// A request the gateway cannot read one way only: a path with no normal form, or an
    /// HTTP/1.1 request without exactly one `Host`; or a CONNECT that opens no WebSocket.
    BadRequest,
    /// A WebSocket handshake the application answered with 101: the connection became a
    /// tunnel. One it answered otherwise is `Forwarded`.
    Upgraded,
    /// A WebSocket handshake refused with 503: as many WebSockets as `--max-connections`
    /// were open.
    TooManyUpgrades,
    /// A CORS preflight the service's `cors` block answered.
    CorsPreflight,
}

impl Outcome {
    /// Every outcome, in the order of its discriminant.
    const ALL: [Outcome; 16] = [
        Outcome::Forwarded,
        Outcome::Unauthorized,
        Outcome::StoreError,
        Outcome::AnonymousMissing,
        Outcome::NoRoute,
        Outcome::UpstreamError,
        Outcome::UpstreamTimeout,
        Outcome::TokenEndpoint,
        Outcome::AuthorizeEndpoint,
        Outcome::IntrospectEndpoint,
        Outcome::RevokeEndpoint,
        Outcome::MetadataEndpoint,
        Outcome::BadRequest,
        Outcome::Upgraded,
        Outcome::TooManyUpgrades,
        Outcome::CorsPreflight,
    ];

    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Unauthorized => "unauthorized",
            Outcome::StoreError => "store_error",
            Outcome::AnonymousMissing => "anonymous_missing",
            Outcome::NoRoute => "no_route",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::TokenEndpoint => "token_endpoint",
            Outcome::AuthorizeEndpoint => "authorize_endpoint",
            Outcome::IntrospectEndpoint => "introspect_endpoint",
            Outcome::RevokeEndpoint => "revoke_endpoint",
            Outcome::MetadataEndpoint => "metadata_endpoint",
            Outcome::BadRequest => "bad_request",
            Outcome::Upgraded => "upgraded",
            Outcome::TooManyUpgrades => "too_many_upgrades",
            Outcome::CorsPreflight => "cors_preflight",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Why a client's header was dropped before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DroppedHeader {
    /// Read with `_` as `-`, it names a header the sidecar sets (`X_Consumer_Username`).
    LookAlike,
    /// It has `_` in its name, and its service sets `upstream.dropUnderscoreHeaders`.
    Underscore,
}

impl DroppedHeader {
    const ALL: [DroppedHeader; 2] = [DroppedHeader::LookAlike, DroppedHeader::Underscore];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DroppedHeader::LookAlike => "look_alike",
            DroppedHeader::Underscore => "underscore",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The service labels of a request: names the snapshot gives, which the operator controls,
/// never anything of the request itself. Made once per snapshot and shared.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub namespace: Arc<String>,
    pub service: Arc<String>,
}

/// The labels of `tollgate_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// Empty for a request no route took.
    namespace: Option<Arc<String>>,
    service: Option<Arc<String>>,
    /// `proxy`, `token`, `authorize`, `introspect`, `revoke`, `metadata`, `admin`, or `none`
    /// for a request no route took.
    route: &'static str,
    /// `1xx` … `5xx`.
    status: &'static str,
}

/// The `status` label of each class, by the status code's first digit less one.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`].
fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// The `tollgate_request_duration_seconds` series of one service (or none) and one route
/// kind, one per status class. Each is found in the family (a hash of its labels under a
/// lock) on its first request, and kept: later requests only lock the histogram itself.
/// Made once per snapshot; the family keeps the series, so a new snapshot's handles find
/// the same ones and no count starts again.
#[derive(Debug)]
pub struct DurationSeries {
    service: Option<ServiceLabels>,
    route: &'static str,
    by_status: [OnceLock<Histogram>; STATUS_CLASSES.len()],
}

impl DurationSeries {
    pub fn new(service: Option<ServiceLabels>, route: &'static str) -> Self {
        Self {
            service,
            route,
            by_status: Default::default(),
        }
    }

    /// The service these series are of.
    pub fn service(&self) -> Option<&ServiceLabels> {
        self.service.as_ref()
    }

    pub fn route(&self) -> &'static str {
        self.route
    }

    /// One request answered with `status` after `duration`.
    pub fn observe(&self, metrics: &Metrics, status: StatusCode, duration: Duration) {
        let class = status_class(status);
        let histogram = self.by_status[class].get_or_init(|| {
            let labels = RequestLabels {
                namespace: self.service.as_ref().map(|s| s.namespace.clone()),
                service: self.service.as_ref().map(|s| s.service.clone()),
                route: self.route,
                status: STATUS_CLASSES[class],
            };
            metrics.request_duration.get_or_create(&labels).clone()
        });
        histogram.observe(duration.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    grant: &'static str,
    error: &'static str,
}

/// From half a millisecond (a cached token check) to 10 s (an application's slow answer).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    request_duration: HistogramFamily<RequestLabels>,
    /// The series of requests no route took, and of the admin listener's.
    unrouted_durations: DurationSeries,
    admin_durations: DurationSeries,
    token_requests: Family<TokenLabels, Counter>,
    /// The counter of each outcome, by discriminant: made once, so counting a request is one
    /// atomic add, with no label hashed or lock taken. Every outcome is exported from the
    /// start, at zero, as Prometheus advises.
    requests: [Counter; Outcome::ALL.len()],
    /// Client headers dropped before forwarding, by reason, as `requests`.
    dropped_headers: [Counter; DroppedHeader::ALL.len()],
    pub snapshot_version: Gauge,
    pub services: Gauge,
    pub upstream: PoolMetrics,
    ready: AtomicBool,
    /// With --tls-from-controller: no certificate served yet, so not ready whatever else.
    certificate_pending: AtomicBool,
    /// `tollgate_tls_certificate_expiry_timestamp_seconds`: the controller-issued one's.
    certificate_expiry: Gauge,
}

/// `tollgate_store_unverified_records_total`, read from the store's keys at each scrape.
#[derive(Debug)]
struct StoreRefusals(Option<StoreKeys>);

impl Metrics {
    /// `store_keys`: those of the Redis store, whose refusals are exported; `None` in memory.
    pub fn new(store_keys: Option<StoreKeys>) -> Arc<Self> {
        let mut root = Registry::default();
        tollgate_serve::process::register_metrics(&mut root);
        let registry = root.sub_registry_with_prefix("tollgate");
        tollgate_serve::process::register_build_info(registry);
        registry.register_collector(Box::new(StoreRefusals(store_keys)));
        let request_duration: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head, by service, route kind and status class",
            request_duration.clone(),
        );
        let token_requests = Family::<TokenLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token endpoint answers, by grant type and OAuth error code (`none` for a token issued)",
            token_requests.clone(),
        );
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served by the sidecar, by outcome",
            requests.clone(),
        );
        let snapshot_version = Gauge::default();
        registry.register(
            "snapshot_version",
            "Version of the configuration snapshot being served",
            snapshot_version.clone(),
        );
        let services = Gauge::default();
        registry.register(
            "services",
            "OAuthServices in the snapshot being served",
            services.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the serving certificate issued by the controller's CA expires (Unix seconds); 0 for none",
            certificate_expiry.clone(),
        );
        memory::register_metrics(registry);
        let upstream = PoolMetrics::default();
        registry.register(
            "upstream_connections",
            "Connections opened to the application on 127.0.0.1",
            upstream.opened.clone(),
        );
        registry.register(
            "upstream_idle_connections",
            "Connections to the application kept open for the next client",
            upstream.idle.clone(),
        );
        let requests = Outcome::ALL.map(|outcome| {
            requests
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.label(),
                })
                .clone()
        });
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dropped_request_headers",
            "Client request headers dropped before forwarding, by reason",
            dropped.clone(),
        );
        let dropped_headers = DroppedHeader::ALL.map(|reason| {
            dropped
                .get_or_create(&ReasonLabels {
                    reason: reason.label(),
                })
                .clone()
        });
        Arc::new(Self {
            registry: root,
            request_duration,
            unrouted_durations: DurationSeries::new(None, "none"),
            admin_durations: DurationSeries::new(None, "admin"),
            token_requests,
            requests,
            dropped_headers,
            snapshot_version,
            services,
            upstream,
            ready: AtomicBool::new(false),
            certificate_pending: AtomicBool::new(false),
            certificate_expiry,
        })
    }

    pub fn count(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    /// The `tollgate_request_duration_seconds` series of requests no route took.
    pub fn unrouted_durations(&self) -> &DurationSeries {
        &self.unrouted_durations
    }

    /// The `tollgate_request_duration_seconds` series of the admin listener's requests.
    pub fn admin_durations(&self) -> &DurationSeries {
        &self.admin_durations
    }

    /// One token endpoint answer, by its grant label and error code label.
    pub fn count_token(&self, grant: &'static str, error: &'static str) {
        self.token_requests
            .get_or_create(&TokenLabels { grant, error })
            .inc();
    }

    pub fn count_dropped_header(&self, reason: DroppedHeader) {
        self.dropped_headers[reason as usize].inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Not ready until [`Metrics::set_certificate`]: the certificate comes from the controller.
    pub fn expect_certificate(&self) {
        self.certificate_pending.store(true, Ordering::Release);
    }

    /// A certificate is served: the controller's, expiring at `not_after` (Unix seconds), or
    /// (`None`) a self-signed fallback.
    pub fn set_certificate(&self, not_after: Option<u64>) {
        self.certificate_expiry
            .set(not_after.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)));
        self.certificate_pending.store(false, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.certificate_pending.load(Ordering::Acquire)
    }

    pub fn handle<B>(&self, request: &Request<B>) -> Response<Bytes> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "encoding failed\n".into(),
                    ),
                }
            }
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".into()),
            (&Method::GET, "/readyz") if self.is_ready() => {
                (StatusCode::OK, "text/plain", "ready\n".into())
            }
            (&Method::GET, "/readyz") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        };
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    }
}

// === impl StoreRefusals ===

impl Collector for StoreRefusals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let total = self.0.as_ref().map_or(0, StoreKeys::unverified_total);
        let counter = ConstCounter::new(total);
        let metric = encoder.encode_descriptor(
            "store_unverified_records",
            "Values read from Redis whose seal did not verify, each treated as absent",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readyz(metrics: &Metrics) -> StatusCode {
        let request = Request::get("/readyz").body(()).unwrap();
        metrics.handle(&request).status()
    }

    #[test]
    fn a_sidecar_expecting_its_certificate_is_not_ready_until_it_serves_one() {
        let metrics = Metrics::new(None);
        metrics.expect_certificate();
        metrics.set_ready(true);
        assert_eq!(readyz(&metrics), StatusCode::SERVICE_UNAVAILABLE);
        metrics.set_certificate(Some(1_900_000_000));
        assert_eq!(readyz(&metrics), StatusCode::OK);
        metrics.set_ready(false);
        assert_eq!(readyz(&metrics), StatusCode::SERVICE_UNAVAILABLE);
    }
}
