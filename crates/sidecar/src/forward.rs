//! Forwarding to the application on 127.0.0.1: HTTP/1.1 ([`tollgate_h1`]) over reused
//! connections ([`crate::pool`]), bodies streamed both ways, the head written straight onto the
//! wire with hop-by-hop fields dropped and Kong's `X-Forwarded-*` and identity headers set.
//! A WebSocket handshake goes the same way, on a new connection of its own ([`upgrade`]).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use tokio::time::timeout;

use crate::body::{RequestBody, ReturningBody, UpstreamBody};
use crate::identity::IdentityHeaders;
use crate::metrics::DroppedHeader;
use crate::pool::{Bound, Origin, Pool, PoolMetrics};
use crate::trace_context::{NewRequestId, REQUEST_ID, RequestId};
use tollgate_canon::header_name::{self, FORWARDED_HEADERS, Verdict};
use tollgate_h1::{self as h1, Exchange};
use tollgate_oauth::bearer::IDENTITY_HEADERS;
use tollgate_serve::ConnInfo;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

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
    /// `held_idle_timeout`: how long a client connection keeps an upstream connection it
    /// does not use (`--upstream-keepalive-idle-timeout`).
    pub fn new(metrics: PoolMetrics, held_idle_timeout: std::time::Duration) -> Self {
        Self {
            pool: Pool::new(metrics, held_idle_timeout),
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

/// Sends the request `head` describes, with `body`, to the application over a connection
/// `bound` holds or gets.
pub async fn send<B: RequestBody>(
    head: &UpstreamHead<'_>,
    body: UpstreamBody<B>,
    target: Target,
    bound: &Arc<Bound>,
) -> Result<Response<ReturningBody<B>>, ForwardError> {
    let port = target.port;
    let (conn, origin) = bound
        .checkout(port, target.connect_timeout)
        .await
        .map_err(timed_out)?;
    let mut exchange = Exchange::new(conn, head, body);
    // Kong's `read_timeout` bounds the wait for the response to begin, and then each wait for
    // more of its body (`ReturningBody`). A timed-out exchange is dropped, and its connection
    // with it.
    let response = match timeout(target.read_timeout, poll_fn(|cx| exchange.poll_head(cx))).await {
        Err(_) => return Err(ForwardError::Timeout),
        Ok(Ok(response)) => response,
        // The application closed a reused keep-alive connection as the request reached it:
        // it did not answer, and an idempotent request without a body goes once more on a new
        // connection, as nginx does.
        Ok(Err(h1::Error::ClosedBeforeResponse | h1::Error::Io(_)))
            if origin == Origin::Reused
                && exchange.received_nothing()
                && exchange.can_resend()
                && head.parts.method.is_idempotent() =>
        {
            let conn = bound
                .connect(port, target.connect_timeout)
                .await
                .map_err(timed_out)?;
            let resent = exchange.resend_on(conn, head);
            exchange = resent.ok_or(h1::Error::ClosedBeforeResponse)?;
            timeout(target.read_timeout, poll_fn(|cx| exchange.poll_head(cx)))
                .await
                .map_err(|_| ForwardError::Timeout)??
        }
        Ok(Err(error)) => return Err(error.into()),
    };
    let body = exchange.into_body(&response);
    // The version stays 1.1: it describes the application's hop, not the client's. The
    // connection's own fields were tollgate-h1's to act on, and are gone already.
    let returning = ReturningBody::new(body, port, bound.clone(), target.read_timeout);
    let mut forwarded = Response::new(returning);
    *forwarded.status_mut() = response.status;
    *forwarded.headers_mut() = response.headers;
    Ok(forwarded)
}

/// The application's answer to a WebSocket handshake.
pub enum Upgrade<B> {
    /// A 101: the response for the client, and the application's side of the tunnel.
    Switched {
        response: Response<()>,
        application: h1::Upgraded,
    },
    /// Anything else, relayed as any response; its connection is closed after it. Boxed:
    /// the rarer answer, and the larger.
    Declined(Box<Response<ReturningBody<B>>>),
}

/// Sends the WebSocket handshake `head` describes (`head.websocket`) to the application, on
/// a new connection: one the application switches is its for good, and no pool ever holds
/// one that was asked to switch, whatever the answer. Kong's `connect_timeout` and
/// `read_timeout` bound the wait for the 101, as for any response. An HTTP/2 client's
/// extended CONNECT (RFC 8441) reaches the application as RFC 6455's HTTP/1.1 handshake.
pub async fn upgrade<B: RequestBody>(
    head: &UpstreamHead<'_>,
    target: Target,
    bound: &Arc<Bound>,
) -> Result<Upgrade<B>, ForwardError> {
    let key = (head.parts.version == Version::HTTP_2).then(new_websocket_key);
    let head = &UpstreamHead {
        websocket_key: key.as_ref(),
        ..*head
    };
    let conn = bound
        .connect(target.port, target.connect_timeout)
        .await
        .map_err(timed_out)?;
    let no_body: UpstreamBody<B> = Either::Right(Full::new(Bytes::new()));
    let mut exchange = Exchange::new(conn, head, no_body);
    let response = timeout(target.read_timeout, poll_fn(|cx| exchange.poll_head(cx)))
        .await
        .map_err(|_| ForwardError::Timeout)??;
    if response.framing != h1::wire::ResponseFraming::Switched {
        let body = exchange.into_body(&response);
        let returning = ReturningBody::new(body, target.port, bound.clone(), target.read_timeout);
        let mut declined = Response::new(returning);
        *declined.status_mut() = response.status;
        *declined.headers_mut() = response.headers;
        return Ok(Upgrade::Declined(Box::new(declined)));
    }
    let application = exchange.into_upgraded()?;
    let mut fields = response.headers;
    let status = if head.websocket_key.is_some() {
        // RFC 8441 §5: an HTTP/2 client is told with a 200, and the accept value answers a
        // key it never sent.
        fields.remove(header::SEC_WEBSOCKET_ACCEPT);
        StatusCode::OK
    } else {
        // The connection's own fields stopped at tollgate-h1; the client's hop gets its own.
        fields.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        fields.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        StatusCode::SWITCHING_PROTOCOLS
    };
    let mut switched = Response::new(());
    *switched.status_mut() = status;
    *switched.headers_mut() = fields;
    Ok(Upgrade::Switched {
        response: switched,
        application,
    })
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1), for the HTTP/1.1
/// handshake made from an HTTP/2 one, which has none (RFC 8441 §5). It proves nothing
/// secret; it only makes the application show that it speaks WebSocket.
fn new_websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let nonce = uuid::Uuid::new_v4().into_bytes();
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    // Base64 is always a valid header value.
    HeaderValue::try_from(key).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
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

/// The head the application receives, written straight onto the wire by [`tollgate_h1`]:
/// the client's method, path and end-to-end fields, then `Host` as the application's own
/// address, the identity headers and Kong's `X-Forwarded-*`.
///
/// The client's own copies of the fields this hop sets are left out, so the application can
/// trust them. Nothing is copied into a second header map: the head is written once, from
/// the client's request and the values the snapshot and the connection hold, as nginx's proxy
/// module writes its upstream request.
#[derive(Clone, Copy)]
pub struct UpstreamHead<'r> {
    pub parts: &'r http::request::Parts,
    /// The path and query the application receives when the route changes the path
    /// ([`rewritten_target`]); otherwise the client's.
    pub rewritten: Option<&'r PathAndQuery>,
    /// `Host`, as the application on this port receives it ([`upstream_host`]).
    pub host: &'r HeaderValue,
    pub identity: &'r IdentityHeaders<'r>,
    pub hop: &'r ForwardedHop,
    /// A WebSocket handshake the gateway checked ([`upgrade`]): the head asks the
    /// application to switch. Any other `Upgrade` of a client is dropped, as a hop's field.
    pub websocket: bool,
    /// With `websocket`, the `Sec-WebSocket-Key` this hop sends in place of the client's:
    /// an HTTP/2 client's extended CONNECT (RFC 8441) has none, and becomes an HTTP/1.1 GET.
    /// [`upgrade`] sets it.
    pub websocket_key: Option<&'r HeaderValue>,
    /// The `X-Request-Id` this hop adds, when the client sent none that is kept (which is
    /// among the client's fields).
    pub request_id: Option<NewRequestId<'r>>,
}

impl h1::RequestHead for UpstreamHead<'_> {
    fn method(&self) -> &http::Method {
        if self.websocket_key.is_some() {
            // RFC 8441 §5: the CONNECT of HTTP/2 is the GET of RFC 6455 on HTTP/1.1.
            return &http::Method::GET;
        }
        &self.parts.method
    }

    fn target(&self) -> Option<&PathAndQuery> {
        // Origin form on the wire, whatever form the client used: the connection already
        // names the application.
        self.rewritten.or(self.parts.uri.path_and_query())
    }

    fn write_fields(&self, fields: &mut h1::Fields<'_>) {
        let headers = &self.parts.headers;
        let named = connection_named(headers);
        let own_key = self.websocket_key.is_some();
        for (name, value) in headers {
            let replaced = set_by_this_hop(name)
                || named.contains(name)
                || (own_key && name == header::SEC_WEBSOCKET_KEY);
            if !replaced {
                fields.push(name, value);
            }
        }
        if let Some(key) = self.websocket_key {
            fields.push(&header::SEC_WEBSOCKET_KEY, key);
        }
        // Kong does not preserve the client's Host by default: the application sees its own
        // address, as Kong's balancer sends it.
        fields.push(&header::HOST, self.host);
        match self.request_id {
            None => {}
            Some(NewRequestId::Made(id)) => fields.push_bytes(&REQUEST_ID, id.as_bytes()),
            // A request sent again on a fresh connection gets another: only the application
            // sees it, as the access log is off.
            Some(NewRequestId::Make) => fields.push_bytes(&REQUEST_ID, RequestId::new().as_bytes()),
        }
        for (name, value) in self.identity.iter() {
            fields.push(name, value);
        }
        // Kong's `X-Forwarded-*` and `X-Real-IP`: the client's address is appended to any
        // `X-Forwarded-For` chain; the others describe this hop and what the client asked for.
        let hop = self.hop;
        if let Some(client_ip) = &hop.client_ip {
            let chain = headers.get_all(X_FORWARDED_FOR);
            fields.push_list(&X_FORWARDED_FOR, chain.iter().chain([client_ip]));
            fields.push(&X_REAL_IP, client_ip);
        }
        fields.push(&X_FORWARDED_PROTO, &hop.proto);
        if let Some(host) = requested_host(self.parts) {
            fields.push_str(&X_FORWARDED_HOST, without_port(host));
        }
        fields.push(&X_FORWARDED_PORT, &hop.local_port);
        fields.push_str(&X_FORWARDED_PATH, self.parts.uri.path());
    }

    fn websocket_upgrade(&self) -> bool {
        self.websocket
    }
}

/// The path and query the application receives when the route makes its path `path`:
/// `None` when that is the client's own path.
pub fn rewritten_target(uri: &Uri, path: &str) -> Result<Option<PathAndQuery>, ForwardError> {
    if path == uri.path() {
        return Ok(None);
    }
    let target = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")),
        None => PathAndQuery::try_from(path),
    };
    Ok(Some(target.map_err(http::Error::from)?))
}

/// Fields the client's own `X-Forwarded-*`, identity headers and `Host` would otherwise
/// give: this hop sets them.
fn set_by_this_hop(name: &HeaderName) -> bool {
    if *name == header::HOST {
        return true;
    }
    // One look at the start settles the usual fields: `authorization`, `accept` and the rest.
    let name = name.as_str();
    name.starts_with("x-")
        && (matches!(
            name,
            "x-forwarded-for"
                | "x-forwarded-proto"
                | "x-forwarded-host"
                | "x-forwarded-port"
                | "x-forwarded-path"
                | "x-real-ip"
        ) || IDENTITY_HEADERS
            .iter()
            .any(|identity| identity.as_str() == name))
}

/// Drops the client's headers an application could take for one this hop sets: those that
/// read, with `_` as `-`, as an identity header, `X-Forwarded-*` or `X-Real-IP`
/// ([`header_name::judge`]); and with `drop_underscore`, every header with `_` in its name.
/// `dropped` is told of each name removed. A request with no such header allocates nothing.
pub fn drop_confusable_headers(
    headers: &mut HeaderMap,
    drop_underscore: bool,
    mut dropped: impl FnMut(DroppedHeader),
) {
    // A static, not the const: the names are borrowed for as long as the judge runs.
    static IDENTITY: [HeaderName; 7] = IDENTITY_HEADERS;
    let protected = || {
        FORWARDED_HEADERS
            .iter()
            .copied()
            .chain(IDENTITY.iter().map(HeaderName::as_str))
    };
    let mut doomed = Vec::new();
    for name in headers.keys() {
        let reason = match header_name::judge(name.as_str(), protected(), drop_underscore) {
            Verdict::Keep => continue,
            Verdict::LookAlike => DroppedHeader::LookAlike,
            Verdict::Underscore => DroppedHeader::Underscore,
        };
        dropped(reason);
        doomed.push(name.clone());
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Fields the client's `Connection` names: they belong to its connection, not the message
/// (RFC 9110 §7.6.1). `close` and `keep-alive`, almost always all it says, name none, and
/// then nothing is allocated.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// The host the client asked for: its `Host`, or the authority of an HTTP/2 request.
fn requested_host(parts: &http::request::Parts) -> Option<&str> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
}

/// `host` without a trailing `:port`.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use h1::wire::{RequestFraming, encode_head};
    use http::Request;

    fn conn() -> ConnInfo {
        ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            local: "10.0.0.1:8443".parse().unwrap(),
            tls: true,
        }
    }

    fn parts_of(request: http::request::Builder) -> http::request::Parts {
        request.body(()).unwrap().into_parts().0
    }

    /// The request line, and each field line as `name: value`, as the application reads them.
    fn on_the_wire(head: &UpstreamHead<'_>) -> (String, Vec<String>) {
        let mut dst = BytesMut::new();
        encode_head(&mut dst, head, RequestFraming::None);
        let text = String::from_utf8(dst.to_vec()).unwrap();
        let text = text
            .strip_suffix("\r\n\r\n")
            .expect("a head ends with an empty line");
        let mut lines = text.split("\r\n").map(str::to_owned);
        let request_line = lines.next().unwrap();
        (request_line, lines.collect())
    }

    /// The head of `parts` as the application on port 52773 receives it from 10.0.0.7.
    fn forwarded(
        parts: &http::request::Parts,
        identity: &IdentityHeaders<'_>,
    ) -> (String, Vec<String>) {
        on_the_wire(&UpstreamHead {
            parts,
            rewritten: None,
            host: &upstream_host(52773),
            identity,
            hop: &ForwardedHop::new(&conn()),
            websocket: false,
            websocket_key: None,
            request_id: None,
        })
    }

    fn value<'l>(fields: &'l [String], name: &str) -> Vec<&'l str> {
        fields
            .iter()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
            .collect()
    }

    #[test]
    fn the_application_gets_origin_form_its_own_host_and_the_identity() {
        let parts = parts_of(
            Request::builder()
                .method("POST")
                .uri("https://iamhost:8443/event/1?a=b")
                .header("host", "iamhost:8443")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "1")
                .header("x-consumer-username", "forged")
                .header("x-forwarded-proto", "forged")
                .header("x-end-to-end", "kept"),
        );
        let identity = IdentityHeaders::owned(vec![(
            HeaderName::from_static("x-consumer-username"),
            HeaderValue::from_static("ClientApp"),
        )]);
        let rewritten = rewritten_target(&parts.uri, "/1").unwrap();
        let head = UpstreamHead {
            parts: &parts,
            rewritten: rewritten.as_ref(),
            host: &upstream_host(52773),
            identity: &identity,
            hop: &ForwardedHop::new(&conn()),
            websocket: false,
            websocket_key: None,
            request_id: None,
        };
        let (request_line, fields) = on_the_wire(&head);

        assert_eq!(request_line, "POST /1?a=b HTTP/1.1");
        assert_eq!(value(&fields, "host"), ["127.0.0.1:52773"]);
        assert_eq!(value(&fields, "x-consumer-username"), ["ClientApp"]);
        assert_eq!(value(&fields, "x-forwarded-proto"), ["https"]);
        assert_eq!(value(&fields, "x-forwarded-host"), ["iamhost"]);
        assert_eq!(value(&fields, "x-forwarded-port"), ["8443"]);
        assert_eq!(value(&fields, "x-forwarded-path"), ["/event/1"]);
        assert_eq!(value(&fields, "x-end-to-end"), ["kept"]);
        assert!(value(&fields, "connection").is_empty(), "{fields:?}");
        assert!(value(&fields, "x-hop").is_empty(), "{fields:?}");
    }

    #[test]
    fn a_websocket_handshake_keeps_its_own_fields_and_says_upgrade_itself() {
        let parts = parts_of(
            Request::builder()
                .uri("/event/ws")
                .header("host", "iamhost")
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-protocol", "chat")
                .header("sec-websocket-extensions", "permessage-deflate"),
        );
        let identity = IdentityHeaders::owned(vec![(
            HeaderName::from_static("x-consumer-username"),
            HeaderValue::from_static("ClientApp"),
        )]);
        let hop = ForwardedHop::new(&conn());
        let head = UpstreamHead {
            parts: &parts,
            rewritten: None,
            host: &upstream_host(52773),
            identity: &identity,
            hop: &hop,
            websocket: true,
            websocket_key: None,
            request_id: None,
        };
        let (request_line, fields) = on_the_wire(&head);
        assert_eq!(request_line, "GET /event/ws HTTP/1.1");
        assert_eq!(value(&fields, "upgrade"), ["websocket"]);
        assert_eq!(value(&fields, "connection"), ["upgrade"]);
        assert_eq!(
            value(&fields, "sec-websocket-key"),
            ["dGhlIHNhbXBsZSBub25jZQ=="]
        );
        assert_eq!(value(&fields, "sec-websocket-version"), ["13"]);
        assert_eq!(value(&fields, "sec-websocket-protocol"), ["chat"]);
        assert_eq!(
            value(&fields, "sec-websocket-extensions"),
            ["permessage-deflate"]
        );
        assert_eq!(value(&fields, "x-consumer-username"), ["ClientApp"]);

        // Not checked as a WebSocket handshake: the client's `Upgrade` is a hop's field.
        let head = UpstreamHead {
            websocket: false,
            ..head
        };
        let (_, fields) = on_the_wire(&head);
        assert!(value(&fields, "upgrade").is_empty(), "{fields:?}");
        assert!(value(&fields, "connection").is_empty(), "{fields:?}");
    }

    #[test]
    fn an_http2_websocket_connect_becomes_an_http11_get_with_a_key_of_this_hops() {
        let mut parts = parts_of(
            Request::builder()
                .method("CONNECT")
                .version(http::Version::HTTP_2)
                .uri("https://iamhost:8443/event/ws?room=1")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "Y2xpZW50J3Mgb3duIGtleQ==")
                .header("sec-websocket-protocol", "chat"),
        );
        parts
            .extensions
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let key = HeaderValue::from_static("dGhpcyBob3AncyBvd24ga2V5");
        let head = UpstreamHead {
            parts: &parts,
            rewritten: None,
            host: &upstream_host(52773),
            identity: &IdentityHeaders::owned(Vec::new()),
            hop: &ForwardedHop::new(&conn()),
            websocket: true,
            websocket_key: Some(&key),
            request_id: None,
        };
        let (request_line, fields) = on_the_wire(&head);
        assert_eq!(request_line, "GET /event/ws?room=1 HTTP/1.1");
        assert_eq!(
            value(&fields, "sec-websocket-key"),
            ["dGhpcyBob3AncyBvd24ga2V5"]
        );
        assert_eq!(value(&fields, "sec-websocket-version"), ["13"]);
        assert_eq!(value(&fields, "sec-websocket-protocol"), ["chat"]);
        assert_eq!(value(&fields, "upgrade"), ["websocket"]);
        assert_eq!(value(&fields, "connection"), ["upgrade"]);
        assert_eq!(value(&fields, "x-forwarded-host"), ["iamhost"]);
    }

    #[test]
    fn the_client_address_ends_the_forwarded_for_chain() {
        let parts = parts_of(
            Request::builder()
                .uri("/event/1")
                .header("host", "iamhost")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-for", "5.6.7.8")
                .header("x-real-ip", "forged"),
        );
        let (request_line, fields) = forwarded(&parts, &IdentityHeaders::owned(Vec::new()));
        assert_eq!(request_line, "GET /event/1 HTTP/1.1");
        assert_eq!(
            value(&fields, "x-forwarded-for"),
            ["1.2.3.4, 5.6.7.8, 10.0.0.7"]
        );
        assert_eq!(value(&fields, "x-real-ip"), ["10.0.0.7"]);
        assert_eq!(value(&fields, "x-forwarded-host"), ["iamhost"]);
    }

    #[test]
    fn client_identity_headers_never_reach_the_application() {
        let mut request = Request::builder().uri("/").header("x-other", "kept");
        for name in &IDENTITY_HEADERS {
            request = request.header(name, "forged");
        }
        let parts = parts_of(request);
        let identity = IdentityHeaders::owned(vec![(
            HeaderName::from_static("x-consumer-id"),
            HeaderValue::from_static("real"),
        )]);
        let (_, fields) = forwarded(&parts, &identity);
        assert!(
            !fields.iter().any(|line| line.ends_with("forged")),
            "{fields:?}"
        );
        assert_eq!(value(&fields, "x-consumer-id"), ["real"]);
        assert_eq!(value(&fields, "x-other"), ["kept"]);
    }

    #[test]
    fn look_alikes_of_the_headers_this_hop_sets_are_dropped() {
        let mut parts = parts_of(
            Request::builder()
                .uri("/")
                .header("x_consumer_username", "forged")
                .header("X_Authenticated_Userid", "forged")
                .header("x_real_ip", "forged")
                .header("x-forwarded_for", "forged")
                .header("custom_header_name", "kept")
                .header("x-other", "kept"),
        );
        let mut reasons = Vec::new();
        drop_confusable_headers(&mut parts.headers, false, |r| reasons.push(r));
        assert_eq!(reasons, [DroppedHeader::LookAlike; 4]);
        let (_, fields) = forwarded(&parts, &IdentityHeaders::owned(Vec::new()));
        assert!(
            !fields.iter().any(|line| line.ends_with("forged")),
            "{fields:?}"
        );
        assert_eq!(value(&fields, "custom_header_name"), ["kept"]);
        assert_eq!(value(&fields, "x-other"), ["kept"]);

        reasons.clear();
        drop_confusable_headers(&mut parts.headers, true, |r| reasons.push(r));
        assert_eq!(reasons, [DroppedHeader::Underscore]);
        assert!(parts.headers.get("custom_header_name").is_none());
        assert_eq!(parts.headers["x-other"], "kept");
    }

    #[test]
    fn a_path_the_route_cannot_make_a_target_of_is_an_error() {
        let uri: Uri = "/event/1?a=b".parse().unwrap();
        assert_eq!(rewritten_target(&uri, "/event/1").unwrap(), None);
        assert_eq!(
            rewritten_target(&uri, "/api/1").unwrap().unwrap(),
            "/api/1?a=b"
        );
        assert!(rewritten_target(&uri, "/a b").is_err());
    }
}
