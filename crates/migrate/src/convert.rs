//! Kong's entities → tollgate's resources. Services and routes first (which plugin covers
//! which route), then consumers and credentials, then tokens; last, the manifests are
//! compiled as a sidecar would, so that anything tollgate would still refuse is reported too.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_yaml::Value;
use tollgate_api::compile::Reason;
use tollgate_api::resources::{
    ClientSecretRef, Consumer, ConsumerRef, ConsumerSpec, DEFAULT_CLIENT_SECRET_KEY,
    DEFAULT_PROVISION_KEY_KEY, OAuth2Config, OAuthApplication, OAuthApplicationSpec, OAuthService,
    OAuthServiceSpec, ProvisionKeySecretRef, RouteSpec, UpstreamSpec,
};
use tollgate_api::snapshot::{self, ClientType, Pkce};

use crate::kong::{self, CorsPluginConfig, OAuth2PluginConfig, Ref};
use crate::names::{Names, dns_label};
use crate::{Document, Migration, Object, TokenImport};

/// The label the controller selects the Secrets it reads by.
const WATCH_LABEL: &str = "oauth.tollgate.dev/watch";
/// Where each object came from in Kong, for whoever reads the manifests later.
const MIGRATED_FROM: &str = "tollgate.dev/migrated-from";
/// The Kong object's tags, where the resource has no field for them.
const KONG_TAGS: &str = "tollgate.dev/kong-tags";
/// Fields every Kong entity may carry that say nothing about behaviour.
const METADATA_FIELDS: &[&str] = &["created_at", "updated_at", "ws_id", "id", "name", "tags"];

/// Where a plugin applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Service(usize),
    Route(usize),
    Consumer(usize),
}

/// A route with the index of its service, and where it sits in the file.
struct RouteAt<'a> {
    route: &'a kong::Route,
    service: Option<usize>,
    /// Where it sits in the file: `routes[2]`, `services[0].routes[1]`.
    at: String,
    label: String,
}

struct PluginAt<'a> {
    plugin: &'a kong::Plugin,
    scope: Scope,
    at: String,
}

struct CredentialAt<'a> {
    credential: &'a kong::Credential,
    consumer: usize,
    label: String,
}

/// An OAuthService to write: what it is named after, and what it covers.
struct Planned<'p> {
    wanted: &'p str,
    label: &'p str,
    upstream: &'p UpstreamSpec,
    routes: &'p [&'p RouteAt<'p>],
    plugin: &'p OAuth2At,
    /// The cors plugin that applies to it in Kong, if any.
    cors: Option<&'p CorsAt>,
    tags: &'p [String],
}

/// An oauth2 plugin's configuration, read, with where it came from.
struct OAuth2At {
    config: OAuth2PluginConfig,
    label: String,
}

/// A cors plugin's configuration, read, with where it came from.
struct CorsAt {
    config: CorsPluginConfig,
    label: String,
    global: bool,
}

/// The conversion's state: what was written so far and the names taken.
struct Writer<'a> {
    namespace: &'a str,
    /// Format "1.1" or "2.1": paths are regexes when they look like one.
    old_format: bool,
    consumers: &'a [kong::Consumer],
    /// The Consumer name of each of `consumers`.
    consumer_refs: Vec<String>,
    /// Route prefix → the OAuthService that serves it.
    claimed: HashMap<String, String>,
    documents: Vec<Document>,
    warnings: Vec<String>,
    service_names: Names,
    consumer_names: Names,
    application_names: Names,
    secret_names: Names,
    /// Objects whose Secret was deliberately written without its key, as (kind, name):
    /// already explained in a warning.
    explained: HashSet<(&'static str, String)>,
    /// OAuthApplications named so far, to number those with no usable name.
    application_names_given: usize,
}

pub fn convert(config: &kong::Config, namespace: &str) -> Result<Migration, String> {
    let format = format_version(config)?;
    let old_format = format != "3.0";
    let mut writer = Writer {
        namespace,
        old_format,
        consumers: &config.consumers,
        consumer_refs: Vec::new(),
        claimed: HashMap::new(),
        documents: Vec::new(),
        warnings: Vec::new(),
        service_names: Names::default(),
        consumer_names: Names::default(),
        application_names: Names::default(),
        secret_names: Names::default(),
        explained: HashSet::new(),
        application_names_given: 0,
    };
    if let Some(workspace) = &config.workspace {
        writer.warn(format!(
            "Kong workspace `{workspace}`: its objects go to namespace `{namespace}` (choose \
             another with --namespace)"
        ));
    }
    for (key, value) in &config.other {
        if !key.starts_with('_') && !is_empty(value) {
            writer.warn(format!(
                "Kong `{key}` ({}): not migrated: tollgate has no such entity",
                count(value)
            ));
        }
    }

    let services: Vec<&kong::Service> = config.services.iter().collect();
    let mut routes = Vec::new();
    let mut plugins = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let label = service_label(service, i);
        for (j, route) in service.routes.iter().enumerate() {
            let at = format!("services[{i}].routes[{j}]");
            routes.push(RouteAt {
                route,
                service: Some(i),
                label: route_label(route, &at, &label),
                at,
            });
        }
        for (j, plugin) in service.plugins.iter().enumerate() {
            plugins.push(PluginAt {
                plugin,
                scope: Scope::Service(i),
                at: format!("services[{i}].plugins[{j}]"),
            });
        }
    }
    for (j, route) in config.routes.iter().enumerate() {
        let at = format!("routes[{j}]");
        let service = match &route.service {
            None => None,
            Some(reference) => Some(
                services
                    .iter()
                    .position(|s| reference.matches(s.id.as_deref(), &[s.name.as_deref()]))
                    .ok_or_else(|| unresolved(&at, "service", reference))?,
            ),
        };
        let service_label = service.map(|i| service_label(services[i], i));
        let label = route_label(route, &at, service_label.as_deref().unwrap_or(""));
        routes.push(RouteAt {
            route,
            service,
            at,
            label,
        });
    }
    // Plugins nested in routes, once every route is known (their index is the scope).
    for (index, route) in routes.iter().enumerate() {
        for (j, plugin) in route.route.plugins.iter().enumerate() {
            plugins.push(PluginAt {
                plugin,
                scope: Scope::Route(index),
                at: format!("{}.plugins[{j}]", route.at),
            });
        }
    }
    for (i, consumer) in config.consumers.iter().enumerate() {
        for (j, plugin) in consumer.plugins.iter().enumerate() {
            plugins.push(PluginAt {
                plugin,
                scope: Scope::Consumer(i),
                at: format!("consumers[{i}].plugins[{j}]"),
            });
        }
    }
    for (j, plugin) in config.plugins.iter().enumerate() {
        let at = format!("plugins[{j}]");
        let scope = if let Some(reference) = &plugin.route {
            Scope::Route(
                routes
                    .iter()
                    .position(|r| {
                        reference.matches(r.route.id.as_deref(), &[r.route.name.as_deref()])
                    })
                    .ok_or_else(|| unresolved(&at, "route", reference))?,
            )
        } else if let Some(reference) = &plugin.service {
            Scope::Service(
                services
                    .iter()
                    .position(|s| reference.matches(s.id.as_deref(), &[s.name.as_deref()]))
                    .ok_or_else(|| unresolved(&at, "service", reference))?,
            )
        } else if let Some(reference) = &plugin.consumer {
            Scope::Consumer(
                config
                    .consumers
                    .iter()
                    .position(|c| consumer_matches(c, reference))
                    .ok_or_else(|| unresolved(&at, "consumer", reference))?,
            )
        } else {
            Scope::Global
        };
        plugins.push(PluginAt { plugin, scope, at });
    }

    // Consumers are named first: an oauth2 plugin's `anonymous` names one.
    for (i, consumer) in config.consumers.iter().enumerate() {
        let name = writer.consumer_name(consumer, i);
        writer.consumer_refs.push(name);
    }

    // Which oauth2 and cors configurations cover what.
    let mut global: Option<OAuth2At> = None;
    let mut by_service: HashMap<usize, OAuth2At> = HashMap::new();
    let mut by_route: HashMap<usize, OAuth2At> = HashMap::new();
    let mut cors = cors::CorsPlugins::default();
    for plugin in &plugins {
        let where_ = match plugin.scope {
            Scope::Global => "globally".to_owned(),
            Scope::Service(i) => service_label(services[i], i).replacen("Kong ", "on ", 1),
            Scope::Route(j) => routes[j].label.replacen("Kong ", "on ", 1),
            Scope::Consumer(i) => {
                consumer_label(&config.consumers[i], i).replacen("Kong ", "on ", 1)
            }
        };
        let label = format!("Kong plugin `{}` {where_}", plugin.plugin.name);
        if !matches!(plugin.plugin.name.as_str(), "oauth2" | "cors") {
            writer.warn(format!(
                "{label}: not migrated: tollgate has only the oauth2 and cors plugins"
            ));
            continue;
        }
        if plugin.plugin.enabled == Some(false) {
            writer.warn(format!("{label}: disabled in Kong, not migrated"));
            continue;
        }
        if let Scope::Consumer(_) = plugin.scope {
            writer.warn(format!(
                "{label}: not migrated: the {} plugin applies to services and routes, not \
                 to consumers",
                plugin.plugin.name
            ));
            continue;
        }
        writer.unsupported(&label, &plugin.plugin.other, |key, _| {
            matches!(key, "protocols" | "instance_name")
        });
        if plugin.plugin.name == "cors" {
            let config: CorsPluginConfig = read_config(plugin)?;
            writer.unsupported(&label, &config.other, |_, _| false);
            let read = CorsAt {
                config,
                global: plugin.scope == Scope::Global,
                label: label.clone(),
            };
            if let Some(first) = cors.insert(plugin.scope, read) {
                writer.warn(format!(
                    "{label}: not migrated: {first} already configures cors there"
                ));
            }
            continue;
        }
        let config: OAuth2PluginConfig = read_config(plugin)?;
        writer.unsupported(&label, &config.other, |_, _| false);
        let first = match plugin.scope {
            Scope::Global => global.as_ref(),
            Scope::Service(i) => by_service.get(&i),
            Scope::Route(j) => by_route.get(&j),
            Scope::Consumer(_) => None,
        };
        if let Some(first) = first {
            writer.warn(format!(
                "{label}: not migrated: {} already configures oauth2 there",
                first.label
            ));
            continue;
        }
        let read = OAuth2At { config, label };
        match plugin.scope {
            Scope::Global => global = Some(read),
            Scope::Service(i) => {
                by_service.insert(i, read);
            }
            Scope::Route(j) => {
                by_route.insert(j, read);
            }
            Scope::Consumer(_) => {}
        }
    }

    // OAuthServices: per Kong service, the routes its own (or the global) plugin covers, and
    // one more per route with a plugin of its own. A route prefix belongs to one of them.
    let mut kong_service_to_oas: HashMap<usize, String> = HashMap::new();
    for (i, service) in services.iter().enumerate() {
        let label = service_label(service, i);
        let own_routes: Vec<usize> = (0..routes.len())
            .filter(|&j| routes[j].service == Some(i))
            .collect();
        let shared = by_service.get(&i).or(global.as_ref());
        let covered_somewhere =
            shared.is_some() || own_routes.iter().any(|j| by_route.contains_key(j));
        if !covered_somewhere {
            for &j in &own_routes {
                writer.warn(format!(
                    "{}: no oauth2 plugin covers it: not migrated (tollgate serves only routes \
                     with OAuth 2.0)",
                    routes[j].label
                ));
            }
            if own_routes.is_empty() {
                writer.warn(format!(
                    "{label}: no route and no oauth2 plugin: not migrated"
                ));
            }
            continue;
        }
        let Some(upstream) = writer.upstream(service, &label) else {
            continue;
        };
        let (covered, separate): (Vec<usize>, Vec<usize>) =
            own_routes.iter().partition(|j| !by_route.contains_key(j));
        match shared {
            None => {
                for &j in &covered {
                    writer.warn(format!(
                        "{}: no oauth2 plugin covers it: not migrated (tollgate serves only \
                         routes with OAuth 2.0)",
                        routes[j].label
                    ));
                }
            }
            Some(plugin) => {
                if !by_service.contains_key(&i) {
                    writer.warn(format!(
                        "{}: applied to {} as its own spec.oauth2 (tollgate has no \
                         global plugin)",
                        plugin.label,
                        label.trim_start_matches("Kong ")
                    ));
                }
                let wanted = service
                    .name
                    .as_deref()
                    .and_then(dns_label)
                    .unwrap_or_else(|| format!("service-{}", i + 1));
                let covered_at: Vec<&RouteAt> = covered.iter().map(|&j| &routes[j]).collect();
                let shared_cors = cors.get(Scope::Service(i)).or(cors.global.as_ref());
                if let Some(name) = writer.service(&Planned {
                    wanted: &wanted,
                    label: &label,
                    upstream: &upstream,
                    routes: &covered_at,
                    plugin,
                    cors: shared_cors,
                    tags: &service.tags,
                }) {
                    for &j in &covered {
                        if let Some(own) = cors.route_of(j) {
                            writer.warn(format!(
                                "{}: not migrated: {} shares OAuthService `{name}` with the \
                                 other routes of its service, and one OAuthService has one cors \
                                 block (give the route an oauth2 plugin of its own to make it \
                                 its own OAuthService)",
                                own.label,
                                routes[j].label.trim_start_matches("Kong "),
                            ));
                            cors.mark_used(Some(own));
                        }
                    }
                    cors.mark_used(shared_cors);
                    kong_service_to_oas.insert(i, name);
                }
            }
        }
        for j in separate {
            let route = &routes[j];
            let wanted = route
                .route
                .name
                .as_deref()
                .and_then(dns_label)
                .unwrap_or_else(|| {
                    format!("{}-route-{}", dns_label(&label).unwrap_or_default(), j + 1)
                });
            let route_cors = cors
                .route_of(j)
                .or(cors.get(Scope::Service(i)))
                .or(cors.global.as_ref());
            let name = writer.service(&Planned {
                wanted: &wanted,
                label: &route.label,
                upstream: &upstream,
                routes: &[route],
                plugin: &by_route[&j],
                cors: route_cors,
                tags: &route.route.tags,
            });
            if let Some(name) = name {
                cors.mark_used(route_cors);
                kong_service_to_oas.entry(i).or_insert(name);
            }
        }
    }
    for route in routes.iter().filter(|r| r.service.is_none()) {
        writer.warn(format!(
            "{}: no service to forward to: not migrated",
            route.label
        ));
    }
    for unused in cors.unused() {
        writer.warn(format!(
            "{}: not migrated: no OAuthService was written where it applies",
            unused.label
        ));
    }

    // Consumers, then their credentials.
    for (i, consumer) in config.consumers.iter().enumerate() {
        writer.consumer(consumer, i);
    }
    let mut credentials = Vec::new();
    for (i, consumer) in config.consumers.iter().enumerate() {
        for (j, credential) in consumer.oauth2_credentials.iter().enumerate() {
            credentials.push(CredentialAt {
                credential,
                consumer: i,
                label: credential_label(
                    credential,
                    &format!("consumers[{i}].oauth2_credentials[{j}]"),
                ),
            });
        }
    }
    for (j, credential) in config.oauth2_credentials.iter().enumerate() {
        let at = format!("oauth2_credentials[{j}]");
        let reference = credential.consumer.as_ref().ok_or_else(|| {
            format!("{at}.consumer: missing: every oauth2 credential belongs to a consumer")
        })?;
        let consumer = config
            .consumers
            .iter()
            .position(|c| consumer_matches(c, reference))
            .ok_or_else(|| unresolved(&at, "consumer", reference))?;
        credentials.push(CredentialAt {
            credential,
            consumer,
            label: credential_label(credential, &at),
        });
    }
    let mut client_ids: Vec<Option<String>> = Vec::with_capacity(credentials.len());
    for credential in &credentials {
        client_ids.push(writer.application(credential)?);
    }

    // Tokens, nested in credentials or top-level.
    let mut tokens = Vec::new();
    let mut skipped_tokens = 0usize;
    let mut nested: Vec<(&kong::Token, Option<usize>, String)> = Vec::new();
    for (c, credential) in credentials.iter().enumerate() {
        for (j, token) in credential.credential.oauth2_tokens.iter().enumerate() {
            nested.push((
                token,
                Some(c),
                format!("{}.oauth2_tokens[{j}]", credential.label),
            ));
        }
    }
    for (j, token) in config.oauth2_tokens.iter().enumerate() {
        let at = format!("oauth2_tokens[{j}]");
        let credential = match &token.credential {
            None => {
                return Err(format!(
                    "{at}.credential: missing: every token belongs to a credential"
                ));
            }
            Some(reference) => credentials
                .iter()
                .position(|c| {
                    reference.matches(
                        c.credential.id.as_deref(),
                        &[c.credential.client_id.as_deref()],
                    )
                })
                .ok_or_else(|| unresolved(&at, "oauth2 credential", reference))?,
        };
        nested.push((token, Some(credential), at));
    }
    for (token, credential, at) in nested {
        let Some(client_id) = credential.and_then(|c| client_ids[c].clone()) else {
            skipped_tokens += 1;
            continue;
        };
        let Some(access_token) = token.access_token.clone().filter(|t| !t.is_empty()) else {
            writer.warn(format!("Kong token {at}: no access_token: not migrated"));
            continue;
        };
        let service_name = match &token.service {
            None => None,
            Some(reference) => {
                let service = services
                    .iter()
                    .position(|s| reference.matches(s.id.as_deref(), &[s.name.as_deref()]))
                    .ok_or_else(|| unresolved(&at, "service", reference))?;
                match kong_service_to_oas.get(&service) {
                    Some(name) => Some(name.clone()),
                    None => {
                        skipped_tokens += 1;
                        continue;
                    }
                }
            }
        };
        writer.unsupported(&format!("Kong token {at}"), &token.other, |_, _| false);
        let id = token.id.as_deref().and_then(|id| {
            let parsed = uuid::Uuid::parse_str(id).ok();
            if parsed.is_none() {
                writer.warn(format!(
                    "Kong token {at}: id `{id}` is not a UUID: imported under a new id"
                ));
            }
            parsed
        });
        tokens.push(TokenImport {
            id,
            access_token,
            refresh_token: token.refresh_token.clone().filter(|t| !t.is_empty()),
            client_id: Some(client_id),
            service_name,
            authenticated_userid: token.authenticated_userid.clone(),
            scope: token.scope.clone(),
            expires_in: token.expires_in,
            created_at: token.created_at,
            ttl: token.ttl,
            ..TokenImport::default()
        });
    }
    if skipped_tokens > 0 {
        writer.warn(format!(
            "Kong oauth2_tokens: {skipped_tokens} of a credential or service that was not \
             migrated: not migrated"
        ));
    }

    writer.check();
    Ok(Migration {
        documents: writer.documents,
        warnings: writer.warnings,
        tokens,
    })
}

fn format_version(config: &kong::Config) -> Result<String, String> {
    let version = match &config.format_version {
        None => {
            return Err(format!(
                "_format_version is missing: not Kong's declarative configuration (expected one \
                 of {})",
                kong::FORMAT_VERSIONS.join(", ")
            ));
        }
        Some(Value::String(s)) => s.clone(),
        // `_format_version: 3.0` unquoted is a number.
        Some(Value::Number(n)) => n.as_f64().map(|f| format!("{f:.1}")).unwrap_or_default(),
        Some(_) => String::new(),
    };
    if kong::FORMAT_VERSIONS.contains(&version.as_str()) {
        Ok(version)
    } else {
        Err(format!(
            "_format_version: `{version}` is not a format this reads (expected one of {})",
            kong::FORMAT_VERSIONS.join(", ")
        ))
    }
}

fn read_config<T: serde::de::DeserializeOwned + Default>(plugin: &PluginAt) -> Result<T, String> {
    match &plugin.plugin.config {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value) => serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = match e.path().to_string().as_str() {
                "." => format!("{}.config", plugin.at),
                inner => format!("{}.config.{inner}", plugin.at),
            };
            kong::field_error(&path, e.into_inner())
        }),
    }
}

fn unresolved(at: &str, kind: &str, reference: &Ref) -> String {
    format!("{at}: no {kind} `{}` in this file", reference.describe())
}

fn consumer_matches(consumer: &kong::Consumer, reference: &Ref) -> bool {
    reference.matches(
        consumer.id.as_deref(),
        &[consumer.username.as_deref(), consumer.custom_id.as_deref()],
    )
}

fn service_label(service: &kong::Service, i: usize) -> String {
    match (&service.name, &service.id) {
        (Some(name), _) => format!("Kong service `{name}`"),
        (None, Some(id)) => format!("Kong service {id}"),
        (None, None) => format!("Kong service services[{i}]"),
    }
}

fn route_label(route: &kong::Route, at: &str, service: &str) -> String {
    let of = if service.is_empty() {
        String::new()
    } else {
        format!(" of {}", service.trim_start_matches("Kong "))
    };
    match (&route.name, &route.id) {
        (Some(name), _) => format!("Kong route `{name}`{of}"),
        (None, Some(id)) => format!("Kong route {id}{of}"),
        (None, None) => format!("Kong route {at}{of}"),
    }
}

fn consumer_label(consumer: &kong::Consumer, i: usize) -> String {
    match (&consumer.username, &consumer.custom_id, &consumer.id) {
        (Some(name), _, _) => format!("Kong consumer `{name}`"),
        (None, Some(custom), _) => format!("Kong consumer custom_id `{custom}`"),
        (None, None, Some(id)) => format!("Kong consumer {id}"),
        _ => format!("Kong consumer consumers[{i}]"),
    }
}

fn credential_label(credential: &kong::Credential, at: &str) -> String {
    match (&credential.name, &credential.client_id) {
        (Some(name), _) => format!("Kong oauth2 credential `{name}`"),
        (None, Some(client_id)) => format!("Kong oauth2 credential client_id `{client_id}`"),
        _ => format!("Kong oauth2 credential {at}"),
    }
}

/// Null, an empty list or an empty mapping: nothing set.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(map) => map.is_empty(),
        _ => false,
    }
}

fn count(value: &Value) -> String {
    match value {
        Value::Sequence(items) if items.len() == 1 => "1 entry".into(),
        Value::Sequence(items) => format!("{} entries", items.len()),
        _ => "set".into(),
    }
}

/// A value as one short line of YAML, for messages.
fn show(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn secret(name: &str, namespace: &str, data: Option<(&str, &str)>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                WATCH_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        string_data: data.map(|(k, v)| BTreeMap::from([(k.to_owned(), v.to_owned())])),
        ..Secret::default()
    }
}

fn metadata(name: &str, namespace: &str, from: &str, tags: &[String]) -> ObjectMeta {
    let mut annotations = BTreeMap::from([(MIGRATED_FROM.to_owned(), from.to_owned())]);
    if !tags.is_empty() {
        annotations.insert(KONG_TAGS.to_owned(), tags.join(","));
    }
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// Kong's client secret hashes (`hash_secret: true`), in PHC string format.
fn is_hashed_secret(secret: &str) -> bool {
    ["$pbkdf2-", "$argon2", "$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| secret.starts_with(prefix))
}

/// A Kong route path as a tollgate prefix, or why it cannot be one.
fn route_prefix(path: &str, old_format: bool) -> Result<String, &'static str> {
    let regex = if old_format {
        !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_~/%".contains(&b))
    } else {
        path.starts_with('~')
    };
    if regex {
        return Err("is a regular expression, and tollgate routes by path prefix only");
    }
    if !path.starts_with('/') {
        return Err("does not start with `/`");
    }
    let trimmed = path.trim_end_matches('/');
    let segments_ok = trimmed
        .split('/')
        .skip(1)
        .all(|s| !s.is_empty() && s != "." && s != "..");
    if !segments_ok || path.contains(['%', '\\']) {
        return Err(
            "is not a normalised path (an empty, `.` or `..` segment, or percent-encoding), \
             which tollgate refuses as a prefix",
        );
    }
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

mod cors;
mod writer;

#[cfg(test)]
mod tests;
