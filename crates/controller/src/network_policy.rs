//! The NetworkPolicy that closes an injected pod's other ports, kept by the controller in
//! every namespace that has injected pods (server-side apply, so it is re-asserted as the
//! controller's and a namespace gets it with its first injected pod, wherever that is).
//! The policy is made by a pure function; only [`keep_network_policies`] talks to the API.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

use crate::index::SharedIndex;

/// The field manager of the policies this controller applies.
pub const FIELD_MANAGER: &str = "tollgate-controller";
/// The sidecar's proxy port, the only one open to the network by default.
const PROXY_PORT: i32 = 8443;
/// The sidecar's metrics and probe port, open to `metrics_from` only.
const METRICS_PORT: i32 = 9090;
/// How long to wait before retrying namespaces whose policy could not be applied.
const RETRY: Duration = Duration::from_secs(10);

/// What the kept policies admit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySettings {
    pub name: String,
    /// Who may reach :8443 (empty: anyone; the sidecar checks every request).
    pub proxy_from: Vec<NetworkPolicyPeer>,
    /// Who may reach :9090 (empty: nobody but the node, whose probes policies admit).
    pub metrics_from: Vec<NetworkPolicyPeer>,
    /// More ports to open (the chart's `networkPolicy.extraPorts`, e.g. IRIS's superserver
    /// 1972), each rule naming its ports: see [`parse_extra_ingress`].
    pub extra_ingress: Vec<NetworkPolicyIngressRule>,
}

/// The policy of `namespace`: injected pods (by the injector's label) accept :8443, and
/// :9090 from `metrics_from`, nothing else.
pub fn injected_pods_policy(namespace: &str, settings: &PolicySettings) -> NetworkPolicy {
    let port = |number| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        ports: Some(vec![port(PROXY_PORT)]),
        from: (!settings.proxy_from.is_empty()).then(|| settings.proxy_from.clone()),
    }];
    if !settings.metrics_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![port(METRICS_PORT)]),
            from: Some(settings.metrics_from.clone()),
        });
    }
    ingress.extend(settings.extra_ingress.iter().cloned());
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
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
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(
                    [(
                        tollgate_inject::LABEL_INJECTED.to_owned(),
                        "true".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            ..Default::default()
        }),
    }
}

/// Parses a flag's JSON list of NetworkPolicy peers.
pub fn parse_peers(flag: &str, json: &str) -> Result<Vec<NetworkPolicyPeer>, String> {
    serde_json::from_str(json)
        .map_err(|e| format!("{flag}: not a JSON list of NetworkPolicy peers: {e}"))
}

/// Parses a flag's JSON list of NetworkPolicy ingress rules. Each must name its ports: a rule
/// without would open every port of injected pods, IRIS's own among them, around the OAuth
/// checks the policy exists for.
pub fn parse_extra_ingress(
    flag: &str,
    json: &str,
) -> Result<Vec<NetworkPolicyIngressRule>, String> {
    let rules: Vec<NetworkPolicyIngressRule> = serde_json::from_str(json)
        .map_err(|e| format!("{flag}: not a JSON list of NetworkPolicy ingress rules: {e}"))?;
    for (at, rule) in rules.iter().enumerate() {
        let ports = rule.ports.as_deref().unwrap_or_default();
        if ports.is_empty() || ports.iter().any(|p| p.port.is_none()) {
            return Err(format!(
                "{flag}: rule {at} names no port; it would open every port of injected pods"
            ));
        }
    }
    Ok(rules)
}

/// Namespaces that have injected pods and no policy applied yet by this process.
pub fn to_apply(with_pods: &BTreeSet<String>, applied: &BTreeSet<String>) -> Vec<String> {
    with_pods.difference(applied).cloned().collect()
}

/// Applies the policy in each namespace as soon as it has an injected pod, until the process
/// stops. A namespace whose apply fails is retried.
pub async fn keep_network_policies(
    client: kube::Client,
    settings: PolicySettings,
    index: SharedIndex,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.lock().changes();
    let mut applied = BTreeSet::new();
    loop {
        let with_pods = index.lock().namespaces_with_pods();
        let mut failed = false;
        for namespace in to_apply(&with_pods, &applied) {
            let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
            let policy = injected_pods_policy(&namespace, &settings);
            match api
                .patch(
                    &settings.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&policy),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace, name = %settings.name, "NetworkPolicy applied for injected pods");
                    applied.insert(namespace);
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(namespace, %error, "cannot apply the NetworkPolicy of injected pods; retrying");
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
    fn the_policy_opens_only_the_proxy_port_by_default() {
        let settings = PolicySettings {
            name: "tollgate-injected-pods".into(),
            ..Default::default()
        };
        let policy = serde_json::to_value(injected_pods_policy("shop", &settings)).unwrap();
        assert_eq!(policy["metadata"]["namespace"], "shop");
        assert_eq!(policy["metadata"]["name"], "tollgate-injected-pods");
        assert_eq!(
            policy["spec"],
            json!({
                "podSelector": {"matchLabels": {"oauth.tollgate.dev/injected": "true"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"port": 8443, "protocol": "TCP"}]}],
            })
        );
    }

    #[test]
    fn peers_come_from_the_flags() {
        let peers = parse_peers(
            "--network-policy-metrics-from",
            r#"[{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]"#,
        )
        .unwrap();
        let settings = PolicySettings {
            name: "p".into(),
            proxy_from: peers.clone(),
            metrics_from: peers,
            extra_ingress: Vec::new(),
        };
        let policy = serde_json::to_value(injected_pods_policy("shop", &settings)).unwrap();
        let peer = json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]);
        assert_eq!(policy["spec"]["ingress"][0]["from"], peer);
        assert_eq!(
            policy["spec"]["ingress"][1],
            json!({"ports": [{"port": 9090, "protocol": "TCP"}], "from": peer})
        );
        let error = parse_peers("--network-policy-proxy-from", "{").unwrap_err();
        assert!(
            error.starts_with("--network-policy-proxy-from: "),
            "{error}"
        );
    }

    #[test]
    fn extra_ports_are_opened_and_a_rule_without_ports_is_refused() {
        let flag = "--network-policy-extra-ingress";
        let extra =
            parse_extra_ingress(flag, r#"[{"ports": [{"port": 1972, "protocol": "TCP"}]}]"#)
                .unwrap();
        let settings = PolicySettings {
            name: "p".into(),
            extra_ingress: extra,
            ..Default::default()
        };
        let policy = serde_json::to_value(injected_pods_policy("shop", &settings)).unwrap();
        assert_eq!(
            policy["spec"]["ingress"],
            json!([
                {"ports": [{"port": 8443, "protocol": "TCP"}]},
                {"ports": [{"port": 1972, "protocol": "TCP"}]},
            ])
        );
        for open_everything in [
            r#"[{}]"#,
            r#"[{"ports": []}]"#,
            r#"[{"ports": [{"protocol": "TCP"}]}]"#,
        ] {
            let error = parse_extra_ingress(flag, open_everything).unwrap_err();
            assert!(error.contains("names no port"), "{error}");
        }
        assert!(
            parse_extra_ingress(flag, "{")
                .unwrap_err()
                .starts_with(flag)
        );
    }

    #[test]
    fn each_namespace_is_applied_once_it_has_pods() {
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        assert_eq!(to_apply(&set(&["a", "b"]), &set(&["a"])), vec!["b"]);
        assert!(to_apply(&set(&["a"]), &set(&["a", "gone"])).is_empty());
    }
}
