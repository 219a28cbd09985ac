//! What the controller needs to run the webhook: its flags ([`WebhookArgs`], flattened into
//! `tollgate controller`'s), and the patch that keeps the chart's MutatingWebhookConfiguration
//! pointing at it with the right CA ([`configuration_patch`]), as a pure function.
//!
//! The chart's configuration holds two webhooks, one per opt-in (see `server`):
//! [`ANNOTATED_WEBHOOK`] → `/mutate`, [`NAMESPACE_WEBHOOK`] → `/mutate/namespace`.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use serde_json::Value;

/// The webhook for pods annotated `tollgate.dev/inject: enabled` in unlabelled namespaces.
pub const ANNOTATED_WEBHOOK: &str = "annotated.inject.tollgate.dev";
/// The webhook for every pod of namespaces labelled `tollgate.dev/inject=enabled`.
pub const NAMESPACE_WEBHOOK: &str = "namespace.inject.tollgate.dev";
/// The path each webhook is served on (`server::MUTATE_PATH` and friends).
pub const PATHS: &[(&str, &str)] = &[
    (ANNOTATED_WEBHOOK, "/mutate"),
    (NAMESPACE_WEBHOOK, "/mutate/namespace"),
];

/// The webhook's flags on `tollgate controller`. Each can also be set as the environment
/// variable shown.
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookArgs {
    /// Serve the injection webhook (HTTPS, paths /mutate and /mutate/namespace) on this
    /// address, e.g. 0.0.0.0:9443. Without it, no webhook is served.
    #[arg(long, env = "TOLLGATE_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<SocketAddr>,

    /// The MutatingWebhookConfiguration whose caBundle (and, with --webhook-url, URL) the
    /// controller keeps current. Leave it out when cert-manager's CA injector does that.
    #[arg(long, env = "TOLLGATE_WEBHOOK_CONFIGURATION")]
    pub webhook_configuration: Option<String>,

    /// Where the API server reaches the webhook when not through the controller's Service
    /// (clusters without kube-proxy, or a controller run outside the cluster), e.g.
    /// https://127.0.0.1:9443/mutate. The namespace webhook gets the same URL with
    /// /mutate/namespace. The URL's host must be among the controller's --tls-san names.
    #[arg(long, env = "TOLLGATE_WEBHOOK_URL", requires = "webhook_configuration")]
    pub webhook_url: Option<String>,

    /// Serve the webhook with this PEM certificate (re-read when it changes, as cert-manager
    /// rotates it) instead of one signed by the controller's own CA.
    #[arg(long, env = "TOLLGATE_WEBHOOK_TLS_CERT", requires = "webhook_tls_key")]
    pub webhook_tls_cert: Option<PathBuf>,

    /// The private key of --webhook-tls-cert.
    #[arg(long, env = "TOLLGATE_WEBHOOK_TLS_KEY", requires = "webhook_tls_cert")]
    pub webhook_tls_key: Option<PathBuf>,
}

// === impl WebhookArgs ===

impl WebhookArgs {
    /// Checks the flags, each problem naming its flag.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(name) = &self.webhook_configuration
            && !crate::annotations::is_dns_subdomain(name)
        {
            errors.push(format!(
                "--webhook-configuration: {name:?} is not a resource name"
            ));
        }
        if let Some(url) = &self.webhook_url
            && webhook_base(url).is_none()
        {
            errors.push(format!(
                "--webhook-url: {url:?} is not an https:// URL without query or fragment"
            ));
        }
        errors
    }
}

/// `https://host:port` from the URL of the annotated webhook (`…/mutate` or the bare base).
pub fn webhook_base(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if parsed.scheme() != "https"
        || parsed.host_str().is_none()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return None;
    }
    let trimmed = url.trim_end_matches('/');
    Some(
        trimmed
            .strip_suffix("/mutate")
            .unwrap_or(trimmed)
            .to_owned(),
    )
}

/// The patch that gives each of tollgate's webhooks in `current` the CA `ca_pem` (and, with
/// `url`, that URL instead of the Service), or `None` when they already have them. Webhooks
/// of other names are left alone.
///
/// The patch tests each webhook's name at its index first, so a configuration edited between
/// the controller's read and its patch fails the patch instead of being patched in the wrong
/// place.
pub fn configuration_patch(
    current: &MutatingWebhookConfiguration,
    ca_pem: &str,
    url: Option<&str>,
) -> Option<Patch> {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let base = url.and_then(webhook_base);
    let mut ops = Vec::new();
    for (index, webhook) in current.webhooks.iter().flatten().enumerate() {
        let Some((_, path)) = PATHS.iter().find(|(name, _)| *name == webhook.name) else {
            continue;
        };
        let at = |field: &str| {
            PointerBuf::from_tokens(["webhooks", &index.to_string(), "clientConfig", field])
        };
        let config = &webhook.client_config;
        let mut changes = Vec::new();
        let current_bundle = config
            .ca_bundle
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(&b.0));
        if current_bundle.as_deref() != Some(ca_bundle.as_str()) {
            changes.push(add(at("caBundle"), Value::from(ca_bundle.clone())));
        }
        if let Some(base) = &base {
            if config.service.is_some() {
                // `url` and `service` are mutually exclusive.
                changes.push(PatchOperation::Remove(json_patch::RemoveOperation {
                    path: at("service"),
                }));
            }
            let wanted = format!("{base}{path}");
            if config.url.as_deref() != Some(wanted.as_str()) {
                changes.push(add(at("url"), Value::from(wanted)));
            }
        }
        if changes.is_empty() {
            continue;
        }
        ops.push(PatchOperation::Test(json_patch::TestOperation {
            path: PointerBuf::from_tokens(["webhooks", &index.to_string(), "name"]),
            value: Value::from(webhook.name.clone()),
        }));
        ops.extend(changes);
    }
    (!ops.is_empty()).then_some(Patch(ops))
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configuration(webhooks: Value) -> MutatingWebhookConfiguration {
        serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "tollgate"},
            "webhooks": webhooks,
        }))
        .unwrap()
    }

    fn entry(name: &str, client_config: Value) -> Value {
        json!({"name": name, "clientConfig": client_config, "sideEffects": "None",
               "admissionReviewVersions": ["v1"]})
    }

    fn apply(config: &MutatingWebhookConfiguration, patch: &Patch) -> Value {
        let mut value = serde_json::to_value(config).unwrap();
        json_patch::patch(&mut value, &patch.0).unwrap();
        value
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn sets_the_ca_of_our_webhooks_only_and_then_nothing() {
        let service = json!({"service": {"name": "tollgate-controller", "namespace": "tollgate-system",
                                         "path": "/mutate", "port": 9443}});
        let config = configuration(json!([
            entry("other.example.com", service.clone()),
            entry(ANNOTATED_WEBHOOK, service.clone()),
            entry(NAMESPACE_WEBHOOK, service),
        ]));
        let patch = configuration_patch(&config, PEM, None).unwrap();
        let patched = apply(&config, &patch);
        let bundle = base64::engine::general_purpose::STANDARD.encode(PEM);
        assert!(
            patched["webhooks"][0]["clientConfig"]
                .get("caBundle")
                .is_none()
        );
        assert_eq!(patched["webhooks"][1]["clientConfig"]["caBundle"], bundle);
        assert_eq!(patched["webhooks"][2]["clientConfig"]["caBundle"], bundle);
        assert_eq!(
            patched["webhooks"][1]["clientConfig"]["service"]["port"],
            9443
        );

        let patched: MutatingWebhookConfiguration = serde_json::from_value(patched).unwrap();
        assert_eq!(configuration_patch(&patched, PEM, None), None);
    }

    #[test]
    fn a_url_replaces_the_service() {
        let config = configuration(json!([
            entry(
                ANNOTATED_WEBHOOK,
                json!({"service": {"name": "s", "namespace": "n", "path": "/mutate"}})
            ),
            entry(
                NAMESPACE_WEBHOOK,
                json!({"url": "https://old:9443/mutate/namespace"})
            ),
        ]));
        let patch =
            configuration_patch(&config, PEM, Some("https://127.0.0.1:9443/mutate")).unwrap();
        let patched = apply(&config, &patch);
        assert_eq!(
            patched["webhooks"][0]["clientConfig"]["url"],
            "https://127.0.0.1:9443/mutate"
        );
        assert!(
            patched["webhooks"][0]["clientConfig"]
                .get("service")
                .is_none()
        );
        assert_eq!(
            patched["webhooks"][1]["clientConfig"]["url"],
            "https://127.0.0.1:9443/mutate/namespace"
        );
        let patched: MutatingWebhookConfiguration = serde_json::from_value(patched).unwrap();
        assert_eq!(
            configuration_patch(&patched, PEM, Some("https://127.0.0.1:9443")),
            None
        );
    }

    #[test]
    fn a_moved_webhook_fails_the_patch() {
        let config = configuration(json!([entry(
            ANNOTATED_WEBHOOK,
            json!({"url": "https://x/mutate"})
        )]));
        let patch = configuration_patch(&config, PEM, None).unwrap();
        let moved = configuration(json!([
            entry("other.example.com", json!({"url": "https://y"})),
            entry(ANNOTATED_WEBHOOK, json!({"url": "https://x/mutate"})),
        ]));
        let mut value = serde_json::to_value(&moved).unwrap();
        assert!(json_patch::patch(&mut value, &patch.0).is_err());
    }

    #[test]
    fn flags_are_checked() {
        let args = WebhookArgs {
            webhook_listen: None,
            webhook_configuration: Some("Not A Name".into()),
            webhook_url: Some("http://127.0.0.1:9443/mutate".into()),
            webhook_tls_cert: None,
            webhook_tls_key: None,
        };
        let errors = args.validate();
        assert!(
            errors[0].starts_with("--webhook-configuration: "),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("--webhook-url: "), "{errors:?}");
        assert_eq!(
            webhook_base("https://127.0.0.1:9443/mutate/").as_deref(),
            Some("https://127.0.0.1:9443")
        );
        assert_eq!(
            webhook_base("https://h:9443").as_deref(),
            Some("https://h:9443")
        );
        assert_eq!(webhook_base("https://h:9443/mutate?x=1"), None);
    }
}
