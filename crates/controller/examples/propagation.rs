//! How fast a change reaches every sidecar, and what the index costs in memory.
//!
//! `cargo run --release -p tollgate-controller --example propagation`
//!
//! - For N = 1, 10 and 100 stream clients (in-process, through the real stream handler, no
//!   TLS): the time from a change applied to the index (a rotated client secret) to all N
//!   clients holding the new snapshot; median and worst of 20 changes. A real change adds its
//!   source's delay in front: the API server's watch (milliseconds), or the file source's poll
//!   (up to a second).
//! - The resident memory the index adds for 1,000 OAuthApplications (with their Consumers and
//!   Secrets) and 10 pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use tokio::sync::{mpsc, watch};
use tollgate_api::manifests::Resources;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};
use tollgate_controller::auth::StaticTokens;
use tollgate_controller::index::{Index, SharedIndex};
use tollgate_controller::metrics::Metrics;
use tollgate_controller::stream::StreamServer;

const CHANGES: usize = 20;

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn service() -> OAuthService {
    object(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthService",
        "metadata": {"namespace": "default", "name": "svc"},
        "spec": {"upstream": {"port": 52773}, "routes": [{"pathPrefix": "/event"}],
                 "oauth2": {"provisionKeySecretRef": {"name": "pk"}, "enablePasswordGrant": true}},
    }))
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    object(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"namespace": "default", "name": name},
        "stringData": {key: value},
    }))
}

fn consumer(name: &str) -> Consumer {
    object(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "Consumer",
        "metadata": {"namespace": "default", "name": name}, "spec": {},
    }))
}

fn application(i: usize) -> OAuthApplication {
    object(serde_json::json!({
        "apiVersion": "oauth.tollgate.dev/v1alpha1", "kind": "OAuthApplication",
        "metadata": {"namespace": "default", "name": format!("app-{i}")},
        "spec": {"consumerRef": {"name": format!("consumer-{i}")}, "clientId": format!("client-{i}"),
                 "clientSecretRef": {"name": format!("app-{i}-secret")},
                 "redirectUris": ["https://app.example.com/callback"]},
    }))
}

fn pod(i: usize) -> Pod {
    object(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "default", "name": format!("iris-{i}"), "labels": {"app": "iris"}},
    }))
}

/// Resident memory of this process, in bytes (Linux).
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

async fn propagation(clients: usize) -> (Duration, Duration) {
    let mut index = Index::new(1);
    index.apply_secret(secret("pk", "provisionKey", "provisionkey"));
    index.apply_service(service());
    index.apply_consumer(consumer("consumer-0"));
    index.apply_application(application(0));
    index.apply_secret(secret("app-0-secret", "clientSecret", "s-0"));
    let mut tokens = String::new();
    for i in 0..clients {
        index.apply_pod(&pod(i));
        tokens.push_str(&format!("token-{i} default/iris-{i}\n"));
    }
    let index = SharedIndex::new(index);
    let (_stop, stopped) = watch::channel(false);
    let server = Arc::new(StreamServer::new(
        index.clone(),
        Arc::new(StaticTokens::parse(&tokens).expect("tokens")),
        Metrics::new(),
        stopped,
    ));

    // Each client reports the version of every snapshot it reads.
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<u64>();
    for i in 0..clients {
        let request = Request::get(format!("/v1/snapshots/default/iris-{i}"))
            .header("authorization", format!("Bearer token-{i}"))
            .body(())
            .expect("request");
        let mut body = server.handle(request).await.into_body();
        let seen_tx = seen_tx.clone();
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let frame: serde_json::Value =
                        serde_json::from_slice(&line[..end]).unwrap_or_default();
                    if let Some(version) = frame["snapshot"]["version"].as_u64() {
                        let _ = seen_tx.send(version);
                    }
                }
            }
        });
    }
    for _ in 0..clients {
        seen.recv().await;
    }

    let mut times = Vec::new();
    for change in 0..CHANGES {
        let started = Instant::now();
        // Pods of one selection share one new version, above the highest before the change.
        let floor = {
            let mut index = index.lock();
            let floor = index.latest_version();
            let value = format!("rotated-{change}");
            index.apply_secret(secret("app-0-secret", "clientSecret", &value));
            floor
        };
        let mut holding = 0;
        while holding < clients {
            match seen.recv().await {
                Some(version) if version > floor => holding += 1,
                Some(_) => {}
                None => panic!("the streams ended"),
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("change → all clients holding it (in-process stream handler, {CHANGES} changes)");
    for clients in [1, 10, 100] {
        let (median, worst) = propagation(clients).await;
        println!("  N = {clients:>3}: median {median:>10.2?}, worst {worst:>10.2?}");
    }

    // Built as a watch's first list is: all at once.
    let mut resources = Resources {
        services: vec![service()],
        secrets: vec![secret("pk", "provisionKey", "provisionkey")],
        ..Default::default()
    };
    for i in 0..1000 {
        resources.consumers.push(consumer(&format!("consumer-{i}")));
        resources.secrets.push(secret(
            &format!("app-{i}-secret"),
            "clientSecret",
            &format!("s-{i}"),
        ));
        resources.applications.push(application(i));
    }
    let pods: Vec<Pod> = (0..10).map(pod).collect();
    let before = resident();
    let started = Instant::now();
    let mut index = Index::new(1);
    index.replace_all(resources, &pods);
    let built = started.elapsed();
    let after = resident();
    let started = Instant::now();
    index.apply_secret(secret("app-0-secret", "clientSecret", "rotated"));
    let one_change = started.elapsed();
    let applications = index
        .subscribe("default", "iris-0")
        .map_or(0, |rx| rx.borrow().snapshot.applications.len());
    println!(
        "index with {applications} applications and 10 pods: {:.1} MiB resident, built in {built:.2?}, one change recompiled in {one_change:.2?}",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
    );
}
