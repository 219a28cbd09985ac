//! Snapshot deltas end to end: `tollgate controller --manifests` and a real sidecar process
//! that asks for deltas. A change arrives as a delta and is served; a missed delta (dropped
//! by a relay between the two) makes the sidecar reconnect for a whole snapshot.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use crate::harness::{Certs, Controller, PodSidecarBuilder, Scraper, Sidecar, Upstream};
use crate::harness::{article_manifests, eventually};

/// A ceiling only: the file source polls every second.
const PROPAGATION: Duration = Duration::from_secs(30);

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: iris-0
  labels: {app: iris}
";

/// `rotatedsecret`, as the Secret's `data` holds it.
const ROTATED: (&str, &str) = ("rotatedsecret", "cm90YXRlZHNlY3JldA==");

fn write_manifests(dir: &Path, article: &str) {
    let temporary = dir.join(".article.yaml.tmp");
    std::fs::write(&temporary, article).unwrap();
    std::fs::rename(&temporary, dir.join("article.yaml")).unwrap();
}

fn rotate(article: &str) -> String {
    let rotated = article.replace("Y2xpZW50c2VjcmV0", ROTATED.1);
    assert_ne!(rotated, article);
    rotated
}

/// The article's password grant with `secret`: the status and the body's `error`.
async fn grant(sidecar: &Sidecar, secret: &str) -> (u16, Value) {
    let response = sidecar.password_grant_with(secret).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

struct Setup {
    work: tempfile::TempDir,
    manifests: std::path::PathBuf,
    article: String,
    controller: Controller,
    _upstream: Upstream,
}

async fn setup() -> Setup {
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let article = article_manifests(upstream.port, "");
    write_manifests(&manifests, &article);
    std::fs::write(manifests.join("pods.yaml"), POD).unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, "token-iris-0 default/iris-0\n").unwrap();
    let controller = Controller::start(work.path(), &manifests, &tokens, None).await;
    Setup {
        work,
        manifests,
        article,
        controller,
        _upstream: upstream,
    }
}

/// The first line of a fresh stream for iris-0, as a sidecar of an earlier release reads it
/// (no `?deltas=1`): the whole snapshot the controller holds for the pod.
async fn whole_snapshot(controller: &Controller) -> Value {
    let mut response = controller
        .client
        .get(format!(
            "{}/v1/snapshots/default/iris-0",
            controller.stream_url()
        ))
        .bearer_auth("token-iris-0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut line = Vec::new();
    while !line.contains(&b'\n') {
        line.extend_from_slice(&response.chunk().await.unwrap().expect("stream ended"));
    }
    let end = line.iter().position(|b| *b == b'\n').unwrap();
    let frame: Value = serde_json::from_slice(&line[..end]).unwrap();
    assert_eq!(
        frame["type"], "snapshot",
        "an old sidecar gets whole snapshots"
    );
    frame["snapshot"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_arrives_as_a_delta_and_the_old_one_is_refused() {
    let setup = setup().await;
    let controller = &setup.controller;
    let cache = setup.work.path().join("iris-0.snapshot.json");
    let sidecar = PodSidecarBuilder::new(
        &controller.stream_url(),
        &controller.ca,
        "default",
        "iris-0",
        "token-iris-0",
        &cache,
    )
    .start()
    .await;
    assert_eq!(grant(&sidecar, "clientsecret").await.0, 200);
    let scraper = Scraper::at(controller.metrics);
    let deltas = "tollgate_controller_deltas_pushed_total";
    assert_eq!(scraper.metric(deltas).await, 0.0);

    write_manifests(&setup.manifests, &rotate(&setup.article));
    eventually(PROPAGATION, "the rotated secret works", || async {
        grant(&sidecar, ROTATED.0).await.0 == 200
    })
    .await;
    let (status, body) = grant(&sidecar, "clientsecret").await;
    assert_eq!(body["error"], "invalid_client", "{status} {body}");
    // It came as a delta, and the sidecar never reconnected for it.
    assert_eq!(scraper.metric(deltas).await, 1.0);
    assert!(
        !sidecar.logs().contains("refused a delta"),
        "{}",
        sidecar.logs()
    );

    // The cache file holds the result applied, which is the controller's whole snapshot.
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(cached, whole_snapshot(controller).await);
}

/// A relay between the sidecar and the controller, on its own certificate, that drops the
/// first delta of the first stream it relays.
struct GapRelay {
    port: u16,
    certs: Certs,
    streams: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl GapRelay {
    async fn start(dir: &Path, controller: &Controller) -> Self {
        let certs = Certs::new(dir);
        let tls = {
            use rustls_pki_types::pem::PemObject;
            let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&certs.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&certs.key).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let streams = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let upstream = (controller.client.clone(), controller.stream_url());
        let (counter, flag) = (streams.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(tls) = tls.accept(tcp).await else {
                    continue;
                };
                let (upstream, counter, flag) = (upstream.clone(), counter.clone(), flag.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (upstream, counter, flag) =
                            (upstream.clone(), counter.clone(), flag.clone());
                        async move {
                            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
                            Ok::<_, Infallible>(relay(request, upstream, first, flag).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            certs,
            streams,
            dropped,
            task,
        }
    }
}

impl Drop for GapRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RelayBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Forwards one stream request, line by line; on the `first` stream, the first delta is
/// dropped (and `dropped` set).
async fn relay(
    request: Request<Incoming>,
    (client, base): (reqwest::Client, String),
    first: bool,
    dropped: Arc<AtomicBool>,
) -> Response<RelayBody> {
    let path = request.uri().path_and_query().unwrap().to_string();
    let mut forward = client.get(format!("{base}{path}"));
    if let Some(auth) = request.headers().get(http::header::AUTHORIZATION) {
        forward = forward.header(http::header::AUTHORIZATION, auth.as_bytes());
    }
    let response = forward.send().await.unwrap();
    let status = response.status().as_u16();
    let state = (response, Vec::<u8>::new(), first, dropped);
    let lines = futures_util::stream::unfold(
        state,
        |(mut response, mut buffer, drop_one, dropped)| async move {
            loop {
                if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if drop_one
                        && !dropped.load(Ordering::SeqCst)
                        && line.starts_with(b"{\"type\":\"delta\"")
                    {
                        dropped.store(true, Ordering::SeqCst);
                        continue;
                    }
                    let frame = hyper::body::Frame::data(Bytes::from(line));
                    return Some((Ok(frame), (response, buffer, drop_one, dropped)));
                }
                match response.chunk().await {
                    Ok(Some(chunk)) => buffer.extend_from_slice(&chunk),
                    _ => return None,
                }
            }
        },
    );
    let mut answer = Response::new(StreamBody::new(lines).boxed());
    *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_delta_makes_the_sidecar_reconnect_and_converge() {
    let setup = setup().await;
    let relay_dir = setup.work.path().join("relay");
    std::fs::create_dir(&relay_dir).unwrap();
    let relay = GapRelay::start(&relay_dir, &setup.controller).await;
    let sidecar = PodSidecarBuilder::new(
        &format!("https://localhost:{}", relay.port),
        &relay.certs.cert,
        "default",
        "iris-0",
        "token-iris-0",
        &setup.work.path().join("iris-0.snapshot.json"),
    )
    .start()
    .await;
    assert_eq!(grant(&sidecar, "clientsecret").await.0, 200);

    // The rotation's delta is lost on the way: the sidecar keeps serving what it has.
    let rotated = rotate(&setup.article);
    write_manifests(&setup.manifests, &rotated);
    eventually(PROPAGATION, "the relay drops a delta", || async {
        relay.dropped.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(grant(&sidecar, "clientsecret").await.0, 200);
    assert_eq!(relay.streams.load(Ordering::SeqCst), 1);

    // The next delta goes from a version the sidecar never had: it reconnects, is sent the
    // whole snapshot, and serves both changes.
    let with_route = rotated.replace(
        "  - pathPrefix: /event\n    stripPath: false\n",
        "  - pathPrefix: /event\n    stripPath: false\n  - pathPrefix: /api\n    stripPath: true\n",
    );
    write_manifests(&setup.manifests, &with_route);
    eventually(PROPAGATION, "the sidecar converges", || async {
        grant(&sidecar, ROTATED.0).await.0 == 200
    })
    .await;
    let (_, body) = grant(&sidecar, "clientsecret").await;
    assert_eq!(body["error"], "invalid_client", "{body}");
    let token = grant(&sidecar, ROTATED.0).await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sidecar.get_with_token("/api/echo", &token).await.status(),
        200
    );
    assert!(relay.streams.load(Ordering::SeqCst) >= 2);
    let logs = sidecar.logs();
    assert!(logs.contains("refused a delta"), "{logs}");
    assert!(!logs.contains("clientsecret") && !logs.contains(ROTATED.0));
}
