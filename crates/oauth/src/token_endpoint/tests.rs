//! The token endpoint's rules as functions: a snapshot, parameters and a clock in, Kong's
//! response out. The store is the in-memory one, the standalone product's own.

use serde_json::{Value, json};
use tollgate_api::Snapshot;
use tollgate_api::snapshot::*;
use tollgate_api::testing::snapshot as fixture;
use tollgate_store::{MemoryStore, TokenHash, TokenStore};
use uuid::Uuid;

use super::*;
use crate::Transport;

/// The store expires records from their creation time, so the rules' clock must be the
/// real one here.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The article's service, consumer and application, with the client credentials grant too,
/// edited by `edit`.
fn snapshot(edit: impl FnOnce(&mut OAuth2Settings, &mut Application)) -> Snapshot {
    let mut service = fixture::service("default", "sampleirisservice", "/event");
    service.id = Uuid::from_u128(1);
    service.oauth2.enable_client_credentials = true;
    let mut app = Application {
        id: Uuid::from_u128(2),
        ..fixture::application("default", "SampleApp", "clientapp", "clientid")
    };
    edit(&mut service.oauth2, &mut app);
    Snapshot {
        version: 1,
        services: vec![service],
        consumers: vec![Consumer {
            id: Uuid::from_u128(3),
            username: "ClientApp".into(),
            ..fixture::consumer("default", "clientapp")
        }],
        applications: vec![app],
        ..Snapshot::default()
    }
}

fn params(body: Value) -> Params {
    let mut p = Params::default();
    for (k, v) in body.as_object().unwrap() {
        p.insert(k.clone(), v.as_str().unwrap());
    }
    p
}

fn password() -> Value {
    json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "password",
           "provision_key": "provisionkey", "authenticated_userid": "1"})
}

async fn call(
    store: &MemoryStore,
    snapshot: &Snapshot,
    body: Value,
    auth: Option<&str>,
) -> (u16, Value) {
    let p = params(body);
    let response = issue_token(
        store,
        snapshot,
        &snapshot.services[0],
        TokenRequest {
            params: &p,
            auth_header: auth,
            transport: Transport::Tls,
        },
        now(),
    )
    .await;
    (
        response.status.as_u16(),
        serde_json::from_slice(&response.body).unwrap(),
    )
}

fn err(code: &str, description: &str) -> Value {
    json!({"error": code, "error_description": description})
}

#[tokio::test]
async fn plain_http_is_refused_before_anything_else() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, _| {});
    let p = params(json!({"grant_type": "nonsense"}));
    let response = issue_token(
        &store,
        &snap,
        &snap.services[0],
        TokenRequest {
            params: &p,
            auth_header: None,
            transport: Transport::Plain("You must use HTTPS"),
        },
        now(),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&response.body).unwrap(),
        err("access_denied", "You must use HTTPS")
    );
}

#[tokio::test]
async fn password_grant_issues_a_record_bound_to_the_service() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, _| {});
    let (status, body) = call(&store, &snap, password(), None).await;
    assert_eq!(status, 200);
    let access = body["access_token"].as_str().unwrap();
    let record = store
        .find_access("default", &TokenHash::of(access))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.service_id, Some(Uuid::from_u128(1)));
    assert_eq!(record.credential_id, Uuid::from_u128(2));
    assert_eq!(record.authenticated_userid.as_deref(), Some("1"));
    assert!(record.created_at.abs_diff(now()) < 60_000);
    assert_eq!(record.ttl, 1_209_600);
}

#[tokio::test]
async fn token_expiration_zero_means_no_expiry_and_no_refresh_token() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, _| c.token_expiration = 0);
    let (status, body) = call(&store, &snap, password(), None).await;
    assert_eq!(status, 200);
    assert!(body.get("expires_in").is_none(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let record = store
        .find_access(
            "default",
            &TokenHash::of(body["access_token"].as_str().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.expires_in, record.ttl), (0, 0), "kept for ever");
}

#[tokio::test]
async fn client_credentials_has_no_refresh_token_and_guards_the_userid() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, _| {});
    let cc = json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "client_credentials"});
    let (status, body) = call(&store, &snap, cc.clone(), None).await;
    assert_eq!(status, 200);
    assert!(body.get("refresh_token").is_none());
    let mut with_user = cc.clone();
    with_user["authenticated_userid"] = json!("7");
    let (status, body) = call(&store, &snap, with_user.clone(), None).await;
    assert_eq!(
        (status, body),
        (400, err("invalid_provision_key", "Invalid provision_key"))
    );
    with_user["provision_key"] = json!("provisionkey");
    let (status, _) = call(&store, &snap, with_user, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn scopes_are_checked_against_the_service_and_the_application() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, a| {
        c.scopes = vec!["read".into(), "write".into()];
        c.mandatory_scope = true;
        a.allowed_scopes = Some(vec!["read".into()]);
    });
    let (status, body) = call(&store, &snap, password(), None).await;
    assert_eq!(
        (status, body),
        (400, err("invalid_scope", "You must specify a scope"))
    );
    let mut body = password();
    body["scope"] = json!("read admin");
    let (_, e) = call(&store, &snap, body.clone(), None).await;
    assert_eq!(e, err("invalid_scope", "\"admin\" is an invalid scope"));
    body["scope"] = json!("write");
    let (_, e) = call(&store, &snap, body.clone(), None).await;
    assert_eq!(
        e,
        err("invalid_scope", "\"write\" is an invalid scope"),
        "not allowed for this app"
    );
    body["scope"] = json!("read");
    let (status, ok) = call(&store, &snap, body, None).await;
    assert_eq!(status, 200, "{ok}");
}

#[tokio::test]
async fn refresh_may_narrow_but_not_widen_the_scope() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, _| c.scopes = vec!["read".into(), "write".into()]);
    let mut body = password();
    body["scope"] = json!("read write");
    let (_, first) = call(&store, &snap, body, None).await;
    let refresh = |scope: &str, token: &Value| {
        json!({"client_id": "clientid", "client_secret": "clientsecret", "grant_type": "refresh_token",
               "refresh_token": token["refresh_token"], "scope": scope})
    };
    let (status, e) = call(&store, &snap, refresh("read admin", &first), None).await;
    assert_eq!((status, e), (400, err("invalid_scope", "Scope mismatch")));
    let (status, second) = call(&store, &snap, refresh("read", &first), None).await;
    assert_eq!(status, 200);
    let record = store
        .find_access(
            "default",
            &TokenHash::of(second["access_token"].as_str().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.scope, "read");
}

#[tokio::test]
async fn reuse_refresh_token_keeps_the_token_and_the_id() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, _| c.reuse_refresh_token = true);
    let (_, first) = call(&store, &snap, password(), None).await;
    let old = store
        .find_access(
            "default",
            &TokenHash::of(first["access_token"].as_str().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    let body = json!({"client_id": "clientid", "client_secret": "clientsecret",
                      "grant_type": "refresh_token", "refresh_token": first["refresh_token"]});
    let (status, second) = call(&store, &snap, body.clone(), None).await;
    assert_eq!(status, 200);
    assert_eq!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    let new = store
        .find_access(
            "default",
            &TokenHash::of(second["access_token"].as_str().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.id, old.id);
    let (status, _) = call(&store, &snap, body, None).await;
    assert_eq!(status, 200, "the same refresh token works again");
}

#[tokio::test]
async fn public_clients_may_not_send_a_secret() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, a| {
        a.client_type = ClientType::Public;
        a.client_secret = None;
    });
    let (status, body) = call(&store, &snap, password(), None).await;
    assert_eq!(
        (status, body),
        (
            400,
            err(
                "invalid_request",
                "client_secret is disallowed for public clients"
            )
        )
    );
}

#[tokio::test]
async fn allowed_grants_limit_an_application() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, a| a.allowed_grants = Some(vec![GrantType::ClientCredentials]));
    let (status, body) = call(&store, &snap, password(), None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unauthorized_client");
}

#[tokio::test]
async fn basic_credentials_and_a_bad_redirect_uri() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, _| {});
    let mut body = password();
    body.as_object_mut().unwrap().remove("client_id");
    body.as_object_mut().unwrap().remove("client_secret");
    // base64("clientid:clientsecret")
    let basic = "Basic Y2xpZW50aWQ6Y2xpZW50c2VjcmV0";
    let (status, _) = call(&store, &snap, body.clone(), Some(basic)).await;
    assert_eq!(status, 200);
    let (status, e) = call(&store, &snap, body.clone(), Some("Basic !!!")).await;
    assert_eq!(
        (status, e),
        (401, err("invalid_client", "Invalid client authentication"))
    );
    body["redirect_uri"] = json!("https://evil.example/cb");
    let (status, e) = call(&store, &snap, body, Some(basic)).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"], "invalid_request");
}

#[tokio::test]
async fn client_credentials_is_for_confidential_clients_only() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, a| {
        a.client_type = ClientType::Public;
        a.client_secret = None;
    });
    let body = json!({"grant_type": "client_credentials", "client_id": "clientid"});
    let (status, body) = call(&store, &snap, body, None).await;
    assert_eq!(
        (status, body),
        (
            400,
            err(
                "unauthorized_client",
                "The client_credentials grant is only for confidential clients"
            )
        )
    );
}

/// A code for the public-client snapshot's service, issued through the authorize endpoint.
async fn code_for(store: &MemoryStore, snap: &Snapshot, service: usize, challenge: &str) -> String {
    let p = params(
        json!({"provision_key": "provisionkey", "authenticated_userid": "1",
                          "client_id": "clientid", "response_type": "code",
                          "code_challenge": challenge}),
    );
    let response = crate::authorize(
        store,
        snap,
        &snap.services[service],
        crate::AuthorizeRequest {
            params: &p,
            transport: Transport::Tls,
        },
        now(),
    )
    .await;
    assert_eq!(response.status, 200);
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    let uri = body["redirect_uri"].as_str().unwrap();
    let code = uri.split_once("code=").unwrap().1;
    // Kong's url.escape writes `-` as `%2d`.
    code.replace("%2d", "-")
}

#[tokio::test]
async fn a_failed_exchange_leaves_the_code_to_the_right_one() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, _| c.enable_authorization_code = true);
    let verifier = "a".repeat(43);
    let code = code_for(&store, &snap, 0, &crate::pkce::s256(&verifier)).await;
    let exchange = |verifier: &str| {
        json!({"grant_type": "authorization_code", "client_id": "clientid",
               "client_secret": "clientsecret", "code": code, "code_verifier": verifier})
    };
    let (status, body) = call(&store, &snap, exchange(&"b".repeat(43)), None).await;
    assert_eq!((status, body), (400, err("invalid_grant", "Invalid code")));
    let (status, _) = call(&store, &snap, exchange(&verifier), None).await;
    assert_eq!(status, 200);
    let (status, body) = call(&store, &snap, exchange(&verifier), None).await;
    assert_eq!(
        (status, body),
        (400, err("invalid_request", "Invalid code"))
    );
}

#[tokio::test]
async fn a_global_code_works_only_at_the_service_that_issued_it() {
    let store = MemoryStore::new();
    let mut snap = snapshot(|c, _| {
        c.enable_authorization_code = true;
        c.global_credentials = true;
    });
    let mut other = snap.services[0].clone();
    other.id = Uuid::from_u128(9);
    other.name = "other".into();
    snap.services.push(other);
    let verifier = "a".repeat(43);
    let code = code_for(&store, &snap, 0, &crate::pkce::s256(&verifier)).await;
    let p = params(
        json!({"grant_type": "authorization_code", "client_id": "clientid",
                          "client_secret": "clientsecret", "code": code,
                          "code_verifier": verifier}),
    );
    let at = |service: usize| {
        issue_token(
            &store,
            &snap,
            &snap.services[service],
            TokenRequest {
                params: &p,
                auth_header: None,
                transport: Transport::Tls,
            },
            now(),
        )
    };
    let response = at(1).await;
    assert_eq!(response.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&response.body).unwrap(),
        err("invalid_request", "Invalid code")
    );
    assert_eq!(at(0).await.status, 200);
}

#[tokio::test]
async fn a_refresh_where_the_service_lacks_the_tokens_scope_is_a_mismatch() {
    let store = MemoryStore::new();
    let mut snap = snapshot(|c, _| {
        c.global_credentials = true;
        c.scopes = vec!["read".into()];
    });
    let mut body = password();
    body["scope"] = json!("read");
    let (_, first) = call(&store, &snap, body, None).await;
    snap.services[0].oauth2.scopes = vec!["write".into()];
    let refresh = json!({"client_id": "clientid", "client_secret": "clientsecret",
                         "grant_type": "refresh_token", "refresh_token": first["refresh_token"]});
    let (status, body) = call(&store, &snap, refresh, None).await;
    assert_eq!(
        (status, body),
        (400, err("invalid_scope", "Scope mismatch"))
    );
}

#[tokio::test]
async fn the_password_grant_needs_redirect_uris() {
    let store = MemoryStore::new();
    let snap = snapshot(|_, a| a.redirect_uris.clear());
    let (status, body) = call(&store, &snap, password(), None).await;
    assert_eq!(
        (status, body),
        (400, err("invalid_client", "Invalid client authentication"))
    );
    let cc = json!({"client_id": "clientid", "client_secret": "clientsecret",
                    "grant_type": "client_credentials"});
    let (status, _) = call(&store, &snap, cc, None).await;
    assert_eq!(status, 200, "client_credentials needs none");
}

#[tokio::test]
async fn a_public_client_may_send_basic_with_its_id_alone_or_blanks() {
    use base64::Engine as _;
    let store = MemoryStore::new();
    let snap = snapshot(|c, a| {
        c.enable_client_credentials = false;
        a.client_type = ClientType::Public;
        a.client_secret = None;
    });
    let mut body = password();
    body.as_object_mut().unwrap().remove("client_id");
    body.as_object_mut().unwrap().remove("client_secret");
    for credentials in ["clientid", "clientid:", "clientid:    ", "clientid:\t"] {
        let basic = format!("Basic {}", STANDARD.encode(credentials));
        let (status, body) = call(&store, &snap, body.clone(), Some(&basic)).await;
        assert_eq!(status, 200, "{credentials:?}: {body}");
    }
    let basic = format!("Basic {}", STANDARD.encode("clientid:s"));
    let (status, e) = call(&store, &snap, body.clone(), Some(&basic)).await;
    assert_eq!(
        (status, e),
        (
            400,
            err(
                "invalid_request",
                "client_secret is disallowed for public clients"
            )
        )
    );
}

#[tokio::test]
async fn verifiers_that_are_empty_or_not_strings() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, _| c.enable_authorization_code = true);
    let code = code_for(&store, &snap, 0, "abc123").await;
    let base = json!({"grant_type": "authorization_code", "client_id": "clientid",
                      "client_secret": "clientsecret", "code": code});
    let mut empty = base.clone();
    empty["code_verifier"] = json!("");
    let (status, body) = call(&store, &snap, empty, None).await;
    assert_eq!(
        (status, body),
        (
            400,
            err(
                "invalid_request",
                "code_verifier must be between 43 and 128 characters"
            )
        )
    );
    let mut number = base.to_string();
    number.pop();
    number.push_str(r#","code_verifier":12}"#);
    let p = Params::parse(None, Some("application/json"), number.into())
        .await
        .unwrap();
    let response = issue_token(
        &store,
        &snap,
        &snap.services[0],
        TokenRequest {
            params: &p,
            auth_header: None,
            transport: Transport::Tls,
        },
        now(),
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&response.body).unwrap(),
        err("invalid_request", "code_verifier is not a string")
    );
}

// 03-access_spec.lua:2914: a code from before codes recorded their issuing service still
// works, as Kong lets a code without its plugin id pass.
#[tokio::test]
async fn a_code_without_its_issuer_is_an_old_code_and_passes() {
    let store = MemoryStore::new();
    let snap = snapshot(|c, _| {
        c.enable_authorization_code = true;
        c.global_credentials = true;
    });
    let payload = json!({"credential_id": Uuid::from_u128(2), "service_id": null,
                         "authenticated_userid": "1", "scope": ""});
    store
        .put_code(
            "default",
            &TokenHash::of("old"),
            payload.to_string().as_bytes(),
            300,
        )
        .await
        .unwrap();
    let body = json!({"grant_type": "authorization_code", "client_id": "clientid",
                      "client_secret": "clientsecret", "code": "old"});
    let (status, body) = call(&store, &snap, body, None).await;
    assert_eq!(status, 200, "{body}");
}
