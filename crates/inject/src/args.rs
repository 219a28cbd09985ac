//! The injection flags, shared by `tollgate inject` and `tollgate controller` (which flattens
//! [`InjectArgs`] into its own flags), and their validation into an [`InjectConfig`].

use std::path::PathBuf;

use crate::annotations::{DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST};
use crate::quantity::{self, Resource};
use crate::{
    ConfigMapKey, ControllerCa, InjectConfig, ProxyResources, RedisTlsSources, RedisUrlSource,
};

/// The image this binary was released as; the chart overrides it with the image it deploys.
pub const DEFAULT_IMAGE: &str = concat!("tollgate:", env!("CARGO_PKG_VERSION"));
/// Images are pinned by tag; `Always` would make every pod start depend on the registry.
pub const DEFAULT_IMAGE_PULL_POLICY: &str = "IfNotPresent";
/// The chart's controller Service in the namespace the README installs into.
pub const DEFAULT_CONTROLLER_URL: &str = "https://tollgate-controller.tollgate-system.svc:8090";
/// The cluster's own namespaces: a broken webhook must never stand between them and their pods.
pub const DEFAULT_EXCLUDED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];
/// The key of `--sidecar-redis-secret` when none is named.
const DEFAULT_REDIS_SECRET_KEY: &str = "url";
/// The key of `--sidecar-redis-ca-configmap` when none is named, as `kube-root-ca.crt` has it.
const DEFAULT_REDIS_CA_KEY: &str = "ca.crt";

/// The settings of injected sidecars that `--sidecar-env` may change: how much a client may
/// hold and for how long, the caches, threads and logging. Everything that chooses what the
/// sidecar listens on, whom it trusts, or what it reads (`TOLLGATE_ADMIN_LISTEN`,
/// `TOLLGATE_TRUSTED_IPS`, `TOLLGATE_REDIS_URL`, the TLS and controller settings) is the
/// injector's alone: an injected pod never opens an admin port, and a Redis password never
/// goes into a pod spec. A test checks that each name is one `tollgate sidecar --help` shows.
pub const TUNABLE_SIDECAR_ENV: &[&str] = &[
    "TOLLGATE_LOG",
    "TOLLGATE_ACCESS_LOG",
    "TOLLGATE_MAX_REQUEST_ID_LENGTH",
    "TOLLGATE_WORKER_THREADS",
    "TOLLGATE_CLIENT_HEADER_TIMEOUT",
    "TOLLGATE_CLIENT_BODY_TIMEOUT",
    "TOLLGATE_CLIENT_IDLE_TIMEOUT",
    "TOLLGATE_MAX_CONNECTIONS",
    "TOLLGATE_MAX_CONCURRENT_STREAMS",
    "TOLLGATE_HTTP2_KEEPALIVE_INTERVAL",
    "TOLLGATE_LINGERING_TIME",
    "TOLLGATE_LINGERING_TIMEOUT",
    "TOLLGATE_MAX_OAUTH_BODY",
    "TOLLGATE_CLIENT_BODY_BUFFER_SIZE",
    "TOLLGATE_BODY_BUFFER_BUDGET",
    "TOLLGATE_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT",
    "TOLLGATE_UPGRADE_IDLE_TIMEOUT",
    "TOLLGATE_VALIDATION_CACHE_SIZE",
    "TOLLGATE_VALIDATION_CACHE_TTL",
    "TOLLGATE_MAX_CONCURRENT_SECRET_HASHES",
    "TOLLGATE_SECRET_HASH_QUEUE_TIMEOUT",
    "TOLLGATE_TLS_FROM_CONTROLLER_TIMEOUT",
];

/// How injected sidecars look. Each flag can also be set as the environment variable shown.
#[derive(Clone, Debug, clap::Args)]
pub struct InjectArgs {
    /// Image of the injected sidecar: the controller's own image.
    #[arg(long, env = "TOLLGATE_SIDECAR_IMAGE", default_value = DEFAULT_IMAGE)]
    pub sidecar_image: String,

    /// imagePullPolicy of the injected sidecar.
    #[arg(long, env = "TOLLGATE_SIDECAR_IMAGE_PULL_POLICY", default_value = DEFAULT_IMAGE_PULL_POLICY,
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub sidecar_image_pull_policy: String,

    /// The controller's snapshot stream, as injected sidecars reach it (https://…:8090).
    #[arg(long, env = "TOLLGATE_SIDECAR_CONTROLLER_URL", default_value = DEFAULT_CONTROLLER_URL)]
    pub sidecar_controller_url: String,

    /// PEM file of the controller's CA, written into each injected pod. Without it and
    /// without --sidecar-ca-configmap, the controller's webhook writes its own CA (and
    /// `tollgate inject -f` leaves the pod's CA annotation empty for the webhook to fill in
    /// when the pod is created).
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_CA_FILE",
        conflicts_with = "sidecar_ca_configmap"
    )]
    pub sidecar_ca_file: Option<PathBuf>,

    /// A ConfigMap in each injected pod's namespace holding the controller's CA as `ca.crt`
    /// (e.g. distributed by trust-manager), instead of the webhook's CA annotation.
    #[arg(long, env = "TOLLGATE_SIDECAR_CA_CONFIGMAP")]
    pub sidecar_ca_configmap: Option<String>,

    /// Inject native sidecars (init containers with restartPolicy Always, Kubernetes 1.29+)
    /// unless a pod's `tollgate.dev/native-sidecar` annotation says otherwise.
    #[arg(long, env = "TOLLGATE_NATIVE_SIDECAR")]
    pub native_sidecar: bool,

    /// CPU request of injected sidecars (annotation `tollgate.dev/proxy-cpu`).
    #[arg(long, env = "TOLLGATE_SIDECAR_CPU", default_value = DEFAULT_CPU_REQUEST)]
    pub sidecar_cpu: String,

    /// Memory request of injected sidecars (annotation `tollgate.dev/proxy-memory`).
    #[arg(long, env = "TOLLGATE_SIDECAR_MEMORY", default_value = DEFAULT_MEMORY_REQUEST)]
    pub sidecar_memory: String,

    /// CPU limit of injected sidecars; none unless given (annotation
    /// `tollgate.dev/proxy-cpu-limit`).
    #[arg(long, env = "TOLLGATE_SIDECAR_CPU_LIMIT")]
    pub sidecar_cpu_limit: Option<String>,

    /// Memory limit of injected sidecars (annotation `tollgate.dev/proxy-memory-limit`).
    #[arg(long, env = "TOLLGATE_SIDECAR_MEMORY_LIMIT", default_value = DEFAULT_MEMORY_LIMIT)]
    pub sidecar_memory_limit: String,

    /// Redis URL for injected sidecars, without credentials (it is written into pod specs).
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_REDIS_URL",
        conflicts_with = "sidecar_redis_secret"
    )]
    pub sidecar_redis_url: Option<String>,

    /// `NAME[:KEY]` of a Secret in each injected pod's namespace holding the Redis URL
    /// (key `url` by default), for a Redis that needs a password.
    #[arg(long, env = "TOLLGATE_SIDECAR_REDIS_SECRET")]
    pub sidecar_redis_secret: Option<String>,

    /// `NAME[:KEY]` of a ConfigMap in each injected pod's namespace holding the CA bundle that
    /// signed Redis's certificate (key `ca.crt` by default): the sidecar's --redis-ca, for a
    /// rediss:// Redis with a private CA. Default: in the controller with --redis-ca, the CA
    /// it publishes (key `redis-ca.crt` of its --ca-config-map); otherwise the system's roots.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_REDIS_CA_CONFIGMAP",
        value_name = "NAME[:KEY]"
    )]
    pub sidecar_redis_ca_configmap: Option<String>,

    /// A Secret of type kubernetes.io/tls (`tls.crt`, `tls.key`, as cert-manager writes it) in
    /// each injected pod's namespace: the sidecar's --redis-client-cert and --redis-client-key,
    /// for a Redis with `tls-auth-clients yes`. None by default.
    #[arg(
        long,
        env = "TOLLGATE_SIDECAR_REDIS_CLIENT_SECRET",
        value_name = "NAME"
    )]
    pub sidecar_redis_client_secret: Option<String>,

    /// Namespaces whose pods are never injected, whatever they ask.
    #[arg(long, env = "TOLLGATE_INJECTION_EXCLUDED_NAMESPACES", value_delimiter = ',',
          default_values_t = DEFAULT_EXCLUDED_NAMESPACES.iter().map(|ns| (*ns).to_owned()))]
    pub injection_excluded_namespaces: Vec<String>,

    /// A setting of every injected sidecar, as its environment variable (repeatable): a limit,
    /// timeout or cache of `tollgate sidecar --help`, e.g. TOLLGATE_MAX_CONNECTIONS=5000, or
    /// TOLLGATE_LOG. Settings of what the sidecar listens on or trusts are refused. None by
    /// default: injected sidecars run the defaults `tollgate sidecar --help` names.
    #[arg(long = "sidecar-env", value_name = "NAME=VALUE")]
    pub sidecar_env: Vec<String>,

    /// The injected container's securityContext, as JSON (a Kubernetes SecurityContext),
    /// replacing the default: non-root as UID 65532, read-only root filesystem, no privilege
    /// escalation, every capability dropped, RuntimeDefault seccomp. On OpenShift, which
    /// assigns UIDs, leave out runAsUser and runAsGroup.
    #[arg(long, env = "TOLLGATE_SIDECAR_SECURITY_CONTEXT", value_name = "JSON")]
    pub sidecar_security_context: Option<String>,
}

// === impl InjectArgs ===

impl InjectArgs {
    /// Validates every flag, reporting each problem with the flag's name.
    pub fn to_config(&self) -> Result<InjectConfig, Vec<String>> {
        let mut errors = Vec::new();

        if self.sidecar_image.trim().is_empty() || self.sidecar_image.contains(char::is_whitespace)
        {
            errors.push(format!(
                "--sidecar-image: {:?} is not an image reference",
                self.sidecar_image
            ));
        }

        match url::Url::parse(&self.sidecar_controller_url) {
            Ok(url) if url.scheme() == "https" && url.host_str().is_some() => {}
            _ => errors.push(format!(
                "--sidecar-controller-url: {:?} is not an https:// URL",
                self.sidecar_controller_url
            )),
        }

        let controller_ca = match (&self.sidecar_ca_file, &self.sidecar_ca_configmap) {
            (Some(path), _) => match std::fs::read_to_string(path) {
                Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => ControllerCa::Pem(pem),
                Ok(_) => {
                    errors.push(format!(
                        "--sidecar-ca-file: {} holds no PEM certificate",
                        path.display()
                    ));
                    ControllerCa::FromWebhook
                }
                Err(error) => {
                    errors.push(format!("--sidecar-ca-file: {}: {error}", path.display()));
                    ControllerCa::FromWebhook
                }
            },
            (None, Some(name)) if crate::annotations::is_dns_subdomain(name) => {
                ControllerCa::ConfigMap(name.clone())
            }
            (None, Some(name)) => {
                errors.push(format!(
                    "--sidecar-ca-configmap: {name:?} is not a ConfigMap name"
                ));
                ControllerCa::FromWebhook
            }
            (None, None) => ControllerCa::FromWebhook,
        };

        let resources = ProxyResources {
            cpu_request: self.sidecar_cpu.clone(),
            memory_request: self.sidecar_memory.clone(),
            cpu_limit: self.sidecar_cpu_limit.clone(),
            memory_limit: Some(self.sidecar_memory_limit.clone()),
        };
        let quantities = [
            ("--sidecar-cpu", Some(&self.sidecar_cpu), Resource::Cpu),
            (
                "--sidecar-memory",
                Some(&self.sidecar_memory),
                Resource::Memory,
            ),
            (
                "--sidecar-cpu-limit",
                self.sidecar_cpu_limit.as_ref(),
                Resource::Cpu,
            ),
            (
                "--sidecar-memory-limit",
                Some(&self.sidecar_memory_limit),
                Resource::Memory,
            ),
        ];
        for (flag, value, resource) in quantities {
            let Some(value) = value else { continue };
            if let Err(problem) = quantity::parse(value, resource) {
                errors.push(format!("{flag}: {value:?} {problem}"));
            }
        }

        let redis = match (&self.sidecar_redis_url, &self.sidecar_redis_secret) {
            (Some(url), _) => match url::Url::parse(url) {
                Ok(parsed) if parsed.password().is_some() => {
                    // Never echo it: the point is that it holds a password.
                    errors.push(
                        "--sidecar-redis-url: the URL holds a password, which would be written \
                         into every pod spec; put it in a Secret and use --sidecar-redis-secret"
                            .to_owned(),
                    );
                    None
                }
                Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {
                    Some(RedisUrlSource::Url(url.clone()))
                }
                _ => {
                    errors.push(
                        "--sidecar-redis-url: expected a redis:// or rediss:// URL".to_owned(),
                    );
                    None
                }
            },
            (None, Some(secret)) => {
                let (name, key) = secret
                    .split_once(':')
                    .unwrap_or((secret.as_str(), DEFAULT_REDIS_SECRET_KEY));
                if crate::annotations::is_dns_subdomain(name) && !key.is_empty() {
                    Some(RedisUrlSource::Secret {
                        name: name.to_owned(),
                        key: key.to_owned(),
                    })
                } else {
                    errors.push(format!(
                        "--sidecar-redis-secret: {secret:?} is not NAME or NAME:KEY of a Secret"
                    ));
                    None
                }
            }
            (None, None) => None,
        };

        let redis_tls = RedisTlsSources {
            ca: self
                .sidecar_redis_ca_configmap
                .as_deref()
                .and_then(|value| {
                    let (name, key) = value
                        .split_once(':')
                        .unwrap_or((value, DEFAULT_REDIS_CA_KEY));
                    if crate::annotations::is_dns_subdomain(name) && is_config_map_key(key) {
                        Some(ConfigMapKey {
                            name: name.to_owned(),
                            key: key.to_owned(),
                        })
                    } else {
                        errors.push(format!(
                            "--sidecar-redis-ca-configmap: {value:?} is not NAME or NAME:KEY of a \
                         ConfigMap"
                        ));
                        None
                    }
                }),
            client_secret: self
                .sidecar_redis_client_secret
                .as_deref()
                .and_then(|name| {
                    if crate::annotations::is_dns_subdomain(name) {
                        Some(name.to_owned())
                    } else {
                        errors.push(format!(
                            "--sidecar-redis-client-secret: {name:?} is not a Secret name"
                        ));
                        None
                    }
                }),
        };
        let plain_redis =
            matches!(&redis, Some(RedisUrlSource::Url(url)) if url.starts_with("redis://"));
        if plain_redis && !redis_tls.is_empty() {
            errors.push(
                "--sidecar-redis-ca-configmap, --sidecar-redis-client-secret: the sidecars' \
                 Redis URL (--sidecar-redis-url) is redis://, without TLS; use rediss://"
                    .to_owned(),
            );
        }

        let mut sidecar_env: Vec<(String, String)> = Vec::new();
        for setting in &self.sidecar_env {
            match sidecar_setting(setting) {
                Ok((name, value)) => {
                    if sidecar_env.iter().any(|(seen, _)| *seen == name) {
                        errors.push(format!("--sidecar-env: {name} is given twice"));
                    } else {
                        sidecar_env.push((name, value));
                    }
                }
                Err(problem) => errors.push(format!("--sidecar-env: {problem}")),
            }
        }

        let excluded_namespaces: Vec<String> = self
            .injection_excluded_namespaces
            .iter()
            .map(|ns| ns.trim().to_owned())
            .filter(|ns| !ns.is_empty())
            .collect();

        let security_context = self.sidecar_security_context.as_deref().and_then(|json| {
            security_context(json)
                .map_err(|problem| errors.push(format!("--sidecar-security-context: {problem}")))
                .ok()
        });

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(InjectConfig {
            image: self.sidecar_image.clone(),
            image_pull_policy: Some(self.sidecar_image_pull_policy.clone()),
            controller_url: self.sidecar_controller_url.clone(),
            controller_ca,
            native_sidecar: self.native_sidecar,
            resources,
            redis,
            redis_tls,
            excluded_namespaces,
            sidecar_env,
            security_context,
        })
    }
}

/// A ConfigMap's key: letters, digits, `-`, `_` and `.` (Kubernetes' rule).
fn is_config_map_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A securityContext from JSON. Kubernetes' types skip fields they do not know, so a typo
/// (`runAsNonroot`) would silently drop a setting: every field must come back out.
fn security_context(json: &str) -> Result<k8s_openapi::api::core::v1::SecurityContext, String> {
    let given: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let parsed: k8s_openapi::api::core::v1::SecurityContext = serde_json::from_value(given.clone())
        .map_err(|e| format!("not a Kubernetes SecurityContext: {e}"))?;
    let kept = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    if let (Some(given), Some(kept)) = (given.as_object(), kept.as_object()) {
        let unknown: Vec<&str> = given
            .keys()
            .filter(|key| !kept.contains_key(*key) && !given[*key].is_null())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown field(s) {} of a SecurityContext",
                unknown.join(", ")
            ));
        }
    }
    Ok(parsed)
}

/// One `--sidecar-env NAME=VALUE`, checked against [`TUNABLE_SIDECAR_ENV`]. The value itself
/// is the sidecar's to check: a bad one stops the sidecar at start, with a message naming it.
fn sidecar_setting(setting: &str) -> Result<(String, String), String> {
    let Some((name, value)) = setting.split_once('=') else {
        return Err(format!("{setting:?} is not NAME=VALUE"));
    };
    let name = name.trim();
    if !TUNABLE_SIDECAR_ENV.contains(&name) {
        return Err(format!(
            "{name:?} is not a setting injected sidecars may be given; one of: {}",
            TUNABLE_SIDECAR_ENV.join(", ")
        ));
    }
    if value.trim().is_empty() || value.contains(char::is_control) {
        return Err(format!("{name}: {value:?} is not a value"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        inject: InjectArgs,
    }

    fn parse(args: &[&str]) -> Result<InjectConfig, Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map_err(|e| vec![e.to_string()])?;
        cli.inject.to_config()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = parse(&[]).unwrap();
        assert_eq!(config, InjectConfig::new(DEFAULT_IMAGE));
        assert!(config.image.starts_with("tollgate:0."));
    }

    #[test]
    fn every_bad_flag_is_named() {
        let errors = parse(&[
            "--sidecar-image",
            "",
            "--sidecar-controller-url",
            "http://x:8090",
            "--sidecar-cpu",
            "lots",
            "--sidecar-memory-limit",
            "64m",
            "--sidecar-redis-url",
            "redis://:hunter2@redis:6379",
            "--sidecar-ca-configmap",
            "Bad_Name",
        ])
        .unwrap_err();
        let joined = errors.join("\n");
        for flag in [
            "--sidecar-image:",
            "--sidecar-controller-url:",
            "--sidecar-cpu:",
            "--sidecar-memory-limit:",
            "--sidecar-redis-url:",
            "--sidecar-ca-configmap:",
        ] {
            assert!(joined.contains(flag), "{flag} missing from:\n{joined}");
        }
        assert!(!joined.contains("hunter2"), "{joined}");
    }

    #[test]
    fn sidecar_env_takes_tunables_only() {
        let config = parse(&[
            "--sidecar-env",
            "TOLLGATE_MAX_CONNECTIONS=5000",
            "--sidecar-env",
            "TOLLGATE_LOG=info,tollgate_sidecar=debug",
        ])
        .unwrap();
        assert_eq!(
            config.sidecar_env,
            [
                ("TOLLGATE_MAX_CONNECTIONS".into(), "5000".into()),
                ("TOLLGATE_LOG".into(), "info,tollgate_sidecar=debug".into()),
            ]
        );

        for (setting, said) in [
            // What would open an admin port, or trust another proxy, in every injected pod.
            (
                "TOLLGATE_ADMIN_LISTEN=0.0.0.0:8444",
                "\"TOLLGATE_ADMIN_LISTEN\" is not",
            ),
            (
                "TOLLGATE_TRUSTED_IPS=0.0.0.0/0",
                "\"TOLLGATE_TRUSTED_IPS\" is not",
            ),
            (
                "TOLLGATE_REDIS_URL=redis://x",
                "\"TOLLGATE_REDIS_URL\" is not",
            ),
            ("PATH=/tmp", "\"PATH\" is not"),
            ("TOLLGATE_MAX_CONNECTIONS", "is not NAME=VALUE"),
            ("TOLLGATE_MAX_CONNECTIONS=", "is not a value"),
            ("TOLLGATE_LOG=a\nb", "is not a value"),
        ] {
            let errors = parse(&["--sidecar-env", setting]).unwrap_err().join("\n");
            assert!(errors.starts_with("--sidecar-env: "), "{errors}");
            assert!(errors.contains(said), "{setting}: {errors}");
        }
        let errors = parse(&[
            "--sidecar-env",
            "TOLLGATE_LOG=info",
            "--sidecar-env",
            "TOLLGATE_LOG=debug",
        ])
        .unwrap_err();
        assert_eq!(errors, ["--sidecar-env: TOLLGATE_LOG is given twice"]);
    }

    #[test]
    fn redis_secret_with_and_without_key() {
        let config = parse(&["--sidecar-redis-secret", "tollgate-redis"]).unwrap();
        assert_eq!(
            config.redis,
            Some(RedisUrlSource::Secret {
                name: "tollgate-redis".into(),
                key: "url".into()
            })
        );
        let config = parse(&["--sidecar-redis-secret", "redis:connection"]).unwrap();
        assert_eq!(
            config.redis,
            Some(RedisUrlSource::Secret {
                name: "redis".into(),
                key: "connection".into()
            })
        );
    }

    #[test]
    fn redis_tls_sources_are_checked() {
        let config = parse(&[
            "--sidecar-redis-ca-configmap",
            "redis-ca",
            "--sidecar-redis-client-secret",
            "redis-client",
        ])
        .unwrap();
        assert_eq!(
            config.redis_tls,
            RedisTlsSources {
                ca: Some(ConfigMapKey {
                    name: "redis-ca".into(),
                    key: "ca.crt".into()
                }),
                client_secret: Some("redis-client".into()),
            }
        );
        let config = parse(&[
            "--sidecar-redis-ca-configmap",
            "tollgate-ca.crt:redis-ca.crt",
        ])
        .unwrap();
        assert_eq!(
            config.redis_tls.ca,
            Some(ConfigMapKey {
                name: "tollgate-ca.crt".into(),
                key: "redis-ca.crt".into()
            })
        );
        assert_eq!(parse(&[]).unwrap().redis_tls, RedisTlsSources::default());

        let errors = parse(&[
            "--sidecar-redis-ca-configmap",
            "Bad_Name",
            "--sidecar-redis-client-secret",
            "x/y",
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("--sidecar-redis-ca-configmap: \"Bad_Name\""));
        assert!(errors[1].starts_with("--sidecar-redis-client-secret: \"x/y\""));
        let errors = parse(&["--sidecar-redis-ca-configmap", "ca:a/b"]).unwrap_err();
        assert!(errors[0].contains("is not NAME or NAME:KEY"), "{errors:?}");

        // TLS files for a Redis spoken to in clear would be a setting that does nothing.
        let errors = parse(&[
            "--sidecar-redis-url",
            "redis://redis:6379",
            "--sidecar-redis-ca-configmap",
            "redis-ca",
        ])
        .unwrap_err();
        assert!(errors[0].contains("without TLS"), "{errors:?}");
        assert!(
            parse(&[
                "--sidecar-redis-url",
                "rediss://redis:6380",
                "--sidecar-redis-ca-configmap",
                "redis-ca",
            ])
            .is_ok()
        );
    }

    #[test]
    fn ca_file_is_embedded() {
        let dir = std::env::temp_dir().join(format!("tollgate-inject-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let config = parse(&["--sidecar-ca-file", path.to_str().unwrap()]).unwrap();
        assert!(matches!(config.controller_ca, ControllerCa::Pem(pem) if pem.contains("MIIB")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
