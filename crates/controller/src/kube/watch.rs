//! The watches that feed the index: one per kind and scope, each relist replacing the kind's
//! objects at once, and Secrets and Pods trimmed to what the compiler reads before they are
//! kept.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::index::{Index, SharedIndex};
use crate::metrics::Metrics;

/// What every watch of the controller shares: the index it feeds, and the count of watches
/// that have listed once, which makes the controller ready.
#[derive(Clone)]
pub(crate) struct Watch {
    index: SharedIndex,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicUsize>,
    /// How many watches must list once before the controller is ready.
    expected: usize,
    /// The namespace watched; `None`: every namespace.
    scope: Option<String>,
}

impl Watch {
    /// Watches of every namespace, of which `expected` must list once before the controller
    /// is ready.
    pub(crate) fn new(index: SharedIndex, metrics: Arc<Metrics>, expected: usize) -> Self {
        Self {
            index,
            metrics,
            synced: Arc::new(AtomicUsize::new(0)),
            expected,
            scope: None,
        }
    }

    /// The same watches, of `scope` only (`None`: every namespace); they count towards the
    /// same readiness.
    pub(crate) fn in_scope(&self, scope: Option<String>) -> Self {
        Self {
            scope,
            ..self.clone()
        }
    }

    /// Feeds the index from one watch until the process stops. Errors are retried with
    /// kube's default backoff; a relist replaces the kind's objects at once.
    pub(crate) async fn run<K>(
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
                    self.metrics.watch_restarted(&kind);
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
pub(crate) fn trim_secret(mut secret: Secret) -> Secret {
    secret.metadata.annotations = None;
    secret.metadata.managed_fields = None;
    secret
}

/// A Pod keeps only its name, namespace, uid and labels, and what its serving certificate is
/// made from: its IPs and its `tollgate.dev/tls-dns-names` annotation.
pub(crate) fn trim_pod(pod: Pod) -> Pod {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
