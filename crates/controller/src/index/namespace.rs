//! One namespace of the index: its objects by kind and name, its pods, and the findings of its
//! last compilation, which make its objects' statuses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tollgate_api::Snapshot;
use tollgate_api::compile::incremental::{Change, NamespaceCompilation};
use tollgate_api::compile::{CompileError, Reason};
use tollgate_api::manifests::Resources;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};

use super::object::{
    ACCEPTED, Kind, MAX_STALE_PODS_NAMED, ObjectRef, ObjectStatus, PodCounts, StalePod,
};
use super::pod::PodEntry;

/// Every object of one namespace.
#[derive(Default)]
pub(super) struct Namespace {
    pub(super) services: BTreeMap<String, OAuthService>,
    pub(super) consumers: BTreeMap<String, Consumer>,
    pub(super) applications: BTreeMap<String, OAuthApplication>,
    pub(super) secrets: BTreeMap<String, Secret>,
    pub(super) pods: BTreeMap<String, PodEntry>,
    /// The objects compiled, entry by entry, and who reads what.
    pub(super) compilation: NamespaceCompilation,
    /// Objects applied or deleted since the last compilation.
    pub(super) pending: Vec<Change>,
    /// The snapshot last published to the pods of each selection (the names of the services
    /// they select): every pod of one selection holds the same `Arc`, with one version.
    pub(super) selections: HashMap<Vec<String>, Arc<Snapshot>>,
    /// The OAuthServices' findings, by name; absent means accepted. Consumers' and
    /// applications' are the compilation's.
    pub(super) service_errors: BTreeMap<String, CompileError>,
    /// For each object, by (kind, name): a fingerprint of its generation and compiled form,
    /// and the last snapshot version made before that form. Every later version holds it, so
    /// a pod whose sidecar was handed one of them serves it, whatever else changed since.
    pub(super) compiled_after: BTreeMap<(Kind, String), (u64, u64)>,
}

/// The kinds stored as they are, by name, in their namespace.
pub(super) trait Stored: Sized {
    fn metadata(&self) -> &ObjectMeta;
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self>;
    /// The change that applying or deleting the object named `name` makes.
    fn change(name: String) -> Change;
    /// Whether `other` compiles as `self` does: what a relist or a re-read of the files
    /// compares, so that only what changed is compiled again (a Secret's new value costs
    /// a PBKDF2 hash; a relist of 10,000 unchanged ones must not).
    fn compiles_as(&self, other: &Self) -> bool;
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

    /// Why the object is left out of snapshots; `None` when accepted.
    pub(super) fn error(&self, kind: Kind, name: &str) -> Option<&CompileError> {
        match kind {
            Kind::OAuthService => self.service_errors.get(name),
            Kind::Consumer | Kind::OAuthApplication => self.compilation.error(kind.as_str(), name),
        }
    }

    /// The pods that should hold an object whose current form every version after `after`
    /// holds (those `service` selects, or every pod), and those whose sidecar does.
    fn pods_holding(&self, service: Option<&str>, after: u64) -> (PodCounts, Vec<StalePod>) {
        let mut pods = PodCounts::default();
        let mut stale = Vec::new();
        for (pod_name, pod) in &self.pods {
            if service.is_some_and(|name| !pod.selected.iter().any(|s| s == name)) {
                continue;
            }
            pods.selected += 1;
            // A pod whose snapshot did not change since holds the same form in its older
            // version; one that got newer versions needs one of those.
            let needs = if pod.version > after {
                after + 1
            } else {
                pod.version
            };
            if pod.delivered.is_some_and(|delivered| delivered >= needs) {
                pods.up_to_date += 1;
            } else if stale.len() < MAX_STALE_PODS_NAMED {
                stale.push(StalePod {
                    name: pod_name.clone(),
                    holds: pod.delivered,
                    latest: pod.version,
                });
            }
        }
        (pods, stale)
    }

    /// `secret_hint` is added to a SecretNotFound message (where the controller looks);
    /// `memo` keeps the pod counts of Consumers and applications by `after`, for one pass.
    pub(super) fn status(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        meta: &ObjectMeta,
        secret_hint: Option<&str>,
        memo: &mut HashMap<u64, (PodCounts, Vec<StalePod>)>,
    ) -> ObjectStatus {
        let key = (kind, name.to_owned());
        let (accepted, reason, message) = match self.error(kind, name) {
            Some(error) => {
                let message = match secret_hint {
                    Some(hint) if error.reason == Reason::SecretNotFound => {
                        format!("{} ({hint})", error.message)
                    }
                    _ => error.message.clone(),
                };
                (false, error.reason.as_str(), message)
            }
            None => (true, ACCEPTED, "configuration accepted".to_owned()),
        };
        let after = self.compiled_after.get(&key).map_or(0, |(_, after)| *after);
        // Every pod of the namespace holds a Consumer or an OAuthApplication: their counts
        // depend on `after` alone, which most of them share (10,000 applications, 1,000 pods).
        let (pods, stale) = match kind {
            Kind::OAuthService => self.pods_holding(Some(name), after),
            Kind::Consumer | Kind::OAuthApplication => memo
                .entry(after)
                .or_insert_with(|| self.pods_holding(None, after))
                .clone(),
        };
        ObjectStatus {
            kind,
            object: ObjectRef::new(namespace, name),
            generation: meta.generation,
            accepted,
            reason,
            message,
            pods,
            stale,
        }
    }
}

// === impl Stored ===

impl Stored for OAuthService {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn compiles_as(&self, other: &Self) -> bool {
        // The status is the controller's own output, never the compiler's input.
        self.metadata == other.metadata && self.spec == other.spec
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.services
    }
    fn change(name: String) -> Change {
        Change::Service(name)
    }
}

impl Stored for Consumer {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn compiles_as(&self, other: &Self) -> bool {
        // The status is the controller's own output, never the compiler's input.
        self.metadata == other.metadata && self.spec == other.spec
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.consumers
    }
    fn change(name: String) -> Change {
        Change::Consumer(name)
    }
}

impl Stored for OAuthApplication {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn compiles_as(&self, other: &Self) -> bool {
        // The status is the controller's own output, never the compiler's input.
        self.metadata == other.metadata && self.spec == other.spec
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.applications
    }
    fn change(name: String) -> Change {
        Change::Application(name)
    }
}

impl Stored for Secret {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn compiles_as(&self, other: &Self) -> bool {
        self == other
    }
    fn map(namespace: &mut Namespace) -> &mut BTreeMap<String, Self> {
        &mut namespace.secrets
    }
    fn change(name: String) -> Change {
        Change::Secret(name)
    }
}
