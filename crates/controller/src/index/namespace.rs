//! One namespace of the index: its objects by kind and name, its pods, and the findings of its
//! last compilation, which make its objects' statuses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tollgate_api::compile::CompileError;
use tollgate_api::manifests::Resources;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};

use super::object::{ACCEPTED, Kind, ObjectRef, ObjectStatus};
use super::pod::PodEntry;

/// Every object of one namespace.
#[derive(Default)]
pub(super) struct Namespace {
    pub(super) services: BTreeMap<String, OAuthService>,
    pub(super) consumers: BTreeMap<String, Consumer>,
    pub(super) applications: BTreeMap<String, OAuthApplication>,
    pub(super) secrets: BTreeMap<String, Secret>,
    pub(super) pods: BTreeMap<String, PodEntry>,
    /// Findings of the last compilation, by (kind, name); absent means accepted.
    pub(super) errors: BTreeMap<(Kind, String), CompileError>,
}

/// The kinds stored as they are, by name, in their namespace.
pub(super) trait Stored: Sized {
    fn metadata(&self) -> &ObjectMeta;
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self>;
}

// === impl Namespace ===

impl Namespace {
    pub(super) fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.consumers.is_empty()
            && self.applications.is_empty()
            && self.secrets.is_empty()
            && self.pods.is_empty()
    }

    /// The compiler's input: the `selected` services (all of them when `None`), and every
    /// other object of the namespace.
    pub(super) fn resources(&self, selected: Option<&[String]>) -> Resources {
        Resources {
            services: self
                .services
                .iter()
                .filter(|(name, _)| selected.is_none_or(|s| s.contains(name)))
                .map(|(_, s)| s.clone())
                .collect(),
            consumers: self.consumers.values().cloned().collect(),
            applications: self.applications.values().cloned().collect(),
            secrets: self.secrets.values().cloned().collect(),
        }
    }

    pub(super) fn status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        meta: &ObjectMeta,
    ) -> ObjectStatus {
        let (ready, reason, message) = match self.errors.get(&(kind, name.to_owned())) {
            Some(error) => (false, error.reason.as_str(), error.message.clone()),
            None => (true, ACCEPTED, "configuration accepted".to_owned()),
        };
        ObjectStatus {
            kind,
            object: ObjectRef::new(namespace, name),
            generation: meta.generation,
            ready,
            reason,
            message,
            pods: None,
        }
    }
}

// === impl Stored ===

impl Stored for OAuthService {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.services
    }
}

impl Stored for Consumer {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.consumers
    }
}

impl Stored for OAuthApplication {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.applications
    }
}

impl Stored for Secret {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.secrets
    }
}
