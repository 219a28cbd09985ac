//! `describe("Making a request")` and its `describe("Global Credentials")`: the bearer check
//! on proxied requests, and the refresh grant across global services.

use serde_json::{Value, json};

use super::{Body, Reply, error, post, provision_token, send};
use crate::harness::{Env, Store};

crate::both_stores!(
    no_token_in_a_json_body,
    token_in_the_query_string,
    token_in_the_custom_header,
    token_in_duplicate_custom_headers,
    an_empty_custom_header,
    a_refresh_where_the_service_lacks_the_scope_is_a_mismatch,
    a_refresh_where_the_service_has_the_scope,
    token_in_the_wrong_header,
    token_of_another_service,
    token_in_a_json_body,
    token_in_a_multipart_body,
    token_in_a_form_body,
    no_body_at_all,
    token_in_the_authorization_header,
    a_scope_that_is_not_a_string,
    right_credentials_and_anonymous,
    no_credentials_and_anonymous,
    a_missing_anonymous_consumer,
    the_right_service_after_the_wrong_one,
    global_tokens_do_not_reach_local_services,
    local_tokens_do_not_reach_global_services,
    global_tokens_reach_global_services,
    a_global_token_on_a_local_service_in_a_json_body,
);

const UNAUTHORIZED: &str = r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#;

fn access(token: &Value) -> String {
    token["access_token"].as_str().unwrap().to_owned()
}

async fn bearer(env: &Env, host: &str, header: &str, token: &str) -> Reply {
    send(
        env,
        "POST",
        host,
        "/request",
        Body::None,
        &[(header, &format!("bearer {token}"))],
    )
    .await
}

// 03-access_spec.lua:2940
async fn no_token_in_a_json_body(store: Store) {
    let env = super::start(store).await;
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/request",
        Body::None,
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error("invalid_request", "The access token is missing")
    );
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    assert_eq!(env.upstream.count(), 0);
}

// 03-access_spec.lua:2954
async fn token_in_the_query_string(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    let path = format!("/request?access_token={token}");
    let reply = send(&env, "GET", "oauth2.test", &path, Body::None, &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

async fn custom_header_token(env: &Env) -> String {
    access(
        &provision_token(
            env,
            "oauth2_11.test",
            Some("clientid1011"),
            Some("secret1011"),
        )
        .await,
    )
}

// 03-access_spec.lua:2966
async fn token_in_the_custom_header(store: Store) {
    let env = super::start(store).await;
    let token = custom_header_token(&env).await;
    let reply = send(
        &env,
        "GET",
        "oauth2_11.test",
        "/request",
        Body::None,
        &[("custom_header_name", &format!("bearer {token}"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

// 03-access_spec.lua:2979
async fn token_in_duplicate_custom_headers(store: Store) {
    let env = super::start(store).await;
    let token = custom_header_token(&env).await;
    let value = format!("bearer {token}");
    let reply = send(
        &env,
        "GET",
        "oauth2_11.test",
        "/request",
        Body::None,
        &[
            ("custom_header_name", &value),
            ("custom_header_name", &value),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

// 03-access_spec.lua:2992
async fn an_empty_custom_header(store: Store) {
    let env = super::start(store).await;
    let reply = send(
        &env,
        "GET",
        "oauth2_11.test",
        "/request",
        Body::None,
        &[("custom_header_name", "")],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

/// A token of scope `scope` from a code issued at `host`, the spec's way.
async fn scoped_token(env: &Env, host: &str, scope: &str) -> Value {
    let body = json!({"provision_key": "provision123", "client_id": "clientid123",
                      "response_type": "code", "scope": scope, "state": "hello",
                      "authenticated_userid": "userid123"});
    let reply = post(env, host, "/oauth2/authorize", body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let (code, _) = super::code_and_state(
        reply.body["redirect_uri"].as_str().unwrap(),
        "http://google.test/kong?",
    );
    let body = json!({"code": code, "client_id": "clientid123", "client_secret": "secret123",
                      "grant_type": "authorization_code", "redirect_uri": "http://google.test/kong"});
    let reply = post(env, host, "/oauth2/token", body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

fn refresh(token: &Value) -> Value {
    json!({"refresh_token": token["refresh_token"], "client_id": "clientid123",
           "client_secret": "secret123", "grant_type": "refresh_token"})
}

// 03-access_spec.lua:3005 (issue 15, item 9)
async fn a_refresh_where_the_service_lacks_the_scope_is_a_mismatch(store: Store) {
    let env = super::start(store).await;
    let token = scoped_token(&env, "oauth2_18.test", "scope18").await;
    let reply = post(&env, "oauth2_19.test", "/oauth2/token", refresh(&token)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body, error("invalid_scope", "Scope mismatch"));
    // The refresh token was not used up: its own service refreshes it.
    let reply = post(&env, "oauth2_18.test", "/oauth2/token", refresh(&token)).await;
    super::assert_tokens(&reply, true);
}

// 03-access_spec.lua:3077
async fn a_refresh_where_the_service_has_the_scope(store: Store) {
    let env = super::start(store).await;
    let token = scoped_token(&env, "oauth2_20.test", "scope20").await;
    let reply = post(&env, "oauth2_21.test", "/oauth2/token", refresh(&token)).await;
    super::assert_tokens(&reply, true);
}

// 03-access_spec.lua:3145
async fn token_in_the_wrong_header(store: Store) {
    let env = super::start(store).await;
    let token = custom_header_token(&env).await;
    let reply = bearer(&env, "oauth2_11.test", "authorization", &token).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

// 03-access_spec.lua:3159 and :3174
async fn token_of_another_service(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    for host in ["oauth2_3.test", "oauth2_4.test"] {
        let path = format!("/request?access_token={token}");
        let reply = send(&env, "GET", host, &path, Body::None, &[]).await;
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
}

// 03-access_spec.lua:3189 (issue 15, item 3)
async fn token_in_a_json_body(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    let body = json!({ "access_token": token });
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/request",
        Body::Json(body.clone()),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // The application gets the body as sent.
    let seen = env.upstream.last();
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), body);
    // A number is no token, and wins over the query string's, as in Kong.
    let path = format!("/request?access_token={token}");
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        &path,
        Body::Json(json!({"access_token": 12})),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error("invalid_request", "The access token is missing")
    );
}

// 03-access_spec.lua:1767 (issue 15, item 3)
async fn token_in_a_multipart_body(store: Store) {
    let env = super::start(store).await;
    let body = json!({"client_id": "clientid123", "client_secret": "secret123", "scope": "email",
                      "grant_type": "client_credentials", "authenticated_userid": "hello",
                      "provision_key": "provision123"});
    let reply = send(
        &env,
        "POST",
        "oauth2_4.test",
        "/oauth2/token",
        Body::Multipart(body),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let token = access(&reply.body);
    let reply = send(
        &env,
        "POST",
        "oauth2_4.test",
        "/request",
        Body::Multipart(json!({ "access_token": token })),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        env.upstream.last().header("x-authenticated-userid"),
        Some("hello")
    );
}

// 03-access_spec.lua:3189's form variant
async fn token_in_a_form_body(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/request",
        Body::Form(json!({ "access_token": token, "a": "1" })),
        &[],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

// 03-access_spec.lua:3205
async fn no_body_at_all(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    let path = format!("/request?access_token={token}");
    let reply = send(&env, "GET", "oauth2.test", &path, Body::None, &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(
        !env.sidecar.logs().contains("ERROR"),
        "{}",
        env.sidecar.logs()
    );
}

// 03-access_spec.lua:3233 and :3246
async fn token_in_the_authorization_header(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    for scheme in ["bearer", "token"] {
        let reply = send(
            &env,
            "POST",
            "oauth2.test",
            "/request",
            Body::None,
            &[("authorization", &format!("{scheme} {token}"))],
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
}

// 03-access_spec.lua:3283 (issue 15, item 4)
async fn a_scope_that_is_not_a_string(store: Store) {
    let env = super::start(store).await;
    for scope in [json!(["email"]), json!(123), json!(false)] {
        let body = json!({"provision_key": "provision123", "authenticated_userid": "id123",
                          "client_id": "clientid123", "client_secret": "secret123",
                          "scope": scope, "grant_type": "password"});
        let reply = post(&env, "oauth2_5.test", "/oauth2/token", body).await;
        assert_eq!(reply.status, 400, "{scope}");
        assert_eq!(reply.body, error("invalid_scope", "scope must be a string"));
    }
}

// 03-access_spec.lua:3315
async fn right_credentials_and_anonymous(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2_7.test", None, None).await);
    let reply = bearer(&env, "oauth2_7.test", "authorization", &token).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-consumer-username"), Some("bob"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("userid123"));
    assert_eq!(seen.header("x-authenticated-scope"), Some("email"));
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid123"));
    assert_eq!(seen.header("x-anonymous-consumer"), None);
}

// 03-access_spec.lua:3335 and :3349 (tollgate's `anonymous` is always a Consumer's name)
async fn no_credentials_and_anonymous(store: Store) {
    let env = super::start(store).await;
    for host in ["oauth2_7.test", "oauth2__c.test"] {
        let reply = send(&env, "POST", host, "/request", Body::None, &[]).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let seen = env.upstream.last();
        assert_eq!(seen.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(seen.header("x-consumer-username"), Some("no-body"));
        assert_eq!(seen.header("x-credential-identifier"), None);
    }
}

// 03-access_spec.lua:3361: the name without quotes (issue 15, item 10)
async fn a_missing_anonymous_consumer(store: Store) {
    let env = super::start(store).await;
    let reply = send(&env, "GET", "oauth2_10.test", "/request", Body::None, &[]).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        reply.body,
        json!({"message": "anonymous consumer nonexisting is configured but doesn't exist"})
    );
    assert_eq!(env.upstream.count(), 0);
}

// 03-access_spec.lua:3408
async fn the_right_service_after_the_wrong_one(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    let path = format!("/request?access_token={token}");
    let reply = send(&env, "GET", "oauth2_3.test", &path, Body::None, &[]).await;
    assert_eq!(reply.status, 401);
    let reply = send(&env, "GET", "oauth2.test", &path, Body::None, &[]).await;
    assert_eq!(reply.status, 200);
}

// 03-access_spec.lua:3433: the body names the reason, WWW-Authenticate stays generic
// (issue 15, item 11)
async fn global_tokens_do_not_reach_local_services(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2_8.test", None, None).await);
    assert_eq!(
        bearer(&env, "oauth2_8.test", "authorization", &token)
            .await
            .status,
        200
    );
    let reply = bearer(&env, "oauth2.test", "authorization", &token).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some(UNAUTHORIZED));
}

// 03-access_spec.lua:3457
async fn local_tokens_do_not_reach_global_services(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2.test", None, None).await);
    let reply = bearer(&env, "oauth2_8.test", "authorization", &token).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some(UNAUTHORIZED));
    assert_eq!(
        bearer(&env, "oauth2.test", "authorization", &token)
            .await
            .status,
        200
    );
}

// 03-access_spec.lua:3481
async fn global_tokens_reach_global_services(store: Store) {
    let env = super::start(store).await;
    let token = access(&provision_token(&env, "oauth2_8.test", None, None).await);
    assert_eq!(
        bearer(&env, "oauth2_8.test", "authorization", &token)
            .await
            .status,
        200
    );
    assert_eq!(
        bearer(&env, "oauth2_9.test", "authorization", &token)
            .await
            .status,
        200
    );
}

// 03-access_spec.lua:4340 (Kong's issue 4232): the token in a JSON body, the body's reason,
// the generic challenge (issue 15, items 3 and 11)
async fn a_global_token_on_a_local_service_in_a_json_body(store: Store) {
    let env = super::start(store).await;
    let code = super::provision_code(
        &env,
        "oauth2_regression_4232.test",
        Some("clientid_4232"),
        None,
    )
    .await;
    let body = json!({"code": code, "client_id": "clientid_4232", "client_secret": "secret_4232",
                      "grant_type": "authorization_code"});
    let reply = post(&env, "oauth2_regression_4232.test", "/oauth2/token", body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let token = access(&reply.body);
    let reply = send(
        &env,
        "POST",
        "oauth2_regression_4232_test.test",
        "/anything",
        Body::Json(json!({ "access_token": token })),
        &[],
    )
    .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.body,
        error(
            "invalid_token",
            "The access token is global, but the current plugin is configured without 'global_credentials'"
        )
    );
    assert_eq!(reply.header("www-authenticate"), Some(UNAUTHORIZED));
}
