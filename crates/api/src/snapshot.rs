//! The `Snapshot`: everything one sidecar needs to serve, as plain serde data.
//!
//! The same type is built from manifest files (standalone mode) and by the controller, and
//! pushed to sidecars as JSON. It holds no secret in the clear: client secrets and provision
//! keys are [`SecretDigest`]s. The one secret it carries is the key that seals its
//! namespace's token records in Redis ([`NamespaceStoreKey`]), which never shows in `Debug`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::SecretDigest;

/// Kong's default `token_expiration`, in seconds.
pub const DEFAULT_TOKEN_EXPIRATION: u32 = 7200;
/// Kong's default `refresh_token_ttl`: two weeks, in seconds.
pub const DEFAULT_REFRESH_TOKEN_TTL: u32 = 1_209_600;
/// Kong's upper bound on `refresh_token_ttl`.
pub const MAX_REFRESH_TOKEN_TTL: u32 = 100_000_000;
/// Kong's default `auth_header_name`.
pub const DEFAULT_AUTH_HEADER_NAME: &str = "authorization";

/// Everything one sidecar serves. Services, consumers and applications are sorted by
/// (namespace, name) so that equal inputs give byte-equal snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Increases with every change the controller pushes; 0 for standalone mode.
    pub version: u64,
    pub services: Vec<Service>,
    pub consumers: Vec<Consumer>,
    pub applications: Vec<Application>,
    /// From the controller: the key that seals the pod's namespace's values in Redis, and
    /// that namespace's only. `None` in standalone mode (`--store-key-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_key: Option<NamespaceStoreKey>,
}

/// The store key of one namespace, as the controller derives it from its own: the current
/// one seals, the current and the previous one verify.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStoreKey {
    pub namespace: String,
    pub current: KeyMaterial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<KeyMaterial>,
}

/// Secret key bytes, base64 in JSON. `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(pub Vec<u8>);

/// One OAuthService: a protected backend and the plugin's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// Kong's `service_id`: the resource's uid, or a UUIDv5 of `namespace/name` when the
    /// resource has none (manifest files).
    pub id: Uuid,
    pub upstream: Upstream,
    pub routes: Vec<Route>,
    pub oauth2: OAuth2Settings,
    /// Kong's cors plugin on this service; `None`: no CORS header is added or answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::cors::Cors>,
}

/// Where authenticated traffic goes. The host is always 127.0.0.1: the sidecar only ever
/// fronts a container of its own pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    pub port: u16,
    /// Prefix prepended to the forwarded path, like the path of a Kong service URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Kong's `connect_timeout`, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub connect_timeout_ms: u32,
    /// Kong's `read_timeout`, in milliseconds: how long the response may take to begin, and
    /// then each wait for more of its body.
    #[serde(default = "default_timeout_ms")]
    pub read_timeout_ms: u32,
    /// Drop every request header with `_` in its name, as nginx does by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_underscore_headers: bool,
}

/// Kong's default `connect_timeout` and `read_timeout`: 60 s.
pub const DEFAULT_TIMEOUT_MS: u32 = 60_000;

fn default_timeout_ms() -> u32 {
    DEFAULT_TIMEOUT_MS
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Normalised: starts with `/`, no trailing `/` unless it is `/` itself.
    pub path_prefix: String,
    /// Kong's `strip_path`: remove the matched prefix before forwarding.
    pub strip_path: bool,
}

/// The plugin's configuration, with Kong's defaults already applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2Settings {
    pub scopes: Vec<String>,
    pub mandatory_scope: bool,
    pub provision_key: SecretDigest,
    /// Seconds; 0 means tokens never expire.
    pub token_expiration: u32,
    pub enable_authorization_code: bool,
    pub enable_implicit_grant: bool,
    pub enable_client_credentials: bool,
    pub enable_password_grant: bool,
    pub hide_credentials: bool,
    pub accept_http_if_already_terminated: bool,
    /// Consumer name used when a request carries no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<String>,
    pub global_credentials: bool,
    /// Lower-cased header name.
    pub auth_header_name: String,
    /// Seconds the token record lives; 0 means forever.
    pub refresh_token_ttl: u32,
    pub reuse_refresh_token: bool,
    pub persistent_refresh_token: bool,
    /// (beyond Kong) Seconds a swapped refresh token may be presented again before reuse
    /// revokes its chain; 0 = none.
    #[serde(default)]
    pub refresh_token_reuse_grace: u32,
    pub pkce: Pkce,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// (beyond Kong) RFC 8414's issuer, an https URL without a trailing `/`. The metadata
    /// document is served only when it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pkce {
    None,
    #[default]
    Lax,
    Strict,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    pub namespace: String,
    pub name: String,
    /// Kong's consumer id, sent upstream as `X-Consumer-ID`.
    pub id: Uuid,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// One OAuthApplication: Kong's oauth2 credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub namespace: String,
    pub name: String,
    /// Kong's `credential_id`.
    pub id: Uuid,
    /// Name of the Consumer (same namespace) this application belongs to.
    pub consumer: String,
    pub client_id: String,
    /// `None` for public clients registered without a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretDigest>,
    pub redirect_uris: Vec<String>,
    pub client_type: ClientType,
    pub hash_secret: bool,
    /// (beyond Kong) When set, the only scopes this application may obtain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_scopes: Option<Vec<String>>,
    /// (beyond Kong) When set, the only grants this application may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_grants: Option<Vec<GrantType>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    #[default]
    Confidential,
    Public,
}

// An OAuth 2.0 grant. Its names (on the wire, in the CRD, at the authorize endpoint) are all
// in one table, `GrantType::names`; serde's snake_case spelling is checked against it. Not a
// doc comment: that would become the CRD's description of `allowedGrants` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    Implicit,
    ClientCredentials,
    Password,
    RefreshToken,
}

// === impl Snapshot ===

impl Snapshot {
    pub fn consumer(&self, namespace: &str, name: &str) -> Option<&Consumer> {
        self.consumers
            .iter()
            .find(|c| c.namespace == namespace && c.name == name)
    }

    pub fn application_by_client_id(
        &self,
        namespace: &str,
        client_id: &str,
    ) -> Option<&Application> {
        self.applications
            .iter()
            .find(|a| a.namespace == namespace && a.client_id == client_id)
    }

    pub fn application_by_id(&self, id: Uuid) -> Option<&Application> {
        self.applications.iter().find(|a| a.id == id)
    }

    pub fn service_by_id(&self, id: Uuid) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }
}

// === impl NamespaceStoreKey ===

impl std::fmt::Debug for NamespaceStoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceStoreKey")
            .field("namespace", &self.namespace)
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}

// === impl KeyMaterial ===

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({} bytes)", self.0.len())
    }
}

impl Serialize for KeyMaterial {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for KeyMaterial {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Self)
            .map_err(|_| serde::de::Error::custom("a store key is not valid base64"))
    }
}

// === impl GrantType ===

/// What one grant is called in each place that names it.
struct GrantNames {
    /// `grant_type`, `allowedGrants` and the metadata's `grant_types_supported`.
    wire: &'static str,
    /// The OAuthService's (and the snapshot's) flag that switches the grant on, if it has one.
    enable_flag: Option<&'static str>,
    /// The authorize endpoint's `response_type`, for the grants it serves.
    response_type: Option<&'static str>,
}

impl GrantType {
    /// Every grant, in the order the metadata document lists them.
    pub const ALL: [Self; 5] = [
        Self::AuthorizationCode,
        Self::Implicit,
        Self::ClientCredentials,
        Self::Password,
        Self::RefreshToken,
    ];

    /// The one table of names: a new grant is added here, and the compiler then asks for it
    /// wherever grants are matched on.
    const fn names(self) -> GrantNames {
        match self {
            Self::AuthorizationCode => GrantNames {
                wire: "authorization_code",
                enable_flag: Some("enableAuthorizationCode"),
                response_type: Some("code"),
            },
            Self::Implicit => GrantNames {
                wire: "implicit",
                enable_flag: Some("enableImplicitGrant"),
                response_type: Some("token"),
            },
            Self::ClientCredentials => GrantNames {
                wire: "client_credentials",
                enable_flag: Some("enableClientCredentials"),
                response_type: None,
            },
            Self::Password => GrantNames {
                wire: "password",
                enable_flag: Some("enablePasswordGrant"),
                response_type: None,
            },
            // Refresh tokens come with the grants that issue them; no flag of their own.
            Self::RefreshToken => GrantNames {
                wire: "refresh_token",
                enable_flag: None,
                response_type: None,
            },
        }
    }

    /// The grant's OAuth name, as in `grant_type=` and `allowedGrants`.
    pub const fn as_str(self) -> &'static str {
        self.names().wire
    }

    /// The camelCase `enable…` flag of an OAuthService that switches this grant on, as the
    /// CRD and the snapshot spell it; `None` for `refresh_token`.
    pub const fn enable_flag(self) -> Option<&'static str> {
        self.names().enable_flag
    }

    /// The `response_type` the authorize endpoint answers with this grant (`code`, `token`).
    pub const fn response_type(self) -> Option<&'static str> {
        self.names().response_type
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for GrantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no grant of [`GrantType::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a grant type")]
pub struct UnknownGrantType(String);

impl std::str::FromStr for GrantType {
    type Err = UnknownGrantType;

    /// Exact and case-sensitive, as OAuth's `grant_type` is.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|grant| grant.as_str() == name)
            .ok_or_else(|| UnknownGrantType(name.to_owned()))
    }
}

// === impl GrantSet ===

/// A set of grants, such as those a service enables. Copy, and iterated in
/// [`GrantType::ALL`]'s order.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantSet(u8);

impl GrantSet {
    pub const fn contains(self, grant: GrantType) -> bool {
        self.0 & grant.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = GrantType> {
        GrantType::ALL
            .into_iter()
            .filter(move |grant| self.contains(*grant))
    }
}

impl FromIterator<GrantType> for GrantSet {
    fn from_iter<I: IntoIterator<Item = GrantType>>(grants: I) -> Self {
        Self(grants.into_iter().fold(0, |bits, grant| bits | grant.bit()))
    }
}

impl std::fmt::Debug for GrantSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

// === impl OAuth2Settings ===

impl OAuth2Settings {
    /// The grants the service switches on with its `enable…` flags. Everything that asks
    /// which grants a service has asks this: the compiler's check that there is one, the
    /// token endpoint, the metadata document.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_key_travels_as_base64_and_never_shows_in_debug() {
        let snapshot = Snapshot {
            store_key: Some(NamespaceStoreKey {
                namespace: "shop".into(),
                current: KeyMaterial(b"very secret key material, 32 b!!".to_vec()),
                previous: None,
            }),
            ..Snapshot::default()
        };
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(
            json.contains(r#""storeKey":{"namespace":"shop","current":"dmVyeS"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), snapshot);
        let shown = format!("{snapshot:?}");
        assert!(!shown.contains("secret key"), "{shown}");
        assert!(shown.contains("KeyMaterial(32 bytes)"), "{shown}");
        // Standalone snapshots say nothing of it.
        assert!(
            !serde_json::to_string(&Snapshot::default())
                .unwrap()
                .contains("storeKey")
        );
    }

    #[test]
    fn the_table_names_every_grant_as_serde_and_the_schema_do() {
        // The schema is derived from the enum itself: a variant missing from ALL shows here.
        let schema = serde_json::to_value(schemars::schema_for!(GrantType)).unwrap();
        let names: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
        assert_eq!(schema["enum"], serde_json::json!(names));
        for grant in GrantType::ALL {
            let json = serde_json::to_string(&grant).unwrap();
            assert_eq!(json, format!("\"{grant}\""));
            assert_eq!(grant.as_str().parse::<GrantType>(), Ok(grant));
        }
        assert_eq!("password".parse::<GrantType>(), Ok(GrantType::Password));
        for not_a_grant in ["", "Password", "implicit ", "token", "code"] {
            assert!(not_a_grant.parse::<GrantType>().is_err(), "{not_a_grant:?}");
        }
        assert_eq!(
            "nope".parse::<GrantType>().unwrap_err().to_string(),
            "`nope` is not a grant type"
        );
    }

    #[test]
    fn enable_flags_are_the_settings_fields_camel_cased() {
        let flags: Vec<_> = GrantType::ALL.iter().map(|g| g.enable_flag()).collect();
        assert_eq!(
            flags,
            [
                Some("enableAuthorizationCode"),
                Some("enableImplicitGrant"),
                Some("enableClientCredentials"),
                Some("enablePasswordGrant"),
                None
            ]
        );
        // Each flag names the field enabled_grants() reads, as the snapshot's JSON spells it.
        let settings = crate::testing::snapshot::oauth2_settings();
        for grant in GrantType::ALL {
            let Some(flag) = grant.enable_flag() else {
                continue;
            };
            let mut json = serde_json::to_value(&settings).unwrap();
            json["enableAuthorizationCode"] = false.into();
            json["enableImplicitGrant"] = false.into();
            json["enableClientCredentials"] = false.into();
            json["enablePasswordGrant"] = false.into();
            json[flag] = true.into();
            let only: OAuth2Settings = serde_json::from_value(json).unwrap();
            assert_eq!(only.enabled_grants().iter().collect::<Vec<_>>(), [grant]);
        }
    }

    #[test]
    fn a_grant_set_iterates_in_table_order() {
        let set: GrantSet = [
            GrantType::RefreshToken,
            GrantType::Implicit,
            GrantType::Implicit,
        ]
        .into_iter()
        .collect();
        assert!(set.contains(GrantType::Implicit) && set.contains(GrantType::RefreshToken));
        assert!(!set.contains(GrantType::Password));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [GrantType::Implicit, GrantType::RefreshToken]
        );
        assert_eq!(format!("{set:?}"), "{Implicit, RefreshToken}");
        assert!(GrantSet::default().is_empty() && !set.is_empty());
        assert_eq!(
            GrantType::ALL.map(GrantType::response_type),
            [Some("code"), Some("token"), None, None, None]
        );
    }
}
