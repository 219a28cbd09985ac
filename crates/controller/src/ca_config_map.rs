//! The controller's CA certificate, published as a ConfigMap `tollgate-ca.crt` (key `ca.crt`,
//! as Kubernetes publishes `kube-root-ca.crt`) in every namespace with injected pods, so that
//! their clients can trust the certificates those pods serve. With `--redis-ca`, the CA of
//! Redis's certificate beside it (key `redis-ca.crt`), which injected sidecars mount: a CA is
//! public, and this is how it reaches namespaces the controller's own Secrets cannot. Kept by server-side apply, as
//! the NetworkPolicy of [`crate::network_policy`] is. The ConfigMap is made by a pure
//! function; only [`keep_ca_config_maps`] talks to the API server.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

use crate::index::SharedIndex;
use crate::network_policy::{FIELD_MANAGER, to_apply};

/// `--ca-config-map`: the name Kubernetes' own root CA's ConfigMap suggests.
pub const DEFAULT_CA_CONFIG_MAP: &str = "tollgate-ca.crt";
/// The key holding the PEM certificate.
pub const CA_KEY: &str = "ca.crt";
/// The key holding `--redis-ca`'s bundle, when the controller has one.
pub const REDIS_CA_KEY: &str = "redis-ca.crt";
/// How long to wait before retrying namespaces whose ConfigMap could not be applied.
const RETRY: Duration = Duration::from_secs(10);

/// The ConfigMap `name` of `namespace`, holding `ca_pem`, and `redis_ca_pem` when given.
pub fn ca_config_map(
    namespace: &str,
    name: &str,
    ca_pem: &str,
    redis_ca_pem: Option<&str>,
) -> ConfigMap {
    let mut data = std::collections::BTreeMap::from([(CA_KEY.to_owned(), ca_pem.to_owned())]);
    if let Some(redis_ca_pem) = redis_ca_pem {
        data.insert(REDIS_CA_KEY.to_owned(), redis_ca_pem.to_owned());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    FIELD_MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Applies the ConfigMap in each namespace as soon as it has an injected pod, until the
/// process stops. A namespace whose apply fails is retried.
pub async fn keep_ca_config_maps(
    client: kube::Client,
    name: String,
    ca_pem: String,
    redis_ca_pem: Option<String>,
    index: SharedIndex,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.lock().changes();
    let mut applied = BTreeSet::new();
    loop {
        let with_pods = index.lock().namespaces_with_pods();
        let mut failed = false;
        for namespace in to_apply(&with_pods, &applied) {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let config_map = ca_config_map(&namespace, &name, &ca_pem, redis_ca_pem.as_deref());
            match api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&config_map),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace, %name, "CA certificate published for injected pods' clients");
                    applied.insert(namespace);
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(namespace, %name, %error, "cannot publish the CA certificate; retrying");
                }
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = retry => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_config_map_holds_the_ca_under_ca_crt() {
        let made = serde_json::to_value(ca_config_map(
            "shop",
            DEFAULT_CA_CONFIG_MAP,
            "-----BEGIN CERTIFICATE-----\n",
            None,
        ))
        .unwrap();
        assert_eq!(made["metadata"]["name"], "tollgate-ca.crt");
        assert_eq!(made["metadata"]["namespace"], "shop");
        assert_eq!(
            made["data"],
            json!({"ca.crt": "-----BEGIN CERTIFICATE-----\n"})
        );
        assert_eq!(
            made["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "tollgate-controller"
        );

        // With --redis-ca, Redis's CA beside it, for the sidecars' --redis-ca.
        let made = serde_json::to_value(ca_config_map(
            "shop",
            DEFAULT_CA_CONFIG_MAP,
            "controller CA",
            Some("redis CA"),
        ))
        .unwrap();
        assert_eq!(
            made["data"],
            json!({"ca.crt": "controller CA", "redis-ca.crt": "redis CA"})
        );
    }
}
