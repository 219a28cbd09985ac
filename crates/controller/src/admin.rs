//! The admin API of the article, `/{namespace}/oauth2_tokens`, and the same tokens as the
//! aggregated API `/apis/tokens.oauth.tollgate.dev/v1alpha1/…`, served by the controller on
//! one listener and protected the Kubernetes way. Who calls: the API server's front proxy
//! (request-header authentication, `request_header`, aggregated API only) or a bearer token
//! checked with a TokenReview. What they may do: a SubjectAccessReview of the request's verb
//! (list, get, delete, deletecollection, create) on `oauthtokens.tokens.oauth.tollgate.dev` in
//! that namespace, the same for both grammars. The grammars and what each request does are
//! `tollgate_admin`'s, shared with the sidecar.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use rustls_pki_types::UnixTime;
use tollgate_admin::kube_objects::{self, Reason};
use tollgate_admin::{AdminRequest, Caller, KubeRequest, TokenContext, TokenNames};
use tollgate_api::Snapshot;
use tollgate_serve::PeerCertificates;
use tollgate_store::TokenStore;

use crate::auth::{Access, AccessReviewer, Identity, TokenReviewer, bearer_token};
use crate::index::SharedIndex;
use crate::request_header::SharedRequestHeaderConfig;
use crate::server::{Body, full};

/// The largest request body read (an import): as the sidecar's bound on bodies it reads whole.
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;

pub struct AdminServer<S> {
    store: S,
    reviewer: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
    /// The configuration an import is checked against, and what names tokens.
    context: Arc<dyn TokenContext>,
    /// The front proxy's settings; `None`: no request is taken for a proxied one.
    request_header: Option<SharedRequestHeaderConfig>,
}

// === impl AdminServer ===

impl<S: TokenStore> AdminServer<S> {
    pub fn new(
        store: S,
        reviewer: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
        context: Arc<dyn TokenContext>,
    ) -> Self {
        Self {
            store,
            reviewer,
            access,
            context,
            request_header: None,
        }
    }

    /// Believes the `X-Remote-*` headers of requests proxied by the API server, as `config`
    /// says at the time of each request.
    pub fn with_request_header(mut self, config: SharedRequestHeaderConfig) -> Self {
        self.request_header = Some(config);
        self
    }

    /// Answers one request: 401 without a valid token, 404 or 405 off the grammar, 403 without
    /// the right, otherwise what the admin API answers.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.answer(request).await.map(full)
    }

    async fn answer<B>(&self, request: Request<B>) -> Response<Bytes>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if KubeRequest::claims(request.uri().path()) {
            return self.kube(request).await;
        }
        let Some(token) = bearer_token(request.headers()) else {
            return tollgate_admin::unauthorized();
        };
        let who = match self.reviewer.review(token.expose(), None).await {
            Ok(Some(who)) => who,
            Ok(None) => return tollgate_admin::unauthorized(),
            Err(error) => {
                tracing::warn!(%error, "admin API: cannot authenticate a request");
                return tollgate_admin::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot authenticate the request now, retry",
                );
            }
        };
        let routed = match AdminRequest::parse(request.method(), request.uri().path()) {
            Ok(routed) => routed,
            Err(refusal) => return tollgate_admin::unrouted(refusal),
        };
        let access = Access::of(&routed);
        match self.access.allowed(&who, &access).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(user = %who.username, verb = access.verb, namespace = %access.namespace, "admin API: forbidden");
                return tollgate_admin::message(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "user \"{}\" cannot {} resource \"{}\" in API group \"{}\" in the namespace \"{}\"",
                        who.username,
                        access.verb,
                        tollgate_admin::ADMIN_RESOURCE,
                        tollgate_admin::ADMIN_GROUP,
                        access.namespace
                    ),
                );
            }
            Err(error) => {
                tracing::warn!(%error, "admin API: cannot authorize a request");
                return tollgate_admin::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot authorize the request now, retry",
                );
            }
        }
        if routed.writes() {
            tracing::info!(user = %who.username, verb = access.verb, namespace = %access.namespace, "admin API: a change to the tokens, authorised");
        }
        let (parts, body) = request.into_parts();
        // Read only once authorised: nobody without a right makes the controller buffer.
        let body = match read_body(body).await {
            Ok(body) => body,
            Err(BodyRefusal::TooLarge) => {
                return tollgate_admin::message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request size limit exceeded",
                );
            }
            Err(BodyRefusal::Unreadable) => {
                return tollgate_admin::message(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read",
                );
            }
        };
        let snapshot = match &routed {
            AdminRequest::Import { namespace } => self.context.configuration(namespace),
            _ => Snapshot::default(),
        };
        tollgate_admin::handle(
            &self.store,
            &routed,
            parts.uri.query(),
            &body,
            &snapshot,
            now_millis(),
            Caller::User(&who.username),
        )
        .await
    }

    /// A request of the aggregated API: authenticated (front proxy, else bearer token), routed,
    /// authorised, then answered, every refusal a Kubernetes `Status`.
    async fn kube<B>(&self, request: Request<B>) -> Response<Bytes>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let who = match self.kube_identity(&request).await {
            Ok(who) => who,
            Err(refusal) => return refusal,
        };
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let routed = match KubeRequest::parse(
            request.method(),
            request.uri().path(),
            request.uri().query(),
            accept,
        ) {
            Ok(routed) => routed,
            Err(refusal) => return tollgate_admin::kube_refusal(&refusal),
        };
        if let Some(verb) = routed.verb() {
            let access = Access {
                verb,
                namespace: routed.namespace().to_owned(),
                name: routed.name().map(str::to_owned),
            };
            match self.access.allowed(&who, &access).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(user = %who.username, verb, namespace = %access.namespace, "aggregated API: forbidden");
                    return kube_objects::forbidden(
                        &who.username,
                        verb,
                        &access.namespace,
                        access.name.as_deref(),
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "aggregated API: cannot authorize a request");
                    return kube_objects::status(
                        Reason::InternalError,
                        "cannot authorize the request now, retry",
                        None,
                        &[],
                    );
                }
            }
        }
        if routed.writes() {
            tracing::info!(user = %who.username, verb = routed.verb(), namespace = %routed.namespace(), "aggregated API: a change to the tokens, authorised");
        }
        let body = match read_body(request.into_body()).await {
            Ok(body) => body,
            Err(BodyRefusal::TooLarge) => {
                return kube_objects::status(
                    Reason::RequestEntityTooLarge,
                    "the request body is too large",
                    None,
                    &[],
                );
            }
            Err(BodyRefusal::Unreadable) => {
                return kube_objects::status(
                    Reason::BadRequest,
                    "the request body could not be read",
                    None,
                    &[],
                );
            }
        };
        tollgate_admin::handle_kube(
            &self.store,
            &*self.context,
            &routed,
            &body,
            now_millis(),
            Caller::User(&who.username),
        )
        .await
    }

    /// Who sends a request of the aggregated API: the user the front proxy names, when the
    /// connection carries its certificate; otherwise the bearer token's owner.
    async fn kube_identity<B>(&self, request: &Request<B>) -> Result<Identity, Response<Bytes>> {
        let unauthorized =
            |message: &str| kube_objects::status(Reason::Unauthorized, message, None, &[]);
        let chain = request.extensions().get::<PeerCertificates>();
        if let (Some(config), Some(chain)) = (&self.request_header, chain) {
            let config = config.read().ok().and_then(|c| c.clone());
            if let Some(config) = config {
                match config.authenticate(Some(&chain.0), request.headers(), UnixTime::now()) {
                    Ok(Some(who)) => return Ok(who),
                    Ok(None) => {}
                    Err(refusal) => {
                        tracing::info!(%refusal, "aggregated API: a client certificate refused");
                        return Err(unauthorized(&refusal.to_string()));
                    }
                }
            }
        }
        let Some(token) = bearer_token(request.headers()) else {
            return Err(unauthorized("Unauthorized"));
        };
        match self.reviewer.review(token.expose(), None).await {
            Ok(Some(who)) => Ok(who),
            Ok(None) => Err(unauthorized("Unauthorized")),
            Err(error) => {
                tracing::warn!(%error, "aggregated API: cannot authenticate a request");
                Err(kube_objects::status(
                    Reason::InternalError,
                    "cannot authenticate the request now, retry",
                    None,
                    &[],
                ))
            }
        }
    }
}

/// The index as the aggregated API's context: the namespaces it knows, their names, and
/// their configuration for imports.
pub struct IndexTokenContext(pub SharedIndex);

impl TokenContext for IndexTokenContext {
    fn namespaces(&self) -> Vec<String> {
        self.0.lock().configured_namespaces()
    }

    fn names(&self, namespace: &str) -> TokenNames {
        self.0.lock().token_names(namespace)
    }

    fn configuration(&self, namespace: &str) -> Snapshot {
        self.0.lock().namespace_snapshot(namespace)
    }
}

enum BodyRefusal {
    TooLarge,
    Unreadable,
}

/// A request body, whole, up to [`MAX_ADMIN_BODY`].
async fn read_body<B>(body: B) -> Result<Bytes, BodyRefusal>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_ADMIN_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(BodyRefusal::TooLarge),
        Err(_) => Err(BodyRefusal::Unreadable),
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use futures_util::future::BoxFuture;
    use http::Method;
    use http_body_util::Full;
    use tollgate_store::MemoryStore;

    use super::*;
    use crate::auth::{AuthError, Identity};

    /// Accepts the token "alice", who holds exactly the verbs given.
    struct Grants(Vec<&'static str>);

    impl TokenReviewer for Grants {
        fn review<'a>(
            &'a self,
            token: &'a str,
            _audience: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
            let who = (token == "alice").then(|| Identity {
                username: "alice".into(),
                extra: BTreeMap::new(),
                ..Default::default()
            });
            Box::pin(std::future::ready(Ok(who)))
        }
    }

    impl AccessReviewer for Grants {
        fn allowed<'a>(
            &'a self,
            _who: &'a Identity,
            access: &'a Access,
        ) -> BoxFuture<'a, Result<bool, AuthError>> {
            Box::pin(std::future::ready(Ok(self.0.contains(&access.verb))))
        }
    }

    fn server(verbs: Vec<&'static str>) -> AdminServer<MemoryStore> {
        let grants = Arc::new(Grants(verbs));
        AdminServer::new(
            MemoryStore::new(),
            grants.clone(),
            grants,
            Arc::new(IndexTokenContext(SharedIndex::new(
                crate::index::Index::new(1),
            ))),
        )
    }

    async fn status(server: &AdminServer<MemoryStore>, method: Method, path: &str) -> u16 {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", "Bearer alice")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        server.answer(request).await.status().as_u16()
    }

    #[tokio::test]
    async fn each_request_needs_its_own_verb_and_no_other() {
        let requests = [
            ("list", Method::GET, "/default/oauth2_tokens", 200),
            (
                "get",
                Method::GET,
                "/default/oauth2_tokens/0b7c1f0e-58a5-4c4e-9a3c-000000000001",
                404,
            ),
            (
                "delete",
                Method::DELETE,
                "/default/oauth2_tokens/0b7c1f0e-58a5-4c4e-9a3c-000000000001",
                // Kong's answer for an id that names no token.
                204,
            ),
            (
                "deletecollection",
                Method::DELETE,
                "/default/oauth2_tokens?authenticated_userid=1",
                200,
            ),
            // Granted, it reaches the handler, which finds no application to import for.
            ("create", Method::POST, "/default/oauth2_tokens", 400),
        ];
        for (granted, ..) in &requests {
            let server = server(vec![granted]);
            for (verb, method, path, when_granted) in &requests {
                let expected = if verb == granted { *when_granted } else { 403 };
                assert_eq!(
                    status(&server, method.clone(), path).await,
                    expected,
                    "{method} {path} with only {granted}"
                );
            }
        }
    }

    #[tokio::test]
    async fn nobody_is_routed_before_being_authenticated() {
        let server = server(vec!["list"]);
        let request = Request::builder()
            .uri("/default/consumers")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(server.answer(request).await.status(), 401);
        assert_eq!(
            status(&server, Method::GET, "/default/consumers").await,
            404
        );
        assert_eq!(
            status(&server, Method::PUT, "/default/oauth2_tokens").await,
            405
        );
    }

    const TOKENS: &str = "/apis/tokens.oauth.tollgate.dev/v1alpha1/namespaces/default/oauthtokens";

    /// The server, believing the front proxy of a CA made here; and that CA's signer.
    fn proxied_server(
        verbs: Vec<&'static str>,
    ) -> (
        AdminServer<MemoryStore>,
        rcgen::Issuer<'static, rcgen::KeyPair>,
    ) {
        use crate::request_header::RequestHeaderConfig;
        use crate::request_header::tests::{ca, config_map};
        let (pem, issuer) = ca("front-proxy-ca");
        let config =
            RequestHeaderConfig::from_config_map(&config_map(&pem, r#"["front-proxy-client"]"#))
                .unwrap()
                .unwrap();
        let shared = Arc::new(std::sync::RwLock::new(Some(Arc::new(config))));
        (server(verbs).with_request_header(shared), issuer)
    }

    async fn kube_answer(
        server: &AdminServer<MemoryStore>,
        method: Method,
        chain: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(TOKENS);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Full::new(Bytes::new())).unwrap();
        if let Some(chain) = chain {
            request
                .extensions_mut()
                .insert(PeerCertificates(chain.into()));
        }
        let response = server.answer(request).await;
        let status = response.status().as_u16();
        (status, serde_json::from_slice(response.body()).unwrap())
    }

    #[tokio::test]
    async fn the_front_proxy_names_the_user_and_rbac_decides() {
        use crate::request_header::tests::client;
        let (server, issuer) = proxied_server(vec!["list"]);
        let proxy = Some(client("front-proxy-client", &issuer));
        let as_bob = [("x-remote-user", "bob"), ("x-remote-group", "ops")];
        let (status, list) = kube_answer(&server, Method::GET, proxy.clone(), &as_bob).await;
        assert_eq!(
            (status, list["kind"].as_str()),
            (200, Some("OAuthTokenList"))
        );
        // Not granted: a Status naming the user, the verb and the namespace.
        let (status, refusal) = kube_answer(&server, Method::DELETE, proxy, &as_bob).await;
        assert_eq!(
            (status, refusal["reason"].as_str()),
            (403, Some("Forbidden"))
        );
        let message = refusal["message"].as_str().unwrap();
        assert!(
            message.contains("User \"bob\" cannot deletecollection resource \"oauthtokens\"")
                && message.contains("in the namespace \"default\""),
            "{message}"
        );
    }

    #[tokio::test]
    async fn remote_user_headers_from_anyone_else_are_not_an_identity() {
        use crate::request_header::tests::{ca, client};
        let (server, issuer) = proxied_server(vec!["list"]);
        let claim = [("x-remote-user", "system:admin")];
        // No certificate: the headers are not read, and there is no bearer token.
        let (status, body) = kube_answer(&server, Method::GET, None, &claim).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (401, Some("Unauthorized"))
        );
        // A certificate of another CA, or of the right CA with another name: refused.
        let (_, stranger) = ca("front-proxy-ca");
        for chain in [
            client("front-proxy-client", &stranger),
            client("someone", &issuer),
        ] {
            let (status, body) = kube_answer(&server, Method::GET, Some(chain), &claim).await;
            assert_eq!(
                (status, body["reason"].as_str()),
                (401, Some("Unauthorized"))
            );
        }
        // A bearer token still works without the front proxy.
        let bearer = [
            ("authorization", "Bearer alice"),
            ("x-remote-user", "system:admin"),
        ];
        let (status, _) = kube_answer(&server, Method::GET, None, &bearer).await;
        assert_eq!(status, 200);
    }
}
