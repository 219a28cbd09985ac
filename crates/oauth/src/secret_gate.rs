//! Verifying client secrets and provision keys without letting anyone spend the sidecar's CPU.
//!
//! A secret is a password hash ([`SecretDigest`]): its first successful verification runs the
//! full PBKDF2, after which the digest answers from memory in a microsecond. Before that, every
//! wrong guess costs a full hash, and anyone with no token can send guesses. So full hashes run
//! on tokio's blocking pool (never on a thread that serves connections) and at most
//! `max_concurrent` at once; a request that cannot start one within `queue_timeout` gets 503
//! `temporarily_unavailable` with `Retry-After`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tollgate_api::SecretDigest;

use crate::response::OAuthError;

/// Full hashes run at once by default: one core's worth, beside the default single worker
/// thread.
pub const DEFAULT_MAX_CONCURRENT_SECRET_HASHES: u8 = 1;
/// Milliseconds a request waits for a free hash slot by default: long enough to absorb a
/// burst of first requests after a new snapshot (each finds the secret remembered once the
/// first one has run), short enough that a flood of wrong secrets is answered quickly.
pub const DEFAULT_SECRET_HASH_QUEUE_TIMEOUT_MS: u64 = 1000;
/// The `Retry-After` of the 503, in seconds.
const RETRY_AFTER_SECONDS: u32 = 1;

/// Bounds the full hashes the OAuth endpoints run.
#[derive(Debug)]
pub struct SecretGate {
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
}

static GLOBAL: OnceLock<SecretGate> = OnceLock::new();

/// Sets the process's bounds; called once at startup, before the first request. A later call,
/// or a request before any call, leaves the bounds as they are (the defaults).
pub fn configure_secret_hashing(max_concurrent: usize, queue_timeout: Duration) {
    let _ = GLOBAL.set(SecretGate::new(max_concurrent, queue_timeout));
}

/// The process's gate.
pub(crate) fn global() -> &'static SecretGate {
    GLOBAL.get_or_init(|| {
        SecretGate::new(
            usize::from(DEFAULT_MAX_CONCURRENT_SECRET_HASHES),
            Duration::from_millis(DEFAULT_SECRET_HASH_QUEUE_TIMEOUT_MS),
        )
    })
}

impl SecretGate {
    pub fn new(max_concurrent: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            queue_timeout,
        }
    }

    /// True when `candidate` is the secret of `digest`; 503 when no full hash could start in
    /// time.
    pub async fn verify(&self, digest: &SecretDigest, candidate: &str) -> Result<bool, OAuthError> {
        if let Some(answer) = digest.remembered(candidate) {
            return Ok(answer);
        }
        let slot =
            match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
                .await
            {
                Ok(Ok(slot)) => slot,
                // Timed out (or the semaphore closed, which it never is).
                _ => {
                    return Err(OAuthError::temporarily_unavailable(
                        "Too many client secrets are being verified, retry later",
                        RETRY_AFTER_SECONDS,
                    ));
                }
            };
        // Another request may have verified the right value while this one waited.
        if let Some(answer) = digest.remembered(candidate) {
            return Ok(answer);
        }
        let check = digest.full_check();
        let candidate = candidate.to_owned();
        // The slot moves into the blocking task: should this request be dropped meanwhile,
        // the hash still counts until it has finished.
        let proof = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            check.run(&candidate)
        })
        .await
        // A hash that panicked matched nothing.
        .ok()
        .flatten();
        Ok(match proof {
            Some(proof) => {
                digest.remember(&proof);
                true
            }
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_and_then_answers_from_memory() {
        let gate = SecretGate::new(1, Duration::ZERO);
        let digest = SecretDigest::with_iterations("s", 10);
        assert_eq!(gate.verify(&digest, "t").await, Ok(false));
        assert!(!digest.is_verified());
        assert_eq!(gate.verify(&digest, "s").await, Ok(true));
        assert!(digest.is_verified());
        // No slot is free, and none is needed once the secret is remembered.
        let _held = Arc::clone(&gate.slots).acquire_owned().await.unwrap();
        assert_eq!(gate.verify(&digest, "s").await, Ok(true));
        assert_eq!(gate.verify(&digest, "t").await, Ok(false));
    }

    #[tokio::test]
    async fn a_full_hash_past_the_bound_is_503_with_retry_after() {
        let gate = SecretGate::new(1, Duration::from_millis(5));
        let digest = SecretDigest::with_iterations("s", 10);
        let held = Arc::clone(&gate.slots).acquire_owned().await.unwrap();
        let error = gate.verify(&digest, "s").await.unwrap_err();
        assert_eq!(error.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "temporarily_unavailable");
        let response = error.into_response(None).into_http();
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(!digest.is_verified());
        drop(held);
        assert_eq!(gate.verify(&digest, "s").await, Ok(true));
    }
}
