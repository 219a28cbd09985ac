//! Kong's declarative configuration, as `deck dump` (nested) and `kong config db_export` (flat,
//! foreign keys as ids) write it, in the formats "1.1", "2.1" and "3.0": parsed once into
//! these types. Fields tollgate reads are typed; every other field lands in `other`, so that
//! the conversion can name what it does not carry over instead of dropping it unseen.
//!
//! No type here derives `Debug`: credentials, plugin configurations and tokens hold secrets.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

/// The formats Kong reads; "1.1" and "2.1" paths are regexes when they look like one, "3.0"
/// ones when they start with `~`.
pub const FORMAT_VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];

/// The fields whose value is a secret: an error about one names the field, never its value
/// (serde's "invalid type: integer `…`" would print it).
pub const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "provision_key",
    "access_token",
    "refresh_token",
];

/// Serde's error at `path` (`services[0].routes[1].paths`, `.` for the whole file) as one
/// line; for a secret field, without the value it quotes.
pub fn field_error(path: &str, error: impl std::fmt::Display) -> String {
    let field = path.rsplit(['.', ']']).next().unwrap_or(path);
    if SECRET_FIELDS.contains(&field) {
        format!("{path}: invalid type, expected a string (the value is not shown: it is a secret)")
    } else if path == "." {
        error.to_string()
    } else {
        format!("{path}: {error}")
    }
}

/// A whole declarative file.
#[derive(Deserialize)]
pub struct Config {
    #[serde(rename = "_format_version", default)]
    pub format_version: Option<Value>,
    #[serde(rename = "_workspace", default)]
    pub workspace: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub services: Vec<Service>,
    #[serde(default, deserialize_with = "list")]
    pub routes: Vec<Route>,
    #[serde(default, deserialize_with = "list")]
    pub plugins: Vec<Plugin>,
    #[serde(default, deserialize_with = "list")]
    pub consumers: Vec<Consumer>,
    #[serde(default, deserialize_with = "list")]
    pub oauth2_credentials: Vec<Credential>,
    #[serde(default, deserialize_with = "list")]
    pub oauth2_tokens: Vec<Token>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A reference to another entity: its id or its name (endpoint key), or `{id: …}`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum Ref {
    Key(String),
    Object(BTreeMap<String, Value>),
}

#[derive(Deserialize)]
pub struct Service {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u32>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub connect_timeout: Option<u32>,
    #[serde(default)]
    pub read_timeout: Option<u32>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "list")]
    pub routes: Vec<Route>,
    #[serde(default, deserialize_with = "list")]
    pub plugins: Vec<Plugin>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
pub struct Route {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub service: Option<Ref>,
    #[serde(default, deserialize_with = "list")]
    pub paths: Vec<String>,
    #[serde(default)]
    pub strip_path: Option<bool>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "list")]
    pub plugins: Vec<Plugin>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
pub struct Plugin {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub service: Option<Ref>,
    #[serde(default)]
    pub route: Option<Ref>,
    #[serde(default)]
    pub consumer: Option<Ref>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The oauth2 plugin's `config`, every field of Kong's schema (3.x, and 2.x's
/// `persistent_refresh_token`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct OAuth2PluginConfig {
    #[serde(deserialize_with = "list")]
    pub scopes: Vec<String>,
    pub mandatory_scope: Option<bool>,
    pub provision_key: Option<String>,
    pub token_expiration: Option<f64>,
    pub enable_authorization_code: Option<bool>,
    pub enable_implicit_grant: Option<bool>,
    pub enable_client_credentials: Option<bool>,
    pub enable_password_grant: Option<bool>,
    pub hide_credentials: Option<bool>,
    pub accept_http_if_already_terminated: Option<bool>,
    pub anonymous: Option<String>,
    pub global_credentials: Option<bool>,
    pub auth_header_name: Option<String>,
    pub refresh_token_ttl: Option<f64>,
    pub reuse_refresh_token: Option<bool>,
    pub persistent_refresh_token: Option<bool>,
    pub pkce: Option<String>,
    pub realm: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The cors plugin's `config`, every field of Kong's schema (3.x). `methods` stays text, so
/// that a method tollgate does not know is named rather than refused with the whole file.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CorsPluginConfig {
    #[serde(deserialize_with = "list")]
    pub origins: Vec<String>,
    /// `None` when absent or null: Kong's default, every method.
    pub methods: Option<Vec<String>>,
    #[serde(deserialize_with = "list")]
    pub headers: Vec<String>,
    #[serde(deserialize_with = "list")]
    pub exposed_headers: Vec<String>,
    pub credentials: Option<bool>,
    pub max_age: Option<f64>,
    pub private_network: Option<bool>,
    pub preflight_continue: Option<bool>,
    pub allow_origin_absent: Option<bool>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
pub struct Consumer {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub custom_id: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "list")]
    pub oauth2_credentials: Vec<Credential>,
    #[serde(default, deserialize_with = "list")]
    pub plugins: Vec<Plugin>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
pub struct Credential {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub consumer: Option<Ref>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub hash_secret: Option<bool>,
    #[serde(default)]
    pub client_type: Option<String>,
    #[serde(default, deserialize_with = "list")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "list")]
    pub oauth2_tokens: Vec<Token>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// An `oauth2_tokens` row, as `kong config db_export` writes it.
#[derive(Deserialize)]
pub struct Token {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub credential: Option<Ref>,
    #[serde(default)]
    pub service: Option<Ref>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub authenticated_userid: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u32>,
    #[serde(default)]
    pub created_at: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub ttl: Option<u32>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

// === impl Ref ===

impl Ref {
    /// Whether this reference names an entity with this id or one of these names.
    pub fn matches(&self, id: Option<&str>, names: &[Option<&str>]) -> bool {
        let keys: Vec<&str> = match self {
            Self::Key(key) => vec![key.as_str()],
            Self::Object(map) => map.values().filter_map(Value::as_str).collect(),
        };
        keys.iter()
            .any(|key| Some(*key) == id || names.iter().any(|name| name.is_some_and(|n| n == *key)))
    }

    /// The reference as the file wrote it, to name it in a message.
    pub fn describe(&self) -> String {
        match self {
            Self::Key(key) => key.clone(),
            Self::Object(map) => map
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("…")))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A list that may also be written as `null` or left empty (`services:`), as Kong allows.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}
