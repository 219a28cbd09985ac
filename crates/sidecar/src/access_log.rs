//! The access log (`--access-log text|json`, one line per request on stdout) and the audit
//! lines (failed client authentications, admin revocations), logged whatever the access
//! log's setting.
//!
//! A line holds what identifies a request, never what authenticates it: the path without
//! its query (which may hold `access_token`), no header value but the request id, no body.

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
        match format {
            AccessLogFormat::Off => None,
            AccessLogFormat::Text => Some(self.text()),
            AccessLogFormat::Json => Some(self.json()),
        }
    }

    fn text(&self) -> String {
        let mut line = String::with_capacity(256);
        line.push_str(&rfc3339(self.time));
        let mut field = |key: &str, value: &str| {
            let _ = write!(line, " {key}=");
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
                line.push_str(value);
            } else {
                // JSON string quoting: every control character and quote escaped.
                line.push_str(&serde_json::Value::from(value).to_string());
            }
        };
        field("request_id", self.request_id);
        field("client", &self.client.to_string());
        field("method", self.method);
        field("path", self.path.unwrap_or("-"));
        let service = self.service.map(|(ns, name)| format!("{ns}/{name}"));
        field("service", service.as_deref().unwrap_or("-"));
        field("route", self.route);
        field("status", &self.status.to_string());
        let bytes = self.bytes.map(|b| b.to_string());
        field("bytes", bytes.as_deref().unwrap_or("-"));
        field("duration_ms", &millis(self.duration));
        let upstream = self.upstream_duration.map(millis);
        field("upstream_ms", upstream.as_deref().unwrap_or("-"));
        field("consumer", self.consumer.map(clip).unwrap_or("-"));
        field("client_id", self.client_id.map(clip).unwrap_or("-"));
        let trace = self.trace_id.map(|t| t.to_string());
        field("trace_id", trace.as_deref().unwrap_or("-"));
        line.push('\n');
        line
    }

    fn json(&self) -> String {
        let service = self.service.map(|(ns, name)| format!("{ns}/{name}"));
        let value = serde_json::json!({
            "time": rfc3339(self.time),
            "request_id": self.request_id,
            "client": self.client.to_string(),
            "method": self.method,
            "path": self.path,
            "service": service,
            "route": self.route,
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": self.duration.as_secs_f64() * 1000.0,
            "upstream_ms": self.upstream_duration.map(|d| d.as_secs_f64() * 1000.0),
            "consumer": self.consumer.map(clip),
            "client_id": self.client_id.map(clip),
            "trace_id": self.trace_id.map(|t| t.to_string()),
        });
        let mut line = value.to_string();
        line.push('\n');
        line
    }
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

impl LineSink {
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

fn millis(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
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
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_millis()
    )
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
