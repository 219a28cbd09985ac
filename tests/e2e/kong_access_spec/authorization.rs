//! `describe("OAuth2 Authorization")`: the authorize endpoint's code and implicit grants.

use serde_json::{Value, json};

use super::{Body, EXPIRES_IN, at, code_and_state, error, post, send};
use crate::harness::Store;

crate::both_stores!(
    no_provision_key,
    only_the_provision_key,
    only_provision_key_and_userid,
    only_the_client_id,
    an_invalid_scope,
    no_response_type,
    no_response_type_with_a_state,
    redirect_uri_does_not_match,
    registered_redirect_uri_with_a_query_string,
    multiple_redirect_uris,
    plain_http_is_refused,
    plain_http_from_a_trusted_terminator,
    code_success,
    code_success_with_final_slash,
    code_success_with_a_state,
    challenge_method_not_supported_is_escaped_as_kong_escapes,
    challenge_method_without_challenge,
    public_client_without_challenge,
    confidential_client_without_challenge_under_strict,
    public_client_without_challenge_under_pkce_none,
    challenge_without_method_defaults_to_s256,
    lowercase_s256_is_accepted,
    a_bad_challenge_method_outranks_a_missing_response_type,
    implicit_success,
    implicit_success_with_a_state,
    implicit_public_client_needs_a_challenge,
    implicit_token_reaches_the_upstream_with_its_headers,
    implicit_token_lives_the_services_token_expiration,
);

fn authorize(extra: Value) -> Value {
    let mut body = json!({"provision_key": "provision123", "authenticated_userid": "id123"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn redirect(uri: &str) -> Value {
    json!({ "redirect_uri": uri })
}

// 03-access_spec.lua:636
async fn no_provision_key(store: Store) {
    let env = super::start(store).await;
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/oauth2/authorize",
        Body::None,
        &[],
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_provision_key", "Invalid provision_key")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
}

// 03-access_spec.lua:662
async fn only_the_provision_key(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        json!({"provision_key": "provision123"}),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error(
            "invalid_authenticated_userid",
            "Missing authenticated_userid parameter"
        )
    );
}

// 03-access_spec.lua:678
async fn only_provision_key_and_userid(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        authorize(json!({})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        error("invalid_client", "Invalid client authentication")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
}

// 03-access_spec.lua:697
async fn only_the_client_id(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid123"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_scope&error_description=You%20must%20specify%20a%20scope"
        )
    );
}

// 03-access_spec.lua:715
async fn an_invalid_scope(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid123", "scope": "wot"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_scope&error_description=%22wot%22%20is%20an%20invalid%20scope"
        )
    );
}

// 03-access_spec.lua:734
async fn no_response_type(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid123", "scope": "email"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=unsupported_response_type&error_description=Invalid%20response_type"
        )
    );
}

// 03-access_spec.lua:753
async fn no_response_type_with_a_state(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid123", "scope": "email", "state": "somestate"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=unsupported_response_type&error_description=Invalid%20response_type&state=somestate"
        )
    );
}

// 03-access_spec.lua:773
async fn redirect_uri_does_not_match(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid123", "scope": "email",
                         "response_type": "code", "redirect_uri": "http://hello.test/"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=Invalid%20redirect_uri%20that%20does%20not%20match%20with%20any%20redirect_uri%20created%20with%20the%20application"
        )
    );
}

// 03-access_spec.lua:794 (over TLS rather than through a terminating proxy)
async fn registered_redirect_uri_with_a_query_string(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2_6.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid789", "scope": "email", "response_type": "code"})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let uri = reply.body["redirect_uri"].as_str().unwrap();
    let uri = uri.strip_suffix("&foo=bar").expect(uri);
    let (_, state) = code_and_state(uri, "http://google.test/kong?");
    assert_eq!(state, None);
}

// 03-access_spec.lua:814
async fn multiple_redirect_uris(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2_6.test",
        "/oauth2/authorize",
        authorize(json!({"client_id": "clientid456", "scope": "email", "response_type": "code"})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    code_and_state(
        reply.body["redirect_uri"].as_str().unwrap(),
        "http://one.test/one/?",
    );
}

async fn plain(env: &crate::harness::Env, host: &str, proto: Option<&str>) -> (u16, Value) {
    let http = env.sidecar.http.unwrap();
    let mut request = reqwest::Client::new()
        .post(format!("http://{http}{}", at(host, "/oauth2/authorize")))
        .json(&authorize(
            json!({"client_id": "clientid123", "scope": "email",
                                "response_type": "code"}),
        ));
    if let Some(proto) = proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

// 03-access_spec.lua:835 and :877
async fn plain_http_is_refused(store: Store) {
    let env = super::start(store).await;
    let refused = (400, error("access_denied", "You must use HTTPS"));
    assert_eq!(plain(&env, "oauth2.test", None).await, refused);
    assert_eq!(plain(&env, "oauth2.test", Some("https")).await, refused);
}

// 03-access_spec.lua:857
async fn plain_http_from_a_trusted_terminator(store: Store) {
    let env = super::start(store).await;
    let (status, body) = plain(&env, "oauth2_6.test", Some("https")).await;
    assert_eq!(status, 200, "{body}");
    let (_, state) = code_and_state(
        body["redirect_uri"].as_str().unwrap(),
        "http://google.test/kong?",
    );
    assert_eq!(state, None);
}

async fn success(env: &crate::harness::Env, path: &str, extra: Value) -> (String, Option<String>) {
    let mut body = json!({"client_id": "clientid123", "scope": "email", "response_type": "code"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let reply = post(env, "oauth2.test", path, authorize(body)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    code_and_state(
        reply.body["redirect_uri"].as_str().unwrap(),
        "http://google.test/kong?",
    )
}

// 03-access_spec.lua:900
async fn code_success(store: Store) {
    let env = super::start(store).await;
    assert_eq!(success(&env, "/oauth2/authorize", json!({})).await.1, None);
}

// 03-access_spec.lua:957
async fn code_success_with_final_slash(store: Store) {
    let env = super::start(store).await;
    assert_eq!(success(&env, "/oauth2/authorize/", json!({})).await.1, None);
}

// 03-access_spec.lua:976
async fn code_success_with_a_state(store: Store) {
    let env = super::start(store).await;
    let (_, state) = success(&env, "/oauth2/authorize", json!({"state": "hello"})).await;
    assert_eq!(state.as_deref(), Some("hello"));
}

fn public_authorize(extra: Value) -> Value {
    let mut body = json!({"provision_key": "provision123", "client_id": "clientid11211",
                          "scope": "user.email", "response_type": "code", "state": "hello",
                          "authenticated_userid": "userid123"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

// 03-access_spec.lua:1058. Kong escapes with LuaSocket's url.escape: `%2c`, lowercase.
async fn challenge_method_not_supported_is_escaped_as_kong_escapes(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        public_authorize(json!({"code_challenge": "1234", "code_challenge_method": "foo"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=code_challenge_method%20is%20not%20supported%2c%20must%20be%20S256&state=hello"
        )
    );
}

// 03-access_spec.lua:1081
async fn challenge_method_without_challenge(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        public_authorize(json!({"code_challenge_method": "H256"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=code_challenge%20is%20required%20when%20code_method%20is%20present&state=hello"
        )
    );
}

// 03-access_spec.lua:1103
async fn public_client_without_challenge(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        public_authorize(json!({})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=code_challenge%20is%20required%20for%20public%20clients&state=hello"
        )
    );
}

// 03-access_spec.lua:1124
async fn confidential_client_without_challenge_under_strict(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2_15.test",
        "/oauth2/authorize",
        public_authorize(json!({"client_id": "clientid123"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=code_challenge%20is%20required%20for%20confidential%20clients&state=hello"
        )
    );
}

// 03-access_spec.lua:1145
async fn public_client_without_challenge_under_pkce_none(store: Store) {
    let env = super::start(store).await;
    let reply = post(
        &env,
        "oauth2_14.test",
        "/oauth2/authorize",
        public_authorize(json!({})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let (_, state) = code_and_state(
        reply.body["redirect_uri"].as_str().unwrap(),
        "http://google.test/kong?",
    );
    assert_eq!(state.as_deref(), Some("hello"));
}

// 03-access_spec.lua:1170 and :1198: the challenge is kept and a matching verifier works.
async fn challenge_without_method_defaults_to_s256(store: Store) {
    let env = super::start(store).await;
    let (challenge, verifier) = super::pkce_tokens();
    for method in [None, Some("S256")] {
        let mut extra = json!({"code_challenge": challenge});
        if let Some(method) = method {
            extra["code_challenge_method"] = json!(method);
        }
        let reply = post(
            &env,
            "oauth2.test",
            "/oauth2/authorize",
            public_authorize(extra),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let (code, _) = code_and_state(
            reply.body["redirect_uri"].as_str().unwrap(),
            "http://google.test/kong?",
        );
        let reply = post(
            &env,
            "oauth2.test",
            "/oauth2/token",
            json!({"code": code, "client_id": "clientid11211",
                   "grant_type": "authorization_code", "code_verifier": verifier}),
        )
        .await;
        super::assert_tokens(&reply, true);
    }
}

// access.lua 264-269: `s256` is read as `S256` (issue 15, item 15).
async fn lowercase_s256_is_accepted(store: Store) {
    let env = super::start(store).await;
    let (challenge, _) = super::pkce_tokens();
    let reply = post(
        &env,
        "oauth2.test",
        "/oauth2/authorize",
        public_authorize(json!({"code_challenge": challenge, "code_challenge_method": "s256"})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

// access.lua 320-381: the PKCE check comes after the response type's and replaces its error
// (issue 15, item 16).
async fn a_bad_challenge_method_outranks_a_missing_response_type(store: Store) {
    let env = super::start(store).await;
    let mut body =
        public_authorize(json!({"code_challenge": "1234", "code_challenge_method": "foo"}));
    body.as_object_mut().unwrap().remove("response_type");
    let reply = post(&env, "oauth2.test", "/oauth2/authorize", body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=code_challenge_method%20is%20not%20supported%2c%20must%20be%20S256&state=hello"
        )
    );
}

async fn implicit(env: &crate::harness::Env, extra: Value) -> super::Reply {
    let mut body = json!({"client_id": "clientid123", "scope": "email", "response_type": "token"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(env, "oauth2.test", "/oauth2/authorize", authorize(body)).await
}

/// The fragment's `access_token` (decoded), checking the rest of the fragment.
fn implicit_token(reply: &super::Reply, state: Option<&str>) -> String {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let uri = reply.body["redirect_uri"].as_str().unwrap();
    let fragment = uri
        .strip_prefix("http://google.test/kong#access_token=")
        .expect(uri);
    let (token, rest) = fragment.split_once('&').expect(uri);
    let expected = match state {
        Some(state) => format!("expires_in={EXPIRES_IN}&state={state}&token_type=bearer"),
        None => format!("expires_in={EXPIRES_IN}&token_type=bearer"),
    };
    assert_eq!(rest, expected);
    let token = super::unescape(token);
    assert_eq!(token.len(), 43);
    token
}

// 03-access_spec.lua:1230
async fn implicit_success(store: Store) {
    let env = super::start(store).await;
    implicit_token(&implicit(&env, json!({})).await, None);
}

// 03-access_spec.lua:1251
async fn implicit_success_with_a_state(store: Store) {
    let env = super::start(store).await;
    implicit_token(&implicit(&env, json!({"state": "wot"})).await, Some("wot"));
}

// Kong checks PKCE for the implicit grant too (access.lua 374, issue 15, item 15).
async fn implicit_public_client_needs_a_challenge(store: Store) {
    let env = super::start(store).await;
    let reply = implicit(&env, json!({"client_id": "clientid11211"})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        redirect(
            "http://google.test/kong?error=invalid_request&error_description=code_challenge%20is%20required%20for%20public%20clients"
        )
    );
    // With a challenge, the public client gets its token.
    let (challenge, _) = super::pkce_tokens();
    let reply = implicit(
        &env,
        json!({"client_id": "clientid11211", "code_challenge": challenge}),
    )
    .await;
    implicit_token(&reply, None);
}

// 03-access_spec.lua:1299 and :1331
async fn implicit_token_reaches_the_upstream_with_its_headers(store: Store) {
    let env = super::start(store).await;
    let token = implicit_token(
        &implicit(&env, json!({"authenticated_userid": "userid123"})).await,
        None,
    );
    let reply = send(
        &env,
        "POST",
        "oauth2.test",
        "/request",
        Body::None,
        &[("authorization", &format!("bearer {token}"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let seen = env.upstream.last();
    assert_eq!(seen.path_and_query, "/request");
    assert_eq!(seen.header("x-consumer-username"), Some("bob"));
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid123"));
    assert_eq!(seen.header("x-authenticated-scope"), Some("email"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("userid123"));
    assert_eq!(seen.header("x-anonymous-consumer"), None);
}

// 03-access_spec.lua:1380: the service's own tokenExpiration, and no refresh token
async fn implicit_token_lives_the_services_token_expiration(store: Store) {
    let env = super::start(store).await;
    let body = authorize(json!({"client_id": "clientid1011", "scope": "email",
                                "response_type": "token"}));
    let reply = post(&env, "oauth2_11.test", "/oauth2/authorize", body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let uri = reply.body["redirect_uri"].as_str().unwrap();
    let fragment = uri
        .strip_prefix("http://google.test/kong#access_token=")
        .expect(uri);
    let (token, rest) = fragment.split_once('&').expect(uri);
    assert_eq!(rest, "expires_in=7&token_type=bearer");
    assert_eq!(super::unescape(token).len(), 43);
}
