//! The sidecar's side of the snapshot stream: `--controller URL` instead of `--manifests`.
//!
//! The sidecar opens one long-lived HTTP/2 request to the controller, authenticated by its
//! pod's projected service-account token, and swaps in every snapshot it receives. It is
//! ready once it serves one. The last good snapshot is kept in `--snapshot-cache`, so a
//! sidecar that starts (or restarts) while the controller is unreachable serves from it; and
//! a lost stream is reopened with exponential backoff and jitter, while the current snapshot
//! keeps being served.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tollgate_api::Snapshot;
use tollgate_api::stream::{self as wire, Frame};
use tollgate_store::TokenStore;

use crate::gateway::Gateway;
use crate::metrics::Metrics;

/// Where Kubernetes mounts the projected token the injector asks for.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/tollgate/token";
/// A controller that does not answer a connection in this long is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection delays grow from the first to the last, doubling, each with jitter so that a
/// controller restart is not met by every sidecar at the same instant.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A line longer than this is not a snapshot the controller would send.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// How the sidecar reaches the controller. Replaces --manifests.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerSourceArgs {
    /// The controller's snapshot stream, `https://HOST:PORT`. The sidecar's configuration then
    /// comes from the controller instead of --manifests.
    #[arg(long, env = "TOLLGATE_CONTROLLER", conflicts_with = "manifests")]
    pub controller: Option<String>,

    /// PEM file of the CA the controller's certificate is signed by.
    #[arg(long, env = "TOLLGATE_CONTROLLER_CA", requires = "controller")]
    pub controller_ca: Option<PathBuf>,

    /// The pod's service-account token (audience `tollgate`), sent to the controller. Read
    /// again at each connection, as the kubelet rotates it.
    #[arg(long, env = "TOLLGATE_TOKEN_FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,

    /// The pod's name (the downward API's metadata.name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// The pod's namespace (the downward API's metadata.namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// File keeping the last snapshot received, served at start while the controller is
    /// unreachable. Holds no secret in the clear (client secrets and provision keys are
    /// digests).
    #[arg(long, env = "TOLLGATE_SNAPSHOT_CACHE", requires = "controller")]
    pub snapshot_cache: Option<PathBuf>,
}

/// The controller source, validated.
#[derive(Clone, Debug)]
pub struct ControllerSource {
    /// `https://host:port/v1/snapshots/{namespace}/{pod}`.
    stream_uri: Uri,
    /// `https://host:port/v1/certificates/{namespace}/{pod}`.
    pub(crate) certificates_uri: Uri,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    pub(crate) token_file: PathBuf,
    pub namespace: String,
    pub pod: String,
    cache: Option<PathBuf>,
}

/// Why one connection (or request) to the controller ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("cannot read --token-file {path}: {error}")]
    Token { path: String, error: std::io::Error },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the controller answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("no frame for {0:?}: the connection is presumed dead")]
    Silent(Duration),
    #[error("the stream broke: {0}")]
    Broken(String),
    #[error("a line of the stream is longer than {MAX_LINE} bytes")]
    TooLong,
}

// === impl ControllerSource ===

impl ControllerSource {
    /// The source the flags describe, or `None` without --controller. Every problem is pushed
    /// to `errors`, naming its flag.
    pub fn load(args: &ControllerSourceArgs, errors: &mut Vec<String>) -> Option<Self> {
        let url = args.controller.as_deref()?;
        let before = errors.len();

        let target = match url.parse::<Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {
                let host = uri
                    .host()
                    .unwrap_or_default()
                    .trim_matches(['[', ']'])
                    .to_owned();
                Some((host, uri.port_u16().unwrap_or(443)))
            }
            _ => {
                errors.push(format!(
                    "--controller: `{url}` is not an https://HOST:PORT URL"
                ));
                None
            }
        };
        let server_name = target.as_ref().and_then(|(host, _)| {
            ServerName::try_from(host.clone())
                .map_err(|_| errors.push(format!("--controller: `{host}` is not a host name")))
                .ok()
        });

        let tls = match &args.controller_ca {
            None => {
                errors.push("--controller-ca: required with --controller".to_owned());
                None
            }
            Some(path) => client_config(path).map_err(|e| errors.push(e)).ok(),
        };

        if let Err(error) = read_token(&args.token_file) {
            errors.push(error.to_string());
        }

        let mut name = |value: &Option<String>, flag: &str, env: &str| -> String {
            match value.as_deref().map(str::trim) {
                Some(v) if is_dns_name(v) => v.to_owned(),
                Some(v) if !v.is_empty() => {
                    errors.push(format!("{flag}: `{v}` is not a Kubernetes name"));
                    String::new()
                }
                _ => {
                    errors.push(format!("{flag} (or {env}): required with --controller"));
                    String::new()
                }
            }
        };
        let pod = name(&args.pod_name, "--pod-name", "POD_NAME");
        let namespace = name(&args.pod_namespace, "--pod-namespace", "POD_NAMESPACE");

        if let Some(cache) = &args.snapshot_cache {
            let folder = cache.parent().filter(|p| !p.as_os_str().is_empty());
            if folder.is_some_and(|f| !f.is_dir()) {
                errors.push(format!(
                    "--snapshot-cache {}: its folder does not exist",
                    cache.display()
                ));
            }
        }

        if errors.len() != before {
            return None;
        }
        let (host, port) = target?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let stream_uri = format!(
            "https://{authority}{}",
            wire::snapshots_path(&namespace, &pod)
        )
        .parse()
        .map_err(|_| errors.push(format!("--controller: `{url}` is not a usable URL")))
        .ok()?;
        let certificates_uri = format!(
            "https://{authority}{}",
            tollgate_api::certificates::certificates_path(&namespace, &pod)
        )
        .parse()
        .ok()?;
        Some(Self {
            stream_uri,
            certificates_uri,
            host,
            port,
            server_name: server_name?,
            tls: tls?,
            token_file: args.token_file.clone(),
            namespace,
            pod,
            cache: args.snapshot_cache.clone(),
        })
    }
}

/// Follows the controller's stream until `shutdown`, swapping each snapshot into `gateway`
/// and marking the sidecar ready once it serves one.
pub async fn run<S: TokenStore>(
    source: ControllerSource,
    gateway: Arc<Gateway<S>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut serving = false;
    let mut backoff = Backoff::default();
    loop {
        let mut received = false;
        let result = tokio::select! {
            result = follow(&source, &gateway, &metrics, &mut received) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        serving |= received;
        match result {
            Ok(()) => tracing::info!("the controller closed the snapshot stream; reconnecting"),
            Err(error) => {
                tracing::warn!(%error, controller = %source.stream_uri, "snapshot stream lost")
            }
        }
        if received {
            backoff = Backoff::default();
        }
        // Nothing served yet, and the controller is away: the last snapshot this pod was
        // sent, even before a restart, beats serving nothing.
        if !serving && let Some(snapshot) = source.cache.as_deref().and_then(read_cache) {
            tracing::warn!(
                version = snapshot.version,
                "serving the cached snapshot until the controller answers"
            );
            gateway.swap(snapshot);
            metrics.set_ready(true);
            serving = true;
        }
        let delay = backoff.next_delay();
        tracing::debug!(?delay, "reconnecting after a delay");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One connection: `Ok` when the controller ends the stream, an error otherwise.
/// `received` turns true with the first snapshot.
async fn follow<S: TokenStore>(
    source: &ControllerSource,
    gateway: &Gateway<S>,
    metrics: &Metrics,
    received: &mut bool,
) -> Result<(), StreamError> {
    let token = read_token(&source.token_file)?;
    let (mut sender, _driver) = connect(source).await?;
    let request = Request::get(source.stream_uri.clone())
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::ACCEPT, wire::CONTENT_TYPE)
        .body(Full::new(Bytes::new()))
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    drop(token);
    let response = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| StreamError::Connect("no answer".into()))?
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        return Err(refusal(status, body).await);
    }
    tracing::info!(pod = %source.pod, namespace = %source.namespace, "connected to the controller");

    let mut buffer = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(wire::HEARTBEAT_TIMEOUT, body.frame()).await {
            Err(_) => return Err(StreamError::Silent(wire::HEARTBEAT_TIMEOUT)),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(StreamError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line = buffer.split_to(end + 1);
            handle_line(source, gateway, metrics, &line[..end], received).await;
        }
        if buffer.len() > MAX_LINE {
            return Err(StreamError::TooLong);
        }
        if buffer.is_empty() {
            buffer.clear();
        } else if buffer.capacity() > 4 * buffer.len() + 65536 {
            // Keep a huge past snapshot from pinning its memory.
            let rest = buffer.split();
            buffer = BytesMut::from(rest.chunk());
        }
    }
}

/// An HTTP/2 connection to the controller over TLS trusting only its CA; the connection's
/// task ends when the guard returned with it is dropped.
pub(crate) async fn connect(
    source: &ControllerSource,
) -> Result<(SendRequest<Full<Bytes>>, AbortOnDrop), StreamError> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((source.host.as_str(), source.port)),
    )
    .await
    .map_err(|_| StreamError::Connect("timed out".into()))?
    .map_err(|e| StreamError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(source.tls.clone()).connect(source.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| StreamError::Connect("TLS handshake timed out".into()))?
    .map_err(|e| StreamError::Connect(format!("TLS: {e}")))?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| StreamError::Connect(format!("HTTP/2: {e}")))?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "controller connection ended");
        }
    });
    Ok((sender, AbortOnDrop(driver)))
}

/// The error of a response other than 200: its status and Kong-style `message`.
pub(crate) async fn refusal(status: StatusCode, body: hyper::body::Incoming) -> StreamError {
    let bytes = tokio::time::timeout(CONNECT_TIMEOUT, body.collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default();
    StreamError::Refused { status, message }
}

async fn handle_line<S: TokenStore>(
    source: &ControllerSource,
    gateway: &Gateway<S>,
    metrics: &Metrics,
    line: &[u8],
    received: &mut bool,
) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match serde_json::from_slice::<Frame>(line) {
        Ok(Frame::Heartbeat) => tracing::trace!("heartbeat"),
        Ok(Frame::Snapshot { snapshot }) => {
            let version = snapshot.version;
            let services = snapshot.services.len();
            if let Some(cache) = &source.cache {
                write_cache(cache, &snapshot).await;
            }
            gateway.swap(snapshot);
            metrics.set_ready(true);
            *received = true;
            tracing::info!(version, services, "serving a new snapshot");
        }
        // A frame of a newer controller, or garbage: the stream goes on.
        Err(error) => tracing::warn!(%error, "ignored a frame of the snapshot stream"),
    }
}

/// The last snapshot kept, or `None` (logged) when there is none or it cannot be read.
fn read_cache(path: &Path) -> Option<Snapshot> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(cache = %path.display(), %error, "cannot read the snapshot cache");
            return None;
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|error| {
            tracing::warn!(cache = %path.display(), %error, "the snapshot cache is not a snapshot");
        })
        .ok()
}

/// Keeps `snapshot` in `path`, through a temporary file and a rename: a crash mid-write
/// leaves the previous snapshot, never half of one. The file is the sidecar's alone (mode
/// 0600): it holds the hashes of its namespace's client secrets and provision keys.
async fn write_cache(path: &Path, snapshot: &Snapshot) {
    let Ok(bytes) = serde_json::to_vec(snapshot) else {
        return;
    };
    let path = path.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = path.with_file_name(format!(".{name}.tmp"));
        write_private(&temporary, &bytes).and_then(|()| std::fs::rename(&temporary, &path))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot write the snapshot cache"),
        Err(error) => tracing::warn!(%error, "cannot write the snapshot cache"),
    }
}

/// Writes `bytes` to a new file at `path` that only its owner may read (mode 0600). A file
/// left there before is removed first: opening it would keep whatever mode it had.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

pub(crate) fn read_token(path: &Path) -> Result<String, StreamError> {
    let token = std::fs::read_to_string(path).map_err(|error| StreamError::Token {
        path: path.display().to_string(),
        error,
    })?;
    if token.trim().is_empty() {
        return Err(StreamError::Token {
            path: path.display().to_string(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(token)
}

/// A TLS client that trusts only the CA in `path`, speaking HTTP/2.
fn client_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let flag = format!("--controller-ca {}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("{flag}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{flag}: not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{flag}: no PEM certificate found"));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// RFC 1123 names, as pods and namespaces are named.
fn is_dns_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Exponential backoff with jitter: each delay is drawn between half and all of the current
/// step, and the step doubles up to [`BACKOFF_MAX`].
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            step: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        // `RandomState` is seeded from the OS generator: enough to spread reconnections.
        let random = RandomState::new().hash_one(step);
        let half = step / 2;
        half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
    }
}

pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> ControllerSourceArgs {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.join("token"), "t0ken\n").unwrap();
        ControllerSourceArgs {
            controller: Some("https://localhost:8090".into()),
            controller_ca: Some(dir.join("ca.pem")),
            token_file: dir.join("token"),
            pod_name: Some("iris-0".into()),
            pod_namespace: Some("default".into()),
            snapshot_cache: Some(dir.join("snapshot.json")),
        }
    }

    #[test]
    fn good_flags_give_the_pods_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut errors = Vec::new();
        let source = ControllerSource::load(&args(dir.path()), &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            source.stream_uri.to_string(),
            "https://localhost:8090/v1/snapshots/default/iris-0"
        );
        assert_eq!(
            source.certificates_uri.to_string(),
            "https://localhost:8090/v1/certificates/default/iris-0"
        );
        assert!(!format!("{source:?}").contains("t0ken"));
    }

    #[test]
    fn every_bad_flag_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = args(dir.path());
        bad.controller = Some("http://localhost:8090".into());
        bad.controller_ca = Some(dir.path().join("missing.pem"));
        bad.token_file = dir.path().join("missing-token");
        bad.pod_name = None;
        bad.pod_namespace = Some("Not_A_Name".into());
        bad.snapshot_cache = Some(dir.path().join("no/such/folder/snapshot.json"));
        let mut errors = Vec::new();
        assert!(ControllerSource::load(&bad, &mut errors).is_none());
        let all = errors.join("\n");
        for flag in [
            "--controller:",
            "--controller-ca",
            "--token-file",
            "--pod-name (or POD_NAME): required",
            "--pod-namespace: `Not_A_Name`",
            "--snapshot-cache",
        ] {
            assert!(all.contains(flag), "{flag} missing from:\n{all}");
        }
        let mut none = Vec::new();
        let without = ControllerSourceArgs {
            controller: None,
            ..bad
        };
        assert!(ControllerSource::load(&without, &mut none).is_none());
        assert!(none.is_empty());
    }

    #[test]
    fn the_cache_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        assert!(read_cache(&path).is_none());
        let snapshot = Snapshot {
            version: 42,
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(write_cache(&path, &snapshot));
        assert_eq!(read_cache(&path), Some(snapshot));
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_cache(&path).is_none());
    }

    #[test]
    fn the_cache_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        // A cache and a leftover temporary file written before, readable by all.
        std::fs::write(&path, "{}").unwrap();
        std::fs::write(dir.path().join(".snapshot.json.tmp"), "{}").unwrap();
        for file in [&path, &dir.path().join(".snapshot.json.tmp")] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(write_cache(&path, &Snapshot::default()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(read_cache(&path), Some(Snapshot::default()));
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_its_maximum() {
        let mut backoff = Backoff::default();
        let mut previous_step = Duration::ZERO;
        for _ in 0..20 {
            let step = backoff.step;
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            assert!(step >= previous_step);
            previous_step = step;
        }
        assert_eq!(backoff.step, BACKOFF_MAX);
    }
}
