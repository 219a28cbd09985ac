//! The article's whole flow, step by step, byte for byte where the article shows bytes.

use serde_json::Value;

use crate::harness::{EVENT_1, Store, env};

crate::both_stores!(the_articles_flow_end_to_end);

async fn the_articles_flow_end_to_end(store: Store) {
    let env = env(store, "").await;
    let sidecar = &env.sidecar;

    // 1. POST …/event/oauth2/token with the article's JSON body.
    let response = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .header("content-type", "application/json")
        .body(
            r#"{
  "client_id": "clientid",
  "client_secret": "clientsecret",
  "grant_type": "password",
  "provision_key": "provisionkey",
  "authenticated_userid": "1"
}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let text = response.text().await.unwrap();
    let keys: Vec<&str> = text
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
        .collect();
    assert_eq!(
        keys,
        ["refresh_token", "token_type", "access_token", "expires_in"],
        "{text}"
    );
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first["token_type"], "bearer");
    assert_eq!(first["expires_in"], 7200);
    let access = first["access_token"].as_str().unwrap().to_owned();
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.len() >= 32 && refresh.len() >= 32 && access != refresh);

    // 2. GET …/event/1 with the access token as a Bearer token.
    let response = sidecar.get_with_token("/event/1", &access).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "iris");
    assert_eq!(response.text().await.unwrap(), EVENT_1);
    let seen = env.upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path_and_query, "/event/1");
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-consumer-custom-id"), Some("client-app-7"));
    assert!(uuid::Uuid::parse_str(seen.header("x-consumer-id").unwrap()).is_ok());
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));
    assert_eq!(
        seen.header("x-authenticated-scope"),
        None,
        "no scope was granted"
    );
    assert_eq!(seen.header("x-anonymous-consumer"), None);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {access}").as_str())
    );

    // 3. The refresh grant with the article's second body.
    let response = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .json(&serde_json::json!({
            "client_id": "clientid",
            "client_secret": "clientsecret",
            "grant_type": "refresh_token",
            "refresh_token": refresh,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.unwrap();
    let new_access = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(new_access, access);
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(second["expires_in"], 7200);

    // The old access token is refused from then on; the new one works.
    let response = sidecar.get_with_token("/event/1", &access).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        sidecar
            .get_with_token("/event/1", &new_access)
            .await
            .status(),
        200
    );
    // 4. The admin API lists the token with the article's fields, never the token values.
    let before = admin_ids(sidecar).await;
    assert_eq!(before.len(), 1, "the refresh replaced the first record");
    let third = sidecar.password_grant().await;
    let response = sidecar
        .client
        .get(sidecar.admin_url("/default/oauth2_tokens"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for secret in [
        &new_access,
        third["access_token"].as_str().unwrap(),
        third["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "the admin API showed a token value");
    }
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["next"], Value::Null);
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{list}");
    for entry in data {
        let mut fields: Vec<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "authenticated_userid",
                "created_at",
                "credential_id",
                "expires_in",
                "id",
                "scope",
                "service_id",
                "token_type"
            ]
        );
        assert_eq!(entry["authenticated_userid"], "1");
        assert_eq!(entry["token_type"], "bearer");
        assert_eq!(entry["expires_in"], 7200);
        assert_eq!(entry["scope"], "");
        assert!(
            entry["created_at"].as_u64().unwrap() > 1_500_000_000_000,
            "epoch milliseconds"
        );
    }

    // 5. DELETE by id → 204, and from then on Kong's 401 body and header.
    let id = data
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .find(|id| !before.iter().any(|b| b == id))
        .unwrap();
    let third_access = third["access_token"].as_str().unwrap();
    assert_eq!(
        sidecar
            .get_with_token("/event/1", third_access)
            .await
            .status(),
        200
    );
    let response = sidecar
        .client
        .delete(sidecar.admin_url(&format!("/default/oauth2_tokens/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = sidecar.get_with_token("/event/1", third_access).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#
    );
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":"invalid_token","error_description":"The access token is invalid or has expired"}"#
    );
    // The other token is untouched.
    assert_eq!(
        sidecar
            .get_with_token("/event/1", &new_access)
            .await
            .status(),
        200
    );
}

async fn admin_ids(sidecar: &crate::harness::Sidecar) -> Vec<String> {
    let list: Value = sidecar
        .client
        .get(sidecar.admin_url("/default/oauth2_tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}
