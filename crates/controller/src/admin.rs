//! The admin API of the article, `/{namespace}/oauth2_tokens` (list, get, delete), served by
//! the controller and protected the Kubernetes way: the bearer token is checked with a
//! TokenReview, the caller's rights with a SubjectAccessReview on the resource
//! `oauth2tokens.oauth.tollgate.dev` in that namespace. The listing itself is the sidecar's.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tollgate_store::TokenStore;

use crate::auth::{Access, AccessReviewer, TokenReviewer, bearer_token};
use crate::server::{Body, full, message};

pub struct AdminServer<S> {
    store: S,
    reviewer: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
}

// === impl AdminServer ===

impl<S: TokenStore> AdminServer<S> {
    pub fn new(
        store: S,
        reviewer: Arc<dyn TokenReviewer>,
        access: Arc<dyn AccessReviewer>,
    ) -> Self {
        Self {
            store,
            reviewer,
            access,
        }
    }

    /// Answers one request: 401 without a valid token, 403 without the right, otherwise what
    /// the sidecar's admin API answers.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body> {
        let Some(token) = bearer_token(request.headers()) else {
            return unauthorized();
        };
        let who = match self.reviewer.review(token.expose(), None).await {
            Ok(Some(who)) => who,
            Ok(None) => return unauthorized(),
            Err(error) => {
                tracing::warn!(%error, "admin API: cannot authenticate a request");
                return message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot authenticate the request now, retry",
                );
            }
        };
        let Some(access) = access_of(request.method(), request.uri().path()) else {
            return refused(request.method(), request.uri().path());
        };
        match self.access.allowed(&who, &access).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(user = %who.username, verb = access.verb, namespace = %access.namespace, "admin API: forbidden");
                return message(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "user \"{}\" cannot {} resource \"oauth2tokens\" in API group \"oauth.tollgate.dev\" in the namespace \"{}\"",
                        who.username, access.verb, access.namespace
                    ),
                );
            }
            Err(error) => {
                tracing::warn!(%error, "admin API: cannot authorize a request");
                return message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot authorize the request now, retry",
                );
            }
        }
        if access.verb == "delete" {
            tracing::info!(user = %who.username, namespace = %access.namespace, "admin API: deleting a token");
        }
        tollgate_sidecar::admin::handle(&self.store, &request)
            .await
            .map(full)
    }
}

/// The verb and namespace a request needs the right for; `None` for requests the controller
/// does not serve, which are refused before they reach the token store.
fn access_of(method: &Method, path: &str) -> Option<Access> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (namespace, rest) = match segments.as_slice() {
        ["oauth2_tokens", rest @ ..] => ("default", rest),
        [namespace, "oauth2_tokens", rest @ ..] => (*namespace, rest),
        _ => return None,
    };
    let (verb, name) = match (method, rest) {
        (&Method::GET, []) => ("list", None),
        (&Method::GET, [id]) => ("get", Some((*id).to_owned())),
        (&Method::DELETE, [id]) => ("delete", Some((*id).to_owned())),
        _ => return None,
    };
    Some(Access {
        verb,
        namespace: namespace.to_owned(),
        name,
    })
}

/// 405 on the token paths, 404 elsewhere, in Kong's words.
fn refused(method: &Method, path: &str) -> Response<Body> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let token_path = matches!(
        segments.as_slice(),
        ["oauth2_tokens"] | ["oauth2_tokens", _] | [_, "oauth2_tokens"] | [_, "oauth2_tokens", _]
    );
    if token_path && method != Method::GET && method != Method::DELETE {
        message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
    } else {
        message(StatusCode::NOT_FOUND, "Not found")
    }
}

fn unauthorized() -> Response<Body> {
    let mut response = message(StatusCode::UNAUTHORIZED, "Unauthorized");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_kubernetes() {
        let access = access_of(&Method::GET, "/default/oauth2_tokens").unwrap();
        assert_eq!(
            (access.verb, access.namespace.as_str()),
            ("list", "default")
        );
        let access = access_of(&Method::GET, "/team-a/oauth2_tokens/abc").unwrap();
        assert_eq!(
            (
                access.verb,
                access.namespace.as_str(),
                access.name.as_deref()
            ),
            ("get", "team-a", Some("abc"))
        );
        let access = access_of(&Method::DELETE, "/oauth2_tokens/abc").unwrap();
        assert_eq!(
            (access.verb, access.namespace.as_str()),
            ("delete", "default")
        );
        assert!(access_of(&Method::POST, "/default/oauth2_tokens").is_none());
        assert!(access_of(&Method::GET, "/default/consumers").is_none());
    }
}
