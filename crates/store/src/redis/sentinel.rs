//! Redis behind Sentinel: the master is whichever one the sentinels name, and it changes on
//! a failover. redis-rs 1.8's `sentinel` feature finds a master once, but its
//! `ConnectionManager` reconnects to the same address forever, so this module keeps a
//! `ConnectionManager` on the master it last found and asks the sentinels again whenever a
//! command fails as a failover makes commands fail: the connection dropped or was refused,
//! it timed out, or the server answered READONLY (the old master came back as a replica).
//! The request that met the error fails (503, as during any outage); the ones after it go to
//! the new master once the sentinels name it.
//!
//! What a sentinel says is checked, not believed: the server it names must answer `ROLE`
//! with `master` (a stale sentinel may still name the demoted master), and over
//! `rediss+sentinel://` its certificate is verified against the same roots as every other
//! connection (`--redis-ca`), for the host the sentinel named. A sentinel that lies can
//! still send us to a master of its choosing whose certificate the CA signed; what it gains
//! there is what a write to Redis gains anybody: it can lose tokens, never forge one, since
//! every value must carry the store key's seal.
//!
//! Sentinels with a password (`requirepass` in sentinel.conf) get the URL's
//! `sentinel_password` (and `sentinel_username`); the master gets the authority's
//! credentials. A wrong one fails the start, naming each sentinel and what it answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture,
    ServerErrorKind, Value,
};

use super::connection::{CONNECTION_TIMEOUT, RESPONSE_TIMEOUT, manager_config, open_client};
use crate::redis_tls::RedisTls;
use crate::url::SentinelUrl;

/// After a rediscovery that found no (new) master, how long before errors may start another:
/// under load every failed request would otherwise ask every sentinel.
const REDISCOVERY_PAUSE: Duration = Duration::from_millis(200);

/// The connection to the current master. Cloning shares it.
#[derive(Clone)]
pub(super) struct SentinelConn {
    shared: Arc<Shared>,
}

struct Shared {
    url: SentinelUrl,
    tls: RedisTls,
    master: RwLock<Master>,
    /// A rediscovery runs: errors meanwhile start no other.
    rediscovering: AtomicBool,
}

/// A master the sentinels named, and the connection to it.
#[derive(Clone)]
struct Master {
    /// `host:port`, as the sentinel named it.
    addr: String,
    conn: ConnectionManager,
    /// Opens the subscriber's connections. Holds the password.
    client: Client,
}

// === impl SentinelConn ===

impl SentinelConn {
    /// Asks the sentinels for the master, checks it, and connects.
    pub(super) async fn connect(url: SentinelUrl, tls: RedisTls) -> Result<Self, String> {
        let master = discover(&url, &tls).await?;
        let conn = ConnectionManager::new_with_config(master.client.clone(), manager_config())
            .await
            .map_err(|e| format!("master {}: {e}", master.addr))?;
        tracing::debug!(master = %master.addr, "connected to the master Sentinel names");
        Ok(Self {
            shared: Arc::new(Shared {
                url,
                tls,
                master: RwLock::new(Master {
                    addr: master.addr,
                    conn,
                    client: master.client,
                }),
                rediscovering: AtomicBool::new(false),
            }),
        })
    }

    /// A client of the master the sentinels name now, checked: what a new subscription
    /// connects to.
    pub(super) async fn current_master_client(&self) -> Result<Client, String> {
        let found = discover(&self.shared.url, &self.shared.tls).await?;
        Ok(found.client)
    }

    /// A client of the master in use.
    pub(super) fn master_client(&self) -> Client {
        self.shared.current().client
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.shared.current().conn;
            let result = conn.req_packed_command(cmd).await;
            if let Err(error) = &result {
                self.shared.on_error(error);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.shared.current().conn;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(error) = &result {
                self.shared.on_error(error);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        i64::from(self.shared.url.db)
    }
}

// === impl Shared ===

impl Shared {
    fn current(&self) -> Master {
        // A panic while holding the lock left a whole `Master` in place: still usable.
        self.master
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts a rediscovery when `error` is how a failover shows, unless one runs.
    fn on_error(self: &Arc<Self>, error: &RedisError) {
        if !suggests_failover(error) || self.rediscovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            shared.rediscover().await;
            tokio::time::sleep(REDISCOVERY_PAUSE).await;
            shared.rediscovering.store(false, Ordering::Release);
        });
    }

    async fn rediscover(&self) {
        let found = match discover(&self.url, &self.tls).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(master = %self.url.master, error = %e, "no master found yet");
                return;
            }
        };
        if found.addr == self.current().addr {
            // The same master: its ConnectionManager reconnects by itself.
            return;
        }
        match ConnectionManager::new_with_config(found.client.clone(), manager_config()).await {
            Ok(conn) => {
                let previous = std::mem::replace(
                    &mut *self
                        .master
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                    Master {
                        addr: found.addr.clone(),
                        conn,
                        client: found.client,
                    },
                );
                tracing::warn!(
                    master = %self.url.master,
                    from = %previous.addr,
                    to = %found.addr,
                    "Redis master changed; following it",
                );
            }
            Err(e) => {
                tracing::warn!(master = %found.addr, error = %e, "cannot connect to the new master")
            }
        }
    }
}

/// The errors a failover causes: the old master is gone, or serves as a replica now.
fn suggests_failover(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
        // A script's write refused by a replica keeps the code in its message.
        || error.to_string().contains("READONLY")
}

/// A master a sentinel named and that says it is one.
struct Found {
    addr: String,
    client: Client,
}

/// Asks each sentinel in turn for the master's address, and returns the first that answers
/// `ROLE` as a master. The error lists what each sentinel said.
async fn discover(url: &SentinelUrl, tls: &RedisTls) -> Result<Found, String> {
    let mut failures = Vec::new();
    for (index, sentinel) in url.sentinels.iter().enumerate() {
        let Some(sentinel_url) = url.sentinel_url(index) else {
            continue;
        };
        match ask_one(url, tls, &sentinel_url).await {
            Ok(found) => return Ok(found),
            Err(e) => failures.push(format!("sentinel {sentinel}: {e}")),
        }
    }
    let message = format!(
        "no sentinel named a usable master `{}`: {}",
        url.master,
        failures.join("; ")
    );
    // Redis's replies do not echo passwords, but a future one must not leak the sentinels'.
    Err(match &url.sentinel_auth {
        Some(auth) => message.replace(&auth.password, "***"),
        None => message,
    })
}

async fn ask_one(url: &SentinelUrl, tls: &RedisTls, sentinel_url: &str) -> Result<Found, String> {
    let sentinel = open_client(sentinel_url, tls).map_err(|e| e.to_string())?;
    let reply: Option<(String, u16)> = async {
        let mut conn = connect(&sentinel).await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&url.master)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await
    .map_err(|e| with_password_hint(e, url))?;
    let (host, port) = reply.ok_or_else(|| format!("monitors no master `{}`", url.master))?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let client = open_client(&url.master_url(&host, port), tls).map_err(|e| e.to_string())?;
    let mut master = connect(&client)
        .await
        .map_err(|e| format!("names {addr}, which fails: {e}"))?;
    let role: Vec<Value> = redis::cmd("ROLE")
        .query_async(&mut master)
        .await
        .map_err(|e| format!("names {addr}, which fails: {e}"))?;
    match role.first() {
        Some(Value::BulkString(role)) if role == b"master" => Ok(Found { addr, client }),
        Some(Value::SimpleString(role)) if role == "master" => Ok(Found { addr, client }),
        _ => Err(format!("names {addr}, which is not a master")),
    }
}

/// A sentinel's refusal, with what fixes it when it is about the sentinels' password (which
/// the master's, in the URL's authority, is not).
fn with_password_hint(message: String, url: &SentinelUrl) -> String {
    let hint = if message.contains("NOAUTH") {
        "this sentinel requires a password: add `?sentinel_password=…` to the URL"
    } else if ["WRONGPASS", "AuthenticationFailed", "invalid password"]
        .iter()
        .any(|refusal| message.contains(refusal))
        && url.sentinel_auth.is_some()
    {
        "this sentinel refuses the URL's `sentinel_password` (or `sentinel_username`)"
    } else if message.contains("without any password configured") {
        "this sentinel has no password: remove `sentinel_password` from the URL"
    } else {
        return message;
    };
    format!("{message} ({hint})")
}

/// A connection for one or two questions, within the store's timeouts.
async fn connect(client: &Client) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// `redis+sentinel://[user@]s1:26379,…/master/db`: which Redis, never the password.
pub(super) fn describe(url: &SentinelUrl) -> String {
    let scheme = if url.tls {
        "rediss+sentinel"
    } else {
        "redis+sentinel"
    };
    let user = url
        .userinfo
        .as_deref()
        .map(|userinfo| userinfo.split(':').next().unwrap_or(""))
        .filter(|user| !user.is_empty())
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    format!(
        "{scheme}://{user}{}/{}/{}",
        url.sentinels.join(","),
        url.master,
        url.db
    )
}
