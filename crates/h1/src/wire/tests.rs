//! Tests of the wire rules: response heads parsed, bodies delimited, request heads written;
//! each over a buffer, without a socket.

use super::*;
use bytes::BufMut;

fn head_of(raw: &str, request_was_head: bool) -> Result<Option<Head>, Error> {
    let asked = if request_was_head {
        Asked::Head
    } else {
        Asked::Other
    };
    parse_head(&mut BytesMut::from(raw), asked)
}

fn framing_of(raw: &str) -> ResponseFraming {
    head_of(raw, false).unwrap().unwrap().framing
}

#[test]
fn a_head_is_taken_from_the_buffer_and_the_body_left() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Many: a\r\nx-many: b\r\nContent-Length: 2\r\n\r\n{}",
    );
    let head = parse_head(&mut buf, Asked::Other).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::CREATED);
    assert_eq!(head.headers["content-type"], "application/json");
    let many: Vec<_> = head.headers.get_all("x-many").iter().collect();
    assert_eq!(many, ["a", "b"]);
    assert_eq!(head.framing, ResponseFraming::Length(2));
    assert!(head.keep_alive);
    assert_eq!(&buf[..], b"{}");
}

#[test]
fn an_incomplete_head_waits_for_more() {
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Le");
    assert!(parse_head(&mut buf, Asked::Other).unwrap().is_none());
    assert_eq!(buf.len(), 27, "nothing is taken from an incomplete head");
}

#[test]
fn the_framing_follows_rfc_9112() {
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ResponseFraming::Chunked
    );
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\n\r\n"),
        ResponseFraming::UntilClose
    );
    assert_eq!(
        framing_of("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
        ResponseFraming::Length(5)
    );
    for empty in [
        "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n",
    ] {
        assert_eq!(framing_of(empty), ResponseFraming::Empty, "{empty}");
    }
    let to_head = head_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true);
    assert_eq!(to_head.unwrap().unwrap().framing, ResponseFraming::Empty);
}

#[test]
fn chunked_alone_is_read_in_any_case_and_with_whitespace_around_it() {
    for chunked in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding:  \tChunked \t\r\n\r\n",
    ] {
        let head = head_of(chunked, false).unwrap().unwrap();
        assert_eq!(head.framing, ResponseFraming::Chunked, "{chunked:?}");
        assert!(head.headers.is_empty(), "{chunked:?}: {:?}", head.headers);
    }
}

/// The error `raw` is refused with, or a panic if it is read.
fn refusal(raw: &str) -> &'static str {
    match head_of(raw, false) {
        Err(Error::Malformed(says)) => says,
        other => panic!("{raw:?} was not refused as malformed: {other:?}"),
    }
}

#[test]
fn a_transfer_encoding_other_than_chunked_alone_is_refused() {
    // As nginx refuses it: a coding this client would not undo would reach the client with
    // nothing to say so, and a list or a second line is a second reading of the framing.
    for unknown in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n",
        // A response without a body is refused too: the head is as wrong either way.
        "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        assert!(
            refusal(unknown).contains("unknown Transfer-Encoding"),
            "{unknown:?}"
        );
    }
    for twice in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert!(
            refusal(twice).contains("more than one Transfer-Encoding"),
            "{twice:?}"
        );
    }
}

#[test]
fn a_transfer_encoding_in_an_http_1_0_response_is_refused() {
    // RFC 9112 §6.1: the framing of an HTTP/1.0 message that says it is coded is faulty.
    for old in [
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ntransfer-encoding: Chunked\r\n\r\n",
    ] {
        assert!(refusal(old).contains("HTTP/1.0"), "{old:?}");
    }
}

#[test]
fn a_length_beside_chunked_is_refused() {
    // Two framings of one response is the shape of response smuggling; nginx refuses it.
    for both in [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        assert!(
            refusal(both).contains("Content-Length and Transfer-Encoding"),
            "{both:?}"
        );
    }
}

#[test]
fn bad_heads_are_errors() {
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "SMTP ready\r\n\r\n",
    ] {
        assert!(
            matches!(head_of(bad, false), Err(Error::Malformed(_))),
            "{bad}"
        );
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let too_many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert!(matches!(
        head_of(&too_many, false),
        Err(Error::Malformed(_))
    ));
    let long = "v".repeat(MAX_HEAD);
    let complete = format!("HTTP/1.1 200 OK\r\nx-long: {long}\r\n\r\n");
    assert!(matches!(
        head_of(&complete, false),
        Err(Error::HeadTooLarge)
    ));
    let partial = format!("HTTP/1.1 200 OK\r\nx-long: {long}");
    assert!(matches!(head_of(&partial, false), Err(Error::HeadTooLarge)));
}

#[test]
fn folded_fields_and_a_space_before_the_colon_are_errors() {
    for bad in [
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n\t2\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    ] {
        assert!(
            matches!(head_of(bad, false), Err(Error::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn the_connections_own_fields_are_acted_on_and_go_no_further() {
    let head = head_of(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
         X-Private: 1\r\nProxy-Connection: close\r\nTrailer: x-sum\r\nX-Kept: 2\r\n\
         Content-Length: 3\r\n\r\nabc",
        false,
    )
    .unwrap()
    .unwrap();
    let mut names: Vec<_> = head.headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-length", "x-kept"]);
    assert_eq!(head.framing, ResponseFraming::Length(3));
    assert!(head.keep_alive);

    let head = head_of(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert!(head.headers.is_empty(), "{:?}", head.headers);
    assert_eq!(head.framing, ResponseFraming::Chunked);
    assert!(!head.keep_alive);
}

#[test]
fn keep_alive_is_the_default_of_1_1_only() {
    let keep = |raw: &str| head_of(raw, false).unwrap().unwrap().keep_alive;
    assert!(keep("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(!keep(
        "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
    ));
    assert!(!keep("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
    assert!(keep(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    ));
}

#[test]
fn a_websocket_upgrade_is_asked_by_both_fields_in_any_case() {
    let asks = |fields: &[(&str, &str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        asks_websocket_upgrade(&headers)
    };
    assert!(asks(&[("upgrade", "websocket"), ("connection", "Upgrade")]));
    assert!(asks(&[
        ("upgrade", "WebSocket"),
        ("connection", "keep-alive, upgrade")
    ]));
    assert!(asks(&[
        ("upgrade", "foo/2, websocket/13"),
        ("connection", "keep-alive"),
        ("connection", "UPGRADE"),
    ]));
    for refused in [
        &[
            ("upgrade", "h2c"),
            ("connection", "upgrade, http2-settings"),
        ][..],
        &[("upgrade", "websocket")],
        &[("connection", "upgrade")],
        &[("upgrade", "websockets"), ("connection", "upgrade")],
        &[("upgrade", "websocket"), ("connection", "upgraded")],
        &[("upgrade", "web socket"), ("connection", "upgrade")],
    ] {
        assert!(!asks(refused), "{refused:?}");
    }
}

#[test]
fn a_101_to_websocket_switches_and_leaves_the_bytes_after_it() {
    let mut buf = BytesMut::from(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
         Content-Length: 5\r\n\r\n\x01\x02hi",
    );
    let head = parse_head(&mut buf, Asked::WebSocket).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(head.framing, ResponseFraming::Switched);
    assert!(!head.keep_alive);
    let mut names: Vec<_> = head.headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["sec-websocket-accept", "sec-websocket-protocol"],
        "the connection's fields and a meaningless length go no further"
    );
    assert_eq!(
        &buf[..],
        b"\x01\x02hi",
        "the application's first frame is kept"
    );
    assert_eq!(Decoder::new(head.framing), Decoder::Done);
}

#[test]
fn a_101_to_anything_but_websocket_is_an_error() {
    for bad in [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
    ] {
        let parsed = parse_head(&mut BytesMut::from(bad), Asked::WebSocket);
        assert!(matches!(parsed, Err(Error::Malformed(_))), "{bad}");
    }
    // Asked for an upgrade, the application may still answer as it likes; other interim
    // responses are interim still.
    let head = parse_head(
        &mut BytesMut::from("HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"),
        Asked::WebSocket,
    );
    let head = head.unwrap().unwrap();
    assert_eq!(head.framing, ResponseFraming::Length(2));
    let interim = parse_head(
        &mut BytesMut::from("HTTP/1.1 100 Continue\r\n\r\n"),
        Asked::WebSocket,
    );
    assert_eq!(interim.unwrap().unwrap().framing, ResponseFraming::Empty);
}

/// Feeds `wire` to a decoder one byte at a time, as a slow application would send it.
fn decode_byte_by_byte(mut decoder: Decoder, wire: &[u8]) -> Result<(Vec<u8>, BytesMut), Error> {
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut rest = wire.iter();
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => return Ok((body, buf)),
            Decoded::NeedMore => match rest.next() {
                Some(byte) => buf.put_u8(*byte),
                None => return decoder.at_eof().map(|_| (body, buf)),
            },
        }
    }
}

#[test]
fn a_chunked_body_is_decoded_however_it_arrives() {
    let wire = b"5\r\nhello\r\n6;name=value\r\n world\r\nA \r\n0123456789\r\n0\r\nX-Trailer: dropped\r\n\r\n";
    let (body, rest) = decode_byte_by_byte(Decoder::ChunkSize, wire).unwrap();
    assert_eq!(body, b"hello world0123456789");
    assert!(rest.is_empty());

    // Whole at once, followed by the next response: that stays in the buffer.
    let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1"[..]);
    let mut decoder = Decoder::ChunkSize;
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from("abc"))
    );
    assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::End);
    assert_eq!(&buf[..], b"HTTP/1.1");
}

#[test]
fn bad_chunks_are_errors() {
    for bad in [
        &b"z\r\n"[..],
        b"\r\n",
        b"3\r\nabcd\r\n",
        b"ffffffffffffffff\r\n",
    ] {
        assert!(
            matches!(
                decode_byte_by_byte(Decoder::ChunkSize, bad),
                Err(Error::Malformed(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let cut_short = decode_byte_by_byte(Decoder::ChunkSize, b"5\r\nhel");
    assert!(matches!(cut_short, Err(Error::ClosedInBody)));
}

/// Decodes `wire`, all of it in the buffer at once.
fn decode_whole(mut decoder: Decoder, wire: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = BytesMut::from(wire);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => return Ok(body),
            Decoded::NeedMore => return decoder.at_eof().map(|_| body),
        }
    }
}

#[test]
fn a_chunk_line_or_a_trailer_line_past_the_limit_is_an_error() {
    // A line of `MAX_HEAD` bytes before its CRLF is too long; one byte shorter, it is read.
    let extension = |len: usize| "e".repeat(len - "2;".len());
    let fits = format!("2;{}\r\nok\r\n0\r\n\r\n", extension(MAX_HEAD - 1));
    assert_eq!(
        decode_whole(Decoder::ChunkSize, fits.as_bytes()).unwrap(),
        b"ok"
    );
    let long = format!("2;{}\r\nok\r\n0\r\n\r\n", extension(MAX_HEAD));
    assert!(matches!(
        decode_whole(Decoder::ChunkSize, long.as_bytes()),
        Err(Error::Malformed("chunk line too long"))
    ));
    let trailer = format!("2\r\nok\r\n0\r\nx-t: {}\r\n\r\n", "t".repeat(MAX_HEAD));
    assert!(matches!(
        decode_whole(Decoder::ChunkSize, trailer.as_bytes()),
        Err(Error::Malformed("chunk line too long"))
    ));
    // Without a line end in sight, the limit holds however little has arrived past it.
    let endless = "e".repeat(MAX_HEAD + 1);
    assert!(matches!(
        decode_whole(Decoder::ChunkSize, endless.as_bytes()),
        Err(Error::Malformed("chunk line too long"))
    ));
}

#[test]
fn a_length_ends_the_body_and_the_end_of_stream_ends_the_rest() {
    let (body, rest) = decode_byte_by_byte(Decoder::Length(3), b"abcdef").unwrap();
    assert_eq!((&body[..], &rest[..]), (&b"abc"[..], &b""[..]));
    let short = decode_byte_by_byte(Decoder::Length(10), b"abc");
    assert!(matches!(short, Err(Error::ClosedInBody)));
    let (body, _) = decode_byte_by_byte(Decoder::UntilClose, b"all of it").unwrap();
    assert_eq!(body, b"all of it");
}

fn head_for(method: &str, headers: &[(&str, &str)], exact: Option<u64>) -> String {
    let mut request = http::Request::builder().method(method).uri("/event/1?a=b");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (parts, ()) = request.body(()).unwrap().into_parts();
    let mut dst = BytesMut::new();
    encode_head(&mut dst, &parts, request_framing(&parts.method, exact));
    String::from_utf8(dst.to_vec()).unwrap()
}

#[test]
fn the_request_is_framed_by_its_body() {
    assert_eq!(
        head_for("GET", &[("host", "127.0.0.1:8080")], Some(0)),
        "GET /event/1?a=b HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
    );
    assert_eq!(
        head_for("POST", &[], Some(0)),
        "POST /event/1?a=b HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    );
    // The client's framing is replaced by the body's own.
    assert_eq!(
        head_for("PUT", &[("content-length", "99"), ("x-a", "1")], Some(2)),
        "PUT /event/1?a=b HTTP/1.1\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n"
    );
    assert_eq!(
        head_for("POST", &[("transfer-encoding", "gzip")], None),
        "POST /event/1?a=b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

/// A proxy's head: the client's fields less `host`, then its own.
struct Proxied(http::request::Parts);

impl RequestHead for Proxied {
    fn method(&self) -> &Method {
        &self.0.method
    }

    fn target(&self) -> Option<&PathAndQuery> {
        self.0.uri.path_and_query()
    }

    fn write_fields(&self, fields: &mut Fields<'_>) {
        for (name, value) in &self.0.headers {
            if name != header::HOST {
                fields.push(name, value);
            }
        }
        let xff = HeaderName::from_static("x-forwarded-for");
        let me = HeaderValue::from_static("10.0.0.7");
        let chain = self.0.headers.get_all(&xff).iter();
        fields.push_list(&xff, chain.chain([&me]));
        fields.push_str(&header::HOST, "app");
        fields.push_str(&HeaderName::from_static("x-smuggled"), "a\r\nx-evil: 1");
        fields.push_bytes(&HeaderName::from_static("x-deleted"), b"a\x7fb");
        fields.push_bytes(&HeaderName::from_static("x-id"), b"0af\t ~");
        fields.push(&header::CONNECTION, &HeaderValue::from_static("close"));
    }
}

/// A WebSocket upgrade as a proxy forwards it: the client's fields as they are.
struct Upgrade(http::request::Parts);

impl RequestHead for Upgrade {
    fn method(&self) -> &Method {
        &self.0.method
    }

    fn target(&self) -> Option<&PathAndQuery> {
        self.0.uri.path_and_query()
    }

    fn write_fields(&self, fields: &mut Fields<'_>) {
        self.0.write_fields(fields);
    }

    fn websocket_upgrade(&self) -> bool {
        true
    }
}

#[test]
fn an_upgrade_head_says_websocket_itself_and_keeps_the_handshake_fields() {
    let request = http::Request::builder()
        .uri("/chat")
        .header("upgrade", "WebSocket, h2c")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat")
        .body(())
        .unwrap();
    let head = Upgrade(request.into_parts().0);
    assert_eq!(Asked::of(&head), Asked::WebSocket);
    let mut dst = BytesMut::new();
    encode_head(&mut dst, &head, request_framing(&Method::GET, Some(0)));
    assert_eq!(
        std::str::from_utf8(&dst).unwrap(),
        "GET /chat HTTP/1.1\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-version: 13\r\nsec-websocket-protocol: chat\r\n\
         upgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    );
}

#[test]
fn a_head_writes_its_fields_but_never_the_connections_own() {
    let request = http::Request::builder()
        .method("GET")
        .uri("https://iamhost/event/1?a=b")
        .header("host", "iamhost")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-forwarded-for", "1.1.1.1")
        .header("x-forwarded-for", "2.2.2.2")
        .header("x-kept", "1")
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    let mut dst = BytesMut::new();
    encode_head(&mut dst, &Proxied(parts), RequestFraming::None);
    assert_eq!(
        std::str::from_utf8(&dst).unwrap(),
        "GET /event/1?a=b HTTP/1.1\r\nx-forwarded-for: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\
         x-kept: 1\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.7\r\nhost: app\r\nx-id: 0af\t ~\r\n\r\n"
    );
}
