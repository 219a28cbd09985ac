//! The injection webhook's `caBundle` (and, with `--webhook-url`, its URL) in the
//! MutatingWebhookConfiguration, kept pointing at this controller: a `helm upgrade` resets it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use crate::metrics::Metrics;

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
