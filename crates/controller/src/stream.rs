//! The snapshot stream: `GET /v1/snapshots/{namespace}/{pod}`, authenticated by the pod's
//! projected service-account token, answered with the pod's snapshot at once, another one on
//! every change, and heartbeats in between, as newline-delimited JSON. A sidecar that asks
//! with `?deltas=1` is sent each change as a delta from the version this stream last wrote
//! (the whole snapshot when that is smaller); the lines are made once per namespace and
//! versions and shared among streams ([`shared_lines`]).

mod shared_lines;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tollgate_api::Snapshot;
use tollgate_api::snapshot_delta;
use tollgate_api::stream::{self as wire, Frame};

pub use self::shared_lines::DEFAULT_LINE_CACHE_BYTES;
use self::shared_lines::{LineKey, SharedLines};

use crate::auth::{TokenReviewer, bearer_token};
use crate::index::{ObjectRef, Published, SharedIndex, SnapshotRx};
use crate::metrics::Metrics;
use crate::server::{Body, full, message};

/// How long a stream request for a pod the index does not know yet waits for it: a sidecar
/// may start before the controller's pod watch has seen its pod.
pub const POD_WAIT: Duration = Duration::from_secs(30);

/// Everything a stream request needs. Cheap to share between connections.
pub struct StreamServer {
    index: SharedIndex,
    reviewer: Arc<dyn TokenReviewer>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    heartbeat: Duration,
    pod_wait: Duration,
    lines: Arc<SharedLines>,
}

/// One open stream: the pod's channel and what the body needs to write the next frame.
struct OpenStream {
    rx: SnapshotRx,
    first: bool,
    heartbeat: Interval,
    shutdown: watch::Receiver<bool>,
    index: SharedIndex,
    pod: ObjectRef,
    metrics: Arc<Metrics>,
    /// The sidecar asked for deltas.
    deltas: bool,
    /// The snapshot this stream last wrote, which the next delta goes from.
    last: Option<Arc<Snapshot>>,
    lines: Arc<SharedLines>,
}

// === impl StreamServer ===

impl StreamServer {
    pub fn new(
        index: SharedIndex,
        reviewer: Arc<dyn TokenReviewer>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            index,
            reviewer,
            metrics,
            shutdown,
            heartbeat: wire::HEARTBEAT_INTERVAL,
            pod_wait: POD_WAIT,
            lines: Arc::new(SharedLines::new(DEFAULT_LINE_CACHE_BYTES)),
        }
    }

    /// At most `bytes` of lines kept to share among streams (`--stream-line-cache-bytes`).
    pub fn with_line_cache_bytes(mut self, bytes: usize) -> Self {
        self.lines = Arc::new(SharedLines::new(bytes));
        self
    }

    /// Shorter heartbeats and pod waits, for tests.
    pub fn with_timings(mut self, heartbeat: Duration, pod_wait: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.pod_wait = pod_wait;
        self
    }

    /// Answers one request. Only the request's method, path and headers are read.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let Some(pod) = parse_pod_path(wire::SNAPSHOTS_PATH, request.uri().path()) else {
            return message(StatusCode::NOT_FOUND, "Not found");
        };
        if request.method() != Method::GET {
            return message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        }
        let Some(token) = bearer_token(request.headers()) else {
            return unauthorized();
        };
        let identity = match self
            .reviewer
            .review(token.expose(), Some(wire::TOKEN_AUDIENCE))
            .await
        {
            Ok(Some(identity)) => identity,
            Ok(None) => return unauthorized(),
            Err(error) => {
                tracing::warn!(%error, %pod, "cannot authenticate a sidecar");
                return message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot authenticate the request now, retry",
                );
            }
        };
        // A token serves exactly the pod it is bound to: a compromised pod learns nothing
        // about its neighbours.
        if identity.pod().as_ref() != Some(&pod) {
            tracing::info!(%pod, user = %identity.username, "refused a snapshot stream for another pod");
            return message(
                StatusCode::FORBIDDEN,
                "this token is not bound to the pod it asks for",
            );
        }
        let Some(rx) = self.wait_for_pod(&pod).await else {
            return message(
                StatusCode::NOT_FOUND,
                "this pod is not known to the controller (is it labelled as injected?)",
            );
        };
        let deltas = wire::asks_for_deltas(request.uri().query());
        tracing::info!(%pod, deltas, "sidecar connected");
        let open = OpenStream {
            rx,
            first: true,
            heartbeat: heartbeat(self.heartbeat),
            shutdown: self.shutdown.clone(),
            index: self.index.clone(),
            pod,
            metrics: self.metrics.clone(),
            deltas,
            last: None,
            lines: self.lines.clone(),
        };
        self.metrics.connected_sidecars.inc();
        let frames = futures_util::stream::unfold(open, |mut open| async move {
            let line = open.next_line().await?;
            Some((Ok::<_, Infallible>(hyper::body::Frame::data(line)), open))
        });
        let mut response = Response::new(StreamBody::new(frames).boxed());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(wire::CONTENT_TYPE),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn wait_for_pod(&self, pod: &ObjectRef) -> Option<SnapshotRx> {
        let deadline = Instant::now() + self.pod_wait;
        let mut changes = self.index.lock().changes();
        loop {
            if let Some(rx) = self.index.lock().subscribe(&pod.namespace, &pod.name) {
                return Some(rx);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

// === impl OpenStream ===

impl OpenStream {
    /// The next line to write; `None` ends the stream (pod deleted, or the process stops).
    async fn next_line(&mut self) -> Option<Bytes> {
        if std::mem::take(&mut self.first) {
            let published = self.rx.borrow_and_update().clone();
            return Some(self.deliver(&published, false).await);
        }
        loop {
            enum Next {
                Changed,
                Closed,
                Heartbeat,
                Stop,
            }
            let next = tokio::select! {
                changed = self.rx.changed() => if changed.is_ok() { Next::Changed } else { Next::Closed },
                _ = self.heartbeat.tick() => Next::Heartbeat,
                _ = self.shutdown.wait_for(|stop| *stop) => Next::Stop,
            };
            return match next {
                Next::Changed => {
                    let published = self.rx.borrow_and_update().clone();
                    // The version written already: nothing to say.
                    if self
                        .last
                        .as_ref()
                        .is_some_and(|last| last.version == published.snapshot.version)
                    {
                        continue;
                    }
                    Some(self.deliver(&published, true).await)
                }
                Next::Closed => {
                    tracing::info!(pod = %self.pod, "pod deleted: closing its stream");
                    None
                }
                Next::Heartbeat => Some(Bytes::from(Frame::Heartbeat.to_line())),
                Next::Stop => None,
            };
        }
    }

    async fn deliver(&mut self, published: &Published, is_change: bool) -> Bytes {
        let snapshot = &published.snapshot;
        let version = snapshot.version;
        let namespace = &self.pod.namespace;
        let (line, is_delta) = match self.last.as_ref().filter(|_| self.deltas) {
            Some(last) => {
                let key = LineKey {
                    namespace: namespace.clone(),
                    from: Some(last.version),
                    to: version,
                };
                let delta = self
                    .lines
                    .get_or_make(key, || delta_line(last, snapshot))
                    .await;
                if delta.is_empty() {
                    (whole_line(&self.lines, namespace, snapshot).await, false)
                } else {
                    (delta, true)
                }
            }
            None => (whole_line(&self.lines, namespace, snapshot).await, false),
        };
        self.last = Some(snapshot.clone());
        self.index
            .lock()
            .delivered(&self.pod.namespace, &self.pod.name, version);
        self.metrics.snapshots_pushed.inc();
        if is_delta {
            self.metrics.deltas_pushed.inc();
        }
        if is_change {
            self.metrics.observe_push(published.made_at.elapsed());
        }
        self.heartbeat.reset();
        tracing::debug!(pod = %self.pod, version, is_delta, bytes = line.len(), "snapshot sent");
        line
    }
}

/// The whole snapshot's line, shared among the streams of its namespace.
async fn whole_line(lines: &SharedLines, namespace: &str, snapshot: &Arc<Snapshot>) -> Bytes {
    let key = LineKey {
        namespace: namespace.to_owned(),
        from: None,
        to: snapshot.version,
    };
    lines
        .get_or_make(key, || Bytes::from(wire::snapshot_line(snapshot)))
        .await
}

/// The line of the delta from `old` to `new`; empty when the whole snapshot is the better
/// line: when half of its entries or more changed, a delta carries nearly all of it and
/// sizes are compared exactly.
fn delta_line(old: &Snapshot, new: &Snapshot) -> Bytes {
    let delta = snapshot_delta::diff(old, new);
    let entries = new.services.len() + new.consumers.len() + new.applications.len();
    let changed = delta.len();
    let line = Frame::Delta { delta }.to_line();
    if 2 * changed >= entries && line.len() >= wire::snapshot_line(new).len() {
        return Bytes::new();
    }
    Bytes::from(line)
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.connected_sidecars.dec();
        tracing::info!(pod = %self.pod, "sidecar disconnected");
    }
}

fn heartbeat(period: Duration) -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// `{prefix}/{namespace}/{pod}` → the pod: the snapshot stream's and the certificates' paths.
pub fn parse_pod_path(prefix: &str, path: &str) -> Option<ObjectRef> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let (namespace, pod) = rest.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    (valid(namespace) && valid(pod)).then(|| ObjectRef::new(namespace, pod))
}

/// 401 for a request without a valid service-account token.
pub fn unauthorized() -> Response<Body> {
    tollgate_admin::unauthorized_with(
        "a valid service-account token (audience tollgate) is required",
    )
    .map(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_namespace_and_a_pod() {
        let parse_path = |path| parse_pod_path(wire::SNAPSHOTS_PATH, path);
        assert_eq!(
            parse_path("/v1/snapshots/default/iris-0"),
            Some(ObjectRef::new("default", "iris-0"))
        );
        for bad in [
            "/v1/snapshots/default",
            "/v1/snapshots/default/",
            "/v1/snapshots//p",
            "/v1/snapshots/default/p/x",
            "/v1/snapshotsdefault/p",
            "/v2/snapshots/default/p",
            "/v1/snapshots/Default/p",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }
}
