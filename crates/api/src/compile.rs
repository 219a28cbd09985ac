//! Resources → [`Snapshot`]. Pure and infallible: the controller and standalone mode both call
//! [`compile`], and every object that cannot be served is left out and reported as one
//! [`CompileError`] saying what is wrong and how to fix it.
//!
//! Conflicts (two services on one route, two applications with one client id) are settled by
//! age, as Kubernetes does for Gateway API routes: the older object keeps what it claimed,
//! whatever else is wrong with it, so that fixing or breaking one object never silently moves
//! a route or a client id from one object to another.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use uuid::Uuid;

use crate::Snapshot;
use crate::manifests::{DEFAULT_NAMESPACE, Resources};
use crate::resources::{Consumer, OAuthApplication, OAuthService};
use crate::secret::{SecretDigest, SecretHashes};
use crate::snapshot::{self, ClientType};

/// Namespace of the UUIDv5 ids given to resources without a `metadata.uid` (manifest files),
/// so that the same file gives the same ids on every start and in every replica.
pub const TOLLGATE_NS: Uuid = Uuid::from_u128(0x7c1d_4b5e_2f8a_4e63_9a0b_5d2c_e8f1_3a47);

/// The result of compiling a set of resources: a snapshot of every good object, and one error
/// per object left out of it.
#[derive(Debug, Default)]
pub struct Compiled {
    pub snapshot: Snapshot,
    pub errors: Vec<CompileError>,
}

/// Why one resource was left out of the snapshot. Names the resource and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {namespace}/{name}: {message}")]
pub struct CompileError {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub reason: Reason,
    pub message: String,
}

/// Fixed, machine-readable reasons: they become status condition reasons and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    SecretNotFound,
    SecretKeyNotFound,
    ConsumerNotFound,
    DuplicateClientId,
    RouteConflict,
    NoGrantEnabled,
    Invalid,
}

const SERVICE_KIND: &str = "OAuthService";
const CONSUMER_KIND: &str = "Consumer";
const APPLICATION_KIND: &str = "OAuthApplication";

/// Builds the snapshot (version 0: the controller numbers its pushes) from `resources`.
pub fn compile(resources: &Resources) -> Compiled {
    let secrets = SecretIndex::new(&resources.secrets);
    let mut errors = Vec::new();

    let mut services = Vec::new();
    // Every route claimed so far, and by which service: one sidecar serves every service on
    // one listener, so a prefix belongs to one service across all namespaces.
    let mut routes: HashMap<String, String> = HashMap::new();
    for service in by_age(&resources.services, |s| &s.metadata) {
        match compile_service(service, &secrets, &mut routes) {
            Ok(service) => services.push(service),
            Err(error) => errors.push(error),
        }
    }

    let mut consumers = Vec::new();
    for consumer in by_age(&resources.consumers, |c| &c.metadata) {
        match compile_consumer(consumer) {
            Ok(consumer) => consumers.push(consumer),
            Err(error) => errors.push(error),
        }
    }
    let known_consumers: HashSet<(&str, &str)> = consumers
        .iter()
        .map(|c: &snapshot::Consumer| (c.namespace.as_str(), c.name.as_str()))
        .collect();

    let mut applications = Vec::new();
    // (namespace, client id) → the application that claimed it first.
    let mut client_ids: HashMap<(String, String), String> = HashMap::new();
    for application in by_age(&resources.applications, |a| &a.metadata) {
        match compile_application(application, &secrets, &known_consumers, &mut client_ids) {
            Ok(application) => applications.push(application),
            Err(error) => errors.push(error),
        }
    }

    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    consumers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    applications.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Compiled {
        snapshot: Snapshot {
            version: 0,
            services,
            consumers,
            applications,
            store_key: None,
        },
        errors,
    }
}

// === OAuthService ===

fn compile_service(
    service: &OAuthService,
    secrets: &SecretIndex<'_>,
    claimed_routes: &mut HashMap<String, String>,
) -> Result<snapshot::Service, CompileError> {
    let object = Object::new(SERVICE_KIND, &service.metadata);
    let spec = &service.spec;
    let oauth2 = &spec.oauth2;

    // Routes first: a service claims its routes even when something else is wrong with it
    // (see the module docs), so they are normalised and claimed before any other check.
    let mut routes = Vec::with_capacity(spec.routes.len());
    let mut invalid_route = None;
    for route in &spec.routes {
        match normalize_path(&route.path_prefix) {
            Ok(path_prefix) => routes.push(snapshot::Route {
                path_prefix,
                strip_path: route.strip_path,
            }),
            Err(problem) => {
                invalid_route.get_or_insert_with(|| {
                    object.invalid(format!(
                        "route `{}` {problem}: write a path such as `/event`",
                        route.path_prefix
                    ))
                });
            }
        }
    }
    let mut conflict = None;
    let mut seen_here = HashSet::new();
    for route in &routes {
        if !seen_here.insert(route.path_prefix.as_str()) {
            conflict.get_or_insert_with(|| {
                object.invalid(format!(
                    "route `{}` is listed twice: keep one",
                    route.path_prefix
                ))
            });
            continue;
        }
        let owner = claimed_routes
            .entry(route.path_prefix.clone())
            .or_insert_with(|| object.qualified_name());
        if *owner != object.qualified_name() {
            conflict.get_or_insert_with(|| {
                object.error(
                    Reason::RouteConflict,
                    format!(
                        "route `{}` conflicts with OAuthService `{owner}`: an older service \
                         already serves it, choose another pathPrefix",
                        route.path_prefix
                    ),
                )
            });
        }
    }

    if let Some(error) = invalid_route {
        return Err(error);
    }
    if routes.is_empty() {
        return Err(object
            .invalid("no route: add at least one entry to routes, such as `pathPrefix: /event`"));
    }
    if spec.upstream.port == 0 {
        return Err(object.invalid("upstream.port is 0: set the backend's port (1-65535)"));
    }
    let upstream_path = match &spec.upstream.path {
        None => None,
        Some(path) => match normalize_path(path) {
            // `/` adds nothing in front of a forwarded path.
            Ok(path) if path == "/" => None,
            Ok(path) => Some(path),
            Err(problem) => {
                return Err(object.invalid(format!(
                    "upstream.path `{path}` {problem}: write a path such as `/api`"
                )));
            }
        },
    };
    if !(oauth2.enable_authorization_code
        || oauth2.enable_implicit_grant
        || oauth2.enable_client_credentials
        || oauth2.enable_password_grant)
    {
        return Err(object.error(
            Reason::NoGrantEnabled,
            "no grant is enabled: set at least one of enableAuthorizationCode, \
             enableImplicitGrant, enableClientCredentials or enablePasswordGrant",
        ));
    }
    let scopes = oauth2.scopes.clone().unwrap_or_default();
    if oauth2.mandatory_scope && scopes.is_empty() {
        return Err(object.invalid(
            "mandatoryScope is true but no scopes are listed: add scopes or set mandatoryScope \
             to false",
        ));
    }
    if oauth2.refresh_token_ttl > snapshot::MAX_REFRESH_TOKEN_TTL {
        return Err(object.invalid(format!(
            "refreshTokenTtl {} is larger than {}: use at most {} seconds, or 0 to keep \
             tokens forever",
            oauth2.refresh_token_ttl,
            snapshot::MAX_REFRESH_TOKEN_TTL,
            snapshot::MAX_REFRESH_TOKEN_TTL
        )));
    }
    let auth_header_name = oauth2.auth_header_name.to_ascii_lowercase();
    if !is_header_name(&auth_header_name) {
        return Err(object.invalid(format!(
            "authHeaderName `{}` is not a valid HTTP header name: use letters, digits and `-`, \
             such as `authorization`",
            oauth2.auth_header_name
        )));
    }
    let issuer = match oauth2.issuer.as_deref().filter(|i| !i.is_empty()) {
        None => None,
        // The value is not repeated in the message: a URL may carry a password.
        Some(issuer) => Some(normalise_issuer(issuer).map_err(|why| {
            object.invalid(format!(
                "issuer {why}: use the https URL clients reach a route of this service at, \
                 such as https://iris.example.com/event"
            ))
        })?),
    };
    let secret_ref = &oauth2.provision_key_secret_ref;
    let provision_key = secrets.digest(&object, &secret_ref.name, &secret_ref.key)?;

    if let Some(error) = conflict {
        return Err(error);
    }

    Ok(snapshot::Service {
        id: object.id(service.metadata.uid.as_deref()),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        upstream: snapshot::Upstream {
            port: spec.upstream.port,
            path: upstream_path,
            connect_timeout_ms: spec
                .upstream
                .connect_timeout
                .unwrap_or(snapshot::DEFAULT_TIMEOUT_MS),
            read_timeout_ms: spec
                .upstream
                .read_timeout
                .unwrap_or(snapshot::DEFAULT_TIMEOUT_MS),
            drop_underscore_headers: spec.upstream.drop_underscore_headers,
        },
        routes,
        oauth2: snapshot::OAuth2Settings {
            scopes,
            mandatory_scope: oauth2.mandatory_scope,
            provision_key,
            token_expiration: oauth2.token_expiration,
            enable_authorization_code: oauth2.enable_authorization_code,
            enable_implicit_grant: oauth2.enable_implicit_grant,
            enable_client_credentials: oauth2.enable_client_credentials,
            enable_password_grant: oauth2.enable_password_grant,
            hide_credentials: oauth2.hide_credentials,
            accept_http_if_already_terminated: oauth2.accept_http_if_already_terminated,
            // A consumer that does not exist is not an error here: as in Kong, the sidecar
            // answers 500 when it is needed, and creating the consumer fixes it.
            anonymous: oauth2.anonymous.clone().filter(|a| !a.is_empty()),
            global_credentials: oauth2.global_credentials,
            auth_header_name,
            refresh_token_ttl: oauth2.refresh_token_ttl,
            reuse_refresh_token: oauth2.reuse_refresh_token,
            persistent_refresh_token: oauth2.persistent_refresh_token,
            refresh_token_reuse_grace: oauth2.refresh_token_reuse_grace,
            pkce: oauth2.pkce,
            realm: oauth2.realm.clone(),
            issuer,
        },
    })
}

/// RFC 8414 §2: an https URL with a host and no query or fragment. The trailing `/` is
/// dropped, so that the endpoints appended to it have one `/` each.
fn normalise_issuer(issuer: &str) -> Result<String, &'static str> {
    let url = url::Url::parse(issuer).map_err(|_| "is not an absolute URL")?;
    if url.scheme() != "https" {
        return Err("is not an https URL, which RFC 8414 requires");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("has a query or a fragment, which RFC 8414 forbids");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds a user name or password");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

// === Consumer ===

fn compile_consumer(consumer: &Consumer) -> Result<snapshot::Consumer, CompileError> {
    let object = Object::new(CONSUMER_KIND, &consumer.metadata);
    let spec = &consumer.spec;
    let username = spec.username.clone().unwrap_or_else(|| object.name.clone());
    if username.is_empty() {
        return Err(object.invalid("username is empty: remove it to use metadata.name, or set one"));
    }
    Ok(snapshot::Consumer {
        id: object.id(consumer.metadata.uid.as_deref()),
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        username,
        custom_id: spec.custom_id.clone().filter(|c| !c.is_empty()),
        tags: spec.tags.clone(),
    })
}

// === OAuthApplication ===

fn compile_application(
    application: &OAuthApplication,
    secrets: &SecretIndex<'_>,
    consumers: &HashSet<(&str, &str)>,
    claimed_client_ids: &mut HashMap<(String, String), String>,
) -> Result<snapshot::Application, CompileError> {
    let object = Object::new(APPLICATION_KIND, &application.metadata);
    let spec = &application.spec;

    if spec.client_id.is_empty() {
        return Err(object.invalid("clientId is empty: set the OAuth client_id"));
    }
    // Claimed before any other check, like routes: the older application keeps its client id.
    let owner = claimed_client_ids
        .entry((object.namespace.clone(), spec.client_id.clone()))
        .or_insert_with(|| object.name.clone());
    if *owner != object.name {
        return Err(object.error(
            Reason::DuplicateClientId,
            format!(
                "client id `{}` is already used by OAuthApplication `{owner}`: choose another \
                 clientId",
                spec.client_id
            ),
        ));
    }

    let consumer = &spec.consumer_ref.name;
    if !consumers.contains(&(object.namespace.as_str(), consumer.as_str())) {
        return Err(object.error(
            Reason::ConsumerNotFound,
            format!(
                "consumer `{consumer}` was not found in namespace `{}`: create the Consumer or \
                 fix consumerRef.name",
                object.namespace
            ),
        ));
    }
    let name = spec.name.clone().unwrap_or_else(|| object.name.clone());
    if name.is_empty() {
        return Err(object.invalid("name is empty: remove it to use metadata.name, or set one"));
    }
    for uri in &spec.redirect_uris {
        if let Err(problem) = check_redirect_uri(uri) {
            return Err(object.invalid(format!(
                "redirect URI `{uri}` {problem}: write an absolute URL such as \
                 `https://app.example.com/callback`"
            )));
        }
    }
    let client_secret = match (spec.client_type, &spec.client_secret_ref) {
        (ClientType::Confidential, None) => {
            return Err(object.invalid(
                "a confidential application needs clientSecretRef: point it at a Secret \
                 holding the client secret, or set clientType: public",
            ));
        }
        (ClientType::Public, Some(_)) => {
            return Err(object.invalid(
                "a public application has no client secret: remove clientSecretRef or set \
                 clientType: confidential",
            ));
        }
        (ClientType::Public, None) => None,
        (ClientType::Confidential, Some(secret_ref)) => {
            Some(secrets.digest(&object, &secret_ref.name, &secret_ref.key)?)
        }
    };

    Ok(snapshot::Application {
        id: object.id(application.metadata.uid.as_deref()),
        namespace: object.namespace.clone(),
        name,
        consumer: consumer.clone(),
        client_id: spec.client_id.clone(),
        client_secret,
        redirect_uris: spec.redirect_uris.clone(),
        client_type: spec.client_type,
        hash_secret: spec.hash_secret,
        allowed_scopes: spec.allowed_scopes.clone(),
        allowed_grants: spec.allowed_grants.clone(),
    })
}

/// Absolute, with a scheme and a host, and no fragment (RFC 6749 §3.1.2).
fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(uri).map_err(|_| "is not an absolute URL")?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if url.fragment().is_some() {
        return Err("has a fragment (`#…`), which OAuth forbids");
    }
    Ok(())
}

// === helpers ===

/// Sorts objects oldest first, then by namespace and name, which is the order in which they
/// claim routes and client ids.
fn by_age<T>(objects: &[T], metadata: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let key = |object: &T| -> (Option<Time>, String, String) {
        let meta = metadata(object);
        (
            meta.creation_timestamp.clone(),
            meta.namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            meta.name.clone().unwrap_or_default(),
        )
    };
    let mut sorted: Vec<&T> = objects.iter().collect();
    sorted.sort_by_cached_key(|o| key(o));
    sorted
}

/// `/event/` → `/event`, `event` → `/event`, `` → `/`. Refuses what cannot be a path prefix.
fn normalize_path(path: &str) -> Result<String, &'static str> {
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains spaces or control characters");
    }
    if path.contains(['?', '#']) {
        return Err("contains `?` or `#`, which cannot be part of a path");
    }
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    if trimmed.contains("//") {
        return Err("contains an empty segment (`//`)");
    }
    let path = format!("/{trimmed}");
    // Requests are routed, and reach the backend, by their normalised path: a prefix that is
    // not one would match nothing, or match what the backend reads as another path.
    let upper = path.to_ascii_uppercase();
    if path.contains('\\') || upper.contains("%2F") || upper.contains("%5C") {
        return Err("contains a backslash or an encoded slash (`%2F`, `%5C`)");
    }
    match tollgate_canon::path::normalize(&path) {
        Ok(normal) if normal == path => Ok(path),
        _ => Err(
            "is not a normalised path: it has a `.` or `..` segment, a percent-encoded letter, \
             digit or `-._~`, lower-case or invalid percent-encoding",
        ),
    }
}

/// An RFC 9110 token, which is what a header name is.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The identity of the object being compiled, to name it in errors and derive its id and salt.
struct Object {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl Object {
    fn new(kind: &'static str, metadata: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: metadata
                .namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            name: metadata.name.clone().unwrap_or_default(),
        }
    }

    /// `<kind>/<ns>/<name>`: the UUIDv5 name and the salt of the object's secret digest.
    fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }

    fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The uid the API server gave the object, or a stable one derived from its identity.
    fn id(&self, uid: Option<&str>) -> Uuid {
        uid.and_then(|uid| Uuid::parse_str(uid).ok())
            .unwrap_or_else(|| Uuid::new_v5(&TOLLGATE_NS, self.key().as_bytes()))
    }

    fn error(&self, reason: Reason, message: impl Into<String>) -> CompileError {
        CompileError {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason,
            message: message.into(),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> CompileError {
        self.error(Reason::Invalid, message)
    }
}

/// Secrets by (namespace, name).
struct SecretIndex<'a>(BTreeMap<(&'a str, &'a str), &'a Secret>);

impl<'a> SecretIndex<'a> {
    fn new(secrets: &'a [Secret]) -> Self {
        Self(
            secrets
                .iter()
                .filter_map(|secret| {
                    let name = secret.metadata.name.as_deref()?;
                    let namespace = secret
                        .metadata
                        .namespace
                        .as_deref()
                        .filter(|ns| !ns.is_empty())
                        .unwrap_or(DEFAULT_NAMESPACE);
                    Some(((namespace, name), secret))
                })
                .collect(),
        )
    }

    /// Reads `key` of Secret `name` in the object's namespace and hashes it, with a random
    /// salt of the object's own, made once per value (see [`SecretHashes`]). The value never
    /// leaves this function in the clear.
    fn digest(&self, object: &Object, name: &str, key: &str) -> Result<SecretDigest, CompileError> {
        let Some(secret) = self.0.get(&(object.namespace.as_str(), name)) else {
            return Err(object.error(
                Reason::SecretNotFound,
                format!(
                    "Secret `{name}` was not found in namespace `{}`: create it or fix the \
                     Secret name",
                    object.namespace
                ),
            ));
        };
        // stringData first, as the API server would merge it over data on write.
        let from_string_data = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| Ok(v.as_str()));
        let from_data = || {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| std::str::from_utf8(&v.0))
        };
        let value = match from_string_data.or_else(from_data) {
            None => {
                return Err(object.error(
                    Reason::SecretKeyNotFound,
                    format!(
                        "Secret `{name}` has no key `{key}`: add it to the Secret or fix the key"
                    ),
                ));
            }
            Some(Err(_)) => {
                return Err(object.invalid(format!(
                    "Secret `{name}` key `{key}` is not UTF-8 text: store the value as text"
                )));
            }
            Some(Ok(value)) => value,
        };
        if value.is_empty() {
            return Err(object.invalid(format!(
                "Secret `{name}` key `{key}` is empty: an empty secret would let anyone in"
            )));
        }
        Ok(SecretHashes::global().hash(&object.key(), value))
    }
}

// === impl Reason ===

impl Reason {
    /// The CamelCase name used as a status condition reason and a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretKeyNotFound => "SecretKeyNotFound",
            Self::ConsumerNotFound => "ConsumerNotFound",
            Self::DuplicateClientId => "DuplicateClientId",
            Self::RouteConflict => "RouteConflict",
            Self::NoGrantEnabled => "NoGrantEnabled",
            Self::Invalid => "Invalid",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::resources::{
        ClientSecretRef, ConsumerRef, ConsumerSpec, OAuth2Config, OAuthApplicationSpec,
        OAuthServiceSpec, RouteSpec, UpstreamSpec,
    };
    use crate::snapshot::Pkce;

    // --- fake objects ---

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.to_owned()),
            name: Some(name.to_owned()),
            ..Default::default()
        }
    }

    fn oauth2(provision_key_secret: &str) -> OAuth2Config {
        serde_json::from_value(serde_json::json!({
            "provisionKeySecretRef": {"name": provision_key_secret},
            "enablePasswordGrant": true,
        }))
        .unwrap()
    }

    fn mk_service(ns: &str, name: &str, routes: &[&str]) -> OAuthService {
        OAuthService {
            metadata: meta(ns, name),
            spec: OAuthServiceSpec {
                pod_selector: None,
                upstream: UpstreamSpec {
                    port: 52773,
                    path: None,
                    connect_timeout: None,
                    read_timeout: None,
                    drop_underscore_headers: false,
                },
                routes: routes
                    .iter()
                    .map(|r| RouteSpec {
                        path_prefix: (*r).to_owned(),
                        strip_path: false,
                    })
                    .collect(),
                oauth2: oauth2(&format!("{name}-provision-key")),
            },
            status: None,
        }
    }

    fn mk_consumer(ns: &str, name: &str) -> Consumer {
        Consumer {
            metadata: meta(ns, name),
            spec: ConsumerSpec::default(),
            status: None,
        }
    }

    fn mk_app(ns: &str, name: &str, consumer: &str, client_id: &str) -> OAuthApplication {
        OAuthApplication {
            metadata: meta(ns, name),
            spec: OAuthApplicationSpec {
                consumer_ref: ConsumerRef {
                    name: consumer.to_owned(),
                },
                name: None,
                client_id: client_id.to_owned(),
                client_secret_ref: Some(ClientSecretRef {
                    name: format!("{name}-secret"),
                    key: "clientSecret".to_owned(),
                }),
                redirect_uris: vec!["https://localhost/callback".to_owned()],
                client_type: ClientType::Confidential,
                hash_secret: false,
                allowed_scopes: None,
                allowed_grants: None,
            },
            status: None,
        }
    }

    fn mk_secret(ns: &str, name: &str, key: &str, value: &str) -> Secret {
        Secret {
            metadata: meta(ns, name),
            string_data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..Default::default()
        }
    }

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
        spec.routes.push(RouteSpec {
            path_prefix: "/".into(),
            strip_path: true,
        });
        spec.routes.push(RouteSpec {
            path_prefix: "api/v1".into(),
            strip_path: true,
        });
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
        resources.services[0].spec.routes.push(RouteSpec {
            path_prefix: "/event/".into(),
            strip_path: true,
        });
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
        resources.applications[0].metadata =
            created_at(resources.applications[0].metadata.clone(), 2);

        let compiled = compile(&resources);
        let error = only_error(&compiled);
        assert_eq!(error.reason, Reason::DuplicateClientId);
        assert_eq!(error.name, "sampleapp");
        assert!(
            error.message.starts_with(
                "client id `clientid` is already used by OAuthApplication `other-app`"
            ),
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
}
