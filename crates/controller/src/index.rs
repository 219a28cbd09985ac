//! The index: every object the controller knows, turned into one snapshot per pod.
//!
//! Sources (kube watches or manifest files) `apply` and `delete` objects; the index never
//! fails. After every change it recompiles what the change touches in its namespace
//! ([`tollgate_api::compile::incremental`], made of the functions of the one compiler
//! standalone mode uses), and sends each pod whose snapshot changed a new version on that
//! pod's `watch` channel. A pod's snapshot holds the OAuthServices of its namespace whose
//! `podSelector` matches its labels, and every Consumer, OAuthApplication and Secret of its
//! namespace. Pods of one namespace selecting the same services share one `Arc<Snapshot>`,
//! with one version.
//!
//! Each snapshot also carries the key that seals its namespace's token records in Redis,
//! derived from the controller's root key for that namespace alone
//! ([`tollgate_store::KeyPair::for_namespace`]).
//!
//! The index also keeps what each object's status should say, for the status writer, and
//! which version each pod's sidecar was last handed, to count up-to-date pods.

mod namespace;
mod object;
mod pod;
mod reindex;
mod selector;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Secret};
use tokio::sync::watch;
use tollgate_api::Snapshot;
use tollgate_api::compile::incremental::Change;
use tollgate_api::manifests::Resources;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};
use tollgate_api::snapshot::{KeyMaterial, NamespaceStoreKey};
use tollgate_store::KeyPair;

use self::namespace::{Namespace, Stored};
use self::object::object_ref;
pub use self::object::{
    ACCEPTED, Kind, MAX_STALE_PODS_NAMED, ObjectRef, ObjectStatus, PodCounts, StalePod,
};
use self::pod::PodEntry;
pub use self::pod::{PodIdentity, Published, SnapshotRx};
pub use self::selector::selects;

/// Every object, by namespace. Not `Debug`: it holds Secrets.
pub struct Index {
    namespaces: BTreeMap<String, Namespace>,
    /// The last version handed out; versions increase across all pods.
    version: u64,
    /// Added to SecretNotFound messages: where the controller looks for Secrets.
    secret_hint: Option<String>,
    /// The root store key pair; each pod gets its namespace's keys derived from it.
    store_key: Option<KeyPair>,
    /// Bumped on every change, for the status writer.
    changes: watch::Sender<u64>,
    /// OAuthApplications compiled since the index was made: the work changes cost.
    applications_compiled: u64,
    /// Where each recompilation's time is recorded, when a process has metrics.
    reconcile_duration: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// An [`Index`] shared between the sources, the stream server and the status writer.
#[derive(Clone)]
pub struct SharedIndex(Arc<Mutex<Index>>);

// === impl Index ===

impl Index {
    /// An empty index whose first snapshot will have version `first_version`. Starting from
    /// the wall clock keeps versions increasing across controller restarts.
    pub fn new(first_version: u64) -> Self {
        Self {
            namespaces: BTreeMap::new(),
            version: first_version.saturating_sub(1),
            secret_hint: None,
            store_key: None,
            changes: watch::channel(0).0,
            applications_compiled: 0,
            reconcile_duration: None,
        }
    }

    /// Records the time of each namespace's recompilation in `histogram`.
    pub fn with_reconcile_histogram(
        mut self,
        histogram: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        self.reconcile_duration = Some(histogram);
        self
    }

    /// Injected pods whose sidecar was handed their latest snapshot, an older one, and none.
    pub fn sidecar_generations(&self) -> (usize, usize, usize) {
        let (mut latest, mut older, mut none) = (0, 0, 0);
        for pod in self.namespaces.values().flat_map(|ns| ns.pods.values()) {
            match pod.delivered {
                Some(version) if version == pod.version => latest += 1,
                Some(_) => older += 1,
                None => none += 1,
            }
        }
        (latest, older, none)
    }

    /// OAuthApplications compiled since the index was made: what a change cost.
    pub fn applications_compiled(&self) -> u64 {
        self.applications_compiled
    }

    /// Snapshots carry the keys of their pod's namespace, derived from `root`.
    pub fn with_store_key(mut self, root: KeyPair) -> Self {
        self.store_key = Some(root);
        self
    }

    /// Adds `hint` to every SecretNotFound message (for example which label Secrets need).
    pub fn with_secret_hint(mut self, hint: impl Into<String>) -> Self {
        self.secret_hint = Some(hint.into());
        self
    }

    pub fn apply_service(&mut self, service: OAuthService) {
        self.apply(service);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.delete::<OAuthService>(namespace, name);
    }

    pub fn apply_consumer(&mut self, consumer: Consumer) {
        self.apply(consumer);
    }

    pub fn delete_consumer(&mut self, namespace: &str, name: &str) {
        self.delete::<Consumer>(namespace, name);
    }

    pub fn apply_application(&mut self, application: OAuthApplication) {
        self.apply(application);
    }

    pub fn delete_application(&mut self, namespace: &str, name: &str) {
        self.delete::<OAuthApplication>(namespace, name);
    }

    pub fn apply_secret(&mut self, secret: Secret) {
        self.apply(secret);
    }

    pub fn delete_secret(&mut self, namespace: &str, name: &str) {
        self.delete::<Secret>(namespace, name);
    }

    /// Adds a pod or updates its labels. A new pod gets its channel, holding its snapshot.
    pub fn apply_pod(&mut self, pod: &Pod) {
        if let Some(namespace) = self.insert_pod(pod) {
            self.reindex(&namespace);
        }
    }

    /// Forgets a pod. Its channel closes, which ends its sidecar's stream.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        let removed = self
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.pods.remove(name));
        if removed.is_some() {
            self.reindex(namespace);
        }
    }

    /// Replaces every OAuthService with `services` (a watch restarted, or files re-read).
    pub fn reset_services(&mut self, services: Vec<OAuthService>) {
        self.reset(None, services);
    }

    /// Replaces the services of `scope` (every namespace when `None`): one namespace's watch
    /// relisted leaves the other namespaces' objects alone.
    pub fn reset_services_in(&mut self, scope: Option<&str>, services: Vec<OAuthService>) {
        self.reset(scope, services);
    }

    pub fn reset_consumers(&mut self, consumers: Vec<Consumer>) {
        self.reset(None, consumers);
    }

    /// Replaces the consumers of `scope` (every namespace when `None`): one namespace's watch
    /// relisted leaves the other namespaces' objects alone.
    pub fn reset_consumers_in(&mut self, scope: Option<&str>, consumers: Vec<Consumer>) {
        self.reset(scope, consumers);
    }

    pub fn reset_applications(&mut self, applications: Vec<OAuthApplication>) {
        self.reset(None, applications);
    }

    /// Replaces the applications of `scope` (every namespace when `None`): one namespace's watch
    /// relisted leaves the other namespaces' objects alone.
    pub fn reset_applications_in(
        &mut self,
        scope: Option<&str>,
        applications: Vec<OAuthApplication>,
    ) {
        self.reset(scope, applications);
    }

    pub fn reset_secrets(&mut self, secrets: Vec<Secret>) {
        self.reset(None, secrets);
    }

    /// Replaces the secrets of `scope` (every namespace when `None`): one namespace's watch
    /// relisted leaves the other namespaces' objects alone.
    pub fn reset_secrets_in(&mut self, scope: Option<&str>, secrets: Vec<Secret>) {
        self.reset(scope, secrets);
    }

    /// Replaces every pod with `pods`. Pods that stay keep their channel.
    pub fn reset_pods(&mut self, pods: &[Pod]) {
        self.reset_pods_in(None, pods);
    }

    /// Replaces the pods of `scope` (every namespace when `None`).
    pub fn reset_pods_in(&mut self, scope: Option<&str>, pods: &[Pod]) {
        let keep: BTreeSet<ObjectRef> = pods
            .iter()
            .filter_map(|p| object_ref(&p.metadata))
            .collect();
        let mut gone = Vec::new();
        for (namespace, ns) in &self.namespaces {
            if scope.is_some_and(|scope| scope != namespace) {
                continue;
            }
            for name in ns.pods.keys() {
                let object = ObjectRef::new(namespace, name);
                if !keep.contains(&object) {
                    gone.push(object);
                }
            }
        }
        for object in gone {
            self.delete_pod(&object.namespace, &object.name);
        }
        for pod in pods {
            self.apply_pod(pod);
        }
    }

    /// Replaces everything with `resources` and `pods` at once (manifest files re-read), so
    /// that no pod is ever sent a snapshot made of half the old and half the new objects.
    pub fn replace_all(&mut self, resources: Resources, pods: &[Pod]) {
        let mut touched: BTreeSet<String> = self.namespaces.keys().cloned().collect();
        let keep: BTreeSet<ObjectRef> = pods
            .iter()
            .filter_map(|p| object_ref(&p.metadata))
            .collect();
        for (namespace, ns) in &mut self.namespaces {
            ns.pods.retain(|name, _| {
                keep.contains(&ObjectRef::new(namespace.as_str(), name.as_str()))
            });
        }
        let Resources {
            services,
            consumers,
            applications,
            secrets,
        } = resources;
        // Only what the files changed is compiled again.
        touched.extend(self.replace(None, services));
        touched.extend(self.replace(None, consumers));
        touched.extend(self.replace(None, applications));
        touched.extend(self.replace(None, secrets));
        touched.extend(pods.iter().filter_map(|p| self.insert_pod(p)));
        for namespace in touched {
            self.reindex(&namespace);
        }
    }

    /// Everything `namespace` configures, as one snapshot: what an import through the admin
    /// API is checked against. Empty for a namespace the index does not know.
    pub fn namespace_snapshot(&self, namespace: &str) -> Snapshot {
        self.namespaces
            .get(namespace)
            .map(|ns| tollgate_api::compile(&ns.resources(None)).snapshot)
            .unwrap_or_default()
    }

    /// The namespaces with any configuration: those a token list across namespaces walks.
    pub fn configured_namespaces(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .filter(|(_, ns)| {
                !(ns.services.is_empty() && ns.consumers.is_empty() && ns.applications.is_empty())
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The names a namespace gives token ids: its OAuthServices' by their id, and its
    /// Consumers' by their OAuthApplications' ids (ids are the objects' uids). No compiling.
    pub fn token_names(&self, namespace: &str) -> tollgate_admin::TokenNames {
        let mut names = tollgate_admin::TokenNames::default();
        let Some(ns) = self.namespaces.get(namespace) else {
            return names;
        };
        let id = |uid: &Option<String>| uid.as_deref().and_then(|u| uuid::Uuid::parse_str(u).ok());
        for (name, service) in &ns.services {
            if let Some(id) = id(&service.metadata.uid) {
                names.services.insert(id, name.clone());
            }
        }
        for application in ns.applications.values() {
            if let Some(id) = id(&application.metadata.uid) {
                names
                    .consumers
                    .insert(id, application.spec.consumer_ref.name.clone());
            }
        }
        names
    }

    /// What the pod's certificate is made from; `None` for a pod the index does not know.
    pub fn pod_identity(&self, namespace: &str, pod: &str) -> Option<PodIdentity> {
        let entry = self.namespaces.get(namespace)?.pods.get(pod)?;
        Some(entry.identity.clone())
    }

    /// The pod's snapshots, from the current one on; `None` for a pod the index does not know.
    pub fn subscribe(&self, namespace: &str, pod: &str) -> Option<SnapshotRx> {
        let entry = self.namespaces.get(namespace)?.pods.get(pod)?;
        Some(entry.tx.subscribe())
    }

    /// Records that the pod's sidecar was handed `version`.
    pub fn delivered(&mut self, namespace: &str, pod: &str, version: u64) {
        let Some(entry) = self
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.pods.get_mut(pod))
        else {
            return;
        };
        if entry.delivered != Some(version) {
            entry.delivered = Some(version);
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// A counter bumped on every change of snapshots, findings or deliveries.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The highest snapshot version handed out so far.
    pub fn latest_version(&self) -> u64 {
        self.version
    }

    /// The namespaces with at least one injected pod.
    pub fn namespaces_with_pods(&self) -> BTreeSet<String> {
        self.namespaces
            .iter()
            .filter(|(_, ns)| !ns.pods.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    pub fn pod_count(&self) -> usize {
        self.namespaces.values().map(|ns| ns.pods.len()).sum()
    }

    /// What every object's status should say, in a stable order.
    pub fn statuses(&self) -> Vec<ObjectStatus> {
        let hint = self.secret_hint.as_deref();
        let mut out = Vec::new();
        for (namespace, ns) in &self.namespaces {
            let mut memo = std::collections::HashMap::new();
            for (name, service) in &ns.services {
                let meta = &service.metadata;
                let status = ns.status(Kind::OAuthService, namespace, name, meta, hint, &mut memo);
                out.push(status);
            }
            for (name, consumer) in &ns.consumers {
                let meta = &consumer.metadata;
                out.push(ns.status(Kind::Consumer, namespace, name, meta, hint, &mut memo));
            }
            for (name, application) in &ns.applications {
                let meta = &application.metadata;
                let kind = Kind::OAuthApplication;
                out.push(ns.status(kind, namespace, name, meta, hint, &mut memo));
            }
        }
        out
    }

    /// The uid of the object of `kind` named `object`, as the sources last gave it: what an
    /// Event about it refers to.
    pub fn uid_of(&self, kind: Kind, object: &ObjectRef) -> Option<String> {
        let ns = self.namespaces.get(&object.namespace)?;
        let meta = match kind {
            Kind::OAuthService => &ns.services.get(&object.name)?.metadata,
            Kind::Consumer => &ns.consumers.get(&object.name)?.metadata,
            Kind::OAuthApplication => &ns.applications.get(&object.name)?.metadata,
        };
        meta.uid.clone()
    }

    /// The current status of the object of `kind` named `object`, as the sources last gave
    /// it.
    pub fn status_of(&self, kind: Kind, object: &ObjectRef) -> Option<serde_json::Value> {
        let ns = self.namespaces.get(&object.namespace)?;
        let status = match kind {
            Kind::OAuthService => serde_json::to_value(&ns.services.get(&object.name)?.status),
            Kind::Consumer => serde_json::to_value(&ns.consumers.get(&object.name)?.status),
            Kind::OAuthApplication => {
                serde_json::to_value(&ns.applications.get(&object.name)?.status)
            }
        };
        status.ok()
    }

    fn apply<K: Stored>(&mut self, object: K) {
        if let Some(namespace) = self.insert(object) {
            self.reindex(&namespace);
        }
    }

    /// Stores `object` without recompiling; returns its namespace.
    fn insert<K: Stored>(&mut self, object: K) -> Option<String> {
        let Some(key) = object_ref(object.metadata()) else {
            tracing::warn!("ignored an object without a name");
            return None;
        };
        let namespace = self.namespaces.entry(key.namespace.clone()).or_default();
        namespace.pending.push(K::change(key.name.clone()));
        K::map(namespace).insert(key.name, object);
        Some(key.namespace)
    }

    /// Stores a pod without recompiling; returns its namespace when anything changed.
    fn insert_pod(&mut self, pod: &Pod) -> Option<String> {
        let Some(object) = object_ref(&pod.metadata) else {
            tracing::warn!("ignored a Pod without a name");
            return None;
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let identity = PodIdentity::of(pod);
        let namespace = self.namespaces.entry(object.namespace.clone()).or_default();
        match namespace.pods.get_mut(&object.name) {
            Some(entry) if entry.labels == labels => {
                // A new IP or annotation changes no snapshot; a certificate request waiting
                // for the pod's IP is woken by the change count.
                if entry.identity != identity {
                    entry.identity = identity;
                    self.changes.send_modify(|n| *n += 1);
                }
                return None;
            }
            Some(entry) => {
                entry.labels = labels;
                entry.identity = identity;
            }
            None => {
                let (tx, _) = watch::channel(Published {
                    snapshot: Arc::default(),
                    made_at: Instant::now(),
                });
                namespace.pods.insert(
                    object.name.clone(),
                    PodEntry {
                        labels,
                        identity,
                        selected: Vec::new(),
                        // 0: never sent, so the first compilation always sends.
                        version: 0,
                        delivered: None,
                        tx,
                    },
                );
            }
        }
        Some(object.namespace)
    }

    fn delete<K: Stored>(&mut self, namespace: &str, name: &str) {
        let removed = self.namespaces.get_mut(namespace).and_then(|ns| {
            let removed = K::map(ns).remove(name)?;
            ns.pending.push(K::change(name.to_owned()));
            Some(removed)
        });
        if removed.is_some() {
            self.reindex(namespace);
        }
    }

    fn reset<K: Stored>(&mut self, scope: Option<&str>, objects: Vec<K>) {
        for namespace in self.replace(scope, objects) {
            self.reindex(&namespace);
        }
    }

    /// Replaces the objects of kind `K` in `scope` (every namespace when `None`) with
    /// `objects`, without recompiling: only the objects added, removed or changed become
    /// pending changes. Returns the namespaces of `scope` the index knows after it.
    fn replace<K: Stored>(&mut self, scope: Option<&str>, objects: Vec<K>) -> BTreeSet<String> {
        let mut incoming: BTreeMap<String, BTreeMap<String, K>> = BTreeMap::new();
        for object in objects {
            let Some(key) = object_ref(object.metadata()) else {
                continue;
            };
            if scope.is_some_and(|scope| scope != key.namespace) {
                continue;
            }
            incoming
                .entry(key.namespace)
                .or_default()
                .insert(key.name, object);
        }
        for namespace in incoming.keys() {
            self.namespaces.entry(namespace.clone()).or_default();
        }
        let mut touched = BTreeSet::new();
        for (name, ns) in &mut self.namespaces {
            if scope.is_some_and(|scope| scope != name) {
                continue;
            }
            touched.insert(name.clone());
            let new = incoming.remove(name).unwrap_or_default();
            let old = std::mem::take(K::map(ns));
            let mut changes: Vec<Change> = old
                .iter()
                .filter(|(name, object)| !new.get(*name).is_some_and(|n| n.compiles_as(object)))
                .map(|(name, _)| K::change(name.clone()))
                .collect();
            changes.extend(
                new.keys()
                    .filter(|name| !old.contains_key(*name))
                    .map(|name| K::change(name.clone())),
            );
            ns.pending.extend(changes);
            *K::map(ns) = new;
        }
        touched
    }

    /// Recompiles one namespace: new snapshots to the pods whose snapshot changed, and new
    /// findings for its objects.
    fn reindex(&mut self, namespace: &str) {
        let started = std::time::Instant::now();
        self.reindex_untimed(namespace);
        if let Some(histogram) = &self.reconcile_duration {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

// === impl SharedIndex ===

impl SharedIndex {
    pub fn new(index: Index) -> Self {
        Self(Arc::new(Mutex::new(index)))
    }

    /// The index, for one short, synchronous step. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves an index that is still consistent enough to
        // serve: every step either completed or left the maps as they were.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a pod of `namespace` gets of the store key: that namespace's keys only.
fn namespace_store_key(root: &KeyPair, namespace: &str) -> NamespaceStoreKey {
    let keys = root.for_namespace(namespace);
    NamespaceStoreKey {
        namespace: namespace.to_owned(),
        current: KeyMaterial(keys.current.expose().to_vec()),
        previous: keys.previous.map(|key| KeyMaterial(key.expose().to_vec())),
    }
}

#[cfg(test)]
mod tests;
