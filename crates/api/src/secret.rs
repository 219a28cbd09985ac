//! Secret values and their password hashes, with `Debug` impls that never print them.
//!
//! Client secrets and provision keys leave the compiler only as PBKDF2-HMAC-SHA256 hashes
//! with a random salt per secret, as Kong's `hash_secret` keeps them: a snapshot written to
//! disk or pushed over the wire holds nothing a client could replay, and nothing a dictionary
//! can be run against at the speed of one SHA-256.
//!
//! The hash is slow on purpose, so the sidecar remembers a successful verification: each
//! [`SecretDigest`] keeps, in memory only, a keyed digest of the one value that matched it
//! (HMAC-SHA256 under a key drawn at random once per process). It lives as long as the
//! snapshot that holds the digest, is never serialised, and is one slot per secret, so its
//! size is bounded by the snapshot's.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock};

use ring::{hmac, pbkdf2, rand};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// PBKDF2-HMAC-SHA256 iterations of every new hash. Kong's PBKDF2 uses 10,000 rounds of
/// HMAC-SHA512; this is five times as many rounds of the cheaper SHA-256, about 10 ms of one
/// core per hash as `make bench-micro` measured it (`verify_cold`). A guess against a leaked
/// snapshot costs as much, against one SHA-256 (about 1 µs) before. Higher would slow the
/// first token request of each client after each new snapshot, and what wrong secrets cost
/// the sidecar before one matched; that cost is bounded by the token endpoint's
/// `--max-concurrent-secret-hashes`.
pub const PBKDF2_ITERATIONS: u32 = 50_000;
/// Bytes of random salt per secret (Kong's `PBKDF2_SALT_LEN`).
pub const SALT_LEN: usize = 16;
/// Bytes of the derived hash (Kong's `PBKDF2_HASH_LEN`).
pub const HASH_LEN: usize = 32;
/// The most iterations a snapshot may ask a sidecar to run per verification. A snapshot comes
/// from the controller or the sidecar's own cache file, but one that asked for billions would
/// stall the token endpoint, so it is refused when read.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// A secret in the clear, as read from a Kubernetes Secret. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

/// A password hash of a secret: PBKDF2-HMAC-SHA256 with its own random salt. Verified in
/// constant time; a successful verification is remembered under a keyed digest.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretDigest {
    algorithm: Algorithm,
    #[serde(deserialize_with = "iterations")]
    iterations: u32,
    #[serde(with = "hex::serde")]
    salt: [u8; SALT_LEN],
    #[serde(with = "hex::serde")]
    hash: [u8; HASH_LEN],
    /// The keyed digest of the value that matched, once one has. Memory only.
    #[serde(skip)]
    verified: OnceLock<[u8; 32]>,
}

/// The hashes the compiler made, by owner and value, so that recompiling the same Secret for
/// the same object gives the same hash (and salt): snapshots do not churn, and the sidecars'
/// remembered verifications stay valid, while nothing changed.
///
/// Keyed by a keyed digest of (owner, value), not by the Secret's resourceVersion: a Secret
/// relabelled or re-applied unchanged keeps its hash, and one whose value changes gets a new
/// salt. The memo lives as long as the process: a restarted controller hashes every secret
/// afresh, once, and its sidecars get a new snapshot. Bounded: two generations of at most
/// half of [`MEMO_CAPACITY`] entries each; when the newer fills up, the older is dropped, and
/// a value still in use is hashed again the next time it is compiled.
pub struct SecretHashes {
    capacity: usize,
    generations: Mutex<Generations>,
}

/// Entries of [`SecretHashes`] kept at most: about 200 bytes each.
pub const MEMO_CAPACITY: usize = 16_384;

#[derive(Default)]
struct Generations {
    current: HashMap<[u8; 32], SecretDigest>,
    previous: HashMap<[u8; 32], SecretDigest>,
}

/// The hash function, named in the serialised form so that another can be added later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Algorithm {
    #[serde(rename = "pbkdf2-sha256")]
    Pbkdf2Sha256,
}

// === impl SecretString ===

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

// === impl SecretDigest ===

impl SecretDigest {
    /// Hashes `secret` with a fresh random salt and [`PBKDF2_ITERATIONS`]. Slow on purpose:
    /// the compiler memoises it (see `compile::SecretHashes`) so that recompiling the same
    /// Secret gives the same hash.
    pub fn new(secret: &str) -> Self {
        Self::with_iterations(secret, PBKDF2_ITERATIONS)
    }

    /// Hashes `secret` with a fresh random salt and `iterations` (at least 1). Tests use few
    /// iterations to stay fast; everything else uses [`SecretDigest::new`].
    pub fn with_iterations(secret: &str, iterations: u32) -> Self {
        let mut salt = [0; SALT_LEN];
        fill_random(&mut salt);
        Self::with_salt(secret, iterations, salt)
    }

    /// Hashes `secret` with this salt: for tests and benchmarks that need a fixed one.
    pub fn with_salt(secret: &str, iterations: u32, salt: [u8; SALT_LEN]) -> Self {
        let iterations = iterations.max(1);
        let mut hash = [0; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            non_zero(iterations),
            &salt,
            secret.as_bytes(),
            &mut hash,
        );
        Self {
            algorithm: Algorithm::Pbkdf2Sha256,
            iterations,
            salt,
            hash,
            verified: OnceLock::new(),
        }
    }

    /// True when `candidate` is the secret this digest was made from.
    ///
    /// Once a value has matched, its keyed digest answers every later call in about a
    /// microsecond, for a wrong value as for the right one: only one value can match, so a
    /// different keyed digest means a different value. Before that, each call runs the full
    /// hash.
    ///
    /// This runs on the calling thread; the token endpoint bounds and moves the full hash
    /// elsewhere with [`SecretDigest::remembered`], [`SecretDigest::full_check`] and
    /// [`SecretDigest::remember`].
    pub fn matches(&self, candidate: &str) -> bool {
        if let Some(answer) = self.remembered(candidate) {
            return answer;
        }
        match self.full_check().run(candidate) {
            Some(proof) => {
                self.remember(&proof);
                true
            }
            None => false,
        }
    }

    /// The answer for `candidate` from the remembered verification, without hashing: `None`
    /// while no value has matched yet. About a microsecond.
    pub fn remembered(&self, candidate: &str) -> Option<bool> {
        let verified = self.verified.get()?;
        Some(bool::from(
            keyed_digest(&self.hash, candidate).ct_eq(verified),
        ))
    }

    /// The full hash of this digest, detached from it so that it can run on another thread
    /// (the token endpoint runs it on tokio's blocking pool); [`SecretDigest::remember`]
    /// takes its result back.
    pub fn full_check(&self) -> FullCheck {
        FullCheck {
            iterations: self.iterations,
            salt: self.salt,
            hash: self.hash,
        }
    }

    /// Remembers a verification that [`FullCheck::run`] proved for this digest. A proof of
    /// another digest is ignored.
    pub fn remember(&self, proof: &VerifiedMatch) {
        if proof.hash == self.hash {
            let _ = self.verified.set(proof.keyed_digest);
        }
    }

    /// Whether a successful verification is remembered: for tests of the cache.
    pub fn is_verified(&self) -> bool {
        self.verified.get().is_some()
    }

    /// The salt, for tests that show salts differ between secrets.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

/// The full PBKDF2 verification of a [`SecretDigest`], owned, to run where it may block.
pub struct FullCheck {
    iterations: u32,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

/// Proof that a value matched a digest: its keyed digest, for [`SecretDigest::remember`].
/// Made only by [`FullCheck::run`], so nothing unverified can be remembered.
pub struct VerifiedMatch {
    hash: [u8; HASH_LEN],
    keyed_digest: [u8; 32],
}

impl FullCheck {
    /// Runs the full hash of `candidate`, compared in constant time: slow on purpose.
    pub fn run(&self, candidate: &str) -> Option<VerifiedMatch> {
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            non_zero(self.iterations),
            &self.salt,
            candidate.as_bytes(),
            &self.hash,
        )
        .ok()?;
        Some(VerifiedMatch {
            hash: self.hash,
            keyed_digest: keyed_digest(&self.hash, candidate),
        })
    }
}

/// Equal when the stored hash is: what a remembered verification is does not matter.
impl PartialEq for SecretDigest {
    fn eq(&self, other: &Self) -> bool {
        self.algorithm == other.algorithm
            && self.iterations == other.iterations
            && self.salt == other.salt
            && self.hash == other.hash
    }
}

impl Eq for SecretDigest {}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

// === impl SecretHashes ===

impl SecretHashes {
    /// The process's memo, shared by every compilation.
    pub fn global() -> &'static Self {
        static GLOBAL: OnceLock<SecretHashes> = OnceLock::new();
        GLOBAL.get_or_init(|| Self::with_capacity(MEMO_CAPACITY))
    }

    fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            generations: Mutex::new(Generations::default()),
        }
    }

    /// The hash of `secret` for the object `owner` (`Kind/namespace/name`): the one made the
    /// last time this owner had this value, else a new one with a new salt.
    pub fn hash(&self, owner: &str, secret: &str) -> SecretDigest {
        let key = memo_key(owner, secret);
        if let Some(found) = self.lock().get(&key) {
            return found;
        }
        // Hashed without the lock: another compilation may proceed meanwhile. Should two hash
        // the same value at once, the first one stored wins and both return it.
        let made = SecretDigest::new(secret);
        let mut generations = self.lock();
        if let Some(found) = generations.get(&key) {
            return found;
        }
        if generations.current.len() >= self.capacity / 2 {
            generations.previous = std::mem::take(&mut generations.current);
        }
        generations.current.insert(key, made.clone());
        made
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps stay consistent whatever panicked while holding them.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Generations {
    /// Looks in both generations; a hit in the older one moves to the current one, so what is
    /// in use survives the next turnover.
    fn get(&mut self, key: &[u8; 32]) -> Option<SecretDigest> {
        if let Some(found) = self.current.get(key) {
            return Some(found.clone());
        }
        let found = self.previous.remove(key)?;
        self.current.insert(*key, found.clone());
        Some(found)
    }
}

/// The memo's key for a value of `owner`: a keyed digest, so the memo holds no secret and no
/// fast digest of one.
fn memo_key(owner: &str, secret: &str) -> [u8; 32] {
    process_hmac(&[
        b"memo",
        &(owner.len() as u64).to_be_bytes(),
        owner.as_bytes(),
        secret.as_bytes(),
    ])
}

/// HMAC-SHA256 of `candidate` under this process's key, bound to the stored `hash`: what the
/// memory of a successful verification holds instead of the secret. The key never leaves the
/// process, so the value is of no use to a dictionary even if memory were read.
fn keyed_digest(hash: &[u8; HASH_LEN], candidate: &str) -> [u8; 32] {
    process_hmac(&[b"verified", hash, candidate.as_bytes()])
}

/// HMAC-SHA256 of `parts` under a key drawn at random once per process.
fn process_hmac(parts: &[&[u8]]) -> [u8; 32] {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut bytes = [0; 32];
        fill_random(&mut bytes);
        hmac::Key::new(hmac::HMAC_SHA256, &bytes)
    });
    let mut context = hmac::Context::with_key(key);
    for part in parts {
        context.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.sign().as_ref());
    out
}

fn fill_random(bytes: &mut [u8]) {
    // The OS's generator does not fail on Linux once booted; a process that cannot read it
    // cannot make a salt or a key worth having.
    rand::SecureRandom::fill(&rand::SystemRandom::new(), bytes)
        .expect("the operating system's random generator failed");
}

fn non_zero(iterations: u32) -> NonZeroU32 {
    NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN)
}

fn iterations<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = u32::deserialize(deserializer)?;
    if (1..=MAX_PBKDF2_ITERATIONS).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!(
            "iterations must be between 1 and {MAX_PBKDF2_ITERATIONS}, not {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// Few iterations: the rules are the same, and the tests stay fast.
    fn quick(secret: &str) -> SecretDigest {
        SecretDigest::with_iterations(secret, 10)
    }

    #[test]
    fn digest_matches_only_its_secret() {
        let digest = quick("clientsecret");
        assert!(!digest.matches("clientsecreT"));
        assert!(!digest.matches(""));
        assert!(!digest.is_verified(), "a failure is not remembered");
        assert!(digest.matches("clientsecret"));
        assert!(digest.is_verified());
        // Answered from the remembered verification now, and still exact.
        assert!(digest.matches("clientsecret"));
        assert!(!digest.matches("clientsecreT"));
        assert!(!digest.matches("clientsecret "));
    }

    #[test]
    fn the_default_is_pbkdf2_sha256_with_kongs_salt_and_hash_lengths() {
        let digest = SecretDigest::with_salt("s", 3, [7; SALT_LEN]);
        let mut expected = [0; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(3).unwrap(),
            &[7; SALT_LEN],
            b"s",
            &mut expected,
        );
        assert_eq!(digest.hash, expected);
        let json: serde_json::Value = serde_json::to_value(&digest).unwrap();
        assert_eq!(json["algorithm"], "pbkdf2-sha256");
        assert_eq!(json["iterations"], 3);
        assert_eq!(json["salt"], hex::encode([7; SALT_LEN]));
        assert_eq!(PBKDF2_ITERATIONS, 50_000);
    }

    #[test]
    fn a_detached_check_is_remembered_only_for_its_own_digest() {
        let digest = quick("s");
        let other = quick("s");
        assert_eq!(digest.remembered("s"), None);
        assert!(digest.full_check().run("t").is_none());
        let proof = digest.full_check().run("s").unwrap();
        other.remember(&proof);
        assert!(!other.is_verified(), "another digest's proof is ignored");
        digest.remember(&proof);
        assert_eq!(digest.remembered("s"), Some(true));
        assert_eq!(digest.remembered("t"), Some(false));
    }

    #[test]
    fn salts_are_random_per_secret() {
        let a = quick("s");
        let b = quick("s");
        assert_ne!(a.salt(), b.salt());
        assert_ne!(a, b, "equal secrets do not share a hash");
        assert!(a.matches("s") && b.matches("s"));
    }

    #[test]
    fn the_serialised_form_holds_no_fast_digest_nor_the_remembered_verification() {
        let digest = quick("clientsecret");
        assert!(digest.matches("clientsecret"));
        let json = serde_json::to_value(&digest).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["algorithm", "hash", "iterations", "salt"]);
        let text = json.to_string();
        assert!(!text.contains("clientsecret"));
        // Neither a bare nor a salted SHA-256 of the secret, which a dictionary runs at speed.
        let salt = digest.salt().to_vec();
        for fast in [
            Sha256::digest(b"clientsecret").to_vec(),
            Sha256::digest([salt.as_slice(), b"clientsecret"].concat()).to_vec(),
        ] {
            assert!(!text.contains(&hex::encode(fast)), "{text}");
        }
        let read: SecretDigest = serde_json::from_value(json).unwrap();
        assert_eq!(read, digest);
        assert!(!read.is_verified(), "a verification is never carried over");
        assert!(read.matches("clientsecret"));
    }

    #[test]
    fn the_former_sha256_form_is_refused_not_accepted() {
        // What an older controller, or an older --snapshot-cache file, holds.
        let old = serde_json::json!({"salt": hex::encode("OAuthApplication/default/a"),
                                     "sha256": hex::encode([0u8; 32])});
        assert!(serde_json::from_value::<SecretDigest>(old).is_err());
        let mut unknown = serde_json::to_value(quick("s")).unwrap();
        unknown["algorithm"] = "sha256".into();
        assert!(serde_json::from_value::<SecretDigest>(unknown).is_err());
    }

    #[test]
    fn a_snapshot_may_not_ask_for_unbounded_work() {
        let mut json = serde_json::to_value(quick("s")).unwrap();
        for bad in [0, u64::from(MAX_PBKDF2_ITERATIONS) + 1] {
            json["iterations"] = bad.into();
            assert!(serde_json::from_value::<SecretDigest>(json.clone()).is_err());
        }
    }

    #[test]
    fn the_memo_gives_one_hash_per_owner_and_value() {
        let memo = SecretHashes::with_capacity(MEMO_CAPACITY);
        let first = memo.hash("OAuthApplication/default/a", "s");
        assert_eq!(memo.hash("OAuthApplication/default/a", "s"), first);
        let other_owner = memo.hash("OAuthApplication/default/b", "s");
        assert_ne!(other_owner.salt(), first.salt());
        let new_value = memo.hash("OAuthApplication/default/a", "t");
        assert_ne!(new_value.salt(), first.salt());
        assert!(new_value.matches("t"));
    }

    #[test]
    fn the_memo_is_bounded_and_keeps_what_is_in_use() {
        let memo = SecretHashes::with_capacity(4);
        let kept = memo.hash("kept", "s");
        for i in 0..10 {
            memo.hash(&format!("owner-{i}"), "s");
            assert_eq!(memo.hash("kept", "s"), kept, "used after each insert");
            let generations = memo.lock();
            assert!(generations.current.len() + generations.previous.len() <= 4);
        }
        let dropped = memo.hash("owner-0", "s");
        assert!(dropped.matches("s"), "a dropped entry is hashed again");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::new("clientsecret");
        let d = quick("clientsecret");
        assert!(!format!("{s:?}{d:?}").contains("clientsecret"));
    }
}
