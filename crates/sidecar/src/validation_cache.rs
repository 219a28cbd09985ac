//! A bounded cache of access-token lookups in front of the shared store, so a request with a
//! token seen recently costs no Redis round trip.
//!
//! Only live tokens are cached, never "not found": a token issued by another replica a
//! moment ago must work at once. Revocations come from the store's channel and evict at once;
//! when that channel is lost, the whole cache is dropped and nothing is cached again until it
//! is back, so a revocation can never be missed. Every cached record is still checked against
//! the current snapshot and clock on each request (binding, expiry, application).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use tollgate_store::{
    ListFilter, Page, Reuse, RevocationEvent, Revocations, StoreError, TokenHash, TokenRecord,
    TokenStore,
};
use uuid::Uuid;

/// How long to wait before subscribing again after the store refused a subscription.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// The store, with cached `find_access`.
#[derive(Clone)]
pub struct CachedStore<S> {
    inner: S,
    cache: Option<Arc<ValidationCache>>,
}

pub struct ValidationCache {
    /// Keyed by the hash alone: 256-bit random tokens do not collide across namespaces, and a
    /// hit is checked against the asking namespace, so the hot path allocates no key.
    entries: Cache<TokenHash, Arc<TokenRecord>>,
    /// Record id → entry, so this sidecar's own deletes and refreshes evict at once, without
    /// waiting for their message to come back from Redis.
    by_id: Cache<Uuid, TokenHash>,
    /// False while revocations cannot be heard: nothing is served from or put in the cache.
    live: AtomicBool,
    /// Bumped by every revocation. A lookup started before a revocation must not cache what
    /// it read, as the revocation may be of that very token.
    epoch: AtomicU64,
}

// === impl CachedStore ===

impl<S: TokenStore + Clone> CachedStore<S> {
    /// `capacity` 0 turns the cache off. A cache starts dark and lights up once the
    /// revocation channel is subscribed (see [`CachedStore::follow_revocations`]).
    pub fn new(inner: S, capacity: u64, ttl: Duration) -> Self {
        let cache = (capacity > 0).then(|| {
            Arc::new(ValidationCache {
                entries: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                by_id: Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    .build(),
                live: AtomicBool::new(false),
                epoch: AtomicU64::new(0),
            })
        });
        Self { inner, cache }
    }

    pub fn is_enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Forgets the token of record `id` now; used after this sidecar removed it.
    fn evict_id(&self, id: Uuid) {
        if let Some(cache) = &self.cache {
            cache.epoch.fetch_add(1, Ordering::AcqRel);
            if let Some(key) = cache.by_id.remove(&id) {
                cache.entries.invalidate(&key);
            }
        }
    }

    /// Forgets everything; used after bulk removals, which are rare.
    fn evict_all(&self) {
        if let Some(cache) = &self.cache {
            cache.epoch.fetch_add(1, Ordering::AcqRel);
            cache.entries.invalidate_all();
            cache.by_id.invalidate_all();
        }
    }

    /// Applies the store's revocation channel to the cache until `stop` fires. Runs for the
    /// life of the process.
    pub async fn follow_revocations(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(cache) = self.cache.clone() else {
            return;
        };
        loop {
            let subscription = tokio::select! {
                s = self.inner.subscribe() => s,
                _ = stop.wait_for(|s| *s) => return,
            };
            match subscription {
                Ok(revocations) => {
                    tokio::select! {
                        () = apply(&cache, revocations) => {},
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot hear revocations: serving without the validation cache");
                    cache.go_dark();
                }
            }
            tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

async fn apply(cache: &ValidationCache, mut revocations: Revocations) {
    while let Some(event) = revocations.next().await {
        match event {
            RevocationEvent::Revoked { access, .. } => {
                cache.epoch.fetch_add(1, Ordering::AcqRel);
                cache.entries.invalidate(&access);
            }
            RevocationEvent::Lost => {
                tracing::warn!("lost the revocation channel: dropped the validation cache");
                cache.go_dark();
            }
            RevocationEvent::Subscribed => {
                // Anything cached before the channel came back may have missed a revocation.
                cache.entries.invalidate_all();
                cache.by_id.invalidate_all();
                cache.epoch.fetch_add(1, Ordering::AcqRel);
                cache.live.store(true, Ordering::Release);
                tracing::info!("hearing revocations: the validation cache is on");
            }
        }
    }
    cache.go_dark();
}

impl ValidationCache {
    fn go_dark(&self) {
        self.live.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
        self.by_id.invalidate_all();
    }
}

impl<S: TokenStore + Clone> TokenStore for CachedStore<S> {
    async fn find_access(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let found = self.find_access_shared(namespace, access).await?;
        Ok(found.map(Arc::unwrap_or_clone))
    }

    async fn find_access_shared(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> Result<Option<Arc<TokenRecord>>, StoreError> {
        let Some(cache) = self
            .cache
            .as_ref()
            .filter(|c| c.live.load(Ordering::Acquire))
        else {
            return self.inner.find_access_shared(namespace, access).await;
        };
        if let Some(record) = cache.entries.get(access) {
            return Ok((record.namespace == namespace).then_some(record));
        }
        let epoch = cache.epoch.load(Ordering::Acquire);
        let found = self.inner.find_access_shared(namespace, access).await?;
        if let Some(record) = &found
            && cache.live.load(Ordering::Acquire)
            && cache.epoch.load(Ordering::Acquire) == epoch
        {
            cache.by_id.insert(record.id, *access);
            cache.entries.insert(*access, record.clone());
        }
        Ok(found)
    }

    async fn insert(
        &self,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        self.inner.insert(record, access, refresh).await?;
        // An insert may replace a record with the same id (an import, say).
        self.evict_id(record.id);
        Ok(())
    }

    async fn find_refresh(
        &self,
        namespace: &str,
        refresh: &TokenHash,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.find_refresh(namespace, refresh).await
    }

    async fn swap_refresh(
        &self,
        namespace: &str,
        old_refresh: &TokenHash,
        new: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        // The old access token dies with the swap; find its record first to evict it here.
        let old = match &self.cache {
            Some(_) => self.inner.find_refresh(namespace, old_refresh).await?,
            None => None,
        };
        let swapped = self
            .inner
            .swap_refresh(namespace, old_refresh, new, access, refresh)
            .await?;
        if let Some(old) = old {
            self.evict_id(old.id);
        }
        Ok(swapped)
    }

    async fn get(&self, namespace: &str, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get(namespace, id).await
    }

    async fn list(
        &self,
        namespace: &str,
        filter: &ListFilter,
        size: usize,
        offset: Option<&str>,
    ) -> Result<Page, StoreError> {
        self.inner.list(namespace, filter, size, offset).await
    }

    async fn delete(&self, namespace: &str, id: Uuid) -> Result<bool, StoreError> {
        let deleted = self.inner.delete(namespace, id).await?;
        self.evict_id(id);
        Ok(deleted)
    }

    async fn delete_matching(
        &self,
        namespace: &str,
        filter: &ListFilter,
    ) -> Result<usize, StoreError> {
        let deleted = self.inner.delete_matching(namespace, filter).await?;
        self.evict_all();
        Ok(deleted)
    }

    async fn revoke_on_reuse(
        &self,
        namespace: &str,
        refresh: &TokenHash,
        grace_secs: u32,
    ) -> Result<Reuse, StoreError> {
        let reuse = self
            .inner
            .revoke_on_reuse(namespace, refresh, grace_secs)
            .await?;
        if matches!(reuse, Reuse::Revoked { .. }) {
            self.evict_all();
        }
        Ok(reuse)
    }

    async fn subscribe(&self) -> Result<Revocations, StoreError> {
        self.inner.subscribe().await
    }

    async fn put_code(
        &self,
        namespace: &str,
        code: &TokenHash,
        payload: &[u8],
        ttl_secs: u32,
    ) -> Result<(), StoreError> {
        self.inner
            .put_code(namespace, code, payload, ttl_secs)
            .await
    }

    async fn find_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.find_code(namespace, code).await
    }

    async fn take_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.take_code(namespace, code).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
