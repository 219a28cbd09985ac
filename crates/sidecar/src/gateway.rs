//! The proxy listener's request path: route, answer the OAuth endpoints, check the bearer
//! token, and forward to the application on 127.0.0.1.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use tollgate_api::Snapshot;
use tollgate_api::snapshot::Service;
use tollgate_canon::path;
use tollgate_oauth::bearer;
use tollgate_oauth::params::{self, BodyKind};
use tollgate_oauth::standard::{self, ClientRequest};
use tollgate_oauth::{AuthorizeRequest, OAuthResponse, Params, TokenRequest, Transport};
use tollgate_store::{KeyPair, StoreKey, StoreKeys, TokenStore};

use crate::body::{self, Incoming, ResponseBody};
use crate::config::BodyLimits;
use crate::forward::{self, ForwardedHop, Upstream};
use crate::identity::{CredentialHeaders, IdentityHeaders};
use crate::metrics::{Metrics, Outcome};
use crate::pool::Bound;
use crate::routes::{Endpoint, METADATA_PATH, RouteTable, upstream_path};
use crate::trusted::TrustedIps;
use tollgate_serve::ConnInfo;

/// The snapshot being served, with the structures derived from it. Swapped whole, so no
/// request ever sees half of a new configuration.
#[derive(Debug)]
pub struct Served {
    pub snapshot: Snapshot,
    pub routes: RouteTable,
    /// The identity headers of each application, built once per snapshot.
    credential_headers: CredentialHeaders,
    /// What each service's requests need, by service index.
    prepared: Vec<PreparedService>,
}

/// What a service's proxied requests need that its snapshot entry only describes: made once
/// per snapshot, not once per request.
#[derive(Debug)]
struct PreparedService {
    /// `authHeaderName` as a header name; `None` when it is not one, and no request has it.
    auth_header: Option<HeaderName>,
    /// `Host` as its application receives it (`127.0.0.1:port`).
    upstream_host: HeaderValue,
    /// Where its application listens, and how long it is waited for.
    target: forward::Target,
}

impl PreparedService {
    /// The value of the service's `authHeaderName` header in `headers`, when it is text.
    fn auth_header_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let value = headers.get(self.auth_header.as_ref()?)?;
        value.to_str().ok()
    }
}

/// The answer to one request, as [`Gateway::handle`] returns it: the proxy path's future
/// itself, or a boxed one for the rarer rest.
type AnswerFuture = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// What the proxy path needs of a request's route, owned: the route table it came from is
/// borrowed from the snapshot, which the proxy's future holds.
#[derive(Debug, Clone, Copy)]
struct ProxyRoute {
    /// Index into `Snapshot::services`.
    service: usize,
    /// Bytes of the path the route strips before it reaches the application.
    strip_len: usize,
}

/// One client connection to the proxy listener, as the gateway sees it.
#[derive(Clone)]
pub struct ClientConnection {
    pub info: ConnInfo,
    /// Its `X-Forwarded-*` values, made once.
    forwarded: ForwardedHop,
    /// The upstream connection this client's requests go over, kept between them.
    upstream: Arc<Bound>,
}

pub struct Gateway<S> {
    served: ArcSwap<Served>,
    store: S,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    trusted_ips: TrustedIps,
    body_limits: BodyLimits,
    /// Bytes of request bodies held in memory at once, over every listener of the sidecar.
    body_budget: tollgate_serve::BodyBudget,
    /// Controller-fed: the Redis store's keys, replaced with each snapshot's.
    snapshot_store_keys: Option<StoreKeys>,
    /// `--upgrade-idle-timeout`.
    upgrade_idle_timeout: std::time::Duration,
    /// A place for each WebSocket open, `--max-connections` in all.
    upgrade_places: Arc<tokio::sync::Semaphore>,
}

/// A WebSocket handshake: what switching it takes, once the application has answered 101.
/// It is checked as any request first.
struct WebSocketHandshake {
    /// The client connection (HTTP/1.1) or stream (HTTP/2), handed over by hyper once the
    /// 101 or 200 is sent.
    client: hyper::upgrade::OnUpgrade,
    /// Keeps the client connection's HTTP timeouts off the tunnel.
    busy: tollgate_serve::InFlight,
}

impl WebSocketHandshake {
    /// The handshake `parts` asks for, taken out of the request: an HTTP/1.1 GET without a
    /// body whose fields ask to switch to `websocket` (RFC 6455 §4.1), or an HTTP/2 CONNECT
    /// whose `:protocol` is `websocket` (RFC 8441 §4). hyper leaves an upgrade in a request
    /// only when it has `Upgrade` or is a CONNECT: any other request pays one look at its
    /// extensions. Other upgrades (`h2c`, say) are never forwarded: their fields are a hop's.
    fn take(parts: &mut http::request::Parts, incoming: &Incoming) -> Option<Self> {
        parts.extensions.get::<hyper::upgrade::OnUpgrade>()?;
        let asks = match parts.version {
            Version::HTTP_11 => {
                parts.method == Method::GET
                    && hyper::body::Body::is_end_stream(incoming)
                    && tollgate_h1::wire::asks_websocket_upgrade(&parts.headers)
            }
            Version::HTTP_2 => {
                let protocol = parts.extensions.get::<hyper::ext::Protocol>();
                parts.method == Method::CONNECT
                    && protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
            }
            _ => false,
        };
        if !asks {
            return None;
        }
        Some(Self {
            client: parts.extensions.remove()?,
            busy: incoming.keep_connection_busy(),
        })
    }
}

/// Where the access token of a request was found; `hideCredentials` removes it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FoundIn {
    Header,
    /// The query string or the body: `hideCredentials` removes it from the query string and
    /// a form body (not from JSON or multipart, as Kong).
    Parameters,
    Nowhere,
}

// === impl Served ===

impl Served {
    pub fn new(snapshot: Snapshot) -> Self {
        let routes = RouteTable::new(&snapshot);
        let credential_headers = CredentialHeaders::new(&snapshot);
        let prepared = snapshot
            .services
            .iter()
            .map(|service| PreparedService {
                auth_header: HeaderName::try_from(&service.oauth2.auth_header_name).ok(),
                upstream_host: forward::upstream_host(service.upstream.port),
                target: forward::Target::of(&service.upstream),
            })
            .collect();
        Self {
            snapshot,
            routes,
            credential_headers,
            prepared,
        }
    }
}

// === impl Gateway ===

impl<S: TokenStore> Gateway<S> {
    pub fn new(
        snapshot: Snapshot,
        store: S,
        metrics: Arc<Metrics>,
        trusted_ips: TrustedIps,
        body_limits: BodyLimits,
        upstream_held_idle_timeout: std::time::Duration,
        upgrades: crate::config::UpgradeLimits,
    ) -> Self {
        metrics.snapshot_version.set(snapshot.version as i64);
        metrics.services.set(snapshot.services.len() as i64);
        Self {
            served: ArcSwap::from_pointee(Served::new(snapshot)),
            store,
            upstream: Upstream::new(metrics.upstream.clone(), upstream_held_idle_timeout),
            metrics,
            trusted_ips,
            body_limits,
            body_budget: tollgate_serve::BodyBudget::new(body_limits.budget),
            snapshot_store_keys: None,
            upgrade_idle_timeout: upgrades.idle_timeout,
            upgrade_places: Arc::new(tokio::sync::Semaphore::new(upgrades.max_open)),
        }
    }

    /// The per-request body limits, and the process's budget of buffered body bytes.
    pub fn body_limits(&self) -> (&BodyLimits, &tollgate_serve::BodyBudget) {
        (&self.body_limits, &self.body_budget)
    }

    /// Takes the store's keys from each snapshot swapped in (a controller-fed sidecar: the
    /// controller sends the key of the pod's namespace).
    pub fn with_snapshot_store_keys(mut self, keys: StoreKeys) -> Self {
        self.snapshot_store_keys = Some(keys);
        self
    }

    /// Replaces the configuration for every request that starts after this call.
    pub fn swap(&self, snapshot: Snapshot) {
        // The keys first: a request under the new snapshot must find its namespace's key.
        if let Some(keys) = &self.snapshot_store_keys {
            keys.replace_namespaces(store_keys_of(&snapshot));
        }
        self.metrics.snapshot_version.set(snapshot.version as i64);
        self.metrics.services.set(snapshot.services.len() as i64);
        self.served.store(Arc::new(Served::new(snapshot)));
    }

    /// Closes the idle upstream connections that expired, every few seconds, until `stop`.
    pub fn sweep_idle_upstream_connections(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.upstream.sweep_idle(stop)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn snapshot(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Starts serving a client connection; its requests go to [`Gateway::handle`].
    pub fn client_connection(&self, info: ConnInfo) -> ClientConnection {
        ClientConnection {
            forwarded: ForwardedHop::new(&info),
            info,
            upstream: self.upstream.bind(),
        }
    }

    /// Routes a request and returns the future that answers it.
    ///
    /// Routing is done here, before any future exists. A proxied request's future is the
    /// proxy path's own, not wrapped in one more: hyper moves that future by value for each
    /// request, and every layer of `async fn` keeps one more copy of the request it was given.
    pub fn handle(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        client: &Arc<ClientConnection>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + use<S> {
        if let Err(refusal) = read_one_way(&mut request) {
            self.metrics.count(Outcome::BadRequest);
            let bad_request = body::message(StatusCode::BAD_REQUEST, refusal);
            return future::Either::Right(Box::pin(future::ready(bad_request)) as AnswerFuture);
        }
        let served = self.served.load_full();
        let path = request.uri().path();
        // RFC 8414's own form puts the route after the well-known path.
        let (route_path, root_metadata) = match path.strip_prefix(METADATA_PATH) {
            Some(route) if route.starts_with('/') => (route, true),
            _ => (path, false),
        };
        let Some(matched) = served.routes.find(route_path) else {
            self.metrics.count(Outcome::NoRoute);
            let not_found =
                body::message(StatusCode::NOT_FOUND, "no Route matched with those values");
            return future::Either::Right(Box::pin(future::ready(not_found)) as AnswerFuture);
        };
        let endpoint = if root_metadata {
            Endpoint::Metadata
        } else {
            matched.endpoint
        };
        if endpoint == Endpoint::Proxy {
            let route = ProxyRoute {
                service: matched.service,
                strip_len: matched.strip_len(),
            };
            let (parts, incoming) = request.into_parts();
            return future::Either::Left(self.clone().proxy(
                parts,
                incoming,
                served,
                route,
                client.clone(),
            ));
        }
        // Boxed: the OAuth endpoints' future holds a body parser and a token issue's Redis
        // calls. Inline, it would make every proxied request's future as large.
        let (gateway, client, service) = (self.clone(), client.clone(), matched.service);
        future::Either::Right(Box::pin(async move {
            gateway
                .endpoint(request, &served, service, endpoint, &client.info)
                .await
        }))
    }

    /// Answers the OAuth endpoints and the metadata document.
    async fn endpoint(
        &self,
        request: Request<Incoming>,
        served: &Served,
        service_index: usize,
        endpoint: Endpoint,
        conn: &ConnInfo,
    ) -> Response<ResponseBody> {
        let service = &served.snapshot.services[service_index];
        self.metrics.count(endpoint.outcome());
        let realm = service.oauth2.realm.as_deref();
        if endpoint == Endpoint::Metadata {
            if !matches!(*request.method(), Method::GET | Method::HEAD) {
                return body::message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
            }
            // From the configured issuer, never from the client's Host.
            return body::oauth(standard::metadata(service));
        }
        if request.method() != Method::POST {
            return body::oauth(OAuthResponse::invalid_method(
                request.method(),
                endpoint.kong_name(),
                realm,
            ));
        }
        let transport = self.transport(&request, service, conn);
        let (parts, incoming) = request.into_parts();
        let read = body::read_bounded(incoming, self.body_limits.oauth, &self.body_budget);
        let params = match read_params(&parts, read).await {
            Ok(params) => params,
            Err(response) => return response,
        };
        let auth_header = served.prepared[service_index].auth_header_value(&parts.headers);
        let snapshot = &served.snapshot;
        let store = &self.store;
        let response = match endpoint {
            Endpoint::Token => {
                let request = TokenRequest {
                    params: &params,
                    auth_header,
                    transport,
                };
                tollgate_oauth::issue_token(store, snapshot, service, request, now_millis()).await
            }
            Endpoint::Authorize => {
                let request = AuthorizeRequest {
                    params: &params,
                    transport,
                };
                tollgate_oauth::authorize(store, snapshot, service, request, now_millis()).await
            }
            Endpoint::Introspect => {
                let request = ClientRequest {
                    params: &params,
                    auth_header,
                    transport,
                };
                standard::introspect(store, snapshot, service, request, now_millis()).await
            }
            Endpoint::Revoke => {
                let request = ClientRequest {
                    params: &params,
                    auth_header,
                    transport,
                };
                standard::revoke(store, snapshot, service, request).await
            }
            Endpoint::Metadata | Endpoint::Proxy => unreachable!("answered above"),
        };
        body::oauth(response)
    }

    /// Whether a request to the OAuth endpoints counts as HTTPS: always on the TLS listener;
    /// on the plain one only as Kong's `check_https` allows.
    fn transport(
        &self,
        request: &Request<Incoming>,
        service: &Service,
        conn: &ConnInfo,
    ) -> Transport {
        const NOT_HTTPS: Transport = Transport::Plain("You must use HTTPS");
        if conn.tls {
            return Transport::Tls;
        }
        if !service.oauth2.accept_http_if_already_terminated
            || !self.trusted_ips.contains(conn.remote.ip())
        {
            return NOT_HTTPS;
        }
        let values: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        match values.as_slice() {
            [one] if one.eq_ignore_ascii_case("https") => Transport::TerminatedUpstream,
            [_, _, ..] => Transport::Plain("Only one X-Forwarded-Proto header allowed"),
            _ => NOT_HTTPS,
        }
    }

    async fn proxy(
        self: Arc<Self>,
        mut parts: http::request::Parts,
        incoming: Incoming,
        served: Arc<Served>,
        route: ProxyRoute,
        client: Arc<ClientConnection>,
    ) -> Response<ResponseBody> {
        let service = &served.snapshot.services[route.service];
        let snapshot = &served.snapshot;
        let conf = &service.oauth2;
        let websocket = WebSocketHandshake::take(&mut parts, &incoming);
        if websocket.is_none() && parts.method == Method::CONNECT {
            // Only a WebSocket is opened with CONNECT here; the sidecar is no proxy to
            // anywhere else, and the application is never asked for a tunnel of another kind.
            self.metrics.count(Outcome::BadRequest);
            return body::message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        }

        // Kong's order: the auth header; only when it is absent, `access_token` in the query
        // string merged with a JSON, form or multipart body (the body wins).
        let mut forwarded_body = Either::Left(incoming);
        let mut form: Option<Bytes> = None;
        // The buffered body's place in the body budget, until it has been forwarded.
        let mut _body_reservation = None;
        let prepared = &served.prepared[route.service];
        let (token, found_in) = match prepared.auth_header_value(&parts.headers) {
            Some(value) => (
                Some(Cow::Borrowed(bearer::token_from_header(value))),
                FoundIn::Header,
            ),
            None => {
                let has_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
                let content_type = header_str(&parts.headers, header::CONTENT_TYPE.as_str());
                let kind = BodyKind::of(content_type);
                let mut found = query_param(parts.uri.query(), "access_token");
                if has_body && kind != BodyKind::Other {
                    let Either::Left(incoming) = forwarded_body else {
                        unreachable!("the body is only taken here");
                    };
                    // Boxed, as a rare path: see `handle`. A body longer than nginx's
                    // `client_body_buffer_size` is streamed unread, as a body with no token.
                    let read = body::read_up_to(
                        incoming,
                        self.body_limits.proxied_form,
                        &self.body_budget,
                    );
                    match Box::pin(read).await {
                        Ok(Ok(buffered)) => {
                            let bytes = buffered.bytes;
                            found = Box::pin(bearer::token_from_params(
                                parts.uri.query(),
                                content_type,
                                bytes.clone(),
                            ))
                            .await;
                            forwarded_body = Either::Right(Full::new(bytes.clone()));
                            if kind == BodyKind::Form {
                                form = Some(bytes);
                            }
                            _body_reservation = Some(buffered.reservation);
                        }
                        Ok(Err(unread)) => forwarded_body = Either::Left(unread),
                        Err(e) => return body::read_error(e),
                    }
                }
                match found {
                    Some(t) => (Some(Cow::Owned(t)), FoundIn::Parameters),
                    None => (None, FoundIn::Nowhere),
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
            Ok(identity) => served.credential_headers.of(&identity),
            Err(refusal) => {
                if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
                    self.metrics.count(Outcome::StoreError);
                    return body::oauth(refusal);
                }
                match conf.anonymous.as_deref() {
                    None => {
                        self.metrics.count(Outcome::Unauthorized);
                        return body::oauth(refusal);
                    }
                    Some(name) => match snapshot.consumer(&service.namespace, name) {
                        Some(consumer) => IdentityHeaders::anonymous(consumer),
                        None => {
                            tracing::error!(service = %service.name, consumer = name, "the anonymous consumer does not exist");
                            self.metrics.count(Outcome::AnonymousMissing);
                            return body::message(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &format!(
                                    "anonymous consumer {name} is configured but doesn't exist"
                                ),
                            );
                        }
                    },
                }
            }
        };

        forward::drop_confusable_headers(
            &mut parts.headers,
            service.upstream.drop_underscore_headers,
            |reason| self.metrics.count_dropped_header(reason),
        );
        if conf.hide_credentials {
            match found_in {
                FoundIn::Header => {
                    parts.headers.remove(conf.auth_header_name.as_str());
                }
                FoundIn::Parameters | FoundIn::Nowhere => {
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

        let path = upstream_path(
            service.upstream.path.as_deref(),
            route.strip_len,
            parts.uri.path(),
        );
        let response = match forward::rewritten_target(&parts.uri, &path) {
            Ok(rewritten) => {
                let head = forward::UpstreamHead {
                    parts: &parts,
                    rewritten: rewritten.as_ref(),
                    host: &prepared.upstream_host,
                    identity: &identity_headers,
                    hop: &client.forwarded,
                    websocket: websocket.is_some(),
                    websocket_key: None,
                };
                match websocket {
                    None => {
                        forward::send(&head, forwarded_body, prepared.target, &client.upstream)
                            .await
                    }
                    // Boxed, as a rare path: see `handle`.
                    Some(handshake) => {
                        let Ok(place) = self.upgrade_places.clone().try_acquire_owned() else {
                            tracing::warn!(
                                "a WebSocket refused: as many as --max-connections are open"
                            );
                            self.metrics.count(Outcome::TooManyUpgrades);
                            return too_many_upgrades();
                        };
                        let upgrade = forward::upgrade(&head, prepared.target, &client.upstream);
                        match Box::pin(upgrade).await {
                            Ok(forward::Upgrade::Switched {
                                response,
                                application,
                            }) => {
                                self.metrics.count(Outcome::Upgraded);
                                tokio::spawn(crate::tunnel::run(
                                    handshake.client,
                                    application,
                                    self.upgrade_idle_timeout,
                                    (handshake.busy, place),
                                ));
                                return response.map(|()| Either::Left(Full::new(Bytes::new())));
                            }
                            Ok(forward::Upgrade::Declined(response)) => Ok(*response),
                            Err(error) => Err(error),
                        }
                    }
                }
            }
            Err(error) => Err(error),
        };
        match response {
            Ok(response) => {
                self.metrics.count(Outcome::Forwarded);
                response.map(Either::Right)
            }
            Err(error @ forward::ForwardError::Timeout) => {
                tracing::warn!(service = %service.name, port = service.upstream.port, %error, "upstream request timed out");
                self.metrics.count(Outcome::UpstreamTimeout);
                body::message(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The upstream server is timing out",
                )
            }
            Err(error) => {
                tracing::warn!(service = %service.name, port = service.upstream.port, %error, "upstream request failed");
                self.metrics.count(Outcome::UpstreamError);
                body::message(
                    StatusCode::BAD_GATEWAY,
                    "An invalid response was received from the upstream server",
                )
            }
        }
    }
}

/// The answer to a WebSocket handshake when every place for one is taken.
fn too_many_upgrades() -> Response<ResponseBody> {
    let mut response = body::message(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Makes `request` one the gateway and the application can read one way only, or says why it
/// is not: exactly one `Host` (none only before HTTP/1.1, RFC 9112 §3.2), and the normal form
/// of its path ([`path::normalize`]), which routing, `stripPath` and the application then all
/// see. The query string is kept byte for byte. A path that is normal already costs nothing.
fn read_one_way<B>(request: &mut Request<B>) -> Result<(), &'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("Bad request: more than one Host header"),
        (None, None) if request.version() == Version::HTTP_11 => {
            return Err("Bad request: no Host header");
        }
        _ => {}
    }
    let normal = match path::normalize(request.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(error) => return Err(error.message()),
    };
    *request.uri_mut() = with_path(request.uri(), &normal).ok_or("Bad request")?;
    Ok(())
}

/// `uri` with its path replaced by `path`, its query kept as it is.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// Reads the OAuth parameters of an endpoint request: query string and `read`, its body.
async fn read_params(
    parts: &http::request::Parts,
    read: impl Future<Output = Result<body::Buffered, body::ReadError>>,
) -> Result<Params, Response<ResponseBody>> {
    // The parameters are parsed into owned values: the body's place in the budget is given
    // back once they are.
    let body::Buffered {
        bytes,
        reservation: _reservation,
    } = read.await.map_err(body::read_error)?;
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

/// The URI without `name=…` in its query, or `None` when its query has no such pair. The
/// other parameters keep their exact bytes.
fn strip_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let kept = params::without_key(uri.query()?.as_bytes(), name)?;
    // Whole pairs of a string, cut at ASCII `&`: still UTF-8.
    let kept = String::from_utf8(kept).ok()?;
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{kept}", uri.path())
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

/// The form body without `name=…`; bytes that are not UTF-8 pass through untouched.
fn strip_form_field(body: &Bytes, name: &str) -> Bytes {
    params::without_key(body, name).map_or_else(|| body.clone(), Bytes::from)
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The store keys a snapshot brings: its namespace's, when the controller sent one that is
/// long enough.
fn store_keys_of(snapshot: &Snapshot) -> Vec<(String, KeyPair)> {
    let Some(key) = &snapshot.store_key else {
        return Vec::new();
    };
    let pair = StoreKey::new(key.current.0.clone()).map(|current| KeyPair {
        current,
        previous: key
            .previous
            .as_ref()
            .and_then(|previous| StoreKey::new(previous.0.clone()).ok()),
    });
    match pair {
        Ok(pair) => vec![(key.namespace.clone(), pair)],
        Err(error) => {
            tracing::warn!(%error, namespace = %key.namespace, "ignored the snapshot's store key");
            Vec::new()
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

    fn read(request: http::request::Builder) -> Result<String, &'static str> {
        let mut request = request.body(()).unwrap();
        read_one_way(&mut request)?;
        Ok(request.uri().to_string())
    }

    #[test]
    fn the_path_is_normalised_and_the_query_kept_byte_for_byte() {
        let get = |uri: &str| Request::get(uri).header("host", "iamhost");
        assert_eq!(
            read(get("/public/%2e%2E/event/1?a=%2e%2e&b=..%2F")).unwrap(),
            "/event/1?a=%2e%2e&b=..%2F"
        );
        assert_eq!(
            read(get("https://iamhost/public/../event")).unwrap(),
            "https://iamhost/event"
        );
        assert_eq!(read(get("/event/1?x")).unwrap(), "/event/1?x");
        assert_eq!(
            read(get("/public/../../event")),
            Err("Bad request: the path climbs above /")
        );
    }

    #[test]
    fn an_http11_request_has_exactly_one_host() {
        let no_host = Request::get("/event");
        assert_eq!(read(no_host), Err("Bad request: no Host header"));
        let two = Request::get("/event")
            .header("host", "a")
            .header("host", "b");
        assert_eq!(read(two), Err("Bad request: more than one Host header"));
        let http10 = Request::get("/event").version(Version::HTTP_10);
        assert_eq!(read(http10).unwrap(), "/event");
        let http2 = Request::get("https://iamhost/event").version(Version::HTTP_2);
        assert_eq!(read(http2).unwrap(), "https://iamhost/event");
    }

    #[test]
    fn strips_access_token_from_form() {
        assert_eq!(
            strip_form_field(
                &Bytes::from_static(b"a=1&access_token=xyz&b=2"),
                "access_token"
            )
            .as_ref(),
            b"a=1&b=2"
        );
        // A field that is not UTF-8 reaches the application byte for byte.
        assert_eq!(
            strip_form_field(
                &Bytes::from_static(b"name=Jos\xe9&access_token=xyz"),
                "access_token"
            )
            .as_ref(),
            b"name=Jos\xe9"
        );
        let untouched = Bytes::from_static(b"a=1&&b");
        assert_eq!(strip_form_field(&untouched, "access_token"), untouched);
    }
}
