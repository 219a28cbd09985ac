//! The aggregated API's `caBundle` in its APIService, kept as this controller's CA, as
//! `webhook_ca_bundle` does for the webhook: a `helm upgrade` resets it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often the APIService is checked.
const API_SERVICE_INTERVAL: Duration = Duration::from_secs(60);
/// How soon after a failure (the APIService not created yet, say): until the caBundle is in,
/// the API server cannot reach the controller, and `kubectl get oauthtokens` fails.
const API_SERVICE_RETRY: Duration = Duration::from_secs(5);

/// Keeps the caBundle of APIService `name` as `ca_pem`, until `shutdown`.
pub async fn keep_api_service(
    client: Client,
    name: String,
    ca_pem: String,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<APIService> = Api::all(client);
    loop {
        let next = match patch_api_service(&api, &name, &ca_pem).await {
            Ok(patched) => {
                if patched {
                    tracing::info!(api_service = %name, "APIService caBundle updated");
                }
                API_SERVICE_INTERVAL
            }
            Err(error) => {
                metrics.reconcile_error("APIService");
                tracing::warn!(api_service = %name, %error, "cannot update the APIService");
                API_SERVICE_RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// The merge patch that makes `current`'s caBundle `ca_pem`; `None` when it already is.
pub fn api_service_patch(current: &APIService, ca_pem: &str) -> Option<serde_json::Value> {
    let spec = current.spec.as_ref();
    if spec
        .and_then(|s| s.ca_bundle.as_ref())
        .is_some_and(|b| b.0 == ca_pem.as_bytes())
    {
        return None;
    }
    let bundle = serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec())).ok()?;
    // A caBundle and insecureSkipTLSVerify cannot both be set.
    Some(serde_json::json!({"spec": {"caBundle": bundle, "insecureSkipTLSVerify": false}}))
}

/// One round: patches the APIService when its caBundle differs. `Ok(true)` when patched.
pub async fn patch_api_service(
    api: &Api<APIService>,
    name: &str,
    ca_pem: &str,
) -> kube::Result<bool> {
    let current = api.get(name).await?;
    let Some(patch) = api_service_patch(&current, ca_pem) else {
        return Ok(false);
    };
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIServiceSpec;

    use super::*;

    #[test]
    fn the_ca_bundle_is_patched_only_when_it_differs() {
        let mut service = APIService {
            spec: Some(APIServiceSpec {
                group: Some("tokens.oauth.tollgate.dev".into()),
                version: Some("v1alpha1".into()),
                group_priority_minimum: 1000,
                version_priority: 15,
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = api_service_patch(&service, "PEM").unwrap();
        // Base64, as the API carries bytes.
        assert_eq!(patch["spec"]["caBundle"], "UEVN");
        assert_eq!(patch["spec"]["insecureSkipTLSVerify"], false);
        service.spec.as_mut().unwrap().ca_bundle = Some(ByteString(b"PEM".to_vec()));
        assert!(api_service_patch(&service, "PEM").is_none());
        assert!(api_service_patch(&service, "OTHER").is_some());
    }
}
