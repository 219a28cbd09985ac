//! One namespace compiled incrementally, for the controller: a change to one object
//! recompiles that object and what reads it, with the functions [`compile`](super::compile)
//! uses, so the snapshot and the findings are always what a whole compilation would give.
//!
//! What reads what, and so what a change recompiles:
//! - an OAuthApplication reads its Consumer (whether it compiled), its Secret, and who owns its
//!   client id (the oldest application claiming it): a change to one application recompiles
//!   it, and every application of a client id whose owner changed (their messages name it);
//! - a Consumer reads nothing else: its applications are recompiled only when it starts or
//!   stops compiling;
//! - a Secret: the applications and services that name it, nothing else;
//! - OAuthServices claim routes from one another, and are few: any change to one, or to a
//!   Secret one names, recompiles the services (of each pod selection, when next asked).
//!
//! Compiled entries are `Arc`s: unchanged ones are shared between generations.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    APPLICATION_KIND, CONSUMER_KIND, CompileError, SERVICE_KIND, SecretIndex, compile_application,
    compile_consumer, compile_services,
};
use crate::Snapshot;
use crate::resources::{Consumer, OAuthApplication, OAuthService};
use crate::snapshot;

/// The objects of one namespace, by name, as the controller's index stores them.
#[derive(Clone, Copy)]
pub struct NamespaceObjects<'a> {
    pub namespace: &'a str,
    pub services: &'a BTreeMap<String, OAuthService>,
    pub consumers: &'a BTreeMap<String, Consumer>,
    pub applications: &'a BTreeMap<String, OAuthApplication>,
    pub secrets: &'a BTreeMap<String, Secret>,
}

/// One object applied or deleted, by name; or everything replaced at once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Service(String),
    Consumer(String),
    Application(String),
    Secret(String),
    Everything,
}

/// What an update found different.
#[derive(Debug, Default)]
pub struct Updated {
    /// Consumers and OAuthApplications (kind, name) whose generation, compiled form or finding
    /// changed, or that were removed.
    pub changed: BTreeSet<(&'static str, String)>,
    /// The services may have changed: ask [`NamespaceCompilation::services`] again.
    pub services: bool,
    /// How many applications were compiled again: the cost of the update.
    pub recompiled: usize,
}

/// The services of one pod selection, compiled together (they claim routes from each other).
#[derive(Debug, Default, PartialEq)]
pub struct CompiledServices {
    pub services: Vec<snapshot::Service>,
    pub errors: Vec<CompileError>,
}

/// (creationTimestamp, name): the order in which applications of one namespace claim client
/// ids, as the whole compilation sorts them.
type Age = (Option<Time>, String);

type Compiled<T> = Result<Arc<T>, CompileError>;

/// One application as last compiled, with what it read.
struct ApplicationEntry {
    age: Age,
    generation: Option<i64>,
    /// Empty: claims nothing.
    client_id: String,
    consumer: String,
    secret: Option<String>,
    /// `None` until first compiled.
    result: Option<Compiled<snapshot::Application>>,
}

/// One namespace's compiled consumers and applications, the services of each selection asked
/// for, and who reads what. Not `Debug`: large, and of no use in a log.
#[derive(Default)]
pub struct NamespaceCompilation {
    consumers: BTreeMap<String, (Option<i64>, Compiled<snapshot::Consumer>)>,
    applications: BTreeMap<String, ApplicationEntry>,
    /// Compiled applications in the whole compilation's order: by name in the snapshot, then
    /// age.
    accepted: BTreeMap<(String, Age), Arc<snapshot::Application>>,
    /// Applications by client id, oldest (the owner) first.
    client_ids: HashMap<String, BTreeSet<Age>>,
    by_consumer: HashMap<String, BTreeSet<String>>,
    by_secret: HashMap<String, BTreeSet<String>>,
    /// By the selected services' names.
    services: HashMap<Vec<String>, Arc<CompiledServices>>,
}

// === impl NamespaceCompilation ===

impl NamespaceCompilation {
    /// Recompiles what `changes` touch. `objects` are the namespace's objects after them.
    pub fn update(
        &mut self,
        objects: &NamespaceObjects<'_>,
        changes: impl IntoIterator<Item = Change>,
    ) -> Updated {
        let mut updated = Updated::default();
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        for change in changes {
            match change {
                Change::Everything => {
                    updated.services = true;
                    let consumers: BTreeSet<String> = self
                        .consumers
                        .keys()
                        .chain(objects.consumers.keys())
                        .cloned()
                        .collect();
                    for name in consumers {
                        self.recompile_consumer(objects, &name, &mut dirty, &mut updated);
                    }
                    dirty.extend(self.applications.keys().cloned());
                    dirty.extend(objects.applications.keys().cloned());
                }
                Change::Service(_) => updated.services = true,
                Change::Consumer(name) => {
                    self.recompile_consumer(objects, &name, &mut dirty, &mut updated);
                }
                Change::Application(name) => {
                    dirty.insert(name);
                }
                Change::Secret(name) => {
                    if let Some(readers) = self.by_secret.get(&name) {
                        dirty.extend(readers.iter().cloned());
                    }
                    updated.services |= objects
                        .services
                        .values()
                        .any(|s| s.spec.oauth2.provision_key_secret_ref.name == name);
                }
            }
        }
        if updated.services {
            self.services.clear();
        }
        self.recompile_applications(objects, dirty, &mut updated);
        updated
    }

    /// The services `selected` (by name) compiled together, as a pod selecting them serves
    /// them. Compiled once per selection until a service, or a Secret one names, changes.
    pub fn services(
        &mut self,
        objects: &NamespaceObjects<'_>,
        selected: &[String],
    ) -> Arc<CompiledServices> {
        if let Some(found) = self.services.get(selected) {
            return found.clone();
        }
        let secrets = SecretIndex::Namespace {
            namespace: objects.namespace,
            secrets: objects.secrets,
        };
        let chosen = selected
            .iter()
            .filter_map(|name| objects.services.get(name));
        let (services, errors) = compile_services(chosen, &secrets);
        let compiled = Arc::new(CompiledServices { services, errors });
        self.services.insert(selected.to_vec(), compiled.clone());
        compiled
    }

    /// Forgets the services of selections no pod makes any more.
    pub fn retain_selections(&mut self, mut keep: impl FnMut(&[String]) -> bool) {
        self.services.retain(|selected, _| keep(selected));
    }

    /// The snapshot (version 0, no store key) of a pod that selects `services`.
    pub fn snapshot(&self, services: &CompiledServices) -> Snapshot {
        Snapshot {
            version: 0,
            services: services.services.clone(),
            consumers: self
                .consumers
                .values()
                .filter_map(|(_, c)| c.as_deref().ok().cloned())
                .collect(),
            applications: self.accepted.values().map(|a| (**a).clone()).collect(),
            store_key: None,
        }
    }

    /// Why the Consumer or OAuthApplication `name` is left out; `None` when it compiled (or
    /// is unknown).
    pub fn error(&self, kind: &str, name: &str) -> Option<&CompileError> {
        match kind {
            CONSUMER_KIND => self.consumers.get(name)?.1.as_ref().err(),
            APPLICATION_KIND => self.applications.get(name)?.result.as_ref()?.as_ref().err(),
            _ => None,
        }
    }

    /// Every Consumer's and OAuthApplication's finding, consumers first, by name.
    pub fn errors(&self) -> impl Iterator<Item = &CompileError> {
        let consumers = self
            .consumers
            .values()
            .filter_map(|(_, c)| c.as_ref().err());
        let applications = self
            .applications
            .values()
            .filter_map(|a| a.result.as_ref()?.as_ref().err());
        consumers.chain(applications)
    }

    /// The compiled form of the Consumer or OAuthApplication `name`, as JSON-able data.
    pub fn compiled_consumer(&self, name: &str) -> Option<&snapshot::Consumer> {
        self.consumers.get(name)?.1.as_deref().ok()
    }

    pub fn compiled_application(&self, name: &str) -> Option<&snapshot::Application> {
        self.applications
            .get(name)?
            .result
            .as_ref()?
            .as_deref()
            .ok()
    }

    fn recompile_consumer(
        &mut self,
        objects: &NamespaceObjects<'_>,
        name: &str,
        dirty: &mut BTreeSet<String>,
        updated: &mut Updated,
    ) {
        let new = objects
            .consumers
            .get(name)
            .map(|c| (c.metadata.generation, compile_consumer(c).map(Arc::new)));
        let old = match &new {
            Some(new) => self.consumers.insert(name.to_owned(), new.clone()),
            None => self.consumers.remove(name),
        };
        if old != new {
            updated.changed.insert((CONSUMER_KIND, name.to_owned()));
        }
        let was_known = old.is_some_and(|(_, c)| c.is_ok());
        let is_known = new.is_some_and(|(_, c)| c.is_ok());
        if was_known != is_known
            && let Some(readers) = self.by_consumer.get(name)
        {
            dirty.extend(readers.iter().cloned());
        }
    }

    fn recompile_applications(
        &mut self,
        objects: &NamespaceObjects<'_>,
        mut dirty: BTreeSet<String>,
        updated: &mut Updated,
    ) {
        // Who reads what, for the changed applications; and, for each client id one of them
        // had or has, its owner before and after.
        let mut owners_before: HashMap<String, Option<String>> = HashMap::new();
        for name in &dirty {
            let old = self.applications.get(name).map(|a| a.client_id.clone());
            let new = objects
                .applications
                .get(name)
                .map(|a| a.spec.client_id.clone());
            for client_id in old.into_iter().chain(new).filter(|c| !c.is_empty()) {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    owners_before.entry(client_id)
                {
                    let owner = self.owner(slot.key());
                    slot.insert(owner);
                }
            }
        }
        for name in &dirty {
            self.unregister(name);
            if let Some(application) = objects.applications.get(name) {
                self.register(name, application);
            }
        }
        for (client_id, before) in owners_before {
            if self.owner(&client_id) != before
                && let Some(claimants) = self.client_ids.get(&client_id)
            {
                dirty.extend(claimants.iter().map(|(_, name)| name.clone()));
            }
        }

        let secrets = SecretIndex::Namespace {
            namespace: objects.namespace,
            secrets: objects.secrets,
        };
        for name in dirty {
            let Some(application) = objects.applications.get(&name) else {
                self.applications.remove(&name);
                updated.changed.insert((APPLICATION_KIND, name));
                continue;
            };
            let result = self.compile_one(objects.namespace, application, &secrets);
            updated.recompiled += 1;
            let Some(entry) = self.applications.get_mut(&name) else {
                continue;
            };
            // Recompiled because its client id's owner changed: it was not unregistered.
            if let Some(Ok(compiled)) = &entry.result {
                self.accepted
                    .remove(&(compiled.name.clone(), entry.age.clone()));
            }
            if let Ok(compiled) = &result {
                self.accepted
                    .insert((compiled.name.clone(), entry.age.clone()), compiled.clone());
            }
            let generation = application.metadata.generation;
            if entry.result.as_ref() != Some(&result) || entry.generation != generation {
                updated.changed.insert((APPLICATION_KIND, name));
            }
            entry.result = Some(result);
            entry.generation = generation;
        }
    }

    /// Compiles one application with the one function the whole compilation uses, handing it
    /// the client id's owner and whether its consumer compiled.
    fn compile_one(
        &self,
        namespace: &str,
        application: &OAuthApplication,
        secrets: &SecretIndex<'_>,
    ) -> Compiled<snapshot::Application> {
        let client_id = &application.spec.client_id;
        let mut claimed = HashMap::new();
        if let Some(owner) = self.owner(client_id) {
            claimed.insert((namespace.to_owned(), client_id.clone()), owner);
        }
        let consumer = application.spec.consumer_ref.name.as_str();
        let mut known = HashSet::new();
        if self.consumers.get(consumer).is_some_and(|(_, c)| c.is_ok()) {
            known.insert((namespace, consumer));
        }
        compile_application(application, secrets, &known, &mut claimed).map(Arc::new)
    }

    fn owner(&self, client_id: &str) -> Option<String> {
        let (_, name) = self.client_ids.get(client_id)?.first()?;
        Some(name.clone())
    }

    /// Records what `name` reads. Its result stays the old one until it is recompiled.
    fn register(&mut self, name: &str, application: &OAuthApplication) {
        let spec = &application.spec;
        let age = (
            application.metadata.creation_timestamp.clone(),
            name.to_owned(),
        );
        if !spec.client_id.is_empty() {
            self.client_ids
                .entry(spec.client_id.clone())
                .or_default()
                .insert(age.clone());
        }
        let consumer = spec.consumer_ref.name.clone();
        self.by_consumer
            .entry(consumer.clone())
            .or_default()
            .insert(name.to_owned());
        let secret = spec.client_secret_ref.as_ref().map(|s| s.name.clone());
        if let Some(secret) = &secret {
            self.by_secret
                .entry(secret.clone())
                .or_default()
                .insert(name.to_owned());
        }
        let (result, generation) = match self.applications.remove(name) {
            Some(old) => (old.result, old.generation),
            None => (None, None),
        };
        self.applications.insert(
            name.to_owned(),
            ApplicationEntry {
                age,
                generation,
                client_id: spec.client_id.clone(),
                consumer,
                secret,
                result,
            },
        );
    }

    /// Forgets what `name` reads, and takes it out of the snapshot; keeps its entry (and
    /// result, to tell whether it changed) for [`Self::register`].
    fn unregister(&mut self, name: &str) {
        let Some(entry) = self.applications.get(name) else {
            return;
        };
        if let Some(Ok(compiled)) = &entry.result {
            self.accepted
                .remove(&(compiled.name.clone(), entry.age.clone()));
        }
        fn forget<K: std::hash::Hash + Eq, V: Ord>(
            map: &mut HashMap<K, BTreeSet<V>>,
            key: &K,
            value: &V,
        ) {
            if let Some(set) = map.get_mut(key) {
                set.remove(value);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        let name = name.to_owned();
        forget(&mut self.client_ids, &entry.client_id, &entry.age);
        forget(&mut self.by_consumer, &entry.consumer, &name);
        if let Some(secret) = &entry.secret {
            forget(&mut self.by_secret, secret, &name);
        }
    }
}

/// The kind name compilation findings give OAuthServices.
pub const SERVICE: &str = SERVICE_KIND;
/// The kind name compilation findings give Consumers.
pub const CONSUMER: &str = CONSUMER_KIND;
/// The kind name compilation findings give OAuthApplications.
pub const APPLICATION: &str = APPLICATION_KIND;

#[cfg(test)]
mod tests;
