//! The snapshot stream as a service, in memory: requests in, newline-delimited frames out. No
//! socket, no TLS: those are the end-to-end tests' business.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tokio::sync::watch;
use tollgate_api::Snapshot;
use tollgate_api::resources::OAuthService;
use tollgate_api::snapshot_delta;
use tollgate_api::stream::Frame;
use tollgate_controller::auth::StaticTokens;
use tollgate_controller::index::{Index, SharedIndex};
use tollgate_controller::metrics::Metrics;
use tollgate_controller::server::Body;
use tollgate_controller::stream::StreamServer;

/// A frame that does not come within this long is not coming (heartbeats are 50 ms here).
const PATIENCE: Duration = Duration::from_secs(10);

fn mk_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            labels: Some([("app".to_owned(), "iris".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn mk_service(route: &str) -> OAuthService {
    mk_named_service("svc", route)
}

fn mk_named_service(name: &str, route: &str) -> OAuthService {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1",
        "kind": "OAuthService",
        "metadata": {"namespace": "default", "name": name},
        "spec": {
            "upstream": {"port": 52773},
            "routes": [{"pathPrefix": route}],
            "oauth2": {"provisionKeySecretRef": {"name": "pk"}, "enablePasswordGrant": true},
        },
    }))
    .unwrap()
}

fn mk_secret() -> Secret {
    Secret {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("pk".into()),
            ..Default::default()
        },
        string_data: Some([("provisionKey".to_owned(), "provisionkey".to_owned())].into()),
        ..Default::default()
    }
}

struct Fixture {
    index: SharedIndex,
    server: StreamServer,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

/// `pod_wait`: how long a request for an unknown pod waits for it.
fn fixture_waiting(pod_wait: Duration) -> Fixture {
    let mut index = Index::new(1);
    index.apply_secret(mk_secret());
    index.apply_service(mk_service("/event"));
    index.apply_pod(&mk_pod("iris-0"));
    let index = SharedIndex::new(index);
    let tokens = StaticTokens::parse("t0 default/iris-0\nt1 default/iris-1\n").unwrap();
    let metrics = Metrics::new();
    let (stop, stopped) = watch::channel(false);
    let server = StreamServer::new(index.clone(), Arc::new(tokens), metrics.clone(), stopped)
        .with_timings(Duration::from_millis(50), pod_wait);
    Fixture {
        index,
        server,
        metrics,
        stop,
    }
}

fn fixture() -> Fixture {
    fixture_waiting(Duration::from_millis(200))
}

fn get(path: &str, token: Option<&str>) -> Request<()> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(()).unwrap()
}

/// Reads the body line by line.
struct Lines {
    body: Body,
    buffer: Vec<u8>,
}

impl Lines {
    /// The next frame, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line[..end]).unwrap());
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame())
                .await
                .expect("no frame in time")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    /// The next frame that is not a heartbeat.
    async fn next_snapshot(&mut self) -> Option<Value> {
        loop {
            let frame = self.next().await?;
            if frame["type"] != "heartbeat" {
                return Some(frame);
            }
        }
    }
}

async fn open(fixture: &Fixture, token: &str) -> Lines {
    open_path(fixture, "/v1/snapshots/default/iris-0", token).await
}

async fn open_path(fixture: &Fixture, path: &str, token: &str) -> Lines {
    let response = fixture.server.handle(get(path, Some(token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        tollgate_api::stream::CONTENT_TYPE
    );
    Lines {
        body: response.into_body(),
        buffer: Vec::new(),
    }
}

async fn status_and_message(fixture: &Fixture, request: Request<()>) -> (StatusCode, String) {
    let response = fixture.server.handle(request).await;
    let status = response.status();
    let body: Bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&body).unwrap();
    (
        status,
        json["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_snapshot_at_once_then_one_per_change_with_heartbeats_between() {
    let fixture = fixture();
    let mut lines = open(&fixture, "t0").await;
    let first = lines.next().await.unwrap();
    assert_eq!(first["type"], "snapshot");
    assert_eq!(
        first["snapshot"]["services"][0]["routes"][0]["pathPrefix"],
        "/event"
    );
    assert_eq!(fixture.metrics.connected_sidecars.get(), 1);

    // Nothing changes: heartbeats only.
    assert_eq!(lines.next().await.unwrap()["type"], "heartbeat");

    fixture.index.lock().apply_service(mk_service("/events"));
    let second = lines.next_snapshot().await.unwrap();
    assert_eq!(
        second["snapshot"]["services"][0]["routes"][0]["pathPrefix"],
        "/events"
    );
    assert!(
        second["snapshot"]["version"].as_u64().unwrap()
            > first["snapshot"]["version"].as_u64().unwrap()
    );

    // A sidecar that did not ask for deltas (an older release's) gets none.
    assert_eq!(fixture.metrics.deltas_pushed.get(), 0);

    // The pod is deleted: its stream ends.
    fixture.index.lock().delete_pod("default", "iris-0");
    assert!(lines.next_snapshot().await.is_none());
    drop(lines);
    assert_eq!(fixture.metrics.connected_sidecars.get(), 0);
}

#[tokio::test]
async fn the_stream_ends_when_the_controller_stops() {
    let fixture = fixture();
    let mut lines = open(&fixture, "t0").await;
    assert_eq!(lines.next().await.unwrap()["type"], "snapshot");
    fixture.stop.send(true).unwrap();
    assert!(lines.next_snapshot().await.is_none());
}

#[tokio::test]
async fn a_pod_that_appears_soon_after_the_request_is_served() {
    // The request returns as soon as the pod appears; the wait is only a ceiling.
    let fixture = fixture_waiting(PATIENCE);
    let index = fixture.index.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        index.lock().apply_pod(&mk_pod("iris-1"));
    });
    let response = fixture
        .server
        .handle(get("/v1/snapshots/default/iris-1", Some("t1")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    later.await.unwrap();
}

#[tokio::test]
async fn refusals_say_why() {
    let fixture = fixture();
    let (status, _) = status_and_message(&fixture, get("/v1/snapshots/default/iris-0", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) =
        status_and_message(&fixture, get("/v1/snapshots/default/iris-0", Some("nope"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, message) =
        status_and_message(&fixture, get("/v1/snapshots/default/iris-0", Some("t1"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("not bound to the pod"), "{message}");
    // Bound to iris-1, which the index never learns about: 404 after the wait.
    let (status, message) =
        status_and_message(&fixture, get("/v1/snapshots/default/iris-1", Some("t1"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.contains("not known"), "{message}");
    let (status, _) = status_and_message(&fixture, get("/v1/other", Some("t0"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut post = get("/v1/snapshots/default/iris-0", Some("t0"));
    *post.method_mut() = http::Method::POST;
    let (status, _) = status_and_message(&fixture, post).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Applies a frame as a sidecar does: a whole snapshot replaces, a delta applies to the
/// version held.
fn follow(held: Option<Snapshot>, frame: Value) -> Snapshot {
    match serde_json::from_value::<Frame>(frame).unwrap() {
        Frame::Snapshot { snapshot } => snapshot,
        Frame::Delta { delta } => snapshot_delta::apply(&held.unwrap(), &delta).unwrap(),
        Frame::Heartbeat => unreachable!(),
    }
}

#[tokio::test]
async fn a_sidecar_that_asks_gets_each_change_as_a_delta_unless_whole_is_smaller() {
    let fixture = fixture();
    let mut lines = open_path(&fixture, "/v1/snapshots/default/iris-0?deltas=1", "t0").await;
    let first = lines.next().await.unwrap();
    assert_eq!(first["type"], "snapshot", "{first}");
    let held = follow(None, first);

    // One service more: the delta carries it alone.
    fixture
        .index
        .lock()
        .apply_service(mk_named_service("svc2", "/other"));
    let change = lines.next_snapshot().await.unwrap();
    assert_eq!(change["type"], "delta", "{change}");
    assert_eq!(change["delta"]["from"], held.version);
    let put = change["delta"]["services"]["put"].as_array().unwrap();
    assert_eq!(put.len(), 1);
    assert_eq!(put[0]["name"], "svc2");
    let held = follow(Some(held), change);
    assert_eq!(held.services.len(), 2);
    let published = fixture.index.lock().subscribe("default", "iris-0").unwrap();
    assert_eq!(held, *published.borrow().snapshot);
    assert_eq!(fixture.metrics.deltas_pushed.get(), 1);

    // Everything replaced: the delta would be larger than the snapshot, which comes whole.
    fixture
        .index
        .lock()
        .reset_services(vec![mk_named_service("svc3", "/third")]);
    let change = lines.next_snapshot().await.unwrap();
    assert_eq!(change["type"], "snapshot", "{change}");
    let held = follow(Some(held), change);
    assert_eq!(held.services[0].name, "svc3");
    assert_eq!(fixture.metrics.deltas_pushed.get(), 1);
    assert_eq!(fixture.metrics.snapshots_pushed.get(), 3);
}

#[tokio::test]
async fn a_namespace_s_deltas_go_to_its_own_pods_only() {
    let mut index = Index::new(1);
    for namespace in ["default", "other"] {
        let mut secret = mk_secret();
        secret.metadata.namespace = Some(namespace.into());
        index.apply_secret(secret);
        let mut service = mk_service("/event");
        service.metadata.namespace = Some(namespace.into());
        index.apply_service(service);
        let mut pod = mk_pod(&format!("{namespace}-0"));
        pod.metadata.namespace = Some(namespace.into());
        index.apply_pod(&pod);
    }
    let index = SharedIndex::new(index);
    let tokens = StaticTokens::parse("t0 default/default-0\nt9 other/other-0\n").unwrap();
    let (_stop, stopped) = watch::channel(false);
    let fixture = Fixture {
        index: index.clone(),
        server: StreamServer::new(index.clone(), Arc::new(tokens), Metrics::new(), stopped)
            .with_timings(Duration::from_millis(50), Duration::from_millis(200)),
        metrics: Metrics::new(),
        stop: watch::channel(false).0,
    };
    let mut ours = open_path(&fixture, "/v1/snapshots/default/default-0?deltas=1", "t0").await;
    let mut theirs = open_path(&fixture, "/v1/snapshots/other/other-0?deltas=1", "t9").await;
    assert_eq!(ours.next().await.unwrap()["type"], "snapshot");
    assert_eq!(theirs.next().await.unwrap()["type"], "snapshot");

    index
        .lock()
        .apply_service(mk_named_service("svc2", "/other"));
    let change = ours.next_snapshot().await.unwrap();
    assert_eq!(change["type"], "delta", "{change}");
    assert_eq!(
        change["delta"]["services"]["put"][0]["namespace"], "default",
        "{change}"
    );
    // The other namespace's stream hears heartbeats only.
    for _ in 0..3 {
        let frame = theirs.next().await.unwrap();
        assert_eq!(frame["type"], "heartbeat", "{frame}");
    }
}
