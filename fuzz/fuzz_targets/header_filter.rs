//! Defends the filter of client header names (`tollgate_canon::header_name::judge`): before
//! forwarding, the sidecar drops every header that reads, with `_` as `-`, as one it sets
//! itself, and with `upstream.dropUnderscoreHeaders` every header with `_` in its name.
//!
//! Input: a flag byte (its low bit is `dropUnderscoreHeaders`), then a header name. Only names
//! `http` accepts are judged, as only those reach the sidecar. Invariants: no panic; a name
//! is dropped as a look-alike exactly when, lower-cased with `_` as `-`, it is one of the
//! protected names and has a `_`; with the flag every other name with `_` is dropped too;
//! names without `_` (`authorization`, the exact protected names) are kept, and so is
//! `custom_header_name`, Kong's spec's `authHeaderName`, without the flag.
#![no_main]

use http::HeaderName;
use libfuzzer_sys::fuzz_target;
use tollgate_canon::header_name::{FORWARDED_HEADERS, Verdict, judge};
use tollgate_oauth::bearer::IDENTITY_HEADERS;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, name)) = data.split_first() else {
        return;
    };
    let drop_underscore = flags & 1 == 1;
    let Ok(name) = HeaderName::from_bytes(name) else {
        return;
    };
    let name = name.as_str();
    let identity = IDENTITY_HEADERS;
    let protected: Vec<&str> = FORWARDED_HEADERS
        .iter()
        .copied()
        .chain(identity.iter().map(HeaderName::as_str))
        .collect();
    let verdict = judge(name, protected.iter().copied(), drop_underscore);

    let has_underscore = name.contains('_');
    let folded = name.to_ascii_lowercase().replace('_', "-");
    let expected = if !has_underscore {
        Verdict::Keep
    } else if protected.contains(&folded.as_str()) {
        Verdict::LookAlike
    } else if drop_underscore {
        Verdict::Underscore
    } else {
        Verdict::Keep
    };
    assert_eq!(
        verdict, expected,
        "{name:?}, dropUnderscoreHeaders {drop_underscore}"
    );
    if !drop_underscore {
        assert_eq!(
            judge("custom_header_name", protected.iter().copied(), false),
            Verdict::Keep
        );
    }
});
