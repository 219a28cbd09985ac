//! Redis going away and coming back: requests that need it fail cleanly, nothing is let
//! through, and service resumes by itself.

use serde_json::Value;

use crate::harness::{Store, env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_survived_without_letting_anyone_in() {
    let mut env = env(Store::Redis, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", &token)
            .await
            .status(),
        200
    );

    let redis = env.redis.as_mut().unwrap();
    redis.kill();
    // The sidecar drops its validation cache when it loses Redis's revocation channel, which
    // it notices a moment after the kill; from then on nothing is let through.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let response = loop {
        let response = env.sidecar.get_with_token("/event/1", &token).await;
        if response.status() != 200 {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still served from the cache 20 s after Redis died"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let forwarded = env.upstream.count();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "The token store is unavailable");
    let again = env.sidecar.get_with_token("/event/1", &token).await;
    assert_eq!(again.status(), 503);
    assert_eq!(
        env.upstream.count(),
        forwarded,
        "nothing is let through while Redis is down"
    );
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .json(&serde_json::json!({"client_id": "clientid", "client_secret": "clientsecret",
            "grant_type": "password", "provision_key": "provisionkey", "authenticated_userid": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    // A restarted Redis started empty (no persistence): old tokens are gone, new ones work.
    env.redis.as_mut().unwrap().restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let fresh = loop {
        let response = env
            .sidecar
            .client
            .post(env.sidecar.url("/event/oauth2/token"))
            .json(&serde_json::json!({"client_id": "clientid", "client_secret": "clientsecret",
                "grant_type": "password", "provision_key": "provisionkey", "authenticated_userid": "1"}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.json::<Value>().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sidecar did not reconnect to Redis"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar.get_with_token("/event/1", fresh).await.status(),
        200
    );
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", &token)
            .await
            .status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issued_by_one_sidecar_are_accepted_by_another() {
    let env = env(Store::Redis, "").await;
    let redis = env.redis.as_ref().unwrap();
    let other = crate::harness::SidecarBuilder::new(crate::harness::article_manifests(
        env.upstream.port,
        "",
    ))
    .redis(&redis.url())
    .start()
    .await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Both validate it, so both may hold it in their validation caches.
    for _ in 0..3 {
        assert_eq!(other.get_with_token("/event/1", &token).await.status(), 200);
        assert_eq!(
            env.sidecar
                .get_with_token("/event/1", &token)
                .await
                .status(),
            200
        );
    }

    // Revoked through one sidecar's admin API, refused by both.
    let list: Value = other
        .client
        .get(other.admin_url("/default/oauth2_tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["data"][0]["id"].as_str().unwrap();
    let response = other
        .client
        .delete(other.admin_url(&format!("/default/oauth2_tokens/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // The sidecar that deleted it refuses it at once; the other hears of it through Redis.
    assert_eq!(other.get_with_token("/event/1", &token).await.status(), 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env
        .sidecar
        .get_with_token("/event/1", &token)
        .await
        .status()
        != 401
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation never reached the other sidecar"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_token_in_the_clear() {
    let env = env(Store::Redis, "").await;
    let first = env.sidecar.password_grant().await;
    let redis = env.redis.as_ref().unwrap();
    let mut everything = String::new();
    for key in redis.keys() {
        everything.push_str(&key);
        for command in [
            &["GET", key.as_str()][..],
            &["HGETALL", key.as_str()],
            &["ZRANGE", key.as_str(), "0", "-1"],
        ] {
            everything.push_str(&format!("{:?}", redis.command(command)));
        }
    }
    assert!(!everything.is_empty());
    for secret in ["access_token", "refresh_token"] {
        let value = first[secret].as_str().unwrap();
        assert!(
            !everything.contains(value),
            "Redis holds the {secret} in the clear"
        );
    }
    for secret in ["clientsecret", "provisionkey"] {
        assert!(!everything.contains(secret), "Redis holds {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_validations_follow_revocations_and_the_cache_can_be_turned_off() {
    let env = env(Store::Redis, "").await;
    let redis = env.redis.as_ref().unwrap();
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            env.sidecar
                .get_with_token("/event/1", &token)
                .await
                .status(),
            200
        );
    }
    // Revoked behind this sidecar's back, by another sidecar process running without a cache.
    let other = crate::harness::SidecarBuilder::new(crate::harness::article_manifests(
        env.upstream.port,
        "",
    ))
    .redis(&redis.url())
    .arg("--validation-cache-size")
    .arg("0")
    .start()
    .await;
    let response = other
        .client
        .delete(other.admin_url("/default/oauth2_tokens?client_id=clientid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env
        .sidecar
        .get_with_token("/event/1", &token)
        .await
        .status()
        != 401
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the cached validation outlived its revocation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(env.sidecar.logs().contains("validation_cache=true"));
    assert!(other.logs().contains("validation_cache=false"));
}
