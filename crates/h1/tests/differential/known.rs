//! The comparer, and the differences between tollgate-h1 and hyper's client that the crate's
//! docs list ("Against hyper's client"). A difference a case names must be there: each one
//! edits the two recordings to take it away, and fails if there is nothing to take.

use std::fmt;

use http::header::HeaderName;
use tollgate_h1::wire::is_connection_field;

use crate::clients::Received;
use crate::listener::request_shape;

/// Where the bytes tollgate-h1 sent first differ from hyper's, with the line each has there.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub at: usize,
    pub h1: String,
    pub hyper: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the bytes differ at {}:\n  h1:    {}\n  hyper: {}",
            self.at, self.h1, self.hyper
        )
    }
}

/// The two recordings are the same bytes, or where they first differ.
pub fn compare_bytes(h1: &[u8], hyper: &[u8]) -> Result<(), Mismatch> {
    let Some(at) = (0..h1.len().max(hyper.len())).find(|&i| h1.get(i) != hyper.get(i)) else {
        return Ok(());
    };
    let line_around = |bytes: &[u8]| {
        let at = at.min(bytes.len());
        let start = bytes[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let end = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| at + i + 1);
        format!("{:?}", String::from_utf8_lossy(&bytes[start..end]))
    };
    Err(Mismatch {
        at,
        h1: line_around(h1),
        hyper: line_around(hyper),
    })
}

/// A documented difference between the bytes the two clients send for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDifference {
    /// An empty POST, PUT or PATCH: tollgate-h1 says `content-length: 0` (RFC 9110 §8.6: a
    /// user agent normally does for a method that expects content); hyper says nothing.
    EmptyBodyLength,
    /// A chunk whose size has a hex letter: tollgate-h1 writes it in lower case, hyper in
    /// upper case (RFC 9112 §7.1: hex digits in either case).
    ChunkSizeCase,
    /// Fields of the connection given with the request (RFC 9110 §7.6.1: `Connection`,
    /// `Keep-Alive`, `TE`, `Trailer`, `Upgrade`, `Proxy-Connection`): tollgate-h1 leaves them
    /// out, hyper writes what it is given.
    ConnectionFields,
    /// A `Content-Length` given with the request that is not its body's: tollgate-h1 writes
    /// the body's, hyper the one given, and sends that much of the body (a shorter length
    /// cuts the body; a longer one leaves the request unfinished).
    ClientLength,
    /// A request URI in absolute form (an HTTP/2 client's): tollgate-h1 writes origin form,
    /// hyper's connection-level client writes the URI as it is.
    OriginForm,
    /// A request of HTTP/1.0: tollgate-h1 always speaks HTTP/1.1; hyper writes `HTTP/1.0`.
    AlwaysHttp11,
    /// A WebSocket upgrade: tollgate-h1 writes its own `upgrade: websocket` and
    /// `connection: upgrade` after the request's fields; hyper the request's, where they are.
    WebSocketFields,
    /// A GET or HEAD with a body of unknown length: tollgate-h1 sends it chunked, hyper sends
    /// no body at all.
    UnknownLengthGet,
}

/// A request as recorded: its head's lines (the request line first) and what follows them.
struct Recorded {
    lines: Vec<Vec<u8>>,
    rest: Vec<u8>,
}

impl Recorded {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of head")?;
        let lines = bytes[..end]
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec())
            .collect();
        Ok(Self {
            lines,
            rest: bytes[end + 4..].to_vec(),
        })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.lines.join(&b"\r\n"[..]);
        bytes.extend_from_slice(b"\r\n\r\n");
        bytes.extend_from_slice(&self.rest);
        bytes
    }

    /// Removes the field lines `remove` picks by name and value; how many it removed.
    fn remove_fields(&mut self, remove: impl Fn(&str, &[u8]) -> bool) -> usize {
        let before = self.lines.len();
        let request_line = self.lines.remove(0);
        self.lines.retain(|line| {
            let colon = line.iter().position(|b| *b == b':').unwrap_or(line.len());
            let name = String::from_utf8_lossy(&line[..colon]);
            let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
            !remove(&name, value)
        });
        self.lines.insert(0, request_line);
        before - self.lines.len()
    }

    fn request_line(&mut self) -> &mut Vec<u8> {
        &mut self.lines[0]
    }
}

fn names_connection_field(name: &str) -> bool {
    HeaderName::from_bytes(name.as_bytes()).is_ok_and(|name| is_connection_field(&name))
}

impl RequestDifference {
    /// Edits the two recordings so that this difference is gone; an error if it is not there.
    pub fn reconcile(self, h1: &mut Vec<u8>, hyper: &mut Vec<u8>) -> Result<(), String> {
        let absent = || Err(format!("{self:?} is not there"));
        if self == Self::ChunkSizeCase {
            let shape = request_shape(h1).ok_or("not a whole request")?;
            let before = h1.clone();
            for line in shape.chunk_size_lines {
                h1[line].make_ascii_uppercase();
            }
            return if *h1 == before { absent() } else { Ok(()) };
        }
        let (mut ours, mut theirs) = (Recorded::parse(h1)?, Recorded::parse(hyper)?);
        match self {
            Self::ChunkSizeCase => unreachable!("handled above"),
            Self::EmptyBodyLength => {
                let removed =
                    ours.remove_fields(|name, value| name == "content-length" && value == b"0");
                if removed != 1 || !ours.rest.is_empty() {
                    return absent();
                }
            }
            Self::ConnectionFields => {
                if theirs.remove_fields(|name, _| names_connection_field(name)) == 0 {
                    return absent();
                }
            }
            Self::ClientLength => {
                let length = |recorded: &Recorded| {
                    recorded.lines.iter().find_map(|line| {
                        let value = line.strip_prefix(b"content-length: ")?;
                        std::str::from_utf8(value).ok()?.parse::<usize>().ok()
                    })
                };
                let (Some(ours_length), Some(theirs_length)) = (length(&ours), length(&theirs))
                else {
                    return absent();
                };
                // hyper sends as much of the body as the length it was given says.
                let cut = ours.rest.get(..theirs_length);
                if ours_length == theirs_length || cut != Some(&theirs.rest[..]) {
                    return absent();
                }
                ours.remove_fields(|name, _| name == "content-length");
                theirs.remove_fields(|name, _| name == "content-length");
                theirs.rest.clone_from(&ours.rest);
            }
            Self::OriginForm => {
                let line = theirs.request_line();
                let text = String::from_utf8_lossy(line).into_owned();
                let mut parts = text.splitn(3, ' ');
                let (method, target, version) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let uri: http::Uri = target.parse().map_err(|e| format!("{e}"))?;
                if uri.scheme().is_none() {
                    return absent();
                }
                let origin = uri.path_and_query().map_or("/", |pq| pq.as_str());
                *line = format!("{method} {origin} {version}").into_bytes();
            }
            Self::AlwaysHttp11 => {
                let line = theirs.request_line();
                let Some(start) = line.strip_suffix(b" HTTP/1.0") else {
                    return absent();
                };
                *line = [start, b" HTTP/1.1"].concat();
            }
            Self::WebSocketFields => {
                let own = [&b"upgrade: websocket"[..], b"connection: upgrade"];
                let last = ours.lines.len().saturating_sub(own.len());
                if ours.lines[last..] != own {
                    return absent();
                }
                ours.lines.truncate(ours.lines.len() - own.len());
                let removed =
                    theirs.remove_fields(|name, _| name == "upgrade" || name == "connection");
                if removed == 0 {
                    return absent();
                }
            }
            Self::UnknownLengthGet => {
                let removed = ours.remove_fields(|name, value| {
                    name == "transfer-encoding" && value == b"chunked"
                });
                if removed != 1 || ours.rest.is_empty() || !theirs.rest.is_empty() {
                    return absent();
                }
                ours.rest.clear();
            }
        }
        *h1 = ours.bytes();
        *hyper = theirs.bytes();
        Ok(())
    }
}

/// Checks the two recordings of one request: the same bytes once each difference named is
/// taken away, and each of them there.
pub fn check_request(
    mut h1: Vec<u8>,
    mut hyper: Vec<u8>,
    differences: &[RequestDifference],
) -> Result<(), String> {
    for difference in differences {
        difference.reconcile(&mut h1, &mut hyper)?;
    }
    compare_bytes(&h1, &hyper).map_err(|mismatch| mismatch.to_string())
}

/// A documented difference between what the two clients make of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResponseDifference {
    /// A `Content-Length` on a 101: it is the length of nothing, and tollgate-h1 drops it;
    /// hyper hands it over. (Beside a `Transfer-Encoding`, tollgate-h1 refuses the response.)
    LengthOn101,
    /// The connection's own fields (RFC 9110 §7.6.1), and any field `Connection` names:
    /// tollgate-h1 acts on them and drops them; hyper hands them over.
    ConnectionFields,
    /// Trailer fields of a chunked body: tollgate-h1 reads and drops them; hyper hands them
    /// over as a trailers frame.
    TrailersDropped,
}

/// hyper's `received` as tollgate-h1 is documented to hand it over, and the differences that
/// took something away to get there.
pub fn as_h1_would(received: &Received) -> (Received, Vec<ResponseDifference>) {
    let mut normal = received.clone();
    let mut differences = Vec::new();
    let has = |name: &str| received.headers.iter().any(|(n, _)| n == name);
    if received.status == 101 && has("content-length") {
        normal.headers.retain(|(name, _)| name != "content-length");
        differences.push(ResponseDifference::LengthOn101);
    }
    let named: Vec<String> = received
        .headers
        .iter()
        .filter(|(name, _)| name == "connection")
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|token| token != "close" && token != "keep-alive")
        .collect();
    let before = normal.headers.len();
    normal
        .headers
        .retain(|(name, _)| !names_connection_field(name) && !named.contains(name));
    if normal.headers.len() != before {
        differences.push(ResponseDifference::ConnectionFields);
    }
    if !normal.trailers.is_empty() {
        normal.trailers.clear();
        differences.push(ResponseDifference::TrailersDropped);
    }
    (normal, differences)
}

#[test]
fn a_single_altered_byte_is_a_mismatch_where_it_is() {
    let sent = b"GET /a HTTP/1.1\r\nhost: app\r\nx-a: 1\r\n\r\n";
    assert_eq!(compare_bytes(sent, sent), Ok(()));
    let mut altered = sent.to_vec();
    altered[17] = b'H';
    let mismatch = compare_bytes(sent, &altered).unwrap_err();
    assert_eq!(mismatch.at, 17);
    assert_eq!(mismatch.h1, r#""host: app\r\n""#);
    assert_eq!(mismatch.hyper, r#""Host: app\r\n""#);
    // A stream that stops short, or runs on, differs where the shorter one ends.
    assert_eq!(compare_bytes(sent, &sent[..20]).unwrap_err().at, 20);
    assert_eq!(compare_bytes(&sent[..20], sent).unwrap_err().at, 20);
}

#[test]
fn a_difference_named_must_be_there_and_explains_only_itself() {
    let h1 = b"POST /a HTTP/1.1\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n".to_vec();
    let hyper = b"POST /a HTTP/1.1\r\nx-a: 1\r\n\r\n".to_vec();
    assert!(check_request(h1.clone(), hyper.clone(), &[]).is_err());
    check_request(
        h1.clone(),
        hyper.clone(),
        &[RequestDifference::EmptyBodyLength],
    )
    .unwrap();
    // Not there: the same bytes do not carry it.
    assert!(
        check_request(
            hyper.clone(),
            hyper.clone(),
            &[RequestDifference::EmptyBodyLength]
        )
        .is_err()
    );
    // There, but beside another that is not documented: a field altered in case.
    let altered = b"POST /a HTTP/1.1\r\nX-a: 1\r\n\r\n".to_vec();
    let error = check_request(h1, altered, &[RequestDifference::EmptyBodyLength]).unwrap_err();
    assert!(error.contains("differ at 18"), "{error}");
}

#[test]
fn a_response_is_compared_field_by_field_after_the_documented_differences() {
    let field = |name: &str, value: &str| (name.to_owned(), value.as_bytes().to_vec());
    let hyper = Received {
        status: 200,
        headers: vec![
            field("connection", "keep-alive, x-private"),
            field("transfer-encoding", "chunked"),
            field("x-kept", "1"),
            field("x-private", "1"),
        ],
        body: b"ok".to_vec(),
        trailers: vec![field("x-sum", "1")],
        switched: None,
    };
    let h1 = Received {
        headers: vec![field("x-kept", "1")],
        trailers: Vec::new(),
        ..hyper.clone()
    };
    let (normal, differences) = as_h1_would(&hyper);
    assert_eq!(normal, h1);
    assert_eq!(
        differences,
        [
            ResponseDifference::ConnectionFields,
            ResponseDifference::TrailersDropped
        ]
    );
    // A length beside chunked is no longer explained away: tollgate-h1 refuses that response.
    let mut with_length = hyper.clone();
    with_length.headers.insert(1, field("content-length", "2"));
    assert_ne!(as_h1_would(&with_length).0, h1);
    // An altered value, or a field dropped that is not the connection's, is still seen.
    let mut altered = h1.clone();
    altered.headers[0].1 = b"2".to_vec();
    assert_ne!(normal, altered);
    let dropped = Received {
        headers: Vec::new(),
        ..h1
    };
    assert_ne!(normal, dropped);
}
