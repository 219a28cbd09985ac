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
use crate::resources::{Consumer, OAuthApplication, OAuthService, no_grant_enabled_message};
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

    let (services, mut errors) = compile_services(&resources.services, &secrets);

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

/// Compiles `services` oldest first, as they claim routes, and sorts the good ones by
/// (namespace, name).
fn compile_services<'a>(
    services: impl IntoIterator<Item = &'a OAuthService>,
    secrets: &SecretIndex<'_>,
) -> (Vec<snapshot::Service>, Vec<CompileError>) {
    let mut compiled = Vec::new();
    let mut errors = Vec::new();
    // Every route claimed so far, and by which service: one sidecar serves every service on
    // one listener, so a prefix belongs to one service across all namespaces.
    let mut routes: HashMap<String, String> = HashMap::new();
    for service in by_age(services, |s| &s.metadata) {
        match compile_service(service, secrets, &mut routes) {
            Ok(service) => compiled.push(service),
            Err(error) => errors.push(error),
        }
    }
    compiled.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    (compiled, errors)
}

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
    if oauth2.enabled_grants().is_empty() {
        return Err(object.error(Reason::NoGrantEnabled, no_grant_enabled_message()));
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
    let cors = match &spec.cors {
        None => None,
        Some(cors) => Some(crate::cors::compile(cors).map_err(|message| object.invalid(message))?),
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
        cors,
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
fn by_age<'a, T: 'a>(
    objects: impl IntoIterator<Item = &'a T>,
    metadata: impl Fn(&T) -> &ObjectMeta,
) -> Vec<&'a T> {
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
    let mut sorted: Vec<&T> = objects.into_iter().collect();
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

/// Secrets by (namespace, name): every namespace's (a whole compilation), or one namespace's,
/// by name, as the controller's index keeps them (a compilation of one object).
enum SecretIndex<'a> {
    All(BTreeMap<(&'a str, &'a str), &'a Secret>),
    Namespace {
        namespace: &'a str,
        secrets: &'a BTreeMap<String, Secret>,
    },
}

impl<'a> SecretIndex<'a> {
    fn new(secrets: &'a [Secret]) -> Self {
        Self::All(
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

    fn get(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        match self {
            Self::All(secrets) => secrets.get(&(namespace, name)).copied(),
            Self::Namespace {
                namespace: here,
                secrets,
            } => secrets.get(name).filter(|_| *here == namespace),
        }
    }

    /// Reads `key` of Secret `name` in the object's namespace and hashes it, with a random
    /// salt of the object's own, made once per value (see [`SecretHashes`]). The value never
    /// leaves this function in the clear.
    fn digest(&self, object: &Object, name: &str, key: &str) -> Result<SecretDigest, CompileError> {
        let Some(secret) = self.get(&object.namespace, name) else {
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

pub mod incremental;
#[cfg(test)]
mod tests;
