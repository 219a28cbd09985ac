//! The application's side of the socket: a listener that records every byte a client sends,
//! answering once a whole request has arrived, or that plays a scripted response back.

use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the recording listener answers: no body, and the connection's end, so that both
/// clients close their sockets and the recording ends.
const ANSWER: &[u8] = b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";

/// A listener on 127.0.0.1 and its port.
pub async fn bind() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Accepts one connection and records all it carries until the client closes it; answers
/// [`ANSWER`] as soon as the bytes hold a whole request.
pub fn record(listener: TcpListener) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut answered = false;
        let mut buf = [0u8; 16 * 1024];
        loop {
            // A client that gives up closes or resets its socket: either way the recording ends.
            let read = socket.read(&mut buf).await.unwrap_or(0);
            if read == 0 {
                return seen;
            }
            seen.extend_from_slice(&buf[..read]);
            if !answered && request_shape(&seen).is_some() {
                answered = true;
                // A client that already gave up does not read the answer.
                let _ = socket.write_all(ANSWER).await;
            }
        }
    })
}

/// Accepts one connection, reads a request head (the requests it is sent have no body),
/// writes `response` and closes its side; then waits for the client to close its own.
pub fn replay(listener: TcpListener, response: Vec<u8>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.ends_with(b"\r\n\r\n") {
            let read = socket.read(&mut buf).await.unwrap_or(0);
            if read == 0 {
                return;
            }
            head.extend_from_slice(&buf[..read]);
        }
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
        while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
    })
}

/// Where a whole request lies in the bytes received.
#[derive(Debug, PartialEq)]
pub struct RequestShape {
    /// The end of the request: the bytes after it are not part of it.
    pub end: usize,
    /// The chunk-size lines of a chunked body, without their CRLF.
    pub chunk_size_lines: Vec<Range<usize>>,
}

/// The shape of the request at the front of `bytes`; `None` while it is incomplete. The
/// requests the two clients write are well formed (CRLF line ends, one framing field), and
/// anything else is a failure of the test.
pub fn request_shape(bytes: &[u8]) -> Option<RequestShape> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut fields);
    let head_end = match request.parse(bytes).expect("a well-formed request head") {
        httparse::Status::Complete(end) => end,
        httparse::Status::Partial => return None,
    };
    let field = |name: &str| {
        let mut values = request
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name));
        let value = values.next().map(|f| std::str::from_utf8(f.value).unwrap());
        assert!(values.next().is_none(), "more than one {name}");
        value
    };
    if let Some(coding) = field("transfer-encoding") {
        assert!(coding.ends_with("chunked"), "{coding}");
        return chunked_end(bytes, head_end);
    }
    let length: usize = field("content-length").map_or(0, |length| length.parse().unwrap());
    let end = head_end + length;
    (bytes.len() >= end).then_some(RequestShape {
        end,
        chunk_size_lines: Vec::new(),
    })
}

/// The end of a chunked body that starts at `at`, and its chunk-size lines.
fn chunked_end(bytes: &[u8], mut at: usize) -> Option<RequestShape> {
    let line_end = |from: usize| {
        bytes[from..]
            .windows(2)
            .position(|pair| pair == b"\r\n")
            .map(|offset| from + offset)
    };
    let mut chunk_size_lines = Vec::new();
    loop {
        let end = line_end(at)?;
        let digits = std::str::from_utf8(&bytes[at..end]).unwrap();
        let size = usize::from_str_radix(digits, 16).expect("a chunk size");
        chunk_size_lines.push(at..end);
        at = end + 2;
        if size == 0 {
            // Trailer fields, up to an empty line.
            loop {
                let end = line_end(at)?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(RequestShape {
                        end: at,
                        chunk_size_lines,
                    });
                }
            }
        }
        if bytes.len() < at + size + 2 {
            return None;
        }
        assert_eq!(&bytes[at + size..at + size + 2], b"\r\n", "chunk data ends");
        at += size + 2;
    }
}

#[test]
fn a_request_is_whole_at_the_end_of_its_framing() {
    let get = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
    assert_eq!(request_shape(&get[..get.len() - 1]), None);
    assert_eq!(request_shape(get).unwrap().end, get.len());

    let post = b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc";
    assert_eq!(request_shape(&post[..post.len() - 1]), None);
    assert_eq!(request_shape(post).unwrap().end, post.len());

    let chunked = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    for cut in 0..chunked.len() {
        assert_eq!(request_shape(&chunked[..cut]), None, "cut at {cut}");
    }
    let shape = request_shape(chunked).unwrap();
    assert_eq!(shape.end, chunked.len());
    let lines: Vec<_> = shape
        .chunk_size_lines
        .iter()
        .map(|r| &chunked[r.clone()])
        .collect();
    assert_eq!(lines, [&b"1A"[..], b"0"]);
}
