//! PKCE (RFC 7636), as Kong checks it: the `code_challenge` read at the authorize endpoint,
//! and the `code_verifier` checked against it at the token endpoint.

use sha2::{Digest, Sha256};
use tollgate_api::snapshot::{Application, ClientType, Pkce};

use crate::response::OAuthError;
use crate::{ParamValue, Params};

/// The `code_challenge` as Kong reads it: required when a method is given, the method `S256`
/// (or `s256`), and the challenge rewritten as unpadded base64url when it decodes as base64
/// of either alphabet. `None` when the client sent no challenge.
pub(crate) fn read_challenge(params: &Params) -> Result<Option<String>, OAuthError> {
    let method = params.get("code_challenge_method");
    let Some(challenge) = params.get("code_challenge") else {
        return match method {
            Some(_) => Err(OAuthError::bad_request(
                "invalid_request",
                "code_challenge is required when code_method is present",
            )),
            None => Ok(None),
        };
    };
    let Some(challenge) = (match challenge {
        ParamValue::Text(text) => Some(text),
        ParamValue::Scalar(_) | ParamValue::NotText => None,
    }) else {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_challenge is not a string",
        ));
    };
    if let Some(method) = method
        && !matches!(method, ParamValue::Text(m) if m == "S256" || m == "s256")
    {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_challenge_method is not supported, must be S256",
        ));
    }
    Ok(Some(canonical_challenge(challenge)))
}

/// PKCE at the authorize step: a challenge is required from public clients (unless
/// `pkce: none`) and from everyone with `pkce: strict`, whatever the response type.
pub(crate) fn check_challenge(
    pkce: Pkce,
    client: &Application,
    params: &Params,
) -> Result<Option<String>, OAuthError> {
    match read_challenge(params)? {
        Some(challenge) => Ok(Some(challenge)),
        None if client.client_type == ClientType::Public && pkce != Pkce::None => {
            Err(OAuthError::bad_request(
                "invalid_request",
                "code_challenge is required for public clients",
            ))
        }
        None if pkce == Pkce::Strict => Err(OAuthError::bad_request(
            "invalid_request",
            "code_challenge is required for confidential clients",
        )),
        None => Ok(None),
    }
}

/// `challenge` as unpadded base64url when it decodes as base64 (`+/` or `-_`, padded or
/// not), else unchanged: Kong's rewrite, so a challenge sent with padding or `+/` matches
/// the verifier's S256.
pub fn canonical_challenge(challenge: &str) -> String {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // nginx's decoder stops at the first `=`.
    let data = challenge.split('=').next().unwrap_or_default();
    let standard: String = data
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    match LENIENT.decode(standard) {
        Ok(decoded) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(decoded),
        Err(_) => challenge.to_owned(),
    }
}

/// PKCE at the token step (RFC 7636 §4.6). A verifier is needed when the code carries a
/// challenge, for public clients unless `pkce: none`, and always with `pkce: strict`.
pub(crate) fn verify_code_verifier(
    pkce: Pkce,
    client: &Application,
    challenge: Option<&str>,
    params: &Params,
) -> Result<(), OAuthError> {
    let needed = challenge.is_some()
        || pkce == Pkce::Strict
        || (client.client_type == ClientType::Public && pkce != Pkce::None);
    if !needed {
        return Ok(());
    }
    let verifier = match params.get("code_verifier") {
        None => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "code_verifier is required for PKCE authorization requests",
            ));
        }
        Some(ParamValue::Scalar(_) | ParamValue::NotText) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "code_verifier is not a string",
            ));
        }
        Some(ParamValue::Text(verifier)) => verifier,
    };
    if !(43..=128).contains(&verifier.len()) {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_verifier must be between 43 and 128 characters",
        ));
    }
    if !verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_verifier contains characters RFC 7636 does not allow",
        ));
    }
    let computed = s256(verifier);
    match challenge {
        Some(challenge) if subtle_eq(challenge, &computed) => Ok(()),
        _ => Err(OAuthError::bad_request("invalid_grant", "Invalid code")),
    }
}

/// `BASE64URL(SHA256(verifier))`, without padding.
pub fn s256(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn subtle_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_rewritten_as_unpadded_base64url() {
        // 03-access_spec.lua:2495 and :2522.
        assert_eq!(
            canonical_challenge("2aC4cMSkAsMRtZbhHhiZkDW3sddRf_iTRGil1r9gi8w="),
            "2aC4cMSkAsMRtZbhHhiZkDW3sddRf_iTRGil1r9gi8w"
        );
        assert_eq!(
            canonical_challenge("0LoS6Gtrw16r07+ZXsCf8MeAi21QHmKc3LJdUCA5w/o="),
            "0LoS6Gtrw16r07-ZXsCf8MeAi21QHmKc3LJdUCA5w_o"
        );
        assert_eq!(canonical_challenge("1234"), "1234");
        // Not base64 at all: kept as sent (and no verifier will match it).
        assert_eq!(canonical_challenge("a!b"), "a!b");
        assert_eq!(canonical_challenge("abcde"), "abcde");
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::default();
        for (k, v) in pairs {
            p.insert(*k, *v);
        }
        p
    }

    #[test]
    fn a_method_without_a_challenge_and_lowercase_s256() {
        // 03-access_spec.lua:1081.
        assert_eq!(
            read_challenge(&params(&[("code_challenge_method", "H256")]))
                .unwrap_err()
                .description,
            "code_challenge is required when code_method is present"
        );
        assert_eq!(
            read_challenge(&params(&[
                ("code_challenge", "1234"),
                ("code_challenge_method", "s256")
            ])),
            Ok(Some("1234".to_owned()))
        );
        assert_eq!(
            read_challenge(&params(&[
                ("code_challenge", "1234"),
                ("code_challenge_method", "foo")
            ]))
            .unwrap_err()
            .description,
            "code_challenge_method is not supported, must be S256"
        );
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
