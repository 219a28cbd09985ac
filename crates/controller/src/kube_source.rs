//! The API server as the index's source, and the only place besides [`crate::auth`] that
//! talks to it: watches feeding the index, the Lease that elects the status writer, status
//! patches (server-side apply), and the CA's Secret. Each call is a thin wrapper, the
//! decisions around it are pure functions tested without a cluster.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};

use crate::ca::Ca;
use crate::config::KubeSettings;
use crate::index::{Index, Kind, ObjectRef, SharedIndex};
use crate::metrics::Metrics;
use crate::status::{self, FIELD_MANAGER};

/// How long a Lease holder keeps it without renewing, as client-go's leader election.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others try to take it.
pub const LEASE_RETRY: Duration = Duration::from_secs(5);
/// A burst of changes (a `kubectl apply -f` of a folder) is written as one round of patches.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(200);
/// A patch the watch has not echoed back yet is not sent again for this long.
const STATUS_ECHO_WAIT: Duration = Duration::from_secs(10);
/// Failed patches are retried after this long.
const STATUS_RETRY: Duration = Duration::from_secs(5);

/// Keys of the CA Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";

/// The five watches per watched scope (the cluster, or each of --watch-namespaces); the
/// controller is ready when each has listed its objects once.
const WATCHES_PER_SCOPE: usize = 5;

/// What a replica does with the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Ours: renew it.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Starts the watches, the Lease loop and the status writer.
pub fn spawn(
    client: Client,
    settings: KubeSettings,
    index: SharedIndex,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    // The whole cluster, or each namespace of --watch-namespaces (namespaced Roles suffice).
    let scopes: Vec<Option<String>> = if settings.watch_namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let all = watcher::Config::default();
    let secrets = watcher::Config::default().labels(&settings.secret_label_selector);
    let pods = watcher::Config::default().labels(&settings.pod_label_selector);
    let watch = Watch {
        index: index.clone(),
        metrics: metrics.clone(),
        synced: Arc::new(AtomicUsize::new(0)),
        expected: WATCHES_PER_SCOPE * scopes.len(),
        scope: None,
    };
    let (leader_tx, leader_rx) = watch::channel(false);
    let lease_namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let mut tasks = Vec::new();
    for scope in scopes {
        let watch = Watch {
            scope: scope.clone(),
            ..watch.clone()
        };
        tasks.extend([
            tokio::spawn(watch.clone().run(
                api::<OAuthService>(&client, scope.as_deref()),
                all.clone(),
                |index, o| index.apply_service(o),
                |index, ns, name| index.delete_service(ns, name),
                |index, scope, objects| index.reset_services_in(scope, objects),
                |o| o,
            )),
            tokio::spawn(watch.clone().run(
                api::<Consumer>(&client, scope.as_deref()),
                all.clone(),
                |index, o| index.apply_consumer(o),
                |index, ns, name| index.delete_consumer(ns, name),
                |index, scope, objects| index.reset_consumers_in(scope, objects),
                |o| o,
            )),
            tokio::spawn(watch.clone().run(
                api::<OAuthApplication>(&client, scope.as_deref()),
                all.clone(),
                |index, o| index.apply_application(o),
                |index, ns, name| index.delete_application(ns, name),
                |index, scope, objects| index.reset_applications_in(scope, objects),
                |o| o,
            )),
            tokio::spawn(watch.clone().run(
                api::<Secret>(&client, scope.as_deref()),
                secrets.clone(),
                |index, o| index.apply_secret(o),
                |index, ns, name| index.delete_secret(ns, name),
                |index, scope, objects| index.reset_secrets_in(scope, objects),
                trim_secret,
            )),
            tokio::spawn(watch.clone().run(
                api::<Pod>(&client, scope.as_deref()),
                pods.clone(),
                |index, o| index.apply_pod(&o),
                |index, ns, name| index.delete_pod(ns, name),
                |index, scope, objects| index.reset_pods_in(scope, &objects),
                trim_pod,
            )),
        ]);
    }
    tasks.extend([
        tokio::spawn(hold_lease(
            Api::namespaced(client.clone(), &lease_namespace),
            settings.lease_name,
            settings.identity,
            leader_tx,
            metrics.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(write_statuses(client, index, leader_rx, metrics, shutdown)),
    ]);
    tasks
}

/// The API of `K` in `scope`: one namespace, or every namespace.
fn api<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

// === watches ===

#[derive(Clone)]
struct Watch {
    index: SharedIndex,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicUsize>,
    /// How many watches must list once before the controller is ready.
    expected: usize,
    /// The namespace watched; `None`: every namespace.
    scope: Option<String>,
}

impl Watch {
    /// Feeds the index from one watch until the process stops. Errors are retried with
    /// kube's default backoff; a relist replaces the kind's objects at once.
    async fn run<K>(
        self,
        api: Api<K>,
        config: watcher::Config,
        apply: fn(&mut Index, K),
        delete: fn(&mut Index, &str, &str),
        reset: fn(&mut Index, Option<&str>, Vec<K>),
        trim: fn(K) -> K,
    ) where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let kind = K::kind(&()).into_owned();
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut listed = Vec::new();
        let mut synced_once = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listed.clear(),
                Ok(Event::InitApply(object)) => listed.push(trim(object)),
                Ok(Event::InitDone) => {
                    reset(
                        &mut self.index.lock(),
                        self.scope.as_deref(),
                        std::mem::take(&mut listed),
                    );
                    if !synced_once {
                        synced_once = true;
                        tracing::info!(
                            kind,
                            namespace = self.scope.as_deref().unwrap_or("*"),
                            "listed"
                        );
                        if self.synced.fetch_add(1, Ordering::AcqRel) + 1 == self.expected {
                            self.metrics.set_ready(true);
                            tracing::info!("every watch listed: ready");
                        }
                    }
                }
                Ok(Event::Apply(object)) => apply(&mut self.index.lock(), trim(object)),
                Ok(Event::Delete(object)) => {
                    let namespace = object.namespace().unwrap_or_default();
                    delete(&mut self.index.lock(), &namespace, &object.name_any());
                }
                Err(error) => {
                    self.metrics.reconcile_error("Watch");
                    tracing::warn!(kind, %error, "watch failed; retrying");
                }
            }
        }
    }
}

fn watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures_util::Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, config)
}

/// A Secret keeps only what the compiler reads. `kubectl apply` leaves the whole Secret,
/// values included, in an annotation: never keep it.
fn trim_secret(mut secret: Secret) -> Secret {
    secret.metadata.annotations = None;
    secret.metadata.managed_fields = None;
    secret
}

/// A Pod keeps only its name, namespace, uid and labels, and what its serving certificate is
/// made from: its IPs and its `tollgate.dev/tls-dns-names` annotation.
fn trim_pod(pod: Pod) -> Pod {
    let annotations = pod.metadata.annotations.and_then(|mut all| {
        let names = all.remove(tollgate_inject::ANNOTATION_TLS_DNS_NAMES)?;
        Some([(tollgate_inject::ANNOTATION_TLS_DNS_NAMES.to_owned(), names)].into())
    });
    let status = pod.status.map(|status| PodStatus {
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name,
            namespace: pod.metadata.namespace,
            labels: pod.metadata.labels,
            uid: pod.metadata.uid,
            annotations,
            ..Default::default()
        },
        // Only whether it shares the node's network: such a pod's IP is the node's.
        spec: pod
            .spec
            .filter(|spec| spec.host_network == Some(true))
            .map(|_| PodSpec {
                host_network: Some(true),
                ..Default::default()
            }),
        status,
    }
}

// === the Lease ===

/// What to do with the Lease `spec` at `now`, for the replica `identity`.
pub fn lease_decision(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Take;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => return LeaseDecision::Take,
        Some(holder) if holder == identity => return LeaseDecision::Renew,
        Some(_) => {}
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(1));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.as_second());
    match renewed {
        Some(renewed) if renewed + duration > now.as_second() => LeaseDecision::Wait,
        _ => LeaseDecision::Take,
    }
}

/// The Lease spec after `identity` renews or takes it.
pub fn lease_spec(current: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseSpec {
    let ours = current.and_then(|s| s.holder_identity.as_deref()) == Some(identity);
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if ours {
            current.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || current.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One round: renews or takes the Lease when it may. `Ok(true)` while this replica holds it.
pub async fn try_lease(api: &Api<Lease>, name: &str, identity: &str) -> kube::Result<bool> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: Some(lease_spec(None, identity, now)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        };
    };
    if lease_decision(lease.spec.as_ref(), identity, now) == LeaseDecision::Wait {
        return Ok(false);
    }
    lease.spec = Some(lease_spec(lease.spec.as_ref(), identity, now));
    lease.metadata.managed_fields = None;
    // The resourceVersion read above makes this a compare-and-swap: of two replicas taking
    // an expired Lease at once, one gets 409.
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

async fn hold_lease(
    api: Api<Lease>,
    name: String,
    identity: String,
    leader: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewed: Option<Instant> = None;
    loop {
        match try_lease(&api, &name, &identity).await {
            Ok(held) => {
                last_renewed = held.then(Instant::now);
                set_leader(&leader, &metrics, held, &identity);
            }
            Err(error) => {
                metrics.reconcile_error("Lease");
                tracing::warn!(%error, lease = %name, "cannot read or renew the Lease");
                // Another replica may take an expired Lease: stop writing before it can.
                if last_renewed.is_none_or(|at| at.elapsed() >= LEASE_DURATION - LEASE_RETRY) {
                    set_leader(&leader, &metrics, false, &identity);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_RETRY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn set_leader(leader: &watch::Sender<bool>, metrics: &Metrics, held: bool, identity: &str) {
    let changed = leader.send_if_modified(|now| std::mem::replace(now, held) != held);
    if changed {
        metrics.leader.set(i64::from(held));
        if held {
            tracing::info!(identity, "holding the Lease: writing status");
        } else {
            tracing::info!(
                identity,
                "not holding the Lease: status is written by another replica"
            );
        }
    }
}

// === status ===

/// Patches the status subresource of one object with server-side apply.
pub async fn patch_status(
    client: &Client,
    kind: Kind,
    object: &ObjectRef,
    status: &Value,
) -> kube::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(status::apply_patch(kind, status));
    let (namespace, name) = (object.namespace.as_str(), object.name.as_str());
    match kind {
        Kind::OAuthService => {
            Api::<OAuthService>::namespaced(client.clone(), namespace)
                .patch_status(name, &params, &patch)
                .await?;
        }
        Kind::Consumer => {
            Api::<Consumer>::namespaced(client.clone(), namespace)
                .patch_status(name, &params, &patch)
                .await?;
        }
        Kind::OAuthApplication => {
            Api::<OAuthApplication>::namespaced(client.clone(), namespace)
                .patch_status(name, &params, &patch)
                .await?;
        }
    }
    Ok(())
}

/// The statuses that differ from what objects have, as (kind, object, status) to apply.
/// `recent` holds patches sent but not yet seen back through the watch, which are not sent
/// again until [`STATUS_ECHO_WAIT`] passes.
pub fn pending_statuses(
    index: &Index,
    recent: &HashMap<(Kind, ObjectRef), (Value, Instant)>,
    now: &Time,
) -> Vec<(Kind, ObjectRef, Value)> {
    let mut out = Vec::new();
    for found in index.statuses() {
        let Some(current) = index.status_of(found.kind, &found.object) else {
            continue;
        };
        let desired = status::desired(&found, &current, now);
        if status::up_to_date(&desired, &current) {
            continue;
        }
        let key = (found.kind, found.object.clone());
        if let Some((sent, at)) = recent.get(&key)
            && without_times(sent) == without_times(&desired)
            && at.elapsed() < STATUS_ECHO_WAIT
        {
            continue;
        }
        out.push((found.kind, found.object, desired));
    }
    out
}

/// A status without its transition times, to compare what two patches say.
fn without_times(status: &Value) -> Value {
    let mut status = status.clone();
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            if let Some(condition) = condition.as_object_mut() {
                condition.remove("lastTransitionTime");
            }
        }
    }
    status
}

async fn write_statuses(
    client: Client,
    index: SharedIndex,
    mut leader: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.lock().changes();
    let mut recent: HashMap<(Kind, ObjectRef), (Value, Instant)> = HashMap::new();
    loop {
        // Only the Lease holder writes; a new holder trusts nothing it sent before.
        if !*leader.borrow_and_update() {
            recent.clear();
            tokio::select! {
                _ = leader.changed() => continue,
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
        changes.borrow_and_update();
        let pending = pending_statuses(&index.lock(), &recent, &Time(Timestamp::now()));
        let mut failed = false;
        for (kind, object, desired) in pending {
            match patch_status(&client, kind, &object, &desired).await {
                Ok(()) => {
                    tracing::debug!(kind = kind.as_str(), %object, "status written");
                    recent.insert((kind, object), (desired, Instant::now()));
                }
                // Deleted meanwhile: the watch will say so.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => {
                    failed = true;
                    metrics.reconcile_error("StatusPatch");
                    tracing::warn!(kind = kind.as_str(), %object, %error, "cannot write status");
                }
            }
        }
        recent.retain(|_, (_, at)| at.elapsed() < STATUS_ECHO_WAIT);
        let retry = if failed || !recent.is_empty() {
            STATUS_RETRY
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = changes.changed() => {}
            _ = leader.changed() => {}
            _ = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        tokio::time::sleep(STATUS_DEBOUNCE).await;
    }
}

// === the webhook's configuration ===

/// How often the webhook configuration is checked: a `helm upgrade` resets its caBundle.
const WEBHOOK_CONFIGURATION_INTERVAL: Duration = Duration::from_secs(60);

/// Keeps the caBundle (and, with `url`, the URL) of tollgate's webhooks in the
/// MutatingWebhookConfiguration `name` pointing at this controller, until `shutdown`.
pub async fn keep_webhook_configuration(
    client: Client,
    name: String,
    ca_pem: String,
    url: Option<String>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    loop {
        match patch_webhook_configuration(&api, &name, &ca_pem, url.as_deref()).await {
            Ok(true) => tracing::info!(configuration = %name, "webhook configuration updated"),
            Ok(false) => {}
            Err(error) => {
                metrics.reconcile_error("WebhookConfiguration");
                tracing::warn!(configuration = %name, %error, "cannot update the webhook configuration");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WEBHOOK_CONFIGURATION_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One round: patches the configuration when it differs. `Ok(true)` when it was patched.
pub async fn patch_webhook_configuration(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_pem: &str,
    url: Option<&str>,
) -> kube::Result<bool> {
    let current = api.get(name).await?;
    let Some(patch) = tollgate_inject::webhook::configuration_patch(&current, ca_pem, url) else {
        return Ok(false);
    };
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(true)
}

// === the CA's Secret ===

/// The CA stored in `secret`; made and stored there when the Secret does not exist.
pub async fn load_or_create_ca(client: &Client, secret: &ObjectRef) -> anyhow::Result<Ca> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    for _ in 0..2 {
        if let Some(found) = api
            .get_opt(&secret.name)
            .await
            .with_context(|| format!("--ca-secret {secret}: cannot read the Secret"))?
        {
            return ca_from_secret(&found)
                .with_context(|| format!("--ca-secret {secret}: not a usable CA"));
        }
        let ca = Ca::generate().context("cannot make the controller's CA")?;
        match api
            .create(&PostParams::default(), &ca_secret(&secret.name, &ca))
            .await
        {
            Ok(_) => {
                tracing::info!(%secret, "made a new CA and stored it in its Secret");
                return Ok(ca);
            }
            // Another replica stored its CA first: use that one.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("--ca-secret {secret}: cannot create the Secret"));
            }
        }
    }
    anyhow::bail!("--ca-secret {secret}: the Secret keeps changing; retry")
}

/// The CA in a Secret's `ca.crt` and `ca.key`.
pub fn ca_from_secret(secret: &Secret) -> anyhow::Result<Ca> {
    let read = |key: &str| -> anyhow::Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .with_context(|| format!("no key `{key}`"))?;
        String::from_utf8(bytes.0.clone()).with_context(|| format!("`{key}` is not PEM text"))
    };
    let cert = read(CA_CERT_KEY)?;
    let key = read(CA_KEY_KEY)?;
    Ca::from_pem(&cert, &key).map_err(anyhow::Error::new)
}

/// The Secret that stores `ca`.
pub fn ca_secret(name: &str, ca: &Ca) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "tollgate".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            [
                (
                    CA_CERT_KEY.to_owned(),
                    ByteString(ca.cert_pem().as_bytes().to_vec()),
                ),
                (
                    CA_KEY_KEY.to_owned(),
                    ByteString(ca.key_pem().expose().as_bytes().to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn the_lease_is_taken_when_free_or_expired_and_renewed_by_its_holder() {
        assert_eq!(lease_decision(None, "a", at(100)), LeaseDecision::Take);
        let held = lease_spec(None, "a", at(100));
        assert_eq!(held.lease_transitions, Some(0));
        assert_eq!(
            lease_decision(Some(&held), "a", at(101)),
            LeaseDecision::Renew
        );
        assert_eq!(
            lease_decision(Some(&held), "b", at(101)),
            LeaseDecision::Wait
        );
        assert_eq!(
            lease_decision(Some(&held), "b", at(115)),
            LeaseDecision::Take
        );

        let renewed = lease_spec(Some(&held), "a", at(110));
        assert_eq!(renewed.acquire_time, held.acquire_time);
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = lease_spec(Some(&renewed), "b", at(130));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(130))));
        assert_eq!(taken.lease_transitions, Some(1));

        let released = LeaseSpec {
            holder_identity: None,
            ..held
        };
        assert_eq!(
            lease_decision(Some(&released), "b", at(101)),
            LeaseDecision::Take
        );
    }

    #[test]
    fn secrets_and_pods_are_trimmed() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                annotations: Some(
                    [(
                        "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                        "{\"stringData\":{\"clientSecret\":\"clientsecret\"}}".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(trim_secret(secret).metadata.annotations.is_none());
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some([("app".to_owned(), "iris".to_owned())].into()),
                annotations: Some([("a".to_owned(), "b".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(Default::default()),
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.7".into()),
                phase: Some("Running".into()),
                ..Default::default()
            }),
        };
        let mut annotated = pod.clone();
        let pod = trim_pod(pod);
        assert!(pod.spec.is_none() && pod.metadata.annotations.is_none());
        assert_eq!(pod.metadata.labels.unwrap()["app"], "iris");
        let status = pod.status.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        assert!(status.phase.is_none());
        annotated.metadata.annotations.as_mut().unwrap().insert(
            tollgate_inject::ANNOTATION_TLS_DNS_NAMES.to_owned(),
            "iris.shop.svc".to_owned(),
        );
        let mut host = annotated.clone();
        host.spec = Some(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(trim_pod(host).spec.unwrap().host_network, Some(true));
        let kept = trim_pod(annotated).metadata.annotations.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[tollgate_inject::ANNOTATION_TLS_DNS_NAMES],
            "iris.shop.svc"
        );
    }

    #[test]
    fn a_ca_survives_its_secret() {
        let ca = Ca::generate().unwrap();
        let secret = ca_secret("tollgate-ca", &ca);
        assert_eq!(secret.metadata.name.as_deref(), Some("tollgate-ca"));
        let back = ca_from_secret(&secret).unwrap();
        assert_eq!(back.cert_pem(), ca.cert_pem());
        let error = ca_from_secret(&Secret::default()).err().unwrap();
        assert!(error.to_string().contains("no key `ca.crt`"), "{error}");
    }
}
