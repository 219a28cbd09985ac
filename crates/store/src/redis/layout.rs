//! How the store lays its data out in Redis (the table is in the parent module's docs): the
//! names of a namespace's keys, index members, revocation payloads, and records and
//! lifetimes as the scripts take them.

use std::time::Duration;

use uuid::Uuid;

use crate::expiry::{self, Remaining};
use crate::seal::SEAL_PREFIX;
use crate::{StoreError, TokenHash, TokenRecord};

/// The Redis pub/sub channel on which the scripts publish revoked access tokens: one channel
/// for every namespace. Payload: `<escaped namespace> <lowercase hex SHA-256>`; see the
/// module documentation.
pub const REVOCATION_CHANNEL: &str = revocation_channel!();

/// How far the clocks of the sidecar that issued a token and of the one reading it may
/// disagree before the reader counts the token's lifetime over by its own clock.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Where a sealed value's payload starts, for the scripts (Lua counts from 1).
pub(super) const PAYLOAD_AT: usize = SEAL_PREFIX + 1;

/// The names of one namespace's keys.
pub(super) struct Keys {
    /// `{tg:<ns>}:`, also passed to scripts, which build the keys they discover.
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Self {
        // Kubernetes namespaces are DNS labels and come out unchanged. Anything else is
        // percent-escaped so that no namespace can close the hash tag early (`}`) or make
        // its keys collide with another namespace's (`:`); escaping `%` keeps it one-to-one.
        Self {
            prefix: format!("{{tg:{}}}:", escape_namespace(namespace)),
        }
    }

    pub(super) fn access(&self, hash: &TokenHash) -> String {
        format!("{}at:{}", self.prefix, hash.to_hex())
    }

    pub(super) fn refresh(&self, hash: &TokenHash) -> String {
        format!("{}rt:{}", self.prefix, hash.to_hex())
    }

    pub(super) fn record(&self, id: Uuid) -> String {
        format!("{}tok:{id}", self.prefix)
    }

    pub(super) fn index(&self) -> String {
        format!("{}idx", self.prefix)
    }

    pub(super) fn code(&self, hash: &TokenHash) -> String {
        format!("{}code:{}", self.prefix, hash.to_hex())
    }

    pub(super) fn retired(&self, hash: &TokenHash) -> String {
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
/// `namespace` is revoked. The scripts build the same (see `revoked` in the scripts' prelude).
#[cfg(test)]
pub(super) fn revocation_payload(namespace: &str, access: &TokenHash) -> String {
    format!("{} {}", escape_namespace(namespace), access.to_hex())
}

/// Reads a payload of [`REVOCATION_CHANNEL`]; `None` for anything else.
pub(super) fn parse_revocation(payload: &[u8]) -> Option<(String, TokenHash)> {
    let payload = std::str::from_utf8(payload).ok()?;
    let (namespace, access) = payload.split_once(' ')?;
    Some((unescape_namespace(namespace)?, TokenHash::from_hex(access)?))
}

/// A record's member in `idx`/`exp`: zero-padded so that byte order is `(created_at, id)`
/// order (a hyphenated lowercase UUID sorts like its bytes).
pub(super) fn member(created_at: u64, id: Uuid) -> String {
    format!("{created_at:020}:{id}")
}

/// The id in a member; the scripts read it the same way (`string.sub(m, 22)`).
pub(super) fn member_id(member: &str) -> Result<Uuid, StoreError> {
    member
        .get(21..)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("index member {member:?}")))
}

/// A lifetime as the scripts take it: milliseconds, 0 for forever, -1 for already expired.
pub(super) fn ttl_arg(remaining: Remaining) -> i64 {
    match remaining {
        Remaining::Forever => 0,
        Remaining::Expired => -1,
        Remaining::For(left) => i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1),
    }
}

pub(super) fn decode(json: &[u8]) -> Result<TokenRecord, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(format!("token record: {e}")))
}

/// Whether `record`'s access token is still within its lifetime at `now_ms` on this clock,
/// give or take [`CLOCK_SKEW`]. Redis expires the access key by itself; this bounds a
/// genuine value that someone with write access saved and put back after a revocation.
pub(super) fn access_still_valid(record: &TokenRecord, now_ms: u64) -> bool {
    let skew = u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
    let now = now_ms.saturating_sub(skew);
    expiry::lifetimes(record, now).access != Remaining::Expired
}
