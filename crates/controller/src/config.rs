//! The controller's flags, and their validation into a [`Config`] before any port is bound.
//!
//! Every problem is collected and reported together, one line each, naming its flag or file.

use std::net::SocketAddr;
use std::path::PathBuf;

use tollgate_inject::{InjectArgs, InjectConfig, WebhookArgs};
use tollgate_serve::tls::TlsSource;
use tollgate_store::RedisUrl;
use tollgate_store::{KeyPair, StoreKey};

use crate::auth::StaticTokens;
use crate::ca_config_map::DEFAULT_CA_CONFIG_MAP;
use crate::file_source::{self, Manifests};
use crate::index::ObjectRef;
use crate::network_policy::{self, PolicySettings};
use crate::pod_certs::{
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_POD_CERT_LIFETIME_SECONDS, PodCertSettings,
};
use crate::review_guard::{DEFAULT_REVIEW_CONCURRENCY, DEFAULT_TOKEN_REVIEW_CACHE_SECONDS};

/// The snapshot stream's port, apart from the admin API (:8444), metrics (:9090) and the
/// injection webhook (:9443), the ports the chart exposes.
pub const DEFAULT_STREAM_LISTEN: &str = "0.0.0.0:8090";
/// Kong's admin port. Unlike the sidecar's, open to the cluster: every request is checked
/// with a TokenReview and a SubjectAccessReview.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:8444";
/// The kubelet probes it from outside the pod, and Prometheus scrapes it.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9090";
/// Secrets the controller reads must carry this label, as Kong's ingress controller only reads
/// Secrets labelled `konghq.com/credential`: the controller never holds every Secret of the
/// cluster in memory, and reading one is an explicit decision of its owner.
pub const DEFAULT_SECRET_LABEL_SELECTOR: &str = "oauth.tollgate.dev/watch=true";
/// The label the injection webhook puts on the pods it injects.
pub const DEFAULT_POD_LABEL_SELECTOR: &str = "oauth.tollgate.dev/injected=true";
/// The Lease whose holder writes status.
pub const DEFAULT_LEASE_NAME: &str = "tollgate-controller";
/// Names the chart's Service answers to in the README's namespace, plus loopback for
/// port-forwards and tests.
pub const DEFAULT_TLS_SANS: &str = "tollgate-controller,tollgate-controller.tollgate-system,tollgate-controller.tollgate-system.svc,tollgate-controller.tollgate-system.svc.cluster.local,localhost,127.0.0.1";
/// The controller waits on the API server, not on CPU: two threads are plenty.
pub const DEFAULT_WORKER_THREADS: usize = 2;
/// `--request-header-reload-seconds`.
pub const DEFAULT_REQUEST_HEADER_RELOAD_SECONDS: u64 = 60;

/// `tollgate controller`: watches OAuthServices, Consumers, OAuthApplications, Secrets and
/// injected Pods, streams each pod's snapshot to its sidecar, writes status and serves the
/// admin API.
// No `Debug`: the Redis URL may carry a password.
#[derive(Clone, clap::Args)]
pub struct ControllerArgs {
    /// Read resources (and Pods, which stand for injected pods) from manifest files instead of
    /// the API server: a YAML file or folder, re-read on change. May be repeated. A test and
    /// development mode; sidecars then authenticate with --static-tokens.
    #[arg(
        long,
        env = "TOLLGATE_MANIFESTS",
        value_delimiter = ',',
        requires = "static_tokens"
    )]
    pub manifests: Vec<PathBuf>,

    /// With --manifests: a file of lines `TOKEN NAMESPACE/POD`. Each token authenticates the
    /// sidecar of that pod, and grants the admin API in that namespace. A test and development
    /// mode: the tokens never expire.
    #[arg(long, env = "TOLLGATE_STATIC_TOKENS", requires = "manifests")]
    pub static_tokens: Option<PathBuf>,

    /// Address of the snapshot stream sidecars connect to (HTTP/2 over TLS).
    #[arg(long, env = "TOLLGATE_STREAM_LISTEN", default_value = DEFAULT_STREAM_LISTEN)]
    pub stream_listen: SocketAddr,

    /// Bytes of stream lines (whole snapshots and deltas) kept to share among the streams of
    /// pods sent the same snapshot, so that each is serialized once per change, not once per
    /// pod. The oldest go first past it.
    #[arg(long, env = "TOLLGATE_STREAM_LINE_CACHE_BYTES",
          default_value_t = crate::stream::DEFAULT_LINE_CACHE_BYTES)]
    pub stream_line_cache_bytes: usize,

    /// Address of the admin API, `/{namespace}/oauth2_tokens` (TLS).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,

    /// Address of `/metrics`, `/healthz` and `/readyz` (plain HTTP).
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// The token store the sidecars share, for the admin API: `redis://`, `rediss://`, or
    /// `redis+sentinel://host:port,host:port/<master-name>[/db][?sentinel_password=…]`
    /// (`rediss+sentinel://` with TLS). Without it the admin API sees an empty in-memory store.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,

    #[command(flatten)]
    pub redis_tls: tollgate_serve::runtime::RedisTlsArgs,

    /// Secret (NAMESPACE/NAME) holding the controller's CA as `ca.crt` and `ca.key`; created
    /// when missing, so that every replica and every restart serves under the same CA.
    /// Without it a new CA is made at each start.
    #[arg(long, env = "TOLLGATE_CA_SECRET", conflicts_with = "manifests")]
    pub ca_secret: Option<String>,

    /// Secret (NAMESPACE/NAME) keeping the root key that seals token records in Redis, as
    /// `current` (and `previous` during a rotation); created when missing. Each pod is sent
    /// only its own namespace's key, derived from it. Without this flag or --store-key-file, a
    /// new key is made at each start, and tokens do not outlive the controller.
    #[arg(long, env = "TOLLGATE_STORE_KEY_SECRET", conflicts_with_all = ["manifests", "store_key_file"])]
    pub store_key_secret: Option<String>,

    /// The root store key from a file instead: at least 32 bytes, a trailing newline ignored.
    #[arg(long, env = "TOLLGATE_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,

    /// Write the CA certificate (PEM) to this file, for sidecars' --controller-ca.
    #[arg(long, env = "TOLLGATE_CA_OUT")]
    pub ca_out: Option<PathBuf>,

    /// DNS names and IP addresses of the serving certificate (comma-separated).
    #[arg(long = "tls-san", env = "TOLLGATE_TLS_SANS", value_delimiter = ',', default_value = DEFAULT_TLS_SANS)]
    pub tls_sans: Vec<String>,

    /// Only Secrets matching this label selector are read.
    #[arg(long, env = "TOLLGATE_SECRET_LABEL_SELECTOR", default_value = DEFAULT_SECRET_LABEL_SELECTOR)]
    pub secret_label_selector: String,

    /// Only Pods matching this label selector get a snapshot.
    #[arg(long, env = "TOLLGATE_POD_LABEL_SELECTOR", default_value = DEFAULT_POD_LABEL_SELECTOR)]
    pub pod_label_selector: String,

    /// The coordination.k8s.io Lease whose holder writes status.
    #[arg(long, env = "TOLLGATE_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// The controller's own namespace, where its Lease lives (the downward API's
    /// metadata.namespace). Defaults to the kubeconfig's namespace.
    #[arg(long = "namespace", env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// This replica's name in the Lease (the downward API's metadata.name). Defaults to the
    /// host name.
    #[arg(long = "identity", env = "POD_NAME")]
    pub identity: Option<String>,

    /// Threads serving streams and requests.
    #[arg(long, env = "TOLLGATE_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,

    /// Seconds a TokenReview's answer is remembered (under a digest of the token), so a
    /// caller cannot make the controller ask the API server once per request. 0 remembers
    /// nothing.
    #[arg(long, env = "TOLLGATE_TOKEN_REVIEW_CACHE_SECONDS",
          default_value_t = DEFAULT_TOKEN_REVIEW_CACHE_SECONDS,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub token_review_cache_seconds: u64,

    /// Watch only these namespaces (comma-separated), so that namespaced Roles in them are
    /// all the rights the controller needs to read. Every namespace when not given.
    #[arg(
        long,
        env = "TOLLGATE_WATCH_NAMESPACES",
        value_delimiter = ',',
        conflicts_with = "manifests"
    )]
    pub watch_namespaces: Vec<String>,

    /// Keep a NetworkPolicy of this name, by server-side apply, in every namespace with
    /// injected pods: they then accept only :8443 (and :9090 from
    /// --network-policy-metrics-from). Off when not given.
    #[arg(
        long,
        env = "TOLLGATE_NETWORK_POLICY_NAME",
        conflicts_with = "manifests"
    )]
    pub network_policy_name: Option<String>,

    /// Who may reach injected pods' :8443, a JSON list of NetworkPolicy peers; `[]`: anyone.
    #[arg(long, env = "TOLLGATE_NETWORK_POLICY_PROXY_FROM", default_value = "[]")]
    pub network_policy_proxy_from: String,

    /// Who may reach injected pods' :9090, a JSON list of NetworkPolicy peers; `[]`: nobody
    /// but the node.
    #[arg(
        long,
        env = "TOLLGATE_NETWORK_POLICY_METRICS_FROM",
        default_value = "[]"
    )]
    pub network_policy_metrics_from: String,

    /// More ports injected pods accept, a JSON list of NetworkPolicy ingress rules, each
    /// naming its ports (e.g. `[{"ports": [{"port": 1972}]}]`, IRIS's superserver); `[]`:
    /// none.
    #[arg(
        long,
        env = "TOLLGATE_NETWORK_POLICY_EXTRA_INGRESS",
        default_value = "[]"
    )]
    pub network_policy_extra_ingress: String,

    /// Seconds an injected pod's serving certificate is valid; its sidecar renews it at two
    /// thirds of that.
    #[arg(long, env = "TOLLGATE_POD_CERT_LIFETIME",
          default_value_t = DEFAULT_POD_CERT_LIFETIME_SECONDS,
          value_parser = clap::value_parser!(u64).range(5..=31_536_000))]
    pub pod_cert_lifetime: u64,

    /// The cluster's DNS domain: a pod's certificate may name `NAME.NAMESPACE.svc` and
    /// `NAME.NAMESPACE.svc.<this>` of its own namespace (annotation tollgate.dev/tls-dns-names).
    #[arg(long, env = "TOLLGATE_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,

    /// Publish the CA certificate in a ConfigMap of this name (key `ca.crt`), by server-side
    /// apply, in every namespace with injected pods, for their clients to trust. Empty: none.
    #[arg(
        long,
        env = "TOLLGATE_CA_CONFIG_MAP",
        default_value = DEFAULT_CA_CONFIG_MAP
    )]
    pub ca_config_map: String,

    /// TokenReviews and SubjectAccessReviews in flight to the API server at once; more wait.
    #[arg(long, env = "TOLLGATE_REVIEW_CONCURRENCY",
          default_value_t = DEFAULT_REVIEW_CONCURRENCY,
          value_parser = parse_review_concurrency)]
    pub review_concurrency: usize,

    /// The APIService of the aggregated API (`v1alpha1.tokens.oauth.tollgate.dev`) whose
    /// caBundle the controller keeps as its CA, as for the webhook. Empty: none.
    #[arg(long, env = "TOLLGATE_API_SERVICE", default_value = "")]
    pub api_service: String,

    /// Seconds between readings of kube-system/extension-apiserver-authentication, the API
    /// server's front-proxy settings (request-header CA, allowed names, header names) that
    /// authenticate `kubectl get oauthtokens` proxied to the controller.
    #[arg(long, env = "TOLLGATE_REQUEST_HEADER_RELOAD_SECONDS",
          default_value_t = DEFAULT_REQUEST_HEADER_RELOAD_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_header_reload_seconds: u64,

    /// The injection webhook.
    #[command(flatten)]
    pub webhook: WebhookArgs,

    /// How injected sidecars look.
    #[command(flatten)]
    pub inject: InjectArgs,

    /// Client timeouts and caps of every listener (the snapshot stream keeps its connections
    /// with HTTP/2 pings, not the idle timeout: a stream is a request in flight).
    #[command(flatten)]
    pub limits: tollgate_serve::ListenerLimitArgs,
}

/// Everything the controller runs with, validated.
pub struct Config {
    pub source: Source,
    pub stream_listen: SocketAddr,
    /// `--stream-line-cache-bytes`.
    pub stream_line_cache_bytes: usize,
    pub admin_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub redis_url: Option<RedisUrl>,
    /// --redis-ca, --redis-client-cert and --redis-client-key, read.
    pub redis_tls: tollgate_store::RedisTls,
    pub store_key: StoreKeySource,
    pub ca_out: Option<PathBuf>,
    pub tls_sans: Vec<String>,
    pub webhook: Option<Webhook>,
    pub listener_limits: tollgate_serve::ListenerLimits,
    /// `--body-buffer-budget`: the webhook's AdmissionReviews held in memory at once.
    pub body_buffer_budget: usize,
    /// How injected pods' serving certificates are made.
    pub pod_certs: PodCertSettings,
}

/// The injection webhook, when --webhook-listen is given. Not `Debug`: the sidecars' Redis URL
/// may carry a password.
pub struct Webhook {
    pub listen: SocketAddr,
    /// --webhook-tls-cert/--webhook-tls-key; without them, a certificate of the controller's
    /// own CA for --tls-san.
    pub tls: Option<TlsSource>,
    /// The MutatingWebhookConfiguration whose caBundle (and URL) the controller keeps current.
    pub configuration: Option<String>,
    pub url: Option<String>,
    /// What injected sidecars look like; the controller's CA is added at start.
    pub inject: InjectConfig,
}

/// Where the root store key comes from. Not `Debug`-derived: it may hold the key.
pub enum StoreKeySource {
    /// --store-key-secret, read (or created) once the API server is reachable.
    Secret(ObjectRef),
    /// --store-key-file.
    File(KeyPair),
    /// Neither: a new key for this process alone.
    Generated,
}

/// Where the index's objects come from.
pub enum Source {
    /// Manifest files, read once already (a bad file is a start-up error).
    Files {
        paths: Vec<PathBuf>,
        manifests: Manifests,
        fingerprint: u64,
        tokens: StaticTokens,
    },
    /// The API server of the kubeconfig or the pod's service account.
    Kube(KubeSettings),
}

#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// How long a TokenReview's answer is remembered.
    pub token_review_cache: std::time::Duration,
    pub review_concurrency: usize,
    /// The NetworkPolicy kept in namespaces with injected pods, when asked for.
    pub network_policy: Option<PolicySettings>,
    /// Empty: every namespace.
    pub watch_namespaces: Vec<String>,
    pub ca_secret: Option<ObjectRef>,
    /// The ConfigMap publishing the CA in namespaces with injected pods; `None`: none.
    pub ca_config_map: Option<String>,
    pub secret_label_selector: String,
    pub pod_label_selector: String,
    /// The APIService whose caBundle is kept; `None`: none.
    pub api_service: Option<String>,
    /// How often the front proxy's settings are read again.
    pub request_header_reload: std::time::Duration,
    pub lease_name: String,
    pub namespace: Option<String>,
    pub identity: String,
}

/// All configuration problems found, one line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

// === impl Config ===

impl Config {
    pub fn load(args: &ControllerArgs) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();

        let source = if args.manifests.is_empty() {
            let ca_secret = match args.ca_secret.as_deref().map(parse_object_ref) {
                None => None,
                Some(Ok(secret)) => Some(secret),
                Some(Err(e)) => {
                    errors.push(format!("--ca-secret: {e}"));
                    None
                }
            };
            for (flag, selector) in [
                ("--secret-label-selector", &args.secret_label_selector),
                ("--pod-label-selector", &args.pod_label_selector),
            ] {
                if selector.trim().is_empty() {
                    errors.push(format!(
                        "{flag}: empty; an empty selector would read every object of the cluster"
                    ));
                }
            }
            if args.lease_name.is_empty() {
                errors.push("--lease-name: empty".to_owned());
            }
            let identity = args
                .identity
                .clone()
                .filter(|i| !i.is_empty())
                .or_else(host_name)
                .unwrap_or_else(|| "tollgate-controller".to_owned());
            Some(Source::Kube(KubeSettings {
                token_review_cache: std::time::Duration::from_secs(args.token_review_cache_seconds),
                review_concurrency: args.review_concurrency,
                network_policy: network_policy_settings(args, &mut errors),
                watch_namespaces: watch_namespaces(&args.watch_namespaces, &mut errors),
                ca_secret,
                ca_config_map: ca_config_map(&args.ca_config_map, &mut errors),
                secret_label_selector: args.secret_label_selector.clone(),
                pod_label_selector: args.pod_label_selector.clone(),
                api_service: Some(args.api_service.trim().to_owned()).filter(|s| !s.is_empty()),
                request_header_reload: std::time::Duration::from_secs(
                    args.request_header_reload_seconds,
                ),
                lease_name: args.lease_name.clone(),
                namespace: args.namespace.clone().filter(|ns| !ns.is_empty()),
                identity,
            }))
        } else {
            let manifests = file_source::load(&args.manifests)
                .map_err(|e| errors.push(format!("--manifests: {e}")))
                .ok();
            let tokens = match &args.static_tokens {
                Some(path) => StaticTokens::load(path).map_err(|e| errors.push(e)).ok(),
                None => {
                    errors.push("--static-tokens: required with --manifests".to_owned());
                    None
                }
            };
            match (manifests, tokens) {
                (Some(manifests), Some(tokens)) => Some(Source::Files {
                    fingerprint: file_source::fingerprint(&args.manifests),
                    paths: args.manifests.clone(),
                    manifests,
                    tokens,
                }),
                _ => None,
            }
        };

        let webhook = load_webhook(args, &mut errors);

        let mut addresses = vec![
            ("--stream-listen", args.stream_listen),
            ("--admin-listen", args.admin_listen),
            ("--metrics-listen", args.metrics_listen),
        ];
        if let Some(webhook) = &webhook {
            addresses.push(("--webhook-listen", webhook.listen));
        }
        addresses.sort_by_key(|(_, addr)| *addr);
        for pair in addresses.windows(2) {
            if pair[0].1 == pair[1].1 && pair[0].1.port() != 0 {
                errors.push(format!(
                    "{} and {} are both {}",
                    pair[0].0, pair[1].0, pair[0].1
                ));
            }
        }

        let redis_url = match args.redis_url.as_deref().map(str::parse::<RedisUrl>) {
            Some(Ok(url)) => Some(url),
            Some(Err(e)) => {
                errors.push(format!("--redis-url: {e}"));
                None
            }
            None => None,
        };
        let redis_tls = args.redis_tls.load(redis_url.as_ref()).unwrap_or_else(|e| {
            errors.extend(e);
            Default::default()
        });

        let store_key = match (&args.store_key_secret, &args.store_key_file) {
            (Some(secret), _) => match parse_object_ref(secret) {
                Ok(secret) => StoreKeySource::Secret(secret),
                Err(e) => {
                    errors.push(format!("--store-key-secret: {e}"));
                    StoreKeySource::Generated
                }
            },
            (None, Some(path)) => {
                match std::fs::read(path)
                    .map_err(|e| format!("cannot read it: {e}"))
                    .and_then(|b| StoreKey::from_file_contents(&b).map_err(|e| e.to_string()))
                {
                    Ok(key) => StoreKeySource::File(KeyPair::new(key)),
                    Err(e) => {
                        errors.push(format!("--store-key-file {}: {e}", path.display()));
                        StoreKeySource::Generated
                    }
                }
            }
            (None, None) => StoreKeySource::Generated,
        };

        let tls_sans: Vec<String> = args
            .tls_sans
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if tls_sans.is_empty() {
            errors.push("--tls-san: at least one name is needed".to_owned());
        } else if let Err(e) = rcgen::CertificateParams::new(tls_sans.clone()) {
            errors.push(format!("--tls-san: {e}"));
        }

        let cluster_domain = args.cluster_domain.trim().trim_end_matches('.').to_owned();
        if !matches!(
            tollgate_inject::parse_tls_dns_names(&cluster_domain).as_deref(),
            Ok([_])
        ) {
            errors.push(format!(
                "--cluster-domain: `{}` is not a DNS domain such as cluster.local",
                args.cluster_domain
            ));
        }

        if !(1..=256).contains(&args.worker_threads) {
            errors.push(format!(
                "--worker-threads: `{}` is not a number of threads from 1 to 256",
                args.worker_threads
            ));
        }

        match (source, errors.is_empty()) {
            (Some(source), true) => Ok(Self {
                source,
                stream_listen: args.stream_listen,
                stream_line_cache_bytes: args.stream_line_cache_bytes,
                admin_listen: args.admin_listen,
                metrics_listen: args.metrics_listen,
                redis_url,
                redis_tls,
                store_key,
                ca_out: args.ca_out.clone(),
                tls_sans: tls_sans.clone(),
                webhook,
                listener_limits: args.limits.limits(),
                body_buffer_budget: args.limits.body_buffer_budget,
                pod_certs: PodCertSettings {
                    lifetime: std::time::Duration::from_secs(args.pod_cert_lifetime),
                    cluster_domain,
                    reserved_names: tls_sans,
                },
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// The webhook's settings, when it is served; its flags' problems go to `errors`.
fn load_webhook(args: &ControllerArgs, errors: &mut Vec<String>) -> Option<Webhook> {
    let flags = &args.webhook;
    errors.extend(flags.validate());
    let inject = args
        .inject
        .to_config()
        .map_err(|problems| errors.extend(problems))
        .ok();
    if !args.manifests.is_empty() && flags.webhook_configuration.is_some() {
        errors.push("--webhook-configuration: needs the API server, not --manifests".to_owned());
    }
    let listen = flags.webhook_listen?;
    let tls = match (&flags.webhook_tls_cert, &flags.webhook_tls_key) {
        (Some(cert), Some(key)) => match TlsSource::files(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                errors.push(
                    e.replace("--tls-cert", "--webhook-tls-cert")
                        .replace("--tls-key", "--webhook-tls-key"),
                );
                return None;
            }
        },
        _ => None,
    };
    Some(Webhook {
        listen,
        tls,
        configuration: flags.webhook_configuration.clone(),
        url: flags.webhook_url.clone(),
        inject: inject?,
    })
}

fn network_policy_settings(
    args: &ControllerArgs,
    errors: &mut Vec<String>,
) -> Option<PolicySettings> {
    let name = args.network_policy_name.clone()?;
    let mut peers = |flag: &str, json: &str| {
        network_policy::parse_peers(flag, json)
            .map_err(|e| errors.push(e))
            .unwrap_or_default()
    };
    let proxy_from = peers(
        "--network-policy-proxy-from",
        &args.network_policy_proxy_from,
    );
    let metrics_from = peers(
        "--network-policy-metrics-from",
        &args.network_policy_metrics_from,
    );
    let extra_ingress = network_policy::parse_extra_ingress(
        "--network-policy-extra-ingress",
        &args.network_policy_extra_ingress,
    )
    .map_err(|e| errors.push(e))
    .unwrap_or_default();
    if name.is_empty() {
        errors.push("--network-policy-name: empty".to_owned());
    }
    Some(PolicySettings {
        name,
        proxy_from,
        metrics_from,
        extra_ingress,
    })
}

/// The namespaces of --watch-namespaces, trimmed, each a DNS label, without repeats.
fn watch_namespaces(given: &[String], errors: &mut Vec<String>) -> Vec<String> {
    let mut namespaces: Vec<String> = given
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    for namespace in &namespaces {
        let label = (1..=63).contains(&namespace.len())
            && namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !namespace.starts_with('-')
            && !namespace.ends_with('-');
        if !label {
            errors.push(format!(
                "--watch-namespaces: `{namespace}` is not a namespace name"
            ));
        }
    }
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// --ca-config-map: a ConfigMap name, or empty for none.
fn ca_config_map(name: &str, errors: &mut Vec<String>) -> Option<String> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if !matches!(
        tollgate_inject::parse_tls_dns_names(name).as_deref(),
        Ok([_])
    ) {
        errors.push(format!("--ca-config-map: `{name}` is not a ConfigMap name"));
        return None;
    }
    Some(name.to_owned())
}

fn parse_review_concurrency(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{value}` is not a number of reviews from 1 to 1024"
        )),
    }
}

fn parse_object_ref(value: &str) -> Result<ObjectRef, String> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectRef::new(ns, name))
        }
        _ => Err(format!("`{value}` is not NAMESPACE/NAME")),
    }
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}
