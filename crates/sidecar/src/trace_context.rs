//! What a request carries to the application to be followed through it: an `X-Request-Id`
//! (the client's when valid, else a new one), and W3C Trace Context (`traceparent` with the
//! sidecar's own span id, `tracestate` as it came).
//!
//! One grammar, parsed once into [`TraceParent`]. A malformed `traceparent` is replaced by a
//! new trace, never refused: tracing is the operator's concern, not the client's.

use std::cell::RefCell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
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

/// What [`propagate`] set on the request, for the access log.
#[derive(Debug, Clone)]
pub struct Propagated {
    /// The trace the application takes part in: the client's, or a new one when the
    /// client's `traceparent` was malformed; `None` when none came.
    pub trace_id: Option<TraceId>,
}

/// Sets the request's `X-Request-Id` and `traceparent` as the application receives them.
/// The request id is left in `headers` (the access log reads it there): copying it out would
/// cost an allocation on every request, with the access log off too.
pub fn propagate(headers: &mut HeaderMap, max_request_id_length: usize) -> Propagated {
    // One pass over the names rather than a hash of each: most requests bring neither.
    let (mut has_request_id, mut has_traceparent) = (false, false);
    for name in headers.keys() {
        has_request_id |= *name == REQUEST_ID;
        has_traceparent |= *name == TRACEPARENT;
    }
    if has_request_id {
        let mut sent = headers.get_all(&REQUEST_ID).iter();
        let keep = match (sent.next(), sent.next()) {
            (Some(one), None) => valid_request_id(one.as_bytes(), max_request_id_length),
            _ => false,
        };
        if !keep {
            // Several, or one that is not valid: `insert` replaces every value sent.
            headers.insert(REQUEST_ID, new_request_id());
        }
    } else {
        headers.insert(REQUEST_ID, new_request_id());
    }
    if !has_traceparent {
        return Propagated { trace_id: None };
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
    Propagated { trace_id }
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

/// Characters of a request id the sidecar makes.
const REQUEST_ID_LENGTH: usize = 32;
/// Request ids written at once into one buffer, which their header values share.
const REQUEST_IDS_PER_BATCH: usize = 64;

thread_local! {
    /// This thread's ids written ahead, and how many of them were handed out.
    static REQUEST_IDS: RefCell<(Bytes, usize)> =
        const { RefCell::new((Bytes::new(), REQUEST_IDS_PER_BATCH)) };
}

/// 32 hex digits, unique in this process and unlikely to repeat across processes.
///
/// A header value owns its bytes, so a new one per request would be an allocation per
/// request. Ids are written [`REQUEST_IDS_PER_BATCH`] at a time instead, and each header
/// value is a share of that buffer: about one allocation per 30 requests. A batch is freed
/// with the last request that holds one of its ids.
pub(crate) fn new_request_id() -> HeaderValue {
    REQUEST_IDS.with_borrow_mut(|(batch, handed_out)| {
        if *handed_out == REQUEST_IDS_PER_BATCH {
            let mut text = vec![0; REQUEST_ID_LENGTH * REQUEST_IDS_PER_BATCH];
            for id in text.chunks_exact_mut(REQUEST_ID_LENGTH) {
                write_hex(&mut id[..16], &next_id().to_be_bytes());
                write_hex(&mut id[16..], &next_id().to_be_bytes());
            }
            *batch = Bytes::from(text);
            *handed_out = 0;
        }
        let start = *handed_out * REQUEST_ID_LENGTH;
        *handed_out += 1;
        let id = batch.slice(start..start + REQUEST_ID_LENGTH);
        HeaderValue::from_maybe_shared(id).expect("hex is a header value")
    })
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
