//! Defends where the bearer check finds the access token on every proxied request, through the
//! functions the gateway calls (`tollgate_oauth::token_location`): the `authHeaderName`
//! header's value, else `access_token` in the query string or a form body.
//!
//! Input: the raw bytes, used as a header value, as a query string and as a form body.
//! Invariants: no panic; the header wins over the query string; a token from the header is a
//! part of the header value, borrowed from it, and differs from the whole value only for
//! exactly `Bearer X` or `Token X` (any case), where it is `X`; an `access_token` parameter
//! counts only when it is given exactly once; `found_in` says where the token was found.
#![no_main]

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tollgate_oauth::token_location::{FoundIn, Located, body_parameters, locate};

fuzz_target!(|data: &[u8]| {
    // The gateway reads the header only when it is visible ASCII (`HeaderValue::to_str`).
    if let Ok(header) = HeaderValue::from_bytes(data)
        && let Ok(value) = header.to_str()
    {
        check_header(value);
    }
    if let Ok(value) = std::str::from_utf8(data) {
        check_header(value);
        check_parameters(locate(None, Some(value), None), data);
    }
    let form = futures_executor::block_on(body_parameters(
        None,
        Some("application/x-www-form-urlencoded"),
        Bytes::copy_from_slice(data),
    ));
    check_parameters(locate(None, None, Some(&form)), data);
});

fn check_header(value: &str) {
    let located = locate(Some(value), Some("access_token=from-the-query"), None);
    assert_eq!(located.found_in, FoundIn::Header, "the header wins");
    let Some(Cow::Borrowed(token)) = located.token else {
        panic!("a token from the header is borrowed from it");
    };
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

/// `located`, the token of a request without the header whose query string or form body is
/// `input`, against the pairs of `input` as `form_urlencoded` decodes them.
fn check_parameters(located: Located<'_>, input: &[u8]) {
    let given: Vec<_> = form_urlencoded::parse(input)
        .filter(|(key, _)| key == "access_token")
        .map(|(_, value)| value.into_owned())
        .collect();
    match given.as_slice() {
        [one] => {
            assert_eq!(located.token.as_deref(), Some(one.as_str()));
            assert_eq!(located.found_in, FoundIn::Parameters);
        }
        _ => {
            assert_eq!(located.token, None);
            assert_eq!(located.found_in, FoundIn::Nowhere);
        }
    }
}
