//! The W3C `traceparent` grammar, request-id validation, and what the application receives.

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn trace_id() -> TraceId {
    TraceId(hex::<16>(TRACE.as_bytes()).unwrap())
}

#[test]
fn a_well_formed_traceparent_gives_its_trace_id_and_flags() {
    assert_eq!(
        parse_traceparent_value(VALID.as_bytes()),
        TraceParent::Valid {
            trace_id: trace_id(),
            flags: 1
        }
    );
    // A later version may carry more fields after a dash; they are not read.
    let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next";
    assert_eq!(
        parse_traceparent_value(later.as_bytes()),
        TraceParent::Valid {
            trace_id: trace_id(),
            flags: 9
        }
    );
}

#[test]
fn traceparents_that_break_the_grammar_are_malformed() {
    for bad in [
        "",
        "00",
        // Version ff is forbidden; 00 has no more fields.
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        // Uppercase, non-hex, zero ids, wrong separators and lengths.
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    ] {
        assert_eq!(
            parse_traceparent_value(bad.as_bytes()),
            TraceParent::Malformed,
            "{bad:?}"
        );
    }
}

#[test]
fn two_traceparent_headers_are_malformed_and_none_is_absent() {
    let mut headers = HeaderMap::new();
    assert_eq!(parse_traceparent(&headers), TraceParent::Absent);
    headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
    headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
    assert_eq!(parse_traceparent(&headers), TraceParent::Malformed);
}

#[test]
fn request_ids_are_kept_when_short_visible_ascii() {
    assert!(valid_request_id(
        b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        128
    ));
    assert!(valid_request_id(&[b'a'; 128], 128));
    assert!(!valid_request_id(&[b'a'; 129], 128));
    assert!(!valid_request_id(b"", 128));
    assert!(!valid_request_id(b"two words", 128));
    assert!(!valid_request_id(b"tab\there", 128));
    assert!(!valid_request_id("caf\u{e9}".as_bytes(), 128));
}

#[test]
fn a_valid_client_request_id_reaches_the_application_unchanged() {
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, HeaderValue::from_static("client-chose-this"));
    let propagated = propagate(&mut headers, 128);
    assert_eq!(headers.get_all(&REQUEST_ID).iter().count(), 1);
    assert_eq!(headers[&REQUEST_ID], "client-chose-this");
    assert!(!propagated.needs_request_id);
}

#[test]
fn an_invalid_missing_or_repeated_request_id_is_replaced_by_a_new_one() {
    let too_long = "x".repeat(129);
    let cases: [&[&str]; 4] = [&[], &["has space"], &[&too_long], &["one", "two"]];
    for sent in cases {
        let mut headers = HeaderMap::new();
        for value in sent {
            headers.append(REQUEST_ID, HeaderValue::from_str(value).unwrap());
        }
        let propagated = propagate(&mut headers, 128);
        // None of the client's is left: a new one is added as the head is written.
        assert_eq!(headers.get(&REQUEST_ID), None, "{sent:?}");
        assert!(propagated.needs_request_id, "{sent:?}");
    }
}

#[test]
fn a_valid_traceparent_goes_on_with_the_sidecars_span_and_the_same_trace_and_flags() {
    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, HeaderValue::from_static(VALID));
    headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
    let propagated = propagate(&mut headers, 128);
    assert_eq!(propagated.trace_id, Some(trace_id()));
    let sent = headers[&TRACEPARENT].to_str().unwrap();
    let TraceParent::Valid { trace_id: t, flags } = parse_traceparent_value(sent.as_bytes()) else {
        panic!("{sent} is not valid");
    };
    assert_eq!((t, flags), (trace_id(), 1));
    assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
    assert_ne!(
        &sent[36..52],
        "00f067aa0ba902b7",
        "the parent id is the sidecar's own"
    );
    assert_eq!(headers[&TRACESTATE], "congo=t61rcWkgMzE");
}

#[test]
fn a_malformed_traceparent_is_replaced_by_a_new_trace_and_its_state_dropped() {
    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, HeaderValue::from_static("00-garbage"));
    headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
    let propagated = propagate(&mut headers, 128);
    let sent = headers[&TRACEPARENT].to_str().unwrap();
    let TraceParent::Valid { trace_id, flags } = parse_traceparent_value(sent.as_bytes()) else {
        panic!("{sent} is not valid");
    };
    assert_eq!(propagated.trace_id, Some(trace_id));
    assert_eq!(flags, 0);
    assert!(headers.get(&TRACESTATE).is_none());
}

#[test]
fn without_a_traceparent_none_is_invented() {
    let mut headers = HeaderMap::new();
    headers.insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
    let propagated = propagate(&mut headers, 128);
    assert_eq!(propagated.trace_id, None);
    assert!(headers.get(&TRACEPARENT).is_none());
}

#[test]
fn new_request_ids_are_unique_lowercase_hex() {
    let ids: Vec<RequestId> = (0..200).map(|_| RequestId::new()).collect();
    let unique: std::collections::HashSet<&str> = ids.iter().map(RequestId::as_str).collect();
    assert_eq!(unique.len(), ids.len());
    for id in &ids {
        assert_eq!(id.as_str().len(), 32);
        assert!(
            id.as_str()
                .bytes()
                .all(|b| b"0123456789abcdef".contains(&b)),
            "{id:?}"
        );
    }
}
