//! The wire format of HTTP/1.1 as the sidecar's client speaks it: request heads written, response
//! heads parsed and bodies delimited. Pure functions over buffers, so every rule is tested (and
//! fuzzed, `fuzz/fuzz_targets/upstream_response.rs`) without a socket.

use std::fmt::Write as _;
use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use smallvec::SmallVec;

use crate::Error;

/// The most header fields a response may carry, as in hyper's client.
const MAX_HEADERS: usize = 100;
/// The largest response head, and the largest chunk-size line or trailer section, accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// How a request's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and no length: a GET, HEAD or DELETE with nothing to send.
    None,
    Length(u64),
    Chunked,
}

/// The framing of a request whose body is `exact` bytes long, when that is known.
pub fn request_framing(method: &Method, exact: Option<u64>) -> RequestFraming {
    match exact {
        // Only methods whose requests are expected to carry content say that theirs is empty.
        Some(0) if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) => {
            RequestFraming::None
        }
        Some(length) => RequestFraming::Length(length),
        None => RequestFraming::Chunked,
    }
}

/// A request head as this client writes it.
///
/// The fields that run the connection (RFC 9110 §7.6.1) and the body's framing are this
/// client's: it keeps the connection alive, writes `Content-Length` or `Transfer-Encoding`
/// from the body, and leaves out any of them the head gives. A proxy writes the client's
/// fields and its own straight into the head, without building a second header map.
pub trait RequestHead {
    fn method(&self) -> &Method;
    /// The request target in origin form; `None` is `/`.
    fn target(&self) -> Option<&PathAndQuery>;
    /// Writes the header fields, with [`Fields::push`] and its kin.
    fn write_fields(&self, fields: &mut Fields<'_>);
    /// The request asks to switch the connection to the WebSocket protocol (RFC 6455 §4.1):
    /// the head then says `Upgrade: websocket` and `Connection: upgrade`, the only upgrade
    /// this client ever asks for, and a 101 answer is the connection's last response.
    fn websocket_upgrade(&self) -> bool {
        false
    }
}

/// What the request was, as far as the form of its response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A HEAD request: the response has no body, whatever its headers say.
    Head,
    /// A WebSocket upgrade: a 101 switches the connection to the WebSocket protocol.
    WebSocket,
    /// Any other request: a 101 is an error.
    Other,
}

impl Asked {
    /// What `head` asks of its response.
    pub fn of(head: &impl RequestHead) -> Self {
        if *head.method() == Method::HEAD {
            Asked::Head
        } else if head.websocket_upgrade() {
            Asked::WebSocket
        } else {
            Asked::Other
        }
    }
}

/// The request's fields ask to switch to the WebSocket protocol: `Upgrade` lists
/// `websocket` and `Connection` lists `upgrade`, both case-insensitive tokens (RFC 9110
/// §7.8, RFC 6455 §4.1). Two header lookups, and no allocation, for any other request.
pub fn asks_websocket_upgrade(headers: &HeaderMap) -> bool {
    let lines = |name| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    list_has(lines(header::UPGRADE), b"websocket")
        && list_has(lines(header::CONNECTION), b"upgrade")
}

/// One of the comma-separated elements of the field `lines` is `token` (case-insensitive).
/// A protocol in `Upgrade` may carry a version (`websocket/13`); the name is what counts.
fn list_has<'v>(lines: impl IntoIterator<Item = &'v [u8]>, token: &[u8]) -> bool {
    lines.into_iter().any(|line| {
        line.split(|b| *b == b',').any(|element| {
            let element = element.trim_ascii();
            let name = element.split(|b| *b == b'/').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(token)
        })
    })
}

/// A request as `http` holds it: its URI's path and query, and its headers as they are.
impl RequestHead for http::request::Parts {
    fn method(&self) -> &Method {
        &self.method
    }

    fn target(&self) -> Option<&PathAndQuery> {
        self.uri.path_and_query()
    }

    fn write_fields(&self, fields: &mut Fields<'_>) {
        for (name, value) in &self.headers {
            fields.push(name, value);
        }
    }
}

/// The header section being written. Names and values come typed, so nothing a caller
/// passes can end a line early.
pub struct Fields<'b> {
    dst: &'b mut BytesMut,
}

impl Fields<'_> {
    /// Writes `name: value`, unless `name` is one of the connection's own fields.
    pub fn push(&mut self, name: &HeaderName, value: &HeaderValue) {
        if self.start(name) {
            self.dst.put_slice(value.as_bytes());
            self.dst.put_slice(b"\r\n");
        }
    }

    /// Writes one field whose value is the list of `values` (RFC 9110 §5.3): how a proxy
    /// appends to a list a client sent over several lines.
    pub fn push_list<'v>(
        &mut self,
        name: &HeaderName,
        values: impl IntoIterator<Item = &'v HeaderValue>,
    ) {
        if self.start(name) {
            for (i, value) in values.into_iter().enumerate() {
                if i > 0 {
                    self.dst.put_slice(b", ");
                }
                self.dst.put_slice(value.as_bytes());
            }
            self.dst.put_slice(b"\r\n");
        }
    }

    /// Writes `name: value` for a value cut from others, such as a host without its port.
    /// It is checked as a header value is, and left out if it is not one.
    pub fn push_str(&mut self, name: &HeaderName, value: &str) {
        let valid = value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if valid && self.start(name) {
            self.dst.put_slice(value.as_bytes());
            self.dst.put_slice(b"\r\n");
        }
    }

    fn start(&mut self, name: &HeaderName) -> bool {
        // The body's length is this client's to write, from the body itself.
        if is_connection_field(name) || *name == header::CONTENT_LENGTH {
            return false;
        }
        self.dst.put_slice(name.as_str().as_bytes());
        self.dst.put_slice(b": ");
        true
    }
}

/// The fields of one connection rather than of the message (RFC 9110 §7.6.1): this client
/// acts on them and sets its own, and no head passes them through.
pub fn is_connection_field(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Writes the request line and header section, and the framing of the body.
pub fn encode_head(dst: &mut BytesMut, head: &impl RequestHead, framing: RequestFraming) {
    let target = head.target().map_or("/", PathAndQuery::as_str);
    dst.reserve(512 + target.len());
    dst.put_slice(head.method().as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(target.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\n");
    head.write_fields(&mut Fields { dst: &mut *dst });
    if head.websocket_upgrade() {
        // The head's own `Upgrade` and `Connection` were left out: these are this client's.
        dst.put_slice(b"upgrade: websocket\r\nconnection: upgrade\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            // Writing into a `BytesMut` cannot fail: it grows.
            let _ = write!(dst, "content-length: {length}\r\n");
        }
        RequestFraming::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    dst.put_slice(b"\r\n");
}

/// A response head, and what its body will be.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// The end-to-end fields. The connection's own ([`is_connection_field`], and any field
    /// `Connection` names) were this client's to act on, and go no further.
    pub headers: HeaderMap,
    pub framing: ResponseFraming,
    /// The connection can carry another request after this response.
    pub keep_alive: bool,
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// A response to HEAD, a 1xx, 204 or 304: no body, whatever the headers say.
    Empty,
    Length(u64),
    Chunked,
    /// Neither a length nor chunked: the body ends when the application closes.
    UntilClose,
    /// A 101 to a WebSocket upgrade: no body; the connection's bytes from here on, both
    /// ways, are the WebSocket protocol's, until either side closes.
    Switched,
}

/// Where a field's name and value lie in the bytes read.
#[derive(Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// What the connection's own fields of a response say.
#[derive(Default)]
struct ConnectionFields {
    /// The last `Transfer-Encoding` line: its final coding decides the framing.
    transfer_encoding: Option<Bytes>,
    /// The `Connection` lines.
    connection: SmallVec<[Bytes; 2]>,
    /// The `Upgrade` lines: only a 101 has a use for them.
    upgrade: SmallVec<[Bytes; 1]>,
}

impl ConnectionFields {
    fn connection_has(&self, token: &str) -> bool {
        self.connection_tokens()
            .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    fn connection_tokens(&self) -> impl Iterator<Item = &[u8]> {
        self.connection
            .iter()
            .flat_map(|line| line.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
    }
}

/// Parses a response head from the front of `buf`, taking it out; `None` while it is
/// incomplete. Header values share the bytes read, without a copy. A 101 is an error
/// unless `asked` is a WebSocket upgrade, and then only when it switches to `websocket`.
pub fn parse_head(buf: &mut BytesMut, asked: Asked) -> Result<Option<Head>, Error> {
    // The parser borrows `buf`, which must be cut before the values can share it: where each
    // field lies is noted first. Neither array is written before it is used, so a response
    // costs no clearing of room for a hundred fields.
    let mut spans: SmallVec<[Span; 24]> = SmallVec::new();
    let (length, code, minor_version) = {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let length = match parsed {
            Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD => length,
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
            Ok(_) => return Err(Error::HeadTooLarge),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Malformed("too many headers"));
            }
            Err(_) => return Err(Error::Malformed("invalid response head")),
        };
        let start = buf.as_ptr() as usize;
        // Offsets fit in u32: the head is at most `MAX_HEAD` long.
        let offset = |field: &[u8]| (field.as_ptr() as usize - start) as u32;
        spans.extend(response.headers.iter().map(|field| Span {
            name: (offset(field.name.as_bytes()), field.name.len() as u32),
            value: (offset(field.value), field.value.len() as u32),
        }));
        let code = response.code.ok_or(Error::Malformed("no status code"))?;
        let minor = response.version.ok_or(Error::Malformed("no version"))?;
        (length, code, minor)
    };
    let head = buf.split_to(length).freeze();

    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("invalid status"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS && asked != Asked::WebSocket {
        return Err(Error::Malformed("101 without an upgrade asked for"));
    }
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut own = ConnectionFields::default();
    for span in &spans {
        let (at, len) = (span.name.0 as usize, span.name.1 as usize);
        let name = HeaderName::from_bytes(&head[at..at + len])
            .map_err(|_| Error::Malformed("invalid header name"))?;
        let (at, len) = (span.value.0 as usize, span.value.1 as usize);
        let value = head.slice(at..at + len);
        if name == header::CONNECTION {
            own.connection.push(value);
        } else if name == header::TRANSFER_ENCODING {
            own.transfer_encoding = Some(value);
        } else if name == header::UPGRADE {
            own.upgrade.push(value);
        } else if !is_connection_field(&name) {
            let value = HeaderValue::from_maybe_shared(value)
                .map_err(|_| Error::Malformed("invalid header value"))?;
            headers.append(name, value);
        }
    }
    // Fields `Connection` names belong to the connection too (RFC 9110 §7.6.1). Rare: most
    // say `keep-alive` or `close`, which name none.
    for token in own.connection_tokens() {
        if !token.eq_ignore_ascii_case(b"close")
            && !token.eq_ignore_ascii_case(b"keep-alive")
            && let Ok(name) = HeaderName::from_bytes(token)
        {
            headers.remove(name);
        }
    }

    if status == StatusCode::SWITCHING_PROTOCOLS {
        // RFC 6455 §4.1: a client fails a switch to anything but `websocket`; so does this
        // one, or the application's bytes would reach the client as a protocol it never
        // asked for.
        let upgrade = own.upgrade.iter().map(|line| &line[..]);
        if !list_has(upgrade, b"websocket") || !own.connection_has("upgrade") {
            return Err(Error::Malformed("101 without Upgrade: websocket"));
        }
        headers.remove(header::CONTENT_LENGTH);
        return Ok(Some(Head {
            status,
            headers,
            framing: ResponseFraming::Switched,
            keep_alive: false,
        }));
    }
    let framing = response_framing(status, &headers, &own, asked == Asked::Head)?;
    if matches!(
        framing,
        ResponseFraming::Chunked | ResponseFraming::UntilClose
    ) {
        // A length beside a transfer coding is not the length of anything (RFC 9112 §6.3).
        headers.remove(header::CONTENT_LENGTH);
    }
    let keep_alive = if minor_version == 0 {
        own.connection_has("keep-alive")
    } else {
        !own.connection_has("close")
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

fn response_framing(
    status: StatusCode,
    headers: &HeaderMap,
    own: &ConnectionFields,
    request_was_head: bool,
) -> Result<ResponseFraming, Error> {
    if request_was_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseFraming::Empty);
    }
    if let Some(last) = &own.transfer_encoding {
        let chunked_last = last
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked_last {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let parsed = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::Malformed("invalid content-length"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(Error::Malformed("conflicting content-length"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map_or(ResponseFraming::UntilClose, ResponseFraming::Length))
}

/// Takes a response body out of the bytes read, piece by piece. Pure: fed a buffer, it says
/// what it found, so its rules are tested as functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, with this many bytes of it left.
    ChunkData(u64),
    /// After a chunk's data, expecting its CRLF.
    ChunkEnd,
    /// After the last chunk, expecting trailer fields up to an empty line.
    Trailers,
    UntilClose,
    Done,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next piece: read more.
    NeedMore,
    End,
}

impl Decoder {
    pub fn new(framing: ResponseFraming) -> Self {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) | ResponseFraming::Switched => {
                Decoder::Done
            }
            ResponseFraming::Length(length) => Decoder::Length(length),
            ResponseFraming::Chunked => Decoder::ChunkSize,
            ResponseFraming::UntilClose => Decoder::UntilClose,
        }
    }

    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Error> {
        loop {
            match *self {
                Decoder::Done => return Ok(Decoded::End),
                Decoder::Length(_) | Decoder::ChunkData(_) | Decoder::UntilClose
                    if buf.is_empty() =>
                {
                    return Ok(Decoded::NeedMore);
                }
                Decoder::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
                Decoder::Length(left) => {
                    let data = take(buf, left);
                    let left = left - data.len() as u64;
                    *self = if left == 0 {
                        Decoder::Done
                    } else {
                        Decoder::Length(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Decoder::ChunkData(left) => {
                    let data = take(buf, left);
                    let left = left - data.len() as u64;
                    *self = if left == 0 {
                        Decoder::ChunkEnd
                    } else {
                        Decoder::ChunkData(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Decoder::ChunkSize => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Decoder::Trailers
                    } else {
                        Decoder::ChunkData(size)
                    };
                }
                Decoder::ChunkEnd => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if !line.is_empty() {
                        return Err(Error::Malformed("chunk data longer than its size"));
                    }
                    *self = Decoder::ChunkSize;
                }
                Decoder::Trailers => {
                    // Trailer fields are read and dropped: the sidecar forwards none.
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        *self = Decoder::Done;
                    }
                }
            }
        }
    }

    /// What a body delimited by the connection's end is, once it has ended.
    pub fn at_eof(&mut self) -> Result<Decoded, Error> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(Decoded::End)
            }
            _ => Err(Error::ClosedInBody),
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Decoder::Done
    }
}

/// Up to `left` bytes from the front of `buf`.
fn take(buf: &mut BytesMut, left: u64) -> Bytes {
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    buf.split_to(n).freeze()
}

/// A line from the front of `buf`, without its line ending; `None` while incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    // Looked for only as far as the limit, so a long line fails however it arrives.
    let Some(end) = buf.iter().take(MAX_HEAD + 1).position(|b| *b == b'\n') else {
        if buf.len() > MAX_HEAD {
            return Err(Error::Malformed("chunk line too long"));
        }
        return Ok(None);
    };
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

/// The size in a chunk-size line, its extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::Malformed("invalid chunk size"));
    }
    let digits = std::str::from_utf8(digits).map_err(|_| Error::Malformed("invalid chunk size"))?;
    u64::from_str_radix(digits, 16).map_err(|_| Error::Malformed("invalid chunk size"))
}

#[cfg(test)]
mod tests {
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
        let chunked =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(framing_of(chunked), ResponseFraming::Chunked);
        let head = head_of(chunked, false).unwrap().unwrap();
        assert!(
            !head.headers.contains_key("content-length"),
            "a length beside chunked is dropped"
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            ResponseFraming::UntilClose
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
    fn decode_byte_by_byte(
        mut decoder: Decoder,
        wire: &[u8],
    ) -> Result<(Vec<u8>, BytesMut), Error> {
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
             x-kept: 1\r\nx-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.7\r\nhost: app\r\n\r\n"
        );
    }
}
