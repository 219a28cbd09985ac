//! The admin API, `/{namespace}/oauth2_tokens`: one grammar ([`AdminRequest`], each request
//! with the RBAC verb it needs), one handler over a token store, and the standalone sidecar's
//! own guard ([`serve_standalone`]: its manifests' namespaces only, and an optional bearer
//! token). The controller guards the same requests with TokenReview and SubjectAccessReview.
//!
//! Beside it, the same tokens as a Kubernetes API (`tokens.oauth.tollgate.dev/v1alpha1`,
//! `oauthtokens`), which the controller serves behind the API server: its grammar
//! ([`KubeRequest`]), its documents ([`kube_objects`]) and its handler ([`handle_kube`]).
#![forbid(unsafe_code)]

mod handler;
mod kube_handler;
pub mod kube_objects;
mod kube_request;
#[cfg(test)]
mod kube_tests;
mod request;
mod token;

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Request, Response};
use tollgate_api::Snapshot;
use tollgate_store::TokenStore;

pub use crate::handler::{Caller, handle, message, unauthorized, unauthorized_with, unrouted};
pub use crate::kube_handler::{TokenContext, handle_kube, kube_refusal};
pub use crate::kube_objects::TokenNames;
pub use crate::kube_request::{
    Field, FieldRequirement, IncludeObject, KUBE_KIND, KUBE_LIST_KIND, KUBE_SHORT_NAME,
    KUBE_SINGULAR, KUBE_VERSION, KubeRefusal, KubeRequest, ListOptions, Output,
};
pub use crate::request::{ADMIN_GROUP, ADMIN_RESOURCE, AdminRequest, Unrouted};
pub use crate::token::AdminToken;

/// Serves one request on a sidecar's own admin listener: the bearer token first (when
/// `token` is set), then the route, then the namespace, which must be one of `snapshot`'s.
/// Nothing else in the pod may act on another namespace's tokens in a shared store.
pub async fn serve_standalone<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    token: Option<&AdminToken>,
    request: &Request<Bytes>,
    now_ms: u64,
) -> Response<Bytes> {
    if let Some(token) = token
        && !token.accepts(request.headers())
    {
        return unauthorized();
    }
    let routed = match AdminRequest::parse(request.method(), request.uri().path()) {
        Ok(routed) => routed,
        Err(refusal) => return unrouted(refusal),
    };
    if !served_namespaces(snapshot).contains(routed.namespace()) {
        return message(
            http::StatusCode::NOT_FOUND,
            &format!(
                "namespace {} is not served here: this admin API serves only the namespaces of its own configuration",
                routed.namespace()
            ),
        );
    }
    handle(
        store,
        &routed,
        request.uri().query(),
        request.body(),
        snapshot,
        now_ms,
        Caller::Listener {
            token: token.is_some(),
        },
    )
    .await
}

/// The namespaces a snapshot configures: those of its services, consumers and applications.
pub fn served_namespaces(snapshot: &Snapshot) -> BTreeSet<&str> {
    let services = snapshot.services.iter().map(|s| s.namespace.as_str());
    let consumers = snapshot.consumers.iter().map(|c| c.namespace.as_str());
    let applications = snapshot.applications.iter().map(|a| a.namespace.as_str());
    services.chain(consumers).chain(applications).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::Method;
    use tollgate_store::MemoryStore;

    use super::*;

    const CONSUMER: &str = "apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata: {name: clientapp, namespace: team-a}
spec: {username: ClientApp}
";

    async fn status(token: Option<&AdminToken>, method: Method, path: &str, auth: &str) -> u16 {
        let resources = tollgate_api::manifests::load_str(Path::new("t.yaml"), CONSUMER).unwrap();
        let snapshot = tollgate_api::compile(&resources).snapshot;
        let mut request = Request::builder().method(method).uri(path);
        if !auth.is_empty() {
            request = request.header("authorization", auth);
        }
        let request = request.body(Bytes::new()).unwrap();
        let store = MemoryStore::new();
        serve_standalone(&store, &snapshot, token, &request, 0)
            .await
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn only_the_configured_namespaces_are_served() {
        assert_eq!(
            status(None, Method::GET, "/team-a/oauth2_tokens", "").await,
            200
        );
        for (method, path) in [
            (Method::GET, "/team-b/oauth2_tokens"),
            (Method::GET, "/oauth2_tokens"),
            (
                Method::DELETE,
                "/team-b/oauth2_tokens?authenticated_userid=x",
            ),
            (Method::POST, "/team-b/oauth2_tokens"),
        ] {
            assert_eq!(
                status(None, method.clone(), path, "").await,
                404,
                "{method} {path}"
            );
        }
    }

    #[tokio::test]
    async fn the_token_is_checked_before_anything_else() {
        let token = AdminToken::parse(b"0123456789abcdef").unwrap();
        let token = Some(&token);
        assert_eq!(
            status(token, Method::GET, "/team-a/oauth2_tokens", "").await,
            401
        );
        assert_eq!(status(token, Method::GET, "/nowhere", "").await, 401);
        let good = "Bearer 0123456789abcdef";
        assert_eq!(
            status(token, Method::GET, "/team-a/oauth2_tokens", good).await,
            200
        );
        assert_eq!(
            status(token, Method::GET, "/team-b/oauth2_tokens", good).await,
            404
        );
    }
}
