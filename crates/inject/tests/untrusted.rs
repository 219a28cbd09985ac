//! The webhook's and `inject -f`'s parsers see bytes nobody vouches for: mangled versions of
//! real inputs must give an answer or an error, never a panic. (A poor man's fuzzer: a fixed
//! seed, so a failure reproduces.)

use std::path::Path;

use tollgate_inject::{InjectConfig, Scope, inject_manifest, review};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random edit: flip a byte, drop a range, duplicate a range, or cut the tail.
fn mangle(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..=rng.below(3) {
        let len = bytes.len();
        if len == 0 {
            break;
        }
        let at = rng.below(len);
        let span = 1 + rng.below(32.min(len - at));
        match rng.below(4) {
            0 => bytes[at] = (rng.next() & 0xff) as u8,
            1 => {
                bytes.drain(at..at + span);
            }
            2 => {
                let copy = bytes[at..at + span].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

fn fixtures(extension: &str) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for dir in ["tests/fixtures", "tests/fixtures/manifests"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some(extension) {
                found.push(std::fs::read(path).unwrap());
            }
        }
    }
    assert!(!found.is_empty());
    found
}

#[test]
fn mangled_admission_reviews_never_panic() {
    let config = InjectConfig::new("tollgate:test");
    let mut rng = Rng(0x7011_6a7e);
    for input in fixtures("json") {
        for _ in 0..400 {
            let body = mangle(&input, &mut rng);
            for scope in [Scope::PodAnnotation, Scope::Namespace] {
                if let Ok(answer) = review(&body, &config, scope) {
                    let _: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                }
            }
        }
    }
}

#[test]
fn mangled_manifests_never_panic() {
    let config = InjectConfig::new("tollgate:test");
    let mut rng = Rng(0x1_57e0);
    for input in fixtures("yaml") {
        for _ in 0..300 {
            let bytes = mangle(&input, &mut rng);
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(injected) = inject_manifest(&text, &config) {
                // Whatever comes out is injected once and for all.
                let again = inject_manifest(&injected.yaml, &config).unwrap();
                assert_eq!(again.yaml, injected.yaml, "input:\n{text}");
            }
        }
    }
}
