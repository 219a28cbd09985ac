//! Reading Kubernetes YAML manifests (files or folders, several documents per file).
// TODO(helper): implement.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;

use crate::resources::{Consumer, OAuthApplication, OAuthService};

#[derive(Debug, Default, Clone)]
pub struct Resources {
    pub services: Vec<OAuthService>,
    pub consumers: Vec<Consumer>,
    pub applications: Vec<OAuthApplication>,
    pub secrets: Vec<Secret>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub message: String,
}

pub fn load(_paths: &[PathBuf]) -> Result<Resources, ManifestError> {
    Ok(Resources::default())
}
