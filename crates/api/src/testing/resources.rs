//! Resource fixtures: the objects users apply, read from minimal JSON so that every field
//! they leave out gets the CRD's default, as in a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::REDIRECT_URI;
use crate::resources::{
    Consumer, OAuth2Config, OAuthApplication, OAuthService, OAuthServiceSpec, RouteSpec,
};

/// `value` as a `T`. Fixtures are written here to fit their types; one that does not is a
/// bug in this file, and the test using it fails at once.
fn from_json<T: DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(object) => object,
        Err(error) => panic!("a fixture does not fit its type: {error}"),
    }
}

/// An object's name and namespace, nothing else.
pub fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

/// Kong's defaults with the password grant, the provision key in Secret
/// `provision_key_secret` (key `provisionKey`).
pub fn oauth2(provision_key_secret: &str) -> OAuth2Config {
    from_json(json!({
        "provisionKeySecretRef": {"name": provision_key_secret},
        "enablePasswordGrant": true,
    }))
}

/// A route on `path_prefix`, written as given, with the default `stripPath` (true).
pub fn route(path_prefix: &str) -> RouteSpec {
    from_json(json!({"pathPrefix": path_prefix}))
}

/// An OAuthService on `routes` (each keeping its prefix, as the article's does) in front of
/// port 52773, with [`oauth2`] and its provision key in Secret `<name>-provision-key`.
pub fn service(namespace: &str, name: &str, routes: &[&str]) -> OAuthService {
    let routes = routes
        .iter()
        .map(|prefix| RouteSpec {
            strip_path: false,
            ..route(prefix)
        })
        .collect();
    let spec = OAuthServiceSpec {
        routes,
        ..from_json(json!({
            "upstream": {"port": 52773},
            "routes": [],
            "oauth2": oauth2(&format!("{name}-provision-key")),
        }))
    };
    OAuthService {
        metadata: meta(namespace, name),
        ..OAuthService::new(name, spec)
    }
}

/// A Consumer whose username is its name.
pub fn consumer(namespace: &str, name: &str) -> Consumer {
    Consumer {
        metadata: meta(namespace, name),
        ..Consumer::new(name, Default::default())
    }
}

/// A confidential OAuthApplication of `consumer` with [`REDIRECT_URI`], its secret in Secret
/// `<name>-secret` (key `clientSecret`).
pub fn application(
    namespace: &str,
    name: &str,
    consumer: &str,
    client_id: &str,
) -> OAuthApplication {
    let spec = from_json(json!({
        "consumerRef": {"name": consumer},
        "clientId": client_id,
        "clientSecretRef": {"name": format!("{name}-secret")},
        "redirectUris": [REDIRECT_URI],
    }));
    OAuthApplication {
        metadata: meta(namespace, name),
        ..OAuthApplication::new(name, spec)
    }
}

/// A Secret holding `value` under `key`, in `stringData` as `kubectl apply` sends it.
pub fn secret(namespace: &str, name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: meta(namespace, name),
        string_data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..Default::default()
    }
}
