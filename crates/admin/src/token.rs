//! `--admin-token-file`: a bearer token for a sidecar's own admin API, compared in constant
//! time so that response timing tells an attacker in the pod nothing about it.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shorter tokens could be guessed; 16 bytes is already more than a UUID's randomness.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The admin token, kept only as its SHA-256 digest. Comparing digests of equal length hides
/// the token's length too. Not `Debug` with the token: there is none to show.
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Reads the token from `path`; errors name the flag and the file, never the content.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("--admin-token-file {}: {e}", path.display()))
    }

    /// The token is the file's content without its trailing newline (as `echo` or an editor
    /// writes it), printable ASCII, as an HTTP header can carry it.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let token = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let token = token.strip_suffix(b"\r").unwrap_or(token);
        if token.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(format!(
                "the token must be at least {MIN_ADMIN_TOKEN_LEN} bytes long"
            ));
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token must be printable ASCII without spaces (it is sent in a header)".into(),
            );
        }
        Ok(Self {
            digest: Sha256::digest(token).into(),
        })
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>`.
    pub fn accepts(&self, headers: &http::HeaderMap) -> bool {
        let Some(presented) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let token = AdminToken::parse(b"0123456789abcdef-secret\n").unwrap();
        assert!(token.accepts(&headers("Bearer 0123456789abcdef-secret")));
        assert!(token.accepts(&headers("bearer  0123456789abcdef-secret ")));
        assert!(!token.accepts(&headers("Bearer 0123456789abcdef-secreT")));
        assert!(!token.accepts(&headers("Bearer 0123456789abcdef-secre")));
        assert!(!token.accepts(&headers("Basic 0123456789abcdef-secret")));
        assert!(!token.accepts(&http::HeaderMap::new()));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused_without_showing_them() {
        for bad in [
            &b"short\n"[..],
            b"",
            b"0123456789abcdef ghij",
            b"0123456789abcdef\n\n",
        ] {
            let error = AdminToken::parse(bad).err().unwrap();
            assert!(
                !error.contains("0123456789abcdef") && !error.contains("short"),
                "{error}"
            );
        }
        assert_eq!(
            format!("{:?}", AdminToken::parse(b"0123456789abcdef").unwrap()),
            "AdminToken(***)"
        );
    }
}
