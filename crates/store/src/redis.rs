//! The shared token store: Redis, so that every sidecar of every pod accepts a token any
//! other issued. Works with plain `redis://`, `rediss://` (TLS, rustls with ring, with a
//! private CA and a client certificate when asked), AUTH from the URL, Redis Cluster (the URL
//! then names any node, and the store notices at connect time that it speaks to a cluster and
//! follows its topology from there), and Sentinel (`redis+sentinel://`: the store follows the
//! master the sentinels name, see the `sentinel` module).
//!
//! # Key layout
//!
//! Every key of a namespace starts with the hash tag `{tg:<ns>}` (`<ns>` escaped, see
//! `layout::Keys`), so Redis Cluster puts all of them in one slot and the multi-key scripts below
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
use std::sync::Arc;

use redis::{AsyncCommands, Client, RedisError, Script};
use uuid::Uuid;

use crate::expiry;
use crate::redis_tls::RedisTls;
use crate::seal::{Sealer, StoreKeys};
use crate::{
    ListFilter, Page, Reuse, Revocations, StoreError, TokenHash, TokenRecord, TokenStore, cursor,
};

/// The channel name, as a literal so that the scripts can embed it.
macro_rules! revocation_channel {
    () => {
        "tollgate:revoked"
    };
}

mod connection;
mod layout;
mod scripts;
mod sentinel;
mod subscriber;

use connection::{Conn, Connected};
pub use layout::REVOCATION_CHANNEL;
use layout::{Keys, access_still_valid, decode, member, member_id, ttl_arg};
use scripts::SCRIPTS;

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

// === impl RedisStore ===

impl RedisStore {
    /// Connects to `redis://[user:password@]host[:port][/db]` or `rediss://…` (TLS, checked
    /// against the system's root certificates). Fails when Redis cannot be reached now; later
    /// outages are survived (requests fail with [`StoreError::Unavailable`] meanwhile).
    ///
    /// Values are sealed and verified with `keys`: a namespace without a key can neither
    /// store nor find anything.
    pub async fn connect(url: &str, keys: StoreKeys) -> Result<Self, StoreError> {
        Self::connect_tls(url, &RedisTls::default(), keys).await
    }

    /// Like [`RedisStore::connect`], trusting only `ca_pem` (a PEM bundle) for `rediss://`:
    /// for a Redis whose certificate comes from a private CA, e.g. cert-manager's.
    pub async fn connect_with_ca(
        url: &str,
        ca_pem: &[u8],
        keys: StoreKeys,
    ) -> Result<Self, StoreError> {
        let tls = RedisTls::default()
            .with_ca(ca_pem)
            .map_err(|e| StoreError::Unavailable(format!("the CA bundle {e}")))?;
        Self::connect_tls(url, &tls, keys).await
    }

    /// Like [`RedisStore::connect`], with the TLS material of `tls` (`--redis-ca`,
    /// `--redis-client-cert`, `--redis-client-key`) for `rediss://` and
    /// `rediss+sentinel://`. Also takes `redis+sentinel://` URLs: see the `sentinel` module.
    pub async fn connect_tls(
        url: &str,
        tls: &RedisTls,
        keys: StoreKeys,
    ) -> Result<Self, StoreError> {
        let Connected {
            conn,
            target,
            client,
        } = connection::connect(url, tls).await?;
        Ok(Self {
            conn,
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
        let origin = match &self.conn {
            Conn::Single(_) => subscriber::Origin::Node,
            Conn::Cluster(cluster) => subscriber::Origin::Cluster(cluster.clone()),
            Conn::Sentinel(sentinel) => subscriber::Origin::Sentinel(sentinel.clone()),
        };
        subscriber::subscribe(Client::clone(&self.pubsub), origin, self.target.clone()).await
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

#[cfg(test)]
mod tests;
