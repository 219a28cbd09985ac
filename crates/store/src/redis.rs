//! The shared token store: Redis, so that every sidecar of every pod accepts a token any
//! other issued. Works with plain `redis://`, `rediss://` (TLS, rustls with ring), AUTH
//! from the URL, and Redis Cluster: the URL then names any node, and the store notices at
//! connect time that it speaks to a cluster and follows its topology from there.
//!
//! # Key layout
//!
//! Every key of a namespace starts with the hash tag `{tg:<ns>}` (`<ns>` escaped, see
//! [`Keys`]), so Redis Cluster puts all of them in one slot and the multi-key scripts below
//! stay legal there. The trade-off: one namespace lives on one shard; a cluster spreads
//! namespaces, not the tokens of a single namespace. Keys and values hold the hex SHA-256
//! of tokens, never a token, so a dump of Redis yields no usable credential.
//!
//! | key                       | type   | holds                                            | TTL             |
//! |---------------------------|--------|--------------------------------------------------|-----------------|
//! | `{tg:<ns>}:at:<sha256>`   | string | sealed record JSON, so `find_access` is one GET  | access, ≤ record |
//! | `{tg:<ns>}:rt:<sha256>`   | string | sealed record id                                 | record          |
//! | `{tg:<ns>}:tok:<id>`      | hash   | `record`: sealed JSON; `at` and `rt` hashes, member `m` | record   |
//! | `{tg:<ns>}:idx`           | zset   | members `m` = `<created_at, 20 digits>:<id>`, score 0 | none       |
//! | `{tg:<ns>}:exp`           | zset   | members `m`, score = record deadline (Redis clock, ms) | none      |
//! | `{tg:<ns>}:code:<sha256>` | string | sealed authorization code payload                | as given        |
//! | `{tg:<ns>}:retired:<sha256>` | string | `<old id>\|<successor id>\|<retired at, ms>\|<successor's refresh sha256 or empty>` | old record's remainder |
//!
//! "None" TTL where the lifetime is 0 (forever).
//!
//! # Seals
//!
//! "Sealed" is `<hex HMAC-SHA256>.<payload>`, the MAC bound to the key name (see
//! [`crate::seal`]). Every value a credential is checked against is sealed, and verified in
//! this process, never in a script: a value that does not verify is absent, and is counted
//! ([`StoreKeys::unverified_total`]). The swap script takes the refresh key's value verified
//! here and swaps only if the key still holds it. What is left unsealed can only make the
//! store delete or keep less: the `at`, `rt` and `m` fields of `tok` (which keys a removal
//! deletes), the indexes, `retired` entries (which records reuse detection deletes), and
//! revocation messages (which cached validations a sidecar drops). Whoever can write to
//! Redis can delete anything anyway; what they cannot do is make a token work. `idx` orders the listing lexicographically,
//! which is exactly `(created_at, id)`. It cannot expire member by member, so `exp` tells
//! which members belong to expired records: every write prunes a few of them, and listing
//! drops any it meets, which keeps both sets bounded by the live records.
//!
//! `retired` keys are written by a refresh that replaces the refresh token, and read by reuse
//! detection: from a replayed refresh token they lead to its successor, from the
//! successor's refresh token to the next one, and so on to the end of the chain. They live
//! as long as the retired token would have (so forever when the record's lifetime is 0).
//!
//! Writes are Lua scripts (EVALSHA, loaded again automatically after a Redis restart), so
//! each is atomic: of two concurrent refreshes with the same token exactly one wins. They
//! call TIME before writing, which needs effect replication: Redis 5 or later.
//!
//! # Revocations
//!
//! Every script that ends an access token's validity early also publishes its hash on the
//! channel [`REVOCATION_CHANNEL`] (`tollgate:revoked`), in the same atomic step. The payload
//! is `<ns> <sha256>`: the namespace escaped as in the keys (so it never holds a space) and
//! the access token's lowercase hex SHA-256. On Redis Cluster, PUBLISH reaches subscribers of
//! every node. Pub/sub ignores the database number: deployments sharing one Redis see each
//! other's revocations, which costs them nothing but a few evictions.
//!
//! [`TokenStore::subscribe`] listens on a connection of its own that speaks RESP3 (so that
//! one needs Redis 6 or later; everything else works from Redis 5): it ends visibly when the
//! connection drops, which is exactly the moment a cache must hear `Lost`. See the
//! `subscriber` module for why this kind of connection.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Client, Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use uuid::Uuid;

use crate::expiry::{self, Remaining};
use crate::seal::{SEAL_PREFIX, Sealer, StoreKeys};
use crate::{
    ListFilter, Page, Reuse, Revocations, StoreError, TokenHash, TokenRecord, TokenStore, cursor,
};

mod subscriber;

/// The channel name, as a literal so that the scripts can embed it.
macro_rules! revocation_channel {
    () => {
        "tollgate:revoked"
    };
}

/// The Redis pub/sub channel on which the scripts publish revoked access tokens: one channel
/// for every namespace. Payload: `<escaped namespace> <lowercase hex SHA-256>`; see the
/// module documentation.
pub const REVOCATION_CHANNEL: &str = revocation_channel!();

/// Time to establish one connection. Short, so a request while Redis is down fails fast
/// with 503 rather than holding the client; a reachable Redis answers in milliseconds.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// Time to wait for one reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect attempts made within one request, after the first. Few, for the same reason:
/// the next request starts a new round anyway.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// How far the clocks of the sidecar that issued a token and of the one reading it may
/// disagree before the reader counts the token's lifetime over by its own clock.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Where a sealed value's payload starts, for the scripts (Lua counts from 1).
const PAYLOAD_AT: usize = SEAL_PREFIX + 1;

/// How many index members a listing reads per round trip.
const LIST_BATCH: usize = 256;

/// A Redis-backed [`TokenStore`]. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// Where we are connected, without the password: for `Debug` and error messages.
    target: String,
    /// Opens the dedicated connections of [`TokenStore::subscribe`]: the node the URL names.
    /// Holds the password, so it must never be shown (`Client`'s own `Debug` would).
    /// Shared: it is large, and the store is cloned often.
    pubsub: Arc<Client>,
    /// Seal what is written and verify what is read; see [`crate::seal`].
    keys: StoreKeys,
}

/// The connection to a single Redis or to a cluster. Both are multiplexed and reconnect by
/// themselves after Redis restarts; cloning one is cheap and shares it.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects to `redis://[user:password@]host[:port][/db]` or `rediss://…` (TLS, checked
    /// against the system's root certificates). Fails when Redis cannot be reached now; later
    /// outages are survived (requests fail with [`StoreError::Unavailable`] meanwhile).
    ///
    /// Values are sealed and verified with `keys`: a namespace without a key can neither
    /// store nor find anything.
    pub async fn connect(url: &str, keys: StoreKeys) -> Result<Self, StoreError> {
        Self::connect_tls(url, None, keys).await
    }

    /// Like [`RedisStore::connect`], trusting only `ca_pem` (a PEM bundle) for `rediss://`:
    /// for a Redis whose certificate comes from a private CA, e.g. cert-manager's.
    pub async fn connect_with_ca(
        url: &str,
        ca_pem: &[u8],
        keys: StoreKeys,
    ) -> Result<Self, StoreError> {
        Self::connect_tls(url, Some(ca_pem), keys).await
    }

    async fn connect_tls(
        url: &str,
        ca_pem: Option<&[u8]>,
        keys: StoreKeys,
    ) -> Result<Self, StoreError> {
        // Error messages of the redis crate do not echo URLs, but a malformed URL must not
        // leak its password through some future version's message either.
        let scrub = |message: String| scrub_password(url, message);
        if url.starts_with("rediss://") {
            // The redis crate builds its TLS config from the process-wide default provider.
            // Ring is the one provider of this tree; installing it explicitly keeps TLS
            // working even if another dependency ever compiles in a second provider.
            // An error means one is installed already, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = match ca_pem {
            None => Client::open(url),
            Some(pem) => Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
        }
        .map_err(|e| StoreError::Unavailable(scrub(format!("invalid Redis URL: {e}"))))?;
        let target = describe(&client);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let mut single = ConnectionManager::new_with_config(client.clone(), config)
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
            return Ok(Self {
                conn: Conn::Single(single),
                target,
                pubsub: Arc::new(client),
                keys,
            });
        }
        let mut builder = ClusterClientBuilder::new([url])
            .connection_timeout(CONNECTION_TIMEOUT)
            // Also bounds a whole request, redirections and retries included.
            .response_timeout(RESPONSE_TIMEOUT);
        if let Some(pem) = ca_pem {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            });
        }
        let target = format!("{target} (cluster)");
        let cluster = builder
            .build()
            .map_err(|e| StoreError::Unavailable(scrub(format!("{target}: {e}"))))?
            .get_async_connection()
            .await
            .map_err(|e| StoreError::Unavailable(scrub(format!("{target}: {e}"))))?;
        tracing::debug!(%target, "connected to Redis Cluster");
        Ok(Self {
            conn: Conn::Cluster(cluster),
            target,
            pubsub: Arc::new(client),
            keys,
        })
    }

    /// The keys this store seals and verifies with: the sidecar counts refusals from them,
    /// and swaps in new ones with each snapshot.
    pub fn keys(&self) -> &StoreKeys {
        &self.keys
    }

    /// What seals values of `namespace`, for a write: without it nothing can be stored.
    fn sealer(&self, namespace: &str) -> Result<Arc<Sealer>, StoreError> {
        self.keys.sealer(namespace).ok_or_else(|| {
            StoreError::Unavailable(format!("no store key for namespace {namespace:?}"))
        })
    }

    /// The payload of `value`, read from `key`, if its seal verifies; else `None`, the
    /// refusal counted and logged.
    fn open<'a>(&self, sealer: &Sealer, key: &str, value: &'a [u8]) -> Option<&'a [u8]> {
        let opened = sealer.open(key, value);
        if opened.is_none() {
            self.keys.refused(key);
        }
        opened
    }

    /// The record in `value`, read from `key`: `None` unless its seal verifies.
    fn open_record(
        &self,
        sealer: &Sealer,
        key: &str,
        value: &[u8],
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.open(sealer, key, value).map(decode).transpose()
    }

    fn conn(&self) -> Conn {
        // A handle on the same multiplexed connection: cheap, and needed because commands
        // take `&mut`.
        self.conn.clone()
    }

    fn unavailable(&self, error: RedisError) -> StoreError {
        StoreError::Unavailable(format!("{}: {error}", self.target))
    }

    /// Runs the insert-like scripts: `KEYS[1]` as given, ARGV as the prelude's `store`
    /// reads them, then the refresh token being swapped and the sealed value its key must
    /// still hold (`''` for an insert).
    #[allow(clippy::too_many_arguments)]
    async fn run_store_script(
        &self,
        script: &Script,
        key: String,
        keys: &Keys,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
        old_refresh: Option<&TokenHash>,
        old_refresh_value: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a record: {e}")))?;
        let sealer = self.sealer(&record.namespace)?;
        let id = record.id.to_string();
        let lifetimes = expiry::lifetimes(record, expiry::now_ms());
        let mut invocation = script.key(key);
        invocation
            .arg(&keys.prefix)
            .arg(&id)
            .arg(member(record.created_at, record.id))
            .arg(sealer.seal(&keys.record(record.id), &json))
            .arg(access.to_hex())
            .arg(refresh.map(TokenHash::to_hex).unwrap_or_default())
            .arg(ttl_arg(lifetimes.access))
            .arg(ttl_arg(lifetimes.record))
            .arg(old_refresh.map(TokenHash::to_hex).unwrap_or_default())
            .arg(sealer.seal(&keys.access(access), &json))
            .arg(
                refresh
                    .map(|refresh| sealer.seal(&keys.refresh(refresh), id.as_bytes()))
                    .unwrap_or_default(),
            )
            .arg(old_refresh_value.unwrap_or_default());
        let done: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(done == 1)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl TokenStore for RedisStore {
    async fn insert(
        &self,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        let keys = Keys::new(&record.namespace);
        self.run_store_script(
            &SCRIPTS.insert,
            keys.record(record.id),
            &keys,
            record,
            access,
            refresh,
            None,
            None,
        )
        .await
        .map(drop)
    }

    async fn find_access(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> Result<Option<TokenRecord>, StoreError> {
        // A namespace without a key has nothing to find: nothing it holds can verify.
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(None);
        };
        // One GET: the access key holds the record itself, and expires by itself.
        let key = Keys::new(namespace).access(access);
        let value: Option<Vec<u8>> = self
            .conn()
            .get(&key)
            .await
            .map_err(|e| self.unavailable(e))?;
        let Some(record) = value
            .map(|value| self.open_record(&sealer, &key, &value))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        // A genuine value put back after its token was revoked still ends at its deadline.
        Ok(access_still_valid(&record, expiry::now_ms()).then_some(record))
    }

    async fn find_refresh(
        &self,
        namespace: &str,
        refresh: &TokenHash,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(None);
        };
        let keys = Keys::new(namespace);
        let key = keys.refresh(refresh);
        let found: Vec<Vec<u8>> = SCRIPTS
            .find_refresh
            .key(&key)
            .arg(&keys.prefix)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(e))?;
        let [id, record] = found.as_slice() else {
            return Ok(None);
        };
        // The refresh key must name this record (a forged one could name any), and the
        // record must be the one stored under that id.
        let Some(id) = self
            .open(&sealer, &key, id)
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| Uuid::parse_str(id).ok())
        else {
            return Ok(None);
        };
        self.open_record(&sealer, &keys.record(id), record)
    }

    async fn swap_refresh(
        &self,
        namespace: &str,
        old_refresh: &TokenHash,
        new: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(false);
        };
        let keys = Keys::new(namespace);
        let key = keys.refresh(old_refresh);
        // The refresh key's value is checked here, where the key is, and the script swaps
        // only if it still holds exactly that value.
        let value: Option<Vec<u8>> = self
            .conn()
            .get(&key)
            .await
            .map_err(|e| self.unavailable(e))?;
        let Some(value) = value else {
            return Ok(false);
        };
        if self.open(&sealer, &key, &value).is_none() {
            return Ok(false);
        }
        self.run_store_script(
            &SCRIPTS.swap,
            key,
            &keys,
            new,
            access,
            refresh,
            Some(old_refresh),
            Some(&value),
        )
        .await
    }

    async fn get(&self, namespace: &str, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(None);
        };
        let key = Keys::new(namespace).record(id);
        let value: Option<Vec<u8>> = self
            .conn()
            .hget(&key, "record")
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(value
            .map(|value| self.open_record(&sealer, &key, &value))
            .transpose()?
            .flatten())
    }

    async fn list(
        &self,
        namespace: &str,
        filter: &ListFilter,
        size: usize,
        offset: Option<&str>,
    ) -> Result<Page, StoreError> {
        let start = offset.map(cursor::decode).transpose()?;
        let size = size.max(1);
        let keys = Keys::new(namespace);
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(Page::default());
        };
        let mut conn = self.conn();
        // Exclusive lower bound in ZRANGEBYLEX syntax: after the cursor, or from the start.
        let mut lower = match start {
            Some((created_at, id)) => format!("({}", member(created_at, id)),
            None => "-".to_owned(),
        };
        let mut records = Vec::with_capacity(size);
        let mut more = false;
        'scan: loop {
            let members: Vec<String> = redis::cmd("ZRANGEBYLEX")
                .arg(keys.index())
                .arg(&lower)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(LIST_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            let Some(last) = members.last() else {
                break;
            };
            lower = format!("({last}");

            let mut pipe = redis::pipe();
            let mut names = Vec::with_capacity(members.len());
            for m in &members {
                let name = keys.record(member_id(m)?);
                pipe.hget(&name, "record");
                names.push(name);
            }
            let found: Vec<Option<Vec<u8>>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;

            let mut dead = Vec::new();
            for ((m, name), value) in members.iter().zip(&names).zip(found) {
                let Some(value) = value else {
                    dead.push(m.as_str());
                    continue;
                };
                // A record that does not verify is not listed, as if absent.
                let Some(record) = self.open_record(&sealer, name, &value)? else {
                    continue;
                };
                if !filter.matches(&record) {
                    continue;
                }
                if records.len() == size {
                    // One more match exists: the page is not the last.
                    more = true;
                    break;
                }
                records.push(record);
            }
            if !dead.is_empty() {
                // Members of expired records: drop them now rather than wait for a write's
                // pruning. Only if their record is still gone, checked atomically.
                let _: i64 = SCRIPTS
                    .prune_index
                    .key(keys.index())
                    .arg(&keys.prefix)
                    .arg(&dead)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| self.unavailable(e))?;
            }
            if more || members.len() < LIST_BATCH {
                break 'scan;
            }
        }
        let next_offset = match records.last() {
            Some(last) if more => Some(cursor::encode(last.created_at, last.id)),
            _ => None,
        };
        Ok(Page {
            records,
            next_offset,
        })
    }

    async fn delete(&self, namespace: &str, id: Uuid) -> Result<bool, StoreError> {
        let keys = Keys::new(namespace);
        let deleted: i64 = SCRIPTS
            .delete
            .key(keys.record(id))
            .arg(&keys.prefix)
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(deleted == 1)
    }

    async fn delete_matching(
        &self,
        namespace: &str,
        filter: &ListFilter,
    ) -> Result<usize, StoreError> {
        let keys = Keys::new(namespace);
        let mut conn = self.conn();
        // Filter conditions as the script takes them: '' for any, '=' then the value.
        let condition = |value: Option<&str>| value.map(|v| format!("={v}")).unwrap_or_default();
        let service = filter.service_id.map(|id| id.to_string());
        let mut lower = "-".to_owned();
        let mut total = 0;
        loop {
            let (deleted, scanned, last): (usize, usize, String) = SCRIPTS
                .delete_matching
                .key(keys.index())
                .arg(&keys.prefix)
                .arg(&lower)
                .arg(LIST_BATCH)
                .arg(condition(filter.authenticated_userid.as_deref()))
                .arg(condition(filter.client_id.as_deref()))
                .arg(condition(service.as_deref()))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            total += deleted;
            if scanned < LIST_BATCH {
                return Ok(total);
            }
            lower = format!("({last}");
        }
    }

    async fn revoke_on_reuse(
        &self,
        namespace: &str,
        refresh: &TokenHash,
        grace_secs: u32,
    ) -> Result<Reuse, StoreError> {
        let keys = Keys::new(namespace);
        let reply: Vec<i64> = SCRIPTS
            .revoke_on_reuse
            .key(keys.retired(refresh))
            .arg(&keys.prefix)
            .arg(refresh.to_hex())
            .arg(u64::from(grace_secs) * 1000)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(e))?;
        match reply.as_slice() {
            [0] => Ok(Reuse::NotRetired),
            [1] => Ok(Reuse::WithinGrace),
            [2, records] => Ok(Reuse::Revoked {
                records: usize::try_from(*records).unwrap_or(0),
            }),
            other => Err(StoreError::Corrupt(format!(
                "unexpected reply {other:?} from reuse detection"
            ))),
        }
    }

    async fn subscribe(&self) -> Result<Revocations, StoreError> {
        let cluster = match &self.conn {
            Conn::Single(_) => None,
            Conn::Cluster(cluster) => Some(cluster.clone()),
        };
        subscriber::subscribe(Client::clone(&self.pubsub), cluster, self.target.clone()).await
    }

    async fn put_code(
        &self,
        namespace: &str,
        code: &TokenHash,
        payload: &[u8],
        ttl_secs: u32,
    ) -> Result<(), StoreError> {
        let key = Keys::new(namespace).code(code);
        let sealed = self.sealer(namespace)?.seal(&key, payload);
        let mut conn = self.conn();
        let result = if ttl_secs == 0 {
            conn.set::<_, _, ()>(key, sealed).await
        } else {
            conn.set_ex::<_, _, ()>(key, sealed, u64::from(ttl_secs))
                .await
        };
        result.map_err(|e| self.unavailable(e))
    }

    async fn find_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(None);
        };
        let key = Keys::new(namespace).code(code);
        let value: Option<Vec<u8>> = self
            .conn()
            .get(&key)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(value.and_then(|value| self.open(&sealer, &key, &value).map(<[u8]>::to_vec)))
    }

    async fn take_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(sealer) = self.keys.sealer(namespace) else {
            return Ok(None);
        };
        let key = Keys::new(namespace).code(code);
        // A script rather than GETDEL, which needs Redis 6.2; equally atomic.
        let value: Option<Vec<u8>> = SCRIPTS
            .take_code
            .key(&key)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(value.and_then(|value| self.open(&sealer, &key, &value).map(<[u8]>::to_vec)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.conn())
            .await
            .map(drop)
            .map_err(|e| self.unavailable(e))
    }
}

// === impl Conn ===

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

// === keys ===

/// The names of one namespace's keys.
struct Keys {
    /// `{tg:<ns>}:`, also passed to scripts, which build the keys they discover.
    prefix: String,
}

impl Keys {
    fn new(namespace: &str) -> Self {
        // Kubernetes namespaces are DNS labels and come out unchanged. Anything else is
        // percent-escaped so that no namespace can close the hash tag early (`}`) or make
        // its keys collide with another namespace's (`:`); escaping `%` keeps it one-to-one.
        Self {
            prefix: format!("{{tg:{}}}:", escape_namespace(namespace)),
        }
    }

    fn access(&self, hash: &TokenHash) -> String {
        format!("{}at:{}", self.prefix, hash.to_hex())
    }

    fn refresh(&self, hash: &TokenHash) -> String {
        format!("{}rt:{}", self.prefix, hash.to_hex())
    }

    fn record(&self, id: Uuid) -> String {
        format!("{}tok:{id}", self.prefix)
    }

    fn index(&self) -> String {
        format!("{}idx", self.prefix)
    }

    fn code(&self, hash: &TokenHash) -> String {
        format!("{}code:{}", self.prefix, hash.to_hex())
    }

    fn retired(&self, hash: &TokenHash) -> String {
        format!("{}retired:{}", self.prefix, hash.to_hex())
    }
}

/// A namespace as it appears in keys and revocation payloads.
///
/// Kubernetes namespaces are DNS labels and come out unchanged. Anything else is
/// percent-escaped so that no namespace can close the hash tag early (`}`), make its keys
/// collide with another namespace's (`:`) or split a revocation payload (space); escaping `%`
/// keeps it one-to-one.
fn escape_namespace(namespace: &str) -> String {
    let mut escaped = String::with_capacity(namespace.len());
    for byte in namespace.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// The inverse of [`escape_namespace`]; `None` for text it cannot have made.
fn unescape_namespace(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            let mut byte = [0u8];
            hex::decode_to_slice(hex, &mut byte).ok()?;
            bytes.push(byte[0]);
            rest = tail.get(2..)?;
        } else if first.is_ascii_alphanumeric() || matches!(first, b'-' | b'_' | b'.') {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The payload published on [`REVOCATION_CHANNEL`] when the access token `access` of
/// `namespace` is revoked. The scripts build the same (see `revoked` in [`PRELUDE`]).
#[cfg(test)]
fn revocation_payload(namespace: &str, access: &TokenHash) -> String {
    format!("{} {}", escape_namespace(namespace), access.to_hex())
}

/// Reads a payload of [`REVOCATION_CHANNEL`]; `None` for anything else.
fn parse_revocation(payload: &[u8]) -> Option<(String, TokenHash)> {
    let payload = std::str::from_utf8(payload).ok()?;
    let (namespace, access) = payload.split_once(' ')?;
    Some((unescape_namespace(namespace)?, TokenHash::from_hex(access)?))
}

/// A record's member in `idx`/`exp`: zero-padded so that byte order is `(created_at, id)`
/// order (a hyphenated lowercase UUID sorts like its bytes).
fn member(created_at: u64, id: Uuid) -> String {
    format!("{created_at:020}:{id}")
}

/// The id in a member; the scripts read it the same way (`string.sub(m, 22)`).
fn member_id(member: &str) -> Result<Uuid, StoreError> {
    member
        .get(21..)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("index member {member:?}")))
}

/// A lifetime as the scripts take it: milliseconds, 0 for forever, -1 for already expired.
fn ttl_arg(remaining: Remaining) -> i64 {
    match remaining {
        Remaining::Forever => 0,
        Remaining::Expired => -1,
        Remaining::For(left) => i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1),
    }
}

fn decode(json: &[u8]) -> Result<TokenRecord, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(format!("token record: {e}")))
}

/// Whether `record`'s access token is still within its lifetime at `now_ms` on this clock,
/// give or take [`CLOCK_SKEW`]. Redis expires the access key by itself; this bounds a
/// genuine value that someone with write access saved and put back after a revocation.
fn access_still_valid(record: &TokenRecord, now_ms: u64) -> bool {
    let skew = u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms.saturating_sub(skew);
    expiry::lifetimes(record, now).access != Remaining::Expired
}

/// `scheme://[user@]host:port/db`: enough to tell which Redis, never the password.
fn describe(client: &Client) -> String {
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
fn scrub_password(url: &str, message: String) -> String {
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

// === scripts ===

/// Definitions shared by the writing scripts. `ARGV[1]` is always the key prefix
/// (`{tg:<ns>}:`); the scripts build from it the keys they learn of while running. Those
/// keys are undeclared but share the declared key's slot, which Redis Cluster allows.
const PRELUDE: &str = concat!(
    r#"
local p = ARGV[1]
-- The escaped namespace: what lies between '{tg:' and '}:'.
local ns = string.sub(p, 5, -3)

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Tells every subscriber that access token `at` (its hash) no longer holds. The one place
-- that writes a revocation payload: `<ns> <hash>`.
local function revoked(at)
  redis.call('PUBLISH', '"#,
    revocation_channel!(),
    r#"', ns .. ' ' .. at)
end

-- Removes record `id` with its access key, refresh key and index members, and publishes its
-- access token if that was still valid, unless it is `keep` (stored again right after).
-- 1 if the record existed.
local function retire(id, keep)
  local tok = p .. 'tok:' .. id
  local f = redis.call('HMGET', tok, 'at', 'rt', 'm')
  if f[1] and redis.call('DEL', p .. 'at:' .. f[1]) == 1 and f[1] ~= keep then
    revoked(f[1])
  end
  if f[2] then redis.call('DEL', p .. 'rt:' .. f[2]) end
  if f[3] then
    redis.call('ZREM', p .. 'idx', f[3])
    redis.call('ZREM', p .. 'exp', f[3])
  end
  return redis.call('DEL', tok)
end

-- Stores the record of ARGV[2..8]: id, member, sealed record for `tok`, access hash, refresh
-- hash ('' for none), access TTL, record TTL (ms; 0 = forever, -1 = already expired: not
-- stored); ARGV[10] and ARGV[11]: the values sealed for the access and the refresh key.
local function store(now)
  local id, m, json, at, rt = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local at_v, rt_v = ARGV[10], ARGV[11]
  local at_ms, rec_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
  if rec_ms < 0 then return end
  local tok = p .. 'tok:' .. id
  redis.call('HSET', tok, 'record', json, 'm', m)
  if at_ms >= 0 then
    redis.call('HSET', tok, 'at', at)
    if at_ms > 0 then
      redis.call('SET', p .. 'at:' .. at, at_v, 'PX', at_ms)
    else
      redis.call('SET', p .. 'at:' .. at, at_v)
    end
  end
  if rt ~= '' then
    redis.call('HSET', tok, 'rt', rt)
    if rec_ms > 0 then
      redis.call('SET', p .. 'rt:' .. rt, rt_v, 'PX', rec_ms)
    else
      redis.call('SET', p .. 'rt:' .. rt, rt_v)
    end
  end
  redis.call('ZADD', p .. 'idx', 0, m)
  if rec_ms > 0 then
    redis.call('PEXPIRE', tok, rec_ms)
    redis.call('ZADD', p .. 'exp', now + rec_ms, m)
  end
end

-- Drops index members of a few records that expired, so the index stays bounded even when
-- nobody lists. A member whose record lives on (its deadline moved) is rescheduled.
local function prune(now)
  local due = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'LIMIT', 0, 16)
  for _, m in ipairs(due) do
    local left = redis.call('PTTL', p .. 'tok:' .. string.sub(m, 22))
    if left == -2 then
      redis.call('ZREM', p .. 'idx', m)
      redis.call('ZREM', p .. 'exp', m)
    elseif left == -1 then
      redis.call('ZREM', p .. 'exp', m)
    else
      redis.call('ZADD', p .. 'exp', now + left, m)
    end
  end
end

-- A `retired` value: old id, successor id, retired at (ms), successor's refresh hash or ''.
local function parse_retired(v)
  return string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
end
"#
);

struct Scripts {
    insert: Script,
    swap: Script,
    find_refresh: Script,
    delete: Script,
    delete_matching: Script,
    revoke_on_reuse: Script,
    take_code: Script,
    prune_index: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    // KEYS[1] = tok:<id>. Replaces a record with the same id, old tokens included.
    insert: Script::new(&format!(
        r#"{PRELUDE}
local now = now_ms()
retire(ARGV[2], ARGV[5])
store(now)
prune(now)
return 1
"#
    )),
    // KEYS[1] = rt:<old refresh hash>, ARGV[9] = that hash, ARGV[12] = the sealed value the
    // caller verified there. Changes nothing and returns 0 unless the key still holds it.
    // Unless the refresh token stays (reuse_refresh_token), leaves a `retired` key behind
    // for reuse detection, as long-lived as the old record would be.
    swap: Script::new(&format!(
        r#"{PRELUDE}
local v = redis.call('GET', KEYS[1])
if not v or v ~= ARGV[12] then return 0 end
local old = string.sub(v, {PAYLOAD_AT})
local left = redis.call('PTTL', p .. 'tok:' .. old)
if left == -2 then
  redis.call('DEL', KEYS[1])
  return 0
end
local now = now_ms()
retire(old, ARGV[5])
retire(ARGV[2], ARGV[5])
store(now)
if ARGV[6] ~= ARGV[9] then
  local v = old .. '|' .. ARGV[2] .. '|' .. string.format('%.0f', now) .. '|' .. ARGV[6]
  if left > 0 then
    redis.call('SET', p .. 'retired:' .. ARGV[9], v, 'PX', left)
  else
    redis.call('SET', p .. 'retired:' .. ARGV[9], v)
  end
end
prune(now)
return 1
"#
    )),
    // KEYS[1] = rt:<hash>; one round trip instead of GET then HGET. Returns the refresh
    // key's sealed value and the sealed record it names, or nothing.
    find_refresh: Script::new(&format!(
        r#"
local v = redis.call('GET', KEYS[1])
if not v then return {{}} end
local record = redis.call('HGET', ARGV[1] .. 'tok:' .. string.sub(v, {PAYLOAD_AT}), 'record')
if not record then return {{}} end
return {{v, record}}
"#
    )),
    // KEYS[1] = tok:<id>, ARGV[2] = id.
    delete: Script::new(&format!(
        r#"{PRELUDE}
return retire(ARGV[2], '')
"#
    )),
    // KEYS[1] = idx. One batch of a bulk delete: the first ARGV[3] members after ARGV[2] (an
    // exclusive ZRANGEBYLEX bound, or '-'), deleting the records that match ARGV[4..6]
    // (authenticated_userid, client_id, service_id: '' for any, '=' then the value to match,
    // as `ListFilter::matches` does). Returns deleted, members scanned, last member.
    delete_matching: Script::new(&format!(
        r#"{PRELUDE}
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local function want(value, condition)
  if condition == '' then return true end
  return type(value) == 'string' and value == string.sub(condition, 2)
end
local n = 0
for _, m in ipairs(members) do
  local id = string.sub(m, 22)
  local json = redis.call('HGET', p .. 'tok:' .. id, 'record')
  if not json then
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', p .. 'exp', m)
  else
    local ok, r = pcall(cjson.decode, string.sub(json, {PAYLOAD_AT}))
    if ok and type(r) == 'table' and want(r.authenticated_userid, ARGV[4])
        and want(r.client_id, ARGV[5]) and want(r.service_id, ARGV[6]) then
      n = n + retire(id, '')
    end
  end
end
return {{n, #members, members[#members] or ''}}
"#
    )),
    // KEYS[1] = retired:<hash>, ARGV[2] = hash, ARGV[3] = grace (ms). Returns {{0}}: not
    // retired, {{1}}: within grace, {{2, n}}: the chain of successors deleted, n records.
    revoke_on_reuse: Script::new(&format!(
        r#"{PRELUDE}
if redis.call('EXISTS', p .. 'rt:' .. ARGV[2]) == 1 then return {{0}} end
local v = redis.call('GET', KEYS[1])
if not v then return {{0}} end
local _, id, at, rt = parse_retired(v)
if not id then return redis.error_reply('corrupt retired entry') end
local grace = tonumber(ARGV[3])
if grace > 0 and now_ms() - tonumber(at) < grace then return {{1}} end
local n = 0
local seen = {{[ARGV[2]] = true}}
while id do
  n = n + retire(id, '')
  if rt == '' or seen[rt] then break end
  seen[rt] = true
  v = redis.call('GET', p .. 'retired:' .. rt)
  if not v then break end
  _, id, at, rt = parse_retired(v)
end
return {{2, n}}
"#
    )),
    // KEYS[1] = code:<hash>.
    take_code: Script::new(
        r#"
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v
"#,
    ),
    // KEYS[1] = idx, ARGV[2..] = members seen without a record.
    prune_index: Script::new(
        r#"
local p = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local m = ARGV[i]
  if redis.call('EXISTS', p .. 'tok:' .. string.sub(m, 22)) == 0 then
    n = n + redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', p .. 'exp', m)
  end
end
return n
"#,
    ),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_escaped_one_to_one() {
        assert_eq!(Keys::new("default").prefix, "{tg:default}:");
        assert_eq!(Keys::new("team-a.b_c").prefix, "{tg:team-a.b_c}:");
        assert_eq!(Keys::new("a}b").prefix, "{tg:a%7Db}:");
        assert_eq!(Keys::new("a:b").prefix, "{tg:a%3Ab}:");
        assert_ne!(Keys::new("a%3Ab").prefix, Keys::new("a:b").prefix);
    }

    #[test]
    fn revocation_payloads_round_trip() {
        let hash = TokenHash::of("token");
        for namespace in ["default", "we}ird:ns", "a b", "100%", "é", ""] {
            let payload = revocation_payload(namespace, &hash);
            assert_eq!(payload.matches(' ').count(), 1, "{PAYLOAD_AT}");
            assert_eq!(
                parse_revocation(payload.as_bytes()),
                Some((namespace.to_owned(), hash)),
                "{PAYLOAD_AT}"
            );
        }
        assert_eq!(
            revocation_payload("shop", &hash),
            format!("shop {}", hash.to_hex())
        );
        for garbage in [
            "",
            "shop",
            "shop nothex",
            "sh}op 00",
            "%zz 00",
            "%4",
            &format!("shop {}00", hash.to_hex()),
        ] {
            assert_eq!(parse_revocation(garbage.as_bytes()), None, "{garbage}");
        }
        assert_eq!(parse_revocation(b"\xff abc"), None);
    }

    #[test]
    fn members_sort_like_created_at_then_id() {
        let low = Uuid::from_u128(1);
        let high = Uuid::from_u128(u128::MAX);
        let mut members = [
            member(10, high),
            member(9, high),
            member(10, low),
            member(1_700_000_000_000, low),
        ];
        members.sort();
        assert_eq!(
            members,
            [
                member(9, high),
                member(10, low),
                member(10, high),
                member(1_700_000_000_000, low)
            ]
        );
        assert_eq!(member_id(&member(10, high)).ok(), Some(high));
        assert!(member_id("garbage").is_err());
    }

    #[test]
    fn a_put_back_access_value_ends_at_its_deadline_give_or_take_the_skew() {
        let record = TokenRecord {
            id: Uuid::nil(),
            namespace: "ns".into(),
            credential_id: Uuid::nil(),
            client_id: "c".into(),
            service_id: None,
            authenticated_userid: None,
            scope: String::new(),
            expires_in: 100,
            created_at: 1_000_000,
            ttl: 0,
        };
        let deadline = 1_000_000 + 100_000;
        let skew = CLOCK_SKEW.as_millis() as u64;
        assert!(access_still_valid(&record, deadline - 1));
        assert!(access_still_valid(&record, deadline + skew - 1));
        assert!(!access_still_valid(&record, deadline + skew));
        let forever = TokenRecord {
            expires_in: 0,
            ..record
        };
        assert!(access_still_valid(&forever, u64::MAX));
    }

    #[test]
    fn passwords_are_scrubbed() {
        let url = "redis://user:hunter2@redis:6379/0";
        assert_eq!(
            scrub_password(url, "bad hunter2 thing".into()),
            "bad *** thing"
        );
        assert_eq!(scrub_password("redis://redis", "x".into()), "x");
        assert_eq!(
            scrub_password("rediss://:p%40ss@h/", "p%40ss".into()),
            "***"
        );
    }

    #[test]
    fn describe_hides_the_password() {
        let client = Client::open("redis://user:hunter2@localhost:6390/2").unwrap();
        assert_eq!(describe(&client), "redis://user@localhost:6390/2");
    }
}
