//! The names the index gives what it holds: the kinds that get a status, a namespaced object's
//! identity, and what the index found about an object, which its conditions are made from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tollgate_api::manifests::DEFAULT_NAMESPACE;

/// The kinds that get a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    OAuthService,
    Consumer,
    OAuthApplication,
}

/// A namespaced object's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

/// What the index found about one object: whether it compiled, and which pods hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStatus {
    pub kind: Kind,
    pub object: ObjectRef,
    /// `metadata.generation` of the object these findings describe.
    pub generation: Option<i64>,
    /// Valid and compiled into the namespace's snapshots.
    pub accepted: bool,
    /// Why (not) accepted. CamelCase, from a fixed set:
    /// [`tollgate_api::compile::Reason::as_str`] or [`ACCEPTED`].
    pub reason: &'static str,
    pub message: String,
    /// The pods whose snapshot should hold it (for an OAuthService those it selects; for a
    /// Consumer or OAuthApplication every injected pod of its namespace), and how many hold it.
    pub pods: PodCounts,
    /// The first [`MAX_STALE_PODS_NAMED`] pods that do not hold it yet, in name order; the
    /// others are only counted.
    pub stale: Vec<StalePod>,
}

/// How many pods should serve an object, and how many of their sidecars hold its current
/// form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCounts {
    pub selected: i32,
    pub up_to_date: i32,
}

/// A pod whose sidecar does not hold an object's current form yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StalePod {
    pub name: String,
    /// The snapshot version its sidecar was last handed; `None` when none was.
    pub holds: Option<u64>,
    /// The pod's latest snapshot version.
    pub latest: u64,
}

/// Stale pods named in a status; a status names a few, not a thousand.
pub const MAX_STALE_PODS_NAMED: usize = 3;

/// The reason of a `Ready: True` condition.
pub const ACCEPTED: &str = "Accepted";

// === impl Kind ===

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OAuthService => "OAuthService",
            Self::Consumer => "Consumer",
            Self::OAuthApplication => "OAuthApplication",
        }
    }
}

// === impl ObjectRef ===

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The object's namespace (as `kubectl apply` defaults it) and name; `None` without a name.
pub(super) fn object_ref(meta: &ObjectMeta) -> Option<ObjectRef> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = meta
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    Some(ObjectRef::new(namespace, name))
}
