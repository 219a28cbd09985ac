//! `describe("OAuth2 Access Token")`: the authorization code exchange at the token endpoint.

use serde_json::{Value, json};

use super::{Body, assert_tokens, error, pkce_tokens, post, provision_code, send};
use crate::harness::{Env, Store};

crate::both_stores!(
    nothing_sent,
    only_the_code,
    only_code_and_secret,
    no_grant_type,
    a_wrong_code,
    success_without_state,
    success_with_state,
    a_code_of_another_client,
    the_upstream_gets_the_tokens_identity,
    a_code_works_once,
    a_code_for_another_service,
    success_with_a_code_challenge,
    a_public_client_may_send_basic_with_its_id_alone,
    a_secret_from_a_public_client,
    no_verifier_from_a_public_client,
    no_verifier_without_pkce_under_pkce_none,
    a_challenge_with_padding_or_plus_and_slash,
    verifiers_of_the_wrong_length,
    a_wrong_secret_on_another_grant,
    an_empty_verifier,
    a_verifier_that_is_not_a_string,
    a_verifier_that_does_not_match,
    a_wrong_or_missing_code_from_a_public_client,
    no_secret_from_a_confidential_client,
    no_verifier_for_a_code_with_a_challenge,
    no_verifier_for_a_code_without_a_challenge,
    a_failed_exchange_leaves_the_code_usable,
    a_global_code_works_only_where_it_was_issued,
);

async fn token(env: &Env, host: &str, body: Value) -> super::Reply {
    post(env, host, "/oauth2/token", body).await
}

fn exchange(code: &str, extra: Value) -> Value {
    let mut body = json!({"code": code, "client_id": "clientid123", "client_secret": "secret123",
                          "grant_type": "authorization_code"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

fn public(code: &str, verifier: Option<&str>) -> Value {
    let mut body = json!({"code": code, "client_id": "clientid11211",
                          "grant_type": "authorization_code"});
    if let Some(verifier) = verifier {
        body["code_verifier"] = json!(verifier);
    }
    body
}

fn assert_error(reply: &super::Reply, expected: Value) {
    assert_eq!((reply.status, &reply.body), (400, &expected));
}

// 03-access_spec.lua:2013
async fn nothing_sent(store: Store) {
    let env = super::start(store).await;
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/oauth2/token",
        Body::None,
        &[],
    )
    .await;
    assert_error(
        &reply,
        error("invalid_client", "Invalid client authentication"),
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
}

// 03-access_spec.lua:2028
async fn only_the_code(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(&env, "oauth2.test", json!({"code": code})).await;
    assert_error(
        &reply,
        error("invalid_client", "Invalid client authentication"),
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

// 03-access_spec.lua:2049
async fn only_code_and_secret(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(
        &env,
        "oauth2.test",
        json!({"code": code, "client_secret": "secret123"}),
    )
    .await;
    assert_error(
        &reply,
        error("invalid_client", "Invalid client authentication"),
    );
}

// 03-access_spec.lua:2071
async fn no_grant_type(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(
        &env,
        "oauth2.test",
        exchange(&code, json!({"grant_type": null})),
    )
    .await;
    assert_error(
        &reply,
        error("unsupported_grant_type", "Invalid grant_type"),
    );
}

// 03-access_spec.lua:2091
async fn a_wrong_code(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await + "hello";
    let reply = token(&env, "oauth2.test", exchange(&code, json!({}))).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
}

// 03-access_spec.lua:2112
async fn success_without_state(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(&env, "oauth2.test", exchange(&code, json!({}))).await;
    assert_tokens(&reply, true);
    assert!(reply.body.get("state").is_none());
}

// 03-access_spec.lua:2138
async fn success_with_state(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(
        &env,
        "oauth2.test",
        exchange(&code, json!({"state": "wot"})),
    )
    .await;
    assert_tokens(&reply, true);
    assert_eq!(reply.body["state"], "wot");
}

// 03-access_spec.lua:2165
async fn a_code_of_another_client(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", Some("clientid333"), None).await;
    let reply = token(
        &env,
        "oauth2.test",
        exchange(&code, json!({"state": "wot"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        json!({"error": "invalid_request", "error_description": "Invalid code", "state": "wot"})
    );
}

// 03-access_spec.lua:2186
async fn the_upstream_gets_the_tokens_identity(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(&env, "oauth2.test", exchange(&code, json!({}))).await;
    let access = reply.body["access_token"].as_str().unwrap();
    let path = format!("/request?access_token={access}");
    let reply = send(&env, "GET", "oauth2.test", &path, Body::None, &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = env.upstream.last();
    assert!(seen.header("x-consumer-id").is_some());
    assert_eq!(seen.header("x-consumer-username"), Some("bob"));
    assert_eq!(seen.header("x-authenticated-scope"), Some("email"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("userid123"));
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid123"));
}

// 03-access_spec.lua:2218
async fn a_code_works_once(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    assert_tokens(
        &token(&env, "oauth2.test", exchange(&code, json!({}))).await,
        true,
    );
    let reply = token(&env, "oauth2.test", exchange(&code, json!({}))).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
}

// 03-access_spec.lua:2262 (another application) and :2283 (another API)
async fn a_code_for_another_service(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let other_app = exchange(
        &code,
        json!({"client_id": "clientid789", "client_secret": "secret789"}),
    );
    let reply = token(&env, "oauth2.test", other_app).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
    let reply = token(&env, "oauth2_3.test", exchange(&code, json!({}))).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
}

// 03-access_spec.lua:2303
async fn success_with_a_code_challenge(store: Store) {
    let env = super::start(store).await;
    let (challenge, verifier) = pkce_tokens();
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let reply = token(&env, "oauth2.test", public(&code, Some(&verifier))).await;
    assert_tokens(&reply, true);
}

// 03-access_spec.lua:2329, :2355 and :2381: `Basic` of `clientid11211`, `clientid11211:` and
// `clientid11211:    ` (issue 15, item 5).
async fn a_public_client_may_send_basic_with_its_id_alone(store: Store) {
    let env = super::start(store).await;
    for basic in [
        "Basic Y2xpZW50aWQxMTIxMQ==",
        "Basic Y2xpZW50aWQxMTIxMTo=",
        "Basic Y2xpZW50aWQxMTIxMTogICAg",
    ] {
        let (challenge, verifier) = pkce_tokens();
        let code =
            provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
        let body = json!({"code": code, "grant_type": "authorization_code",
                          "code_verifier": verifier});
        let reply = send(
            &env,
            "POST",
            "oauth2.test",
            "/oauth2/token",
            Body::Json(body),
            &[("authorization", basic)],
        )
        .await;
        assert_tokens(&reply, true);
    }
}

// 03-access_spec.lua:2407 and :2429
async fn a_secret_from_a_public_client(store: Store) {
    let env = super::start(store).await;
    let disallowed = error(
        "invalid_request",
        "client_secret is disallowed for public clients",
    );
    let (challenge, verifier) = pkce_tokens();
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let mut body = public(&code, Some(&verifier));
    body["client_secret"] = json!("secret11211");
    assert_error(&token(&env, "oauth2.test", body).await, disallowed.clone());
    let body = json!({"code": code, "grant_type": "authorization_code", "code_verifier": verifier});
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/oauth2/token",
        Body::Json(body),
        &[(
            "authorization",
            "Basic Y2xpZW50aWQxMTIxMTpzZWNyZXQxMTIxMQ==",
        )],
    )
    .await;
    assert_error(&reply, disallowed);
}

// 03-access_spec.lua:2450 and :2592
async fn no_verifier_from_a_public_client(store: Store) {
    let env = super::start(store).await;
    let (challenge, _) = pkce_tokens();
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let reply = token(&env, "oauth2.test", public(&code, None)).await;
    assert_error(
        &reply,
        error(
            "invalid_request",
            "code_verifier is required for PKCE authorization requests",
        ),
    );
}

// 03-access_spec.lua:2470, :2839 and :2864
async fn no_verifier_without_pkce_under_pkce_none(store: Store) {
    let env = super::start(store).await;
    for host in ["oauth2_14.test", "oauth2_16.test"] {
        let code = provision_code(&env, host, None, None).await;
        assert_tokens(&token(&env, host, exchange(&code, json!({}))).await, true);
    }
}

// 03-access_spec.lua:2495 and :2522: Kong rewrites the challenge as unpadded base64url
// (issue 15, item 6).
async fn a_challenge_with_padding_or_plus_and_slash(store: Store) {
    let env = super::start(store).await;
    for (verifier, challenge) in [
        (
            "abcdelfhigklmnopqrstuvwxyz0123456789abcdefg",
            "2aC4cMSkAsMRtZbhHhiZkDW3sddRf_iTRGil1r9gi8w=",
        ),
        (
            "abcdelfhigklmnopqrstuvwxyz0123456789abcdefghijklmnop9",
            "0LoS6Gtrw16r07+ZXsCf8MeAi21QHmKc3LJdUCA5w/o=",
        ),
    ] {
        let code =
            provision_code(&env, "oauth2.test", Some("clientid11211"), Some(challenge)).await;
        let reply = token(&env, "oauth2.test", public(&code, Some(verifier))).await;
        assert_tokens(&reply, true);
    }
}

// 03-access_spec.lua:2549 and :2571
async fn verifiers_of_the_wrong_length(store: Store) {
    let env = super::start(store).await;
    for verifier in ["abc123".repeat(30), "abc123".to_owned()] {
        let challenge = super::challenge_of(&verifier);
        let code =
            provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
        let reply = token(&env, "oauth2.test", public(&code, Some(&verifier))).await;
        assert_error(
            &reply,
            error(
                "invalid_request",
                "code_verifier must be between 43 and 128 characters",
            ),
        );
    }
}

// 03-access_spec.lua:2612
async fn a_wrong_secret_on_another_grant(store: Store) {
    let env = super::start(store).await;
    let (challenge, _) = pkce_tokens();
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let body = json!({"provision_key": "provision123", "authenticated_userid": "id123",
                      "client_id": "clientid123", "scope": "email", "grant_type": "password",
                      "client_secret": "bogus", "code": code});
    let reply = token(&env, "oauth2_5.test", body).await;
    assert_error(
        &reply,
        error("invalid_client", "Invalid client authentication"),
    );
}

// 03-access_spec.lua:2636 (issue 15, item 7)
async fn an_empty_verifier(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some("abc123")).await;
    let reply = token(&env, "oauth2.test", public(&code, Some(""))).await;
    assert_error(
        &reply,
        error(
            "invalid_request",
            "code_verifier must be between 43 and 128 characters",
        ),
    );
}

// 03-access_spec.lua:2656 (issue 15, item 4)
async fn a_verifier_that_is_not_a_string(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some("abc123")).await;
    let mut body = public(&code, None);
    body["code_verifier"] = json!(12);
    let reply = token(&env, "oauth2.test", body).await;
    assert_error(
        &reply,
        error("invalid_request", "code_verifier is not a string"),
    );
}

// 03-access_spec.lua:2676 and :2696
async fn a_verifier_that_does_not_match(store: Store) {
    let env = super::start(store).await;
    let wrong = "abcdelfhigklmnopqrstuvwxyz0123456789abcdefg";
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some("abc123")).await;
    let reply = token(&env, "oauth2.test", public(&code, Some(wrong))).await;
    assert_error(&reply, error("invalid_grant", "Invalid code"));
    let (challenge, _) = pkce_tokens();
    let code = provision_code(&env, "oauth2_15.test", None, Some(&challenge)).await;
    let reply = token(
        &env,
        "oauth2_15.test",
        exchange(&code, json!({"code_verifier": wrong})),
    )
    .await;
    assert_error(&reply, error("invalid_grant", "Invalid code"));
}

// 03-access_spec.lua:2718 and :2739
async fn a_wrong_or_missing_code_from_a_public_client(store: Store) {
    let env = super::start(store).await;
    let (challenge, verifier) = pkce_tokens();
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let reply = token(
        &env,
        "oauth2.test",
        public(&(code + "hello"), Some(&verifier)),
    )
    .await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
    let body = json!({"client_id": "clientid11211", "grant_type": "authorization_code",
                      "code_verifier": "verifier"});
    let reply = token(&env, "oauth2.test", body).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
}

// 03-access_spec.lua:2757
async fn no_secret_from_a_confidential_client(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2.test", None, None).await;
    let reply = token(
        &env,
        "oauth2.test",
        exchange(&code, json!({"client_secret": null})),
    )
    .await;
    assert_error(
        &reply,
        error("invalid_client", "Invalid client authentication"),
    );
}

// 03-access_spec.lua:2776, :2797 and :2818: a code issued with a challenge needs a verifier,
// whatever `pkce` says.
async fn no_verifier_for_a_code_with_a_challenge(store: Store) {
    let env = super::start(store).await;
    for host in ["oauth2_15.test", "oauth2_16.test", "oauth2_14.test"] {
        let (challenge, _) = pkce_tokens();
        let code = provision_code(&env, host, None, Some(&challenge)).await;
        let reply = token(&env, host, exchange(&code, json!({}))).await;
        assert_error(
            &reply,
            error(
                "invalid_request",
                "code_verifier is required for PKCE authorization requests",
            ),
        );
    }
}

// 03-access_spec.lua:2864 against :2776: without a challenge, only `pkce: strict` refuses the
// code (it was refused at authorize already).
async fn no_verifier_for_a_code_without_a_challenge(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2_16.test", None, None).await;
    assert_tokens(
        &token(&env, "oauth2_16.test", exchange(&code, json!({}))).await,
        true,
    );
}

// access.lua 640-705: Kong deletes a code only when it issues tokens; a wrong verifier or the
// wrong client leaves it to the right exchange (issue 15, item 13).
async fn a_failed_exchange_leaves_the_code_usable(store: Store) {
    let env = super::start(store).await;
    let (challenge, verifier) = pkce_tokens();
    let code = provision_code(&env, "oauth2.test", Some("clientid11211"), Some(&challenge)).await;
    let wrong = "abcdelfhigklmnopqrstuvwxyz0123456789abcdefg";
    let reply = token(&env, "oauth2.test", public(&code, Some(wrong))).await;
    assert_error(&reply, error("invalid_grant", "Invalid code"));
    let other = json!({"code": code, "client_id": "clientid123", "client_secret": "secret123",
                       "grant_type": "authorization_code", "code_verifier": verifier});
    let reply = token(&env, "oauth2.test", other).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
    assert_tokens(
        &token(&env, "oauth2.test", public(&code, Some(&verifier))).await,
        true,
    );
    // Used now.
    let reply = token(&env, "oauth2.test", public(&code, Some(&verifier))).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
}

// 03-access_spec.lua:2890: a code is bound to the plugin instance that issued it, with
// `globalCredentials` too (issue 15, item 8).
async fn a_global_code_works_only_where_it_was_issued(store: Store) {
    let env = super::start(store).await;
    let code = provision_code(&env, "oauth2_16.test", None, None).await;
    let reply = token(&env, "oauth2_17.test", exchange(&code, json!({}))).await;
    assert_error(&reply, error("invalid_request", "Invalid code"));
    // The failure left it to the service that issued it.
    assert_tokens(
        &token(&env, "oauth2_16.test", exchange(&code, json!({}))).await,
        true,
    );
}
