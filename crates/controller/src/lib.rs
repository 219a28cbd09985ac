//! The control plane: resources (from the API server, or from manifest files) go into an
//! [`index::Index`], which makes one snapshot per pod; the [`stream`] server pushes each pod's
//! snapshot to its sidecar; status is written on every resource; and the [`admin`] API lists
//! and deletes tokens.
//!
//! Only this crate talks to the API server, and only [`kube_source`] and [`auth`]'s
//! `KubeReviewer` do: everything else is plain data in, plain data out.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod ca;
pub mod ca_config_map;
pub mod config;
pub mod file_source;
pub mod index;
pub mod kube_source;
pub mod metrics;
pub mod network_policy;
pub mod pod_certs;
pub mod review_guard;
pub mod server;
pub mod status;
pub mod store_key;
pub mod stream;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tollgate_store::{AnyTokenStore, KeyPair, MemoryStore, RedisStore, StoreKeys};

use crate::admin::AdminServer;
use crate::auth::{AccessReviewer, KubeReviewer, TokenReviewer};
use crate::ca::Ca;
pub use crate::config::{Config, ConfigErrors, ControllerArgs, Source, StoreKeySource};
use crate::index::{Index, SharedIndex};
use crate::metrics::Metrics;
use crate::pod_certs::CertificateServer;
use crate::review_guard::GuardedReviewer;
use crate::stream::StreamServer;

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let (stop, stopped) = watch::channel(false);
    // Versions start from the wall clock (milliseconds), so that they keep increasing across
    // restarts of the controller.
    let first_version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let mut tasks = Vec::new();
    // The webhook configuration whose caBundle (and URL) this controller keeps current.
    let webhook_configuration = config
        .webhook
        .as_ref()
        .and_then(|w| Some((w.configuration.clone()?, w.url.clone())));

    let (index, reviewer, access, ca, store_root): (
        SharedIndex,
        Arc<dyn TokenReviewer>,
        Arc<dyn AccessReviewer>,
        Ca,
        KeyPair,
    ) = match config.source {
        Source::Files {
            paths,
            manifests,
            fingerprint,
            tokens,
        } => {
            tracing::warn!(
                "reading resources from --manifests and sidecar tokens from --static-tokens: a test and development mode"
            );
            let store_root = match config.store_key {
                StoreKeySource::File(keys) => keys,
                // Refused by `Config::load`: --store-key-secret needs the API server.
                StoreKeySource::Secret(_) | StoreKeySource::Generated => generated_store_key()?,
            };
            let index =
                SharedIndex::new(Index::new(first_version).with_store_key(store_root.clone()));
            file_source::feed(&mut index.lock(), manifests);
            tasks.push(tokio::spawn(file_source::watch(
                paths,
                index.clone(),
                metrics.clone(),
                fingerprint,
                stopped.clone(),
            )));
            let tokens = Arc::new(tokens);
            let ca = Ca::generate().context("cannot make the controller's CA")?;
            metrics.set_ready(true);
            (index, tokens.clone(), tokens, ca, store_root)
        }
        Source::Kube(settings) => {
            let settings_review = (settings.token_review_cache, settings.review_concurrency);
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the API server (kubeconfig or in-cluster configuration)")?;
            let store_root = match config.store_key {
                StoreKeySource::Secret(secret) => {
                    store_key::load_or_create(&client, &secret).await?
                }
                StoreKeySource::File(keys) => keys,
                StoreKeySource::Generated => generated_store_key()?,
            };
            let index = SharedIndex::new(
                Index::new(first_version)
                    .with_secret_hint(format!(
                        "the controller only reads Secrets labelled {}",
                        settings.secret_label_selector
                    ))
                    .with_store_key(store_root.clone()),
            );
            let ca = match &settings.ca_secret {
                Some(secret) => kube_source::load_or_create_ca(&client, secret).await?,
                None => Ca::generate().context("cannot make the controller's CA")?,
            };
            if let Some((name, url)) = webhook_configuration {
                tasks.push(tokio::spawn(kube_source::keep_webhook_configuration(
                    client.clone(),
                    name,
                    ca.cert_pem().to_owned(),
                    url,
                    metrics.clone(),
                    stopped.clone(),
                )));
            }
            if let Some(name) = settings.ca_config_map.clone() {
                tasks.push(tokio::spawn(ca_config_map::keep_ca_config_maps(
                    client.clone(),
                    name,
                    ca.cert_pem().to_owned(),
                    index.clone(),
                    stopped.clone(),
                )));
            }
            if let Some(policy) = settings.network_policy.clone() {
                tasks.push(tokio::spawn(network_policy::keep_network_policies(
                    client.clone(),
                    policy,
                    index.clone(),
                    stopped.clone(),
                )));
            }
            tasks.extend(kube_source::spawn(
                client.clone(),
                settings,
                index.clone(),
                metrics.clone(),
                stopped.clone(),
            ));
            let reviewer = Arc::new(GuardedReviewer::new(
                Arc::new(KubeReviewer::new(client)),
                settings_review.0,
                settings_review.1,
            ));
            (index, reviewer.clone(), reviewer, ca, store_root)
        }
    };
    tasks.push(tokio::spawn(report_findings(
        index.clone(),
        metrics.clone(),
        stopped.clone(),
    )));

    if let Some(path) = &config.ca_out {
        write_atomically(path, ca.cert_pem().as_bytes())
            .with_context(|| format!("--ca-out {}: cannot write the CA", path.display()))?;
    }
    let tls = ca
        .server_config(&config.tls_sans)
        .context("cannot make the serving certificate")?;

    let store = match &config.redis_url {
        Some(url) => {
            let store = RedisStore::connect(url.expose(), StoreKeys::from_root(store_root))
                .await
                .with_context(|| format!("--redis-url {url}: cannot use the token store"))?;
            AnyTokenStore::Redis(store)
        }
        None => {
            tracing::warn!(
                "no --redis-url given: the admin API sees an empty in-memory token store, not the sidecars' tokens"
            );
            AnyTokenStore::Memory(MemoryStore::new())
        }
    };

    let bind = |flag: &'static str, addr| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("{flag} {addr}: cannot listen"))
    };
    let stream_listener = bind("--stream-listen", config.stream_listen).await?;
    let admin_listener = bind("--admin-listen", config.admin_listen).await?;
    let metrics_listener = bind("--metrics-listen", config.metrics_listen).await?;
    let webhook = match config.webhook {
        Some(webhook) => {
            let listener = bind("--webhook-listen", webhook.listen).await?;
            let webhook_tls = match webhook.tls {
                Some(files) => {
                    let (tls, resolver) = files.server_config().map_err(anyhow::Error::msg)?;
                    // cert-manager rotates the files in place.
                    tasks.push(tokio::spawn(async move { files.watch(resolver).await }));
                    tls
                }
                None => tls.clone(),
            };
            // Injected pods trust the CA that signs the snapshot stream.
            let inject = Arc::new(webhook.inject.with_default_controller_ca_pem(ca.cert_pem()));
            Some(tokio::spawn(tollgate_inject::server::serve_webhook(
                listener,
                webhook_tls,
                inject,
                tollgate_inject::server::WebhookLimits {
                    listener: config.listener_limits,
                    budget: tollgate_serve::BodyBudget::new(config.body_buffer_budget),
                },
                stopped.clone(),
            )))
        }
        None => None,
    };

    let streams = Arc::new(StreamServer::new(
        index.clone(),
        reviewer.clone(),
        metrics.clone(),
        stopped.clone(),
    ));
    // Pods' serving certificates are asked for where the stream is: the sidecar already
    // knows that address and trusts its certificate.
    let certificates = Arc::new(CertificateServer::new(
        index.clone(),
        reviewer.clone(),
        Arc::new(ca),
        config.pod_certs,
    ));
    let configuration = {
        let index = index.clone();
        Arc::new(move |namespace: &str| index.lock().namespace_snapshot(namespace))
    };
    let admin = Arc::new(AdminServer::new(store, reviewer, access, configuration));
    let mut servers: Vec<_> = webhook.into_iter().collect();
    // Every sidecar holds a stream open here: after a rollout the controller, too, would keep
    // the memory of thousands of closed streams without this.
    servers.push(tokio::spawn(tollgate_serve::memory::reclaim_freed_memory(
        stopped.clone(),
    )));
    servers.push(tokio::spawn(server::serve(
        stream_listener,
        Some(tls.clone()),
        config.listener_limits,
        stopped.clone(),
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
    )));
    servers.push(tokio::spawn(server::serve(
        admin_listener,
        Some(tls),
        config.listener_limits,
        stopped.clone(),
        move |request| {
            let admin = admin.clone();
            async move { admin.handle(request).await }
        },
    )));
    {
        let metrics = metrics.clone();
        let index = index.clone();
        servers.push(tokio::spawn(server::serve(
            metrics_listener,
            None,
            config.listener_limits,
            stopped.clone(),
            move |request| {
                let metrics = metrics.clone();
                {
                    let index = index.lock();
                    metrics.pods.set(index.pod_count() as i64);
                    metrics.snapshot_version.set(index.latest_version() as i64);
                }
                async move { metrics.handle(&request) }
            },
        )));
    }
    tracing::info!(
        stream = %config.stream_listen,
        admin = %config.admin_listen,
        metrics = %config.metrics_listen,
        "tollgate controller started"
    );

    shutdown_signal().await;
    tracing::info!("stopping");
    metrics.set_ready(false);
    let _ = stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    for task in tasks {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
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

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
