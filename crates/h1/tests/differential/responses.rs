//! Responses: each played to both clients by a scripted application, and what each made of it
//! compared: status, fields, body, trailers, and after a 101 the bytes that followed.

use tollgate_h1::Asked;

use crate::clients::{Verdict, read_with_h1, read_with_hyper};
use crate::corpus;
use crate::known::{ResponseDifference, as_h1_would};
use crate::listener::{bind, replay};

use ResponseDifference::*;

/// What a case expects of the two clients.
#[derive(Debug)]
enum Expect {
    /// Both read it; the same, once these differences are taken away from hyper's reading.
    Read(Vec<ResponseDifference>),
    /// Both refuse it.
    BothRefuse,
    /// tollgate-h1 refuses what hyper reads, with an error that says this.
    OnlyH1Refuses(&'static str),
    /// hyper refuses what tollgate-h1 reads.
    OnlyHyperRefuses,
}

/// What each client makes of `response`, sent in answer to the request `asked` describes.
async fn verdicts(response: &[u8], asked: Asked) -> (Verdict, Verdict) {
    let (listener, port) = bind().await;
    let application = replay(listener, response.to_vec());
    let h1 = read_with_h1(port, asked).await;
    application.await.unwrap();

    let (listener, port) = bind().await;
    let application = replay(listener, response.to_vec());
    let hyper = read_with_hyper(port, asked).await;
    application.await.unwrap();
    (h1, hyper)
}

/// The two readings agree with `expect`, or how they do not.
fn check(h1: &Verdict, hyper: &Verdict, expect: &Expect) -> Result<(), String> {
    match (h1, hyper, expect) {
        (Verdict::Accepted(ours), Verdict::Accepted(theirs), Expect::Read(differences)) => {
            let (normal, found) = as_h1_would(theirs);
            if normal != *ours {
                return Err(format!("h1 read {ours:?}\n  hyper read {theirs:?}"));
            }
            if found != *differences {
                return Err(format!("differences {found:?}, expected {differences:?}"));
            }
            Ok(())
        }
        (Verdict::Refused(_), Verdict::Refused(_), Expect::BothRefuse) => Ok(()),
        (Verdict::Refused(error), Verdict::Accepted(_), Expect::OnlyH1Refuses(says))
            if error.contains(says) =>
        {
            Ok(())
        }
        (Verdict::Accepted(_), Verdict::Refused(_), Expect::OnlyHyperRefuses) => Ok(()),
        _ => Err(format!(
            "expected {expect:?}\n  h1: {h1:?}\n  hyper: {hyper:?}"
        )),
    }
}

fn head_of_70_kib() -> Vec<u8> {
    let mut response = b"HTTP/1.1 200 OK\r\nx-long: ".to_vec();
    response.resize(response.len() + 70 * 1024, b'v');
    response.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    response
}

fn long_extension() -> Vec<u8> {
    let mut response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x=".to_vec();
    response.resize(response.len() + 20 * 1024, b'e');
    response.extend_from_slice(b"\r\nok\r\n0\r\n\r\n");
    response
}

fn long_trailer() -> Vec<u8> {
    let mut response =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: ".to_vec();
    response.resize(response.len() + 20 * 1024, b't');
    response.extend_from_slice(b"\r\n\r\n");
    response
}

/// A response of `count` fields, `content-length` one of them.
fn fields(count: usize) -> Vec<u8> {
    let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 1..count {
        response.extend_from_slice(format!("x-{i}: {i}\r\n").as_bytes());
    }
    response.extend_from_slice(b"content-length: 0\r\n\r\n");
    response
}

/// The hand-written responses: what the request was, what the application sends, and what
/// is expected of the two clients. One case a line: a table.
#[rustfmt::skip]
fn hand_written() -> Vec<(&'static str, Asked, Vec<u8>, Expect)> {
    use Asked::{Head, Other, WebSocket};
    let read = |differences: &[ResponseDifference]| Expect::Read(differences.to_vec());
    let case = |name, asked, bytes: &[u8], expect| (name, asked, bytes.to_vec(), expect);
    vec![
        case("a length", Other, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\nX-A: 2\r\n\r\nhello", read(&[])),
        case("head lines ended by LF alone", Other, b"HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 2\n\nok", read(&[])),
        case("a value of obs-text", Other, b"HTTP/1.1 200 OK\r\nx-a: caf\xe9\r\ncontent-length: 0\r\n\r\n", read(&[])),
        case("one length said twice", Other, b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", read(&[])),
        case("HTTP/1.0 kept alive", Other, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 2\r\n\r\nok", read(&[ConnectionFields])),
        case("interim responses skipped", Other, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", read(&[])),
        case("a HEAD's length", Head, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", read(&[])),
        case("a 204 has no body", Other, b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n", read(&[])),
        case("a 304 has no body", Other, b"HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\n\r\n", read(&[])),
        case("a body until close", Other, b"HTTP/1.1 200 OK\r\n\r\nuntil the end", read(&[])),
        case("chunked, with extensions", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n", read(&[ConnectionFields])),
        case("chunked, with trailers", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n2\r\nok\r\n0\r\nx-sum: 1\r\n\r\n", read(&[ConnectionFields, TrailersDropped])),
        case("the connection's fields", Other, b"HTTP/1.1 200 OK\r\nconnection: keep-alive, x-private\r\nkeep-alive: timeout=5\r\nx-private: 1\r\nproxy-connection: close\r\nx-kept: 2\r\ncontent-length: 0\r\n\r\n", read(&[ConnectionFields])),
        case("a switch to WebSocket", WebSocket, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\ncontent-length: 5\r\n\r\n\x81\x02hi", read(&[LengthOn101, ConnectionFields])),
        case("a declined upgrade", WebSocket, b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno", read(&[])),
        case("100 fields", Other, &fields(100), read(&[])),
        case("101 fields", Other, &fields(101), Expect::BothRefuse),
        case("two lengths", Other, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", Expect::BothRefuse),
        case("a negative length", Other, b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", Expect::BothRefuse),
        case("a signed length", Other, b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello", Expect::BothRefuse),
        case("a folded field", Other, b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 0\r\n\r\n", Expect::BothRefuse),
        case("a space before the colon", Other, b"HTTP/1.1 200 OK\r\ncontent-length : 0\r\n\r\n", Expect::BothRefuse),
        case("a status of four digits", Other, b"HTTP/1.1 2000 OK\r\n\r\n", Expect::BothRefuse),
        case("not HTTP", Other, b"SMTP ready\r\n\r\n", Expect::BothRefuse),
        case("a bad chunk size", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nz\r\n", Expect::BothRefuse),
        case("a chunk longer than its size", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", Expect::BothRefuse),
        case("a chunked body cut short", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel", Expect::BothRefuse),
        case("a length cut short", Other, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", Expect::BothRefuse),
        case("a head over 64 KiB", Other, &head_of_70_kib(), Expect::OnlyH1Refuses("larger than 65536 bytes")),
        case("a 101 to a request that asked none", Other, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", Expect::OnlyH1Refuses("101 without an upgrade asked for")),
        case("a 101 to another protocol", WebSocket, b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n", Expect::OnlyH1Refuses("101 without Upgrade: websocket")),
        case("chunked in HTTP/1.0", Other, b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", Expect::BothRefuse),
        case("a coding other than chunked", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n\x1f\x8b\x08", Expect::OnlyH1Refuses("unknown Transfer-Encoding")),
        case("a coding other than chunked, beside a length", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 3\r\n\r\n\x1f\x8b\x08", Expect::OnlyH1Refuses("unknown Transfer-Encoding")),
        case("a coding before chunked", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n", Expect::OnlyH1Refuses("unknown Transfer-Encoding")),
        case("two transfer-encoding lines", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", Expect::OnlyH1Refuses("more than one Transfer-Encoding")),
        case("chunked beside a length", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n", Expect::OnlyH1Refuses("Content-Length and Transfer-Encoding")),
        case("a chunk size of 16 digits", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0000000000000002\r\nok\r\n0\r\n\r\n", Expect::OnlyH1Refuses("invalid chunk size")),
        case("a chunk extension of 20 KiB", Other, &long_extension(), Expect::OnlyHyperRefuses),
        case("trailers of 20 KiB", Other, &long_trailer(), Expect::OnlyHyperRefuses),
        case("chunk lines ended by LF alone", Other, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\n0\n\n", Expect::OnlyHyperRefuses),
    ]
}

#[tokio::test]
async fn hand_written_responses_read_the_same_but_for_the_documented_differences() {
    let mut failures = Vec::new();
    for (name, asked, response, expect) in hand_written() {
        let (h1, hyper) = verdicts(&response, asked).await;
        if let Err(error) = check(&h1, &hyper, &expect) {
            failures.push(format!("{name}: {error}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_corpus_responses_read_the_same() {
    let mut compared = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for (name, bytes) in corpus::entries("upstream_response") {
        // As the fuzz target reads it: a seed byte, then what the application sends. The
        // seed's size of pieces has no meaning over a socket.
        let Some((&seed, sent)) = bytes.split_first() else {
            skipped += 1;
            continue;
        };
        let asked = match (seed & 0x80 != 0, seed & 0x40 != 0) {
            (true, _) => Asked::Head,
            (false, true) => Asked::WebSocket,
            (false, false) => Asked::Other,
        };
        let (h1, hyper) = verdicts(sent, asked).await;
        if let (Verdict::Refused(_), Verdict::Refused(_)) = (&h1, &hyper) {
            skipped += 1;
            continue;
        }
        compared += 1;
        // Any of the documented differences may occur in a corpus entry: which ones did is
        // not written beside it.
        let differences = match &hyper {
            Verdict::Accepted(received) => as_h1_would(received).1,
            Verdict::Refused(_) => Vec::new(),
        };
        if let Err(error) = check(&h1, &hyper, &Expect::Read(differences)) {
            failures.push(format!("upstream_response/{name}: {error}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared >= 5, "{compared} compared");
    println!("{compared} corpus responses compared, {skipped} skipped");
}

/// The comparison fails on a real difference: one byte of a body altered on one side.
#[tokio::test]
async fn an_altered_response_fails_the_comparison() {
    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    let (h1, hyper) = verdicts(response, Asked::Other).await;
    check(&h1, &hyper, &Expect::Read(vec![])).unwrap();
    let (listener, port) = bind().await;
    let application = replay(
        listener,
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhellO".to_vec(),
    );
    let altered = read_with_hyper(port, Asked::Other).await;
    application.await.unwrap();
    assert!(check(&h1, &altered, &Expect::Read(vec![])).is_err());
    // A difference the case does not name fails too.
    let (h1, hyper) = verdicts(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nx",
        Asked::Other,
    )
    .await;
    assert!(check(&h1, &hyper, &Expect::Read(vec![])).is_err());
}
