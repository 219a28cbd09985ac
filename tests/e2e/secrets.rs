//! Secrets never reach the logs: tokens, client secrets, provision keys — even at debug level.

use crate::harness::{Store, env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_no_token_secret_or_provision_key() {
    let mut env = env(Store::Redis, "").await;
    let sidecar = &env.sidecar;
    let first = sidecar.password_grant().await;
    let access = first["access_token"].as_str().unwrap().to_owned();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    sidecar.get_with_token("/event/1", &access).await;
    sidecar
        .get_with_token("/event/1", "an-invalid-token-value")
        .await;
    let refreshed: serde_json::Value = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .json(
            &serde_json::json!({"client_id": "clientid", "client_secret": "clientsecret",
            "grant_type": "refresh_token", "refresh_token": refresh}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Failing requests carry secrets too.
    sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .basic_auth("clientid", Some("wrong-secret-value"))
        .json(&serde_json::json!({"grant_type": "password", "provision_key": "wrong-provision-value"}))
        .send()
        .await
        .unwrap();
    env.redis.as_mut().unwrap().kill();
    sidecar.get_with_token("/event/1", &access).await;
    let code = env.sidecar.terminate();
    assert_eq!(code, Some(0), "SIGTERM is a clean stop");

    let logs = env.sidecar.logs();
    assert!(
        logs.contains("DEBUG") || logs.contains("INFO"),
        "logs were captured: {logs}"
    );
    for secret in [
        access.as_str(),
        refresh.as_str(),
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
        "an-invalid-token-value",
        "clientsecret",
        "wrong-secret-value",
        "provisionkey",
        "wrong-provision-value",
    ] {
        assert!(
            !logs.contains(secret),
            "the logs hold a secret ({secret}):\n{logs}"
        );
    }
}
