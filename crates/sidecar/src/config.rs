//! The sidecar's flags, and their validation into a [`Config`] before any port is bound.
//!
//! Every problem is collected first and reported together, each naming its flag or file, so
//! one run tells a user everything that is wrong.

use std::net::SocketAddr;
use std::path::PathBuf;

use tollgate_admin::AdminToken;
use tollgate_api::Snapshot;
use tollgate_store::{KeyPair, RedisUrl, StoreKey};

pub use crate::access_log::AccessLogFormat;
pub use crate::body::BodyLimits;
use crate::controller_client::{ControllerSource, ControllerSourceArgs};
use crate::manifests_watch::{self, ManifestSource};
use crate::observe::ObserveSettings;
use crate::tls::TlsSource;
use crate::trusted::TrustedIps;
pub use crate::tunnel::UpgradeLimits;

/// Kong's proxy TLS port, the article's port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Kong's admin TLS port, for a standalone sidecar. Loopback only: the admin API can revoke
/// every token. A sidecar fed by `--controller` has no admin API unless `--admin-listen` is
/// given: the controller serves it, behind Kubernetes RBAC.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8444";
/// Loopback by default; a pod exposes it to the kubelet through its probes.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";
/// Enough for every active token of a busy pod, at about 300 bytes each.
pub const DEFAULT_VALIDATION_CACHE_SIZE: u64 = 10_000;
/// Short enough that a lost revocation message heals quickly, long enough to absorb bursts.
pub const DEFAULT_VALIDATION_CACHE_TTL: u64 = 30;
/// A sidecar shares its pod's CPU with the application, so one thread is the default.
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// `--max-oauth-body`: a token request is under 4 KiB.
pub const DEFAULT_MAX_OAUTH_BODY: usize = 64 * 1024;
/// `--client-body-buffer-size`: nginx's `client_body_buffer_size` on 64-bit systems.
pub const DEFAULT_CLIENT_BODY_BUFFER_SIZE: usize = 16 * 1024;
/// `--upstream-keepalive-idle-timeout`: Kong's `upstream_keepalive_idle_timeout`.
pub const DEFAULT_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT: u64 = 60;
/// `--upgrade-idle-timeout`: Kong's default `read_timeout` of a service, 60 s.
pub const DEFAULT_UPGRADE_IDLE_TIMEOUT: u64 = 60;
/// `--max-concurrent-secret-hashes`: one core's worth of password hashing.
pub const DEFAULT_MAX_CONCURRENT_SECRET_HASHES: u8 =
    tollgate_oauth::secret_gate::DEFAULT_MAX_CONCURRENT_SECRET_HASHES;
/// `--tls-from-controller-timeout`, in seconds: a controller that answers at all answers
/// well within it.
pub const DEFAULT_TLS_FROM_CONTROLLER_TIMEOUT: u64 = 60;
/// `--manifests-poll-interval`, in seconds: as often as the controller's file source.
pub const DEFAULT_MANIFESTS_POLL_INTERVAL: u64 = 1;
/// `--secret-hash-queue-timeout`, in seconds.
pub const DEFAULT_SECRET_HASH_QUEUE_TIMEOUT: u8 = 1;

/// `tollgate sidecar`: TLS termination, the OAuth endpoints, token checks and forwarding to
/// the application on 127.0.0.1.
// No `Debug`: the Redis URL may carry a password.
#[derive(Clone, clap::Args)]
pub struct SidecarArgs {
    /// OAuthService, Consumer, OAuthApplication and Secret manifests: a YAML file or a folder
    /// of them. May be repeated.
    #[arg(
        long,
        env = "TOLLGATE_MANIFESTS",
        value_delimiter = ',',
        required_unless_present = "controller"
    )]
    pub manifests: Vec<PathBuf>,

    /// Seconds between two checks of the --manifests files. When they changed, they are read
    /// again and served from the next request on; a change that is not valid is logged and
    /// the configuration read before kept. 0 reads them at start only.
    #[arg(long, env = "TOLLGATE_MANIFESTS_POLL_INTERVAL",
          default_value_t = DEFAULT_MANIFESTS_POLL_INTERVAL,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub manifests_poll_interval: u64,

    /// Address of the proxy and OAuth endpoints (TLS).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Plain-HTTP address for traffic whose TLS a trusted proxy in front already terminated.
    /// Off by default. The OAuth endpoints accept it only on services with
    /// `acceptHttpIfAlreadyTerminated`, from --trusted-ips, with one `X-Forwarded-Proto: https`.
    #[arg(long, env = "TOLLGATE_LISTEN_HTTP")]
    pub listen_http: Option<SocketAddr>,

    /// Addresses (CIDR blocks, comma-separated) trusted to have terminated TLS in front of
    /// --listen-http. Loopback by default: a proxy in the same pod.
    #[arg(
        long,
        env = "TOLLGATE_TRUSTED_IPS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub trusted_ips: Vec<String>,

    /// Address of the admin API, `/{namespace}/oauth2_tokens` (TLS), serving only the
    /// namespaces of this sidecar's configuration. Default 127.0.0.1:8444 standalone; with
    /// --controller, none unless given (the controller serves the admin API).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// File holding a bearer token the admin API then requires (`Authorization: Bearer …`),
    /// at least 16 printable characters; a trailing newline is ignored. Without it, anything
    /// that reaches --admin-listen may use the admin API.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Address of `/metrics`, `/healthz` and `/readyz` (plain HTTP).
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// PEM certificate chain. Without it and --tls-key, a self-signed certificate for
    /// localhost is made at start.
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve a certificate of the controller's CA: a key made in this process, which never
    /// leaves it, signed for the pod's IP, `localhost` and its tollgate.dev/tls-dns-names, and
    /// renewed at two thirds of its life. What the injector asks for without
    /// tollgate.dev/tls-secret.
    #[arg(
        long,
        env = "TOLLGATE_TLS_FROM_CONTROLLER",
        requires = "controller",
        conflicts_with = "tls_cert"
    )]
    pub tls_from_controller: bool,

    /// Seconds the sidecar stays not ready waiting for its first certificate from the
    /// controller; after, it serves a self-signed one, logs an error, and keeps asking.
    #[arg(long, env = "TOLLGATE_TLS_FROM_CONTROLLER_TIMEOUT",
          default_value_t = DEFAULT_TLS_FROM_CONTROLLER_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_from_controller_timeout: u64,

    /// Shared token store, `redis://` or `rediss://` (with `user:password@` when needed), or
    /// Redis behind Sentinel: `redis+sentinel://[user:password@]host:port,host:port/<master-name>[/db]`
    /// (`rediss+sentinel://` with TLS; sentinels on port 26379 unless given; sentinels'
    /// own password as `?sentinel_password=…[&sentinel_username=…]`). Give it in the
    /// environment, not in argv, when it holds a password. Without it, tokens are kept in
    /// this process's memory.
    // Parsed in `Config::load`, not by clap: clap would echo a bad URL, password and all.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,

    #[command(flatten)]
    pub redis_tls: tollgate_serve::runtime::RedisTlsArgs,

    /// Key that seals every value kept in Redis, so that nothing written there without it is
    /// believed: a file of at least 32 bytes (a trailing newline ignored), e.g. from
    /// `head -c 32 /dev/urandom`. Required with --redis-url; replicas sharing tokens need the
    /// same file. With --controller, the controller delivers each pod its namespace's key.
    #[arg(long, env = "TOLLGATE_STORE_KEY_FILE")]
    pub store_key_file: Option<PathBuf>,

    /// The key file before a rotation: what it sealed still verifies, nothing new is sealed
    /// with it. Drop it once every token sealed before the rotation has expired.
    #[arg(
        long,
        env = "TOLLGATE_STORE_PREVIOUS_KEY_FILE",
        requires = "store_key_file"
    )]
    pub store_previous_key_file: Option<PathBuf>,

    /// Live tokens remembered per sidecar, so most requests need no Redis round trip. Revoked
    /// tokens are evicted at once through Redis's revocation channel. 0 turns the cache off.
    #[arg(long, env = "TOLLGATE_VALIDATION_CACHE_SIZE", default_value_t = DEFAULT_VALIDATION_CACHE_SIZE)]
    pub validation_cache_size: u64,

    /// Seconds a cached validation is trusted before Redis is asked again: the bound on how
    /// stale a cached token can be should a revocation message ever be lost in transit.
    #[arg(long, env = "TOLLGATE_VALIDATION_CACHE_TTL", default_value_t = DEFAULT_VALIDATION_CACHE_TTL,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub validation_cache_ttl: u64,

    /// Threads serving requests.
    #[arg(long, env = "TOLLGATE_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS,
          value_parser = parse_worker_threads)]
    pub worker_threads: usize,

    /// Bytes of a request body the OAuth endpoints read; a longer one gets 413.
    #[arg(long, env = "TOLLGATE_MAX_OAUTH_BODY", default_value_t = DEFAULT_MAX_OAUTH_BODY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(64 << 20)))]
    pub max_oauth_body: usize,

    /// Bytes of a proxied form body read to look for `access_token`; a longer body is
    /// streamed to the application unread, and a token in it is not seen.
    #[arg(long, env = "TOLLGATE_CLIENT_BODY_BUFFER_SIZE", default_value_t = DEFAULT_CLIENT_BODY_BUFFER_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(64 << 20)))]
    pub client_body_buffer_size: usize,

    /// Seconds a client connection keeps the application connection of its last request
    /// with no new request; after, that connection is closed.
    #[arg(long, env = "TOLLGATE_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT",
          default_value_t = DEFAULT_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upstream_keepalive_idle_timeout: u64,

    /// Seconds a WebSocket connection may carry no byte either way before both of its
    /// connections (the client's and the application's) are closed.
    #[arg(long, env = "TOLLGATE_UPGRADE_IDLE_TIMEOUT",
          default_value_t = DEFAULT_UPGRADE_IDLE_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upgrade_idle_timeout: u64,

    /// Full password hashes of client secrets and provision keys run at once. A secret's
    /// first successful verification is remembered for the snapshot's life; before that,
    /// each attempt, right or wrong, costs a full hash, and this bounds what clients with no
    /// token can make the sidecar spend.
    #[arg(long, env = "TOLLGATE_MAX_CONCURRENT_SECRET_HASHES",
          default_value_t = DEFAULT_MAX_CONCURRENT_SECRET_HASHES,
          value_parser = clap::value_parser!(u8).range(1..=64))]
    pub max_concurrent_secret_hashes: u8,

    /// Seconds a request waits for one of --max-concurrent-secret-hashes; after, the OAuth
    /// endpoint answers 503 `temporarily_unavailable` with `Retry-After: 1`.
    #[arg(long, env = "TOLLGATE_SECRET_HASH_QUEUE_TIMEOUT",
          default_value_t = DEFAULT_SECRET_HASH_QUEUE_TIMEOUT,
          value_parser = clap::value_parser!(u8).range(0..=60))]
    pub secret_hash_queue_timeout: u8,

    /// One line per request on stdout: time, request id, client address, method, path
    /// (never its query), service, status, bytes, durations, consumer, client id and trace
    /// id; never a token or secret. Failed client authentications and admin revocations are
    /// logged as audit lines on stderr whatever this says.
    #[arg(long, env = "TOLLGATE_ACCESS_LOG", value_enum, default_value_t = AccessLogFormat::Off)]
    pub access_log: AccessLogFormat,

    /// Bytes of a client's `X-Request-Id` kept and passed to the application; a longer one,
    /// or one with other than visible ASCII, is replaced by a new id.
    #[arg(long, env = "TOLLGATE_MAX_REQUEST_ID_LENGTH",
          default_value_t = crate::trace_context::DEFAULT_MAX_REQUEST_ID_LENGTH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=1024))]
    pub max_request_id_length: usize,

    #[command(flatten)]
    pub limits: tollgate_serve::ListenerLimitArgs,

    #[command(flatten)]
    pub controller_source: ControllerSourceArgs,
}

/// Everything the sidecar serves, validated.
#[derive(Debug)]
pub struct Config {
    /// Empty when the snapshots come from `controller`.
    pub snapshot: Snapshot,
    /// The --manifests to follow; `None` with --controller or a poll interval of 0.
    pub manifests: Option<ManifestSource>,
    pub controller: Option<ControllerSource>,
    pub listen: SocketAddr,
    /// `None`: no admin API (a sidecar fed by the controller, by default).
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<AdminToken>,
    pub metrics_listen: SocketAddr,
    pub tls: TlsSource,
    /// With [`TlsSource::FromController`]: how long readiness waits for the first certificate.
    pub tls_from_controller_timeout: std::time::Duration,
    pub redis_url: Option<RedisUrl>,
    /// --redis-ca, --redis-client-cert and --redis-client-key, read.
    pub redis_tls: tollgate_store::RedisTls,
    /// From --store-key-file: seals Redis values of every namespace. `None` in memory, and
    /// with --controller, whose snapshots bring the key of the pod's namespace.
    pub store_key: Option<KeyPair>,
    pub listen_http: Option<SocketAddr>,
    pub trusted_ips: TrustedIps,
    pub validation_cache_size: u64,
    pub validation_cache_ttl: std::time::Duration,
    pub body_limits: BodyLimits,
    /// Every listener's client timeouts and caps.
    pub listener_limits: tollgate_serve::ListenerLimits,
    pub upstream_keepalive_idle_timeout: std::time::Duration,
    /// `--upgrade-idle-timeout`, and `--max-connections` as the bound on WebSockets.
    pub upgrades: UpgradeLimits,
    /// `--max-concurrent-secret-hashes`.
    pub max_concurrent_secret_hashes: usize,
    /// `--secret-hash-queue-timeout`.
    pub secret_hash_queue_timeout: std::time::Duration,
    /// `--access-log` and `--max-request-id-length`.
    pub observe: ObserveSettings,
}

/// All configuration problems found, one line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

// === impl Config ===

impl Config {
    pub fn load(args: &SidecarArgs) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let controller = ControllerSource::load(&args.controller_source, &mut errors);

        // Fed by the controller, there are no manifests (clap allows none with it).
        let fingerprint = tollgate_api::manifests::fingerprint(&args.manifests);
        let snapshot = if args.manifests.is_empty() {
            Some(Snapshot::default())
        } else {
            manifests_watch::read(&args.manifests)
                .map_err(|problems| errors.extend(problems))
                .ok()
        };
        let manifests =
            (!args.manifests.is_empty() && args.manifests_poll_interval > 0).then(|| {
                ManifestSource {
                    paths: args.manifests.clone(),
                    fingerprint,
                    interval: std::time::Duration::from_secs(args.manifests_poll_interval),
                }
            });

        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => match TlsSource::files(cert, key) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            _ if args.tls_from_controller => Some(TlsSource::FromController),
            _ => Some(TlsSource::SelfSigned),
        };

        let admin_listen = admin_listen(args.admin_listen, controller.is_some());
        let admin_token = match (&args.admin_token_file, admin_listen) {
            (None, _) => None,
            (Some(_), None) => {
                errors.push(
                    "--admin-token-file: there is no admin API to protect: a sidecar fed by --controller serves one only with --admin-listen"
                        .to_owned(),
                );
                None
            }
            (Some(path), Some(_)) => AdminToken::load(path).map_err(|e| errors.push(e)).ok(),
        };
        let mut addresses = vec![
            ("--listen", args.listen),
            ("--metrics-listen", args.metrics_listen),
        ];
        if let Some(admin) = admin_listen {
            addresses.push(("--admin-listen", admin));
        }
        if let Some(http) = args.listen_http {
            addresses.push(("--listen-http", http));
        }
        let trusted_ips = TrustedIps::parse(&args.trusted_ips).unwrap_or_else(|e| {
            errors.push(format!("--trusted-ips: {e}"));
            TrustedIps::default()
        });
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

        let store_key =
            load_store_key(args, redis_url.is_some(), controller.is_some(), &mut errors);

        match (snapshot, tls, errors.is_empty()) {
            (Some(snapshot), Some(tls), true) => Ok(Self {
                snapshot,
                manifests,
                controller,
                listen: args.listen,
                admin_listen,
                admin_token,
                metrics_listen: args.metrics_listen,
                tls,
                tls_from_controller_timeout: std::time::Duration::from_secs(
                    args.tls_from_controller_timeout,
                ),
                redis_url,
                redis_tls,
                store_key,
                listen_http: args.listen_http,
                trusted_ips,
                validation_cache_size: args.validation_cache_size,
                validation_cache_ttl: std::time::Duration::from_secs(args.validation_cache_ttl),
                body_limits: BodyLimits {
                    oauth: args.max_oauth_body,
                    proxied_form: args.client_body_buffer_size,
                    budget: args.limits.body_buffer_budget,
                },
                listener_limits: args.limits.limits(),
                upstream_keepalive_idle_timeout: std::time::Duration::from_secs(
                    args.upstream_keepalive_idle_timeout,
                ),
                upgrades: UpgradeLimits {
                    idle_timeout: std::time::Duration::from_secs(args.upgrade_idle_timeout),
                    max_open: args.limits.max_connections,
                },
                max_concurrent_secret_hashes: usize::from(args.max_concurrent_secret_hashes),
                secret_hash_queue_timeout: std::time::Duration::from_secs(u64::from(
                    args.secret_hash_queue_timeout,
                )),
                observe: ObserveSettings {
                    access_log: args.access_log,
                    max_request_id_length: args.max_request_id_length,
                    sink: crate::access_log::LineSink::Stdout,
                },
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// Where the admin API listens: where asked; else Kong's loopback port when standalone, and
/// nowhere when fed by the controller, whose own admin API checks Kubernetes RBAC. (An
/// injected pod's other containers must not reach an unauthenticated admin API.)
pub fn admin_listen(asked: Option<SocketAddr>, controller_fed: bool) -> Option<SocketAddr> {
    match (asked, controller_fed) {
        (Some(addr), _) => Some(addr),
        (None, false) => Some(
            DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("DEFAULT_ADMIN_LISTEN is an address"),
        ),
        (None, true) => None,
    }
}

/// The key pair of --store-key-file and --store-previous-key-file; an error for each problem.
fn load_store_key(
    args: &SidecarArgs,
    redis: bool,
    controller: bool,
    errors: &mut Vec<String>,
) -> Option<KeyPair> {
    let read = |flag: &str, path: &PathBuf, errors: &mut Vec<String>| {
        let result = std::fs::read(path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|bytes| StoreKey::from_file_contents(&bytes).map_err(|e| e.to_string()));
        result
            .map_err(|e| errors.push(format!("{flag} {}: {e}", path.display())))
            .ok()
    };
    match (&args.store_key_file, controller) {
        (Some(_), true) => {
            errors.push(
                "--store-key-file: not used with --controller, which delivers each pod the key of its namespace"
                    .into(),
            );
            None
        }
        (None, false) if redis => {
            errors.push(
                "--store-key-file: required with --redis-url: a file of at least 32 bytes, the same for every replica sharing that Redis"
                    .into(),
            );
            None
        }
        (None, _) => None,
        (Some(path), false) => {
            let current = read("--store-key-file", path, errors);
            let previous = args
                .store_previous_key_file
                .as_ref()
                .map(|path| read("--store-previous-key-file", path, errors));
            Some(KeyPair {
                current: current?,
                previous: previous.flatten(),
            })
        }
    }
}

fn parse_worker_threads(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{value}` is not a number of threads from 1 to 256"
        )),
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_standalone_sidecar_has_an_admin_api_by_default() {
        let asked: SocketAddr = "127.0.0.1:9444".parse().unwrap();
        assert_eq!(
            admin_listen(None, false),
            Some(DEFAULT_ADMIN_LISTEN.parse().unwrap())
        );
        assert_eq!(admin_listen(None, true), None);
        assert_eq!(admin_listen(Some(asked), true), Some(asked));
        assert_eq!(admin_listen(Some(asked), false), Some(asked));
    }
}
