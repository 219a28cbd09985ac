//! Defends the token and authorize endpoints' parameter parser (`Params::parse`): a client
//! controls the Content-Type, the query string and the body (JSON, form or multipart).
//!
//! Input: `content-type\nquery\nbody`, where an empty first or second line means the header
//! or the query is absent (see `fuzz/corpus/oauth_params/`). Invariants: no panic; the body
//! kind decides the outcome (forms always parse, JSON parses exactly when it is an object,
//! other bodies are ignored); every key of the query and of a form or JSON body is present,
//! a form key given once keeps its value and one given twice is `NotText`, body over query.
#![no_main]

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate_oauth::params::{BodyKind, ParamValue, Params, ParamsError};

fuzz_target!(|data: &[u8]| {
    let (content_type, query, body) = split(data);
    let content_type = (!content_type.is_empty()).then(|| String::from_utf8_lossy(content_type));
    let query = (!query.is_empty()).then(|| String::from_utf8_lossy(query));
    let content_type = content_type.as_deref();
    let query = query.as_deref();

    let parsed = futures_executor::block_on(Params::parse(
        query,
        content_type,
        Bytes::copy_from_slice(body),
    ));
    let query_only = Params::from_urlencoded(query.unwrap_or("").as_bytes());

    match BodyKind::of(content_type) {
        BodyKind::Form => {
            let params = parsed.expect("a form body always parses");
            let from_body = form_pairs(body);
            for (key, values) in &from_body {
                let expected = match values.as_slice() {
                    [one] => ParamValue::Text(one.to_string()),
                    _ => ParamValue::NotText,
                };
                assert_eq!(params.get(key), Some(&expected), "form key {key:?}");
            }
            for (key, _) in form_pairs(query.unwrap_or("").as_bytes()) {
                if !from_body.contains_key(&key) {
                    assert_eq!(params.get(&key), query_only.get(&key), "query key {key:?}");
                }
            }
        }
        BodyKind::Json if body.iter().all(u8::is_ascii_whitespace) => {
            assert_eq!(parsed, Ok(query_only));
        }
        BodyKind::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(object)) => {
                let params = parsed.expect("a JSON object always parses");
                for key in object.keys() {
                    assert!(params.contains(key), "JSON key {key:?}");
                }
                assert_query_keys_kept(&params, query);
            }
            Ok(_) => assert_eq!(parsed, Err(ParamsError::JsonNotObject)),
            Err(_) => assert_eq!(parsed, Err(ParamsError::InvalidJson)),
        },
        BodyKind::Multipart => {
            if let Ok(params) = parsed {
                assert_query_keys_kept(&params, query);
            }
        }
        BodyKind::Other => assert_eq!(parsed, Ok(query_only)),
    }
});

/// Splits at the first two newlines; missing parts are empty.
fn split(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let content_type = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    (content_type, query, body)
}

/// Every value of every key, decoded independently of `Params`.
fn form_pairs(input: &[u8]) -> HashMap<Cow<'_, str>, Vec<Cow<'_, str>>> {
    let mut pairs: HashMap<_, Vec<_>> = HashMap::new();
    for (key, value) in form_urlencoded::parse(input) {
        pairs.entry(key).or_default().push(value);
    }
    pairs
}

/// A body may replace a query parameter but never drops one.
fn assert_query_keys_kept(params: &Params, query: Option<&str>) {
    for (key, _) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        assert!(params.contains(&key), "query key {key:?}");
    }
}
