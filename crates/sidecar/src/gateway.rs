//! The proxy listener's request path: route, answer the OAuth endpoints, check the bearer
//! token, and forward to the application on 127.0.0.1.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response};
use http_body_util::{Either, Full};
use tollgate_api::Snapshot;
use tollgate_api::snapshot::Service;
use tollgate_oauth::params::BodyKind;
use tollgate_oauth::standard::{self, ClientRequest};
use tollgate_oauth::token_location;
use tollgate_oauth::{AuthorizeRequest, OAuthResponse, Params, TokenRequest, Transport, bearer};
use tollgate_serve::ConnInfo;
use tollgate_store::{StoreKeys, TokenStore};

use crate::body::{self, BodyLimits, RequestBody, ResponseBody};
use crate::cors;
use crate::forward::{self, ForwardedHop, Upstream};
use crate::identity::IdentityHeaders;
use crate::metrics::{Metrics, Outcome};
use crate::observe::{OAuthRequest, ObserveSettings, Observer, Seen, ServiceDurations};
use crate::pool::Bound;
use crate::proxy_error::ProxyError;
use crate::routes::{Endpoint, METADATA_PATH, upstream_path};
pub use crate::served::Served;
use crate::served::store_keys_of;
use crate::trusted::TrustedIps;
use crate::tunnel::{self, Handshake, UpgradeLimits};
use crate::unambiguous::read_one_way;

/// The answer to one request, as [`Gateway::handle`] returns it: the proxy path's future
/// itself, or a boxed one for the rarer rest.
type AnswerFuture<B> = Pin<Box<dyn Future<Output = Response<ResponseBody<B>>> + Send>>;

/// What the proxy path needs of a request's route, owned: the route table it came from is
/// borrowed from the snapshot, which the proxy's future holds.
#[derive(Debug, Clone, Copy)]
struct ProxyRoute {
    /// Index into `Snapshot::services`.
    service: usize,
    /// Bytes of the path the route strips before it reaches the application.
    strip_len: usize,
}

/// What a proxied request's answer gets on its way out: its recording, its CORS headers.
struct Answered {
    seen: Seen,
    cors: Option<Box<cors::ResponseHeaders>>,
}

impl Answered {
    fn finish<T: hyper::body::Body>(
        self,
        observer: &Observer,
        service: &ServiceDurations,
        response: Response<T>,
    ) -> Response<T> {
        self.seen
            .finish(observer, Some(service), cors::add(response, self.cors))
    }
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
    /// Request ids, trace context, the duration histogram and the access log.
    observer: Arc<Observer>,
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
        upgrades: UpgradeLimits,
    ) -> Self {
        metrics.snapshot_version.set(snapshot.version as i64);
        metrics.services.set(snapshot.services.len() as i64);
        let metrics_for_observer = metrics.clone();
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
            observer: Observer::new(metrics_for_observer, ObserveSettings::default()),
        }
    }

    /// Sets `--access-log` and `--max-request-id-length`.
    pub fn with_observe_settings(mut self, settings: ObserveSettings) -> Self {
        self.observer = Observer::new(self.metrics.clone(), settings);
        self
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
    pub fn swap(&self, snapshot: impl Into<Arc<Snapshot>>) {
        let snapshot: Arc<Snapshot> = snapshot.into();
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

    /// Routes a request and returns the future that answers it. `B` is the listener's
    /// [`Incoming`](crate::body::Incoming), or [`Full`] for a caller that holds the whole
    /// body (a test): the gateway is the same code for both, with nothing boxed for it.
    ///
    /// Routing is done here, before any future exists. A proxied request's future is the
    /// proxy path's own, not wrapped in one more: hyper moves that future by value for each
    /// request, and every layer (an `async fn`, a `map`) keeps one more copy of what it was
    /// given. So the proxy path itself records its answer and adds its CORS headers.
    pub fn handle<B: RequestBody>(
        self: &Arc<Self>,
        mut request: Request<B>,
        client: &Arc<ClientConnection>,
    ) -> impl Future<Output = Response<ResponseBody<B>>> + Send + use<S, B> {
        let mut seen = self.observer.begin(&mut request, client.info.remote);
        if let Err(refusal) = read_one_way(&mut request) {
            let bad_request = seen.finish(
                &self.observer,
                None,
                self.refuse(ProxyError::Unreadable(refusal)),
            );
            return future::Either::Right(Box::pin(future::ready(bad_request)) as AnswerFuture<B>);
        }
        let served = self.served.load_full();
        seen.read(request.uri());
        let path = request.uri().path();
        // RFC 8414's own form puts the route after the well-known path.
        let (route_path, root_metadata) = match path.strip_prefix(METADATA_PATH) {
            Some(route) if route.starts_with('/') => (route, true),
            _ => (path, false),
        };
        let Some(matched) = served.routes.find(route_path) else {
            let not_found = seen.finish(&self.observer, None, self.refuse(ProxyError::NoRoute));
            return future::Either::Right(Box::pin(future::ready(not_found)) as AnswerFuture<B>);
        };
        // Before the service's other rules: a preflight carries no token and is no POST.
        let cors = match cors::Step::of(
            served.snapshot.services[matched.service].cors.as_ref(),
            &request,
        ) {
            cors::Step::Answer(preflight) => {
                self.metrics.count(Outcome::CorsPreflight);
                let preflight = seen.finish(&self.observer, None, body::own(preflight));
                return future::Either::Right(Box::pin(future::ready(preflight)) as AnswerFuture<B>);
            }
            cors::Step::Continue(headers) => headers,
        };
        let endpoint = if root_metadata {
            Endpoint::Metadata
        } else {
            matched.endpoint
        };
        seen.routed(endpoint);
        if endpoint == Endpoint::Proxy {
            let route = ProxyRoute {
                service: matched.service,
                strip_len: matched.strip_len(),
            };
            let (parts, incoming) = request.into_parts();
            let answered = Answered { seen, cors };
            return future::Either::Left(self.clone().proxy(
                parts,
                incoming,
                served,
                route,
                client.clone(),
                answered,
            ));
        }
        // Boxed: the OAuth endpoints' future holds a body parser and a token issue's Redis
        // calls. Inline, it would make every proxied request's future as large.
        let (gateway, client, service) = (self.clone(), client.clone(), matched.service);
        let audit_id = seen.audit_request_id(request.headers());
        future::Either::Right(Box::pin(async move {
            let response = match gateway
                .endpoint(
                    request,
                    &served,
                    service,
                    endpoint,
                    &client.info,
                    audit_id.as_str(),
                )
                .await
            {
                Ok(response) => body::own(response),
                Err(error) => gateway.refuse(error),
            };
            let durations = &served.prepared[service].durations;
            seen.finish(
                &gateway.observer,
                Some(durations),
                cors::add(response, cors),
            )
        }))
    }

    /// The answer to a request the gateway refuses or cannot serve, counted under its
    /// outcome.
    fn refuse<B>(&self, error: ProxyError) -> Response<ResponseBody<B>> {
        if let Some(outcome) = error.outcome() {
            self.metrics.count(outcome);
        }
        body::own(error.into_response())
    }

    /// Answers the OAuth endpoints and the metadata document.
    async fn endpoint<B: RequestBody>(
        &self,
        request: Request<B>,
        served: &Served,
        service_index: usize,
        endpoint: Endpoint,
        conn: &ConnInfo,
        request_id: Option<&str>,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let service = &served.snapshot.services[service_index];
        self.metrics.count(endpoint.outcome());
        let realm = service.oauth2.realm.as_deref();
        if endpoint == Endpoint::Metadata {
            if !matches!(*request.method(), Method::GET | Method::HEAD) {
                return Err(ProxyError::MetadataMethod);
            }
            // From the configured issuer, never from the client's Host.
            return Ok(body::oauth(standard::metadata(service)));
        }
        if request.method() != Method::POST {
            let kong_name = endpoint.kong_name();
            let refusal = OAuthResponse::invalid_method(request.method(), kong_name, realm);
            return Err(ProxyError::EndpointMethod(refusal));
        }
        let transport = self.transport(request.headers(), service, conn);
        let (parts, incoming) = request.into_parts();
        let read = body::read_bounded(incoming, self.body_limits.oauth, &self.body_budget);
        let params = read_params(&parts, read).await?;
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
        let answered = OAuthRequest {
            endpoint,
            service,
            params: &params,
            auth_header,
            request_id,
            client: conn.remote,
        };
        self.observer.oauth_answered(answered, &response);
        Ok(body::oauth(response))
    }

    /// Whether a request to the OAuth endpoints counts as HTTPS: always on the TLS listener;
    /// on the plain one only as Kong's `check_https` allows.
    fn transport(&self, headers: &HeaderMap, service: &Service, conn: &ConnInfo) -> Transport {
        const NOT_HTTPS: Transport = Transport::Plain("You must use HTTPS");
        if conn.tls {
            return Transport::Tls;
        }
        if !service.oauth2.accept_http_if_already_terminated
            || !self.trusted_ips.contains(conn.remote.ip())
        {
            return NOT_HTTPS;
        }
        let values: Vec<&str> = headers
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

    async fn proxy<B: RequestBody>(
        self: Arc<Self>,
        mut parts: http::request::Parts,
        incoming: B,
        served: Arc<Served>,
        route: ProxyRoute,
        client: Arc<ClientConnection>,
        mut answered: Answered,
    ) -> Response<ResponseBody<B>> {
        // Every way out of the block is an answer, recorded below.
        let response = 'answer: {
            let service = &served.snapshot.services[route.service];
            let snapshot = &served.snapshot;
            let conf = &service.oauth2;
            let websocket = Handshake::take(&mut parts, &incoming);
            if websocket.is_none() && parts.method == Method::CONNECT {
                break 'answer self.refuse(ProxyError::ConnectWithoutWebSocket);
            }

            // Kong's order ([`token_location`]): the auth header; only when it is absent,
            // `access_token` in the query string merged with a JSON, form or multipart body.
            let mut forwarded_body = Either::Left(incoming);
            let mut form: Option<Bytes> = None;
            // The buffered body's place in the body budget, until it has been forwarded.
            let mut _body_reservation = None;
            let prepared = &served.prepared[route.service];
            let auth_header = prepared.auth_header_value(&parts.headers);
            let body_to_read = match auth_header {
                Some(_) => None,
                None => token_location::body_to_read(&parts.method, content_type(&parts.headers)),
            };
            let token_location::Located { token, found_in } = {
                // Bound only once the body is read, and dropped at the end of this block: never
                // held across a later wait, it adds nothing to the proxy path's future.
                let body_parameters = match body_to_read {
                    None => None,
                    Some(kind) => {
                        let Either::Left(incoming) = forwarded_body else {
                            unreachable!("the body is only taken here");
                        };
                        // Boxed, as a rare path: see `handle`. A body longer than nginx's
                        // `client_body_buffer_size` is streamed unread, as a body with no token.
                        let read =
                            incoming.read_up_to(self.body_limits.proxied_form, &self.body_budget);
                        match Box::pin(read).await {
                            Ok(Ok(buffered)) => {
                                let bytes = buffered.bytes;
                                let parameters = Box::pin(token_location::body_parameters(
                                    parts.uri.query(),
                                    content_type(&parts.headers),
                                    bytes.clone(),
                                ))
                                .await;
                                forwarded_body = Either::Right(Full::new(bytes.clone()));
                                if kind == BodyKind::Form {
                                    form = Some(bytes);
                                }
                                _body_reservation = Some(buffered.reservation);
                                Some(parameters)
                            }
                            Ok(Err(unread)) => {
                                forwarded_body = Either::Left(unread);
                                None
                            }
                            Err(error) => break 'answer self.refuse(ProxyError::Body(error)),
                        }
                    }
                };
                token_location::locate(auth_header, parts.uri.query(), body_parameters.as_ref())
            };

            let who;
            let identity_headers = match bearer::authenticate(
                &self.store,
                snapshot,
                service,
                token.as_deref(),
                now_millis(),
            )
            .await
            {
                Ok(identity) => {
                    who =
                        self.observer
                            .who(snapshot, identity.consumer, Some(identity.application));
                    served.credential_headers.of(&identity)
                }
                Err(refusal) => match (ProxyError::refused(refusal), conf.anonymous.as_deref()) {
                    // A store failure is never let through as the anonymous consumer.
                    (ProxyError::Unauthorized(_), Some(name)) => {
                        match snapshot.consumer(&service.namespace, name) {
                            Some(consumer) => {
                                who = self.observer.who(snapshot, consumer, None);
                                IdentityHeaders::anonymous(consumer)
                            }
                            None => {
                                tracing::error!(service = %service.name, consumer = name, "the anonymous consumer does not exist");
                                break 'answer self
                                    .refuse(ProxyError::AnonymousMissing(name.to_owned()));
                            }
                        }
                    }
                    (refusal, _) => break 'answer self.refuse(refusal),
                },
            };

            forward::drop_confusable_headers(
                &mut parts.headers,
                service.upstream.drop_underscore_headers,
                |reason| self.metrics.count_dropped_header(reason),
            );
            if conf.hide_credentials {
                let hidden = token_location::hide(found_in, &parts.uri, form.as_ref());
                if hidden.remove_auth_header {
                    parts.headers.remove(conf.auth_header_name.as_str());
                }
                if let Some(uri) = hidden.uri {
                    parts.uri = uri;
                }
                if let Some(rewritten) = hidden.form_body {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    forwarded_body = Either::Right(Full::new(rewritten));
                }
            }

            let path = upstream_path(
                service.upstream.path.as_deref(),
                route.strip_len,
                parts.uri.path(),
            );
            let upstream_started = answered.seen.upstream_started();
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
                        request_id: answered.seen.new_request_id(),
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
                                break 'answer self.refuse(ProxyError::TooManyUpgrades);
                            };
                            let upgrade =
                                forward::upgrade(&head, prepared.target, &client.upstream);
                            match Box::pin(upgrade).await {
                                Ok(forward::Upgrade::Switched {
                                    response,
                                    application,
                                }) => {
                                    self.metrics.count(Outcome::Upgraded);
                                    tokio::spawn(tunnel::run(
                                        handshake.client,
                                        application,
                                        self.upgrade_idle_timeout,
                                        (handshake.busy, place),
                                    ));
                                    break 'answer response
                                        .map(|()| Either::Left(Full::new(Bytes::new())));
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
                    answered.seen.proxied(upstream_started, who);
                    response.map(Either::Right)
                }
                Err(error) => {
                    let error = ProxyError::from(error);
                    tracing::warn!(service = %service.name, port = service.upstream.port, "{error}");
                    self.refuse(error)
                }
            }
        };
        let durations = &served.prepared[route.service].durations;
        answered.finish(&self.observer, durations, response)
    }
}

/// Reads the OAuth parameters of an endpoint request: query string and `read`, its body.
async fn read_params(
    parts: &http::request::Parts,
    read: impl Future<Output = Result<body::Buffered, body::ReadError>>,
) -> Result<Params, ProxyError> {
    // The parameters are parsed into owned values: the body's place in the budget is given
    // back once they are.
    let body::Buffered {
        bytes,
        reservation: _reservation,
    } = read.await?;
    Ok(Params::parse(parts.uri.query(), content_type(&parts.headers), bytes).await?)
}

/// The request's `Content-Type`, when it is text.
fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
