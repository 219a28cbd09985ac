//! Snapshot fixtures: what the compiler makes of the article's objects, with Kong's defaults.

use uuid::Uuid;

use super::{CLIENT_SECRET, DIGEST_ITERATIONS, PROVISION_KEY, REDIRECT_URI};
use crate::SecretDigest;
use crate::compile::TOLLGATE_NS;
use crate::snapshot::{
    Application, ClientType, Consumer, DEFAULT_AUTH_HEADER_NAME, DEFAULT_REFRESH_TOKEN_TTL,
    DEFAULT_TIMEOUT_MS, DEFAULT_TOKEN_EXPIRATION, OAuth2Settings, Pkce, Route, Service, Upstream,
};

/// The id the compiler gives an object without a uid.
fn id(kind: &str, namespace: &str, name: &str) -> Uuid {
    Uuid::new_v5(
        &TOLLGATE_NS,
        format!("{kind}/{namespace}/{name}").as_bytes(),
    )
}

/// A backend on `port` of 127.0.0.1, with Kong's timeouts.
pub fn upstream(port: u16) -> Upstream {
    Upstream {
        port,
        path: None,
        connect_timeout_ms: DEFAULT_TIMEOUT_MS,
        read_timeout_ms: DEFAULT_TIMEOUT_MS,
        drop_underscore_headers: false,
    }
}

/// A route on `path_prefix` that keeps the prefix, as the article's does.
pub fn route(path_prefix: &str) -> Route {
    Route {
        path_prefix: path_prefix.to_owned(),
        strip_path: false,
    }
}

/// Kong's defaults with the password grant, the one the article enables, and
/// [`PROVISION_KEY`].
pub fn oauth2_settings() -> OAuth2Settings {
    OAuth2Settings {
        scopes: vec![],
        mandatory_scope: false,
        provision_key: SecretDigest::with_iterations(PROVISION_KEY, DIGEST_ITERATIONS),
        token_expiration: DEFAULT_TOKEN_EXPIRATION,
        enable_authorization_code: false,
        enable_implicit_grant: false,
        enable_client_credentials: false,
        enable_password_grant: true,
        hide_credentials: false,
        accept_http_if_already_terminated: false,
        anonymous: None,
        global_credentials: false,
        auth_header_name: DEFAULT_AUTH_HEADER_NAME.to_owned(),
        refresh_token_ttl: DEFAULT_REFRESH_TOKEN_TTL,
        reuse_refresh_token: false,
        persistent_refresh_token: false,
        refresh_token_reuse_grace: 0,
        pkce: Pkce::default(),
        realm: None,
        issuer: None,
    }
}

/// A service on one route, in front of port 52773 (IRIS's web server).
pub fn service(namespace: &str, name: &str, path_prefix: &str) -> Service {
    Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        id: id("OAuthService", namespace, name),
        upstream: upstream(52773),
        routes: vec![route(path_prefix)],
        oauth2: oauth2_settings(),
        cors: None,
    }
}

/// A consumer whose username is its name.
pub fn consumer(namespace: &str, name: &str) -> Consumer {
    Consumer {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        id: id("Consumer", namespace, name),
        username: name.to_owned(),
        custom_id: None,
        tags: vec![],
    }
}

/// A confidential application of `consumer` with [`CLIENT_SECRET`] and [`REDIRECT_URI`].
pub fn application(namespace: &str, name: &str, consumer: &str, client_id: &str) -> Application {
    Application {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        id: id("OAuthApplication", namespace, name),
        consumer: consumer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: Some(SecretDigest::with_iterations(
            CLIENT_SECRET,
            DIGEST_ITERATIONS,
        )),
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        client_type: ClientType::Confidential,
        hash_secret: false,
        allowed_scopes: None,
        allowed_grants: None,
    }
}
