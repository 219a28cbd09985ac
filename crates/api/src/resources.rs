//! The custom resources users `kubectl apply` (OAuthService, Consumer, OAuthApplication),
//! derived into CRDs whose schemas carry Kong's defaults and validation.
//!
//! Field names are the camelCase of the Kong plugin's snake_case, so a Kong configuration
//! translates line by line. Every default is a serde default *and* a schema `default`: the API
//! server fills it in on `kubectl apply`, and manifest files read without a cluster get the
//! same value.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::snapshot::{self, ClientType, GrantSet, GrantType, Pkce};

/// Default `key` of a provision key Secret reference.
pub const DEFAULT_PROVISION_KEY_KEY: &str = "provisionKey";
/// Default `key` of a client secret Secret reference.
pub const DEFAULT_CLIENT_SECRET_KEY: &str = "clientSecret";

// === OAuthService ===

/// One protected backend and the configuration of Kong's OAuth 2.0 plugin in front of it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "oauth.tollgate.dev",
    version = "v1alpha1",
    kind = "OAuthService",
    namespaced,
    doc = "An OAuthService puts OAuth 2.0 (Kong's oauth2 plugin) in front of a backend served by tollgate sidecars.",
    status = "OAuthServiceStatus",
    shortname = "oas",
    category = "tollgate",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Up-to-date","type":"string","jsonPath":".status.upToDate","description":"Pods holding its current form, of those that should"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OAuthServiceSpec {
    /// Which pods' sidecars serve this service. Absent or empty selects every injected pod of
    /// the namespace. Ignored in standalone mode, where the one sidecar serves every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Where authenticated requests are forwarded, on 127.0.0.1 inside the pod.
    pub upstream: UpstreamSpec,
    /// Path prefixes this service answers on, like the paths of Kong routes. The OAuth
    /// endpoints are `<pathPrefix>/oauth2/token` and `<pathPrefix>/oauth2/authorize`.
    #[schemars(length(min = 1))]
    pub routes: Vec<RouteSpec>,
    /// The OAuth 2.0 plugin's configuration (Kong's `config.*`, in camelCase).
    pub oauth2: OAuth2Config,
    /// Kong's cors plugin, for browser clients: preflights to the routes and OAuth endpoints
    /// are answered before the bearer check, and responses carry the CORS headers. Absent:
    /// no CORS at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::cors::CorsSpec>,
}

/// The backend container's port and base path. The host is always 127.0.0.1: a sidecar only
/// fronts a container of its own pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// TCP port of the backend on 127.0.0.1 (52773 for IRIS's web server).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Prefix prepended to every forwarded path, like the path of a Kong service URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// Milliseconds to wait for a connection to the backend, as Kong's `connect_timeout`
    /// (60000 when unset). When it passes, the client gets 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483646))]
    pub connect_timeout: Option<u32>,
    /// Milliseconds to wait for the backend's response after the request was sent, and then
    /// between two reads of its body, as Kong's `read_timeout` (60000 when unset). When it
    /// passes before the response begins, the client gets 504; later, the response is cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483646))]
    pub read_timeout: Option<u32>,
    /// Drop every request header with `_` in its name before forwarding, as nginx does by
    /// default (`underscores_in_headers off`). Off by default, as in Kong: underscore headers
    /// reach the backend, except look-alikes of the headers the sidecar sets
    /// (`X_Consumer_Username`), which are always dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_underscore_headers: bool,
}

/// One path prefix routed to this service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Path prefix, starting with `/` (a trailing `/` is ignored).
    #[schemars(regex(pattern = r"^/"))]
    pub path_prefix: String,
    /// Remove the matched prefix before forwarding (Kong's `strip_path`, true by default).
    #[serde(default = "default_true")]
    pub strip_path: bool,
}

/// Kong's OAuth 2.0 plugin configuration, with Kong's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.mandatoryScope || (has(self.scopes) && size(self.scopes) > 0)")
        .message("mandatoryScope requires a non-empty scopes list"),
    validation = some_grant_enabled_rule()
)]
pub struct OAuth2Config {
    /// Scope names clients may request. Required when mandatoryScope is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// A client must request at least one scope.
    #[serde(default)]
    pub mandatory_scope: bool,
    /// Secret holding the provision key the backend sends to the authorize and token endpoints
    /// (Kong generates one; tollgate reads it from a Secret so it never sits in the resource).
    pub provision_key_secret_ref: ProvisionKeySecretRef,
    /// Lifetime of access tokens in seconds; 0 means they never expire.
    #[serde(default = "default_token_expiration")]
    pub token_expiration: u32,
    /// Allow the authorization code grant.
    #[serde(default)]
    pub enable_authorization_code: bool,
    /// Allow the implicit grant.
    #[serde(default)]
    pub enable_implicit_grant: bool,
    /// Allow the client credentials grant.
    #[serde(default)]
    pub enable_client_credentials: bool,
    /// Allow the resource owner password grant (the backend checks the password and passes
    /// `authenticated_userid` with the provision key).
    #[serde(default)]
    pub enable_password_grant: bool,
    /// Remove the access token from the request before forwarding it.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Accept plain HTTP carrying `X-Forwarded-Proto: https` from a trusted TLS terminator.
    #[serde(default)]
    pub accept_http_if_already_terminated: bool,
    /// Name of a Consumer (same namespace) used when a request carries no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub anonymous: Option<String>,
    /// Tokens are not bound to this service and work on every service that also sets it.
    #[serde(default)]
    pub global_credentials: bool,
    /// Header carrying the bearer token and Basic client credentials (case-insensitive).
    #[serde(default = "default_auth_header_name")]
    #[schemars(length(min = 1))]
    pub auth_header_name: String,
    /// Seconds a token record and its refresh token live; 0 means forever.
    #[serde(default = "default_refresh_token_ttl")]
    #[schemars(range(max = 100_000_000))]
    pub refresh_token_ttl: u32,
    /// A refresh keeps the same refresh token instead of issuing a new one.
    #[serde(default)]
    pub reuse_refresh_token: bool,
    /// Keep refresh tokens when the service's configuration changes.
    #[serde(default)]
    pub persistent_refresh_token: bool,
    /// (beyond Kong) Seconds during which a refresh token that was already swapped may be
    /// presented again without consequence, for clients that retry a lost response. After
    /// that, presenting it is treated as theft: the whole chain of tokens issued from it is
    /// revoked. 0 (the default) allows no grace at all.
    #[serde(default)]
    #[schemars(range(max = 300))]
    pub refresh_token_reuse_grace: u32,
    /// PKCE enforcement: none, lax (required only when a challenge was sent) or strict
    /// (always required).
    #[serde(default)]
    pub pkce: Pkce,
    /// Realm added to `WWW-Authenticate` headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// (beyond Kong) The issuer of the RFC 8414 metadata document: the https URL at which
    /// clients reach one of this service's routes, such as `https://iris.example.com/event`.
    /// The document's endpoints are this URL followed by `/oauth2/token`, `/oauth2/authorize`,
    /// and so on. Unset, the document is not served (404): the sidecar never builds it from
    /// the request's Host, which any client chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != '' && !self.contains('?') && !self.contains('#')")
            .message("issuer must be an https URL with a host, and no query or fragment")
    )]
    pub issuer: Option<String>,
}

impl OAuth2Config {
    /// The grants switched on by the `enable…` flags, as [`snapshot::OAuth2Settings`] has them
    /// once compiled: the compiler asks this before the settings exist.
    pub fn enabled_grants(&self) -> GrantSet {
        GrantType::ALL
            .into_iter()
            .filter(|grant| match grant {
                GrantType::AuthorizationCode => self.enable_authorization_code,
                GrantType::Implicit => self.enable_implicit_grant,
                GrantType::ClientCredentials => self.enable_client_credentials,
                GrantType::Password => self.enable_password_grant,
                GrantType::RefreshToken => false,
            })
            .collect()
    }
}

/// The `enable…` flags of the grants that have one, in [`GrantType::ALL`]'s order.
fn grant_enable_flags() -> impl Iterator<Item = &'static str> {
    GrantType::ALL
        .into_iter()
        .filter_map(GrantType::enable_flag)
}

/// Why an OAuthService with no grant is refused, by the API server's rule and by the
/// compiler alike: "no grant is enabled: set at least one of enableAuthorizationCode, …".
pub fn no_grant_enabled_message() -> String {
    let flags: Vec<&str> = grant_enable_flags().collect();
    let (last, others) = flags.split_last().map_or(("", &[][..]), |(l, o)| (*l, o));
    if others.is_empty() {
        format!("no grant is enabled: set {last}")
    } else {
        format!(
            "no grant is enabled: set at least one of {} or {last}",
            others.join(", ")
        )
    }
}

/// The CEL rule that some grant is enabled, written from the table of grants so that a new
/// grant's flag joins it.
fn some_grant_enabled_rule() -> kube::core::Rule {
    let rule = grant_enable_flags()
        .map(|flag| format!("self.{flag}"))
        .collect::<Vec<_>>()
        .join(" || ");
    kube::core::Rule::new(rule).message(no_grant_enabled_message().as_str())
}

/// A key of a Secret in the OAuthService's namespace holding the provision key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionKeySecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_provision_key_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// What the controller observed about an OAuthService.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthServiceStatus {
    /// `Accepted` (valid and compiled), `Programmed` (every pod that should serve it holds
    /// its current form) and `Ready` (both), with why not.
    #[serde(default)]
    // A map keyed by type lets server-side apply own each condition separately.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the podSelector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_pods: Option<i32>,
    /// Selected pods whose sidecar holds its current form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date_pods: Option<i32>,
    /// `upToDatePods/selectedPods`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<String>,
}

// === Consumer ===

/// Someone who uses the services of a namespace: Kong's consumer.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "oauth.tollgate.dev",
    version = "v1alpha1",
    kind = "Consumer",
    namespaced,
    doc = "A Consumer is someone who uses the OAuthServices of its namespace (Kong's consumer).",
    status = "ConsumerStatus",
    shortname = "csm",
    category = "tollgate",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Up-to-date","type":"string","jsonPath":".status.upToDate","description":"Pods holding its current form, of those that should"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSpec {
    /// Kong's username, sent upstream as `X-Consumer-Username`. Defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub username: Option<String>,
    /// Kong's custom_id, sent upstream as `X-Consumer-Custom-ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Free-form tags, as in Kong.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// What the controller observed about a Consumer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    /// `Accepted` (valid and compiled), `Programmed` (every pod that should serve it holds
    /// its current form) and `Ready` (both), with why not.
    #[serde(default)]
    // A map keyed by type lets server-side apply own each condition separately.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The injected pods of its namespace, which all serve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_pods: Option<i32>,
    /// Those whose sidecar holds its current form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date_pods: Option<i32>,
    /// `upToDatePods/selectedPods`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<String>,
}

// === OAuthApplication ===

/// An application of a Consumer that obtains tokens: Kong's oauth2 credential.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "oauth.tollgate.dev",
    version = "v1alpha1",
    kind = "OAuthApplication",
    namespaced,
    doc = "An OAuthApplication is a Consumer's OAuth client (Kong's oauth2 credential).",
    status = "OAuthApplicationStatus",
    shortname = "oapp",
    category = "tollgate",
    printcolumn = r#"{"name":"Client ID","type":"string","jsonPath":".spec.clientId"}"#,
    printcolumn = r#"{"name":"Consumer","type":"string","jsonPath":".spec.consumerRef.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Up-to-date","type":"string","jsonPath":".status.upToDate","description":"Pods holding its current form, of those that should"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.clientType == 'public' || has(self.clientSecretRef)")
        .message("a confidential application needs clientSecretRef"),
    validation = Rule::new("self.clientType != 'public' || !has(self.clientSecretRef)")
        .message("a public application has no client secret: remove clientSecretRef")
)]
pub struct OAuthApplicationSpec {
    /// The Consumer (same namespace) this application belongs to.
    pub consumer_ref: ConsumerRef,
    /// Kong's credential name. Defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub name: Option<String>,
    /// The OAuth client_id, unique in the namespace.
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// Secret holding the client_secret. Required for confidential clients, refused for public
    /// ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<ClientSecretRef>,
    /// Registered redirect URIs: absolute URLs with a scheme and a host, without fragment.
    /// The first one is used when a request names none.
    #[serde(default)]
    #[schemars(length(max = 64), inner(url, length(min = 1, max = 2048)))]
    #[x_kube(
        validation = Rule::new("self.all(u, isURL(u) && url(u).getScheme() != '' && url(u).getHostname() != '' && !u.contains('#'))")
            .message("every redirect URI must be an absolute URL with a scheme and a host, and no fragment")
    )]
    pub redirect_uris: Vec<String>,
    /// confidential (authenticates with its secret) or public (a browser or mobile app, no
    /// secret, PKCE).
    #[serde(default)]
    pub client_type: ClientType,
    /// The client secret is stored hashed in Kong's database (tollgate always hashes it; kept
    /// for compatibility).
    #[serde(default)]
    pub hash_secret: bool,
    /// (beyond Kong) When set, the only scopes this application may obtain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_scopes: Option<Vec<String>>,
    /// (beyond Kong) When set, the only grants this application may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_grants: Option<Vec<GrantType>>,
}

/// A Consumer in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRef {
    /// metadata.name of the Consumer.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A key of a Secret in the OAuthApplication's namespace holding the client secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_client_secret_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

/// What the controller observed about an OAuthApplication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthApplicationStatus {
    /// `Accepted` (valid and compiled), `Programmed` (every pod that should serve it holds
    /// its current form) and `Ready` (both), with why not.
    #[serde(default)]
    // A map keyed by type lets server-side apply own each condition separately.
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The metadata.generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The injected pods of its namespace, which all serve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_pods: Option<i32>,
    /// Those whose sidecar holds its current form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date_pods: Option<i32>,
    /// `upToDatePods/selectedPods`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date: Option<String>,
}

// === CRDs ===

/// The three CRDs, in a fixed order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        OAuthService::crd(),
        Consumer::crd(),
        OAuthApplication::crd(),
    ]
}

/// The three CRDs as multi-document YAML, each document starting with `---`. This is what
/// `tollgate crdgen` prints and what `crds/tollgate.yaml` holds.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        // Serializing a CRD, plain data built by kube-derive, only fails on a bug there;
        // an empty document would then make the drift test fail loudly.
        match serde_yaml::to_string(&crd) {
            Ok(yaml) => out.push_str(&yaml),
            Err(error) => out.push_str(&format!("# serialization failed: {error}\n")),
        }
    }
    out
}

// === defaults ===

fn default_true() -> bool {
    true
}

fn default_token_expiration() -> u32 {
    snapshot::DEFAULT_TOKEN_EXPIRATION
}

fn default_refresh_token_ttl() -> u32 {
    snapshot::DEFAULT_REFRESH_TOKEN_TTL
}

fn default_auth_header_name() -> String {
    snapshot::DEFAULT_AUTH_HEADER_NAME.to_owned()
}

fn default_provision_key_key() -> String {
    DEFAULT_PROVISION_KEY_KEY.to_owned()
}

fn default_client_secret_key() -> String {
    DEFAULT_CLIENT_SECRET_KEY.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(crd: &CustomResourceDefinition) -> serde_json::Value {
        let version = &crd.spec.versions[0];
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap();
        serde_json::to_value(schema).unwrap()
    }

    #[test]
    fn crds_are_namespaced_in_our_group_with_short_names() {
        let crds = crds();
        let names: Vec<_> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
        assert_eq!(names, ["OAuthService", "Consumer", "OAuthApplication"]);
        for (crd, short) in crds.iter().zip(["oas", "csm", "oapp"]) {
            assert_eq!(crd.spec.group, "oauth.tollgate.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.versions[0].name, "v1alpha1");
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.into()][..])
            );
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["tollgate".to_owned()][..])
            );
            let columns = crd.spec.versions[0]
                .additional_printer_columns
                .as_ref()
                .unwrap();
            assert!(columns.iter().any(|c| c.name == "Ready"
                && c.json_path == ".status.conditions[?(@.type==\"Ready\")].status"));
            assert!(columns.iter().any(|c| c.name == "Age"));
            // `kubectl get` shows the up-to-date count; `-o wide` adds the other conditions.
            let column = |name: &str| columns.iter().find(|c| c.name == name).unwrap();
            assert_eq!(column("Up-to-date").json_path, ".status.upToDate");
            assert_eq!(column("Up-to-date").priority, None);
            for wide in ["Accepted", "Programmed", "Message"] {
                assert_eq!(column(wide).priority, Some(1), "{wide}");
            }
            // Every column reads a field the schema keeps (the API server prunes others).
            let schema = schema_of(crd);
            let status = &schema["properties"]["status"]["properties"];
            for field in ["upToDate", "upToDatePods", "selectedPods", "conditions"] {
                assert!(status.get(field).is_some(), "{field}");
            }
        }
    }

    #[test]
    fn schema_carries_kong_defaults_and_bounds() {
        let schema = schema_of(&OAuthService::crd());
        let oauth2 = &schema["properties"]["spec"]["properties"]["oauth2"];
        let props = &oauth2["properties"];
        assert_eq!(props["tokenExpiration"]["default"], 7200);
        assert_eq!(props["refreshTokenTtl"]["default"], 1_209_600);
        assert_eq!(props["refreshTokenTtl"]["maximum"], 100_000_000.0);
        assert_eq!(props["authHeaderName"]["default"], "authorization");
        assert_eq!(props["pkce"]["default"], "lax");
        assert_eq!(props["enablePasswordGrant"]["default"], false);
        assert_eq!(
            props["provisionKeySecretRef"]["properties"]["key"]["default"],
            "provisionKey"
        );
        let required = oauth2["required"].as_array().unwrap();
        assert!(required.contains(&"provisionKeySecretRef".into()));
        let rules = oauth2["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 2);

        let spec = &schema["properties"]["spec"]["properties"];
        assert_eq!(spec["routes"]["minItems"], 1);
        assert_eq!(
            spec["routes"]["items"]["properties"]["stripPath"]["default"],
            true
        );
        assert_eq!(spec["upstream"]["properties"]["port"]["minimum"], 1.0);
        assert_eq!(spec["upstream"]["properties"]["port"]["maximum"], 65535.0);
    }

    #[test]
    fn the_no_grant_rule_names_the_flag_of_every_grant_in_the_table() {
        let schema = schema_of(&OAuthService::crd());
        let oauth2 = &schema["properties"]["spec"]["properties"]["oauth2"];
        let rules = oauth2["x-kubernetes-validations"].as_array().unwrap();
        let rule = rules
            .iter()
            .find(|r| r["rule"].as_str().unwrap().contains("enable"))
            .unwrap();
        assert_eq!(
            rule["rule"],
            "self.enableAuthorizationCode || self.enableImplicitGrant || \
             self.enableClientCredentials || self.enablePasswordGrant"
        );
        assert_eq!(
            rule["message"],
            "no grant is enabled: set at least one of enableAuthorizationCode, \
             enableImplicitGrant, enableClientCredentials or enablePasswordGrant"
        );
        assert_eq!(rule["message"], no_grant_enabled_message().as_str());
        // Every `enable…` property of the schema is a grant's flag, and the rule names it.
        let flags: Vec<&str> = GrantType::ALL
            .iter()
            .filter_map(|g| g.enable_flag())
            .collect();
        let properties: Vec<&str> = oauth2["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|name| name.starts_with("enable"))
            .collect();
        let mut sorted = flags.clone();
        sorted.sort_unstable();
        assert_eq!(properties, sorted);
        for flag in flags {
            assert_eq!(oauth2["properties"][flag]["type"], "boolean");
            assert!(
                rule["rule"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("self.{flag}"))
            );
        }
    }

    #[test]
    fn enabled_grants_reads_each_flag() {
        let none: OAuth2Config = serde_json::from_value(serde_json::json!({
            "provisionKeySecretRef": {"name": "pk"},
        }))
        .unwrap();
        assert!(none.enabled_grants().is_empty());
        for grant in GrantType::ALL {
            let Some(flag) = grant.enable_flag() else {
                continue;
            };
            let only: OAuth2Config = serde_json::from_value(serde_json::json!({
                "provisionKeySecretRef": {"name": "pk"},
                flag: true,
            }))
            .unwrap();
            assert_eq!(only.enabled_grants().iter().collect::<Vec<_>>(), [grant]);
        }
    }

    #[test]
    fn application_schema_validates_secret_and_uris() {
        let schema = schema_of(&OAuthApplication::crd());
        let spec = &schema["properties"]["spec"];
        assert_eq!(
            spec["x-kubernetes-validations"].as_array().unwrap().len(),
            2
        );
        let props = &spec["properties"];
        assert_eq!(props["clientId"]["minLength"], 1);
        assert_eq!(props["clientType"]["default"], "confidential");
        assert_eq!(props["redirectUris"]["items"]["format"], "uri");
        assert!(props["redirectUris"]["x-kubernetes-validations"].is_array());
        assert_eq!(
            props["allowedGrants"]["items"]["enum"],
            serde_json::json!([
                "authorization_code",
                "implicit",
                "client_credentials",
                "password",
                "refresh_token"
            ])
        );
    }

    #[test]
    fn serde_defaults_match_kong() {
        let spec: OAuthServiceSpec = serde_json::from_value(serde_json::json!({
            "upstream": {"port": 52773},
            "routes": [{"pathPrefix": "/event"}],
            "oauth2": {"provisionKeySecretRef": {"name": "pk"}, "enablePasswordGrant": true},
        }))
        .unwrap();
        assert!(spec.routes[0].strip_path);
        assert_eq!(spec.oauth2.token_expiration, 7200);
        assert_eq!(spec.oauth2.refresh_token_ttl, 1_209_600);
        assert_eq!(spec.oauth2.auth_header_name, "authorization");
        assert_eq!(spec.oauth2.pkce, Pkce::Lax);
        assert_eq!(spec.oauth2.provision_key_secret_ref.key, "provisionKey");
        assert!(!spec.oauth2.mandatory_scope);
    }

    #[test]
    fn crds_yaml_is_deterministic_multi_document() {
        let yaml = crds_yaml();
        assert_eq!(yaml, crds_yaml());
        assert!(yaml.starts_with("---\n"));
        assert_eq!(yaml.matches("---\n").count(), 3);
        assert!(!yaml.contains("serialization failed"));
    }
}
