//! What a request carries to the application to be followed through it: an `X-Request-Id`
//! (the client's when valid, else a new one), and W3C Trace Context (`traceparent` with the
//! sidecar's own span id, `tracestate` as it came).
//!
//! One grammar, parsed once into [`TraceParent`]. A malformed `traceparent` is replaced by a
//! new trace, never refused: tracing is the operator's concern, not the client's.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `--max-request-id-length`: enough for a UUID, a ULID or most load balancers' ids, with
/// room to spare; short enough that a log line stays a line.
pub const DEFAULT_MAX_REQUEST_ID_LENGTH: usize = 128;

/// A W3C trace id, 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// The request's `traceparent`, as W3C Trace Context level 1 reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceParent {
    /// None came: the sidecar starts no trace of its own.
    Absent,
    /// One well-formed value; its parent id is replaced by the sidecar's span.
    Valid { trace_id: TraceId, flags: u8 },
    /// Several, or one that breaks the grammar: replaced by a new trace.
    Malformed,
}

/// What [`propagate`] made of the request's ids.
#[derive(Debug, Clone)]
pub struct Propagated {
    /// The client sent no request id that is kept: the application receives a new one as
    /// `X-Request-Id`, added as its head is written.
    pub needs_request_id: bool,
    /// The trace the application takes part in: the client's, or a new one when the
    /// client's `traceparent` was malformed; `None` when none came.
    pub trace_id: Option<TraceId>,
}

/// Reads the request's `X-Request-Id` and sets its `traceparent` as the application receives
/// them. A client's valid request id stays in `headers`; an invalid one is removed, and a new
/// one is left to the head's writer rather than inserted: a header value would be an
/// allocation and a hash insertion on every request.
pub fn propagate(headers: &mut HeaderMap, max_request_id_length: usize) -> Propagated {
    // One pass over the names rather than a hash of each: most requests bring neither.
    let (mut has_request_id, mut has_traceparent) = (false, false);
    for name in headers.keys() {
        has_request_id |= *name == REQUEST_ID;
        has_traceparent |= *name == TRACEPARENT;
    }
    let keep = has_request_id && {
        let mut sent = headers.get_all(&REQUEST_ID).iter();
        match (sent.next(), sent.next()) {
            (Some(one), None) => valid_request_id(one.as_bytes(), max_request_id_length),
            _ => false,
        }
    };
    if has_request_id && !keep {
        // Several, or one that is not valid: none of them reaches the application.
        headers.remove(REQUEST_ID);
    }
    let needs_request_id = !keep;
    if !has_traceparent {
        return Propagated {
            needs_request_id,
            trace_id: None,
        };
    }
    let trace_id = match parse_traceparent(headers) {
        TraceParent::Absent => None,
        TraceParent::Valid { trace_id, flags } => {
            headers.insert(TRACEPARENT, traceparent(trace_id, next_id(), flags));
            Some(trace_id)
        }
        TraceParent::Malformed => {
            let trace_id = new_trace_id();
            headers.insert(TRACEPARENT, traceparent(trace_id, next_id(), 0));
            // Its state belongs to the trace that was refused (W3C §3.3.1.1).
            headers.remove(TRACESTATE);
            Some(trace_id)
        }
    };
    Propagated {
        needs_request_id,
        trace_id,
    }
}

/// A client's request id is kept when it is 1 to `max` visible ASCII characters: nothing
/// that could break a log line or a header the application writes back.
pub fn valid_request_id(value: &[u8], max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Reads the request's `traceparent` headers.
pub fn parse_traceparent(headers: &HeaderMap) -> TraceParent {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (None, _) => TraceParent::Absent,
        (Some(one), None) => parse_traceparent_value(one.as_bytes()),
        _ => TraceParent::Malformed,
    }
}

/// `version "-" trace-id "-" parent-id "-" trace-flags`, lowercase hex. Version 00 is exactly
/// that; a later version may add fields after a `-`, which are not read. Version ff, and an
/// all-zero trace or parent id, are invalid.
pub fn parse_traceparent_value(value: &[u8]) -> TraceParent {
    const LENGTH: usize = 55;
    let malformed = TraceParent::Malformed;
    if value.len() < LENGTH {
        return malformed;
    }
    let Some(version) = hex::<1>(&value[0..2]) else {
        return malformed;
    };
    let longer_allowed = match version[0] {
        0x00 => false,
        0xff => return malformed,
        _ => true,
    };
    if value.len() > LENGTH && (!longer_allowed || value[LENGTH] != b'-') {
        return malformed;
    }
    if [2, 35, 52].iter().any(|&i| value[i] != b'-') {
        return malformed;
    }
    let (Some(trace_id), Some(parent_id), Some(flags)) = (
        hex::<16>(&value[3..35]),
        hex::<8>(&value[36..52]),
        hex::<1>(&value[53..55]),
    ) else {
        return malformed;
    };
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return malformed;
    }
    TraceParent::Valid {
        trace_id: TraceId(trace_id),
        flags: flags[0],
    }
}

/// Lowercase hex of exactly `N` bytes.
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// The two lowercase hex digits of each byte: one load per byte written.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

impl TraceId {
    /// Its 32 lowercase hex digits, ASCII.
    pub fn to_hex(self) -> [u8; 32] {
        let mut text = [0; 32];
        write_hex(&mut text, &self.0);
        text
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_hex()).map_err(|_| std::fmt::Error)?)
    }
}

/// `00-{trace}-{span}-{flags}`.
fn traceparent(trace_id: TraceId, span_id: u64, flags: u8) -> HeaderValue {
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    write_hex(&mut text[3..35], &trace_id.0);
    // Never zero: the ids come from a bijection of a counter that skips no value but one.
    write_hex(&mut text[36..52], &span_id.max(1).to_be_bytes());
    write_hex(&mut text[53..55], &[flags]);
    HeaderValue::from_bytes(&text).expect("hex is a header value")
}

/// A request id this hop made: 32 hex digits, unique in this process and unlikely to repeat
/// across processes. Written on the stack; never allocated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 32]);

impl RequestId {
    pub fn new() -> Self {
        let mut text = [0; 32];
        write_hex(&mut text[..16], &next_id().to_be_bytes());
        write_hex(&mut text[16..], &next_id().to_be_bytes());
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Its ASCII digits, for a writer that takes bytes: no UTF-8 check on the request path.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The `X-Request-Id` a head's writer adds, when the client sent none that is kept.
#[derive(Debug, Clone, Copy)]
pub enum NewRequestId<'a> {
    /// One made as the head is written: no one else reads it (the access log is off), so
    /// the request carries none until then.
    Make,
    /// The one the access log says.
    Made(&'a RequestId),
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn new_trace_id() -> TraceId {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&next_id().max(1).to_be_bytes());
    id[8..].copy_from_slice(&next_id().to_be_bytes());
    TraceId(id)
}

/// A process-random start, so two sidecars do not hand out the same ids.
static SEED: LazyLock<u64> = LazyLock::new(|| uuid::Uuid::new_v4().as_u64_pair().0);
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Ids need to be unique, not secret: splitmix64 of a counter is a bijection, so no two calls
/// in a process return the same value, and costs no system call per request.
fn next_id() -> u64 {
    let mut z = SEED.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
