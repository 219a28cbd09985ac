//! The cost of a client secret on the token endpoint, measured apart from `make bench`.
//!
//! Client secrets and provision keys are kept only as salted SHA-256 digests
//! ([`SecretDigest`]). Every token request that authenticates a confidential client verifies
//! one, and the password grant verifies its provision key too. Run with
//! `cargo bench --locked -p tollgate-api` (`make bench-micro`).

use std::hint::black_box;

use divan::Bencher;
use tollgate_api::SecretDigest;

// The salt the compiler uses: the owning resource's key, `Kind/namespace/name`.
const SALT: &[u8] = b"OAuthApplication/default/benchclient";
const SECRET: &str = "benchsecret";
// A secret as a generator would make one: 32 random bytes, base64url.
const LONG_SECRET: &str = "q3Jx9P0vK7mZtL2sYw8bN4cR6dF1gH5jU0eA-_iTQoE";

fn main() {
    divan::main();
}

// Each figure is over 200 samples of 5,000 calls: 1e6 calls, a fraction of a second.

/// `SecretDigest::matches` with the right secret: what a successful token request pays.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn verify_match(bencher: Bencher) {
    let digest = SecretDigest::new(SALT, SECRET);
    bencher.bench(|| black_box(&digest).matches(black_box(SECRET)));
}

/// `SecretDigest::matches` with a wrong secret of the same length: the same work, compared in
/// constant time.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn verify_mismatch(bencher: Bencher) {
    let digest = SecretDigest::new(SALT, SECRET);
    bencher.bench(|| black_box(&digest).matches(black_box("benchsecreT")));
}

/// A 43-character generated secret: salt and secret now take two SHA-256 blocks, not one.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn verify_match_long(bencher: Bencher) {
    let digest = SecretDigest::new(SALT, LONG_SECRET);
    bencher.bench(|| black_box(&digest).matches(black_box(LONG_SECRET)));
}

/// `SecretDigest::new`: what the compiler pays once per client secret per snapshot.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn make_digest() -> SecretDigest {
    SecretDigest::new(black_box(SALT), black_box(SECRET))
}
