//! The opaque paging cursor of [`crate::TokenStore::list`], shared by both stores so that
//! a cursor means the same position whichever store made it.
//!
//! A cursor is the position of the last record of a page in the listing order
//! `(created_at, id)`, hex-encoded: 8 bytes of `created_at` then 16 of `id`. Being a position
//! rather than a count, it is unaffected by records deleted or added between pages.

use uuid::Uuid;

use crate::StoreError;

const LEN: usize = 8 + 16;

pub(crate) fn encode(created_at: u64, id: Uuid) -> String {
    let mut bytes = [0u8; LEN];
    bytes[..8].copy_from_slice(&created_at.to_be_bytes());
    bytes[8..].copy_from_slice(id.as_bytes());
    hex::encode(bytes)
}

pub(crate) fn decode(cursor: &str) -> Result<(u64, Uuid), StoreError> {
    let mut bytes = [0u8; LEN];
    hex::decode_to_slice(cursor, &mut bytes).map_err(|_| StoreError::InvalidOffset)?;
    let (created_at, id) = bytes.split_at(8);
    let created_at = u64::from_be_bytes(
        created_at
            .try_into()
            .map_err(|_| StoreError::InvalidOffset)?,
    );
    let id = Uuid::from_slice(id).map_err(|_| StoreError::InvalidOffset)?;
    Ok((created_at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let id = Uuid::new_v4();
        let cursor = encode(1_700_000_000_123, id);
        assert_eq!(decode(&cursor).ok(), Some((1_700_000_000_123, id)));
        for garbage in ["", "zz", "00", &cursor[1..], &format!("{cursor}00"), "é"] {
            assert!(
                matches!(decode(garbage), Err(StoreError::InvalidOffset)),
                "{garbage:?}"
            );
        }
    }
}
