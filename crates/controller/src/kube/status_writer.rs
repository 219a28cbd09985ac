//! The status writer: while this replica holds the Lease, it patches the status subresource
//! of every object whose status differs from what the index says it should be (server-side
//! apply, field manager [`FIELD_MANAGER`]), in debounced rounds, and records the Events each
//! change is worth ([`status::notices`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::Recorder;
use serde_json::Value;
use tokio::sync::watch;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};

use super::events;
use crate::index::{Index, Kind, ObjectRef, SharedIndex};
use crate::metrics::Metrics;
use crate::status::{self, FIELD_MANAGER};

/// A burst of changes (a `kubectl apply -f` of a folder) is written as one round of patches.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(200);
/// A patch the watch has not echoed back yet is not sent again for this long.
const STATUS_ECHO_WAIT: Duration = Duration::from_secs(10);
/// Failed patches are retried after this long.
const STATUS_RETRY: Duration = Duration::from_secs(5);

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

/// One status to write.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingStatus {
    pub kind: Kind,
    pub object: ObjectRef,
    /// What the object says now, or what this replica last sent when the watch has not
    /// echoed it yet: what the Events compare with.
    pub old: Value,
    pub new: Value,
}

/// The statuses that differ from what objects have, to apply. `recent` holds patches sent
/// but not yet seen back through the watch, which are not sent again until
/// [`STATUS_ECHO_WAIT`] passes.
pub fn pending_statuses(
    index: &Index,
    recent: &HashMap<(Kind, ObjectRef), (Value, Instant)>,
    now: &Time,
) -> Vec<PendingStatus> {
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
        let sent = recent.get(&key);
        if let Some((sent, at)) = sent
            && without_times(sent) == without_times(&desired)
            && at.elapsed() < STATUS_ECHO_WAIT
        {
            continue;
        }
        out.push(PendingStatus {
            kind: found.kind,
            object: found.object,
            old: sent.map_or(current, |(sent, _)| sent.clone()),
            new: desired,
        });
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

/// Writes statuses, and records their Events, after every change of the index while `leader`
/// says this replica holds the Lease, until `shutdown`.
pub(super) async fn write_statuses(
    client: Client,
    recorder: Recorder,
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
        for PendingStatus {
            kind,
            object,
            old,
            new: desired,
        } in pending
        {
            match patch_status(&client, kind, &object, &desired).await {
                Ok(()) => {
                    tracing::debug!(kind = kind.as_str(), %object, "status written");
                    let notices = status::notices(&old, &desired);
                    if !notices.is_empty() {
                        let uid = index.lock().uid_of(kind, &object);
                        let reference = events::reference(kind, &object, uid);
                        events::record(&recorder, &reference, &notices, &metrics).await;
                    }
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
