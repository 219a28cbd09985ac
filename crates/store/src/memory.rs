//! The in-memory token store of a standalone sidecar (no `--redis-url`): one process, nothing
//! shared, nothing persisted. A product feature, not a test double: it keeps exactly the
//! semantics of [`crate::RedisStore`] (expiry, atomic refresh swap, single-use codes,
//! paging, reuse detection, revocation events), so behaviour never depends on which store
//! a deployment picked.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::{Future, ready};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::expiry::{self, Remaining};
use crate::{
    ListFilter, Page, Reuse, RevocationEvent, Revocations, StoreError, TokenHash, TokenRecord,
    TokenStore, cursor,
};

/// A full sweep of expired entries runs after this many writes at least, and otherwise after
/// as many writes as there were live entries at the previous sweep. Sweep cost is linear in
/// the store's size, so this keeps it O(1) per write on average, while expired entries that
/// nobody looks up again can never outnumber live ones by much: memory stays bounded.
const SWEEP_MIN_WRITES: usize = 1024;

/// Records [`TokenStore::delete_matching`] examines under one hold of the lock, so that a
/// bulk delete of a huge namespace never blocks every other request for long.
const DELETE_BATCH: usize = 1024;

/// Revocations a subscriber may fall behind by before it is told it lost some.
const REVOCATION_BUFFER: usize = 4096;

/// Tokens in a `Mutex`ed set of maps. Cloning shares the same store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Revoked access tokens, for [`TokenStore::subscribe`]. Sent while the lock is held, so
    /// subscribers see revocations in the order they happened.
    revocations: broadcast::Sender<RevocationEvent>,
}

#[derive(Default)]
struct Inner {
    namespaces: HashMap<String, Namespace>,
    writes_since_sweep: usize,
    live_at_last_sweep: usize,
}

#[derive(Default)]
struct Namespace {
    records: HashMap<Uuid, Entry>,
    access: HashMap<TokenHash, Uuid>,
    refresh: HashMap<TokenHash, Uuid>,
    /// Listing order: `(created_at, id)`, as in Redis.
    index: BTreeSet<(u64, Uuid)>,
    codes: HashMap<TokenHash, Code>,
    /// Refresh tokens retired by a swap, for reuse detection.
    retired: HashMap<TokenHash, Retired>,
}

struct Entry {
    record: TokenRecord,
    /// `None`: lives forever.
    deadline: Option<Instant>,
    /// The access token and its own deadline; `None` once it expired (or when it was
    /// already expired at insert).
    access: Option<(TokenHash, Option<Instant>)>,
    refresh: Option<TokenHash>,
}

struct Code {
    payload: Vec<u8>,
    deadline: Option<Instant>,
}

/// What became of a refresh token that a swap retired.
struct Retired {
    /// The record that replaced the one the token belonged to.
    successor: Uuid,
    /// The successor's refresh token, which may have been retired in turn.
    successor_refresh: Option<TokenHash>,
    retired_at: Instant,
    /// When the retired token would have expired: the old record's deadline.
    deadline: Option<Instant>,
}

// === impl MemoryStore ===

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            revocations: broadcast::channel(REVOCATION_BUFFER).0,
        }
    }

    /// Tells subscribers that these access tokens of `namespace` no longer hold.
    fn publish(&self, namespace: &str, revoked: Vec<TokenHash>) {
        for access in revoked {
            // An error only means nobody subscribes.
            let _ = self.revocations.send(RevocationEvent::Revoked {
                namespace: namespace.to_owned(),
                access,
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the maps half-updated in a way that
        // matters (every operation is a handful of map inserts and removals, which do not
        // panic midway), so a poisoned lock is still safe to use; refusing every request
        // for the rest of the process would be worse.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        let records: usize = inner.namespaces.values().map(|ns| ns.records.len()).sum();
        f.debug_struct("MemoryStore")
            .field("namespaces", &inner.namespaces.len())
            .field("records", &records)
            .finish()
    }
}

impl TokenStore for MemoryStore {
    fn insert(
        &self,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        let now = Instant::now();
        let ns = inner
            .namespaces
            .entry(record.namespace.clone())
            .or_default();
        let mut revoked = Vec::new();
        ns.revoke(record.id, Some(access), now, &mut revoked);
        ns.store(record, access, refresh, now);
        inner.wrote();
        self.publish(&record.namespace, revoked);
        ready(Ok(()))
    }

    fn find_access(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send {
        let mut inner = self.lock();
        let found = inner
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.find_access(access, Instant::now()));
        ready(Ok(found))
    }

    fn find_refresh(
        &self,
        namespace: &str,
        refresh: &TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send {
        let mut inner = self.lock();
        let found = inner.namespaces.get_mut(namespace).and_then(|ns| {
            let id = ns.live_refresh(refresh, Instant::now())?;
            ns.records.get(&id).map(|entry| entry.record.clone())
        });
        ready(Ok(found))
    }

    fn swap_refresh(
        &self,
        namespace: &str,
        old_refresh: &TokenHash,
        new: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut revoked = Vec::new();
        let swapped = match inner.namespaces.get_mut(namespace) {
            Some(ns) => match ns.live_refresh(old_refresh, now) {
                Some(old_id) => {
                    // Under one lock, so no other call sees the state in between, and a
                    // second swap with the same old token finds it gone.
                    let old = ns.revoke(old_id, Some(access), now, &mut revoked);
                    ns.revoke(new.id, Some(access), now, &mut revoked);
                    ns.store(new, access, refresh, now);
                    // Kong's reuse_refresh_token keeps the refresh token: nothing retired.
                    if refresh != Some(old_refresh)
                        && let Some(old) = old
                    {
                        ns.retired.insert(
                            *old_refresh,
                            Retired {
                                successor: new.id,
                                successor_refresh: refresh.copied(),
                                retired_at: now,
                                deadline: old.deadline,
                            },
                        );
                    }
                    true
                }
                None => false,
            },
            None => false,
        };
        if swapped {
            inner.wrote();
        }
        self.publish(namespace, revoked);
        ready(Ok(swapped))
    }

    fn get(
        &self,
        namespace: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send {
        let mut inner = self.lock();
        let found = inner
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.live_record(id, Instant::now()))
            .cloned();
        ready(Ok(found))
    }

    fn list(
        &self,
        namespace: &str,
        filter: &ListFilter,
        size: usize,
        offset: Option<&str>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send {
        ready(self.list_sync(namespace, filter, size, offset))
    }

    fn delete(
        &self,
        namespace: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut revoked = Vec::new();
        let deleted = inner
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.revoke(id, None, now, &mut revoked))
            .is_some();
        self.publish(namespace, revoked);
        ready(Ok(deleted))
    }

    fn delete_matching(
        &self,
        namespace: &str,
        filter: &ListFilter,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send {
        ready(Ok(self.delete_matching_sync(namespace, filter)))
    }

    fn revoke_on_reuse(
        &self,
        namespace: &str,
        refresh: &TokenHash,
        grace_secs: u32,
    ) -> impl Future<Output = Result<Reuse, StoreError>> + Send {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut revoked = Vec::new();
        let reuse = match inner.namespaces.get_mut(namespace) {
            Some(ns) => ns.revoke_on_reuse(refresh, grace_secs, now, &mut revoked),
            None => Reuse::NotRetired,
        };
        self.publish(namespace, revoked);
        ready(Ok(reuse))
    }

    fn subscribe(&self) -> impl Future<Output = Result<Revocations, StoreError>> + Send {
        ready(Ok(Revocations::from_broadcast(
            self.revocations.subscribe(),
        )))
    }

    fn put_code(
        &self,
        namespace: &str,
        code: &TokenHash,
        payload: &[u8],
        ttl_secs: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut inner = self.lock();
        let now = Instant::now();
        let deadline = if ttl_secs == 0 {
            None
        } else {
            now.checked_add(std::time::Duration::from_secs(ttl_secs.into()))
        };
        let ns = inner.namespaces.entry(namespace.to_owned()).or_default();
        ns.codes.insert(
            *code,
            Code {
                payload: payload.to_vec(),
                deadline,
            },
        );
        inner.wrote();
        ready(Ok(()))
    }

    fn find_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        let inner = self.lock();
        let now = Instant::now();
        let payload = inner
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.codes.get(code))
            .filter(|code| alive(code.deadline, now))
            .map(|code| code.payload.clone());
        ready(Ok(payload))
    }

    fn take_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        let mut inner = self.lock();
        let now = Instant::now();
        let payload = inner
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.codes.remove(code))
            .filter(|code| alive(code.deadline, now))
            .map(|code| code.payload);
        ready(Ok(payload))
    }
}

impl MemoryStore {
    fn delete_matching_sync(&self, namespace: &str, filter: &ListFilter) -> usize {
        let mut deleted = 0;
        let mut lower = Bound::Unbounded;
        loop {
            let mut inner = self.lock();
            let Some(ns) = inner.namespaces.get_mut(namespace) else {
                break;
            };
            let now = Instant::now();
            let batch: Vec<(u64, Uuid)> = ns
                .index
                .range((lower, Bound::Unbounded))
                .take(DELETE_BATCH)
                .copied()
                .collect();
            let Some(&last) = batch.last() else {
                break;
            };
            lower = Bound::Excluded(last);
            let mut revoked = Vec::new();
            for (_, id) in &batch {
                let Some(entry) = ns.records.get(id) else {
                    continue;
                };
                if !alive(entry.deadline, now) {
                    ns.retire(*id);
                } else if filter.matches(&entry.record) {
                    ns.revoke(*id, None, now, &mut revoked);
                    deleted += 1;
                }
            }
            self.publish(namespace, revoked);
            // Let other requests in between batches.
            drop(inner);
            if batch.len() < DELETE_BATCH {
                break;
            }
        }
        deleted
    }

    fn list_sync(
        &self,
        namespace: &str,
        filter: &ListFilter,
        size: usize,
        offset: Option<&str>,
    ) -> Result<Page, StoreError> {
        let start = offset.map(cursor::decode).transpose()?;
        let size = size.max(1);
        let mut inner = self.lock();
        let Some(ns) = inner.namespaces.get_mut(namespace) else {
            return Ok(Page::default());
        };
        let now = Instant::now();
        let lower = start.map_or(Bound::Unbounded, Bound::Excluded);
        let mut records = Vec::new();
        let mut more = false;
        let mut dead = Vec::new();
        for &(_, id) in ns.index.range((lower, Bound::Unbounded)) {
            let Some(entry) = ns.records.get(&id).filter(|e| alive(e.deadline, now)) else {
                dead.push(id);
                continue;
            };
            if !filter.matches(&entry.record) {
                continue;
            }
            if records.len() == size {
                // One more match exists: the page is not the last.
                more = true;
                break;
            }
            records.push(entry.record.clone());
        }
        for id in dead {
            ns.retire(id);
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
}

// === impl Inner ===

impl Inner {
    /// Counts a write, and sweeps when enough writes have happened (see `SWEEP_MIN_WRITES`).
    fn wrote(&mut self) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= SWEEP_MIN_WRITES.max(self.live_at_last_sweep) {
            self.sweep(Instant::now());
        }
    }

    fn sweep(&mut self, now: Instant) {
        let mut live = 0;
        for ns in self.namespaces.values_mut() {
            live += ns.sweep(now);
        }
        self.namespaces.retain(|_, ns| !ns.is_empty());
        self.writes_since_sweep = 0;
        self.live_at_last_sweep = live;
    }
}

// === impl Namespace ===

impl Namespace {
    /// Stores `record` with its tokens, as far as they are not already expired.
    fn store(
        &mut self,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
        now: Instant,
    ) {
        let lifetimes = expiry::lifetimes(record, expiry::now_ms());
        let Some(deadline) = deadline_of(lifetimes.record, now) else {
            return;
        };
        let access = deadline_of(lifetimes.access, now).map(|d| (*access, d));
        if let Some((hash, _)) = access {
            self.access.insert(hash, record.id);
        }
        if let Some(hash) = refresh {
            self.refresh.insert(*hash, record.id);
        }
        self.index.insert((record.created_at, record.id));
        self.records.insert(
            record.id,
            Entry {
                record: record.clone(),
                deadline,
                access,
                refresh: refresh.copied(),
            },
        );
    }

    /// Removes record `id` as [`Namespace::retire`] does, and adds its access token to
    /// `revoked` if it was still valid (unless it is `keep`, which stays valid). `None` when
    /// there was no live record `id`.
    fn revoke(
        &mut self,
        id: Uuid,
        keep: Option<&TokenHash>,
        now: Instant,
        revoked: &mut Vec<TokenHash>,
    ) -> Option<Entry> {
        let entry = self.retire(id)?;
        if !alive(entry.deadline, now) {
            return None;
        }
        if let Some((hash, deadline)) = entry.access
            && alive(deadline, now)
            && keep != Some(&hash)
        {
            revoked.push(hash);
        }
        Some(entry)
    }

    /// See [`TokenStore::revoke_on_reuse`].
    fn revoke_on_reuse(
        &mut self,
        refresh: &TokenHash,
        grace_secs: u32,
        now: Instant,
        revoked: &mut Vec<TokenHash>,
    ) -> Reuse {
        if self.live_refresh(refresh, now).is_some() {
            return Reuse::NotRetired;
        }
        let Some(retired) = self.retired.get(refresh) else {
            return Reuse::NotRetired;
        };
        if !alive(retired.deadline, now) {
            self.retired.remove(refresh);
            return Reuse::NotRetired;
        }
        if grace_secs > 0
            && now.saturating_duration_since(retired.retired_at)
                < Duration::from_secs(grace_secs.into())
        {
            return Reuse::WithinGrace;
        }
        // Follow the chain of successors to its end, deleting every record on the way.
        let mut records = 0;
        let mut seen = HashSet::from([*refresh]);
        let mut next = Some((retired.successor, retired.successor_refresh));
        while let Some((id, successor_refresh)) = next.take() {
            if self.revoke(id, None, now, revoked).is_some() {
                records += 1;
            }
            next = successor_refresh
                .filter(|hash| seen.insert(*hash))
                .and_then(|hash| self.retired.get(&hash))
                .filter(|retired| alive(retired.deadline, now))
                .map(|retired| (retired.successor, retired.successor_refresh));
        }
        Reuse::Revoked { records }
    }

    /// Removes a record with everything that points at it, live or not.
    fn retire(&mut self, id: Uuid) -> Option<Entry> {
        let entry = self.records.remove(&id)?;
        if let Some((hash, _)) = entry.access
            && self.access.get(&hash) == Some(&id)
        {
            self.access.remove(&hash);
        }
        if let Some(hash) = entry.refresh
            && self.refresh.get(&hash) == Some(&id)
        {
            self.refresh.remove(&hash);
        }
        self.index.remove(&(entry.record.created_at, id));
        Some(entry)
    }

    /// The live record `id`, purging it when it expired.
    fn live_record(&mut self, id: Uuid, now: Instant) -> Option<&TokenRecord> {
        let live = alive(self.records.get(&id)?.deadline, now);
        if !live {
            self.retire(id);
            return None;
        }
        self.records.get(&id).map(|entry| &entry.record)
    }

    fn find_access(&mut self, hash: &TokenHash, now: Instant) -> Option<TokenRecord> {
        let id = *self.access.get(hash)?;
        let Some(entry) = self.records.get_mut(&id) else {
            self.access.remove(hash);
            return None;
        };
        if !alive(entry.deadline, now) {
            self.retire(id);
            return None;
        }
        match entry.access {
            Some((stored, deadline)) if stored == *hash && alive(deadline, now) => {
                Some(entry.record.clone())
            }
            _ => {
                // The access token expired while its record lives on (for its refresh
                // token): forget the access token alone.
                entry.access = None;
                self.access.remove(hash);
                None
            }
        }
    }

    /// The id of the live record `hash` is the refresh token of.
    fn live_refresh(&mut self, hash: &TokenHash, now: Instant) -> Option<Uuid> {
        let id = *self.refresh.get(hash)?;
        match self.records.get(&id) {
            Some(entry) if entry.refresh.as_ref() == Some(hash) => {
                if alive(entry.deadline, now) {
                    Some(id)
                } else {
                    self.retire(id);
                    None
                }
            }
            _ => {
                self.refresh.remove(hash);
                None
            }
        }
    }

    /// Drops everything expired; returns how many entries remain.
    fn sweep(&mut self, now: Instant) -> usize {
        let dead: Vec<Uuid> = self
            .records
            .iter()
            .filter(|(_, entry)| !alive(entry.deadline, now))
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.retire(id);
        }
        for entry in self.records.values_mut() {
            if let Some((hash, deadline)) = entry.access
                && !alive(deadline, now)
            {
                entry.access = None;
                self.access.remove(&hash);
            }
        }
        self.codes.retain(|_, code| alive(code.deadline, now));
        self.retired
            .retain(|_, retired| alive(retired.deadline, now));
        self.records.len() + self.codes.len() + self.retired.len()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.codes.is_empty() && self.retired.is_empty()
    }
}

// === helpers ===

fn alive(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_none_or(|deadline| now < deadline)
}

/// `None`: already expired; `Some(None)`: forever.
fn deadline_of(remaining: Remaining, now: Instant) -> Option<Option<Instant>> {
    match remaining {
        Remaining::Expired => None,
        Remaining::Forever => Some(None),
        // An `Instant` too far away to represent is as good as forever.
        Remaining::For(left) => Some(now.checked_add(left)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(namespace: &str, ttl: u32) -> TokenRecord {
        TokenRecord {
            id: Uuid::new_v4(),
            namespace: namespace.into(),
            credential_id: Uuid::new_v4(),
            client_id: "client".into(),
            service_id: None,
            authenticated_userid: None,
            scope: String::new(),
            expires_in: ttl,
            created_at: expiry::now_ms(),
            ttl,
        }
    }

    /// Expired entries nobody asks for again are swept, so memory stays bounded.
    #[tokio::test]
    async fn sweep_drops_expired_entries() {
        let store = MemoryStore::new();
        // Already expired at insert: created long ago.
        let mut old = record("ns", 1);
        old.created_at = 0;
        store
            .insert(&old, &TokenHash::of("old"), None)
            .await
            .unwrap();
        let keep = record("ns", 0);
        store
            .insert(&keep, &TokenHash::of("keep"), None)
            .await
            .unwrap();
        // Expires after insert; never looked up again.
        let mut short = record("ns", 1);
        short.created_at = expiry::now_ms() - 999;
        let short_hash = TokenHash::of("short");
        store.insert(&short, &short_hash, None).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        for i in 0..SWEEP_MIN_WRITES {
            store
                .put_code("other", &TokenHash::of(&i.to_string()), b"x", 1)
                .await
                .unwrap();
        }
        let inner = store.lock();
        let ns = &inner.namespaces["ns"];
        assert_eq!(ns.records.len(), 1);
        assert!(ns.records.contains_key(&keep.id));
        assert_eq!(ns.access.len(), 1);
        assert_eq!(ns.index.len(), 1);
    }
}
