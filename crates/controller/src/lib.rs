//! The control plane: resources (from the API server, or from manifest files) go into an
//! [`index::Index`], which makes one snapshot per pod; the [`stream`] server pushes each pod's
//! snapshot to its sidecar; status is written on every resource; and the [`admin`] API lists
//! and deletes tokens, also as the aggregated API `tokens.oauth.tollgate.dev` behind the API
//! server ([`request_header`] authenticates its front proxy).
//!
//! Only this crate talks to the API server, and only [`kube`](mod@crate::kube) and [`auth`]'s
//! `KubeReviewer` do: everything else is plain data in, plain data out.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod ca;
pub mod ca_config_map;
pub mod config;
pub mod file_source;
pub mod index;
pub mod kube;
pub mod metrics;
pub mod network_policy;
pub mod pod_certs;
pub mod request_header;
pub mod review_guard;
pub mod server;
pub mod status;
pub mod store_key;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_serve::{ListenerLimits, runtime};
use tollgate_store::{AnyTokenStore, KeyPair, RedisUrl, StoreKeys};

use crate::admin::AdminServer;
use crate::auth::{AccessReviewer, KubeReviewer, StaticTokens, TokenReviewer};
use crate::ca::Ca;
pub use crate::config::{Config, ConfigErrors, ControllerArgs, Source, StoreKeySource};
use crate::config::{KubeSettings, Webhook};
use crate::file_source::Manifests;
use crate::index::{Index, SharedIndex};
use crate::metrics::Metrics;
use crate::pod_certs::CertificateServer;
use crate::review_guard::GuardedReviewer;
use crate::stream::StreamServer;

/// Runs the controller until SIGINT or SIGTERM: the index and its source, then each listener.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut started = Started::new(Metrics::new(), stopped);

    // A CA is public: the CA ConfigMap carries --redis-ca to every namespace with injected
    // pods, and their sidecars trust it unless told otherwise.
    let redis_ca_pem = config
        .redis_tls
        .ca_pem()
        .map(|pem| String::from_utf8_lossy(pem).into_owned());
    let published_redis_ca = match &config.source {
        Source::Kube(settings) if redis_ca_pem.is_some() => {
            settings
                .ca_config_map
                .clone()
                .map(|name| tollgate_inject::ConfigMapKey {
                    name,
                    key: ca_config_map::REDIS_CA_KEY.to_owned(),
                })
        }
        _ => None,
    };
    let Sourced {
        index,
        reviewer,
        access,
        ca,
        store_root,
        request_header,
    } = match config.source {
        Source::Files {
            paths,
            manifests,
            fingerprint,
            tokens,
        } => started.file_source(paths, manifests, fingerprint, tokens, config.store_key)?,
        Source::Kube(settings) => {
            let webhook_configuration = config
                .webhook
                .as_ref()
                .and_then(|w| Some((w.configuration.clone()?, w.url.clone())));
            started
                .kube_source(
                    settings,
                    config.store_key,
                    webhook_configuration,
                    redis_ca_pem,
                )
                .await?
        }
    };
    started.task(report_findings(
        index.clone(),
        started.metrics.clone(),
        started.stopped.clone(),
    ));
    if let Some(path) = &config.ca_out {
        write_ca_out(path, &ca)?;
    }
    let tls = ca
        .server_config(&config.tls_sans)
        .context("cannot make the serving certificate")?;
    // The aggregated API shares the admin API's listener: the API server's front proxy
    // presents its client certificate there.
    let admin_tls = ca
        .server_config_asking(
            &config.tls_sans,
            Some(request_header::OptionalClientCertificate::new()),
        )
        .context("cannot make the serving certificate")?;
    let store = admin_token_store(config.redis_url.as_ref(), &config.redis_tls, store_root).await?;

    let stream_listener = runtime::bind("--stream-listen", config.stream_listen).await?;
    let admin_listener = runtime::bind("--admin-listen", config.admin_listen).await?;
    let metrics_listener = runtime::bind("--metrics-listen", config.metrics_listen).await?;
    if let Some(webhook) = config.webhook {
        let limits = tollgate_inject::server::WebhookLimits {
            listener: config.listener_limits,
            budget: tollgate_serve::BodyBudget::new(config.body_buffer_budget),
        };
        started
            .webhook(webhook, limits, &tls, &ca, published_redis_ca)
            .await?;
    }
    // Every sidecar holds a stream open here: after a rollout the controller, too, would keep
    // the memory of thousands of closed streams without this.
    started.server(tollgate_serve::memory::reclaim_freed_memory(
        started.stopped.clone(),
    ));
    let limits = config.listener_limits;
    let certificates = CertificateServer::new(
        index.clone(),
        reviewer.clone(),
        Arc::new(ca),
        config.pod_certs,
    );
    let streams = StreamServer::new(
        index.clone(),
        reviewer.clone(),
        started.metrics.clone(),
        started.stopped.clone(),
    )
    .with_line_cache_bytes(config.stream_line_cache_bytes);
    started.streams_and_certificates(stream_listener, tls.clone(), limits, streams, certificates);
    let context = Arc::new(admin::IndexTokenContext(index.clone()));
    let mut admin = AdminServer::new(store, reviewer, access, context);
    if let Some(request_header) = request_header {
        admin = admin.with_request_header(request_header);
    }
    started.admin(admin_listener, admin_tls, limits, admin);
    started.metrics_endpoint(metrics_listener, limits, index);
    tracing::info!(
        stream = %config.stream_listen,
        admin = %config.admin_listen,
        metrics = %config.metrics_listen,
        "tollgate controller started"
    );

    runtime::shutdown_signal().await;
    tracing::info!("stopping");
    started.metrics.set_ready(false);
    let _ = stop.send(true);
    started.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// What a source gives the rest of the controller.
struct Sourced {
    index: SharedIndex,
    reviewer: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
    ca: Ca,
    store_root: KeyPair,
    /// The front proxy's settings, kept current (the API server only).
    request_header: Option<request_header::SharedRequestHeaderConfig>,
}

/// What the controller started, and what each start needs: servers drain when asked to stop,
/// tasks are cut short.
struct Started {
    metrics: Arc<Metrics>,
    /// Turns true when the process is asked to stop.
    stopped: watch::Receiver<bool>,
    servers: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl Started ===

impl Started {
    fn new(metrics: Arc<Metrics>, stopped: watch::Receiver<bool>) -> Self {
        Self {
            metrics,
            stopped,
            servers: Vec::new(),
            tasks: Vec::new(),
        }
    }

    fn server(&mut self, server: impl Future<Output = ()> + Send + 'static) {
        self.servers.push(tokio::spawn(server));
    }

    fn task(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Waits for every server to drain, then ends every task.
    async fn stop(self) {
        for server in self.servers {
            let _ = server.await;
        }
        for task in self.tasks {
            task.abort();
        }
    }

    /// The index fed from manifest files (`--manifests`), re-read as they change; sidecars
    /// authenticated by `--static-tokens`. Ready at once: everything is read.
    fn file_source(
        &mut self,
        paths: Vec<PathBuf>,
        manifests: Manifests,
        fingerprint: u64,
        tokens: StaticTokens,
        store_key: StoreKeySource,
    ) -> anyhow::Result<Sourced> {
        tracing::warn!(
            "reading resources from --manifests and sidecar tokens from --static-tokens: a test and development mode"
        );
        let store_root = match store_key {
            StoreKeySource::File(keys) => keys,
            // Refused by `Config::load`: --store-key-secret needs the API server.
            StoreKeySource::Secret(_) | StoreKeySource::Generated => generated_store_key()?,
        };
        let index = SharedIndex::new(
            Index::new(first_version())
                .with_store_key(store_root.clone())
                .with_reconcile_histogram(self.metrics.reconcile_duration.clone()),
        );
        file_source::feed(&mut index.lock(), manifests);
        self.task(file_source::watch(
            paths,
            index.clone(),
            self.metrics.clone(),
            fingerprint,
            self.stopped.clone(),
        ));
        let tokens = Arc::new(tokens);
        let ca = Ca::generate().context("cannot make the controller's CA")?;
        self.metrics.set_ready(true);
        Ok(Sourced {
            index,
            reviewer: tokens.clone(),
            access: tokens,
            ca,
            store_root,
            request_header: None,
        })
    }

    /// The index fed by watches on the API server, and what the controller keeps there: the
    /// store key's and the CA's Secrets, the webhook's caBundle (`webhook_configuration`: its
    /// name and URL), the CA ConfigMaps, the NetworkPolicies, the Lease and status. Sidecars
    /// authenticated by TokenReview.
    async fn kube_source(
        &mut self,
        settings: KubeSettings,
        store_key: StoreKeySource,
        webhook_configuration: Option<(String, Option<String>)>,
        redis_ca_pem: Option<String>,
    ) -> anyhow::Result<Sourced> {
        let settings_review = (settings.token_review_cache, settings.review_concurrency);
        let client = crate::kube::api_client().await?;
        let store_root = match store_key {
            StoreKeySource::Secret(secret) => store_key::load_or_create(&client, &secret).await?,
            StoreKeySource::File(keys) => keys,
            StoreKeySource::Generated => generated_store_key()?,
        };
        let index = SharedIndex::new(
            Index::new(first_version())
                .with_secret_hint(format!(
                    "the controller only reads Secrets labelled {}",
                    settings.secret_label_selector
                ))
                .with_store_key(store_root.clone())
                .with_reconcile_histogram(self.metrics.reconcile_duration.clone()),
        );
        let ca = match &settings.ca_secret {
            Some(secret) => kube::load_or_create_ca(&client, secret).await?,
            None => Ca::generate().context("cannot make the controller's CA")?,
        };
        if let Some((name, url)) = webhook_configuration {
            self.task(kube::keep_webhook_configuration(
                client.clone(),
                name,
                ca.cert_pem().to_owned(),
                url,
                self.metrics.clone(),
                self.stopped.clone(),
            ));
        }
        if let Some(name) = settings.api_service.clone() {
            self.task(kube::keep_api_service(
                client.clone(),
                name,
                ca.cert_pem().to_owned(),
                self.metrics.clone(),
                self.stopped.clone(),
            ));
        }
        let request_header = request_header::SharedRequestHeaderConfig::default();
        self.task(kube::keep_request_header_config(
            client.clone(),
            request_header.clone(),
            settings.request_header_reload,
            self.stopped.clone(),
        ));
        if let Some(name) = settings.ca_config_map.clone() {
            self.task(ca_config_map::keep_ca_config_maps(
                client.clone(),
                name,
                ca.cert_pem().to_owned(),
                redis_ca_pem,
                index.clone(),
                self.stopped.clone(),
            ));
        }
        if let Some(policy) = settings.network_policy.clone() {
            self.task(network_policy::keep_network_policies(
                client.clone(),
                policy,
                index.clone(),
                self.stopped.clone(),
            ));
        }
        self.tasks.extend(kube::spawn(
            client.clone(),
            settings,
            index.clone(),
            self.metrics.clone(),
            self.stopped.clone(),
        ));
        let reviewer = Arc::new(GuardedReviewer::new(
            Arc::new(KubeReviewer::new(client)),
            settings_review.0,
            settings_review.1,
        ));
        Ok(Sourced {
            index,
            reviewer: reviewer.clone(),
            access: reviewer,
            ca,
            store_root,
            request_header: Some(request_header),
        })
    }

    /// The injection webhook on its own listener, with cert-manager's files when given
    /// (followed as they rotate), or else `tls`, the controller's own certificate.
    async fn webhook(
        &mut self,
        webhook: Webhook,
        limits: tollgate_inject::server::WebhookLimits,
        tls: &Arc<rustls::ServerConfig>,
        ca: &Ca,
        published_redis_ca: Option<tollgate_inject::ConfigMapKey>,
    ) -> anyhow::Result<()> {
        let listener = runtime::bind("--webhook-listen", webhook.listen).await?;
        let webhook_tls = match webhook.tls {
            Some(files) => {
                let (tls, resolver) = files.server_config().map_err(anyhow::Error::msg)?;
                // cert-manager rotates the files in place.
                self.task(async move { files.watch(resolver).await });
                tls
            }
            None => tls.clone(),
        };
        // Injected pods trust the CA that signs the snapshot stream.
        let mut inject = webhook.inject.with_default_controller_ca_pem(ca.cert_pem());
        if let Some(published) = published_redis_ca {
            inject = inject.with_default_redis_ca(published);
        }
        let inject = Arc::new(inject);
        self.server(tollgate_inject::server::serve_webhook(
            listener,
            webhook_tls,
            inject,
            limits,
            self.stopped.clone(),
        ));
        Ok(())
    }

    /// The snapshot stream and pods' serving certificates, on one listener: the sidecar
    /// already knows that address and trusts its certificate.
    fn streams_and_certificates(
        &mut self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        limits: ListenerLimits,
        streams: StreamServer,
        certificates: CertificateServer,
    ) {
        let streams = Arc::new(streams);
        let certificates = Arc::new(certificates);
        self.server(server::serve(
            listener,
            Some(tls),
            limits,
            self.stopped.clone(),
            move |request: http::Request<tollgate_serve::Incoming>| {
                let streams = streams.clone();
                let certificates = certificates.clone();
                async move {
                    if CertificateServer::serves(request.uri().path()) {
                        certificates.handle(request).await
                    } else {
                        streams.handle(request).await
                    }
                }
            },
        ));
    }

    /// The admin API, guarded by TokenReview and SubjectAccessReview (or the static tokens).
    fn admin(
        &mut self,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        limits: ListenerLimits,
        admin: AdminServer<AnyTokenStore>,
    ) {
        let admin = Arc::new(admin);
        self.server(server::serve(
            listener,
            Some(tls),
            limits,
            self.stopped.clone(),
            move |request| {
                let admin = admin.clone();
                async move { admin.handle(request).await }
            },
        ));
    }

    /// Prometheus metrics and the probes, in plain HTTP; the index's gauges are read at each
    /// scrape.
    fn metrics_endpoint(
        &mut self,
        listener: TcpListener,
        limits: ListenerLimits,
        index: SharedIndex,
    ) {
        let metrics = self.metrics.clone();
        self.server(server::serve(
            listener,
            None,
            limits,
            self.stopped.clone(),
            move |request| {
                let metrics = metrics.clone();
                {
                    let index = index.lock();
                    metrics.pods.set(index.pod_count() as i64);
                    metrics.snapshot_version.set(index.latest_version() as i64);
                    let (latest, older, none) = index.sidecar_generations();
                    metrics.set_sidecar_generations(latest, older, none);
                }
                async move { metrics.handle(&request) }
            },
        ));
    }
}

/// The first snapshot version. Versions start from the wall clock (milliseconds), so that
/// they keep increasing across restarts of the controller.
fn first_version() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// `--ca-out`: the CA's certificate, for whoever must trust the controller.
fn write_ca_out(path: &Path, ca: &Ca) -> anyhow::Result<()> {
    runtime::write_atomically(path, ca.cert_pem().as_bytes())
        .with_context(|| format!("--ca-out {}: cannot write the CA", path.display()))
}

/// The token store the admin API lists and deletes in: the sidecars' Redis, sealed with the
/// root key every namespace's key derives from.
async fn admin_token_store(
    redis_url: Option<&RedisUrl>,
    redis_tls: &tollgate_store::RedisTls,
    store_root: KeyPair,
) -> anyhow::Result<AnyTokenStore> {
    if redis_url.is_none() {
        tracing::warn!(
            "no --redis-url given: the admin API sees an empty in-memory token store, not the sidecars' tokens"
        );
    }
    let keys = StoreKeys::from_root(store_root);
    Ok(runtime::connect_token_store(redis_url, redis_tls, keys).await?)
}

/// A root store key for this process alone, when none is configured.
fn generated_store_key() -> anyhow::Result<KeyPair> {
    tracing::warn!(
        "no --store-key-secret or --store-key-file: made a store key for this process alone; tokens in Redis will not verify after a restart"
    );
    Ok(KeyPair::new(store_key::generate()?))
}

/// Logs objects that become ready or not, and counts new problems by reason.
async fn report_findings(
    index: SharedIndex,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = index.lock().changes();
    let mut findings = status::Findings::default();
    loop {
        let statuses = index.lock().statuses();
        status::report(&findings.update(&statuses), &metrics);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        // Let a burst of changes (a `kubectl apply -f` of a folder) settle into one report.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
