//! The controller end to end: `tollgate controller --manifests` (the file source, no API
//! server), two real sidecar processes that follow it, a real Redis and a localhost upstream.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Controller, EVENT_1, PodSidecarBuilder, RedisServer, Scraper, Sidecar, Upstream,
    article_manifests, eventually,
};

/// Configuration changes reach sidecars within this long (the file source polls every
/// second); generous, as a loaded machine is slow, and only ever a ceiling.
const PROPAGATION: Duration = Duration::from_secs(30);

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

const TOKENS: &str = "# sidecar tokens, as projected service-account tokens would be\n\
                      token-iris-0 default/iris-0\n\
                      token-iris-1 default/iris-1\n";

fn write_manifests(dir: &Path, article: &str) {
    // Written whole and renamed, as a ConfigMap update is: the controller never reads half.
    let temporary = dir.join(".article.yaml.tmp");
    std::fs::write(&temporary, article).unwrap();
    std::fs::rename(&temporary, dir.join("article.yaml")).unwrap();
}

async fn status_of(sidecar: &Sidecar, path: &str, token: &str) -> u16 {
    match sidecar
        .client
        .get(sidecar.url(path))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn access_token(sidecar: &Sidecar) -> String {
    sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_follow_the_controller_and_outlive_it() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let article = article_manifests(upstream.port, "");
    write_manifests(&manifests, &article);
    std::fs::write(manifests.join("pods.yaml"), PODS).unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();

    let mut controller =
        Controller::start(work.path(), &manifests, &tokens, Some(&redis.url())).await;
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
    let b_builder = pod("iris-1");
    let mut b = b_builder.start().await;
    // Each sidecar's snapshot stream is a connection the controller counts, and whose memory
    // it hands back once a rollout closes them.
    let scraper = Scraper::at(controller.metrics);
    let open = scraper.metric("tollgate_controller_open_connections").await;
    assert!(open >= 3.0, "two streams and the scraper; {open} counted");
    let trims = scraper
        .metric("tollgate_controller_memory_trims_total")
        .await;
    assert_eq!(trims, 0.0);

    // The article's flow on one sidecar; its token is good on the other.
    let token = access_token(&a).await;
    for sidecar in [&a, &b] {
        let response = sidecar.get_with_token("/event/1", &token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), EVENT_1);
    }
    assert_eq!(
        upstream.last().header("x-consumer-username"),
        Some("ClientApp")
    );

    // A new route, applied to the files: both sidecars serve it, without a restart.
    assert_eq!(status_of(&a, "/api/echo", &token).await, 404);
    let changed = article.replace(
        "  - pathPrefix: /event\n    stripPath: false\n",
        "  - pathPrefix: /event\n    stripPath: false\n  - pathPrefix: /api\n    stripPath: true\n",
    );
    assert_ne!(changed, article, "the route edit must apply");
    write_manifests(&manifests, &changed);
    for sidecar in [&a, &b] {
        eventually(
            PROPAGATION,
            "the new route reaches both sidecars",
            || async { status_of(sidecar, "/api/echo", &token).await == 200 },
        )
        .await;
    }
    assert_eq!(upstream.last().path_and_query, "/echo");

    // The controller's admin API lists the token and deletes it; both sidecars refuse it.
    let admin = |path: &str| {
        controller
            .client
            .get(controller.admin_url(path))
            .bearer_auth("token-iris-0")
    };
    let listed: Value = admin("/default/oauth2_tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = listed["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed}");
    let id = entries[0]["id"].as_str().unwrap().to_owned();
    let deleted = controller
        .client
        .delete(controller.admin_url(&format!("/default/oauth2_tokens/{id}")))
        .bearer_auth("token-iris-1")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    for sidecar in [&a, &b] {
        eventually(
            PROPAGATION,
            "both sidecars refuse the deleted token",
            || async { status_of(sidecar, "/event/1", &token).await == 401 },
        )
        .await;
    }

    // The controller goes away: both sidecars keep serving what they hold.
    assert_eq!(controller.terminate(), Some(0));
    let token = access_token(&b).await;
    for sidecar in [&a, &b] {
        assert_eq!(status_of(sidecar, "/api/echo", &token).await, 200);
        assert_eq!(status_of(sidecar, "/event/1", &token).await, 200);
    }

    // A sidecar restarted while the controller is down serves the last snapshot it was
    // sent, new route included, from its cache.
    assert_eq!(b.terminate(), Some(0));
    drop(b);
    let b = b_builder.start().await;
    assert_eq!(status_of(&b, "/api/echo", &token).await, 200);
    let response = b.get_with_token("/event/1", &token).await;
    assert_eq!(response.status(), 200);
    assert!(
        b.logs().contains("serving the cached snapshot"),
        "{}",
        b.logs()
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_serves_only_the_pod_a_token_is_bound_to() {
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_manifests(&manifests, &article_manifests(upstream.port, ""));
    std::fs::write(manifests.join("pods.yaml"), PODS).unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let controller = Controller::start(work.path(), &manifests, &tokens, None).await;

    let stream = |pod: &str, token: &str| {
        controller
            .client
            .get(format!(
                "{}/v1/snapshots/default/{pod}",
                controller.stream_url()
            ))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        stream("iris-0", "token-iris-1").await.unwrap().status(),
        403
    );
    assert_eq!(stream("iris-0", "not-a-token").await.unwrap().status(), 401);

    // The right token: the pod's snapshot at once, as one JSON line, secrets as digests.
    let mut response = stream("iris-0", "token-iris-0").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let mut line = Vec::new();
    while !line.contains(&b'\n') {
        let chunk = response.chunk().await.unwrap().expect("the stream ended");
        line.extend_from_slice(&chunk);
    }
    let end = line.iter().position(|b| *b == b'\n').unwrap();
    let frame: Value = serde_json::from_slice(&line[..end]).unwrap();
    assert_eq!(frame["type"], "snapshot");
    assert_eq!(
        frame["snapshot"]["services"][0]["name"],
        "sampleirisservice"
    );
    let text = String::from_utf8_lossy(&line);
    assert!(!text.contains("clientsecret") && !text.contains("provisionkey"));

    // A sidecar whose token names another pod is never ready: it has nothing to serve.
    let mut wrong = PodSidecarBuilder::new(
        &controller.stream_url(),
        &controller.ca,
        "default",
        "iris-0",
        "token-iris-1",
        &work.path().join("wrong.snapshot.json"),
    )
    .spawn();
    eventually(
        PROPAGATION,
        "the controller's refusal is logged",
        || async { wrong.logs().contains("403") },
    )
    .await;
    let readyz = reqwest::get(format!("http://{}/readyz", wrong.metrics))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(!work.path().join("wrong.snapshot.json").exists());
    assert_eq!(wrong.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_the_injection_webhook_with_its_ca() {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_manifests(&manifests, &article_manifests(52773, ""));
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let [port] = crate::harness::free_ports::<1>();
    let listen = format!("127.0.0.1:{port}");
    let controller = Controller::start_with(
        work.path(),
        &manifests,
        &tokens,
        None,
        &[
            "--webhook-listen",
            &listen,
            "--sidecar-image",
            "tollgate:e2e",
        ],
    )
    .await;

    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crates/inject/tests/fixtures/pod-annotated.json"),
    )
    .unwrap();
    let response = controller
        .client
        .post(format!("https://localhost:{port}/mutate"))
        .header("content-type", "application/json")
        .body(review)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let review: Value = response.json().await.unwrap();
    assert_eq!(review["response"]["allowed"], true, "{review}");
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("tollgate:e2e"), "{patch}");
    // The injected pod trusts the CA that signs the controller's stream.
    let ca = std::fs::read_to_string(&controller.ca).unwrap();
    let ca_json = serde_json::to_string(&ca).unwrap();
    assert!(patch.contains(ca_json.trim_matches('"')), "{patch}");
}

/// The controller's admin API serves the whole grammar, bulk delete and import included,
/// behind its token check; a sidecar fed by it serves no admin API at all, unless asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_every_admin_request_and_injected_sidecars_none() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_manifests(&manifests, &article_manifests(upstream.port, ""));
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
    // As injected: the proxy and metrics listeners only.
    let injected = pod("iris-0").start().await;
    assert_eq!(
        injected.listening_ports(),
        sorted(&[injected.proxy.port(), injected.metrics.port()]),
        "{}",
        injected.logs()
    );
    // Asked for explicitly, it is there (so the check above can tell).
    let asked = pod("iris-1").admin_listen().start().await;
    assert_eq!(
        asked.listening_ports(),
        sorted(&[asked.proxy.port(), asked.metrics.port(), asked.admin.port()])
    );

    let admin = |method: reqwest::Method, path: &str| {
        controller
            .client
            .request(method, controller.admin_url(path))
            .bearer_auth("token-iris-0")
    };
    // Import through the controller: the token works on the sidecars.
    let imported = "an-exported-iam-token-0001";
    let response = admin(reqwest::Method::POST, "/default/oauth2_tokens")
        .json(
            &serde_json::json!({"access_token": imported, "client_id": "clientid",
                                  "service_name": "sampleirisservice",
                                  "authenticated_userid": "imported-user"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let response = injected.get_with_token("/event/1", imported).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.last().header("x-authenticated-userid"),
        Some("imported-user")
    );
    // Bulk delete through the controller: the token is refused from then on.
    let response = admin(
        reqwest::Method::DELETE,
        "/default/oauth2_tokens?authenticated_userid=imported-user",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["deleted"], 1, "{body}");
    eventually(PROPAGATION, "the bulk-deleted token is refused", || async {
        status_of(&injected, "/event/1", imported).await == 401
    })
    .await;
    // The static token of a pod in `default` has no right in another namespace.
    let response = admin(reqwest::Method::POST, "/other/oauth2_tokens")
        .json(&serde_json::json!({"access_token": "x", "client_id": "clientid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = controller
        .client
        .post(controller.admin_url("/default/oauth2_tokens"))
        .json(&serde_json::json!({"access_token": "y", "client_id": "clientid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

fn sorted(ports: &[u16]) -> Vec<u16> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports
}
