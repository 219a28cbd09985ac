//! The names of the chart's objects for a release, derived as `tollgate.fullname` in
//! charts/tollgate/templates/_helpers.tpl derives them.

/// The release name `helm install` is shown with in the README.
pub const DEFAULT_RELEASE: &str = "tollgate";
/// The namespace the README installs into, used when the kubeconfig's context names none.
pub const DEFAULT_NAMESPACE: &str = "tollgate";
/// The APIService of the tokens API (`kubectl get oauthtokens`).
pub const API_SERVICE: &str = "v1alpha1.tokens.oauth.tollgate.dev";
/// The tokens API's group and version, for the probe of the controller's Redis.
pub const TOKENS_GROUP_VERSION: &str = "tokens.oauth.tollgate.dev/v1alpha1";
/// The ConfigMap the controller publishes its CA in, in namespaces with injected pods.
pub const CA_CONFIG_MAP: &str = "tollgate-ca.crt";
/// The key of the CA certificate in the CA Secret and the ConfigMap.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The suffix of the chart's webhooks' names.
pub const WEBHOOK_SUFFIX: &str = ".inject.tollgate.dev";
/// The annotation by which cert-manager, not the controller, keeps a caBundle.
pub const CERT_MANAGER_INJECT: &str = "cert-manager.io/inject-ca-from";

/// The chart's objects of one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartNames {
    /// The release namespace, where the namespaced objects live.
    pub namespace: String,
    /// `tollgate.fullname`: the release name, cut to 40 characters, without a trailing `-`.
    pub fullname: String,
}

impl ChartNames {
    pub fn new(release: &str, namespace: &str) -> Self {
        let cut: String = release.chars().take(40).collect();
        Self {
            namespace: namespace.to_owned(),
            fullname: cut.trim_end_matches('-').to_owned(),
        }
    }

    /// The controller's Deployment, ServiceAccount, Service and Lease.
    pub fn controller(&self) -> String {
        format!("{}-controller", self.fullname)
    }

    /// The MutatingWebhookConfiguration, cluster-scoped.
    pub fn webhook_configuration(&self) -> String {
        self.fullname.clone()
    }

    /// The Secret holding the controller's CA (`TOLLGATE_CA_SECRET`).
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.fullname)
    }

    /// The Secret cert-manager keeps the webhook's certificate in.
    pub fn webhook_tls_secret(&self) -> String {
        format!("{}-webhook-tls", self.fullname)
    }

    /// The namespaces the chart's webhooks must never see.
    pub fn excluded_namespaces(&self) -> [&str; 4] {
        [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            self.namespace.as_str(),
        ]
    }
}
