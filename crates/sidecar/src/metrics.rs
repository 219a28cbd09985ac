//! Prometheus metrics, and the plain-HTTP `/metrics`, `/healthz` and `/readyz` endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use tollgate_serve::memory;

use crate::pool::PoolMetrics;

/// What happened to a request: a fixed set, so the label never grows without bound.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    pub snapshot_version: Gauge,
    pub services: Gauge,
    pub upstream: PoolMetrics,
    ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("tollgate");
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
        memory::register_metrics(&mut registry);
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
        Arc::new(Self {
            registry,
            requests,
            snapshot_version,
            services,
            upstream,
            ready: AtomicBool::new(false),
        })
    }

    pub fn count(&self, outcome: &'static str) {
        self.requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
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
            (&Method::GET, "/readyz") if self.ready.load(Ordering::Acquire) => {
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
