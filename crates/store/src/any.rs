//! Runtime choice between the stores: the sidecar picks [`MemoryStore`] or [`RedisStore`]
//! from its flags, and the rest of the code stays generic over one concrete type.

use uuid::Uuid;

use crate::{
    ListFilter, MemoryStore, Page, RedisStore, Reuse, Revocations, StoreError, TokenHash,
    TokenRecord, TokenStore,
};

/// Either store, delegating every call. Cloning shares the underlying store.
#[derive(Clone)]
pub enum AnyTokenStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl std::fmt::Debug for AnyTokenStore {
    // Each store's own `Debug` is credential-free (RedisStore shows its target without the
    // password), so delegating keeps this one credential-free too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnyTokenStore::Memory(store) => f.debug_tuple("Memory").field(store).finish(),
            AnyTokenStore::Redis(store) => f.debug_tuple("Redis").field(store).finish(),
        }
    }
}

impl From<MemoryStore> for AnyTokenStore {
    fn from(store: MemoryStore) -> Self {
        AnyTokenStore::Memory(store)
    }
}

impl From<RedisStore> for AnyTokenStore {
    fn from(store: RedisStore) -> Self {
        AnyTokenStore::Redis(store)
    }
}

/// `$call` on whichever store this is.
macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyTokenStore::Memory($store) => $call.await,
            AnyTokenStore::Redis($store) => $call.await,
        }
    };
}

impl TokenStore for AnyTokenStore {
    async fn insert(
        &self,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.insert(record, access, refresh))
    }

    async fn find_access(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.find_access(namespace, access))
    }

    async fn find_refresh(
        &self,
        namespace: &str,
        refresh: &TokenHash,
    ) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.find_refresh(namespace, refresh))
    }

    async fn swap_refresh(
        &self,
        namespace: &str,
        old_refresh: &TokenHash,
        new: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.swap_refresh(namespace, old_refresh, new, access, refresh))
    }

    async fn get(&self, namespace: &str, id: Uuid) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.get(namespace, id))
    }

    async fn list(
        &self,
        namespace: &str,
        filter: &ListFilter,
        size: usize,
        offset: Option<&str>,
    ) -> Result<Page, StoreError> {
        delegate!(self, s => s.list(namespace, filter, size, offset))
    }

    async fn delete(&self, namespace: &str, id: Uuid) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete(namespace, id))
    }

    async fn delete_matching(
        &self,
        namespace: &str,
        filter: &ListFilter,
    ) -> Result<usize, StoreError> {
        delegate!(self, s => s.delete_matching(namespace, filter))
    }

    async fn revoke_on_reuse(
        &self,
        namespace: &str,
        refresh: &TokenHash,
        grace_secs: u32,
    ) -> Result<Reuse, StoreError> {
        delegate!(self, s => s.revoke_on_reuse(namespace, refresh, grace_secs))
    }

    async fn subscribe(&self) -> Result<Revocations, StoreError> {
        delegate!(self, s => s.subscribe())
    }

    async fn put_code(
        &self,
        namespace: &str,
        code: &TokenHash,
        payload: &[u8],
        ttl_secs: u32,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.put_code(namespace, code, payload, ttl_secs))
    }

    async fn find_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        delegate!(self, s => s.find_code(namespace, code))
    }

    async fn take_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        delegate!(self, s => s.take_code(namespace, code))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping())
    }
}
