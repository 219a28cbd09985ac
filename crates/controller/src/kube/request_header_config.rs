//! Reads the front proxy's settings, `kube-system/extension-apiserver-authentication`, now and
//! every `--request-header-reload-interval`, so a rotated request-header CA is believed
//! without a restart. A ConfigMap that cannot be read or is wrong keeps the last good settings.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use tokio::sync::watch;

use crate::request_header::{
    CONFIG_MAP_NAME, CONFIG_MAP_NAMESPACE, RequestHeaderConfig, SharedRequestHeaderConfig,
};

/// Keeps `shared` current until `shutdown`.
pub async fn keep_request_header_config(
    client: Client,
    shared: SharedRequestHeaderConfig,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, CONFIG_MAP_NAMESPACE);
    let mut last: Option<std::collections::BTreeMap<String, String>> = None;
    loop {
        match api.get_opt(CONFIG_MAP_NAME).await {
            Ok(found) => {
                let data = found.and_then(|c| c.data).unwrap_or_default();
                if last.as_ref() != Some(&data) {
                    match RequestHeaderConfig::from_config_map(&data) {
                        Ok(config) => {
                            if config.is_none() {
                                tracing::warn!(
                                    "{CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME} names no request-header CA: requests proxied by the API server are not authenticated"
                                );
                            } else {
                                tracing::info!(
                                    "request-header settings read from {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}"
                                );
                            }
                            if let Ok(mut current) = shared.write() {
                                *current = config.map(std::sync::Arc::new);
                            }
                            last = Some(data);
                        }
                        Err(error) => tracing::warn!(
                            %error,
                            "{CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}: keeping the last good request-header settings"
                        ),
                    }
                }
            }
            Err(error) => tracing::warn!(
                %error,
                "cannot read {CONFIG_MAP_NAMESPACE}/{CONFIG_MAP_NAME}: keeping the last request-header settings"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
