//! The controller's Prometheus metrics, and its plain-HTTP `/metrics`, `/healthz` and
//! `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::server::{Body, response};

/// A reconcile error's reason: a fixed set (compile reasons, and `StatusPatch`, `Watch`,
/// `Lease`, `ManifestLoad`), so the label never grows without bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The kind of object a watch follows: the controller's fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Where a pod's sidecar stands against its latest snapshot.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenerationLabels {
    generation: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconcile_errors: Family<ReasonLabels, Counter>,
    /// Time to recompile a namespace's snapshots after one of its objects changed.
    pub reconcile_duration: Histogram,
    watch_restarts: Family<KindLabels, Counter>,
    sidecar_generations: Family<GenerationLabels, Gauge>,
    pub connected_sidecars: Gauge,
    pub snapshot_version: Gauge,
    pub pods: Gauge,
    pub snapshots_pushed: Counter,
    pub deltas_pushed: Counter,
    push_latency: Histogram,
    pub leader: Gauge,
    ready: AtomicBool,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut root = Registry::default();
        tollgate_serve::process::register_metrics(&mut root);
        let registry = root.sub_registry_with_prefix("tollgate_controller");
        tollgate_serve::process::register_build_info(registry);
        // From 0.1 ms (a small namespace) to about 3 s.
        let reconcile_duration = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to recompile a namespace's snapshots after one of its objects changed",
            reconcile_duration.clone(),
        );
        let watch_restarts = Family::<KindLabels, Counter>::default();
        registry.register(
            "watch_restarts",
            "Times a watch of the API server failed and was started again, by kind",
            watch_restarts.clone(),
        );
        let sidecar_generations = Family::<GenerationLabels, Gauge>::default();
        registry.register(
            "sidecar_snapshots",
            "Injected pods by the snapshot their sidecar holds: the latest, an older one, or none yet",
            sidecar_generations.clone(),
        );
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Problems found while reconciling, by reason: objects that became not ready, and failed API calls",
            reconcile_errors.clone(),
        );
        let connected_sidecars = Gauge::default();
        registry.register(
            "connected_sidecars",
            "Sidecars holding an open snapshot stream to this replica",
            connected_sidecars.clone(),
        );
        let snapshot_version = Gauge::default();
        registry.register(
            "snapshot_version",
            "Highest snapshot version made so far",
            snapshot_version.clone(),
        );
        let pods = Gauge::default();
        registry.register("pods", "Pods known to the index", pods.clone());
        let snapshots_pushed = Counter::default();
        registry.register(
            "snapshots_pushed",
            "Snapshots written to sidecar streams",
            snapshots_pushed.clone(),
        );
        let deltas_pushed = Counter::default();
        registry.register(
            "deltas_pushed",
            "Of the snapshots pushed, those written as deltas",
            deltas_pushed.clone(),
        );
        // From 1 ms to about 16 s: a push is normally well under a second.
        let push_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
        );
        registry.register(
            "push_latency_seconds",
            "Time from a change in the index to the new snapshot written to a sidecar's stream",
            push_latency.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and writes status",
            leader.clone(),
        );
        tollgate_serve::memory::register_metrics(registry);
        Arc::new(Self {
            registry: root,
            reconcile_errors,
            reconcile_duration,
            watch_restarts,
            sidecar_generations,
            connected_sidecars,
            snapshot_version,
            pods,
            snapshots_pushed,
            deltas_pushed,
            push_latency,
            leader,
            ready: AtomicBool::new(false),
        })
    }

    pub fn reconcile_error(&self, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A watch failed and is being started again.
    pub fn watch_restarted(&self, kind: &str) {
        self.watch_restarts
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Pods whose sidecar holds the latest snapshot, an older one, and none yet.
    pub fn set_sidecar_generations(&self, latest: usize, older: usize, none: usize) {
        for (generation, count) in [("latest", latest), ("older", older), ("none", none)] {
            self.sidecar_generations
                .get_or_create(&GenerationLabels { generation })
                .set(count as i64);
        }
    }

    pub fn observe_push(&self, latency: Duration) {
        self.push_latency.observe(latency.as_secs_f64());
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn handle<B>(&self, request: &Request<B>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => response(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(_) => response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "encoding failed\n",
                    ),
                }
            }
            (&Method::GET, "/healthz") => response(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, "/readyz") if self.is_ready() => {
                response(StatusCode::OK, "text/plain", "ready\n")
            }
            (&Method::GET, "/readyz") => {
                response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
            _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}
