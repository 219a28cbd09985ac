//! Sidecar injection: what the `tollgate-sidecar` container looks like in a pod, and when a
//! pod gets one.
//!
//! The mutation is a pure function of the pod and an [`InjectConfig`]: [`inject`] (and
//! [`decide`], which also says why a pod was left alone) returns an RFC 6902 JSON Patch that
//! only *adds* to the pod, so fields this crate's Kubernetes types do not know survive. Three
//! edges call it:
//! - [`review`]: an AdmissionReview v1 in, an AdmissionReview v1 out (no HTTP);
//! - `server` (feature `server`): the webhook's HTTPS listener, mounted by the controller;
//! - [`manifest::inject_manifest`]: `tollgate inject -f`, for GitOps and for review.
#![forbid(unsafe_code)]

mod annotations;
mod args;
pub mod cli;
pub mod manifest;
mod patch;
mod quantity;
mod review;
#[cfg(feature = "server")]
pub mod server;
mod sidecar;
pub mod webhook;

use k8s_openapi::api::core::v1::Pod;

pub use annotations::{MAX_TLS_DNS_NAMES, Overrides, ProxyResources, parse_tls_dns_names};
pub use args::{InjectArgs, TUNABLE_SIDECAR_ENV};
pub use json_patch::Patch;
pub use manifest::{Injected, ManifestError, inject_manifest};
pub use review::{Outcome, ReviewError, Reviewed, review, review_with_outcome};
pub use sidecar::default_security_context;
pub use webhook::WebhookArgs;

/// The annotation that asks for a sidecar (`enabled`) or refuses one (`disabled`). The same
/// key, as a namespace *label*, opts a whole namespace in or out.
pub const ANNOTATION_INJECT: &str = "tollgate.dev/inject";
/// A `kubernetes.io/tls` Secret of the pod's namespace whose `tls.crt`/`tls.key` the sidecar
/// serves on :8443. Without it, the sidecar asks the controller's CA for its certificate
/// (`--tls-from-controller`).
pub const ANNOTATION_TLS_SECRET: &str = "tollgate.dev/tls-secret";
/// DNS names (comma-separated) the certificate the controller's CA issues the pod holds, besides
/// the pod's IP and `localhost`: names of Services of the pod's own namespace,
/// `NAME.NAMESPACE.svc` or `NAME.NAMESPACE.svc.CLUSTER-DOMAIN`. Syntax is checked at
/// admission; the controller decides the names again from the pod at every request.
pub const ANNOTATION_TLS_DNS_NAMES: &str = "tollgate.dev/tls-dns-names";
/// The application's port on 127.0.0.1 (IRIS: 52773). Forwarding follows the OAuthService's
/// `upstream.port`; this annotation declares where the pod's application listens, so the
/// injector can refuse a port the sidecar itself binds, and the controller can compare the
/// two. It is validated here and left on the pod.
pub const ANNOTATION_UPSTREAM_PORT: &str = "tollgate.dev/upstream-port";
/// CPU request of the sidecar, a Kubernetes quantity (`50m`).
pub const ANNOTATION_PROXY_CPU: &str = "tollgate.dev/proxy-cpu";
/// Memory request of the sidecar (`64Mi`).
pub const ANNOTATION_PROXY_MEMORY: &str = "tollgate.dev/proxy-memory";
/// CPU limit of the sidecar; none by default (a CPU limit throttles the proxy, not IRIS).
pub const ANNOTATION_PROXY_CPU_LIMIT: &str = "tollgate.dev/proxy-cpu-limit";
/// Memory limit of the sidecar (`128Mi`, or the memory request when that is larger).
pub const ANNOTATION_PROXY_MEMORY_LIMIT: &str = "tollgate.dev/proxy-memory-limit";
/// `"true"`: inject as a native sidecar (an init container with `restartPolicy: Always`,
/// Kubernetes 1.29+), which starts before the application and stops after it.
pub const ANNOTATION_NATIVE_SIDECAR: &str = "tollgate.dev/native-sidecar";
/// Written by the injector: the controller's CA certificate (PEM), projected into the
/// sidecar as `ca.crt` by the downward API, so no ConfigMap has to exist in every namespace.
pub const ANNOTATION_CONTROLLER_CA: &str = "tollgate.dev/controller-ca";
/// Written by the injector: the version of the sidecar the pod got, its image's tag (as
/// Linkerd's `linkerd.io/proxy-version`), so `kubectl get pods -o yaml` or a label query
/// shows which pods still run an old sidecar after an upgrade.
pub const ANNOTATION_PROXY_VERSION: &str = "tollgate.dev/proxy-version";

/// The label every injected pod carries: the controller watches these pods and the chart's
/// NetworkPolicy selects them.
pub const LABEL_INJECTED: &str = "oauth.tollgate.dev/injected";

/// The injected container's name; a pod that has a container of this name is injected.
pub const CONTAINER_NAME: &str = "tollgate-sidecar";

/// What the injected container runs: the image's sidecar-only build of the binary (no
/// controller, webhook or Kubernetes client), installed beside the full `tollgate`, the
/// image's entrypoint. Its arguments start with `sidecar`, so either binary runs them.
pub const SIDECAR_COMMAND: &str = "/usr/local/bin/tollgate-sidecar";

/// The annotation values of [`ANNOTATION_INJECT`].
pub const INJECT_ENABLED: &str = "enabled";
pub const INJECT_DISABLED: &str = "disabled";

/// Everything about the injected sidecar that is the same for every pod: set once from the
/// controller's flags ([`InjectArgs`]), tuned per pod by annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// The sidecar's image: the controller's own image and version.
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// The controller's snapshot stream, as sidecars reach it.
    pub controller_url: String,
    /// How the sidecar learns the controller's CA.
    pub controller_ca: ControllerCa,
    /// Inject as a native sidecar unless the pod's annotation says otherwise.
    pub native_sidecar: bool,
    /// Requests and limits unless the pod's annotations say otherwise.
    pub resources: ProxyResources,
    /// Where the sidecar's `TOLLGATE_REDIS_URL` comes from, if anywhere.
    pub redis: Option<RedisUrlSource>,
    /// What the sidecar trusts and shows on a `rediss://` connection (`--redis-ca`,
    /// `--redis-client-cert`, `--redis-client-key`); empty: the system's roots, no client
    /// certificate.
    pub redis_tls: RedisTlsSources,
    /// Namespaces never injected whatever their pods say (kube-system, the controller's own):
    /// the webhook's namespaceSelector should keep their pods away, and this is the second
    /// lock.
    pub excluded_namespaces: Vec<String>,
    /// More environment of the sidecar container (`--sidecar-env`): tunables only, see
    /// [`TUNABLE_SIDECAR_ENV`].
    pub sidecar_env: Vec<(String, String)>,
    /// The sidecar container's securityContext (`--sidecar-security-context`); `None`:
    /// [`default_security_context`]. OpenShift assigns UIDs, so `runAsUser` may be left out.
    pub security_context: Option<k8s_openapi::api::core::v1::SecurityContext>,
}

/// How an injected sidecar gets the CA that signed the controller's stream certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerCa {
    /// The PEM itself: written to the pod's [`ANNOTATION_CONTROLLER_CA`] annotation and
    /// projected as a file by the downward API. What the webhook uses: it needs nothing in
    /// the pod's namespace.
    Pem(String),
    /// Projected from the annotation like [`ControllerCa::Pem`], which is left empty for the
    /// webhook to fill in when the pod is created: `tollgate inject -f` without a CA file, so
    /// manifests injected ahead of time work with whatever CA the cluster's controller has.
    FromWebhook,
    /// A ConfigMap of the pod's namespace with a `ca.crt` key (for CAs distributed by a tool
    /// such as cert-manager's trust-manager).
    ConfigMap(String),
}

/// Where `TOLLGATE_REDIS_URL` comes from. A URL that carries a password never goes into a pod
/// spec: it comes from a Secret of the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisUrlSource {
    /// A URL without credentials, such as the chart's bundled Redis.
    Url(String),
    /// A key of a Secret in the pod's namespace.
    Secret { name: String, key: String },
}

/// Where an injected sidecar's Redis TLS files come from: objects of the pod's own namespace,
/// since a pod can mount nothing of another. The CA is public, so a ConfigMap; the client key
/// is a Secret, which only pods of that namespace (and whoever may read its Secrets) can read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTlsSources {
    /// A key of a ConfigMap holding the CA bundle that signed Redis's certificate.
    pub ca: Option<ConfigMapKey>,
    /// A Secret of type `kubernetes.io/tls` (`tls.crt`, `tls.key`), as cert-manager writes
    /// it: the client certificate for a Redis with `tls-auth-clients yes`.
    pub client_secret: Option<String>,
}

/// One key of a ConfigMap in the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapKey {
    pub name: String,
    pub key: String,
}

impl RedisTlsSources {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_secret.is_none()
    }
}

/// Which webhook asked: it decides what a pod without annotations gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The pod's namespace is not labelled: only pods annotated `tollgate.dev/inject: enabled`
    /// are injected.
    PodAnnotation,
    /// The pod's namespace is labelled `tollgate.dev/inject=enabled` (or the user asked
    /// explicitly, as `tollgate inject -f` does): every pod is injected unless annotated
    /// `disabled`.
    Namespace,
}

/// What [`decide`] made of a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The pod is left as it is.
    Skip(SkipReason),
    /// The pod gets the sidecar: apply `patch`; `warnings` are for the person who created it.
    Inject { patch: Patch, warnings: Vec<String> },
}

/// Why a pod was not injected. None of these is an error: the pod is admitted unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither the pod nor its namespace asked for a sidecar.
    NotRequested,
    /// The pod is annotated `tollgate.dev/inject: disabled`.
    Disabled,
    /// It already has a `tollgate-sidecar` container.
    AlreadyInjected,
    /// `hostNetwork` pods share the node's ports: :8443 there is not the pod's to take.
    HostNetwork,
    /// The namespace is in [`InjectConfig::excluded_namespaces`].
    ExcludedNamespace(String),
}

/// Why a pod that asked for a sidecar cannot get one; the pod is refused with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// An annotation's value is not what it must be. The message names the annotation.
    #[error("annotation {annotation}: {value:?} {problem}")]
    BadAnnotation {
        annotation: &'static str,
        value: String,
        problem: String,
    },
    /// Something in the pod is in the sidecar's way (a volume name, a port).
    #[error("{0}")]
    Conflict(String),
    /// The object has no `spec`.
    #[error("the pod has no spec")]
    NoSpec,
    /// `spec.containers` is empty or null: the patch could not add to it, and the API server
    /// would refuse the pod anyway. Said here, the reason is plain.
    #[error("the pod has no containers")]
    NoContainers,
}

// === impl InjectConfig ===

impl InjectConfig {
    /// The settings a fresh install has: the chart's service name in `tollgate-system`, the CA
    /// from the `tollgate-ca` ConfigMap, regular (not native) sidecars, default resources.
    pub fn new(image: impl Into<String>) -> Self {
        InjectConfig {
            image: image.into(),
            image_pull_policy: Some(args::DEFAULT_IMAGE_PULL_POLICY.to_owned()),
            controller_url: args::DEFAULT_CONTROLLER_URL.to_owned(),
            controller_ca: ControllerCa::FromWebhook,
            native_sidecar: false,
            resources: ProxyResources::default(),
            redis: None,
            redis_tls: RedisTlsSources::default(),
            excluded_namespaces: args::DEFAULT_EXCLUDED_NAMESPACES
                .iter()
                .map(|ns| (*ns).to_owned())
                .collect(),
            sidecar_env: Vec::new(),
            security_context: None,
        }
    }

    /// The webhook's way: the controller hands its CA certificate to every pod it injects.
    pub fn with_controller_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.controller_ca = ControllerCa::Pem(pem.into());
        self
    }

    /// For the controller: its own CA, unless the flags chose a CA source explicitly
    /// (`--sidecar-ca-file` or `--sidecar-ca-configmap`).
    pub fn with_default_controller_ca_pem(self, pem: impl Into<String>) -> Self {
        match self.controller_ca {
            ControllerCa::FromWebhook => self.with_controller_ca_pem(pem),
            _ => self,
        }
    }
}

impl InjectConfig {
    /// For the controller: Redis's CA from `published` (its CA ConfigMap's `redis-ca.crt`),
    /// unless `--sidecar-redis-ca-configmap` chose one, or the sidecars use no Redis.
    pub fn with_default_redis_ca(mut self, published: ConfigMapKey) -> Self {
        if self.redis_tls.ca.is_none() && self.redis.is_some() {
            self.redis_tls.ca = Some(published);
        }
        self
    }
}

/// The patch that gives `pod` its sidecar, as the webhook for unlabelled namespaces decides
/// ([`Scope::PodAnnotation`]); empty when the pod is left alone.
pub fn inject(pod: &Pod, config: &InjectConfig) -> Result<Patch, InjectError> {
    match decide(pod, config, Scope::PodAnnotation)? {
        Decision::Inject { patch, .. } => Ok(patch),
        Decision::Skip(_) => Ok(Patch(Vec::new())),
    }
}

/// Whether `pod` gets a sidecar, and the patch that adds it.
///
/// Order matters: a pod that did not ask is skipped before its annotations are checked (a
/// typo on an unrelated pod must not refuse it), and a pod that is already injected is
/// skipped before anything else is looked at (the webhook may be called twice).
pub fn decide(pod: &Pod, config: &InjectConfig, scope: Scope) -> Result<Decision, InjectError> {
    let Some(spec) = &pod.spec else {
        return Err(InjectError::NoSpec);
    };
    let already = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == CONTAINER_NAME);
    if already {
        // Injected ahead of time (`tollgate inject -f`): the CA is the one thing left to add.
        return Ok(match patch::fill_controller_ca(pod, config) {
            Some(patch) => Decision::Inject {
                patch,
                warnings: Vec::new(),
            },
            None => Decision::Skip(SkipReason::AlreadyInjected),
        });
    }
    if let Some(namespace) = pod.metadata.namespace.as_deref()
        && config.excluded_namespaces.iter().any(|ns| ns == namespace)
    {
        return Ok(Decision::Skip(SkipReason::ExcludedNamespace(
            namespace.to_owned(),
        )));
    }
    match (annotations::inject_request(pod)?, scope) {
        (Some(false), _) => return Ok(Decision::Skip(SkipReason::Disabled)),
        (None, Scope::PodAnnotation) => return Ok(Decision::Skip(SkipReason::NotRequested)),
        (Some(true), _) | (None, Scope::Namespace) => {}
    }
    if spec.host_network == Some(true) {
        return Ok(Decision::Skip(SkipReason::HostNetwork));
    }
    if spec.containers.is_empty() {
        return Err(InjectError::NoContainers);
    }

    let overrides = Overrides::from_pod(pod, config)?;
    sidecar::check_conflicts(spec)?;
    let mut warnings = overrides.warnings.clone();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !overrides.native_sidecar && restart_policy != "Always" {
        warnings.push(format!(
            "tollgate: this pod has restartPolicy {restart_policy} and a regular sidecar, \
             which never exits, so the pod will not complete; annotate it \
             {ANNOTATION_NATIVE_SIDECAR}: \"true\" (Kubernetes 1.29+)"
        ));
    }
    let patch = patch::build(pod, spec, config, &overrides);
    Ok(Decision::Inject { patch, warnings })
}
