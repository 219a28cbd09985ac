//! Defends the path normaliser (`tollgate_canon::path::normalize`): every request path goes
//! through it before routing, and the application receives what it returns.
//!
//! Input: any bytes, read as a path (lossily as UTF-8, with a `/` put in front when missing).
//! Invariants: no panic; a normal form is normal again unchanged (idempotent), begins with `/`,
//! has no `.`, `..` or empty middle segment and no encoded dot, and a second normalisation
//! matches the same route prefixes, each over the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_canon::path::{match_prefix, normalize};

const PREFIXES: [&str; 5] = ["/", "/public", "/event", "/event/admin", "/a/b"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = if text.starts_with('/') {
        text.into_owned()
    } else {
        format!("/{text}")
    };
    let Ok(once) = normalize(&path) else { return };
    let twice = normalize(&once).expect("a normal form is normal");
    assert_eq!(twice, once, "normalising twice changes {path:?}");
    assert!(once.starts_with('/'), "{path:?} -> {once:?}");
    let segments: Vec<&str> = once[1..].split('/').collect();
    let (last, middle) = segments.split_last().expect("split yields one at least");
    assert!(
        middle
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != ".."),
        "{path:?} -> {once:?}"
    );
    assert!(*last != "." && *last != "..", "{path:?} -> {once:?}");
    assert!(!once.contains("%2e") && !once.contains("%2E"), "{once:?}");
    for prefix in PREFIXES {
        assert_eq!(
            match_prefix(prefix, &once),
            match_prefix(prefix, &twice),
            "{prefix} on {once:?}"
        );
    }
});
