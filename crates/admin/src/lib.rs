//! The admin API, `/{namespace}/oauth2_tokens`: one grammar ([`AdminRequest`], each request
//! with the RBAC verb it needs), one handler over a token store, and the standalone sidecar's
//! own guard ([`serve_standalone`]: its manifests' namespaces only, and an optional bearer
//! token). The controller guards the same requests with TokenReview and SubjectAccessReview.
#![forbid(unsafe_code)]

mod handler;
mod request;
mod token;

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Request, Response};
use tollgate_api::Snapshot;
use tollgate_store::TokenStore;

pub use crate::handler::{handle, message, unauthorized, unrouted};
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
