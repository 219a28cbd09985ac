//! Secret values and their digests, with `Debug` impls that never print them.
//!
//! Client secrets and provision keys leave the compiler only as salted SHA-256 digests: a
//! snapshot written to disk or pushed over the wire holds nothing a client could replay.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret in the clear, as read from a Kubernetes Secret. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

/// A salted SHA-256 digest of a secret. Compared in constant time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretDigest {
    #[serde(with = "hex::serde")]
    salt: Vec<u8>,
    #[serde(with = "hex::serde")]
    sha256: [u8; 32],
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
    /// Digests `secret` with `salt`. The salt only has to differ between secrets so that equal
    /// secrets do not share a digest; the compiler derives it from the owning resource's
    /// identity, which keeps compilation a pure function.
    pub fn new(salt: &[u8], secret: &str) -> Self {
        Self {
            salt: salt.to_vec(),
            sha256: Self::digest(salt, secret),
        }
    }

    /// True when `candidate` is the secret this digest was made from.
    pub fn matches(&self, candidate: &str) -> bool {
        Self::digest(&self.salt, candidate)
            .ct_eq(&self.sha256)
            .into()
    }

    fn digest(salt: &[u8], secret: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update((salt.len() as u64).to_be_bytes());
        hasher.update(salt);
        hasher.update(secret.as_bytes());
        hasher.finalize().into()
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_only_its_secret() {
        let digest = SecretDigest::new(b"default/sampleapp", "clientsecret");
        assert!(digest.matches("clientsecret"));
        assert!(!digest.matches("clientsecreT"));
        assert!(!digest.matches(""));
    }

    #[test]
    fn same_secret_different_salt_differs() {
        let a = SecretDigest::new(b"a", "s");
        let b = SecretDigest::new(b"b", "s");
        assert_ne!(a, b);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::new("clientsecret");
        let d = SecretDigest::new(b"x", "clientsecret");
        assert!(!format!("{s:?}{d:?}").contains("clientsecret"));
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("clientsecret"));
    }
}
