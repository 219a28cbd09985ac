//! What a client may hold of a listener, and for how long: the timeouts, connection and stream
//! caps, and lingering close that every tollgate listener applies, as one value
//! ([`ListenerLimits`]) made from one set of flags ([`ListenerLimitArgs`]).
//!
//! The defaults are Kong's where its nginx template sets one, else nginx's, else hyper's.

use std::time::Duration;

/// `--client-header-timeout`: hyper's own default, and nginx's `client_header_timeout` (60 s)
/// halved as a slow head is the cheapest way to hold a connection.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: u64 = 30;
/// `--client-body-timeout`: nginx's `client_body_timeout`.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: u64 = 60;
/// `--client-idle-timeout`: nginx's `keepalive_timeout`, which Kong keeps.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: u64 = 75;
/// `--max-connections`: per listener; Kong's `nginx_events_worker_connections` is 16384 for
/// every port together, and a sidecar has fewer ports and less memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// `--max-concurrent-streams`: nginx's `http2_max_concurrent_streams`.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 128;
/// `--http2-keepalive-interval`: a ping this often on an HTTP/2 connection finds a dead peer.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL: u64 = 30;
/// `--lingering-time`: nginx's `lingering_time`.
pub const DEFAULT_LINGERING_TIME: u64 = 30;
/// `--lingering-timeout`: nginx's `lingering_timeout`.
pub const DEFAULT_LINGERING_TIMEOUT: u64 = 5;
/// `--body-buffer-budget`: bytes of request bodies the whole process may hold in memory at
/// once, for the requests it must read whole.
pub const DEFAULT_BODY_BUFFER_BUDGET: usize = 8 * 1024 * 1024;
/// A ping not answered within this long closes the connection (hyper's default).
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The flags of [`ListenerLimits`], shared by `tollgate sidecar` and `tollgate controller`.
#[derive(Clone, Debug, clap::Args)]
pub struct ListenerLimitArgs {
    /// Seconds a client has to send a request's head, from its first byte (or from the
    /// connection's start). The connection is closed after.
    #[arg(long, env = "TOLLGATE_CLIENT_HEADER_TIMEOUT", default_value_t = DEFAULT_CLIENT_HEADER_TIMEOUT,
          value_parser = seconds)]
    pub client_header_timeout: u64,

    /// Seconds allowed between two reads of a request body. The request fails with 408 (or
    /// the connection is closed when the body is being forwarded).
    #[arg(long, env = "TOLLGATE_CLIENT_BODY_TIMEOUT", default_value_t = DEFAULT_CLIENT_BODY_TIMEOUT,
          value_parser = seconds)]
    pub client_body_timeout: u64,

    /// Seconds a kept-alive connection may wait with no request in flight before it is closed.
    #[arg(long, env = "TOLLGATE_CLIENT_IDLE_TIMEOUT", default_value_t = DEFAULT_CLIENT_IDLE_TIMEOUT,
          value_parser = seconds)]
    pub client_idle_timeout: u64,

    /// Client connections open at once on each listener; past it, new ones wait in the
    /// kernel's accept queue. The sidecar's WebSockets, over all its listeners, are bounded
    /// by it too: past it, a handshake gets 503.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,

    /// Requests in flight at once on one HTTP/2 connection.
    #[arg(long, env = "TOLLGATE_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_MAX_CONCURRENT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_concurrent_streams: u32,

    /// Seconds between keep-alive pings on an HTTP/2 connection; an unanswered ping closes it.
    #[arg(long, env = "TOLLGATE_HTTP2_KEEPALIVE_INTERVAL", default_value_t = DEFAULT_HTTP2_KEEPALIVE_INTERVAL,
          value_parser = seconds)]
    pub http2_keepalive_interval: u64,

    /// Seconds, at most, that the rest of a refused request body (a 413, say) is read and
    /// discarded after the response, so that the client sees the response, not a reset.
    #[arg(long, env = "TOLLGATE_LINGERING_TIME", default_value_t = DEFAULT_LINGERING_TIME,
          value_parser = seconds)]
    pub lingering_time: u64,

    /// Seconds, within --lingering-time, to wait for more of a refused body before closing.
    #[arg(long, env = "TOLLGATE_LINGERING_TIMEOUT", default_value_t = DEFAULT_LINGERING_TIMEOUT,
          value_parser = seconds)]
    pub lingering_timeout: u64,

    /// Bytes of request bodies this process holds in memory at once, over every listener, for
    /// the requests it reads whole (OAuth endpoints, forms read for a token, admission
    /// reviews). When spent, such requests get 503 with Retry-After; streamed traffic is not
    /// affected.
    #[arg(long, env = "TOLLGATE_BODY_BUFFER_BUDGET", default_value_t = DEFAULT_BODY_BUFFER_BUDGET,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(1 << 40)))]
    pub body_buffer_budget: usize,
}

/// The limits of one listener, made once from [`ListenerLimitArgs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub lingering: Lingering,
}

/// How long a refused request body is read and discarded before the connection (HTTP/1.1)
/// or the stream (HTTP/2) is closed: nginx's `lingering_time` and `lingering_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lingering {
    /// In all.
    pub time: Duration,
    /// Between two reads.
    pub timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(DEFAULT_CLIENT_HEADER_TIMEOUT),
            body_timeout: Duration::from_secs(DEFAULT_CLIENT_BODY_TIMEOUT),
            idle_timeout: Duration::from_secs(DEFAULT_CLIENT_IDLE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            http2_keepalive_interval: Duration::from_secs(DEFAULT_HTTP2_KEEPALIVE_INTERVAL),
            http2_keepalive_timeout: HTTP2_KEEPALIVE_TIMEOUT,
            lingering: Lingering {
                time: Duration::from_secs(DEFAULT_LINGERING_TIME),
                timeout: Duration::from_secs(DEFAULT_LINGERING_TIMEOUT),
            },
        }
    }
}

impl ListenerLimitArgs {
    pub fn limits(&self) -> ListenerLimits {
        let secs = Duration::from_secs;
        ListenerLimits {
            header_timeout: secs(self.client_header_timeout),
            body_timeout: secs(self.client_body_timeout),
            idle_timeout: secs(self.client_idle_timeout),
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            http2_keepalive_interval: secs(self.http2_keepalive_interval),
            // A ping answer may take no longer than the interval itself.
            http2_keepalive_timeout: HTTP2_KEEPALIVE_TIMEOUT
                .min(secs(self.http2_keepalive_interval)),
            lingering: Lingering {
                time: secs(self.lingering_time),
                timeout: secs(self.lingering_timeout).min(secs(self.lingering_time)),
            },
        }
    }
}

/// A whole number of seconds, from 1 to a day.
fn seconds(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{value}` is not a number of seconds from 1 to 86400"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: ListenerLimitArgs,
    }

    #[test]
    fn the_flags_default_to_the_documented_limits() {
        let cli = Cli::try_parse_from(["t"]).unwrap();
        assert_eq!(cli.limits.limits(), ListenerLimits::default());
        assert_eq!(cli.limits.body_buffer_budget, DEFAULT_BODY_BUFFER_BUDGET);
    }

    #[test]
    fn a_lingering_timeout_never_outlasts_the_lingering_time() {
        let cli = Cli::try_parse_from(["t", "--lingering-time", "2", "--lingering-timeout", "9"])
            .unwrap();
        let limits = cli.limits.limits();
        assert_eq!(limits.lingering.timeout, Duration::from_secs(2));
    }

    #[test]
    fn zero_seconds_is_refused_with_the_flag_named() {
        let err = Cli::try_parse_from(["t", "--client-idle-timeout", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--client-idle-timeout"), "{err}");
        assert!(err.contains("from 1 to 86400"), "{err}");
    }
}
