//! Defends `hide_credentials` (`params::without_key`): the sidecar removes the access token
//! from a client's query string or form body before forwarding it to the application.
//!
//! Input: `name\ninput`, the key to remove and the query or body (see
//! `fuzz/corpus/hide_credentials/`). Invariants: no panic; the result is `None` exactly when
//! no pair has the key; otherwise no pair of the result has it, the pairs kept are the input's
//! other pairs byte for byte and in order, and every other parameter decodes as before.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_oauth::params::{Params, without_key};

fuzz_target!(|data: &[u8]| {
    let (name, input) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"access_token"[..], data),
    };
    let name = String::from_utf8_lossy(name);
    let has_key = |pair: &[u8]| {
        let key = pair.split(|&b| b == b'=').next().unwrap_or_default();
        form_urlencoded::parse(key).next().is_some_and(|(k, _)| k == name)
    };
    let pairs: Vec<&[u8]> = input.split(|&b| b == b'&').collect();

    match without_key(input, &name) {
        None => assert!(!pairs.iter().any(|p| has_key(p)), "a pair with the key was kept"),
        Some(output) => {
            let others: Vec<&[u8]> = pairs.iter().copied().filter(|p| !has_key(p)).collect();
            assert_eq!(output, others.join(&b'&'), "the other pairs, byte for byte");
            assert!(
                !form_urlencoded::parse(&output).any(|(k, _)| k == name),
                "the key survives in the result"
            );
            let before = Params::from_urlencoded(input);
            let after = Params::from_urlencoded(&output);
            for (key, _) in form_urlencoded::parse(&output) {
                assert_eq!(after.get(&key), before.get(&key), "parameter {key:?} changed");
            }
        }
    }
});
