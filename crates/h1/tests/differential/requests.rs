//! Requests: each sent through both clients to a recording listener, and the bytes compared.

use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Version};

use crate::clients::{Outgoing, Payload, send_with_h1, send_with_hyper};
use crate::corpus;
use crate::known::{RequestDifference, check_request};
use crate::listener::{bind, record};

use RequestDifference::*;

/// The bytes each client sends for `outgoing`: tollgate-h1's, then hyper's.
async fn recordings(outgoing: &Outgoing) -> (Vec<u8>, Vec<u8>) {
    let (listener, port) = bind().await;
    let recording = record(listener);
    send_with_h1(port, outgoing).await;
    let h1 = recording.await.unwrap();

    let (listener, port) = bind().await;
    let recording = record(listener);
    send_with_hyper(port, outgoing).await;
    let hyper = recording.await.unwrap();
    (h1, hyper)
}

fn fields(pairs: &[(&'static str, &'static [u8])]) -> Vec<(HeaderName, HeaderValue)> {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_bytes(value).unwrap(),
            )
        })
        .collect()
}

fn with(method: Method, uri: &str, payload: Payload) -> Outgoing {
    Outgoing {
        method,
        payload,
        ..Outgoing::get(uri)
    }
}

/// The hand-written requests, and the documented differences each shows.
fn hand_written() -> Vec<(&'static str, Outgoing, Vec<RequestDifference>)> {
    let streamed = |pieces: &[&'static [u8]], trailers| Payload::Streamed {
        pieces: pieces.to_vec(),
        trailers,
    };
    let proxied = fields(&[
        ("accept", b"*/*"),
        ("x-forwarded-for", b"1.1.1.1"),
        ("host", b"127.0.0.1:8080"),
        ("x-forwarded-for", b"2.2.2.2"),
        ("x-empty", b""),
        ("x-tab", b"a\tb"),
        ("x-obs-text", b"caf\xe9"),
        ("x-long", &[b'v'; 8192]),
    ]);
    vec![
        ("a bare GET", Outgoing::get("/"), vec![]),
        (
            "a proxied GET: repeated, empty, tabbed, obs-text and long values",
            Outgoing {
                headers: proxied,
                ..Outgoing::get("/event/1?a=b&c=%20d")
            },
            vec![],
        ),
        ("a HEAD", with(Method::HEAD, "/h", Payload::Empty), vec![]),
        (
            "a DELETE",
            with(Method::DELETE, "/d/1", Payload::Empty),
            vec![],
        ),
        (
            "an OPTIONS *",
            with(Method::OPTIONS, "*", Payload::Empty),
            vec![],
        ),
        (
            "an extension method",
            with(Method::from_bytes(b"PURGE").unwrap(), "/p", Payload::Empty),
            vec![],
        ),
        (
            "a POST of known length",
            Outgoing {
                headers: fields(&[("content-type", b"application/x-www-form-urlencoded")]),
                ..with(Method::POST, "/form", Payload::Full(b"a=1&b=2"))
            },
            vec![],
        ),
        (
            "a GET with a body of known length",
            with(Method::GET, "/g", Payload::Full(b"{}")),
            vec![],
        ),
        (
            "a streamed POST in small chunks, an empty one skipped, trailers dropped",
            with(Method::POST, "/s", streamed(&[b"a=1", b"", b"&b=2"], true)),
            vec![],
        ),
        (
            "an empty POST",
            with(Method::POST, "/e", Payload::Empty),
            vec![EmptyBodyLength],
        ),
        (
            "an empty PUT",
            with(Method::PUT, "/e", Payload::Empty),
            vec![EmptyBodyLength],
        ),
        (
            "an empty PATCH",
            with(Method::PATCH, "/e", Payload::Empty),
            vec![EmptyBodyLength],
        ),
        (
            "a streamed PUT with a chunk of 26 bytes",
            with(
                Method::PUT,
                "/s",
                streamed(&[b"abcdefghijklmnopqrstuvwxyz", b"0123456789"], false),
            ),
            vec![ChunkSizeCase],
        ),
        (
            "a GET carrying the connection's fields",
            Outgoing {
                headers: fields(&[
                    ("connection", b"keep-alive, te"),
                    ("keep-alive", b"timeout=5"),
                    ("te", b"trailers"),
                    ("x-kept", b"1"),
                    ("proxy-connection", b"keep-alive"),
                    ("upgrade", b"h2c"),
                ]),
                ..Outgoing::get("/c")
            },
            vec![ConnectionFields],
        ),
        (
            "a PUT whose Content-Length is not its body's",
            Outgoing {
                headers: fields(&[("content-length", b"1")]),
                ..with(Method::PUT, "/l", Payload::Full(b"ab"))
            },
            vec![ClientLength],
        ),
        (
            "an HTTP/2 client's GET, in absolute form",
            Outgoing {
                version: Version::HTTP_2,
                headers: fields(&[("accept", b"*/*")]),
                ..Outgoing::get("https://app.example/a?b=c")
            },
            vec![OriginForm],
        ),
        (
            "an HTTP/1.0 client's POST",
            Outgoing {
                version: Version::HTTP_10,
                ..with(Method::POST, "/old", Payload::Full(b"x=1"))
            },
            vec![AlwaysHttp11],
        ),
        (
            "a WebSocket upgrade",
            Outgoing {
                headers: fields(&[
                    ("upgrade", b"websocket"),
                    ("connection", b"Upgrade"),
                    ("sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                    ("sec-websocket-version", b"13"),
                ]),
                websocket: true,
                ..Outgoing::get("/ws")
            },
            vec![WebSocketFields],
        ),
        (
            "a GET with a body of unknown length",
            with(Method::GET, "/g", streamed(&[b"abc"], false)),
            vec![UnknownLengthGet],
        ),
    ]
}

#[tokio::test]
async fn hand_written_requests_are_the_same_bytes_but_for_the_documented_differences() {
    let mut failures = Vec::new();
    for (name, outgoing, differences) in hand_written() {
        let (h1, hyper) = recordings(&outgoing).await;
        if let Err(error) = check_request(h1, hyper, &differences) {
            failures.push(format!("{name}: {error}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The request material of the fuzz corpus: the paths of `path_normalize`, each a GET's
/// target, and the field names of `header_filter`, each a GET's field. Entries `http` does
/// not take as a target or a name are what no client is handed, and are counted.
fn from_corpus() -> (Vec<(String, Outgoing)>, usize) {
    let mut requests = Vec::new();
    let mut skipped = 0;
    for (name, bytes) in corpus::entries("path_normalize") {
        match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| PathAndQuery::try_from(t).ok())
        {
            Some(target) if target.as_str().starts_with('/') => {
                requests.push((
                    format!("path_normalize/{name}"),
                    Outgoing::get(target.as_str()),
                ));
            }
            _ => skipped += 1,
        }
    }
    for (name, bytes) in corpus::entries("header_filter") {
        // The first byte is the fuzz target's flags; the rest is the field name.
        match HeaderName::from_bytes(&bytes[1..]) {
            Ok(field) => {
                let outgoing = Outgoing {
                    headers: vec![(field, HeaderValue::from_static("1"))],
                    ..Outgoing::get("/")
                };
                requests.push((format!("header_filter/{name}"), outgoing));
            }
            Err(_) => skipped += 1,
        }
    }
    (requests, skipped)
}

#[tokio::test]
async fn the_corpus_requests_are_the_same_bytes() {
    let (requests, skipped) = from_corpus();
    assert!(requests.len() >= 20, "{} requests", requests.len());
    let mut failures = Vec::new();
    for (name, outgoing) in &requests {
        let (h1, hyper) = recordings(outgoing).await;
        if let Err(error) = check_request(h1, hyper, &[]) {
            failures.push(format!("{name}: {error}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "{} corpus requests compared, {skipped} skipped",
        requests.len()
    );
}

/// The comparison fails on a real difference: tollgate-h1's own recording, altered by one
/// byte, is not hyper's.
#[tokio::test]
async fn an_altered_recording_fails_the_comparison() {
    let outgoing = Outgoing {
        headers: fields(&[("x-a", b"1")]),
        ..Outgoing::get("/a")
    };
    let (h1, hyper) = recordings(&outgoing).await;
    check_request(h1.clone(), hyper.clone(), &[]).unwrap();
    let mut altered = hyper.clone();
    let at = altered.len() - 3;
    altered[at] = b'2';
    let error = check_request(h1.clone(), altered, &[]).unwrap_err();
    assert!(error.contains(&format!("differ at {at}")), "{error}");
    // A documented difference named where it does not occur fails too.
    assert!(check_request(h1, hyper, &[ConnectionFields]).is_err());
}
