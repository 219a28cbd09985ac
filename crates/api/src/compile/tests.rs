//! The compiler's rules, one resource set at a time: fake objects in, a snapshot and its
//! errors out.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::snapshot::Pkce;
use crate::testing::resources::{
    application as mk_app, consumer as mk_consumer, meta, route, secret as mk_secret,
    service as mk_service,
};

// --- fake objects ---

fn mk_data_secret(ns: &str, name: &str, key: &str, value: &[u8]) -> Secret {
    Secret {
        metadata: meta(ns, name),
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(value.to_vec()),
        )])),
        ..Default::default()
    }
}

fn created_at(mut metadata: ObjectMeta, seconds: i64) -> ObjectMeta {
    metadata.creation_timestamp = Some(Time(Timestamp::from_second(seconds).unwrap()));
    metadata
}

/// The article's objects: one service, one consumer, one application, their Secrets.
fn article() -> Resources {
    Resources {
        services: vec![mk_service("default", "sampleirisservice", &["/event"])],
        consumers: vec![mk_consumer("default", "clientapp")],
        applications: vec![mk_app("default", "sampleapp", "clientapp", "clientid")],
        secrets: vec![
            mk_secret(
                "default",
                "sampleirisservice-provision-key",
                "provisionKey",
                "provisionkey",
            ),
            mk_secret(
                "default",
                "sampleapp-secret",
                "clientSecret",
                "clientsecret",
            ),
        ],
    }
}

fn only_error(compiled: &Compiled) -> &CompileError {
    assert_eq!(compiled.errors.len(), 1, "{:#?}", compiled.errors);
    &compiled.errors[0]
}

// --- the good path ---

#[test]
fn article_compiles_with_kong_defaults() {
    let compiled = compile(&article());
    assert!(compiled.errors.is_empty(), "{:#?}", compiled.errors);
    let snapshot = &compiled.snapshot;
    assert_eq!(snapshot.version, 0);
    let service = &snapshot.services[0];
    assert_eq!(service.routes[0].path_prefix, "/event");
    assert_eq!(service.upstream.port, 52773);
    assert_eq!(service.upstream.connect_timeout_ms, 60_000);
    assert_eq!(service.upstream.read_timeout_ms, 60_000);
    assert_eq!(service.oauth2.token_expiration, 7200);
    assert_eq!(service.oauth2.refresh_token_ttl, 1_209_600);
    assert_eq!(service.oauth2.auth_header_name, "authorization");
    assert_eq!(service.oauth2.pkce, Pkce::Lax);
    assert!(service.oauth2.provision_key.matches("provisionkey"));
    let app = snapshot
        .application_by_client_id("default", "clientid")
        .unwrap();
    assert_eq!(app.name, "sampleapp");
    assert_eq!(app.consumer, "clientapp");
    assert!(app.client_secret.as_ref().unwrap().matches("clientsecret"));
    assert_eq!(
        snapshot.consumer("default", "clientapp").unwrap().username,
        "clientapp"
    );
}

#[test]
fn upstream_timeouts_are_kongs_milliseconds() {
    let mut resources = article();
    resources.services[0].spec.upstream.read_timeout = Some(500);
    resources.services[0].spec.upstream.connect_timeout = Some(2000);
    let upstream = &compile(&resources).snapshot.services[0].upstream;
    assert_eq!(upstream.read_timeout_ms, 500);
    assert_eq!(upstream.connect_timeout_ms, 2000);
}

#[test]
fn a_snapshot_from_an_older_controller_gets_kongs_default_timeouts() {
    let upstream: snapshot::Upstream =
        serde_json::from_value(serde_json::json!({"port": 52773})).unwrap();
    assert_eq!(upstream.connect_timeout_ms, 60_000);
    assert_eq!(upstream.read_timeout_ms, 60_000);
}

#[test]
fn ids_are_uids_or_stable_v5() {
    let mut resources = article();
    let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    resources.services[0].metadata.uid = Some(uid.to_owned());
    let snapshot = compile(&resources).snapshot;
    assert_eq!(snapshot.services[0].id.to_string(), uid);
    assert_eq!(
        snapshot.consumers[0].id,
        Uuid::new_v5(&TOLLGATE_NS, b"Consumer/default/clientapp")
    );
    assert_eq!(
        snapshot.applications[0].id,
        Uuid::new_v5(&TOLLGATE_NS, b"OAuthApplication/default/sampleapp")
    );
}

#[test]
fn equal_inputs_give_equal_snapshots_whatever_the_order() {
    let a = article();
    let mut b = article();
    b.secrets.reverse();
    b.services
        .push(mk_service("default", "another", &["/another"]));
    b.secrets.push(mk_secret(
        "default",
        "another-provision-key",
        "provisionKey",
        "k",
    ));
    let mut c = b.clone();
    c.services.reverse();
    assert_eq!(compile(&a).snapshot, compile(&article()).snapshot);
    let (b, c) = (compile(&b).snapshot, compile(&c).snapshot);
    assert_eq!(b, c);
    assert_eq!(
        serde_json::to_string(&b).unwrap(),
        serde_json::to_string(&c).unwrap()
    );
    let names: Vec<_> = b.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["another", "sampleirisservice"]);
}

#[test]
fn no_secret_in_clear_in_snapshot_or_errors() {
    let mut resources = article();
    // Errors of every kind next to secrets whose values must not leak.
    resources
        .applications
        .push(mk_app("default", "orphan", "nobody", "other"));
    resources
        .services
        .push(mk_service("default", "dup", &["/event"]));
    resources.secrets.push(mk_secret(
        "default",
        "dup-provision-key",
        "provisionKey",
        "dupprovisionkey",
    ));
    let compiled = compile(&resources);
    assert_eq!(compiled.errors.len(), 2);
    let everything = format!(
        "{} {:?} {:?} {}",
        serde_json::to_string(&compiled.snapshot).unwrap(),
        compiled.snapshot,
        compiled.errors,
        compiled
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<String>(),
    );
    for secret in ["clientsecret", "provisionkey", "dupprovisionkey"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}

// --- secrets ---

#[test]
fn missing_secret() {
    let mut resources = article();
    resources.secrets.remove(1);
    let compiled = compile(&resources);
    let error = only_error(&compiled);
    assert_eq!(error.reason, Reason::SecretNotFound);
    assert!(
        error.to_string().starts_with(
            "OAuthApplication default/sampleapp: Secret `sampleapp-secret` was not found in \
             namespace `default`"
        ),
        "{error}"
    );
    assert!(compiled.snapshot.applications.is_empty());
}

#[test]
fn secret_in_another_namespace_is_not_found() {
    let mut resources = article();
    resources.secrets[0].metadata.namespace = Some("other".into());
    let compiled = compile(&resources);
    assert_eq!(only_error(&compiled).reason, Reason::SecretNotFound);
    assert!(compiled.snapshot.services.is_empty());
}

#[test]
fn missing_secret_key() {
    let mut resources = article();
    resources.secrets[1] = mk_secret("default", "sampleapp-secret", "other", "x");
    let compiled = compile(&resources);
    let error = only_error(&compiled);
    assert_eq!(error.reason, Reason::SecretKeyNotFound);
    assert!(
        error
            .message
            .starts_with("Secret `sampleapp-secret` has no key `clientSecret`"),
        "{error}"
    );
}

#[test]
fn secret_data_is_read_after_string_data() {
    let mut resources = article();
    resources.secrets[1] =
        mk_data_secret("default", "sampleapp-secret", "clientSecret", b"fromdata");
    let snapshot = compile(&resources).snapshot;
    assert!(
        snapshot.applications[0]
            .client_secret
            .as_ref()
            .unwrap()
            .matches("fromdata")
    );

    let mut both = mk_secret("default", "sampleapp-secret", "clientSecret", "fromstring");
    both.data = Some(BTreeMap::from([(
        "clientSecret".to_owned(),
        ByteString(b"fromdata".to_vec()),
    )]));
    resources.secrets[1] = both;
    let snapshot = compile(&resources).snapshot;
    assert!(
        snapshot.applications[0]
            .client_secret
            .as_ref()
            .unwrap()
            .matches("fromstring")
    );
}

#[test]
fn non_utf8_or_empty_secret_is_invalid() {
    let mut resources = article();
    resources.secrets[1] =
        mk_data_secret("default", "sampleapp-secret", "clientSecret", &[0xff, 0xfe]);
    assert_eq!(only_error(&compile(&resources)).reason, Reason::Invalid);
    resources.secrets[1] = mk_secret("default", "sampleapp-secret", "clientSecret", "");
    assert_eq!(only_error(&compile(&resources)).reason, Reason::Invalid);
}

#[test]
fn secrets_get_random_salts_stable_across_recompiles() {
    let mut resources = article();
    // The provision key and the client secret hold the same value: still two salts.
    resources.secrets[1] = mk_secret("default", "sampleapp-secret", "clientSecret", "same");
    resources.secrets[0] = mk_secret(
        "default",
        "sampleirisservice-provision-key",
        "provisionKey",
        "same",
    );
    let first = compile(&resources).snapshot;
    let client_secret = first.applications[0].client_secret.as_ref().unwrap();
    let provision_key = &first.services[0].oauth2.provision_key;
    assert!(client_secret.matches("same") && provision_key.matches("same"));
    assert_ne!(client_secret.salt(), provision_key.salt());
    assert_ne!(
        client_secret.salt(),
        b"OAuthApplication/default/sampleapp".as_slice(),
        "no longer the owner's public name"
    );
    // Recompiling the same objects gives the same snapshot, byte for byte.
    let again = compile(&resources).snapshot;
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        serde_json::to_string(&first).unwrap()
    );
    // A new value gets a new salt.
    resources.secrets[1] = mk_secret("default", "sampleapp-secret", "clientSecret", "new");
    let changed = compile(&resources).snapshot;
    let new_secret = changed.applications[0].client_secret.as_ref().unwrap();
    assert!(new_secret.matches("new") && !new_secret.matches("same"));
    assert_ne!(new_secret.salt(), client_secret.salt());
}

// --- OAuthService ---

#[test]
fn service_without_grant() {
    let mut resources = article();
    resources.services[0].spec.oauth2.enable_password_grant = false;
    let compiled = compile(&resources);
    let error = only_error(&compiled);
    assert_eq!(error.reason, Reason::NoGrantEnabled);
    assert_eq!(
        error.to_string(),
        "OAuthService default/sampleirisservice: no grant is enabled: set at least one of \
         enableAuthorizationCode, enableImplicitGrant, enableClientCredentials or \
         enablePasswordGrant"
    );
    assert!(compiled.snapshot.services.is_empty());
}

#[test]
fn mandatory_scope_needs_scopes() {
    let mut resources = article();
    resources.services[0].spec.oauth2.mandatory_scope = true;
    let error = only_error(&compile(&resources)).clone();
    assert_eq!(error.reason, Reason::Invalid);
    assert!(error.message.contains("mandatoryScope"), "{error}");

    resources.services[0].spec.oauth2.scopes = Some(vec!["email".into()]);
    let compiled = compile(&resources);
    assert!(compiled.errors.is_empty());
    assert_eq!(compiled.snapshot.services[0].oauth2.scopes, ["email"]);
}

#[test]
fn refresh_token_ttl_has_kongs_bound() {
    let mut resources = article();
    resources.services[0].spec.oauth2.refresh_token_ttl = 100_000_000;
    assert!(compile(&resources).errors.is_empty());
    resources.services[0].spec.oauth2.refresh_token_ttl = 100_000_001;
    let error = only_error(&compile(&resources)).clone();
    assert_eq!(error.reason, Reason::Invalid);
    assert!(error.message.contains("refreshTokenTtl"), "{error}");
}

#[test]
fn routes_and_upstream_path_are_normalised() {
    let mut resources = article();
    let spec = &mut resources.services[0].spec;
    spec.routes[0].path_prefix = "/event/".into();
    spec.routes.push(route("/"));
    spec.routes.push(route("api/v1"));
    spec.upstream.path = Some("base/".into());
    let snapshot = compile(&resources).snapshot;
    let service = &snapshot.services[0];
    let prefixes: Vec<_> = service
        .routes
        .iter()
        .map(|r| r.path_prefix.as_str())
        .collect();
    assert_eq!(prefixes, ["/event", "/", "/api/v1"]);
    assert_eq!(service.upstream.path.as_deref(), Some("/base"));

    resources.services[0].spec.upstream.path = Some("/".into());
    let snapshot = compile(&resources).snapshot;
    assert_eq!(snapshot.services[0].upstream.path, None);
}

#[test]
fn bad_route_is_invalid() {
    for bad in [
        "/a b", "/a?x=1", "/a#b", "/a//b", "/a/../b", "/a/./b", "/%7Ea", "/a%2fb", "/a%2Fb",
        "/a\\b", "/a%", "/a%2e%2e", "/a%5Cb", "/%c3%a9",
    ] {
        let mut resources = article();
        resources.services[0].spec.routes[0].path_prefix = bad.into();
        let error = only_error(&compile(&resources)).clone();
        assert_eq!(error.reason, Reason::Invalid, "{bad}");
        assert!(
            error.message.starts_with(&format!("route `{bad}`")),
            "{error}"
        );
    }
    let mut resources = article();
    resources.services[0].spec.routes.clear();
    assert_eq!(only_error(&compile(&resources)).reason, Reason::Invalid);
}

#[test]
fn issuer_is_an_https_url_without_query_or_fragment() {
    let mut resources = article();
    assert_eq!(compile(&resources).snapshot.services[0].oauth2.issuer, None);
    resources.services[0].spec.oauth2.issuer = Some("https://IRIS.example.com/event/".into());
    let snapshot = compile(&resources).snapshot;
    assert_eq!(
        snapshot.services[0].oauth2.issuer.as_deref(),
        Some("https://iris.example.com/event")
    );
    resources.services[0].spec.oauth2.issuer = Some(String::new());
    assert_eq!(compile(&resources).snapshot.services[0].oauth2.issuer, None);
    for bad in [
        "http://iris.example.com/event",
        "iris.example.com/event",
        "https://iris.example.com/event?x=1",
        "https://iris.example.com/event#top",
        "https://user:pw@iris.example.com/event",
    ] {
        resources.services[0].spec.oauth2.issuer = Some(bad.into());
        let error = only_error(&compile(&resources)).clone();
        assert_eq!(error.reason, Reason::Invalid, "{bad}");
        assert!(error.message.starts_with("issuer "), "{error}");
        assert!(!error.message.contains("pw"), "{error}");
    }
}

#[test]
fn auth_header_name_is_lower_cased() {
    let mut resources = article();
    resources.services[0].spec.oauth2.auth_header_name = "X-Token".into();
    let snapshot = compile(&resources).snapshot;
    assert_eq!(snapshot.services[0].oauth2.auth_header_name, "x-token");
    resources.services[0].spec.oauth2.auth_header_name = "bad header".into();
    assert_eq!(only_error(&compile(&resources)).reason, Reason::Invalid);
}

#[test]
fn route_conflict_goes_to_the_younger_service() {
    let mut resources = article();
    // Another namespace still conflicts: one sidecar listener serves every route.
    let mut other = mk_service("team", "other-service", &["/event/"]);
    other.metadata = created_at(other.metadata, 1_000);
    resources.services[0].metadata = created_at(resources.services[0].metadata.clone(), 2_000);
    resources.services.push(other);
    resources.secrets.push(mk_secret(
        "team",
        "other-service-provision-key",
        "provisionKey",
        "k",
    ));

    let compiled = compile(&resources);
    let error = only_error(&compiled);
    assert_eq!(error.reason, Reason::RouteConflict);
    assert_eq!(error.name, "sampleirisservice");
    assert!(
        error
            .message
            .starts_with("route `/event` conflicts with OAuthService `team/other-service`"),
        "{error}"
    );
    assert_eq!(compiled.snapshot.services.len(), 1);
    assert_eq!(compiled.snapshot.services[0].name, "other-service");
}

#[test]
fn route_conflict_without_timestamps_goes_by_namespace_then_name() {
    let mut resources = article();
    resources
        .services
        .push(mk_service("default", "a-service", &["/event"]));
    resources.secrets.push(mk_secret(
        "default",
        "a-service-provision-key",
        "provisionKey",
        "k",
    ));
    let error = only_error(&compile(&resources)).clone();
    assert_eq!(error.name, "sampleirisservice");
    assert!(
        error.message.contains("OAuthService `default/a-service`"),
        "{error}"
    );
}

#[test]
fn a_route_listed_twice_is_invalid() {
    let mut resources = article();
    resources.services[0].spec.routes.push(route("/event/"));
    let error = only_error(&compile(&resources)).clone();
    assert_eq!(error.reason, Reason::Invalid);
    assert!(error.message.contains("listed twice"), "{error}");
}

#[test]
fn unknown_anonymous_consumer_is_not_an_error() {
    let mut resources = article();
    resources.services[0].spec.oauth2.anonymous = Some("ghost".into());
    let compiled = compile(&resources);
    assert!(compiled.errors.is_empty());
    assert_eq!(
        compiled.snapshot.services[0].oauth2.anonymous.as_deref(),
        Some("ghost")
    );
}

// --- Consumer ---

#[test]
fn consumer_username_defaults_to_name() {
    let mut resources = article();
    let mut named = mk_consumer("default", "named");
    named.spec.username = Some("ClientApp".into());
    named.spec.custom_id = Some("42".into());
    resources.consumers.push(named);
    let snapshot = compile(&resources).snapshot;
    assert_eq!(
        snapshot.consumer("default", "clientapp").unwrap().username,
        "clientapp"
    );
    let named = snapshot.consumer("default", "named").unwrap();
    assert_eq!(named.username, "ClientApp");
    assert_eq!(named.custom_id.as_deref(), Some("42"));
}

// --- OAuthApplication ---

#[test]
fn application_needs_its_consumer_in_its_namespace() {
    let mut resources = article();
    resources.consumers[0].metadata.namespace = Some("other".into());
    let compiled = compile(&resources);
    let error = only_error(&compiled);
    assert_eq!(error.reason, Reason::ConsumerNotFound);
    assert!(
        error
            .message
            .starts_with("consumer `clientapp` was not found in namespace `default`"),
        "{error}"
    );
}

#[test]
fn application_of_an_invalid_consumer_is_not_found() {
    let mut resources = article();
    resources.consumers[0].spec.username = Some(String::new());
    let compiled = compile(&resources);
    let reasons: Vec<_> = compiled.errors.iter().map(|e| (e.kind, e.reason)).collect();
    assert_eq!(
        reasons,
        [
            (CONSUMER_KIND, Reason::Invalid),
            (APPLICATION_KIND, Reason::ConsumerNotFound)
        ]
    );
}

#[test]
fn duplicate_client_id_goes_to_the_younger_application() {
    let mut resources = article();
    let mut other = mk_app("default", "other-app", "clientapp", "clientid");
    other.metadata = created_at(other.metadata, 1);
    resources.applications.push(other);
    resources.secrets.push(mk_secret(
        "default",
        "other-app-secret",
        "clientSecret",
        "s",
    ));
    // The one without a timestamp sorts first: give it a later one.
    resources.applications[0].metadata = created_at(resources.applications[0].metadata.clone(), 2);

    let compiled = compile(&resources);
    let error = only_error(&compiled);
    assert_eq!(error.reason, Reason::DuplicateClientId);
    assert_eq!(error.name, "sampleapp");
    assert!(
        error
            .message
            .starts_with("client id `clientid` is already used by OAuthApplication `other-app`"),
        "{error}"
    );
    // The same client id in another namespace is another client.
    let mut elsewhere = mk_app("team", "sampleapp", "clientapp", "clientid");
    elsewhere.metadata = created_at(elsewhere.metadata, 3);
    resources.applications.push(elsewhere);
    resources.consumers.push(mk_consumer("team", "clientapp"));
    resources
        .secrets
        .push(mk_secret("team", "sampleapp-secret", "clientSecret", "s"));
    assert_eq!(compile(&resources).errors.len(), 1);
}

#[test]
fn confidential_needs_a_secret_and_public_has_none() {
    let mut resources = article();
    resources.applications[0].spec.client_secret_ref = None;
    let error = only_error(&compile(&resources)).clone();
    assert_eq!(error.reason, Reason::Invalid);
    assert!(error.message.contains("clientSecretRef"), "{error}");

    resources.applications[0].spec.client_type = ClientType::Public;
    let compiled = compile(&resources);
    assert!(compiled.errors.is_empty());
    assert_eq!(compiled.snapshot.applications[0].client_secret, None);

    resources.applications[0].spec.client_secret_ref =
        article().applications[0].spec.client_secret_ref.clone();
    assert_eq!(only_error(&compile(&resources)).reason, Reason::Invalid);
}

#[test]
fn redirect_uris_must_be_absolute_without_fragment() {
    for bad in [
        "/callback",
        "callback",
        "https://localhost/cb#frag",
        "mailto:a@b.c",
        "",
    ] {
        let mut resources = article();
        resources.applications[0]
            .spec
            .redirect_uris
            .push(bad.into());
        let error = only_error(&compile(&resources)).clone();
        assert_eq!(error.reason, Reason::Invalid, "{bad}");
        assert!(
            error.message.starts_with(&format!("redirect URI `{bad}`")),
            "{error}"
        );
    }
    let mut resources = article();
    resources.applications[0].spec.redirect_uris = vec![
        "http://127.0.0.1:8080/cb?x=1".into(),
        "com.example.app://callback".into(),
    ];
    assert!(compile(&resources).errors.is_empty());
}

#[test]
fn application_name_defaults_to_metadata_name() {
    let mut resources = article();
    resources.applications[0].spec.name = Some("SampleApp".into());
    let snapshot = compile(&resources).snapshot;
    assert_eq!(snapshot.applications[0].name, "SampleApp");
}

#[test]
fn compile_error_display_names_kind_and_object() {
    let mut resources = article();
    resources.consumers.clear();
    let error = only_error(&compile(&resources)).clone();
    assert_eq!(
        error.to_string(),
        format!("OAuthApplication default/sampleapp: {}", error.message)
    );
    assert_eq!(error.reason.to_string(), "ConsumerNotFound");
}
