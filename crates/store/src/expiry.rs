//! Deadlines of records and access tokens, computed the same way by both stores.
//!
//! Lifetimes count from `TokenRecord::created_at` on the issuer's wall clock, and are turned
//! into "time left, measured now" on the same machine, so clocks of different sidecars or of
//! Redis never need to agree: only a relative TTL leaves this process.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::TokenRecord;

/// How long something still has to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remaining {
    Forever,
    /// At least one millisecond: the smallest TTL Redis takes.
    For(Duration),
    Expired,
}

/// What is left of a record and of its access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    pub record: Remaining,
    /// Never outlives `record`.
    pub access: Remaining,
}

/// Milliseconds since the Unix epoch, as `created_at` counts them.
pub(crate) fn now_ms() -> u64 {
    // A clock before 1970 is broken beyond what we can fix; 0 makes everything look young
    // rather than failing every request.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Time left of `lifetime_secs` started at `created_at_ms`, at `now_ms`. A `created_at` in
/// the future never buys more than the full lifetime.
pub(crate) fn remaining(created_at_ms: u64, lifetime_secs: u32, now_ms: u64) -> Remaining {
    if lifetime_secs == 0 {
        return Remaining::Forever;
    }
    let lifetime_ms = u64::from(lifetime_secs) * 1000;
    let left = created_at_ms
        .saturating_add(lifetime_ms)
        .saturating_sub(now_ms)
        .min(lifetime_ms);
    if left == 0 {
        Remaining::Expired
    } else {
        Remaining::For(Duration::from_millis(left))
    }
}

pub(crate) fn lifetimes(record: &TokenRecord, now_ms: u64) -> Lifetimes {
    let rec = remaining(record.created_at, record.ttl, now_ms);
    let access = remaining(record.created_at, record.expires_in, now_ms);
    let access = match (rec, access) {
        (Remaining::Expired, _) | (_, Remaining::Expired) => Remaining::Expired,
        (Remaining::Forever, access) => access,
        (Remaining::For(r), Remaining::Forever) => Remaining::For(r),
        (Remaining::For(r), Remaining::For(a)) => Remaining::For(r.min(a)),
    };
    Lifetimes {
        record: rec,
        access,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Remaining {
        Remaining::For(Duration::from_millis(n))
    }

    #[test]
    fn remaining_counts_from_created_at() {
        assert_eq!(remaining(1_000, 0, 999_999), Remaining::Forever);
        assert_eq!(remaining(1_000, 10, 1_000), ms(10_000));
        assert_eq!(remaining(1_000, 10, 4_000), ms(7_000));
        assert_eq!(remaining(1_000, 10, 11_000), Remaining::Expired);
        assert_eq!(remaining(1_000, 10, 50_000), Remaining::Expired);
        // created_at ahead of our clock: capped at the full lifetime.
        assert_eq!(remaining(9_000, 1, 1_000), ms(1_000));
    }

    #[test]
    fn access_is_bounded_by_the_record() {
        let mut record = TokenRecord {
            id: uuid::Uuid::nil(),
            namespace: "ns".into(),
            credential_id: uuid::Uuid::nil(),
            client_id: "c".into(),
            service_id: None,
            authenticated_userid: None,
            scope: String::new(),
            expires_in: 0,
            created_at: 0,
            ttl: 0,
        };
        let l = |r: &TokenRecord| lifetimes(r, 0);
        assert_eq!(l(&record).access, Remaining::Forever);
        record.ttl = 5;
        assert_eq!(l(&record).access, ms(5_000));
        record.expires_in = 10;
        assert_eq!(l(&record).access, ms(5_000));
        record.expires_in = 2;
        assert_eq!(l(&record).access, ms(2_000));
        record.ttl = 0;
        assert_eq!(l(&record).record, Remaining::Forever);
        assert_eq!(l(&record).access, ms(2_000));
        assert_eq!(lifetimes(&record, 2_000).access, Remaining::Expired);
        assert_eq!(lifetimes(&record, 2_000).record, Remaining::Forever);
    }
}
