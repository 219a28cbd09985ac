//! The admin API of the article, `/{namespace}/oauth2_tokens`, served by the controller and
//! protected the Kubernetes way: the bearer token is checked with a TokenReview, the caller's
//! right with a SubjectAccessReview of the request's verb (list, get, delete,
//! deletecollection, create) on `oauth2tokens.oauth.tollgate.dev` in that namespace. The
//! grammar and what each request does are `tollgate_admin`'s, shared with the sidecar.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tollgate_admin::AdminRequest;
use tollgate_api::Snapshot;
use tollgate_store::TokenStore;

use crate::auth::{Access, AccessReviewer, TokenReviewer, bearer_token};
use crate::server::{Body, full};

/// The largest request body read (an import): as the sidecar's bound on bodies it reads whole.
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;

/// The configuration of one namespace, which an import is checked against.
pub type NamespaceConfiguration = Arc<dyn Fn(&str) -> Snapshot + Send + Sync>;

pub struct AdminServer<S> {
    store: S,
    reviewer: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
    configuration: NamespaceConfiguration,
}

// === impl AdminServer ===

impl<S: TokenStore> AdminServer<S> {
    pub fn new(
        store: S,
        reviewer: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
        configuration: NamespaceConfiguration,
    ) -> Self {
        Self {
            store,
            reviewer,
            access,
            configuration,
        }
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
        let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return tollgate_admin::message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request size limit exceeded",
                );
            }
            Err(_) => {
                return tollgate_admin::message(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read",
                );
            }
        };
        let snapshot = match &routed {
            AdminRequest::Import { namespace } => (self.configuration)(namespace),
            _ => Snapshot::default(),
        };
        tollgate_admin::handle(
            &self.store,
            &routed,
            parts.uri.query(),
            &body,
            &snapshot,
            now_millis(),
        )
        .await
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
            Arc::new(|_: &str| Snapshot::default()),
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
}
