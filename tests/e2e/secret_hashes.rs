//! Client secrets and provision keys as password hashes: what a controller-fed sidecar keeps
//! on disk holds a PBKDF2 hash with a salt of each secret's own, the token endpoint still
//! tells the right secret from a wrong one, and wrong secrets cannot buy unbounded hashing.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_api::SecretDigest;

use crate::harness::{
    Controller, PodSidecarBuilder, RedisServer, SidecarBuilder, Upstream, article_manifests,
};

const PODS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: iris-0
  labels: {app: iris}
---
apiVersion: v1
kind: Pod
metadata:
  name: iris-1
  labels: {app: iris}
";

const TOKENS: &str = "token-iris-0 default/iris-0\ntoken-iris-1 default/iris-1\n";

/// Every object of `value` that is a serialised secret hash (it names its `algorithm`).
fn secret_hashes(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) if map.contains_key("algorithm") => found.push(value.clone()),
        Value::Object(map) => map.values().for_each(|v| secret_hashes(v, found)),
        Value::Array(items) => items.iter().for_each(|v| secret_hashes(v, found)),
        _ => {}
    }
}

fn hashes_in(cache: &std::path::Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(cache).unwrap();
    let mut found = Vec::new();
    secret_hashes(&serde_json::from_str(&text).unwrap(), &mut found);
    (text, found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_cache_holds_salted_password_hashes_and_the_endpoint_checks_them() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("article.yaml"),
        article_manifests(upstream.port, ""),
    )
    .unwrap();
    std::fs::write(manifests.join("pods.yaml"), PODS).unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let controller = Controller::start(work.path(), &manifests, &tokens, Some(&redis.url())).await;
    let pod = |name: &str| {
        PodSidecarBuilder::new(
            &controller.stream_url(),
            &controller.ca,
            "default",
            name,
            &format!("token-{name}"),
            &work.path().join(format!("{name}.snapshot.json")),
        )
        .redis(&redis.url())
    };
    let a = pod("iris-0").start().await;
    let b = pod("iris-1").start().await;

    let cache = work.path().join("iris-0.snapshot.json");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the snapshot cache is its owner's alone");
    let (text, hashes) = hashes_in(&cache);
    assert_eq!(
        hashes.len(),
        2,
        "the client secret and the provision key: {text}"
    );
    for hash in &hashes {
        assert_eq!(hash["algorithm"], "pbkdf2-sha256", "{hash}");
        assert_eq!(hash["iterations"], 50_000, "{hash}");
        assert_eq!(
            hash["salt"].as_str().unwrap().len(),
            32,
            "16 bytes of salt: {hash}"
        );
    }
    assert_ne!(hashes[0]["salt"], hashes[1]["salt"], "a salt per secret");
    // Each is a hash of its secret under its own salt.
    let digests: Vec<SecretDigest> = hashes
        .iter()
        .map(|h| serde_json::from_value(h.clone()).unwrap())
        .collect();
    assert!(digests.iter().any(|d| d.matches("clientsecret")));
    assert!(digests.iter().any(|d| d.matches("provisionkey")));
    // Neither secret in the clear, nor the fast salted SHA-256 of before, whose salt was the
    // owner's public name.
    assert!(!text.contains("clientsecret") && !text.contains("provisionkey"));
    let owner = b"OAuthApplication/default/sampleapp";
    let mut before = Sha256::new();
    before.update((owner.len() as u64).to_be_bytes());
    before.update(owner);
    before.update(b"clientsecret");
    assert!(!text.contains(&base64_free_hex(&before.finalize())));
    assert!(!text.contains(&base64_free_hex(owner)));

    // Another pod of the same controller gets the same hashes: salts are stable while the
    // Secret is unchanged, so snapshots do not churn.
    let (_, other) = hashes_in(&work.path().join("iris-1.snapshot.json"));
    assert_eq!(other, hashes);

    // The token endpoint: a wrong secret is refused, the right one works, and a wrong one is
    // still refused once the right one is remembered.
    for sidecar in [&a, &b] {
        let wrong = sidecar.password_grant_with("clientsecreT").await;
        assert_eq!(wrong.status(), 400);
        let body: Value = wrong.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        sidecar.password_grant().await;
        let wrong = sidecar.password_grant_with("clientsecret ").await;
        assert_eq!(wrong.status(), 400);
        let provision = sidecar
            .client
            .post(sidecar.url("/event/oauth2/token"))
            .json(&serde_json::json!({
                "client_id": "clientid", "client_secret": "clientsecret",
                "grant_type": "password", "provision_key": "provisionkeY",
                "authenticated_userid": "1"
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(provision.status(), 400);
        let body: Value = provision.json().await.unwrap();
        assert_eq!(body["error"], "invalid_provision_key");
    }
}

fn base64_free_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_past_the_hash_bound_get_503_and_a_remembered_secret_needs_no_slot() {
    let upstream = Upstream::start().await;
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .arg("--max-concurrent-secret-hashes")
        .arg("1")
        .arg("--secret-hash-queue-timeout")
        .arg("0")
        .start()
        .await;
    // Concurrent requests on one HTTP/2 connection: they arrive together, and each wrong
    // secret, before the right one has matched, needs a full hash. Only one may run.
    let burst = |secret: &'static str| {
        let requests = (0..16).map(|_| sidecar.password_grant_with(secret));
        futures_util::future::join_all(requests)
    };
    let mut busy = 0;
    for response in burst("wrong-secret").await {
        match response.status().as_u16() {
            400 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "invalid_client");
            }
            503 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "temporarily_unavailable");
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        busy > 0,
        "16 wrong secrets at once, one hash slot and no queue: some get 503"
    );

    // The right secret works (once a slot is free), and is remembered: then neither it nor a
    // wrong one needs a slot, and a burst of both is answered without any 503.
    sidecar.password_grant().await;
    for (secret, status) in [("clientsecret", 200), ("wrong-secret", 400)] {
        for response in burst(secret).await {
            assert_eq!(response.status(), status, "{secret}");
        }
    }
}
