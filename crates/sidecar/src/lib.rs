//! The data plane in each pod: TLS on :8443, the OAuth endpoints, the bearer check on every
//! other request, forwarding to the application on 127.0.0.1, the admin API, and metrics.
#![forbid(unsafe_code)]

pub mod access_log;
mod body;
pub mod config;
pub mod controller_client;
mod cors;
mod forward;
pub mod gateway;
mod identity;
mod manifests_watch;
pub mod metrics;
pub mod observe;
mod pod_cert;
mod pool;
mod proxy_error;
pub mod routes;
mod served;
pub mod trace_context;
pub mod trusted;
mod tunnel;
mod unambiguous;
mod validation_cache;

/// TLS for the proxy and admin listeners, shared with the controller's.
pub use tollgate_serve::tls;

use std::sync::Arc;

use tokio::sync::watch;
use tollgate_serve::runtime;
use tollgate_store::{AnyTokenStore, StoreKeys, TokenStore};

pub use crate::config::{Config, ConfigErrors, SidecarArgs};
use crate::controller_client::SnapshotRx;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::tls::TlsSource;
use crate::validation_cache::CachedStore;

/// Runs the sidecar until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Standalone: the key file's, for every namespace. Fed by the controller: none until the
    // first snapshot brings the pod's namespace's key.
    let keys = match &config.store_key {
        Some(pair) => StoreKeys::everywhere(pair.clone()),
        None => StoreKeys::per_namespace([]),
    };
    let store =
        runtime::connect_token_store(config.redis_url.as_ref(), &config.redis_tls, keys).await?;
    match &config.redis_url {
        Some(url) => tracing::info!(redis = %url, "tokens are kept in Redis"),
        None => tracing::warn!(
            "no --redis-url given: tokens are kept in this process's memory and are not shared with other replicas"
        ),
    }
    let store_keys = match &store {
        AnyTokenStore::Redis(redis) => Some(redis.keys().clone()),
        AnyTokenStore::Memory(_) => None,
    };
    // The memory store is already local: a cache in front of it would only cost.
    let cache_size = match store {
        AnyTokenStore::Memory(_) => 0,
        AnyTokenStore::Redis(_) => config.validation_cache_size,
    };
    let store = CachedStore::new(store, cache_size, config.validation_cache_ttl);
    let (tls, resolver) = config.tls.server_config().map_err(anyhow::Error::msg)?;

    let proxy_listener = runtime::bind("--listen", config.listen).await?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(runtime::bind("--admin-listen", addr).await?),
        None => None,
    };
    let metrics_listener = runtime::bind("--metrics-listen", config.metrics_listen).await?;
    let http_listener = match config.listen_http {
        Some(addr) => Some(runtime::bind("--listen-http", addr).await?),
        None => None,
    };

    tollgate_oauth::configure_secret_hashing(
        config.max_concurrent_secret_hashes,
        config.secret_hash_queue_timeout,
    );
    let metrics = Metrics::new(store_keys.clone());
    let mut gateway = Gateway::new(
        config.snapshot,
        store,
        metrics.clone(),
        config.trusted_ips,
        config.body_limits,
        config.upstream_keepalive_idle_timeout,
        config.upgrades,
    )
    .with_observe_settings(config.observe);
    if config.controller.is_some()
        && let Some(keys) = store_keys
    {
        gateway = gateway.with_snapshot_store_keys(keys);
    }
    let gateway = Arc::new(gateway);
    let limits = config.listener_limits;
    let (stop, stopped) = watch::channel(false);
    let revocations = tokio::spawn(gateway.store().clone().follow_revocations(stopped.clone()));
    let reclaim = tokio::spawn(tollgate_serve::memory::reclaim_freed_memory(
        stopped.clone(),
    ));
    let sweep = tokio::spawn(gateway.sweep_idle_upstream_connections(stopped.clone()));

    // Each client connection is served with the upstream connection it last used.
    let gateway_per_connection = |gateway: Arc<Gateway<_>>| {
        move |info| {
            let gateway = gateway.clone();
            let client = Arc::new(gateway.client_connection(info));
            move |request| gateway.handle(request, &client)
        }
    };
    let proxy = tokio::spawn(tollgate_serve::serve_per_connection(
        proxy_listener,
        Some(tls.clone()),
        limits,
        stopped.clone(),
        gateway_per_connection(gateway.clone()),
    ));
    let plain = http_listener.map(|listener| {
        tokio::spawn(tollgate_serve::serve_per_connection(
            listener,
            None,
            limits,
            stopped.clone(),
            gateway_per_connection(gateway.clone()),
        ))
    });
    let admin_token = config.admin_token.map(Arc::new);
    let admin = admin_listener.map(|admin_listener| {
        let gateway = gateway.clone();
        let metrics = metrics.clone();
        tokio::spawn(tollgate_serve::serve(
            admin_listener,
            Some(tls),
            limits,
            stopped.clone(),
            move |request, _conn| {
                let gateway = gateway.clone();
                let admin_token = admin_token.clone();
                let metrics = metrics.clone();
                async move {
                    let started = std::time::Instant::now();
                    let (parts, incoming) = request.into_parts();
                    let (bodies, budget) = gateway.body_limits();
                    let read = body::read_bounded(incoming, bodies.oauth, budget).await;
                    let body::Buffered {
                        bytes,
                        reservation: _reservation,
                    } = match read {
                        Ok(buffered) => buffered,
                        Err(error) => return body::read_error(error),
                    };
                    let request = http::Request::from_parts(parts, bytes);
                    let served = gateway.snapshot();
                    let now = gateway::now_millis();
                    let store = gateway.store();
                    let response = tollgate_admin::serve_standalone(
                        store,
                        &served.snapshot,
                        admin_token.as_deref(),
                        &request,
                        now,
                    )
                    .await;
                    metrics.admin_durations().observe(
                        &metrics,
                        response.status(),
                        started.elapsed(),
                    );
                    body::full(response)
                }
            },
        ))
    });
    let metrics_server = {
        let metrics = metrics.clone();
        tokio::spawn(tollgate_serve::serve(
            metrics_listener,
            None,
            limits,
            stopped.clone(),
            move |request, _conn| {
                let metrics = metrics.clone();
                async move { body::full(metrics.handle(&request)) }
            },
        ))
    };
    let from_controller = matches!(config.tls, TlsSource::FromController);
    let reload = {
        let resolver = resolver.clone();
        tokio::spawn(async move { config.tls.watch(resolver).await })
    };

    // With --tls-from-controller, ready only once the proxy has a certificate to serve.
    let certificate = match (from_controller, &config.controller) {
        (true, Some(source)) => {
            metrics.expect_certificate();
            Some(tokio::spawn(pod_cert::run(
                source.clone(),
                resolver.clone(),
                metrics.clone(),
                config.tls_from_controller_timeout,
                stopped.clone(),
            )))
        }
        _ => None,
    };
    // From the controller, the sidecar is ready once it serves a snapshot (or its cache).
    let controller = config.controller.map(|source| {
        let (publish, snapshots) = controller_client::snapshot_channel();
        let install = tokio::spawn(install_snapshots(
            snapshots,
            gateway.clone(),
            metrics.clone(),
        ));
        let follow = tokio::spawn(controller_client::run(source, publish, stopped.clone()));
        [follow, install]
    });
    if controller.is_none() {
        metrics.set_ready(true);
    }
    let manifests = config.manifests.map(|source| {
        tokio::spawn(manifests_watch::follow(
            source,
            gateway.clone(),
            stopped.clone(),
        ))
    });
    tracing::info!(
        listen = %config.listen,
        admin = ?config.admin_listen,
        metrics = %config.metrics_listen,
        services = gateway.snapshot().snapshot.services.len(),
        validation_cache = gateway.store().is_enabled(),
        "tollgate sidecar ready"
    );

    runtime::shutdown_signal().await;
    tracing::info!("stopping: draining in-flight requests");
    metrics.set_ready(false);
    let _ = stop.send(true);
    reload.abort();
    for task in controller.into_iter().flatten() {
        task.abort();
    }
    if let Some(certificate) = certificate {
        certificate.abort();
    }
    if let Some(manifests) = manifests {
        manifests.abort();
    }
    let _ = tokio::join!(proxy, metrics_server, revocations, reclaim, sweep);
    for task in [plain, admin].into_iter().flatten() {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves each snapshot the controller sends from the next request on (with its namespace's
/// store key, when the gateway takes keys from snapshots), and makes the sidecar ready from
/// the first one on.
async fn install_snapshots<S: TokenStore>(
    mut snapshots: SnapshotRx,
    gateway: Arc<Gateway<S>>,
    metrics: Arc<Metrics>,
) {
    while snapshots.changed().await.is_ok() {
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        // The channel keeps its own reference: the gateway shares it rather than copying.
        gateway.swap(snapshot);
        metrics.set_ready(true);
        // The previous snapshot, and what applying a delta to it took, are free now: without
        // a trim, glibc keeps the peak (35 MiB would become 47 at 10,000 applications).
        let _ = tokio::task::spawn_blocking(tollgate_serve::memory::reclaim_now).await;
    }
}
