//! `tollgate migrate kong`: Kong's declarative configuration in (`deck dump`, `kong config
//! db_export`), tollgate's manifests out. Pure: text in, manifests, warnings and token import
//! bodies out; the binary reads the file and prints.
//!
//! Every Kong service or route with the oauth2 plugin becomes an OAuthService (its provision
//! key in a Secret), every consumer a Consumer, every oauth2 credential an OAuthApplication
//! (its client secret in a Secret). What tollgate cannot express is one warning each, naming
//! the Kong object: nothing is dropped unseen.
#![forbid(unsafe_code)]

mod convert;
pub mod kong;
pub mod names;
mod output;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use tollgate_api::manifests::Resources;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};

pub use tollgate_api::token_import::TokenImport;

/// The namespace of the manifests when none is asked for.
pub const DEFAULT_NAMESPACE: &str = tollgate_api::manifests::DEFAULT_NAMESPACE;

/// Why the file could not be migrated: one line naming it and where in it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct MigrateError {
    pub path: PathBuf,
    pub message: String,
}

/// One manifest, with an optional comment written above it in YAML.
pub struct Document {
    pub comment: Option<String>,
    pub object: Object,
}

/// The kinds a migration writes.
pub enum Object {
    Service(Box<OAuthService>),
    Consumer(Box<Consumer>),
    Application(Box<OAuthApplication>),
    Secret(Box<Secret>),
}

/// What a Kong file became.
pub struct Migration {
    /// In output order: each OAuthService and its Secret, the Consumers, each
    /// OAuthApplication and its Secret.
    pub documents: Vec<Document>,
    /// One line each, naming the Kong object, of what was not carried over.
    pub warnings: Vec<String>,
    /// The exported `oauth2_tokens` of migrated credentials, as the admin API imports them.
    pub tokens: Vec<TokenImport>,
}

/// Reads and migrates the Kong file at `path` into `namespace`.
pub fn kong_file(path: &Path, namespace: &str) -> Result<Migration, MigrateError> {
    let bytes = std::fs::read(path).map_err(|e| MigrateError {
        path: path.to_owned(),
        message: format!("cannot read it: {e}"),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| MigrateError {
        path: path.to_owned(),
        message: "not UTF-8 text".into(),
    })?;
    kong(path, &text, namespace)
}

/// Migrates Kong's declarative configuration `text` into `namespace`; `path` only names the
/// file in errors.
pub fn kong(path: &Path, text: &str, namespace: &str) -> Result<Migration, MigrateError> {
    let error = |message: String| MigrateError {
        path: path.to_owned(),
        message,
    };
    if names::dns_label(namespace).as_deref() != Some(namespace) {
        return Err(error(format!(
            "namespace `{namespace}` is not a DNS label (lower-case letters, digits and `-`)"
        )));
    }
    let config = parse(text).map_err(error)?;
    convert::convert(&config, namespace).map_err(error)
}

/// The text as Kong's declarative format, or where and why it is not.
fn parse(text: &str) -> Result<kong::Config, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| format!("invalid YAML or JSON: {e}"))?;
    if !value.is_mapping() {
        return Err(
            "not Kong's declarative configuration: expected a mapping with `_format_version`"
                .into(),
        );
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        kong::field_error(&path, e.into_inner())
    })
}

impl Migration {
    /// The manifests as the loader reads them, for checking what a migration wrote.
    pub fn resources(&self) -> Resources {
        let mut resources = Resources::default();
        for document in &self.documents {
            match &document.object {
                Object::Service(s) => resources.services.push((**s).clone()),
                Object::Consumer(c) => resources.consumers.push((**c).clone()),
                Object::Application(a) => resources.applications.push((**a).clone()),
                Object::Secret(s) => resources.secrets.push((**s).clone()),
            }
        }
        resources
    }

    /// Multi-document YAML, each document after `---`, its comment above it.
    pub fn to_yaml(&self, source: &str) -> String {
        output::yaml(self, source)
    }

    /// One `kind: List` of every manifest, as `kubectl get -o json` writes several.
    pub fn to_json(&self) -> String {
        output::json(self)
    }

    /// One JSON object per line, each the body of a `POST /{namespace}/oauth2_tokens`.
    pub fn tokens_jsonl(&self) -> String {
        output::tokens_jsonl(&self.tokens)
    }
}
