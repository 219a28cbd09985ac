//! Where tokens live. One trait, [`TokenStore`], and two implementations:
//! [`MemoryStore`] for a standalone sidecar, and [`RedisStore`], shared by every sidecar of
//! every pod so that any replica accepts a token any other issued.
//!
//! Neither implementation ever holds a token in the clear: callers pass [`TokenHash`]es,
//! and the admin API names tokens by their record `id`.
//!
//! Besides storing tokens, a store tells whoever listens which access tokens stopped being
//! valid before their time ([`TokenStore::subscribe`]), so that sidecars can cache
//! validations and still see a revocation at once.
#![forbid(unsafe_code)]

mod any;
mod cursor;
mod expiry;
mod memory;
mod redis;
mod redis_tls;
mod revocations;
mod seal;
mod url;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::any::AnyTokenStore;
pub use crate::memory::MemoryStore;
pub use crate::redis::{REVOCATION_CHANNEL, RedisStore};
pub use crate::redis_tls::RedisTls;
pub use crate::revocations::{RevocationEvent, Revocations};
pub use crate::seal::{KeyError, KeyPair, MIN_KEY_LEN, StoreKey, StoreKeys};
pub use crate::url::{RedisEndpoint, RedisUrl, SENTINEL_DEFAULT_PORT, SentinelUrl};

/// SHA-256 of a token (access, refresh or authorization code). The only form in which a
/// token reaches a store.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

/// What the store keeps about one issued token: the fields of Kong's `oauth2_tokens` entity,
/// without the token values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Kong's token `id`; the admin API finds and deletes tokens by it.
    pub id: Uuid,
    /// The namespace plays the part of a Kong workspace.
    pub namespace: String,
    /// The OAuthApplication's id (Kong's `credential_id`).
    pub credential_id: Uuid,
    /// The OAuthApplication's client id, kept for filtering and introspection.
    pub client_id: String,
    /// The OAuthService the token is bound to; `None` for global credentials.
    pub service_id: Option<Uuid>,
    pub authenticated_userid: Option<String>,
    /// Space-separated granted scopes; empty when none.
    pub scope: String,
    /// Lifetime of the access token in seconds, from `created_at`; 0 = never expires.
    pub expires_in: u32,
    /// Epoch milliseconds, as Kong's admin API shows it.
    pub created_at: u64,
    /// Lifetime of the whole record (and of its refresh token) in seconds; 0 = forever.
    pub ttl: u32,
}

/// Narrows a listing; every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub authenticated_userid: Option<String>,
    pub client_id: Option<String>,
    pub service_id: Option<Uuid>,
}

/// One page of a listing, in a stable order (oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub records: Vec<TokenRecord>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_offset: Option<String>,
}

/// What [`TokenStore::revoke_on_reuse`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Not a refresh token this store retired: unknown, still live, or retired so long ago
    /// that its own lifetime is over. Nothing changed.
    NotRetired,
    /// Retired by a refresh less than the grace window ago (a client that retried, or two
    /// tabs refreshing at once). Nothing changed.
    WithinGrace,
    /// Retired before the grace window: every record that succeeded it, directly or through
    /// further refreshes, was deleted with its tokens. `records` counts those still alive; 0
    /// when the chain was already gone (expired, deleted, or revoked by an earlier reuse).
    Revoked { records: usize },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store could not be reached or refused the command. Requests that need it
    /// fail with 503 rather than being let through.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("token store holds a corrupt value: {0}")]
    Corrupt(String),
    /// The caller passed a paging cursor this store did not make.
    #[error("invalid offset")]
    InvalidOffset,
}

/// The operations the OAuth endpoints, the proxy and the admin API need.
///
/// Expiry is enforced by the store: an expired access token, refresh token, record or code
/// is never returned. Every method is safe to call concurrently from many sidecars.
pub trait TokenStore: Send + Sync + 'static {
    /// Stores a newly issued token. The access token lives `record.expires_in` seconds (forever
    /// when 0, bounded by the record); the record and its refresh token live `record.ttl`
    /// seconds (forever when 0).
    ///
    /// Both lifetimes count from `record.created_at` (the issuer's clock), so an imported
    /// token keeps its original deadlines; a part already expired is not stored at all.
    /// Inserting a record whose `id` exists replaces it, with its old tokens.
    fn insert(
        &self,
        record: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The record of a live access token; `None` for unknown, expired or revoked tokens.
    /// One round trip on Redis: this runs on every proxied request.
    fn find_access(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// [`TokenStore::find_access`], with the record shared rather than owned, for callers
    /// that only read it. A store that keeps records in memory, such as the sidecar's
    /// validation cache, hands out its own copy, with no field cloned.
    fn find_access_shared(
        &self,
        namespace: &str,
        access: &TokenHash,
    ) -> impl Future<Output = Result<Option<Arc<TokenRecord>>, StoreError>> + Send {
        async move { Ok(self.find_access(namespace, access).await?.map(Arc::new)) }
    }

    /// The record a live refresh token belongs to.
    fn find_refresh(
        &self,
        namespace: &str,
        refresh: &TokenHash,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// Atomically retires the record `old_refresh` belongs to (its record, access token and
    /// refresh token) and stores `new` in its place. Returns `false`, changing nothing, when
    /// `old_refresh` is no longer live: of two concurrent refreshes only one wins.
    ///
    /// `new` may keep the old record's `id` and `refresh` may equal `old_refresh`
    /// (Kong's `reuse_refresh_token`). `new` is stored in `namespace`: its own `namespace`
    /// field should say the same.
    ///
    /// When `refresh` differs from `old_refresh`, the store remembers, for as long as the old
    /// record would have lived, that `old_refresh` was retired and which record succeeded it:
    /// see [`TokenStore::revoke_on_reuse`]. The old access token is published as revoked.
    fn swap_refresh(
        &self,
        namespace: &str,
        old_refresh: &TokenHash,
        new: &TokenRecord,
        access: &TokenHash,
        refresh: Option<&TokenHash>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn get(
        &self,
        namespace: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// Up to `size` records of `namespace` matching `filter`, starting at `offset` (a cursor
    /// from a previous page). Ordered by `created_at`, then `id`; the cursor names a position
    /// in that order, so records deleted or added between pages never make a page skip or
    /// repeat one. `size` 0 is taken as 1. An offset this store did not make is
    /// [`StoreError::InvalidOffset`].
    fn list(
        &self,
        namespace: &str,
        filter: &ListFilter,
        size: usize,
        offset: Option<&str>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Deletes a record with its access and refresh tokens. `false` when there was none.
    fn delete(
        &self,
        namespace: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes every record of `namespace` matching `filter` (every record, when the filter
    /// is empty) with its tokens, and returns how many there were. Works through the
    /// namespace in bounded batches, each atomic on its own: a record issued while this runs
    /// may or may not be deleted.
    fn delete_matching(
        &self,
        namespace: &str,
        filter: &ListFilter,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Refresh-token reuse detection (OAuth 2.0 Security BCP, section 4.14). Call it with a
    /// refresh token that did not refresh: if this store retired it in a
    /// [`TokenStore::swap_refresh`] more than `grace_secs` ago, someone replayed an old
    /// token, so the whole chain of records that succeeded it is deleted, atomically, and
    /// their access tokens are published as revoked. Within the grace window (never, when 0)
    /// nothing changes. A refresh token that is still live is [`Reuse::NotRetired`].
    fn revoke_on_reuse(
        &self,
        namespace: &str,
        refresh: &TokenHash,
        grace_secs: u32,
    ) -> impl Future<Output = Result<Reuse, StoreError>> + Send;

    /// Listens for access tokens that stop being valid before their time: by
    /// [`TokenStore::delete`], [`TokenStore::delete_matching`], [`TokenStore::swap_refresh`]
    /// (the old access token), [`TokenStore::revoke_on_reuse`], and an insert that replaces
    /// a record. Expiry is not announced. With Redis, this hears every sidecar sharing it.
    ///
    /// Returns once the subscription is in place (an error if Redis cannot be reached now,
    /// or is older than 6, which subscribing needs); its first event is
    /// [`RevocationEvent::Subscribed`]. After that, whenever the
    /// subscription is lost, [`RevocationEvent::Lost`] comes first, and
    /// [`RevocationEvent::Subscribed`] once it is back: whatever was cached in between may
    /// be stale. Dropping the [`Revocations`] ends the subscription.
    fn subscribe(&self) -> impl Future<Output = Result<Revocations, StoreError>> + Send;

    /// Stores an authorization code's payload (opaque to the store) for `ttl_secs` (forever
    /// when 0, as every other lifetime here).
    fn put_code(
        &self,
        namespace: &str,
        code: &TokenHash,
        payload: &[u8],
        ttl_secs: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A code's payload, left in place: a failed exchange does not use the code up.
    fn find_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Returns and deletes a code's payload in one step, so a code is usable once.
    fn take_code(
        &self,
        namespace: &str,
        code: &TokenHash,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Checks that the store can serve requests (for `/readyz`): a round trip to Redis,
    /// always fine in memory.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }
}

// === impl ListFilter ===

impl ListFilter {
    /// Whether `record` passes every condition that is set.
    pub fn matches(&self, record: &TokenRecord) -> bool {
        self.authenticated_userid
            .as_ref()
            .is_none_or(|user| record.authenticated_userid.as_ref() == Some(user))
            && self
                .client_id
                .as_ref()
                .is_none_or(|client| &record.client_id == client)
            && self
                .service_id
                .is_none_or(|service| record.service_id == Some(service))
    }
}

// === impl TokenHash ===

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash whose [`TokenHash::to_hex`] is `hex` (either case); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl std::fmt::Debug for TokenHash {
    // A hash is not a credential, but a short prefix is all a log reader needs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}
