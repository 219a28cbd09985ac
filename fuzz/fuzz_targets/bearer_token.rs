//! Defends where the bearer check finds the access token on every proxied request: the
//! `authHeaderName` header's value (`bearer::token_from_header`), else `access_token` in the
//! query string or a form body (`Params::from_urlencoded`, as the gateway reads them).
//!
//! Input: the raw bytes, used both as a header value and as a query string or form body.
//! Invariants: no panic; the token is a part of the header value, and it differs from the
//! whole value only for exactly `Bearer X` or `Token X` (any case), where it is `X`; an
//! `access_token` parameter counts only when it is given exactly once.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tollgate_oauth::bearer::token_from_header;
use tollgate_oauth::params::Params;

fuzz_target!(|data: &[u8]| {
    // The gateway reads the header only when it is visible ASCII (`HeaderValue::to_str`).
    if let Ok(header) = HeaderValue::from_bytes(data)
        && let Ok(value) = header.to_str()
    {
        check_header(value);
    }
    if let Ok(value) = std::str::from_utf8(data) {
        check_header(value);
    }

    let found = Params::from_urlencoded(data)
        .text("access_token")
        .map(str::to_owned);
    let given: Vec<_> = form_urlencoded::parse(data)
        .filter(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
        .collect();
    match given.as_slice() {
        [one] => assert_eq!(found.as_ref(), Some(one)),
        _ => assert_eq!(found, None),
    }
});

fn check_header(value: &str) {
    let token = token_from_header(value);
    let start = (token.as_ptr() as usize).wrapping_sub(value.as_ptr() as usize);
    assert!(
        start <= value.len() && token.len() <= value.len() - start,
        "the token is not a part of the header value"
    );
    let words: Vec<&str> = value.split_ascii_whitespace().collect();
    let has_scheme = matches!(words.as_slice(), [scheme, _]
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"));
    if has_scheme {
        assert_eq!(token, words[1]);
        assert!(!token.is_empty() && !token.bytes().any(|b| b.is_ascii_whitespace()));
    } else {
        assert_eq!(token, value);
    }
}
