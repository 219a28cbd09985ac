//! `describe("Authentication challenge")`, `describe("Refresh Token")`,
//! `describe("Hide Credentials")`, and the client credentials and password grants of
//! `describe("OAuth2 Authorization")`, with the deliberate differences from Kong.

use serde_json::{Value, json};

use super::{Body, assert_tokens, error, pkce_tokens, post, provision_code, provision_token, send};
use crate::harness::{Env, Store};

crate::both_stores!(
    no_authentication_at_all,
    an_invalid_token_in_the_query_string,
    an_invalid_token_in_the_header,
    an_invalid_refresh_token,
    a_valid_refresh,
    a_public_client_refreshes_without_a_secret,
    a_public_client_refreshing_with_a_secret,
    a_confidential_client_refreshing_without_its_secret,
    a_refresh_token_of_another_application,
    a_refresh_rewrites_a_non_persistent_refresh_token,
    a_refresh_keeps_a_persistent_refresh_token,
    credentials_in_a_form_body_kept_or_hidden,
    credentials_in_the_query_string_kept_or_hidden,
    credentials_in_the_header_kept_or_hidden,
    a_multipart_upload_with_hidden_credentials,
    client_credentials_without_a_secret,
    client_credentials_with_empty_or_missing_credentials,
    token_endpoint_with_get,
    client_credentials_without_grant_type,
    client_credentials_over_plain_http,
    client_credentials_userid_needs_the_provision_key,
    client_credentials_success,
    client_credentials_in_the_authorization_header,
    client_credentials_with_a_wrong_authorization_header,
    client_credentials_from_a_public_client_are_refused,
    password_blocks_unauthorized_requests,
    password_grant_errors,
    password_grant_success,
    password_grant_for_an_application_without_redirect_uris,
);

const UNAUTHORIZED: &str = r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#;

async fn request(
    env: &Env,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> super::Reply {
    send(env, method, host, path, Body::None, headers).await
}

// 03-access_spec.lua:3508
async fn no_authentication_at_all(store: Store) {
    let env = super::start(store).await;
    let reply = request(&env, "oauth2.test", "POST", "/request", &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error("invalid_request", "The access token is missing")
    );
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

// 03-access_spec.lua:3521
async fn an_invalid_token_in_the_query_string(store: Store) {
    let env = super::start(store).await;
    let reply = request(
        &env,
        "oauth2.test",
        "GET",
        "/request?access_token=invalid",
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error(
            "invalid_token",
            "The access token is invalid or has expired"
        )
    );
    assert_eq!(reply.header("www-authenticate"), Some(UNAUTHORIZED));
}

// 03-access_spec.lua:3534
async fn an_invalid_token_in_the_header(store: Store) {
    let env = super::start(store).await;
    let reply = request(
        &env,
        "oauth2.test",
        "POST",
        "/request",
        &[("authorization", "bearer invalid")],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error(
            "invalid_token",
            "The access token is invalid or has expired"
        )
    );
    assert_eq!(reply.header("www-authenticate"), Some(UNAUTHORIZED));
}

fn refresh(token: &Value, client_id: &str, secret: Option<&str>) -> Value {
    let mut body = json!({"refresh_token": token["refresh_token"], "client_id": client_id,
                          "grant_type": "refresh_token"});
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
    }
    body
}

// 03-access_spec.lua:3576
async fn an_invalid_refresh_token(store: Store) {
    let env = super::start(store).await;
    let body = refresh(
        &json!({"refresh_token": "hello"}),
        "clientid123",
        Some("secret123"),
    );
    let reply = post(&env, "oauth2.test", "/oauth2/token", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_request", "Invalid refresh_token")
    );
}

// 03-access_spec.lua:3595 and :3709 (the refresh part: the old access token is refused)
async fn a_valid_refresh(store: Store) {
    let env = super::start(store).await;
    let token = provision_token(&env, "oauth2.test", None, None).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/token",
        refresh(&token, "clientid123", Some("secret123")),
    )
    .await;
    assert_tokens(&reply, true);
    assert_ne!(reply.body["access_token"], token["access_token"]);
    assert_ne!(reply.body["refresh_token"], token["refresh_token"]);
    let old = format!("bearer {}", token["access_token"].as_str().unwrap());
    let refused = request(
        &env,
        "oauth2.test",
        "POST",
        "/request",
        &[("authorization", &old)],
    )
    .await;
    assert_eq!(refused.status, 401);
    let new = format!("bearer {}", reply.body["access_token"].as_str().unwrap());
    let allowed = request(
        &env,
        "oauth2.test",
        "POST",
        "/request",
        &[("authorization", &new)],
    )
    .await;
    assert_eq!(allowed.status, 200);
}

async fn public_token(env: &Env) -> Value {
    let (challenge, verifier) = pkce_tokens();
    let code = provision_code(env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let body = json!({"code": code, "client_id": "clientid11211",
                      "grant_type": "authorization_code", "code_verifier": verifier});
    let reply = post(env, "oauth2.test", "/oauth2/token", body).await;
    assert_tokens(&reply, true);
    reply.body
}

// 03-access_spec.lua:3621
async fn a_public_client_refreshes_without_a_secret(store: Store) {
    let env = super::start(store).await;
    let token = public_token(&env).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/token",
        refresh(&token, "clientid11211", None),
    )
    .await;
    assert_tokens(&reply, true);
}

// 03-access_spec.lua:3646
async fn a_public_client_refreshing_with_a_secret(store: Store) {
    let env = super::start(store).await;
    let token = public_token(&env).await;
    let body = refresh(&token, "clientid11211", Some("secret11211"));
    let reply = post(&env, "oauth2.test", "/oauth2/token", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error(
            "invalid_request",
            "client_secret is disallowed for public clients"
        )
    );
}

// 03-access_spec.lua:3667
async fn a_confidential_client_refreshing_without_its_secret(store: Store) {
    let env = super::start(store).await;
    let token = provision_token(&env, "oauth2.test", None, None).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/token",
        refresh(&token, "clientid123", None),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
}

// 03-access_spec.lua:3686
async fn a_refresh_token_of_another_application(store: Store) {
    let env = super::start(store).await;
    let token = provision_token(&env, "oauth2.test", Some("clientid333"), Some("secret333")).await;
    let body = refresh(&token, "clientid123", Some("secret123"));
    let reply = post(&env, "oauth2.test", "/oauth2/token", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
}

// 03-access_spec.lua:3775
async fn a_refresh_rewrites_a_non_persistent_refresh_token(store: Store) {
    let env = super::start(store).await;
    let token = provision_token(&env, "oauth2.test", None, None).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/token",
        refresh(&token, "clientid123", Some("secret123")),
    )
    .await;
    assert_tokens(&reply, true);
    assert_ne!(reply.body["refresh_token"], token["refresh_token"]);
}

// 03-access_spec.lua:3781 (without editing the record's creation time)
async fn a_refresh_keeps_a_persistent_refresh_token(store: Store) {
    let env = super::start(store).await;
    let token = provision_token(&env, "oauth2_13.test", None, None).await;
    let body = refresh(&token, "clientid123", Some("secret123"));
    let first = post(&env, "oauth2_13.test", "/oauth2/token", body.clone()).await;
    assert_tokens(&first, true);
    assert_eq!(first.body["refresh_token"], token["refresh_token"]);
    let second = post(&env, "oauth2_13.test", "/oauth2/token", body).await;
    assert_tokens(&second, true);
    let bearer = format!("bearer {}", second.body["access_token"].as_str().unwrap());
    let reply = request(
        &env,
        "oauth2_13.test",
        "GET",
        "/request",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        env.upstream.last().header("authorization"),
        Some(bearer.as_str())
    );
}

fn access(token: &Value) -> &str {
    token["access_token"].as_str().unwrap()
}

// 03-access_spec.lua:3832 and :3849
async fn credentials_in_a_form_body_kept_or_hidden(store: Store) {
    let env = super::start(store).await;
    for (host, kept) in [("oauth2.test", true), ("oauth2_3.test", false)] {
        let token = provision_token(&env, host, None, None).await;
        let body = Body::Form(json!({ "access_token": access(&token), "a": "1" }));
        let reply = send(&env, "POST", host, "/request", body, &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let seen = env.upstream.last();
        // The client writes the fields in the JSON object's order: `a` first.
        let expected = if kept {
            format!("a=1&access_token={}", access(&token))
        } else {
            "a=1".to_owned()
        };
        assert_eq!(seen.body, expected.as_bytes(), "{host}");
    }
}

// 03-access_spec.lua:3866, :3879 and :3892
async fn credentials_in_the_query_string_kept_or_hidden(store: Store) {
    let env = super::start(store).await;
    for (host, kept) in [
        ("oauth2.test", true),
        ("oauth2_3.test", false),
        ("oauth2_12.test", false),
    ] {
        let token = if host == "oauth2_12.test" {
            provision_token(&env, host, Some("clientid1011"), Some("secret1011")).await
        } else {
            provision_token(&env, host, None, None).await
        };
        let path = format!("/request?access_token={}", access(&token));
        let reply = request(&env, host, "GET", &path, &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let seen = env.upstream.last().path_and_query;
        if kept {
            assert_eq!(seen, path);
        } else {
            assert_eq!(seen, "/request", "{host}");
        }
    }
}

// 03-access_spec.lua:3905, :3919 and :3933
async fn credentials_in_the_header_kept_or_hidden(store: Store) {
    let env = super::start(store).await;
    for (host, header, kept) in [
        ("oauth2.test", "authorization", true),
        ("oauth2_3.test", "authorization", false),
        ("oauth2_12.test", "custom_header_name", false),
    ] {
        let token = if host == "oauth2_12.test" {
            provision_token(&env, host, Some("clientid1011"), Some("secret1011")).await
        } else {
            provision_token(&env, host, None, None).await
        };
        let bearer = format!("bearer {}", access(&token));
        let reply = request(&env, host, "GET", "/request", &[(header, &bearer)]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let seen = env.upstream.last();
        let expected = kept.then_some(bearer.as_str());
        assert_eq!(seen.header(header), expected, "{host}");
        assert_eq!(seen.header("authorization"), expected, "{host}");
    }
}

// 03-access_spec.lua:3948
async fn a_multipart_upload_with_hidden_credentials(store: Store) {
    let env = super::start(store).await;
    let token = provision_token(&env, "oauth2_3.test", None, None).await;
    let path = format!("/request?access_token={}", access(&token));
    let reply = send(
        &env,
        "POST",
        "oauth2_3.test",
        &path,
        Body::Multipart(json!({"foo": "bar"})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = env.upstream.last();
    assert_eq!(seen.path_and_query, "/request");
    assert_eq!(
        seen.body,
        "--XyZ\r\nContent-Disposition: form-data; name=\"foo\"\r\n\r\nbar\r\n--XyZ--\r\n"
            .as_bytes()
    );
}

async fn token(env: &Env, host: &str, body: Value) -> super::Reply {
    post(env, host, "/oauth2/token", body).await
}

// 03-access_spec.lua:1371
async fn client_credentials_without_a_secret(store: Store) {
    let env = super::start(store).await;
    let body = json!({"client_id": "clientid123", "scope": "email", "response_type": "token"});
    let reply = token(&env, "oauth2_4.test", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
}

// 03-access_spec.lua:1389 and :1409
async fn client_credentials_with_empty_or_missing_credentials(store: Store) {
    let env = super::start(store).await;
    for body in [
        json!({"client_id": "", "client_secret": "", "scope": "email", "response_type": "token",
               "grant_type": "client_credentials"}),
        json!({"scope": "email", "response_type": "token", "grant_type": "client_credentials"}),
    ] {
        let reply = token(&env, "oauth2_4.test", body).await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.body,
            error("invalid_client", "Invalid client authentication")
        );
    }
}

// 03-access_spec.lua:1427 and :1443
async fn token_endpoint_with_get(store: Store) {
    let env = super::start(store).await;
    for (host, challenge) in [
        (
            "oauth2_4.test",
            r#"Bearer error="invalid_method", error_description="The HTTP method GET is invalid for the token endpoint""#,
        ),
        (
            "oauth2_5.test",
            r#"Bearer realm="test-oauth2", error="invalid_method", error_description="The HTTP method GET is invalid for the token endpoint""#,
        ),
    ] {
        let path = "/oauth2/token?client_id&grant_type=client_credentials&client_secret";
        let reply = send(&env, "GET", host, path, Body::Json(json!({})), &[]).await;
        assert_eq!(reply.status, 405);
        assert_eq!(
            reply.body,
            error(
                "invalid_method",
                "The HTTP method GET is invalid for the token endpoint"
            )
        );
        assert_eq!(reply.header("www-authenticate"), Some(challenge));
    }
}

// 03-access_spec.lua:1459
async fn client_credentials_without_grant_type(store: Store) {
    let env = super::start(store).await;
    let body = json!({"client_id": "clientid123", "client_secret": "secret123", "scope": "email",
                      "response_type": "token"});
    let reply = token(&env, "oauth2_4.test", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("unsupported_grant_type", "Invalid grant_type")
    );
}

fn client_credentials(extra: Value) -> Value {
    let mut body = json!({"client_id": "clientid123", "client_secret": "secret123",
                          "scope": "email", "grant_type": "client_credentials"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

// 03-access_spec.lua:1499, :1519 and :1629
async fn client_credentials_userid_needs_the_provision_key(store: Store) {
    let env = super::start(store).await;
    for extra in [
        json!({"authenticated_userid": "user123"}),
        json!({"authenticated_userid": "user123", "provision_key": "hello"}),
    ] {
        let reply = token(&env, "oauth2_4.test", client_credentials(extra)).await;
        assert_eq!(reply.status, 400);
        assert_eq!(
            reply.body,
            error("invalid_provision_key", "Invalid provision_key")
        );
    }
    let extra = json!({"authenticated_userid": "hello", "provision_key": "provision123"});
    let reply = token(&env, "oauth2_4.test", client_credentials(extra)).await;
    assert_tokens(&reply, false);
}

// 03-access_spec.lua:1540, :1562, :1584 and :1607 (client_credentials needs no redirect URI),
// and :1715 (the upstream's headers)
async fn client_credentials_success(store: Store) {
    let env = super::start(store).await;
    for extra in [
        json!({}),
        json!({"client_id": "clientid456", "client_secret": "secret456"}),
        json!({"client_id": "clientid456", "client_secret": "secret456",
               "redirect_uri": "http://two.test/two"}),
        json!({"client_id": "clientid10112", "client_secret": "secret10112"}),
    ] {
        let reply = token(&env, "oauth2_4.test", client_credentials(extra)).await;
        assert_tokens(&reply, false);
    }
    let reply = token(&env, "oauth2_4.test", client_credentials(json!({}))).await;
    let bearer = format!("bearer {}", access(&reply.body));
    let reply = request(
        &env,
        "oauth2_4.test",
        "POST",
        "/request",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-consumer-username"), Some("bob"));
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid123"));
    assert_eq!(seen.header("x-authenticated-scope"), Some("email"));
    assert_eq!(seen.header("x-authenticated-userid"), None);
}

// 03-access_spec.lua:1653 and :1674
async fn client_credentials_in_the_authorization_header(store: Store) {
    let env = super::start(store).await;
    for body in [
        json!({"scope": "email", "grant_type": "client_credentials"}),
        json!({"client_id": "clientid123", "scope": "email", "grant_type": "client_credentials"}),
    ] {
        let reply = send(
            &env,
            "POST",
            "oauth2_4.test",
            "/oauth2/token",
            Body::Json(body),
            &[("authorization", "Basic Y2xpZW50aWQxMjM6c2VjcmV0MTIz")],
        )
        .await;
        assert_tokens(&reply, false);
    }
}

// 03-access_spec.lua:1696
async fn client_credentials_with_a_wrong_authorization_header(store: Store) {
    let env = super::start(store).await;
    let reply = send(
        &env,
        "POST",
        "oauth2_4.test",
        "/oauth2/token",
        Body::Json(json!({"scope": "email", "grant_type": "client_credentials"})),
        &[("authorization", "Basic Y2xpZW50aWQxMjM6c2VjcmV0MTI0")],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"OAuth2.0\"")
    );
}

// (stricter than Kong, docs/KONG-COMPATIBILITY.md) RFC 6749 §4.4: no client_credentials for a public client.
async fn client_credentials_from_a_public_client_are_refused(store: Store) {
    let env = super::start(store).await;
    let body = json!({"client_id": "clientid11211", "scope": "email",
                      "grant_type": "client_credentials"});
    let reply = token(&env, "oauth2_4.test", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error(
            "unauthorized_client",
            "The client_credentials grant is only for confidential clients"
        )
    );
}

// 03-access_spec.lua:1783 and :1796
async fn password_blocks_unauthorized_requests(store: Store) {
    let env = super::start(store).await;
    for (host, challenge) in [
        ("oauth2_4.test", "Bearer"),
        ("oauth2_5.test", "Bearer realm=\"test-oauth2\""),
    ] {
        let reply = request(&env, host, "POST", "/request", &[]).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.body,
            error("invalid_request", "The access token is missing")
        );
        assert_eq!(reply.header("www-authenticate"), Some(challenge));
    }
}

fn password(extra: Value) -> Value {
    let mut body = json!({"provision_key": "provision123", "authenticated_userid": "id123",
                          "client_id": "clientid123", "client_secret": "secret123",
                          "scope": "email", "grant_type": "password"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

// 03-access_spec.lua:1809, :1827, :1846, :1866, :1885 and :1956
async fn password_grant_errors(store: Store) {
    let env = super::start(store).await;
    let cases = [
        (
            json!({"client_secret": null}),
            error("invalid_client", "Invalid client authentication"),
        ),
        (
            json!({"grant_type": null}),
            error("unsupported_grant_type", "Invalid grant_type"),
        ),
        (
            json!({"provision_key": null}),
            error("invalid_provision_key", "Invalid provision_key"),
        ),
        (
            json!({"provision_key": "bad"}),
            error("invalid_provision_key", "Invalid provision_key"),
        ),
        (
            json!({"authenticated_userid": null}),
            error(
                "invalid_authenticated_userid",
                "Missing authenticated_userid parameter",
            ),
        ),
    ];
    for (extra, expected) in cases {
        let reply = token(&env, "oauth2_5.test", password(extra.clone())).await;
        assert_eq!((reply.status, &reply.body), (400, &expected), "{extra}");
    }
    let reply = send(
        &env,
        "POST",
        "oauth2_5.test",
        "/oauth2/token",
        Body::Json(password(json!({"client_id": null, "client_secret": null}))),
        &[("authorization", "Basic Y2xpZW50aWQxMjM6c2VjcmV0MTI0")],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"OAuth2.0\"")
    );
}

// 03-access_spec.lua:1905, :1931 and :1977
async fn password_grant_success(store: Store) {
    let env = super::start(store).await;
    let reply = token(&env, "oauth2_5.test", password(json!({}))).await;
    assert_tokens(&reply, true);
    let reply = send(
        &env,
        "POST",
        "oauth2_5.test",
        "/oauth2/token",
        Body::Json(password(json!({"client_id": null, "client_secret": null}))),
        &[("authorization", "Basic Y2xpZW50aWQxMjM6c2VjcmV0MTIz")],
    )
    .await;
    assert_tokens(&reply, true);
    let bearer = format!("bearer {}", access(&reply.body));
    let reply = request(
        &env,
        "oauth2_5.test",
        "POST",
        "/request",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-consumer-username"), Some("bob"));
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid123"));
    assert_eq!(seen.header("x-authenticated-scope"), Some("email"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("id123"));
}

// access.lua 566-593: every grant but client_credentials needs the application's redirect
// URIs; without any, Kong answers invalid_client (issue 15, item 14).
async fn password_grant_for_an_application_without_redirect_uris(store: Store) {
    let env = super::start(store).await;
    let body = password(json!({"client_id": "clientid10112", "client_secret": "secret10112"}));
    let reply = token(&env, "oauth2_5.test", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
}

// 03-access_spec.lua:1478
async fn client_credentials_over_plain_http(store: Store) {
    let env = super::start(store).await;
    let http = env.sidecar.http.unwrap();
    let response = reqwest::Client::new()
        .post(format!(
            "http://{http}{}",
            super::at("oauth2_4.test", "/oauth2/token")
        ))
        .json(&client_credentials(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        error("access_denied", "You must use HTTPS")
    );
}
