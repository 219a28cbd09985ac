//! Snapshot deltas: what changed between two snapshots of one pod, so that a change to one
//! application costs its own bytes on the stream rather than the whole snapshot's.
//!
//! [`diff`] and [`apply`] are pure and exact: `apply(old, diff(old, new)) == new`. Entries are
//! keyed by (namespace, name), which is what makes them unique in a snapshot, and compared
//! with `==`. [`apply`] builds the result beside its input and checks it as a whole snapshot
//! is checked ([`check`]), so a wrong or hostile delta is refused, never half applied.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::Snapshot;
use crate::snapshot::{Application, Consumer, NamespaceStoreKey, Service};

/// What turns the snapshot of version `from` into the one of version `version`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// The version of the snapshot this delta applies to, and to no other.
    pub from: u64,
    /// The version of the result.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub services: Changes<Service>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub consumers: Changes<Consumer>,
    #[serde(default, skip_serializing_if = "Changes::is_empty")]
    pub applications: Changes<Application>,
    /// Present only when the namespace's store key changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_key: Option<StoreKeyChange>,
}

/// The changes to one collection of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "T: Deserialize<'de>", serialize = "T: Serialize")
)]
pub struct Changes<T> {
    /// Entries added or changed, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub put: Vec<T>,
    /// Keys of the entries removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<EntryKey>,
}

/// What makes an entry unique in its collection of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryKey {
    pub namespace: String,
    pub name: String,
}

/// The store key after the change; `None`: the snapshot no longer carries one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreKeyChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<NamespaceStoreKey>,
}

/// Why a delta was refused. Names entries, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta applies to version {from}, the snapshot is version {current}")]
    WrongBase { from: u64, current: u64 },
    #[error("the delta goes from version {from} to {version}, not forward")]
    NotForward { from: u64, version: u64 },
    #[error("the delta removes {collection} {namespace}/{name}, which the snapshot lacks")]
    RemovesMissing {
        collection: &'static str,
        namespace: String,
        name: String,
    },
    #[error("the delta both puts and removes {collection} {namespace}/{name}")]
    PutAndRemoved {
        collection: &'static str,
        namespace: String,
        name: String,
    },
    #[error("the result is not a valid snapshot: {0}")]
    Invalid(#[from] InvalidSnapshot),
}

/// What a snapshot may not hold: the compiler never makes one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSnapshot {
    #[error("{collection} {namespace}/{name} appears twice")]
    DuplicateEntry {
        collection: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{collection} id {id} belongs to two entries")]
    DuplicateId {
        collection: &'static str,
        id: uuid::Uuid,
    },
    #[error("two applications of namespace {namespace} share one client_id")]
    DuplicateClientId { namespace: String },
}

/// An entry of a snapshot's collections: keyed by (namespace, name).
pub trait Entry: Clone + PartialEq {
    /// The collection's name, in errors.
    const COLLECTION: &'static str;
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn id(&self) -> uuid::Uuid;
}

// === impl Delta ===

impl Delta {
    /// How many entries the delta puts or removes.
    pub fn len(&self) -> usize {
        self.services.len() + self.consumers.len() + self.applications.len()
    }

    /// True when nothing but the version changes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.store_key.is_none()
    }
}

// === impl Changes ===

impl<T> Changes<T> {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.removed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.put.len() + self.removed.len()
    }
}

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Self {
            put: Vec::new(),
            removed: Vec::new(),
        }
    }
}

// === impl EntryKey ===

impl EntryKey {
    fn of<T: Entry>(entry: &T) -> Self {
        Self {
            namespace: entry.namespace().to_owned(),
            name: entry.name().to_owned(),
        }
    }
}

// === impl Entry ===

macro_rules! entry {
    ($type:ty, $collection:literal) => {
        impl Entry for $type {
            const COLLECTION: &'static str = $collection;
            fn namespace(&self) -> &str {
                &self.namespace
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn id(&self) -> uuid::Uuid {
                self.id
            }
        }
    };
}

entry!(Service, "service");
entry!(Consumer, "consumer");
entry!(Application, "application");

impl<T: Entry> Entry for std::sync::Arc<T> {
    const COLLECTION: &'static str = T::COLLECTION;
    fn namespace(&self) -> &str {
        T::namespace(self)
    }
    fn name(&self) -> &str {
        T::name(self)
    }
    fn id(&self) -> uuid::Uuid {
        T::id(self)
    }
}

/// What turns `old` into `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Delta {
    Delta {
        from: old.version,
        version: new.version,
        services: diff_entries(&old.services, &new.services),
        consumers: diff_entries(&old.consumers, &new.consumers),
        applications: diff_entries(&old.applications, &new.applications),
        store_key: (old.store_key != new.store_key).then(|| StoreKeyChange {
            key: new.store_key.clone(),
        }),
    }
}

fn diff_entries<T: Entry>(old: &[T], new: &[T]) -> Changes<T> {
    let before: HashMap<(&str, &str), &T> = old
        .iter()
        .map(|entry| ((entry.namespace(), entry.name()), entry))
        .collect();
    let put = new
        .iter()
        .filter(|entry| before.get(&(entry.namespace(), entry.name())) != Some(entry))
        .cloned()
        .collect();
    let after: HashSet<(&str, &str)> = new.iter().map(|e| (e.namespace(), e.name())).collect();
    let removed = old
        .iter()
        .filter(|entry| !after.contains(&(entry.namespace(), entry.name())))
        .map(EntryKey::of)
        .collect();
    Changes { put, removed }
}

/// `snapshot` with `delta` applied, checked as a whole snapshot is; `snapshot` is untouched
/// whatever happens.
pub fn apply(snapshot: &Snapshot, delta: &Delta) -> Result<Snapshot, DeltaError> {
    if delta.from != snapshot.version {
        return Err(DeltaError::WrongBase {
            from: delta.from,
            current: snapshot.version,
        });
    }
    if delta.version <= delta.from {
        return Err(DeltaError::NotForward {
            from: delta.from,
            version: delta.version,
        });
    }
    let result = Snapshot {
        version: delta.version,
        services: apply_entries(&snapshot.services, &delta.services)?,
        consumers: apply_entries(&snapshot.consumers, &delta.consumers)?,
        applications: apply_entries(&snapshot.applications, &delta.applications)?,
        store_key: match &delta.store_key {
            Some(change) => change.key.clone(),
            None => snapshot.store_key.clone(),
        },
    };
    check(&result)?;
    Ok(result)
}

fn apply_entries<T: Entry>(old: &[T], changes: &Changes<T>) -> Result<Vec<T>, DeltaError> {
    if changes.is_empty() {
        return Ok(old.to_vec());
    }
    let present: HashSet<(&str, &str)> = old.iter().map(|e| (e.namespace(), e.name())).collect();
    let removed: HashSet<(&str, &str)> = changes
        .removed
        .iter()
        .map(|key| (key.namespace.as_str(), key.name.as_str()))
        .collect();
    for key in &changes.removed {
        if !present.contains(&(key.namespace.as_str(), key.name.as_str())) {
            return Err(DeltaError::RemovesMissing {
                collection: T::COLLECTION,
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            });
        }
    }
    let put: HashSet<(&str, &str)> = changes
        .put
        .iter()
        .map(|e| (e.namespace(), e.name()))
        .collect();
    if let Some((namespace, name)) = put.intersection(&removed).next() {
        return Err(DeltaError::PutAndRemoved {
            collection: T::COLLECTION,
            namespace: (*namespace).to_owned(),
            name: (*name).to_owned(),
        });
    }
    let mut entries: Vec<T> = old
        .iter()
        .filter(|e| {
            let key = (e.namespace(), e.name());
            !removed.contains(&key) && !put.contains(&key)
        })
        .cloned()
        .chain(changes.put.iter().cloned())
        .collect();
    // Stable: two puts of one key stay in the delta's order, for `check` to refuse.
    entries.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    Ok(entries)
}

/// Refuses what the compiler never makes: two entries of one key or one id in a collection,
/// two applications of one namespace with one client_id. Expects collections sorted by
/// (namespace, name), as snapshots are.
pub fn check(snapshot: &Snapshot) -> Result<(), InvalidSnapshot> {
    check_entries(&snapshot.services)?;
    check_entries(&snapshot.consumers)?;
    check_entries(&snapshot.applications)?;
    let mut client_ids = HashSet::with_capacity(snapshot.applications.len());
    for application in &snapshot.applications {
        if !client_ids.insert((&application.namespace, &application.client_id)) {
            return Err(InvalidSnapshot::DuplicateClientId {
                namespace: application.namespace.clone(),
            });
        }
    }
    Ok(())
}

fn check_entries<T: Entry>(entries: &[T]) -> Result<(), InvalidSnapshot> {
    for pair in entries.windows(2) {
        if (pair[0].namespace(), pair[0].name()) == (pair[1].namespace(), pair[1].name()) {
            return Err(InvalidSnapshot::DuplicateEntry {
                collection: T::COLLECTION,
                namespace: pair[0].namespace().to_owned(),
                name: pair[0].name().to_owned(),
            });
        }
    }
    let mut ids = HashSet::with_capacity(entries.len());
    for entry in entries {
        if !ids.insert(entry.id()) {
            return Err(InvalidSnapshot::DuplicateId {
                collection: T::COLLECTION,
                id: entry.id(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
