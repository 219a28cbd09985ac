//! Forwarding to the application on 127.0.0.1: HTTP/1.1 ([`tollgate_h1`]) over reused
//! connections ([`crate::pool`]), bodies streamed both ways, hop-by-hop headers dropped, Kong's
//! `X-Forwarded-*` and identity headers set.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use tokio::time::timeout;

use crate::body::UpstreamBody;
use crate::gateway::{IdentityHeaders, set_identity};
use crate::pool::{Bound, Origin, Pool, PoolMetrics, ReturningBody};
use tollgate_h1::{self as h1, Exchange};
use tollgate_serve::ConnInfo;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub struct Upstream {
    pool: Arc<Pool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("bad upstream URI: {0}")]
    Uri(#[from] http::Error),
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    /// Kong's `connect_timeout` or `read_timeout` passed.
    #[error("the application did not answer in time")]
    Timeout,
    #[error(transparent)]
    Exchange(#[from] h1::Error),
}

impl Upstream {
    pub fn new(metrics: PoolMetrics) -> Self {
        Self {
            pool: Pool::new(metrics),
        }
    }

    /// Closes expired idle connections every few seconds, until `stop`.
    pub fn sweep_idle(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.pool.clone().sweep_idle(stop)
    }

    /// What one client connection holds of the upstream connections, for its whole life.
    pub fn bind(&self) -> Arc<Bound> {
        Bound::new(self.pool.clone())
    }
}

/// Where a request goes, and how long it may wait: Kong's `connect_timeout` and
/// `read_timeout` of the service.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub port: u16,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

impl Target {
    pub fn of(upstream: &tollgate_api::snapshot::Upstream) -> Self {
        Self {
            port: upstream.port,
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms.into()),
            read_timeout: Duration::from_millis(upstream.read_timeout_ms.into()),
        }
    }
}

/// Sends `request` to the application over a connection `bound` holds or gets.
///
/// Only the I/O is async: the request is built beforehand by [`upstream_request`], so this
/// future, which hyper moves by value with every request, holds little more than it.
pub async fn send(
    request: Request<UpstreamBody>,
    target: Target,
    bound: &Arc<Bound>,
) -> Result<Response<ReturningBody>, ForwardError> {
    let port = target.port;
    let (conn, origin) = bound
        .checkout(port, target.connect_timeout)
        .await
        .map_err(timed_out)?;
    let (parts, body) = request.into_parts();
    let mut exchange = Exchange::new(conn, &parts, body);
    // Kong's `read_timeout` bounds the wait for the response to begin; a timed-out exchange
    // is dropped, and its connection with it.
    let head = match timeout(target.read_timeout, poll_fn(|cx| exchange.poll_head(cx))).await {
        Err(_) => return Err(ForwardError::Timeout),
        Ok(Ok(head)) => head,
        // The application closed a reused keep-alive connection as the request reached it:
        // it did not answer, and an idempotent request without a body goes once more on a new
        // connection, as nginx does.
        Ok(Err(h1::Error::ClosedBeforeResponse | h1::Error::Io(_)))
            if origin == Origin::Reused
                && exchange.received_nothing()
                && exchange.can_resend()
                && parts.method.is_idempotent() =>
        {
            let conn = bound
                .connect(port, target.connect_timeout)
                .await
                .map_err(timed_out)?;
            let resent = exchange.resend_on(conn, &parts);
            exchange = resent.ok_or(h1::Error::ClosedBeforeResponse)?;
            timeout(target.read_timeout, poll_fn(|cx| exchange.poll_head(cx)))
                .await
                .map_err(|_| ForwardError::Timeout)??
        }
        Ok(Err(error)) => return Err(error.into()),
    };
    let body = exchange.into_body(&head);
    let mut response = Response::new(ReturningBody::new(body, port, bound.clone()));
    // The version stays 1.1: it describes the application's hop, not the client's.
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    remove_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// A connect error, with a connect timeout told apart: Kong answers that with 504, not 502.
fn timed_out(error: std::io::Error) -> ForwardError {
    if error.kind() == std::io::ErrorKind::TimedOut {
        ForwardError::Timeout
    } else {
        ForwardError::Connect(error)
    }
}

/// `Host` as the application on `port` receives it: its own address.
pub fn upstream_host(port: u16) -> HeaderValue {
    // An address and a port: always a valid header value.
    HeaderValue::try_from(format!("127.0.0.1:{port}"))
        .unwrap_or(HeaderValue::from_static("127.0.0.1"))
}

/// The `X-Forwarded-*` values that describe a client connection rather than a request: made
/// once per connection, not once per request.
#[derive(Debug, Clone)]
pub struct ForwardedHop {
    client_ip: Option<HeaderValue>,
    local_port: HeaderValue,
    proto: HeaderValue,
}

impl ForwardedHop {
    pub fn new(conn: &ConnInfo) -> Self {
        Self {
            // An IP address is always a valid header value.
            client_ip: HeaderValue::try_from(conn.remote.ip().to_string()).ok(),
            local_port: HeaderValue::from(conn.local.port()),
            proto: HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        }
    }
}

/// The request the application receives: `path` in origin form, hop-by-hop headers dropped,
/// `Host` its own address, and the identity and `X-Forwarded-*` headers set.
pub fn upstream_request(
    mut parts: http::request::Parts,
    body: UpstreamBody,
    host: &HeaderValue,
    rewritten_path: Option<&str>,
    identity: &IdentityHeaders<'_>,
    hop: &ForwardedHop,
) -> Result<Request<UpstreamBody>, ForwardError> {
    // Taken before the request is rewritten: they describe what the client asked for.
    let forwarded_host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .and_then(|host| HeaderValue::from_str(without_port(host)).ok());
    let forwarded_path = HeaderValue::from_str(parts.uri.path()).ok();

    // Origin form on the wire: the connection already names the application. An HTTP/1.1
    // request whose path the route keeps is in origin form already.
    if rewritten_path.is_some() || parts.uri.scheme().is_some() {
        let path = rewritten_path.unwrap_or(parts.uri.path());
        parts.uri = match parts.uri.query() {
            Some(query) => Uri::try_from(format!("{path}?{query}")),
            None => Uri::try_from(path),
        }
        .map_err(http::Error::from)?;
    }
    parts.version = Version::HTTP_11;

    let headers = &mut parts.headers;
    remove_hop_by_hop(headers);
    // Kong does not preserve the client's Host by default: the application sees its own
    // address, as Kong's balancer sends it.
    headers.insert(header::HOST, host.clone());
    set_identity(headers, identity);
    set_forwarded(headers, hop, forwarded_host, forwarded_path);
    Ok(Request::from_parts(parts, body))
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection`: one look at the names is
    // cheaper than hashing seven.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Headers named in `Connection` are hop-by-hop too. `close` and `keep-alive`, almost
    // always all it says, name none: the usual message allocates nothing here.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// `host` without a trailing `:port`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Kong's `X-Forwarded-*` and `X-Real-IP`: the client's address is appended to any
/// `X-Forwarded-For` chain; the others describe this hop.
fn set_forwarded(
    headers: &mut HeaderMap,
    hop: &ForwardedHop,
    host: Option<HeaderValue>,
    path: Option<HeaderValue>,
) {
    let Some(client_ip) = &hop.client_ip else {
        return;
    };
    let chain = match headers.get("x-forwarded-for").map(HeaderValue::as_bytes) {
        Some(existing) => {
            HeaderValue::from_bytes(&[existing, b", ", client_ip.as_bytes()].concat()).ok()
        }
        None => Some(client_ip.clone()),
    };
    let mut set = |name: &'static str, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-forwarded-for", chain);
    set("x-real-ip", Some(client_ip.clone()));
    set("x-forwarded-proto", Some(hop.proto.clone()));
    set("x-forwarded-host", host);
    set("x-forwarded-port", Some(hop.local_port.clone()));
    set("x-forwarded-path", path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{Either, Full};

    #[test]
    fn the_application_gets_origin_form_its_own_host_and_the_identity() {
        let client_request = Request::builder()
            .method("POST")
            .uri("https://iamhost:8443/event/1?a=b")
            .header("host", "iamhost:8443")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("x-consumer-username", "forged")
            .header("x-end-to-end", "kept")
            .body(())
            .unwrap();
        let (parts, ()) = client_request.into_parts();
        let conn = ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            local: "10.0.0.1:8443".parse().unwrap(),
            tls: true,
        };
        let identity = IdentityHeaders::owned(vec![(
            HeaderName::from_static("x-consumer-username"),
            HeaderValue::from_static("ClientApp"),
        )]);
        let body = Either::Right(Full::new(Bytes::from_static(b"{}")));
        let hop = ForwardedHop::new(&conn);
        let host = upstream_host(52773);
        let request = upstream_request(parts, body, &host, Some("/1"), &identity, &hop).unwrap();

        assert_eq!(request.uri(), "/1?a=b");
        assert_eq!(request.version(), Version::HTTP_11);
        let headers = request.headers();
        assert_eq!(headers["host"], "127.0.0.1:52773");
        assert_eq!(headers["x-consumer-username"], "ClientApp");
        assert_eq!(headers.get_all("x-consumer-username").iter().count(), 1);
        assert_eq!(headers["x-forwarded-host"], "iamhost");
        assert_eq!(headers["x-forwarded-path"], "/event/1");
        assert_eq!(headers["x-end-to-end"], "kept");
        assert!(!headers.contains_key("connection"));
        assert!(!headers.contains_key("x-hop"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-end-to-end", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn forwarded_headers_describe_the_client() {
        let conn = ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            local: "10.0.0.1:8443".parse().unwrap(),
            tls: true,
        };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let host = HeaderValue::from_static("iamhost");
        let path = HeaderValue::from_static("/event/1");
        set_forwarded(&mut h, &ForwardedHop::new(&conn), Some(host), Some(path));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.7");
        assert_eq!(h["x-real-ip"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "iamhost");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-forwarded-path"], "/event/1");
    }
}
