//! The connection to Redis: one server or a cluster, which is found out at connect time, or
//! the master Sentinel names (see `sentinel`), with short timeouts so that a request while
//! Redis is down fails fast rather than waits.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisFuture, Value};

use super::sentinel::{self, SentinelConn};
use crate::StoreError;
use crate::redis_tls::RedisTls;
use crate::url::{RedisEndpoint, endpoint};

/// Time to establish one connection. Short, so a request while Redis is down fails fast
/// with 503 rather than holding the client; a reachable Redis answers in milliseconds.
pub(super) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Time to wait for one reply.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect attempts made within one request, after the first. Few, for the same reason:
/// the next request starts a new round anyway.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// The connection to a single Redis or to a cluster. Both are multiplexed and reconnect by
/// themselves after Redis restarts; cloning one is cheap and shares it.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

/// What [`connect`] made: the connection, and what the store keeps besides it.
pub(super) struct Connected {
    pub(super) conn: Conn,
    /// Where, without the password: for `Debug` and error messages.
    pub(super) target: String,
    /// The client of the node the URL names, which opens pub/sub connections. Holds the
    /// password. Behind Sentinel, the master's at connect time.
    pub(super) client: Client,
}

/// The settings of every `ConnectionManager`: short timeouts, few retries.
pub(super) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
}

/// A client of `url` trusting what `tls` says (the system's roots when it says nothing).
pub(super) fn open_client(url: &str, tls: &RedisTls) -> redis::RedisResult<Client> {
    match tls.certificates() {
        None => Client::open(url),
        Some(certificates) => Client::build_with_tls(url, certificates),
    }
}

/// Connects to the Redis at `url` with the TLS material of `tls`, and finds out whether it
/// is a cluster, or asks the sentinels a `redis+sentinel://` URL names.
pub(super) async fn connect(url: &str, tls: &RedisTls) -> Result<Connected, StoreError> {
    // Error messages of the redis crate do not echo URLs, but a malformed URL must not
    // leak its password through some future version's message either.
    let scrub = |message: String| scrub_password(url, message);
    if url.starts_with("rediss") {
        // The redis crate builds its TLS config from the process-wide default provider.
        // Ring is the one provider of this tree; installing it explicitly keeps TLS
        // working even if another dependency ever compiles in a second provider.
        // An error means one is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if let Ok(RedisEndpoint::Sentinel(sentinel_url)) = endpoint(url) {
        let target = sentinel::describe(&sentinel_url);
        let conn = SentinelConn::connect(sentinel_url, tls.clone())
            .await
            .map_err(|e| StoreError::Unavailable(scrub(format!("{target}: {e}"))))?;
        let client = conn.master_client();
        return Ok(Connected {
            conn: Conn::Sentinel(conn),
            target,
            client,
        });
    }
    let client = open_client(url, tls)
        .map_err(|e| StoreError::Unavailable(scrub(format!("invalid Redis URL: {e}"))))?;
    let target = describe(&client);
    let mut single = ConnectionManager::new_with_config(client.clone(), manager_config())
        .await
        .map_err(|e| StoreError::Unavailable(scrub(format!("{target}: {e}"))))?;

    // A cluster node answers a plain connection too, but would answer MOVED for every
    // namespace whose slot lives elsewhere: detect it, and follow the cluster instead.
    // Where INFO is disabled (some managed offerings), assume a single Redis.
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut single)
        .await
        .unwrap_or_default();
    if !info.contains("cluster_enabled:1") {
        tracing::debug!(%target, "connected to Redis");
        return Ok(Connected {
            conn: Conn::Single(single),
            target,
            client,
        });
    }
    let mut builder = ClusterClientBuilder::new([url])
        .connection_timeout(CONNECTION_TIMEOUT)
        // Also bounds a whole request, redirections and retries included.
        .response_timeout(RESPONSE_TIMEOUT);
    if let Some(certificates) = tls.certificates() {
        builder = builder.certs(certificates);
    }
    let target = format!("{target} (cluster)");
    let cluster = builder
        .build()
        .map_err(|e| StoreError::Unavailable(scrub(format!("{target}: {e}"))))?
        .get_async_connection()
        .await
        .map_err(|e| StoreError::Unavailable(scrub(format!("{target}: {e}"))))?;
    tracing::debug!(%target, "connected to Redis Cluster");
    Ok(Connected {
        conn: Conn::Cluster(cluster),
        target,
        client,
    })
}

// === impl Conn ===

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            Conn::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
            Conn::Sentinel(conn) => conn.get_db(),
        }
    }
}

/// `scheme://[user@]host:port/db`: enough to tell which Redis, never the password.
pub(super) fn describe(client: &Client) -> String {
    let info = client.get_connection_info();
    let scheme = match info.addr() {
        redis::ConnectionAddr::TcpTls { .. } => "rediss",
        redis::ConnectionAddr::Unix(_) => "redis+unix",
        _ => "redis",
    };
    let settings = info.redis_settings();
    let user = settings
        .username()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    format!("{scheme}://{user}{}/{}", info.addr(), settings.db())
}

/// Replaces the URL's password, should it appear in `message`.
pub(super) fn scrub_password(url: &str, message: String) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty());
    match password {
        Some(password) => message.replace(password, "***"),
        None => message,
    }
}
