//! Fresh tokens and codes from the operating system's generator.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 256 bits from the OS generator, as 43 characters of base64url. Long enough that guessing is
/// hopeless, short enough for a header, and safe in URLs and fragments without escaping.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    // The OS generator failing means the machine cannot make any secret at all; there is no
    // safe fallback, so the process stops instead of issuing weak tokens.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let a = super::token();
        let b = super::token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
