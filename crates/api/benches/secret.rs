//! The cost of a client secret on the token endpoint, measured apart from `make bench`.
//!
//! Client secrets and provision keys are kept as PBKDF2-HMAC-SHA256 hashes with a random salt
//! ([`SecretDigest`]). The first successful verification of a secret runs the full hash; the
//! sidecar then remembers it under a keyed digest, and every later request pays one HMAC.
//! Run with `cargo bench --locked -p tollgate-api` (`make bench-micro`).

use std::hint::black_box;

use divan::Bencher;
use tollgate_api::SecretDigest;

const SECRET: &str = "benchsecret";

fn main() {
    divan::main();
}

/// A verification with nothing remembered: the full PBKDF2, what the first token request of a
/// client (and every request with a wrong secret before one succeeded) pays.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn verify_cold(bencher: Bencher) {
    bencher
        .with_inputs(|| SecretDigest::new(SECRET))
        .bench_values(|digest| digest.matches(black_box(SECRET)));
}

/// A verification once the secret was verified: one HMAC-SHA256 and a constant-time compare.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn verify_warm(bencher: Bencher) {
    let digest = SecretDigest::new(SECRET);
    assert!(digest.matches(SECRET));
    bencher.bench(|| black_box(&digest).matches(black_box(SECRET)));
}

/// A wrong secret once the right one was verified: as cheap, as only one value can match.
#[divan::bench(sample_count = 200, sample_size = 5000)]
fn verify_warm_mismatch(bencher: Bencher) {
    let digest = SecretDigest::new(SECRET);
    assert!(digest.matches(SECRET));
    bencher.bench(|| black_box(&digest).matches(black_box("benchsecreT")));
}

/// `SecretDigest::new`: what the compiler pays once per secret value and owner.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn make_digest() -> SecretDigest {
    SecretDigest::new(black_box(SECRET))
}
