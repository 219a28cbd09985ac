//! The API server as the index's source, and the only place besides [`crate::auth`] that
//! talks to it, one module per concern: `client` (the client, without kube's retries),
//! `watch` (the watches feeding the index), `lease` (the Lease that elects the status
//! writer), `status_writer` (server-side apply), `events` (the Events the status writer
//! records), `webhook_ca_bundle` (the webhook's caBundle), `api_service_ca_bundle` (the
//! aggregated API's caBundle), `request_header_config` (the front proxy's settings),
//! `kept_secret` (a Secret the controller reads or creates for itself: the CA's, the store
//! key's) and `ca_secret` (the CA's Secret). Each call is a thin wrapper; the decisions
//! around it are pure functions tested without a cluster.

mod api_service_ca_bundle;
mod ca_secret;
mod client;
mod events;
mod kept_secret;
mod lease;
mod request_header_config;
mod status_writer;
mod watch;
mod webhook_ca_bundle;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource};
use tokio::task::JoinHandle;
use tollgate_api::resources::{Consumer, OAuthApplication, OAuthService};

pub use self::api_service_ca_bundle::{api_service_patch, keep_api_service, patch_api_service};
pub use self::ca_secret::{CA_CERT_KEY, CA_KEY_KEY, ca_from_secret, ca_secret, load_or_create_ca};
pub use self::client::{api_client, client_without_retries};
pub use self::events::{event, record, recorder, reference};
pub use self::kept_secret::{KeptSecret, Reading, read_or_create};
pub use self::lease::{
    LEASE_DURATION, LEASE_RETRY, LeaseDecision, lease_decision, lease_spec, try_lease,
};
pub use self::request_header_config::keep_request_header_config;
pub use self::status_writer::{PendingStatus, patch_status, pending_statuses};
use self::watch::{Watch, trim_pod, trim_secret};
pub use self::webhook_ca_bundle::{keep_webhook_configuration, patch_webhook_configuration};
use crate::config::KubeSettings;
use crate::index::SharedIndex;
use crate::metrics::Metrics;

/// The five watches per watched scope (the cluster, or each of --watch-namespaces); the
/// controller is ready when each has listed its objects once.
const WATCHES_PER_SCOPE: usize = 5;

/// Starts the watches, the Lease loop and the status writer.
pub fn spawn(
    client: Client,
    settings: KubeSettings,
    index: SharedIndex,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
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
    let watch = Watch::new(
        index.clone(),
        metrics.clone(),
        WATCHES_PER_SCOPE * scopes.len(),
    );
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let recorder = events::recorder(client.clone(), &settings.identity);
    let lease_namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let mut tasks = Vec::new();
    for scope in scopes {
        let watch = watch.in_scope(scope.clone());
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
        tokio::spawn(lease::hold_lease(
            Api::namespaced(client.clone(), &lease_namespace),
            settings.lease_name,
            settings.identity,
            leader_tx,
            metrics.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(status_writer::write_statuses(
            client, recorder, index, leader_rx, metrics, shutdown,
        )),
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
