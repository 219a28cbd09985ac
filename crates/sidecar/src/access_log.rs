//! The access log (`--access-log text|json`, one line per request on stdout) and the audit
//! lines (failed client authentications, admin revocations), logged whatever the access
//! log's setting.
//!
//! A line holds what identifies a request, never what authenticates it: the path without
//! its query (which may hold `access_token`), no header value but the request id, no body.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::trace_context::TraceId;

/// `--access-log`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// No line per request (audit lines are still logged).
    #[default]
    Off,
    /// `key=value` pairs, values quoted when they need it.
    Text,
    /// One JSON object per line.
    Json,
}

/// Text a client chose (a client id, a consumer name) is cut to this many bytes in a line.
const MAX_CLIENT_TEXT: usize = 128;

/// What the access log says of one request.
#[derive(Debug, Clone)]
pub struct AccessLine<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    /// The normalised path, without the query; `None` when the request had none.
    pub path: Option<&'a str>,
    /// `namespace/name` of the OAuthService it was routed to.
    pub service: Option<(&'a str, &'a str)>,
    /// The route kind: `proxy`, `token`, … (the histogram's `route` label).
    pub route: &'static str,
    pub status: u16,
    /// The response body's length, when it is known as its head is sent.
    pub bytes: Option<u64>,
    /// From the request's head to the response's head.
    pub duration: Duration,
    /// From the request sent to the application to its response's head.
    pub upstream_duration: Option<Duration>,
    pub consumer: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub trace_id: Option<TraceId>,
}

impl AccessLine<'_> {
    /// The line, with its newline; `None` when the log is off.
    pub fn format(&self, format: AccessLogFormat) -> Option<String> {
        let mut line = String::new();
        self.write(format, &mut line).then_some(line)
    }

    /// Appends the line, with its newline, to `line`; `false` (and nothing written) when the
    /// log is off. Each field is written in place: no `String` per field, so a caller that
    /// reuses `line` formats a request's line with no allocation.
    pub fn write(&self, format: AccessLogFormat, line: &mut String) -> bool {
        match format {
            AccessLogFormat::Off => return false,
            AccessLogFormat::Text => self.write_text(line),
            AccessLogFormat::Json => self.write_json(line),
        }
        line.push('\n');
        true
    }

    fn write_text(&self, line: &mut String) {
        write_rfc3339(line, self.time);
        let field = |line: &mut String, key: &str, parts: &[&str]| {
            line.push(' ');
            line.push_str(key);
            line.push('=');
            text_value(line, parts);
        };
        field(line, "request_id", &[self.request_id]);
        line.push_str(" client=");
        push_address(line, self.client);
        field(line, "method", &[self.method]);
        field(line, "path", &[self.path.unwrap_or("-")]);
        match self.service {
            Some((namespace, name)) => field(line, "service", &[namespace, "/", name]),
            None => field(line, "service", &["-"]),
        }
        field(line, "route", &[self.route]);
        line.push_str(" status=");
        push_number(line, u64::from(self.status));
        line.push_str(" bytes=");
        match self.bytes {
            Some(bytes) => push_number(line, bytes),
            None => line.push('-'),
        }
        line.push_str(" duration_ms=");
        write_millis(line, self.duration);
        line.push_str(" upstream_ms=");
        match self.upstream_duration {
            Some(duration) => write_millis(line, duration),
            None => line.push('-'),
        }
        field(line, "consumer", &[self.consumer.map(clip).unwrap_or("-")]);
        field(
            line,
            "client_id",
            &[self.client_id.map(clip).unwrap_or("-")],
        );
        line.push_str(" trace_id=");
        match self.trace_id {
            Some(trace_id) => push_ascii(line, &trace_id.to_hex()),
            None => line.push('-'),
        }
    }

    fn write_json(&self, line: &mut String) {
        line.push_str("{\"time\":\"");
        write_rfc3339(line, self.time);
        line.push_str("\",\"request_id\":");
        json_string(line, &[self.request_id]);
        line.push_str(",\"client\":\"");
        push_address(line, self.client);
        line.push_str("\",\"method\":");
        json_string(line, &[self.method]);
        line.push_str(",\"path\":");
        json_or_null(line, self.path);
        line.push_str(",\"service\":");
        match self.service {
            Some((namespace, name)) => json_string(line, &[namespace, "/", name]),
            None => line.push_str("null"),
        }
        line.push_str(",\"route\":");
        json_string(line, &[self.route]);
        line.push_str(",\"status\":");
        push_number(line, u64::from(self.status));
        line.push_str(",\"bytes\":");
        match self.bytes {
            Some(bytes) => push_number(line, bytes),
            None => line.push_str("null"),
        }
        line.push_str(",\"duration_ms\":");
        write_millis(line, self.duration);
        line.push_str(",\"upstream_ms\":");
        match self.upstream_duration {
            Some(duration) => write_millis(line, duration),
            None => line.push_str("null"),
        }
        line.push_str(",\"consumer\":");
        json_or_null(line, self.consumer.map(clip));
        line.push_str(",\"client_id\":");
        json_or_null(line, self.client_id.map(clip));
        line.push_str(",\"trace_id\":");
        match self.trace_id {
            Some(trace_id) => {
                line.push('"');
                push_ascii(line, &trace_id.to_hex());
                line.push('"');
            }
            None => line.push_str("null"),
        }
        line.push('}');
    }
}

/// A text line's value: as it is when it is visible ASCII with no quote, else quoted as a
/// JSON string, so what a client chose can never start a field or a line of its own.
fn text_value(line: &mut String, parts: &[&str]) {
    let plain = parts.iter().any(|part| !part.is_empty())
        && parts
            .iter()
            .all(|part| part.bytes().all(|b| b.is_ascii_graphic() && b != b'"'));
    if plain {
        parts.iter().for_each(|part| line.push_str(part));
    } else {
        json_string(line, parts);
    }
}

fn json_or_null(line: &mut String, value: Option<&str>) {
    match value {
        Some(value) => json_string(line, &[value]),
        None => line.push_str("null"),
    }
}

/// The concatenation of `parts` as one JSON string, quotes and control characters escaped
/// (RFC 8259 §7).
fn json_string(line: &mut String, parts: &[&str]) {
    line.push('"');
    for part in parts {
        // Without a branch per byte, so it runs many bytes at a time: most values need no
        // escape at all.
        let escapes = part.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if !escapes {
            line.push_str(part);
            continue;
        }
        let mut plain = 0;
        for (at, byte) in part.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Every byte escaped is ASCII, so `plain..at` is on character boundaries.
            line.push_str(&part[plain..at]);
            if escape.is_empty() {
                let _ = write!(line, "\\u{byte:04x}");
            } else {
                line.push_str(escape);
            }
            plain = at + 1;
        }
        line.push_str(&part[plain..]);
    }
    line.push('"');
}

/// Where access lines go: stdout, or (for a test, or an embedding program) a function.
#[derive(Clone, Default)]
pub enum LineSink {
    #[default]
    Stdout,
    Function(Arc<dyn Fn(&str) + Send + Sync>),
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LineSink::Stdout => "Stdout",
            LineSink::Function(_) => "Function",
        })
    }
}

thread_local! {
    /// Each thread's line, reused: once it has grown, a request's line allocates nothing.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A reused line longer than this is given back once written (a path near the header limit).
const KEPT_LINE_CAPACITY: usize = 4096;

impl LineSink {
    /// Formats `line` into this thread's reused buffer and writes it whole.
    pub fn write_access_line(&self, line: &AccessLine<'_>, format: AccessLogFormat) {
        LINE.with_borrow_mut(|buffer| {
            buffer.clear();
            if line.write(format, buffer) {
                self.write(buffer);
            }
            if buffer.capacity() > KEPT_LINE_CAPACITY {
                *buffer = String::new();
            }
        });
    }

    /// Writes one line whole: on stdout, one `write` while stdout is locked, so lines of
    /// concurrent requests never interleave. A failed write (stdout closed) is dropped: the
    /// request it describes is served all the same.
    pub fn write(&self, line: &str) {
        match self {
            LineSink::Stdout => {
                let _ = std::io::stdout().lock().write_all(line.as_bytes());
            }
            LineSink::Function(write) => write(line),
        }
    }
}

/// The audit line of a client that failed to authenticate at an OAuth endpoint. The client
/// id is the one it claimed (never its secret), quoted as text it chose.
pub fn failed_client_authentication(
    endpoint: &'static str,
    service: (&str, &str),
    client: SocketAddr,
    client_id: Option<&str>,
    request_id: &str,
) {
    tracing::warn!(
        target: "tollgate::audit",
        event = "client_authentication_failed",
        endpoint,
        service = %format_args!("{}/{}", service.0, service.1),
        client = %client,
        client_id = ?client_id.map(clip),
        request_id = ?clip(request_id),
        "a client failed to authenticate"
    );
}

/// Milliseconds with three decimals, rounded to the microsecond: `1.500`.
fn write_millis(line: &mut String, duration: Duration) {
    let micros = duration.as_nanos().saturating_add(500) / 1000;
    let micros = u64::try_from(micros).unwrap_or(u64::MAX);
    push_number(line, micros / 1000);
    line.push('.');
    push_digits(line, micros % 1000, 3);
}

/// `value` in decimal, without `fmt`'s machinery (a line has a dozen numbers).
fn push_number(line: &mut String, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    push_ascii(line, &digits[at..]);
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(line: &mut String, value: u64, width: u32) {
    let mut rest = value;
    let mut digits = [b'0'; 8];
    for digit in digits[..width as usize].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    push_ascii(line, &digits[..width as usize]);
}

/// Digits the caller wrote, which are ASCII.
fn push_ascii(line: &mut String, ascii: &[u8]) {
    line.push_str(std::str::from_utf8(ascii).unwrap_or_default());
}

/// `10.0.0.7:5555`, `[::1]:5555`: as `SocketAddr` displays it, IPv4 without `fmt`.
fn push_address(line: &mut String, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    line.push('.');
                }
                push_number(line, u64::from(octet));
            }
            line.push(':');
            push_number(line, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(line, "{address}");
        }
    }
}

/// At most [`MAX_CLIENT_TEXT`] bytes of `text`, cut on a character boundary.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_CLIENT_TEXT {
        return text;
    }
    let mut end = MAX_CLIENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `2026-12-02T16:03:32.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let mut text = String::with_capacity(24);
    write_rfc3339(&mut text, time);
    text
}

fn write_rfc3339(line: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    push_digits(line, u64::try_from(year).unwrap_or(0), 4);
    line.push('-');
    push_digits(line, u64::from(month), 2);
    line.push('-');
    push_digits(line, u64::from(day), 2);
    line.push('T');
    push_digits(line, of_day / 3600, 2);
    line.push(':');
    push_digits(line, of_day % 3600 / 60, 2);
    line.push(':');
    push_digits(line, of_day % 60, 2);
    line.push('.');
    push_digits(line, u64::from(since.subsec_millis()), 3);
    line.push('Z');
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm, which counts in 400-year eras from 0000-03-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
