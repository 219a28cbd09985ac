//! The `tollgate-sidecar` container and its volumes, built from the config and one pod's
//! [`Overrides`]. The paths and flags here are the sidecar's contract with the controller
//! (issue 4): `--controller`, `--controller-ca`, `--token-file`, `--snapshot-cache`, and
//! `POD_NAME`/`POD_NAMESPACE` from the downward API. The container runs the image's
//! sidecar-only binary, [`SIDECAR_COMMAND`](crate::SIDECAR_COMMAND).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
    DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretProjection, SecretVolumeSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::SIDECAR_PORTS;
use crate::{
    ANNOTATION_CONTROLLER_CA, CONTAINER_NAME, ControllerCa, InjectConfig, InjectError, Overrides,
    RedisUrlSource, SIDECAR_COMMAND,
};

/// The audience of the projected token: the controller's TokenReview asks for it, so the
/// token is worthless to the API server and to anything else.
pub const TOKEN_AUDIENCE: &str = "tollgate";
/// The kubelet renews the token at 80% of this; the controller re-reads it on reconnect.
const TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// The proxy port, the article's 8443.
pub const PROXY_PORT: i32 = 8443;
/// `/metrics`, `/healthz` and `/readyz`; the kubelet's probes come from outside the pod, so
/// the sidecar must listen on every address, not on its loopback default.
pub const METRICS_PORT: i32 = 9090;
/// Port names are IANA service names: at most 15 characters.
pub const PROXY_PORT_NAME: &str = "tollgate-https";
pub const METRICS_PORT_NAME: &str = "tollgate-prom";

/// The image's non-root user (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;

pub const TOKEN_VOLUME: &str = "tollgate-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/tollgate";
pub const CA_VOLUME: &str = "tollgate-ca";
pub const CA_DIR: &str = "/var/run/tollgate/ca";
pub const CACHE_VOLUME: &str = "tollgate-cache";
pub const CACHE_DIR: &str = "/var/run/tollgate/cache";
pub const TLS_VOLUME: &str = "tollgate-tls";
pub const TLS_DIR: &str = "/var/run/tollgate/tls";
pub const REDIS_TLS_VOLUME: &str = "tollgate-redis-tls";
pub const REDIS_TLS_DIR: &str = "/var/run/tollgate/redis-tls";
/// A full snapshot of a busy namespace is a few hundred kilobytes; this bounds a runaway.
const CACHE_SIZE_LIMIT: &str = "32Mi";

const VOLUMES: &[&str] = &[
    TOKEN_VOLUME,
    CA_VOLUME,
    CACHE_VOLUME,
    TLS_VOLUME,
    REDIS_TLS_VOLUME,
];

/// Refuses pods whose volumes or ports are in the sidecar's way.
pub(crate) fn check_conflicts(spec: &PodSpec) -> Result<(), InjectError> {
    for volume in spec.volumes.iter().flatten() {
        if VOLUMES.contains(&volume.name.as_str()) {
            return Err(InjectError::Conflict(format!(
                "the pod already has a volume named {:?}, a name the tollgate sidecar needs",
                volume.name
            )));
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for port in container.ports.iter().flatten() {
            let declared = u16::try_from(port.container_port).ok();
            if let Some((port, what)) = SIDECAR_PORTS.iter().find(|(p, _)| Some(*p) == declared) {
                return Err(InjectError::Conflict(format!(
                    "container {:?} declares port {port}, the tollgate sidecar's {what} port",
                    container.name
                )));
            }
        }
    }
    Ok(())
}

/// The container, ready to add to `containers` (or to `initContainers` as a native sidecar).
pub(crate) fn container(config: &InjectConfig, overrides: &Overrides) -> Container {
    let mut args: Vec<String> = [
        "sidecar",
        "--controller",
        &config.controller_url,
        "--controller-ca",
        &format!("{CA_DIR}/ca.crt"),
        "--token-file",
        &format!("{TOKEN_DIR}/token"),
        "--snapshot-cache",
        &format!("{CACHE_DIR}/snapshot.json"),
        "--metrics-listen",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut mounts = vec![
        mount(TOKEN_VOLUME, TOKEN_DIR, true),
        mount(CA_VOLUME, CA_DIR, true),
        mount(CACHE_VOLUME, CACHE_DIR, false),
    ];
    if overrides.tls_secret.is_some() {
        args.extend([
            "--tls-cert".to_owned(),
            format!("{TLS_DIR}/tls.crt"),
            "--tls-key".to_owned(),
            format!("{TLS_DIR}/tls.key"),
        ]);
        mounts.push(mount(TLS_VOLUME, TLS_DIR, true));
    } else {
        // The key is made in the sidecar and never leaves it; the controller's CA signs it.
        args.push("--tls-from-controller".to_owned());
    }
    let redis_tls = &config.redis_tls;
    if redis_tls.ca.is_some() {
        args.extend(["--redis-ca".to_owned(), format!("{REDIS_TLS_DIR}/ca.crt")]);
    }
    if redis_tls.client_secret.is_some() {
        args.extend([
            "--redis-client-cert".to_owned(),
            format!("{REDIS_TLS_DIR}/tls.crt"),
            "--redis-client-key".to_owned(),
            format!("{REDIS_TLS_DIR}/tls.key"),
        ]);
    }
    if !redis_tls.is_empty() {
        mounts.push(mount(REDIS_TLS_VOLUME, REDIS_TLS_DIR, true));
    }

    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    match &config.redis {
        None => {}
        Some(RedisUrlSource::Url(url)) => env.push(EnvVar {
            name: "TOLLGATE_REDIS_URL".to_owned(),
            value: Some(url.clone()),
            value_from: None,
        }),
        Some(RedisUrlSource::Secret { name, key }) => env.push(EnvVar {
            name: "TOLLGATE_REDIS_URL".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.clone(),
                    key: key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        }),
    }

    env.extend(config.sidecar_env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        value_from: None,
    }));

    let resources = &overrides.resources;
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_owned(), Quantity(resources.cpu_request.clone()));
    requests.insert(
        "memory".to_owned(),
        Quantity(resources.memory_request.clone()),
    );
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &resources.cpu_limit {
        limits.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &resources.memory_limit {
        limits.insert("memory".to_owned(), Quantity(memory.clone()));
    }

    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec![SIDECAR_COMMAND.to_owned()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![
            port(PROXY_PORT, PROXY_PORT_NAME),
            port(METRICS_PORT, METRICS_PORT_NAME),
        ]),
        // Ready only once it holds a snapshot: no request is served with no configuration.
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: (!limits.is_empty()).then_some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(
            config
                .security_context
                .clone()
                .unwrap_or_else(default_security_context),
        ),
        // `kubectl describe pod` shows why the sidecar stopped, even if it wrote no message.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        restart_policy: overrides.native_sidecar.then(|| "Always".to_owned()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// The sidecar's securityContext unless `--sidecar-security-context` replaces it: non-root as
/// the image's user, nothing writable but its volumes, no privilege at all.
pub fn default_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The volumes the container mounts.
pub(crate) fn volumes(config: &InjectConfig, overrides: &Overrides) -> Vec<Volume> {
    let token = Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.to_owned()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: "token".to_owned(),
                }),
                ..VolumeProjection::default()
            }]),
            default_mode: None,
        }),
        ..Volume::default()
    };
    let ca_source = match &config.controller_ca {
        ControllerCa::Pem(_) | ControllerCa::FromWebhook => VolumeProjection {
            downward_api: Some(DownwardAPIProjection {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "ca.crt".to_owned(),
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{ANNOTATION_CONTROLLER_CA}']"),
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
            }),
            ..VolumeProjection::default()
        },
        ControllerCa::ConfigMap(name) => VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: name.clone(),
                items: Some(vec![KeyToPath {
                    key: "ca.crt".to_owned(),
                    path: "ca.crt".to_owned(),
                    mode: None,
                }]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        },
    };
    let ca = Volume {
        name: CA_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![ca_source]),
            default_mode: None,
        }),
        ..Volume::default()
    };
    let cache = Volume {
        name: CACHE_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity(CACHE_SIZE_LIMIT.to_owned())),
        }),
        ..Volume::default()
    };
    let mut volumes = vec![token, ca, cache];
    if let Some(secret) = &overrides.tls_secret {
        volumes.push(Volume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                optional: Some(false),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(volume) = redis_tls_volume(config) {
        volumes.push(volume);
    }
    volumes
}

/// The Redis CA (a ConfigMap) and client certificate (a Secret) of the pod's namespace, as one
/// directory. Not optional: a missing object keeps the pod from starting with a clear event,
/// rather than a sidecar that fails its TLS handshakes.
fn redis_tls_volume(config: &InjectConfig) -> Option<Volume> {
    let sources = &config.redis_tls;
    if sources.is_empty() {
        return None;
    }
    let ca = sources.ca.as_ref().map(|ca| VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: ca.name.clone(),
            items: Some(vec![key_to_path(&ca.key, "ca.crt")]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    });
    let client = sources.client_secret.as_ref().map(|name| VolumeProjection {
        secret: Some(SecretProjection {
            name: name.clone(),
            items: Some(vec![
                key_to_path("tls.crt", "tls.crt"),
                key_to_path("tls.key", "tls.key"),
            ]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    });
    Some(Volume {
        name: REDIS_TLS_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(ca.into_iter().chain(client).collect()),
            default_mode: None,
        }),
        ..Volume::default()
    })
}

fn key_to_path(key: &str, path: &str) -> KeyToPath {
    KeyToPath {
        key: key.to_owned(),
        path: path.to_owned(),
        mode: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn port(number: i32, name: &str) -> ContainerPort {
    ContainerPort {
        container_port: number,
        name: Some(name.to_owned()),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(METRICS_PORT),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}
