//! Recompiling one namespace after a change: the objects that changed (and what reads them)
//! through the namespace's incremental compilation, one snapshot per pod selection shared by
//! every pod that makes it, and the findings that make the objects' statuses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tollgate_api::Snapshot;
use tollgate_api::compile::incremental::{self, NamespaceObjects};
use tollgate_api::compile::{CompileError, Reason};

use super::namespace::Namespace;
use super::object::Kind;
use super::pod::Published;
use super::{Index, namespace_store_key, selects};

impl Index {
    /// Recompiles what changed in `namespace`: a new snapshot for each pod selection whose
    /// content changed, handed to its pods, and new findings for its objects.
    pub(super) fn reindex_untimed(&mut self, namespace: &str) {
        let Some(ns) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if ns.is_empty() {
            self.namespaces.remove(namespace);
            self.changes.send_modify(|n| *n += 1);
            return;
        }

        // Versions made from here on hold every object's current form.
        let before = self.version;
        let changes = std::mem::take(&mut ns.pending);
        let Namespace {
            services,
            consumers,
            applications,
            secrets,
            pods,
            compilation,
            selections,
            service_errors,
            compiled_after,
            ..
        } = ns;
        let objects = NamespaceObjects {
            namespace,
            services,
            consumers,
            applications,
            secrets,
        };
        let updated = compilation.update(&objects, changes);
        self.applications_compiled += updated.recompiled as u64;

        // Replicas of one Deployment select the same services: they share one snapshot.
        let mut wanted: BTreeSet<Vec<String>> = BTreeSet::new();
        for pod in pods.values_mut() {
            pod.selected = services
                .iter()
                .filter(|(_, s)| selects(s.spec.pod_selector.as_ref(), &pod.labels))
                .map(|(name, _)| name.clone())
                .collect();
            if !wanted.contains(&pod.selected) {
                wanted.insert(pod.selected.clone());
            }
        }
        let store_key = self
            .store_key
            .as_ref()
            .map(|root| namespace_store_key(root, namespace));
        // Two services on one route conflict only when a pod selects both: those findings come
        // from the pods' selections.
        let mut route_conflicts: BTreeMap<String, CompileError> = BTreeMap::new();
        for selected in &wanted {
            let compiled = compilation.services(&objects, selected);
            for error in &compiled.errors {
                if error.kind == incremental::SERVICE && error.reason == Reason::RouteConflict {
                    route_conflicts
                        .entry(error.name.clone())
                        .or_insert_with(|| error.clone());
                }
            }
            let current = selections.get(selected);
            let may_differ = current.is_none_or(|current| {
                !updated.changed.is_empty()
                    || current.services != compiled.services
                    || current.store_key != store_key
            });
            if !may_differ {
                continue;
            }
            let snapshot = Snapshot {
                store_key: store_key.clone(),
                ..compilation.snapshot(&compiled)
            };
            if current.is_some_and(|current| same_content(current, &snapshot)) {
                continue;
            }
            // A version names one content: a new content always gets a new one.
            self.version += 1;
            let snapshot = Snapshot {
                version: self.version,
                ..snapshot
            };
            selections.insert(selected.clone(), Arc::new(snapshot));
        }
        selections.retain(|selected, _| wanted.contains(selected));
        // A pod that moved to another selection never goes back in versions: that selection's
        // snapshot is published again, unchanged, under a new version.
        for pod in pods.values() {
            if let Some(snapshot) = selections.get_mut(&pod.selected)
                && snapshot.version < pod.version
            {
                self.version += 1;
                *snapshot = Arc::new(Snapshot {
                    version: self.version,
                    ..(**snapshot).clone()
                });
            }
        }

        let now = Instant::now();
        for pod in pods.values_mut() {
            let Some(snapshot) = selections.get(&pod.selected) else {
                continue;
            };
            if pod.version != snapshot.version {
                pod.version = snapshot.version;
                pod.tx.send_replace(Published {
                    snapshot: snapshot.clone(),
                    made_at: now,
                });
            }
        }

        // The services' other findings do not depend on pods: they come from every service
        // of the namespace compiled together.
        let every: Vec<String> = services.keys().cloned().collect();
        let whole = compilation.services(&objects, &every);
        compilation.retain_selections(|selected| {
            selected == every.as_slice() || wanted.contains(selected)
        });
        service_errors.clear();
        for error in &whole.errors {
            if error.kind == incremental::SERVICE && error.reason != Reason::RouteConflict {
                service_errors.insert(error.name.clone(), error.clone());
            }
        }
        for (name, error) in route_conflicts {
            service_errors.entry(name).or_insert(error);
        }

        let mut record = |kind: Kind, name: &str, print: u64| {
            let key = (kind, name.to_owned());
            let after = match compiled_after.get(&key) {
                Some((old, after)) if *old == print => *after,
                _ => before,
            };
            compiled_after.insert(key, (print, after));
        };
        for (name, object) in services.iter() {
            let compiled = whole
                .services
                .binary_search_by(|s| s.name.as_str().cmp(name))
                .ok()
                .map(|i| &whole.services[i]);
            record(
                Kind::OAuthService,
                name,
                fingerprint(object.metadata.generation, compiled),
            );
        }
        for (kind, name) in &updated.changed {
            let print = match *kind {
                incremental::CONSUMER => consumers.get(name).map(|object| {
                    let compiled = compilation.compiled_consumer(name);
                    (
                        Kind::Consumer,
                        fingerprint(object.metadata.generation, compiled),
                    )
                }),
                _ => applications.get(name).map(|object| {
                    let compiled = compilation.compiled_application(name);
                    let print = fingerprint(object.metadata.generation, compiled);
                    (Kind::OAuthApplication, print)
                }),
            };
            if let Some((kind, print)) = print {
                record(kind, name, print);
            }
        }
        compiled_after.retain(|(kind, name), _| match kind {
            Kind::OAuthService => services.contains_key(name),
            Kind::Consumer => consumers.contains_key(name),
            Kind::OAuthApplication => applications.contains_key(name),
        });
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Whether two snapshots hold the same, whatever their versions.
fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    a.services == b.services
        && a.consumers == b.consumers
        && a.applications == b.applications
        && a.store_key == b.store_key
}

/// The generation of an object and its compiled form, hashed: the same print means that the
/// pods holding an older version hold what it is now.
fn fingerprint<T: serde::Serialize>(generation: Option<i64>, compiled: Option<&T>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    generation.hash(&mut hasher);
    compiled
        .and_then(|c| serde_json::to_vec(c).ok())
        .hash(&mut hasher);
    hasher.finish()
}
