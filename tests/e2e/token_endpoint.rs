//! `…/oauth2/token` for the password and refresh_token grants: Kong's bodies, status codes and
//! headers, client authentication, and body encodings.

use serde_json::{Value, json};

use crate::harness::{Sidecar, Store, env};

crate::both_stores!(
    form_bodies_work_like_json,
    multipart_bodies_work_like_json,
    query_parameters_are_merged_and_the_body_wins,
    basic_client_authentication_in_the_auth_header,
    wrong_secret_in_the_header_is_401_with_a_basic_challenge,
    wrong_secret_in_the_body_is_400,
    unknown_client_is_invalid_client,
    wrong_provision_key_is_refused,
    missing_authenticated_userid_is_refused,
    disabled_grant_is_unsupported,
    state_is_echoed_in_success_and_errors,
    only_post_is_allowed,
    trailing_slash_reaches_the_endpoint,
    bad_json_is_a_clear_invalid_request,
    refresh_with_another_clients_token_is_invalid_client,
    concurrent_refreshes_of_one_token_have_one_winner,
);

async fn post_json(sidecar: &Sidecar, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = sidecar
        .client
        .post(sidecar.url("/event/oauth2/token"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap(), headers)
}

fn error(code: &str, description: &str) -> Value {
    json!({"error": code, "error_description": description})
}

fn article_body() -> Value {
    json!({
        "client_id": "clientid",
        "client_secret": "clientsecret",
        "grant_type": "password",
        "provision_key": "provisionkey",
        "authenticated_userid": "1"
    })
}

async fn form_bodies_work_like_json(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .form(&[
            ("client_id", "clientid"),
            ("client_secret", "clientsecret"),
            ("grant_type", "password"),
            ("provision_key", "provisionkey"),
            ("authenticated_userid", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar.get_with_token("/event/1", token).await.status(),
        200
    );
}

async fn multipart_bodies_work_like_json(store: Store) {
    let env = env(store, "").await;
    let boundary = "tollgate-boundary";
    let mut body = String::new();
    for (k, v) in [
        ("client_id", "clientid"),
        ("client_secret", "clientsecret"),
        ("grant_type", "password"),
        ("provision_key", "provisionkey"),
        ("authenticated_userid", "1"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn query_parameters_are_merged_and_the_body_wins(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url(
            "/event/oauth2/token?grant_type=client_credentials&provision_key=provisionkey&authenticated_userid=1",
        ))
        .json(&json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "password from the body, the rest from the query"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["refresh_token"].is_string(),
        "a password grant, not client_credentials"
    );
}

async fn basic_client_authentication_in_the_auth_header(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .basic_auth("clientid", Some("clientsecret"))
        .json(&json!({"grant_type": "password", "provision_key": "provisionkey", "authenticated_userid": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn wrong_secret_in_the_header_is_401_with_a_basic_challenge(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .basic_auth("clientid", Some("wrong"))
        .json(&json!({"grant_type": "password", "provision_key": "provisionkey", "authenticated_userid": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Basic realm="OAuth2.0""#
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        error("invalid_client", "Invalid client authentication")
    );
}

async fn wrong_secret_in_the_body_is_400(store: Store) {
    let env = env(store, "").await;
    let mut body = article_body();
    body["client_secret"] = json!("wrong");
    let (status, body, headers) = post_json(&env.sidecar, body).await;
    assert_eq!(status, 400);
    assert!(headers.get("www-authenticate").is_none());
    assert_eq!(
        body,
        error("invalid_client", "Invalid client authentication")
    );
}

async fn unknown_client_is_invalid_client(store: Store) {
    let env = env(store, "").await;
    let mut body = article_body();
    body["client_id"] = json!("nobody");
    let (status, body, _) = post_json(&env.sidecar, body).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        error("invalid_client", "Invalid client authentication")
    );
}

async fn wrong_provision_key_is_refused(store: Store) {
    let env = env(store, "").await;
    let mut body = article_body();
    body["provision_key"] = json!("guess");
    let (status, body, _) = post_json(&env.sidecar, body).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        error("invalid_provision_key", "Invalid provision_key")
    );
}

async fn missing_authenticated_userid_is_refused(store: Store) {
    let env = env(store, "").await;
    for userid in [None, Some("  ")] {
        let mut body = article_body();
        match userid {
            Some(v) => body["authenticated_userid"] = json!(v),
            None => {
                body.as_object_mut().unwrap().remove("authenticated_userid");
            }
        }
        let (status, body, _) = post_json(&env.sidecar, body).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            error(
                "invalid_authenticated_userid",
                "Missing authenticated_userid parameter"
            )
        );
    }
}

async fn disabled_grant_is_unsupported(store: Store) {
    // Only the password grant is enabled in the article's service.
    let env = env(store, "").await;
    let mut body = article_body();
    body["grant_type"] = json!("client_credentials");
    let (status, body, _) = post_json(&env.sidecar, body).await;
    assert_eq!(status, 400);
    assert_eq!(body, error("unsupported_grant_type", "Invalid grant_type"));

    // Kong's precedence: a bad client replaces a bad grant type.
    let (status, body, _) = post_json(
        &env.sidecar,
        json!({"grant_type": "nonsense", "client_id": "nobody", "client_secret": "x"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        error("invalid_client", "Invalid client authentication")
    );
}

async fn state_is_echoed_in_success_and_errors(store: Store) {
    let env = env(store, "").await;
    let mut body = article_body();
    body["state"] = json!("xyz");
    let (status, ok, _) = post_json(&env.sidecar, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(ok["state"], "xyz");
    body["provision_key"] = json!("bad");
    let (_, err, _) = post_json(&env.sidecar, body).await;
    assert_eq!(
        err,
        json!({"error": "invalid_provision_key", "error_description": "Invalid provision_key", "state": "xyz"})
    );
}

async fn only_post_is_allowed(store: Store) {
    let env = env(store, "").await;
    for (path, endpoint) in [
        ("/event/oauth2/token", "token endpoint"),
        ("/event/oauth2/authorize", "authorization endpoint"),
    ] {
        let response = env
            .sidecar
            .client
            .get(env.sidecar.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
        let description = format!("The HTTP method GET is invalid for the {endpoint}");
        assert_eq!(
            response.headers()["www-authenticate"].to_str().unwrap(),
            format!(r#"Bearer error="invalid_method", error_description="{description}""#)
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, error("invalid_method", &description));
    }
    assert_eq!(
        env.upstream.count(),
        0,
        "OAuth endpoints are never forwarded"
    );
}

async fn trailing_slash_reaches_the_endpoint(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token/"))
        .json(&article_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.count(), 0);
}

async fn bad_json_is_a_clear_invalid_request(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .header("content-type", "application/json")
        .body("{\"client_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        error("invalid_request", "the request body is not valid JSON")
    );
}

async fn refresh_with_another_clients_token_is_invalid_client(store: Store) {
    let upstream = crate::harness::Upstream::start().await;
    let manifests = crate::harness::article_manifests(upstream.port, "")
        + r#"---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata:
  name: otherapp
spec:
  consumerRef:
    name: clientapp
  clientId: otherid
  clientSecretRef:
    name: sampleapp-secret
  redirectUris:
  - https://localhost/other
"#;
    let redis = crate::harness::RedisServer::start();
    let mut builder = crate::harness::SidecarBuilder::new(manifests);
    if store == Store::Redis {
        builder = builder.redis(&redis.url());
    }
    let sidecar = builder.start().await;
    let first = sidecar.password_grant().await;
    let (status, body, _) = post_json(
        &sidecar,
        json!({"client_id": "otherid", "client_secret": "clientsecret",
               "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        error("invalid_client", "Invalid client authentication")
    );
}

async fn concurrent_refreshes_of_one_token_have_one_winner(store: Store) {
    let env = env(store, "").await;
    let first = env.sidecar.password_grant().await;
    let body = json!({"client_id": "clientid", "client_secret": "clientsecret",
                      "grant_type": "refresh_token", "refresh_token": first["refresh_token"]});
    let attempts = (0..8).map(|_| post_json(&env.sidecar, body.clone()));
    let results = futures_util::future::join_all(attempts).await;
    let winners = results
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .count();
    assert_eq!(winners, 1, "{results:?}");
    for (status, body, _) in results.iter().filter(|(s, _, _)| *s != 200) {
        assert_eq!(*status, 400);
        assert_eq!(*body, error("invalid_request", "Invalid refresh_token"));
    }
}
