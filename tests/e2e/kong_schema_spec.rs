//! Kong's `spec/03-plugins/25-oauth2/01-schema_spec.lua` ported: the plugin's schema is the
//! OAuthService's `spec.oauth2`, checked by the CRD (what `kubectl apply` refuses) and by the
//! standalone loader (a bad manifest is one message naming it, and exit 64); the token
//! entity's schema is the admin API's import.
//!
//! Not ported: 01-schema_spec.lua:157-184 (the ids of an authorization code as Kong's DAO
//! validates them): codes have no admin API in tollgate, only the authorize endpoint makes
//! them.

use serde_json::{Value, json};

use crate::harness::{
    Sidecar, SidecarBuilder, Store, Upstream, article_manifests, env, eventually,
};
use crate::kong_spec::{
    Fleet, PROPAGATION, authorize_error, exchange, post, provision_code, refused, status_and_body,
    status_with,
};

crate::both_stores!(
    refresh_tokens_are_not_reused_by_default,
    token_ids_must_be_uuids_of_existing_objects,
    deleting_a_service_voids_its_tokens_and_codes,
    a_standalone_sidecar_deletes_a_deleted_services_tokens,
);

async fn start(oauth2: &str) -> (Sidecar, Upstream) {
    let upstream = Upstream::start().await;
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, oauth2))
        .start()
        .await;
    (sidecar, upstream)
}

async fn authorize(sidecar: &Sidecar, scope: Option<&str>) -> (u16, Value) {
    let mut body = json!({"provision_key": "provisionkey", "client_id": "clientid",
                          "response_type": "code", "authenticated_userid": "1"});
    if let Some(scope) = scope {
        body["scope"] = scope.into();
    }
    post(
        &sidecar.client,
        &sidecar.url("/event/oauth2/authorize"),
        &body,
    )
    .await
}

async fn password_grant(sidecar: &Sidecar, provision_key: &str) -> (u16, Value) {
    let body = json!({"client_id": "clientid", "client_secret": "clientsecret",
                      "grant_type": "password", "provision_key": provision_key,
                      "authenticated_userid": "1"});
    post(&sidecar.client, &sidecar.url("/event/oauth2/token"), &body).await
}

/// The `spec.oauth2` schema of the OAuthService CRD.
#[cfg(feature = "control-plane")]
fn oauth2_schema() -> Value {
    crate::kong_spec::crd_schema("OAuthService")["properties"]["spec"]["properties"]["oauth2"]
        .clone()
}

/// The messages of the CEL rules on `spec.oauth2`.
#[cfg(feature = "control-plane")]
fn oauth2_rules() -> Vec<String> {
    oauth2_schema()["x-kubernetes-validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["message"].as_str().unwrap().to_owned())
        .collect()
}

/// 01-schema_spec.lua:31: no `scopes` needed while `mandatory_scope` is false; 01:36: both
/// given is valid; 01:107: `mandatory_scope` without `scopes` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_required_only_with_mandatory_scope() {
    let (sidecar, _upstream) = start("enableAuthorizationCode: true\nmandatoryScope: false").await;
    let (status, body) = authorize(&sidecar, None).await;
    assert_eq!(status, 200, "{body}");
    drop(sidecar);

    let (sidecar, _upstream) =
        start("enableAuthorizationCode: true\nmandatoryScope: true\nscopes: [email, info]").await;
    let (status, body) = authorize(&sidecar, Some("email")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = authorize(&sidecar, None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        authorize_error(&body).as_deref(),
        Some("invalid_scope"),
        "{body}"
    );
    drop(sidecar);

    let message = refused(&article_manifests(
        1,
        "enableAuthorizationCode: true\nmandatoryScope: true",
    ));
    assert!(
        message.contains("OAuthService default/sampleirisservice: mandatoryScope is true but no scopes are listed"),
        "{message}"
    );
    #[cfg(feature = "control-plane")]
    assert!(
        oauth2_rules().contains(&"mandatoryScope requires a non-empty scopes list".to_owned()),
        "{:?}",
        oauth2_rules()
    );
}

/// 01-schema_spec.lua:41: Kong makes a provision key when none is given; tollgate reads it
/// from a Secret and never makes one, so a service without one is refused. 01:48: the key
/// given is the one the endpoints take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provision_key_is_the_one_given() {
    let without = article_manifests(1, "").replace(
        "    provisionKeySecretRef:\n      name: sampleirisservice-provision-key\n",
        "",
    );
    let message = refused(&without);
    assert!(
        message.contains("spec.oauth2.provisionKeySecretRef: missing field"),
        "{message}"
    );
    #[cfg(feature = "control-plane")]
    assert!(
        oauth2_schema()["required"]
            .as_array()
            .unwrap()
            .contains(&"provisionKeySecretRef".into())
    );

    let upstream = Upstream::start().await;
    let hello = article_manifests(upstream.port, "")
        .replace("  provisionKey: provisionkey\n", "  provisionKey: hello\n");
    let sidecar = SidecarBuilder::new(hello).start().await;
    let (status, body) = password_grant(&sidecar, "hello").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = password_grant(&sidecar, "provisionkey").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_provision_key");
    assert!(!sidecar.logs().contains("hello\""), "the key is not logged");
}

/// 01-schema_spec.lua:55: `auth_header_name` is `authorization` unless given; 01:65: a given
/// one (`custom_header_name`) is where the token is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_header_name_defaults_to_authorization() {
    let (sidecar, _upstream) = start("").await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sidecar.get_with_token("/event/1", &token).await.status(),
        200
    );
    #[cfg(feature = "control-plane")]
    assert_eq!(
        oauth2_schema()["properties"]["authHeaderName"]["default"],
        "authorization"
    );
    drop(sidecar);

    let (sidecar, _upstream) =
        start("enablePasswordGrant: true\nauthHeaderName: custom_header_name").await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = sidecar
        .client
        .get(sidecar.url("/event/1"))
        .header("custom_header_name", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        sidecar.get_with_token("/event/1", &token).await.status(),
        401
    );
}

/// 01-schema_spec.lua:76: `refresh_token_ttl` is 1209600 s unless given: the CRD's default,
/// and the lifetime of a token's record in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_ttl_defaults_to_two_weeks() {
    #[cfg(feature = "control-plane")]
    assert_eq!(
        oauth2_schema()["properties"]["refreshTokenTtl"]["default"],
        1_209_600
    );
    let env = env(Store::Redis, "").await;
    env.sidecar.password_grant().await;
    let redis = env.redis.as_ref().unwrap();
    let records: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|k| k.contains(":tok:"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let ttl = redis.command(&["TTL", &records[0]]).as_integer().unwrap();
    assert!((1_209_600 - 60..=1_209_600).contains(&ttl), "TTL {ttl}");
}

/// 01-schema_spec.lua:83: a `refresh_token_ttl` over Kong's bound (100000000 s) is refused.
#[test]
fn refresh_token_ttl_past_kongs_bound_is_refused() {
    let message = refused(&article_manifests(1, "refreshTokenTtl: 252979200"));
    assert!(
        message.contains("refreshTokenTtl 252979200 is larger than 100000000"),
        "{message}"
    );
    #[cfg(feature = "control-plane")]
    assert_eq!(
        oauth2_schema()["properties"]["refreshTokenTtl"]["maximum"],
        100_000_000.0
    );
}

/// 01-schema_spec.lua:91: `reuse_refresh_token` is false unless given: a refresh issues a new
/// refresh token, and the old one is refused.
async fn refresh_tokens_are_not_reused_by_default(store: Store) {
    #[cfg(feature = "control-plane")]
    assert_eq!(
        oauth2_schema()["properties"]["reuseRefreshToken"]["default"],
        false
    );
    let env = env(store, "").await;
    let first = env.sidecar.password_grant().await;
    let refresh = |token: &Value| {
        json!({"client_id": "clientid", "client_secret": "clientsecret",
               "grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    };
    let url = env.sidecar.url("/event/oauth2/token");
    let (status, second) = post(&env.sidecar.client, &url, &refresh(&first)).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let (status, body) = post(&env.sidecar.client, &url, &refresh(&first)).await;
    assert_eq!(status, 400, "{body}");
}

/// 01-schema_spec.lua:100: at least one grant must be enabled.
#[test]
fn at_least_one_grant_is_required() {
    let message = refused(&article_manifests(1, "enablePasswordGrant: false"));
    assert!(
        message.contains("OAuthService default/sampleirisservice: no grant is enabled: set at least one of enableAuthorizationCode, enableImplicitGrant, enableClientCredentials or enablePasswordGrant"),
        "{message}"
    );
    #[cfg(feature = "control-plane")]
    assert!(
        oauth2_rules()
            .iter()
            .any(|m| m.starts_with("no grant is enabled")),
        "{:?}",
        oauth2_rules()
    );
}

/// 01-schema_spec.lua:113: a token's credential and service are UUIDs, or it is refused naming
/// the field; well-formed ones are accepted. tollgate also refuses ids that name no
/// OAuthApplication or OAuthService of the namespace, which Kong's schema does not check.
async fn token_ids_must_be_uuids_of_existing_objects(store: Store) {
    let env = env(store, "").await;
    env.sidecar.password_grant().await;
    let tokens = env.sidecar.admin_url("/default/oauth2_tokens");
    let issued = &listing(&env.sidecar, "").await[0];
    let import = |credential: &Value, service: &Value| {
        json!({"access_token": "imported-token-0001", "credential": {"id": credential},
               "service": {"id": service}, "expires_in": 1, "token_type": "bearer"})
    };
    let random = json!("5e1f9a8c-3b0d-4f7e-9c2a-6d8b1e0f4a37");
    for (body, field) in [
        (import(&json!("foo"), &json!("bar")), "credential.id"),
        (import(&json!("foo"), &random), "credential.id"),
        (
            import(&issued["credential_id"], &json!("bar")),
            "service.id",
        ),
    ] {
        let (status, answer) = post(&env.sidecar.client, &tokens, &body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
        assert!(message.contains("UUID"), "{message}");
    }
    let (status, answer) = post(&env.sidecar.client, &tokens, &import(&random, &random)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("no OAuthApplication"),
        "{answer}"
    );
    let body = import(&issued["credential_id"], &issued["service_id"]);
    let (status, answer) = post(&env.sidecar.client, &tokens, &body).await;
    assert_eq!(status, 201, "{answer}");
}

/// 01-schema_spec.lua:186: deleting a service deletes its tokens and codes in Kong. In tollgate
/// they are refused from the moment the service is gone: a token or code of the deleted
/// service is no good at the service that takes its route. Under the controller they stay in
/// the store, listed, until they expire or a bulk revocation by `service_id` removes them.
async fn deleting_a_service_voids_its_tokens_and_codes(store: Store) {
    let upstream = Upstream::start().await;
    let article = article_manifests(
        upstream.port,
        "enableAuthorizationCode: true\nenablePasswordGrant: true",
    );
    let fleet = Fleet::start(store, &article).await;
    let sidecar = &fleet.sidecar;
    let token = access_token(sidecar).await;
    let code = provision_code(sidecar, "clientid").await.unwrap();
    assert_eq!(status_with(sidecar, &token).await, 200);
    let listed = listing(sidecar, "").await;
    let old_service = listed[0]["service_id"].as_str().unwrap().to_owned();

    // The service is deleted, and another one takes its route.
    let replaced = article.replace("name: sampleirisservice\nspec:", "name: successor\nspec:");
    assert_ne!(replaced, article);
    fleet.apply(&replaced);
    eventually(
        PROPAGATION,
        "the old service's token is refused",
        || async { status_with(sidecar, &token).await == 401 },
    )
    .await;
    let (status, body) = exchange(sidecar, &code, "clientid", "clientsecret").await;
    assert_eq!(status, 400, "{body}");
    let new_token = access_token(sidecar).await;
    assert_eq!(status_with(sidecar, &new_token).await, 200);

    // The old token is still listed, under the old service, until revoked in bulk.
    let query = format!("?service_id={old_service}");
    assert_eq!(listing(sidecar, &query).await.len(), 1);
    let response = sidecar
        .client
        .delete(sidecar.admin_url(&format!("/default/oauth2_tokens{query}")))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(response).await;
    assert_eq!((status, body), (200, json!({"deleted": 1})));
    assert!(listing(sidecar, &query).await.is_empty());
    assert_eq!(status_with(sidecar, &new_token).await, 200);
}

/// 01-schema_spec.lua:186 on a standalone sidecar, which reads its changed manifests: the
/// deleted service's tokens are refused and, as in Kong, deleted.
async fn a_standalone_sidecar_deletes_a_deleted_services_tokens(store: Store) {
    let env = env(store, "").await;
    let sidecar = &env.sidecar;
    let token = access_token(sidecar).await;
    let old_service = listing(sidecar, "").await[0]["service_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let article = article_manifests(env.upstream.port, "");
    let replaced = article.replace("name: sampleirisservice\nspec:", "name: successor\nspec:");
    assert_ne!(replaced, article);
    let file = sidecar.manifests_file();
    std::fs::write(file.with_extension("tmp"), &replaced).unwrap();
    std::fs::rename(file.with_extension("tmp"), &file).unwrap();
    eventually(
        PROPAGATION,
        "the old service's token is refused",
        || async { status_with(sidecar, &token).await == 401 },
    )
    .await;
    let query = format!("?service_id={old_service}");
    eventually(
        PROPAGATION,
        "the old service's token is deleted",
        || async { listing(sidecar, &query).await.is_empty() },
    )
    .await;
    let new_token = access_token(sidecar).await;
    assert_eq!(status_with(sidecar, &new_token).await, 200);
}

async fn access_token(sidecar: &Sidecar) -> String {
    sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The admin listing of the default namespace, with `query` (`?…` or empty).
async fn listing(sidecar: &Sidecar, query: &str) -> Vec<Value> {
    let url = sidecar.admin_url(&format!("/default/oauth2_tokens{query}"));
    let (status, list) = status_and_body(sidecar.client.get(url).send().await.unwrap()).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}
