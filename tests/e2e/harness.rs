//! The end-to-end harness: the real `tollgate` binary as a child process, real TLS, a real
//! `redis-server`, and a localhost upstream that records what reaches it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;
pub use tollgate_test_support::RedisServer;

/// The article's event, as IRIS answers `GET /event/1`.
pub const EVENT_1: &str = r#"{"id":1,"Name":"Global Summit","Location":{"id":1,"City":"Boston","Country":"United States of America"}}"#;

/// Which token store the sidecar under test uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Redis,
    Memory,
}

/// A free loopback port. Another process could take it before we bind it, but tests run
/// on a private machine and the window is tiny.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports: all are held at once while they are picked, so the
/// system cannot hand out the same one twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<StdListener> = (0..N)
        .map(|_| StdListener::bind("127.0.0.1:0").expect("no free loopback port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound").port())
}

// === TLS ===

/// A self-signed certificate for localhost, as files the sidecar reads, and a client that
/// trusts exactly it.
pub struct Certs {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: String,
}

impl Certs {
    pub fn new(dir: &Path) -> Self {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("certificate");
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        let pem = generated.cert.pem();
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        Self { cert, key, pem }
    }

    pub fn client(&self) -> reqwest::Client {
        self.client_offering(&[b"h2", b"http/1.1"])
    }

    /// A client that offers only `protocols` in ALPN.
    pub fn client_offering(&self, protocols: &[&[u8]]) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.tls_config(protocols))
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// A TLS client configuration that trusts exactly this certificate and offers `protocols`.
    pub fn tls_config(&self, protocols: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        tls
    }
}

// === the upstream standing in for IRIS ===

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The sidecar's end of the upstream connection the request came on.
    pub peer: SocketAddr,
    pub method: String,
    pub path_and_query: String,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Answers `GET /event/1` with the article's event, `/status/NNN` with that status, and
    /// anything else with 200 `{"echo": <path>}`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let recorder = recorder.clone();
                        async move { Ok::<_, Infallible>(answer(req, peer, &recorder).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    seen: &Mutex<Vec<Seen>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("").to_owned());
    }
    let path = parts.uri.path().to_owned();
    seen.lock().unwrap().push(Seen {
        peer,
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body: body.clone(),
    });
    let (status, body) = if path == "/event/1" {
        (200, Bytes::from_static(EVENT_1.as_bytes()))
    } else if let Some((_, code)) = path.rsplit_once("/status/") {
        (
            code.parse().unwrap_or(500),
            Bytes::from(format!("{{\"status\":{code}}}")),
        )
    } else if path.ends_with("/echo-body") {
        (200, body)
    } else {
        (200, Bytes::from(format!("{{\"echo\":\"{path}\"}}")))
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", "iris")
        .body(Full::new(body))
        .unwrap()
}

// === manifests ===

/// The article's objects: service `sampleirisservice` on route `/event`, consumer `ClientApp`,
/// application `clientid` / `clientsecret`, provision key `provisionkey`. `oauth2` is extra
/// YAML lines under `spec.oauth2` (indented by 4), to vary the plugin's settings.
pub fn article_manifests(upstream_port: u16, oauth2: &str) -> String {
    let mut extra = String::new();
    for line in oauth2.lines().filter(|l| !l.trim().is_empty()) {
        extra.push_str("    ");
        extra.push_str(line.trim_start());
        extra.push('\n');
    }
    if !oauth2.contains("enable") {
        extra.push_str("    enablePasswordGrant: true\n");
    }
    format!(
        r#"apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata:
  name: sampleirisservice
spec:
  upstream:
    port: {upstream_port}
  routes:
  - pathPrefix: /event
    stripPath: false
  oauth2:
    provisionKeySecretRef:
      name: sampleirisservice-provision-key
{extra}---
apiVersion: v1
kind: Secret
metadata:
  name: sampleirisservice-provision-key
stringData:
  provisionKey: provisionkey
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: clientapp
spec:
  username: ClientApp
  customId: client-app-7
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata:
  name: sampleapp
spec:
  name: SampleApp
  consumerRef:
    name: clientapp
  clientId: clientid
  clientSecretRef:
    name: sampleapp-secret
  redirectUris:
  - https://localhost/callback
---
apiVersion: v1
kind: Secret
metadata:
  name: sampleapp-secret
data:
  clientSecret: Y2xpZW50c2VjcmV0
"#
    )
}

// === the sidecar process ===

/// The `--store-key-file` every sidecar on Redis gets unless told otherwise: the same for
/// all, as replicas sharing a Redis need.
pub const STORE_KEY: &[u8] = b"e2e store key: thirty-two bytes or more\n";

pub struct SidecarBuilder {
    manifests: String,
    store: Store,
    redis_url: Option<String>,
    /// Written to a file for --store-key-file, with --redis-url.
    store_key: Option<Vec<u8>>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    listen_http: bool,
}

pub struct Sidecar {
    child: Child,
    /// Holds the certificates, manifests and logs until the sidecar is dropped.
    _dir: TempDir,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// The plain-HTTP listener, when asked for with [`SidecarBuilder::listen_http`].
    pub http: Option<SocketAddr>,
    pub client: reqwest::Client,
    certs: Certs,
    log: PathBuf,
}

/// Sends SIGTERM to `child`, as Kubernetes stops a container, and waits up to 20 s for it to
/// exit; returns its exit code, or None when it had to be killed.
fn terminate(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// A `tollgate sidecar` command on free loopback ports, with a fresh certificate and debug
/// logs in a temporary directory, and nothing from the test's environment; with `http`, a
/// plain-HTTP listener too. Each builder adds where the configuration comes from, then
/// [`SidecarLaunch::spawn`] starts it.
struct SidecarLaunch {
    command: Command,
    dir: TempDir,
    certs: Certs,
    log: PathBuf,
    proxy: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
    http: Option<SocketAddr>,
}

impl SidecarLaunch {
    /// Without `admin`, no `--admin-listen` is given, and `Sidecar::admin` is a port nothing
    /// was told to listen on. Without `own_cert`, no `--tls-cert`/`--tls-key` either (the
    /// certificate comes from elsewhere: `Sidecar::client` does not trust it).
    fn new(http: bool, admin: bool, own_cert: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = Certs::new(dir.path());
        let log = dir.path().join("sidecar.log");
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let [proxy, admin_addr, metrics, http_port] = free_ports::<4>().map(addr);
        let http = http.then_some(http_port);
        let mut command = tollgate();
        command
            .arg("sidecar")
            .arg("--listen")
            .arg(proxy.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .env_remove("TOLLGATE_REDIS_URL")
            .env_remove("TOLLGATE_STORE_KEY_FILE")
            .env_remove("TOLLGATE_STORE_PREVIOUS_KEY_FILE")
            .env_remove("TOLLGATE_MANIFESTS")
            .env("TOLLGATE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("sidecar.stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        if own_cert {
            command
                .arg("--tls-cert")
                .arg(&certs.cert)
                .arg("--tls-key")
                .arg(&certs.key);
        }
        if let Some(http) = http {
            command.arg("--listen-http").arg(http.to_string());
        }
        if admin {
            command.arg("--admin-listen").arg(admin_addr.to_string());
        }
        Self {
            command,
            dir,
            certs,
            log,
            proxy,
            admin: admin_addr,
            metrics,
            http,
        }
    }

    fn spawn(mut self) -> Sidecar {
        let child = self.command.spawn().expect("spawn tollgate sidecar");
        Sidecar {
            child,
            _dir: self.dir,
            proxy: self.proxy,
            admin: self.admin,
            metrics: self.metrics,
            http: self.http,
            client: self.certs.client(),
            certs: self.certs,
            log: self.log,
        }
    }
}

impl SidecarBuilder {
    pub fn new(manifests: String) -> Self {
        Self {
            manifests,
            store: Store::Memory,
            redis_url: None,
            store_key: Some(STORE_KEY.to_vec()),
            extra_args: Vec::new(),
            env: Vec::new(),
            listen_http: false,
        }
    }

    pub fn redis(mut self, url: &str) -> Self {
        self.store = Store::Redis;
        self.redis_url = Some(url.to_owned());
        self
    }

    /// Seal Redis values with this key (`--store-key-file`), or give no key file at all.
    pub fn store_key(mut self, key: Option<&[u8]>) -> Self {
        self.store_key = key.map(<[u8]>::to_vec);
        self
    }

    /// Also serve plain HTTP (`--listen-http`) on a free port.
    pub fn listen_http(mut self) -> Self {
        self.listen_http = true;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts the sidecar and waits until it is ready. Ports are picked free, but another
    /// process may take one before the sidecar binds it: then it starts again on new ones.
    pub async fn start(self) -> Sidecar {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.spawn().await {
                Ok(sidecar) => return sidecar,
                Err(log) if attempts < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("tollgate exited before it was ready:\n{log}"),
            }
        }
    }

    async fn spawn(&self) -> Result<Sidecar, String> {
        let mut launch = SidecarLaunch::new(self.listen_http, true, true);
        let manifests = launch.dir.path().join("manifests.yaml");
        std::fs::write(&manifests, &self.manifests).unwrap();
        let command = &mut launch.command;
        command
            .arg("--manifests")
            .arg(&manifests)
            .args(&self.extra_args);
        if let Some(url) = &self.redis_url {
            command.arg("--redis-url").arg(url);
            if let Some(key) = &self.store_key {
                let file = launch.dir.path().join("store.key");
                std::fs::write(&file, key).unwrap();
                command.arg("--store-key-file").arg(file);
            }
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut sidecar = launch.spawn();
        sidecar.ready().await?;
        Ok(sidecar)
    }
}

impl Sidecar {
    pub async fn wait_ready(&mut self) {
        if let Err(log) = self.ready().await {
            panic!("tollgate exited before it was ready:\n{log}");
        }
    }

    /// Waits for `/readyz`; the log when the process exits first.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/readyz", self.metrics);
        // reqwest builds its TLS lazily from the process-wide provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exit {status}\n{}", self.logs()));
            }
            if let Ok(r) = plain.get(&url).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "tollgate not ready in 30s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.proxy.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.admin.port())
    }

    /// The TCP ports the sidecar process listens on, sorted, as the kernel tells it: its
    /// sockets' inodes matched against the listening ones of /proc/net/tcp and tcp6.
    pub fn listening_ports(&self) -> Vec<u16> {
        let fd_dir = format!("/proc/{}/fd", self.child.id());
        let inodes: std::collections::HashSet<String> = std::fs::read_dir(fd_dir)
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                Some(
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_owned(),
                )
            })
            .collect();
        let mut ports = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local_address is ADDR:PORT in hex, state 0A is LISTEN, field 9 the inode.
                if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                    let port = fields[1].rsplit(':').next().unwrap();
                    ports.push(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
        ports.sort_unstable();
        ports
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the sidecar wrote to stdout: its access log.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("sidecar.stdout")).unwrap_or_default()
    }

    /// The `--manifests` file of a sidecar started by [`SidecarBuilder`].
    pub fn manifests_file(&self) -> PathBuf {
        self._dir.path().join("manifests.yaml")
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child)
    }

    /// The article's password grant.
    pub async fn password_grant(&self) -> serde_json::Value {
        let response = self.password_grant_with("clientsecret").await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The article's password grant with this client secret, whatever the answer.
    pub async fn password_grant_with(&self, client_secret: &str) -> reqwest::Response {
        self.client
            .post(self.url("/event/oauth2/token"))
            .json(&serde_json::json!({
                "client_id": "clientid",
                "client_secret": client_secret,
                "grant_type": "password",
                "provision_key": "provisionkey",
                "authenticated_userid": "1"
            }))
            .send()
            .await
            .unwrap()
    }

    /// A client of its own, so its requests go on connections of their own.
    pub fn new_client(&self) -> reqwest::Client {
        self.certs.client()
    }

    /// A client of its own that speaks HTTP/1.1, as most API clients and load generators do.
    pub fn new_http1_client(&self) -> reqwest::Client {
        self.certs.client_offering(&[b"http/1.1"])
    }

    /// Exactly one HTTP/1.1 connection over TLS, for tests about what one client connection
    /// gets: a pooling client library may open a second connection when a response has not
    /// gone back to its pool yet.
    pub async fn http1_connection(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let tls = Arc::new(self.certs.tls_config(&[b"http/1.1"]));
        let tcp = tokio::net::TcpStream::connect(self.proxy).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// A TLS connection to `addr` (one of its TLS listeners) offering `protocols` by ALPN,
    /// for tests that write and read raw bytes.
    pub async fn tls_stream(
        &self,
        addr: SocketAddr,
        protocols: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tls = Arc::new(self.certs.tls_config(protocols));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// A client TLS configuration trusting its certificate.
    pub fn tls_config(&self, protocols: &[&[u8]]) -> rustls::ClientConfig {
        self.certs.tls_config(protocols)
    }

    /// The PEM of the certificate it serves, for clients outside this process (curl).
    pub fn cert_pem_file(&self) -> &Path {
        &self.certs.cert
    }

    /// The certificate and key files it serves (`--tls-cert`, `--tls-key`).
    pub fn tls_files(&self) -> (&Path, &Path) {
        (&self.certs.cert, &self.certs.key)
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "--- sidecar log ---\n{}", self.logs());
        }
    }
}

/// A sidecar on the article's manifests with `store`, its upstream, and Redis when used.
pub struct Env {
    pub sidecar: Sidecar,
    pub upstream: Upstream,
    pub redis: Option<RedisServer>,
}

pub async fn env(store: Store, oauth2: &str) -> Env {
    let upstream = Upstream::start().await;
    let manifests = article_manifests(upstream.port, oauth2);
    let (builder, redis) = match store {
        Store::Redis => {
            let redis = RedisServer::start();
            (
                SidecarBuilder::new(manifests).redis(&redis.url()),
                Some(redis),
            )
        }
        Store::Memory => (SidecarBuilder::new(manifests), None),
    };
    let sidecar = builder.start().await;
    Env {
        sidecar,
        upstream,
        redis,
    }
}

/// Instantiates an `async fn(Store)` test once per token store.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Store::Redis).await;
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::harness::Store::Memory).await;
                }
            )*
        }
    };
}

// === the controller (file source) and sidecars that follow it ===

/// A `tollgate controller --manifests` process: the index fed from files, sidecars
/// authenticated by a static tokens file, its CA written for them to trust.
pub struct Controller {
    child: Child,
    pub stream: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    /// The controller's CA (PEM file), for sidecars' `--controller-ca`.
    pub ca: PathBuf,
    /// A client trusting the controller's CA.
    pub client: reqwest::Client,
    log: PathBuf,
}

impl Controller {
    /// Starts a controller on the manifests under `manifests`, accepting the tokens of
    /// `tokens` (lines `TOKEN NAMESPACE/POD`); its files go to `dir`. Returns once ready.
    pub async fn start(
        dir: &Path,
        manifests: &Path,
        tokens: &Path,
        redis_url: Option<&str>,
    ) -> Self {
        Self::start_with(dir, manifests, tokens, redis_url, &[]).await
    }

    /// [`Controller::start`] with more flags.
    pub async fn start_with(
        dir: &Path,
        manifests: &Path,
        tokens: &Path,
        redis_url: Option<&str>,
        extra_args: &[&str],
    ) -> Self {
        // reqwest builds its TLS lazily from the process-wide provider even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let [stream, admin, metrics] = free_ports::<3>().map(addr);
        let ca = dir.join("controller-ca.pem");
        let _ = std::fs::remove_file(&ca);
        let log = dir.join(format!("controller-{}.log", stream.port()));
        let mut command = tollgate();
        command
            .arg("controller")
            .arg("--manifests")
            .arg(manifests)
            .arg("--static-tokens")
            .arg(tokens)
            .arg("--stream-listen")
            .arg(stream.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--metrics-listen")
            .arg(metrics.to_string())
            .arg("--ca-out")
            .arg(&ca)
            .args(extra_args)
            .env_remove("TOLLGATE_REDIS_URL")
            .env("TOLLGATE_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(url) = redis_url {
            command.arg("--redis-url").arg(url);
        }
        let child = command.spawn().expect("spawn tollgate controller");
        let mut controller = Self {
            child,
            stream,
            admin,
            metrics,
            ca: ca.clone(),
            client: reqwest::Client::new(),
            log,
        };
        controller.wait_ready().await;
        let pem = std::fs::read_to_string(&ca).expect("the controller wrote no --ca-out");
        controller.client = Certs {
            cert: ca.clone(),
            key: ca,
            pem,
        }
        .client();
        controller
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/readyz", self.metrics);
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the controller exited with {status}:\n{}", self.logs());
            }
            if let Ok(r) = plain.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "controller not ready in 30s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `https://localhost:PORT`, as sidecars' `--controller`.
    pub fn stream_url(&self) -> String {
        format!("https://localhost:{}", self.stream.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.admin.port())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        terminate(&mut self.child)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "--- controller log ---\n{}", self.logs());
        }
    }
}

/// A sidecar that takes its configuration from a controller (`--controller`), as an
/// injected sidecar does, with its token and snapshot cache in files.
pub struct PodSidecarBuilder {
    controller_url: String,
    controller_ca: PathBuf,
    namespace: String,
    pod: String,
    token: String,
    cache: PathBuf,
    redis_url: Option<String>,
    admin_listen: bool,
    tls_from_controller: bool,
    extra_args: Vec<String>,
}

impl PodSidecarBuilder {
    pub fn new(
        controller_url: &str,
        controller_ca: &Path,
        namespace: &str,
        pod: &str,
        token: &str,
        cache: &Path,
    ) -> Self {
        Self {
            controller_url: controller_url.to_owned(),
            controller_ca: controller_ca.to_owned(),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            token: token.to_owned(),
            cache: cache.to_owned(),
            redis_url: None,
            admin_listen: false,
            tls_from_controller: false,
            extra_args: Vec::new(),
        }
    }

    /// Serve a certificate of the controller's CA (`--tls-from-controller`), as an injected
    /// sidecar without `tollgate.dev/tls-secret` does, instead of the harness's own.
    pub fn tls_from_controller(mut self) -> Self {
        self.tls_from_controller = true;
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Also give `--admin-listen`, which an injected sidecar never has.
    pub fn admin_listen(mut self) -> Self {
        self.admin_listen = true;
        self
    }

    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    /// Starts the sidecar without waiting for it to be ready.
    pub fn spawn(&self) -> Sidecar {
        let mut launch = SidecarLaunch::new(false, self.admin_listen, !self.tls_from_controller);
        let token_file = launch.dir.path().join("token");
        std::fs::write(&token_file, format!("{}\n", self.token)).unwrap();
        let command = &mut launch.command;
        command
            .arg("--controller")
            .arg(&self.controller_url)
            .arg("--controller-ca")
            .arg(&self.controller_ca)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--pod-name")
            .arg(&self.pod)
            .arg("--pod-namespace")
            .arg(&self.namespace)
            .arg("--snapshot-cache")
            .arg(&self.cache);
        if let Some(url) = &self.redis_url {
            command.arg("--redis-url").arg(url);
        }
        if self.tls_from_controller {
            command.arg("--tls-from-controller");
        }
        command.args(&self.extra_args);
        launch.spawn()
    }

    /// Starts the sidecar and waits until it serves a snapshot.
    pub async fn start(&self) -> Sidecar {
        let mut sidecar = self.spawn();
        sidecar.wait_ready().await;
        sidecar
    }
}

/// Reads `/metrics` over one keep-alive connection, so scraping adds exactly one to the
/// sidecar's count of open connections.
pub struct Scraper {
    client: reqwest::Client,
    url: String,
}

impl Scraper {
    pub fn new(sidecar: &Sidecar) -> Self {
        Self::at(sidecar.metrics)
    }

    /// The metrics listener at `address` (a sidecar's or the controller's).
    pub fn at(address: SocketAddr) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("http://{address}/metrics"),
        }
    }

    /// The value of the unlabelled metric `name`.
    pub async fn metric(&self, name: &str) -> f64 {
        let response = self.client.get(&self.url).send().await.unwrap();
        let text = response.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }
}

/// Polls `check` until it returns true, for at most `within`; panics with `what` otherwise.
/// For changes that propagate (a manifest edit reaching sidecars), never for timing.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
