//! Forwarding to the application on 127.0.0.1: a pooled HTTP/1.1 client, bodies streamed both
//! ways, hop-by-hop headers dropped, Kong's `X-Forwarded-*` and identity headers set.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::UpstreamBody;
use crate::gateway::set_identity;
use tollgate_serve::ConnInfo;

/// Idle upstream connections are kept this long. IRIS's web gateway keeps connections open
/// far longer; a shorter pool timeout means we close first and never reuse a dead socket.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    client: Client<HttpConnector, UpstreamBody>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("bad upstream URI: {0}")]
    Uri(#[from] http::Error),
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
}

impl Upstream {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Self { client }
    }

    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: UpstreamBody,
        port: u16,
        path: &str,
        identity: &[(HeaderName, HeaderValue)],
        conn: &ConnInfo,
    ) -> Result<Response<Incoming>, ForwardError> {
        let original_host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let original_path = parts.uri.path().to_owned();

        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(format!("127.0.0.1:{port}"))
            .path_and_query(path_and_query)
            .build()?;
        parts.version = Version::HTTP_11;

        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        // Kong does not preserve the client's Host by default; the client sets it from the URI.
        headers.remove(header::HOST);
        set_identity(headers, identity);
        set_forwarded(headers, conn, original_host.as_deref(), &original_path);

        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await?;
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection`: one look at the names is
    // cheaper than hashing seven.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Kong's `X-Forwarded-*` and `X-Real-IP`: the client's address is appended to any
/// `X-Forwarded-For` chain; the others describe this hop.
fn set_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&str>, path: &str) {
    let Ok(client_ip) = HeaderValue::try_from(conn.remote.ip().to_string()) else {
        return; // an IP address is always a valid header value
    };
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => HeaderValue::try_from(format!("{existing}, {}", conn.remote.ip())).ok(),
        None => Some(client_ip.clone()),
    };
    let mut set = |name: &'static str, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-forwarded-for", chain);
    set("x-real-ip", Some(client_ip));
    let proto = if conn.tls { "https" } else { "http" };
    set("x-forwarded-proto", Some(HeaderValue::from_static(proto)));
    if let Some(host) = host {
        let host_only = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        set("x-forwarded-host", HeaderValue::from_str(host_only).ok());
    }
    set(
        "x-forwarded-port",
        Some(HeaderValue::from(conn.local.port())),
    );
    set("x-forwarded-path", HeaderValue::from_str(path).ok());
}

#[cfg(test)]
mod tests {
    use super::*;

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
        set_forwarded(&mut h, &conn, Some("iamhost:8443"), "/event/1");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.7");
        assert_eq!(h["x-real-ip"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "iamhost");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-forwarded-path"], "/event/1");
    }
}
