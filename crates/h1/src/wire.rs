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
        self.push_bytes(name, value.as_bytes());
    }

    /// [`Fields::push_str`] for bytes: left out unless each is a tab or visible ASCII.
    pub fn push_bytes(&mut self, name: &HeaderName, value: &[u8]) {
        // Without a branch per byte, so it runs many bytes at a time: a proxy writes a few
        // such values on every request.
        let valid = value.iter().fold(true, |valid, &b| {
            valid & ((b == b'\t') | (b' '..=b'~').contains(&b))
        });
        if valid && self.start(name) {
            self.dst.put_slice(value);
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
    /// The `Transfer-Encoding` lines: one that says `chunked` and nothing else is the only
    /// one read ([`chunked`]).
    transfer_encoding: SmallVec<[Bytes; 1]>,
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
            own.transfer_encoding.push(value);
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

    // Checked before any status is looked at: a head that frames itself wrongly is refused
    // whether or not a body follows, as nginx refuses it.
    let chunked = chunked(&own, minor_version, &headers)?;

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
    let framing = response_framing(status, &headers, chunked, asked == Asked::Head)?;
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

/// Whether the body is chunked: the response's `Transfer-Encoding` is one line that says
/// `chunked` alone (any case, whitespace around it), or there is none. Any other is refused,
/// as nginx (and so Kong) refuses it with a 502:
/// - another coding, or a list, would reach the client still coded, with no field left to
///   say so, since `Transfer-Encoding` is the connection's and goes no further;
/// - two lines are two readings of where the response ends;
/// - in HTTP/1.0 the framing is faulty (RFC 9112 §6.1): a 1.0 peer knows no transfer coding;
/// - a `Content-Length` beside it is a second length for one body, the shape of response
///   smuggling (RFC 9112 §6.3 allows a recipient to read past it; a proxy had better not).
fn chunked(own: &ConnectionFields, minor_version: u8, headers: &HeaderMap) -> Result<bool, Error> {
    let lines = own.transfer_encoding.as_slice();
    if lines.is_empty() {
        return Ok(false);
    }
    if minor_version == 0 {
        return Err(Error::Malformed(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    let [line] = lines else {
        return Err(Error::Malformed("more than one Transfer-Encoding line"));
    };
    if !line.trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return Err(Error::Malformed(
            "unknown Transfer-Encoding: only chunked alone is read",
        ));
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(Error::Malformed(
            "Content-Length and Transfer-Encoding at the same time",
        ));
    }
    Ok(true)
}

fn response_framing(
    status: StatusCode,
    headers: &HeaderMap,
    chunked: bool,
    request_was_head: bool,
) -> Result<ResponseFraming, Error> {
    if request_was_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(ResponseFraming::Empty);
    }
    if chunked {
        return Ok(ResponseFraming::Chunked);
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
mod tests;
