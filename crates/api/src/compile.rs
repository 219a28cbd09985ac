//! resources → Snapshot. Pure: the controller and standalone mode both call [`compile`].
// TODO(helper): implement.

use crate::Snapshot;
use crate::manifests::Resources;

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

pub fn compile(_resources: &Resources) -> Compiled {
    Compiled::default()
}
