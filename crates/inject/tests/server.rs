//! The webhook's HTTP surface: `handle` without a socket, then `serve_webhook` over real TLS
//! (HTTP/2 and HTTP/1.1, as the API server may use either).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tollgate_inject::InjectConfig;
use tollgate_inject::server::{
    BodyBudget, ListenerLimits, MAX_REVIEW_BYTES, WebhookLimits, handle, serve_webhook,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn call(method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap();
    let response = handle(request, &InjectConfig::new("tollgate:test"));
    (response.status(), response.into_body())
}

fn allowed_with_patch(body: &[u8]) -> (bool, bool) {
    let review: Value = serde_json::from_slice(body).unwrap();
    (
        review["response"]["allowed"].as_bool().unwrap(),
        review["response"].get("patch").is_some(),
    )
}

#[test]
fn the_two_paths_are_the_two_webhooks() {
    let (status, body) = call(Method::POST, "/mutate", fixture("pod-plain.json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed_with_patch(&body), (true, false));

    let (status, body) = call(Method::POST, "/mutate/namespace", fixture("pod-plain.json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed_with_patch(&body), (true, true));

    let (status, body) = call(Method::POST, "/mutate", fixture("pod-annotated.json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed_with_patch(&body), (true, true));
}

#[test]
fn anything_else_is_an_http_error() {
    assert_eq!(
        call(Method::POST, "/validate", fixture("pod-plain.json")).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(Method::GET, "/mutate", Vec::new()).0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (status, body) = call(Method::POST, "/mutate", b"{\"kind\":".to_vec());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).starts_with("not an AdmissionReview"));
}

struct Webhook {
    url: String,
    client: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(budget: usize) -> Webhook {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = CertificateDer::from_pem_slice(generated.cert.pem().as_bytes()).unwrap();
    let key =
        PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let config = Arc::new(InjectConfig::new("tollgate:test"));
    let limits = WebhookLimits {
        listener: ListenerLimits::default(),
        budget: BodyBudget::new(budget),
    };
    let task = tokio::spawn(serve_webhook(
        listener,
        Arc::new(server),
        config,
        limits,
        stopped,
    ));
    Webhook {
        url,
        client,
        stop,
        task,
    }
}

#[tokio::test]
async fn serves_reviews_over_tls_and_stops_on_signal() {
    let webhook = start(16 << 20).await;
    let response = webhook
        .client
        .post(format!("{}/mutate", webhook.url))
        .header("content-type", "application/json")
        .body(fixture("pod-annotated.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{response:?}"
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(allowed_with_patch(&body), (true, true));

    // A body larger than any AdmissionReview is cut off, not buffered.
    let response = webhook
        .client
        .post(format!("{}/mutate", webhook.url))
        .body(vec![b' '; MAX_REVIEW_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);

    webhook.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), webhook.task)
        .await
        .expect("the listener stops")
        .unwrap();
}

#[tokio::test]
async fn reviews_held_at_once_are_bounded_by_the_body_budget() {
    let webhook = start(64 * 1024).await;
    // A client that sends most of the budget's worth of a review, then stalls.
    let (stall, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    stall.send(Ok(vec![b' '; 60 * 1024])).await.unwrap();
    let stalled = webhook
        .client
        .post(format!("{}/mutate", webhook.url))
        .body(reqwest::Body::wrap(ChannelBody(rx)))
        .send();
    let stalled = tokio::spawn(stalled);
    // Its bytes are in the budget once the webhook has read them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = webhook
        .client
        .post(format!("{}/mutate", webhook.url))
        .header("content-type", "application/json")
        .body(fixture("pod-annotated.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    drop(stall);
    let _ = stalled.await;
    // Given back when the stalled review ended.
    let response = webhook
        .client
        .post(format!("{}/mutate", webhook.url))
        .header("content-type", "application/json")
        .body(fixture("pod-annotated.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

/// A request body sent chunk by chunk through a channel; it ends when the sender is dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|chunk| chunk.map(|c| http_body::Frame::data(c.into()))))
    }
}
