//! Every grant and setting of Kong's plugin beyond the article's password grant, through the
//! real sidecar over TLS, against both token stores.

use serde_json::{Value, json};

use crate::harness::{Env, Sidecar, SidecarBuilder, Store, Upstream, article_manifests, env};

const ALL_GRANTS: &str = "enableAuthorizationCode: true
enableImplicitGrant: true
enableClientCredentials: true
enablePasswordGrant: true";

/// A public client (no secret) of the same consumer.
const PUBLIC_APP: &str = r#"---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata:
  name: spa
spec:
  consumerRef:
    name: clientapp
  clientId: spa-client
  clientType: public
  redirectUris:
  - https://spa.example/cb
"#;

crate::both_stores!(
    authorization_code_flow_with_the_registered_redirect_uri,
    authorize_keeps_registered_query_parameters_and_picks_the_first_uri,
    codes_work_once,
    codes_are_bound_to_their_client,
    authorize_errors_before_the_client_is_known_are_plain_json,
    authorize_errors_after_the_client_is_known_are_redirects,
    pkce_s256_is_verified,
    pkce_strict_requires_a_challenge_from_every_client,
    pkce_none_lets_public_clients_skip_it,
    public_clients_need_pkce_and_may_not_send_a_secret,
    implicit_grant_puts_the_token_in_the_fragment,
    client_credentials_gives_no_refresh_token,
    client_credentials_userid_needs_the_provision_key,
    scopes_are_checked_and_reach_the_upstream,
    mandatory_scope_requires_one,
    refresh_cannot_widen_the_scope,
    token_expiration_zero_never_expires,
    reuse_refresh_token_keeps_token_and_id,
    global_credentials_cross_services_and_local_ones_do_not,
    anonymous_consumer_lets_tokenless_requests_through,
    missing_anonymous_consumer_is_500,
    custom_auth_header_carries_bearer_and_basic,
    hide_credentials_leaves_multipart_bodies_intact,
    plain_http_is_refused_unless_terminated_by_a_trusted_proxy,
    introspection_describes_active_tokens_only,
    revocation_of_a_refresh_token_revokes_its_access_token,
    revocation_refuses_other_clients_tokens,
    client_credentials_is_refused_to_public_clients,
    introspection_needs_a_confidential_client,
    metadata_describes_the_route,
    metadata_without_an_issuer_is_404_whatever_the_host,
    allowed_grants_and_scopes_limit_an_application,
    a_reused_refresh_token_revokes_its_whole_chain,
    a_reused_refresh_token_within_the_grace_window_revokes_nothing,
    bulk_revocation_by_user_client_and_service,
);

async fn with(store: Store, oauth2: &str, extra: &str) -> Env {
    let upstream = Upstream::start().await;
    let manifests = article_manifests(upstream.port, oauth2) + extra;
    let redis = (store == Store::Redis).then(crate::harness::RedisServer::start);
    let mut builder = SidecarBuilder::new(manifests);
    if let Some(redis) = &redis {
        builder = builder.redis(&redis.url());
    }
    let sidecar = builder.start().await;
    Env {
        sidecar,
        upstream,
        redis,
    }
}

async fn post(sidecar: &Sidecar, path: &str, body: Value) -> (u16, Value) {
    let response = sidecar
        .client
        .post(sidecar.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn authorize_body(extra: Value) -> Value {
    let mut body = json!({
        "provision_key": "provisionkey", "authenticated_userid": "42",
        "client_id": "clientid", "response_type": "code"
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

/// The value of `name` in the query (or fragment) of a redirect URI.
fn redirect_param(uri: &str, name: &str) -> Option<String> {
    let params = uri.split_once(['?', '#']).map(|(_, p)| p).unwrap_or("");
    let params = params.replace('#', "&");
    form_urlencoded_pairs(&params)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn form_urlencoded_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

async fn code_for(sidecar: &Sidecar, extra: Value) -> String {
    let (status, body) = post(sidecar, "/event/oauth2/authorize", authorize_body(extra)).await;
    assert_eq!(status, 200, "{body}");
    redirect_param(body["redirect_uri"].as_str().unwrap(), "code").unwrap()
}

async fn exchange(sidecar: &Sidecar, code: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"grant_type": "authorization_code", "client_id": "clientid",
                          "client_secret": "clientsecret", "code": code});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    post(sidecar, "/event/oauth2/token", body).await
}

fn error(code: &str, description: &str) -> Value {
    json!({"error": code, "error_description": description})
}

async fn authorization_code_flow_with_the_registered_redirect_uri(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({"state": "st 1"})),
    )
    .await;
    assert_eq!(status, 200);
    let uri = body["redirect_uri"].as_str().unwrap();
    assert!(uri.starts_with("https://localhost/callback?code="), "{uri}");
    assert!(uri.ends_with("&state=st%201"), "{uri}");
    let code = redirect_param(uri, "code").unwrap();
    let (status, token) = exchange(&env.sidecar, &code, json!({})).await;
    assert_eq!(status, 200, "{token}");
    assert!(token["refresh_token"].is_string());
    assert_eq!(token["expires_in"], 7200);
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", access)
            .await
            .status(),
        200
    );
    assert_eq!(
        env.upstream.last().header("x-authenticated-userid"),
        Some("42")
    );
}

async fn authorize_keeps_registered_query_parameters_and_picks_the_first_uri(store: Store) {
    let app = PUBLIC_APP
        .replace("spa-client", "multi")
        .replace("name: spa", "name: multi")
        .replace(
            "clientType: public",
            "clientType: confidential\n  clientSecretRef:\n    name: sampleapp-secret",
        )
        .replace(
            "- https://spa.example/cb",
            "- https://app.example/cb?tenant=7\n  - https://app.example/other",
        );
    let env = with(store, ALL_GRANTS, &app).await;
    let (_, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({"client_id": "multi"})),
    )
    .await;
    let uri = body["redirect_uri"].as_str().unwrap();
    assert!(uri.starts_with("https://app.example/cb?code="), "{uri}");
    assert_eq!(redirect_param(uri, "tenant").as_deref(), Some("7"));
    let (_, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({"client_id": "multi", "redirect_uri": "https://app.example/other"})),
    )
    .await;
    assert!(
        body["redirect_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://app.example/other?code=")
    );
}

async fn codes_work_once(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let code = code_for(&env.sidecar, json!({})).await;
    assert_eq!(exchange(&env.sidecar, &code, json!({})).await.0, 200);
    let (status, body) = exchange(&env.sidecar, &code, json!({})).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_request", "Invalid code"))
    );
    let (status, body) = exchange(&env.sidecar, "made-up", json!({})).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_request", "Invalid code"))
    );
}

async fn codes_are_bound_to_their_client(store: Store) {
    let other = PUBLIC_APP
        .replace("spa-client", "otherid")
        .replace("name: spa", "name: other")
        .replace(
            "clientType: public",
            "clientSecretRef:\n    name: sampleapp-secret",
        );
    let env = with(store, ALL_GRANTS, &other).await;
    let code = code_for(&env.sidecar, json!({})).await;
    let (status, body) = exchange(&env.sidecar, &code, json!({"client_id": "otherid"})).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_request", "Invalid code"))
    );
}

async fn authorize_errors_before_the_client_is_known_are_plain_json(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let cases = [
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
        (
            json!({"client_id": "nobody"}),
            error("invalid_client", "Invalid client authentication"),
        ),
        // Kong's precedence: an unknown client replaces a bad response_type.
        (
            json!({"client_id": "nobody", "response_type": "x"}),
            error("invalid_client", "Invalid client authentication"),
        ),
    ];
    for (extra, expected) in cases {
        let (status, body) = post(
            &env.sidecar,
            "/event/oauth2/authorize",
            authorize_body(extra),
        )
        .await;
        assert_eq!((status, body), (400, expected));
    }
    let (_, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({"provision_key": "bad", "state": "s"})),
    )
    .await;
    assert_eq!(body["state"], "s");
}

async fn authorize_errors_after_the_client_is_known_are_redirects(store: Store) {
    let env = env(store, "enableAuthorizationCode: true\nscopes: [read]").await;
    let cases = [
        (
            json!({"response_type": "token"}),
            "unsupported_response_type",
            "Invalid response_type",
        ),
        (
            json!({"scope": "admin"}),
            "invalid_scope",
            "\"admin\" is an invalid scope",
        ),
        (
            json!({"redirect_uri": "https://evil.example/"}),
            "invalid_request",
            "Invalid redirect_uri that does not match with any redirect_uri created with the application",
        ),
        (
            json!({"code_challenge_method": "plain", "code_challenge": "x"}),
            "invalid_request",
            "code_challenge_method is not supported, must be S256",
        ),
    ];
    for (extra, code, description) in cases {
        let mut extra = extra;
        extra["state"] = json!("xyz");
        let (status, body) = post(
            &env.sidecar,
            "/event/oauth2/authorize",
            authorize_body(extra),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let uri = body["redirect_uri"].as_str().unwrap();
        assert!(
            uri.starts_with("https://localhost/callback?"),
            "never an unregistered URI: {uri}"
        );
        assert_eq!(redirect_param(uri, "error").as_deref(), Some(code), "{uri}");
        assert_eq!(
            redirect_param(uri, "error_description").as_deref(),
            Some(description)
        );
        assert_eq!(redirect_param(uri, "state").as_deref(), Some("xyz"));
    }
}

async fn pkce_s256_is_verified(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let with_challenge = json!({"code_challenge": challenge, "code_challenge_method": "S256"});
    let code = code_for(&env.sidecar, with_challenge.clone()).await;
    let (status, body) = exchange(&env.sidecar, &code, json!({})).await;
    assert_eq!(
        (status, body),
        (
            400,
            error(
                "invalid_request",
                "code_verifier is required for PKCE authorization requests"
            )
        )
    );
    let code = code_for(&env.sidecar, with_challenge.clone()).await;
    let (status, body) = exchange(&env.sidecar, &code, json!({"code_verifier": "short"})).await;
    assert_eq!(
        (status, body),
        (
            400,
            error(
                "invalid_request",
                "code_verifier must be between 43 and 128 characters"
            )
        )
    );
    let code = code_for(&env.sidecar, with_challenge.clone()).await;
    let wrong = "x".repeat(43);
    let (status, body) = exchange(&env.sidecar, &code, json!({"code_verifier": wrong})).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_grant", "Invalid code"))
    );
    let code = code_for(&env.sidecar, with_challenge).await;
    let (status, _) = exchange(&env.sidecar, &code, json!({"code_verifier": verifier})).await;
    assert_eq!(status, 200);
}

async fn pkce_strict_requires_a_challenge_from_every_client(store: Store) {
    let env = env(store, "enableAuthorizationCode: true\npkce: strict").await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({})),
    )
    .await;
    assert_eq!(status, 400);
    let uri = body["redirect_uri"].as_str().unwrap();
    assert_eq!(
        redirect_param(uri, "error_description").as_deref(),
        Some("code_challenge is required for confidential clients")
    );
}

async fn pkce_none_lets_public_clients_skip_it(store: Store) {
    let env = with(
        store,
        "enableAuthorizationCode: true\npkce: none",
        PUBLIC_APP,
    )
    .await;
    let code = code_for(&env.sidecar, json!({"client_id": "spa-client"})).await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"grant_type": "authorization_code", "client_id": "spa-client", "code": code}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn public_clients_need_pkce_and_may_not_send_a_secret(store: Store) {
    let env = with(store, ALL_GRANTS, PUBLIC_APP).await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({"client_id": "spa-client"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        redirect_param(body["redirect_uri"].as_str().unwrap(), "error_description").as_deref(),
        Some("code_challenge is required for public clients")
    );
    let verifier = "a".repeat(64);
    let challenge = tollgate_oauth_s256(&verifier);
    let code = code_for(
        &env.sidecar,
        json!({"client_id": "spa-client", "code_challenge": challenge}),
    )
    .await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"grant_type": "authorization_code", "client_id": "spa-client", "client_secret": "anything",
               "code": code, "code_verifier": verifier}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            error(
                "invalid_request",
                "client_secret is disallowed for public clients"
            )
        )
    );
    let code = code_for(
        &env.sidecar,
        json!({"client_id": "spa-client", "code_challenge": challenge}),
    )
    .await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"grant_type": "authorization_code", "client_id": "spa-client", "code": code, "code_verifier": verifier}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// S256 of a verifier, computed here independently of the sidecar.
fn tollgate_oauth_s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

async fn implicit_grant_puts_the_token_in_the_fragment(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/authorize",
        authorize_body(json!({"response_type": "token", "state": "s"})),
    )
    .await;
    assert_eq!(status, 200);
    let uri = body["redirect_uri"].as_str().unwrap();
    let (before, fragment) = uri.split_once('#').unwrap();
    assert_eq!(before, "https://localhost/callback");
    assert!(fragment.starts_with("access_token="), "{fragment}");
    assert!(
        fragment.ends_with("&expires_in=7200&state=s&token_type=bearer"),
        "{fragment}"
    );
    assert!(!fragment.contains("refresh_token"));
    let token = redirect_param(uri, "access_token").unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", &token)
            .await
            .status(),
        200
    );
}

async fn client_credentials_gives_no_refresh_token(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"grant_type": "client_credentials", "client_id": "clientid", "client_secret": "clientsecret"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", access)
            .await
            .status(),
        200
    );
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid"));
    assert_eq!(seen.header("x-authenticated-userid"), None);
}

async fn client_credentials_userid_needs_the_provision_key(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let base = json!({"grant_type": "client_credentials", "client_id": "clientid",
                      "client_secret": "clientsecret", "authenticated_userid": "9"});
    let (status, body) = post(&env.sidecar, "/event/oauth2/token", base.clone()).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_provision_key", "Invalid provision_key"))
    );
    let mut ok = base;
    ok["provision_key"] = json!("provisionkey");
    let (status, body) = post(&env.sidecar, "/event/oauth2/token", ok).await;
    assert_eq!(status, 200);
    env.sidecar
        .get_with_token("/event/1", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        env.upstream.last().header("x-authenticated-userid"),
        Some("9")
    );
}

async fn scopes_are_checked_and_reach_the_upstream(store: Store) {
    let env = env(store, "enablePasswordGrant: true\nscopes: [read, write]").await;
    let mut body = json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
                          "provision_key": "provisionkey", "authenticated_userid": "1", "scope": "read delete"});
    let (status, e) = post(&env.sidecar, "/event/oauth2/token", body.clone()).await;
    assert_eq!(
        (status, e),
        (
            400,
            error("invalid_scope", "\"delete\" is an invalid scope")
        )
    );
    body["scope"] = json!(["read"]);
    let (status, e) = post(&env.sidecar, "/event/oauth2/token", body.clone()).await;
    assert_eq!(
        (status, e),
        (400, error("invalid_scope", "scope must be a string"))
    );
    body["scope"] = json!("read write");
    let (status, token) = post(&env.sidecar, "/event/oauth2/token", body).await;
    assert_eq!(status, 200);
    env.sidecar
        .get_with_token("/event/1", token["access_token"].as_str().unwrap())
        .await;
    assert_eq!(
        env.upstream.last().header("x-authenticated-scope"),
        Some("read write")
    );
}

async fn mandatory_scope_requires_one(store: Store) {
    let env = env(
        store,
        "enablePasswordGrant: true\nscopes: [read]\nmandatoryScope: true",
    )
    .await;
    let (status, e) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
               "provision_key": "provisionkey", "authenticated_userid": "1"}),
    )
    .await;
    assert_eq!(
        (status, e),
        (400, error("invalid_scope", "You must specify a scope"))
    );
}

async fn refresh_cannot_widen_the_scope(store: Store) {
    let env = env(store, "enablePasswordGrant: true\nscopes: [read, write]").await;
    let (_, token) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
               "provision_key": "provisionkey", "authenticated_userid": "1", "scope": "read"}),
    )
    .await;
    let (status, e) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "refresh_token",
               "refresh_token": token["refresh_token"], "scope": "read write"}),
    )
    .await;
    assert_eq!((status, e), (400, error("invalid_scope", "Scope mismatch")));
}

async fn token_expiration_zero_never_expires(store: Store) {
    let env = env(store, "enablePasswordGrant: true\ntokenExpiration: 0").await;
    let token = env.sidecar.password_grant().await;
    assert!(token.get("expires_in").is_none(), "{token}");
    assert!(token.get("refresh_token").is_none(), "{token}");
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", token["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    if let Some(redis) = &env.redis {
        for key in redis.keys() {
            assert_eq!(
                redis.command(&["TTL", &key]).as_integer(),
                Some(-1),
                "{key} must never expire"
            );
        }
    }
}

async fn reuse_refresh_token_keeps_token_and_id(store: Store) {
    let env = env(store, "enablePasswordGrant: true\nreuseRefreshToken: true").await;
    let first = env.sidecar.password_grant().await;
    let ids = |list: Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list_url = env.sidecar.admin_url("/default/oauth2_tokens");
    let before = ids(env
        .sidecar
        .client
        .get(&list_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap());
    let body = json!({"client_id": "clientid", "client_secret": "clientsecret",
                      "grant_type": "refresh_token", "refresh_token": first["refresh_token"]});
    let (status, second) = post(&env.sidecar, "/event/oauth2/token", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    let after = ids(env
        .sidecar
        .client
        .get(&list_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap());
    assert_eq!(before, after, "the record keeps its id");
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", first["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    assert_eq!(post(&env.sidecar, "/event/oauth2/token", body).await.0, 200);
}

const SECOND_SERVICE: &str = r#"---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata:
  name: reports
spec:
  upstream:
    port: UPSTREAM
  routes:
  - pathPrefix: /reports
    stripPath: false
  oauth2:
    enablePasswordGrant: true
    GLOBAL
    provisionKeySecretRef:
      name: sampleirisservice-provision-key
"#;

async fn global_credentials_cross_services_and_local_ones_do_not(store: Store) {
    let upstream_port_placeholder = "UPSTREAM";
    let upstream = Upstream::start().await;
    let global = SECOND_SERVICE
        .replace(upstream_port_placeholder, &upstream.port.to_string())
        .replace("GLOBAL", "globalCredentials: true");
    let manifests = article_manifests(
        upstream.port,
        "enablePasswordGrant: true\nglobalCredentials: true",
    ) + &global
        + &SECOND_SERVICE
            .replace(upstream_port_placeholder, &upstream.port.to_string())
            .replace("GLOBAL", "hideCredentials: false")
            .replace("name: reports", "name: local")
            .replace("/reports", "/local");
    let redis = (store == Store::Redis).then(crate::harness::RedisServer::start);
    let mut builder = SidecarBuilder::new(manifests);
    if let Some(redis) = &redis {
        builder = builder.redis(&redis.url());
    }
    let sidecar = builder.start().await;
    let token = sidecar.password_grant().await;
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(
        sidecar.get_with_token("/event/1", access).await.status(),
        200
    );
    assert_eq!(
        sidecar.get_with_token("/reports/1", access).await.status(),
        200,
        "global on global"
    );
    let response = sidecar.get_with_token("/local/1", access).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        error(
            "invalid_token",
            "The access token is global, but the current plugin is configured without 'global_credentials'"
        )
    );
    // A local token of /local is refused on /event.
    let (_, local) = post(
        &sidecar,
        "/local/oauth2/token",
        json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
               "provision_key": "provisionkey", "authenticated_userid": "1"}),
    )
    .await;
    assert_eq!(
        sidecar
            .get_with_token("/event/1", local["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    assert_eq!(
        sidecar
            .get_with_token("/local/1", local["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

const GUEST: &str = r#"---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: guest
spec:
  username: Guest
"#;

async fn anonymous_consumer_lets_tokenless_requests_through(store: Store) {
    let env = with(store, "enablePasswordGrant: true\nanonymous: guest", GUEST).await;
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-anonymous-consumer"), Some("true"));
    assert_eq!(seen.header("x-consumer-username"), Some("Guest"));
    assert_eq!(seen.header("x-authenticated-userid"), None);
    // A valid token still authenticates as its own consumer.
    let token = env.sidecar.password_grant().await;
    env.sidecar
        .get_with_token("/event/1", token["access_token"].as_str().unwrap())
        .await;
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-anonymous-consumer"), None);
}

async fn missing_anonymous_consumer_is_500(store: Store) {
    let env = env(store, "enablePasswordGrant: true\nanonymous: ghost").await;
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("ghost"),
        "{body}"
    );
    assert_eq!(env.upstream.count(), 0);
}

async fn custom_auth_header_carries_bearer_and_basic(store: Store) {
    let env = env(
        store,
        "enablePasswordGrant: true\nauthHeaderName: X-Api-Auth",
    )
    .await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/token"))
        .header("x-api-auth", "Basic Y2xpZW50aWQ6Y2xpZW50c2VjcmV0")
        .json(&json!({"grant_type": "password", "provision_key": "provisionkey", "authenticated_userid": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token: Value = response.json().await.unwrap();
    let access = token["access_token"].as_str().unwrap();
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .header("x-api-auth", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // `Authorization` is now just another header, forwarded untouched.
    let response = env.sidecar.get_with_token("/event/1", access).await;
    assert_eq!(response.status(), 401);
}

async fn hide_credentials_leaves_multipart_bodies_intact(store: Store) {
    let env = env(store, "enablePasswordGrant: true\nhideCredentials: true").await;
    let token = env.sidecar.password_grant().await;
    let access = token["access_token"].as_str().unwrap();
    let body = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--b--\r\n".to_string();
    let response = env
        .sidecar
        .client
        .post(
            env.sidecar
                .url(&format!("/event/echo-body?access_token={access}")),
        )
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    assert_eq!(seen.body, body);
    assert_eq!(seen.path_and_query, "/event/echo-body");
}

async fn plain_http_is_refused_unless_terminated_by_a_trusted_proxy(store: Store) {
    let upstream = Upstream::start().await;
    let manifests = article_manifests(
        upstream.port,
        "enablePasswordGrant: true\nacceptHttpIfAlreadyTerminated: true",
    ) + &SECOND_SERVICE
        .replace("UPSTREAM", &upstream.port.to_string())
        .replace("GLOBAL", "hideCredentials: false");
    let redis = (store == Store::Redis).then(crate::harness::RedisServer::start);
    let mut builder = SidecarBuilder::new(manifests).listen_http();
    if let Some(redis) = &redis {
        builder = builder.redis(&redis.url());
    }
    let sidecar = builder.start().await;
    let http = sidecar.http.unwrap();
    let plain = reqwest::Client::new();
    let body = json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
                      "provision_key": "provisionkey", "authenticated_userid": "1"});
    let url = |path: &str| format!("http://{http}{path}");
    let send = |path: &'static str, protos: Vec<&'static str>| {
        let mut request = plain.post(url(path)).json(&body);
        for p in protos {
            request = request.header("x-forwarded-proto", p);
        }
        request.send()
    };
    let response = send("/event/oauth2/token", vec![]).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        error("access_denied", "You must use HTTPS")
    );
    let response = send("/event/oauth2/token", vec!["https", "https"])
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        error("access_denied", "Only one X-Forwarded-Proto header allowed")
    );
    let response = send("/event/oauth2/token", vec!["https"]).await.unwrap();
    assert_eq!(response.status(), 200);
    // The other service does not accept terminated HTTP.
    let response = send("/reports/oauth2/token", vec!["https"]).await.unwrap();
    assert_eq!(response.status(), 400);
}

async fn introspection_describes_active_tokens_only(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let token = env.sidecar.password_grant().await;
    let introspect = |t: &Value, creds: (&str, &str)| {
        env.sidecar
            .client
            .post(env.sidecar.url("/event/oauth2/introspect"))
            .basic_auth(creds.0, Some(creds.1))
            .form(&[("token", t.as_str().unwrap())])
            .send()
    };
    let response = introspect(&token["access_token"], ("clientid", "clientsecret"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "clientid");
    assert_eq!(body["sub"], "1");
    assert_eq!(body["username"], "ClientApp");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        body["exp"].as_u64().unwrap() - body["iat"].as_u64().unwrap(),
        7200
    );
    let body: Value = introspect(&token["refresh_token"], ("clientid", "clientsecret"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");
    let body: Value = introspect(&json!("nonsense"), ("clientid", "clientsecret"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"active": false}));
    let response = introspect(&token["access_token"], ("clientid", "wrong"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

async fn revocation_of_a_refresh_token_revokes_its_access_token(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    let token = env.sidecar.password_grant().await;
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/oauth2/revoke"))
        .form(&[
            ("token", token["refresh_token"].as_str().unwrap()),
            ("client_id", "clientid"),
            ("client_secret", "clientsecret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", token["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
    let (status, _) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "refresh_token",
               "refresh_token": token["refresh_token"]}),
    )
    .await;
    assert_eq!(status, 400);
}

/// (stricter than Kong: RFC 7009 §2.1) A token of another client is refused and stays valid,
/// whether the caller is a confidential client or a public one; an unknown token gets 200.
async fn revocation_refuses_other_clients_tokens(store: Store) {
    let other = PUBLIC_APP
        .replace("spa-client", "otherid")
        .replace("name: spa", "name: other")
        .replace(
            "clientType: public",
            "clientSecretRef:\n    name: sampleapp-secret",
        );
    let env = with(store, ALL_GRANTS, &(other + PUBLIC_APP)).await;
    let token = env.sidecar.password_grant().await;
    let revoke = |form: Vec<(&'static str, String)>| {
        env.sidecar
            .client
            .post(env.sidecar.url("/event/oauth2/revoke"))
            .form(&form)
            .send()
    };
    let callers = [
        vec![
            ("client_id", "otherid".to_owned()),
            ("client_secret", "clientsecret".to_owned()),
        ],
        vec![("client_id", "spa-client".to_owned())],
    ];
    for caller in callers {
        for presented in ["access_token", "refresh_token"] {
            let mut form = caller.clone();
            form.push(("token", token[presented].as_str().unwrap().to_owned()));
            let response = revoke(form).await.unwrap();
            assert_eq!(
                response.status(),
                400,
                "{caller:?} revoking the {presented}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body,
                error("invalid_grant", "The token was issued to another client")
            );
        }
    }
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", token["access_token"].as_str().unwrap())
            .await
            .status(),
        200,
        "the token still works"
    );
    let (status, _) = refresh_with(&env.sidecar, &token["refresh_token"]).await;
    assert_eq!(status, 200, "and so does its refresh token");

    let unknown = vec![
        ("token", "an-unknown-token".to_owned()),
        ("client_id", "otherid".to_owned()),
        ("client_secret", "clientsecret".to_owned()),
    ];
    assert_eq!(
        revoke(unknown).await.unwrap().status(),
        200,
        "RFC 7009 §2.2"
    );
}

/// (stricter than Kong: RFC 6749 §4.4) A public client, which anyone can name, gets no token
/// from the client credentials grant, and Redis gets no record.
async fn client_credentials_is_refused_to_public_clients(store: Store) {
    let env = with(store, ALL_GRANTS, PUBLIC_APP).await;
    for _ in 0..3 {
        let (status, body) = post(
            &env.sidecar,
            "/event/oauth2/token",
            json!({"grant_type": "client_credentials", "client_id": "spa-client"}),
        )
        .await;
        assert_eq!(
            (status, body),
            (
                400,
                error(
                    "unauthorized_client",
                    "The client_credentials grant is only for confidential clients"
                )
            )
        );
    }
    if let Some(redis) = &env.redis {
        assert_eq!(redis.keys(), Vec::<String>::new(), "no record was written");
    }
    // A confidential client still gets its token.
    let (status, _) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"grant_type": "client_credentials", "client_id": "clientid", "client_secret": "clientsecret"}),
    )
    .await;
    assert_eq!(status, 200);
}

/// (stricter than Kong: RFC 7662 §2.1) Introspection takes a confidential client's secret. A
/// public client's id alone learns nothing of another client's token.
async fn introspection_needs_a_confidential_client(store: Store) {
    let env = with(store, ALL_GRANTS, PUBLIC_APP).await;
    let token = env.sidecar.password_grant().await;
    let access = token["access_token"].as_str().unwrap();
    let introspect = |form: Vec<(&str, &str)>, basic: Option<(&str, Option<&str>)>| {
        let mut request = env
            .sidecar
            .client
            .post(env.sidecar.url("/event/oauth2/introspect"))
            .form(&form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, secret);
        }
        request.send()
    };
    let refused = [
        (vec![("token", access), ("client_id", "spa-client")], None),
        (vec![("token", access)], Some(("spa-client", None))),
        (vec![("token", access)], Some(("spa-client", Some("")))),
        (vec![("token", access), ("client_id", "clientid")], None),
        (
            vec![
                ("token", access),
                ("client_id", "clientid"),
                ("client_secret", "wrong"),
            ],
            None,
        ),
        (vec![("token", access)], None),
    ];
    for (form, basic) in refused {
        let what = format!("{form:?} {basic:?}");
        let response = introspect(form, basic).await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"OAuth2.0\""),
            "{what}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            error("invalid_client", "Invalid client authentication"),
            "{what}"
        );
    }
    let response = introspect(
        vec![("token", access)],
        Some(("clientid", Some("clientsecret"))),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!((&body["active"], &body["sub"]), (&json!(true), &json!("1")));
}

/// The document names the configured issuer, whatever Host the request carries.
async fn metadata_describes_the_route(store: Store) {
    let env = env(
        store,
        "enableAuthorizationCode: true\nenableClientCredentials: true\nscopes: [read]\n\
         issuer: https://iris.example.com/event/",
    )
    .await;
    for path in [
        "/event/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/event",
    ] {
        let response = env
            .sidecar
            .client
            .get(env.sidecar.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        let base = "https://iris.example.com/event";
        assert_eq!(body["issuer"], base);
        assert_eq!(body["token_endpoint"], format!("{base}/oauth2/token"));
        assert_eq!(
            body["authorization_endpoint"],
            format!("{base}/oauth2/authorize")
        );
        assert_eq!(
            body["introspection_endpoint"],
            format!("{base}/oauth2/introspect")
        );
        assert_eq!(body["revocation_endpoint"], format!("{base}/oauth2/revoke"));
        assert_eq!(
            body["grant_types_supported"],
            json!(["authorization_code", "client_credentials", "refresh_token"])
        );
        assert_eq!(body["response_types_supported"], json!(["code"]));
        assert_eq!(body["scopes_supported"], json!(["read"]));
        assert_eq!(body["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            body["introspection_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post"])
        );
    }
    let (status, body) = metadata_with_host(&env.sidecar, "evil.example").await;
    assert_eq!(status, 200);
    assert!(!body.contains("evil"), "{body}");
    assert!(
        body.contains("\"issuer\":\"https://iris.example.com/event\""),
        "{body}"
    );
    assert_eq!(env.upstream.count(), 0);
}

/// (stricter than Kong's peers) With no `spec.oauth2.issuer`, no document: one built from the
/// request's Host would name whatever endpoints a client put there.
async fn metadata_without_an_issuer_is_404_whatever_the_host(store: Store) {
    let env = env(store, ALL_GRANTS).await;
    for host in ["evil.example", "localhost"] {
        let (status, body) = metadata_with_host(&env.sidecar, host).await;
        assert_eq!(status, 404, "{body}");
        assert!(!body.contains("evil"), "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["message"],
            "No authorization server metadata: the OAuthService sets no spec.oauth2.issuer"
        );
    }
    let response = env
        .sidecar
        .client
        .get(
            env.sidecar
                .url("/event/.well-known/oauth-authorization-server"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(env.upstream.count(), 0);
}

/// `GET /.well-known/oauth-authorization-server/event` over HTTP/1.1 with this `Host`.
async fn metadata_with_host(sidecar: &Sidecar, host: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let mut connection = sidecar.http1_connection().await;
    let request = http::Request::builder()
        .uri("/.well-known/oauth-authorization-server/event")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    connection.ready().await.unwrap();
    let response = connection.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn allowed_grants_and_scopes_limit_an_application(store: Store) {
    let limited = PUBLIC_APP
        .replace("spa-client", "limited")
        .replace("name: spa", "name: limited")
        .replace(
            "clientType: public",
            "clientSecretRef:\n    name: sampleapp-secret\n  allowedGrants: [client_credentials]\n  allowedScopes: [read]",
        );
    let env = with(
        store,
        "enablePasswordGrant: true\nenableClientCredentials: true\nscopes: [read, write]",
        &limited,
    )
    .await;
    let (status, body) = post(
        &env.sidecar,
        "/event/oauth2/token",
        json!({"client_id": "limited", "client_secret": "clientsecret", "grant_type": "password",
               "provision_key": "provisionkey", "authenticated_userid": "1"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unauthorized_client");
    let cc = |scope: &str| json!({"client_id": "limited", "client_secret": "clientsecret", "grant_type": "client_credentials", "scope": scope});
    let (status, body) = post(&env.sidecar, "/event/oauth2/token", cc("write")).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_scope", "\"write\" is an invalid scope"))
    );
    assert_eq!(
        post(&env.sidecar, "/event/oauth2/token", cc("read"))
            .await
            .0,
        200
    );
}

async fn refresh_with(sidecar: &Sidecar, refresh: &Value) -> (u16, Value) {
    post(
        sidecar,
        "/event/oauth2/token",
        json!({"client_id": "clientid", "client_secret": "clientsecret",
               "grant_type": "refresh_token", "refresh_token": refresh}),
    )
    .await
}

async fn a_reused_refresh_token_revokes_its_whole_chain(store: Store) {
    let env = env(store, "enablePasswordGrant: true").await;
    let first = env.sidecar.password_grant().await;
    let (_, second) = refresh_with(&env.sidecar, &first["refresh_token"]).await;
    let (status, third) = refresh_with(&env.sidecar, &second["refresh_token"]).await;
    assert_eq!(status, 200);
    let unrelated = env.sidecar.password_grant().await;
    // The first refresh token again: a stolen copy, or a replay.
    let (status, body) = refresh_with(&env.sidecar, &first["refresh_token"]).await;
    assert_eq!(
        (status, body),
        (400, error("invalid_request", "Invalid refresh_token"))
    );
    let third_access = third["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", third_access)
            .await
            .status(),
        401
    );
    assert_eq!(
        refresh_with(&env.sidecar, &third["refresh_token"]).await.0,
        400
    );
    let unrelated_access = unrelated["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", unrelated_access)
            .await
            .status(),
        200
    );
}

async fn a_reused_refresh_token_within_the_grace_window_revokes_nothing(store: Store) {
    let env = env(
        store,
        "enablePasswordGrant: true\nrefreshTokenReuseGrace: 300",
    )
    .await;
    let first = env.sidecar.password_grant().await;
    let (_, second) = refresh_with(&env.sidecar, &first["refresh_token"]).await;
    let (status, _) = refresh_with(&env.sidecar, &first["refresh_token"]).await;
    assert_eq!(status, 400, "still spent");
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", access)
            .await
            .status(),
        200
    );
    assert_eq!(
        refresh_with(&env.sidecar, &second["refresh_token"]).await.0,
        200
    );
}

async fn bulk_revocation_by_user_client_and_service(store: Store) {
    let env = env(store, "enablePasswordGrant: true").await;
    let grant = |user: &'static str| {
        post(
            &env.sidecar,
            "/event/oauth2/token",
            json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
                   "provision_key": "provisionkey", "authenticated_userid": user}),
        )
    };
    let alice1 = grant("alice").await.1;
    let alice2 = grant("alice").await.1;
    let bob = grant("bob").await.1;
    let delete = |query: &str| {
        env.sidecar
            .client
            .delete(
                env.sidecar
                    .admin_url(&format!("/default/oauth2_tokens{query}")),
            )
            .send()
    };

    let response = delete("").await.unwrap();
    assert_eq!(response.status(), 400, "a filter is required");
    let response = delete("?authenticated_userid=alice").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": 2})
    );
    for token in [&alice1, &alice2] {
        assert_eq!(
            env.sidecar
                .get_with_token("/event/1", token["access_token"].as_str().unwrap())
                .await
                .status(),
            401
        );
    }
    let bob_access = bob["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", bob_access)
            .await
            .status(),
        200
    );

    let list: Value = env
        .sidecar
        .client
        .get(env.sidecar.admin_url("/default/oauth2_tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let service_id = list["data"][0]["service_id"].as_str().unwrap().to_owned();
    let response = delete(&format!("?service_id={service_id}")).await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": 1})
    );
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", bob_access)
            .await
            .status(),
        401
    );
    grant("carol").await;
    let response = delete("?client_id=clientid").await.unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"deleted": 1})
    );
}
