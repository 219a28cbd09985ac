//! The proxy listener's request path: route, answer the OAuth endpoints, check the bearer
//! token, and forward to the application on 127.0.0.1.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tollgate_api::Snapshot;
use tollgate_api::snapshot::Service;
use tollgate_oauth::bearer::{self, IDENTITY_HEADERS};
use tollgate_oauth::params::BodyKind;
use tollgate_oauth::{OAuthResponse, Params, TokenRequest};
use tollgate_store::TokenStore;

use crate::body::{self, ResponseBody};
use crate::forward::Upstream;
use crate::metrics::Metrics;
use crate::routes::{Endpoint, Matched, RouteTable, upstream_path};
use crate::serve::ConnInfo;

/// The snapshot being served, with the structures derived from it. Swapped whole, so no
/// request ever sees half of a new configuration.
#[derive(Debug)]
pub struct Served {
    pub snapshot: Snapshot,
    pub routes: RouteTable,
}

pub struct Gateway<S> {
    served: ArcSwap<Served>,
    store: S,
    upstream: Upstream,
    metrics: Arc<Metrics>,
}

/// Where the access token of a request was found; `hideCredentials` removes it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FoundIn {
    Header,
    Query,
    FormBody,
    Nowhere,
}

// === impl Served ===

impl Served {
    pub fn new(snapshot: Snapshot) -> Self {
        let routes = RouteTable::new(&snapshot);
        Self { snapshot, routes }
    }
}

// === impl Gateway ===

impl<S: TokenStore> Gateway<S> {
    pub fn new(snapshot: Snapshot, store: S, metrics: Arc<Metrics>) -> Self {
        metrics.snapshot_version.set(snapshot.version as i64);
        metrics.services.set(snapshot.services.len() as i64);
        Self {
            served: ArcSwap::from_pointee(Served::new(snapshot)),
            store,
            upstream: Upstream::new(),
            metrics,
        }
    }

    /// Replaces the configuration for every request that starts after this call.
    pub fn swap(&self, snapshot: Snapshot) {
        self.metrics.snapshot_version.set(snapshot.version as i64);
        self.metrics.services.set(snapshot.services.len() as i64);
        self.served.store(Arc::new(Served::new(snapshot)));
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn snapshot(&self) -> Arc<Served> {
        self.served.load_full()
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let served = self.served.load_full();
        let Some(matched) = served.routes.find(request.uri().path()) else {
            self.metrics.count("no_route");
            return body::message(StatusCode::NOT_FOUND, "no Route matched with those values");
        };
        let service = &served.snapshot.services[matched.service];
        match matched.endpoint {
            Endpoint::Token => {
                self.metrics.count("token_endpoint");
                self.token_endpoint(request, &served.snapshot, service, conn)
                    .await
            }
            Endpoint::Authorize => {
                self.metrics.count("authorize_endpoint");
                self.authorize_endpoint(request, service).await
            }
            Endpoint::Proxy => {
                self.proxy(request, &served.snapshot, service, &matched, conn)
                    .await
            }
        }
    }

    async fn token_endpoint(
        &self,
        request: Request<Incoming>,
        snapshot: &Snapshot,
        service: &Service,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let realm = service.oauth2.realm.as_deref();
        if request.method() != Method::POST {
            return body::oauth(OAuthResponse::invalid_method(
                request.method(),
                "token endpoint",
                realm,
            ));
        }
        let (parts, incoming) = request.into_parts();
        let params = match read_params(&parts, incoming).await {
            Ok(params) => params,
            Err(response) => return response,
        };
        let auth_header = header_str(&parts.headers, &service.oauth2.auth_header_name);
        let response = tollgate_oauth::issue_token(
            &self.store,
            snapshot,
            service,
            TokenRequest {
                params: &params,
                auth_header,
                is_https: conn.tls,
            },
            now_millis(),
        )
        .await;
        body::oauth(response)
    }

    async fn authorize_endpoint(
        &self,
        request: Request<Incoming>,
        service: &Service,
    ) -> Response<ResponseBody> {
        let realm = service.oauth2.realm.as_deref();
        if request.method() != Method::POST {
            return body::oauth(OAuthResponse::invalid_method(
                request.method(),
                "authorization endpoint",
                realm,
            ));
        }
        body::oauth(
            tollgate_oauth::response::OAuthError::bad_request(
                "unsupported_response_type",
                "Invalid response_type",
            )
            .into_response(None),
        )
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        snapshot: &Snapshot,
        service: &Service,
        matched: &Matched<'_>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let conf = &service.oauth2;
        let (mut parts, incoming) = request.into_parts();

        // Kong's order: the auth header; only when it is absent, `access_token` in the query
        // string or a form body (the body wins).
        let mut forwarded_body = Either::Left(incoming);
        let mut form: Option<Bytes> = None;
        let (token, found_in) = match header_str(&parts.headers, &conf.auth_header_name) {
            Some(value) => (
                Some(bearer::token_from_header(value).to_owned()),
                FoundIn::Header,
            ),
            None => {
                let has_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
                let content_type = header_str(&parts.headers, header::CONTENT_TYPE.as_str());
                let mut found = (
                    query_param(parts.uri.query(), "access_token"),
                    FoundIn::Query,
                );
                if has_body && BodyKind::of(content_type) == BodyKind::Form {
                    let Either::Left(incoming) = forwarded_body else {
                        unreachable!("the body is only taken here");
                    };
                    let bytes = match body::read_bounded(incoming).await {
                        Ok(bytes) => bytes,
                        Err(e) => return body::read_error(e),
                    };
                    let params = Params::from_urlencoded(&bytes);
                    if let Some(t) = params.text("access_token") {
                        found = (Some(t.to_owned()), FoundIn::FormBody);
                    }
                    forwarded_body = Either::Right(Full::new(bytes.clone()));
                    form = Some(bytes);
                }
                match found {
                    (Some(t), at) => (Some(t), at),
                    (None, _) => (None, FoundIn::Nowhere),
                }
            }
        };

        let identity_headers = match bearer::authenticate(
            &self.store,
            snapshot,
            service,
            token.as_deref(),
            now_millis(),
        )
        .await
        {
            Ok(identity) => bearer::identity_headers(&identity),
            Err(refusal) => {
                if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
                    self.metrics.count("store_error");
                    return body::oauth(refusal);
                }
                match conf.anonymous.as_deref() {
                    None => {
                        self.metrics.count("unauthorized");
                        return body::oauth(refusal);
                    }
                    Some(name) => match snapshot.consumer(&service.namespace, name) {
                        Some(consumer) => bearer::anonymous_headers(consumer),
                        None => {
                            tracing::error!(service = %service.name, consumer = name, "the anonymous consumer does not exist");
                            self.metrics.count("anonymous_missing");
                            return body::message(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &format!(
                                    "anonymous consumer \"{name}\" is configured but doesn't exist"
                                ),
                            );
                        }
                    },
                }
            }
        };

        if conf.hide_credentials {
            match found_in {
                FoundIn::Header => {
                    parts.headers.remove(conf.auth_header_name.as_str());
                }
                FoundIn::Query | FoundIn::FormBody | FoundIn::Nowhere => {
                    if let Some(stripped) = strip_query_param(&parts.uri, "access_token") {
                        parts.uri = stripped;
                    }
                    if let Some(bytes) = &form {
                        let rewritten = strip_form_field(bytes, "access_token");
                        parts.headers.remove(header::CONTENT_LENGTH);
                        forwarded_body = Either::Right(Full::new(rewritten));
                    }
                }
            }
        }

        let path = upstream_path(service.upstream.path.as_deref(), matched, parts.uri.path());
        let response = self
            .upstream
            .forward(
                parts,
                forwarded_body,
                service.upstream.port,
                &path,
                &identity_headers,
                &conn,
            )
            .await;
        match response {
            Ok(response) => {
                self.metrics.count("forwarded");
                response.map(Either::Right)
            }
            Err(error) => {
                tracing::warn!(service = %service.name, port = service.upstream.port, %error, "upstream request failed");
                self.metrics.count("upstream_error");
                body::message(
                    StatusCode::BAD_GATEWAY,
                    "An invalid response was received from the upstream server",
                )
            }
        }
    }
}

/// Reads the OAuth parameters of an endpoint request: query string and body.
async fn read_params(
    parts: &http::request::Parts,
    incoming: Incoming,
) -> Result<Params, Response<ResponseBody>> {
    let bytes = body::read_bounded(incoming)
        .await
        .map_err(body::read_error)?;
    let content_type = header_str(&parts.headers, header::CONTENT_TYPE.as_str());
    Params::parse(parts.uri.query(), content_type, bytes)
        .await
        .map_err(|e| {
            body::oauth(
                tollgate_oauth::response::OAuthError::bad_request("invalid_request", e.to_string())
                    .into_response(None),
            )
        })
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    Params::from_urlencoded(query?.as_bytes())
        .text(name)
        .map(str::to_owned)
}

/// The URI without `name=…` in its query. Other parameters keep their exact bytes.
fn strip_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair_has_key(pair, name))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut builder = Uri::builder();
    if let Some(scheme) = uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.clone());
    }
    builder.path_and_query(path_and_query).build().ok()
}

fn strip_form_field(body: &[u8], name: &str) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let kept: Vec<&str> = text
        .split('&')
        .filter(|pair| !pair_has_key(pair, name))
        .collect();
    Bytes::from(kept.join("&"))
}

fn pair_has_key(pair: &str, name: &str) -> bool {
    let key = pair.split('=').next().unwrap_or("");
    form_urlencoded::parse(format!("{key}=").as_bytes())
        .next()
        .is_some_and(|(k, _)| k == name)
}

pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Removes the identity headers a client sent, then sets the gateway's own.
pub(crate) fn set_identity(headers: &mut HeaderMap, identity: &[(HeaderName, String)]) {
    for name in &IDENTITY_HEADERS {
        headers.remove(name);
    }
    for (name, value) in identity {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_access_token_from_query_only() {
        let uri: Uri = "/event/1?a=1&access_token=xyz&b=%20x".parse().unwrap();
        assert_eq!(
            strip_query_param(&uri, "access_token").unwrap(),
            "/event/1?a=1&b=%20x"
        );
        let uri: Uri = "/event/1?access_token=xyz".parse().unwrap();
        assert_eq!(strip_query_param(&uri, "access_token").unwrap(), "/event/1");
        let uri: Uri = "/event/1?access%5Ftoken=xyz&c".parse().unwrap();
        assert_eq!(
            strip_query_param(&uri, "access_token").unwrap(),
            "/event/1?c"
        );
    }

    #[test]
    fn strips_access_token_from_form() {
        assert_eq!(
            strip_form_field(b"a=1&access_token=xyz&b=2", "access_token").as_ref(),
            b"a=1&b=2"
        );
    }

    #[test]
    fn client_identity_headers_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-consumer-id", HeaderValue::from_static("forged"));
        headers.insert("x-anonymous-consumer", HeaderValue::from_static("true"));
        headers.insert("x-other", HeaderValue::from_static("kept"));
        set_identity(
            &mut headers,
            &[(HeaderName::from_static("x-consumer-id"), "real".into())],
        );
        assert_eq!(headers.get("x-consumer-id").unwrap(), "real");
        assert!(headers.get("x-anonymous-consumer").is_none());
        assert_eq!(headers.get("x-other").unwrap(), "kept");
    }
}
