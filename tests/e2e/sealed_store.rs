//! What Redis holds cannot be forged or moved: a record written with `redis-cli` without the
//! store key, or a genuine one copied under another token's key, is refused with Kong's 401,
//! and counted. Replicas given the same `--store-key-file` share tokens; others do not.

use std::process::Command;

use sha2::{Digest, Sha256};

use crate::harness::{
    Controller, PodSidecarBuilder, RedisServer, STORE_KEY, Scraper, SidecarBuilder, Store,
    Upstream, article_manifests, env, tollgate,
};

const INVALID: &str =
    r#"{"error":"invalid_token","error_description":"The access token is invalid or has expired"}"#;

/// `redis-cli -p <port> args…`, as whoever can reach Redis would run it; its output.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(redis.port().to_string())
        .args(args)
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

fn access_key(token: &str) -> String {
    format!("{{tg:default}}:at:{:x}", Sha256::digest(token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_forged_with_redis_cli_is_refused() {
    let env = env(Store::Redis, "").await;
    let redis = env.redis.as_ref().unwrap();
    // A genuine token first, so the forged record has the shape of a real one.
    let genuine = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys = redis_cli(redis, &["--scan", "--pattern", "*:at:*"]);
    assert_eq!(
        keys,
        access_key(&genuine),
        "the article's namespace is default"
    );
    let value = redis_cli(redis, &["GET", &keys]);
    let (_, json) = value.split_once('.').expect("a sealed value");
    let mut record: serde_json::Value = serde_json::from_str(json).unwrap();
    record["authenticated_userid"] = "root".into();
    record["expires_in"] = 0.into();
    record["id"] = "4f7c3a5e-0000-4000-8000-000000000001".into();

    let forged = "forged-token-of-my-choosing";
    let scrape = Scraper::new(&env.sidecar);
    assert_eq!(
        scrape
            .metric("tollgate_store_unverified_records_total")
            .await,
        0.0
    );
    // As records were stored before seals, and with a made-up seal.
    for value in [record.to_string(), format!("{}.{record}", "ab".repeat(32))] {
        redis_cli(redis, &["SET", &access_key(forged), &value]);
        let response = env.sidecar.get_with_token("/event/1", forged).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#
        );
        assert_eq!(response.text().await.unwrap(), INVALID);
    }
    assert_eq!(
        env.upstream.count(),
        0,
        "nothing forged reached the application"
    );
    assert_eq!(
        scrape
            .metric("tollgate_store_unverified_records_total")
            .await,
        2.0
    );
    // Logged once for the key, however often it is refused.
    let logs = env.sidecar.logs();
    assert_eq!(logs.matches("seal does not verify").count(), 1, "{logs}");
    assert!(logs.contains(&access_key(forged)), "{logs}");

    // The genuine token still works.
    let response = env.sidecar.get_with_token("/event/1", &genuine).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_record_copied_under_another_token_is_refused() {
    let env = env(Store::Redis, "").await;
    let redis = env.redis.as_ref().unwrap();
    let genuine = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let value = redis_cli(redis, &["GET", &access_key(&genuine)]);
    let mine = "a-token-i-know";
    redis_cli(redis, &["SET", &access_key(mine), &value]);
    let response = env.sidecar.get_with_token("/event/1", mine).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.unwrap(), INVALID);
    // Under the same token in another namespace's key it is no better: a namespace's key
    // seals only its own values (the store suite shows it; here the route's namespace is
    // fixed, so the copy is simply never read).
    assert_eq!(env.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_tokens_only_with_the_same_key_file() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let manifests = article_manifests(upstream.port, "");
    let first = SidecarBuilder::new(manifests.clone())
        .redis(&redis.url())
        .start()
        .await;
    let same = SidecarBuilder::new(manifests.clone())
        .redis(&redis.url())
        .start()
        .await;
    let stranger = SidecarBuilder::new(manifests)
        .redis(&redis.url())
        .store_key(Some(b"another key, thirty-two bytes long at least"))
        .start()
        .await;
    let token = first.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(same.get_with_token("/event/1", &token).await.status(), 200);
    let refused = stranger.get_with_token("/event/1", &token).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.text().await.unwrap(), INVALID);
    assert_eq!(
        Scraper::new(&stranger)
            .metric("tollgate_store_unverified_records_total")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_tokens_sealed_by_the_previous_key_file() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let manifests = article_manifests(upstream.port, "");
    let before = SidecarBuilder::new(manifests.clone())
        .redis(&redis.url())
        .start()
        .await;
    let token = before.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let previous = dir.path().join("previous.key");
    std::fs::write(&previous, STORE_KEY).unwrap();
    let after = SidecarBuilder::new(manifests)
        .redis(&redis.url())
        .store_key(Some(b"the new key, also thirty-two bytes or more\n"))
        .arg("--store-previous-key-file")
        .arg(previous.to_str().unwrap())
        .start()
        .await;
    assert_eq!(after.get_with_token("/event/1", &token).await.status(), 200);
    // What the rotated sidecar seals, the old key cannot verify.
    let fresh = after.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(after.get_with_token("/event/1", &fresh).await.status(), 200);
    assert_eq!(
        before.get_with_token("/event/1", &fresh).await.status(),
        401
    );
}

fn sidecar_exit(args: &[&str]) -> (Option<i32>, String) {
    let output = tollgate()
        .arg("sidecar")
        .args(args)
        .env_remove("TOLLGATE_REDIS_URL")
        .env_remove("TOLLGATE_MANIFESTS")
        .env_remove("TOLLGATE_STORE_KEY_FILE")
        .env_remove("TOLLGATE_STORE_PREVIOUS_KEY_FILE")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn redis_without_a_usable_store_key_file_is_exit_64_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("m.yaml");
    std::fs::write(&manifests, article_manifests(1, "")).unwrap();
    let manifests = manifests.to_str().unwrap();
    let redis = "redis://127.0.0.1:1";

    let (code, stderr) = sidecar_exit(&["--manifests", manifests, "--redis-url", redis]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("--store-key-file: required with --redis-url"),
        "{stderr}"
    );

    let short = dir.path().join("short.key");
    std::fs::write(&short, format!("{}\n", "x".repeat(31))).unwrap();
    let short = short.to_str().unwrap();
    let (code, stderr) = sidecar_exit(&[
        "--manifests",
        manifests,
        "--redis-url",
        redis,
        "--store-key-file",
        short,
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("--store-key-file {short}")),
        "{stderr}"
    );
    assert!(stderr.contains("holds 31 bytes"), "{stderr}");
    assert!(
        !stderr.contains(&"x".repeat(31)),
        "the key never shows: {stderr}"
    );

    let missing = dir.path().join("missing.key");
    let (code, stderr) = sidecar_exit(&[
        "--manifests",
        manifests,
        "--redis-url",
        redis,
        "--store-key-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--store-key-file"), "{stderr}");
}

/// The article in namespace `namespace`, with one pod there selected by its service.
fn article_in(namespace: &str, upstream_port: u16) -> String {
    let article = article_manifests(upstream_port, "").replace(
        "metadata:\n",
        &format!("metadata:\n  namespace: {namespace}\n"),
    );
    format!(
        "{article}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: iris-0\n  namespace: {namespace}\n  labels: {{app: iris}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_fed_pod_holds_and_verifies_only_its_own_namespace_key() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("shop.yaml"),
        article_in("shop", upstream.port),
    )
    .unwrap();
    std::fs::write(
        manifests.join("bank.yaml"),
        article_in("bank", upstream.port),
    )
    .unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, "token-shop shop/iris-0\ntoken-bank bank/iris-0\n").unwrap();
    let controller = Controller::start(work.path(), &manifests, &tokens, Some(&redis.url())).await;
    let pod = |namespace: &str| {
        PodSidecarBuilder::new(
            &controller.stream_url(),
            &controller.ca,
            namespace,
            "iris-0",
            &format!("token-{namespace}"),
            &work.path().join(format!("{namespace}.snapshot.json")),
        )
        .redis(&redis.url())
    };
    let shop = pod("shop").start().await;
    let bank = pod("bank").start().await;

    let token = shop.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(shop.get_with_token("/event/1", &token).await.status(), 200);
    // The bank pod never reads shop's keys; a copy of shop's record under bank's key does
    // not verify with bank's key.
    let hash = format!("{:x}", Sha256::digest(&token));
    let genuine = redis_cli(&redis, &["GET", &format!("{{tg:shop}}:at:{hash}")]);
    redis_cli(
        &redis,
        &["SET", &format!("{{tg:bank}}:at:{hash}"), &genuine],
    );
    let refused = bank.get_with_token("/event/1", &token).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.text().await.unwrap(), INVALID);
    assert_eq!(
        Scraper::new(&bank)
            .metric("tollgate_store_unverified_records_total")
            .await,
        1.0
    );

    // Each pod's snapshot holds one key, its own namespace's.
    let cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("bank.snapshot.json")).unwrap())
            .unwrap();
    assert_eq!(cached["storeKey"]["namespace"], "bank", "{cached}");
    let shop_cached: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.path().join("shop.snapshot.json")).unwrap())
            .unwrap();
    assert_ne!(
        cached["storeKey"]["current"],
        shop_cached["storeKey"]["current"]
    );
    // …and never shows it in its logs.
    for sidecar in [&shop, &bank] {
        let key = cached["storeKey"]["current"].as_str().unwrap();
        assert!(!sidecar.logs().contains(key));
    }

    // The controller's admin API, which derives every namespace's key, lists shop's token.
    let listed: serde_json::Value = controller
        .client
        .get(controller.admin_url("/shop/oauth2_tokens"))
        .bearer_auth("token-shop")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
}
