//! The admin API's one grammar: a method and a path become an [`AdminRequest`], which names the
//! namespace it acts on and the RBAC verb it needs. Every listener that serves the admin API
//! routes and authorises through this type, so they cannot drift apart.

use http::Method;

/// The RBAC resource (in [`ADMIN_GROUP`]) whose verbs grant the admin API and the aggregated
/// API alike, the resource the aggregated API serves:
/// `kubectl create role … --verb=list --resource=oauthtokens.tokens.oauth.tollgate.dev`.
pub const ADMIN_RESOURCE: &str = "oauthtokens";
/// The API group of [`ADMIN_RESOURCE`], served by the controller as an aggregated API.
pub const ADMIN_GROUP: &str = "tokens.oauth.tollgate.dev";

/// One admin request, routed. `/oauth2_tokens` without a namespace is Kong's default
/// workspace, the namespace `default`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// `GET /{ns}/oauth2_tokens`: a page of tokens.
    List { namespace: String },
    /// `GET /{ns}/oauth2_tokens/{id}`: one token.
    Get { namespace: String, id: String },
    /// `DELETE /{ns}/oauth2_tokens/{id}`: revoke one token.
    Delete { namespace: String, id: String },
    /// `DELETE /{ns}/oauth2_tokens?authenticated_userid=…`: revoke every matching token.
    BulkDelete { namespace: String },
    /// `POST /{ns}/oauth2_tokens`: store a token exported from IAM.
    Import { namespace: String },
}

/// Why a request is not an admin request, in Kong's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrouted {
    /// Not a token path: 404.
    NotFound,
    /// A token path with a method it does not take: 405.
    MethodNotAllowed,
}

// === impl AdminRequest ===

impl AdminRequest {
    /// Routes `method` on `path` (without its query).
    pub fn parse(method: &Method, path: &str) -> Result<Self, Unrouted> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (namespace, rest) = match segments.as_slice() {
            ["oauth2_tokens", rest @ ..] => ("default", rest),
            [namespace, "oauth2_tokens", rest @ ..] => (*namespace, rest),
            _ => return Err(Unrouted::NotFound),
        };
        // A namespace is a DNS label: anything else names no namespace, and must not reach a
        // store key or an access review.
        if !is_dns_label(namespace) {
            return Err(Unrouted::NotFound);
        }
        let namespace = namespace.to_owned();
        match (method, rest) {
            (&Method::GET, []) => Ok(Self::List { namespace }),
            (&Method::DELETE, []) => Ok(Self::BulkDelete { namespace }),
            (&Method::POST, []) => Ok(Self::Import { namespace }),
            (&Method::GET, [id]) => Ok(Self::Get {
                namespace,
                id: (*id).to_owned(),
            }),
            (&Method::DELETE, [id]) => Ok(Self::Delete {
                namespace,
                id: (*id).to_owned(),
            }),
            (_, [] | [_]) => Err(Unrouted::MethodNotAllowed),
            _ => Err(Unrouted::NotFound),
        }
    }

    /// The RBAC verb on [`ADMIN_RESOURCE`] this request needs, as Kubernetes names the verb of
    /// the same HTTP request on a resource of its own.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::List { .. } => "list",
            Self::Get { .. } => "get",
            Self::Delete { .. } => "delete",
            Self::BulkDelete { .. } => "deletecollection",
            Self::Import { .. } => "create",
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            Self::List { namespace }
            | Self::Get { namespace, .. }
            | Self::Delete { namespace, .. }
            | Self::BulkDelete { namespace }
            | Self::Import { namespace } => namespace,
        }
    }

    /// The token id, for `get` and `delete`: RBAC `resourceNames` can name it.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Get { id, .. } | Self::Delete { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the request changes the store (worth a line in the log, with who asked).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Delete { .. } | Self::BulkDelete { .. } | Self::Import { .. }
        )
    }
}

/// RFC 1123 label, as Kubernetes namespaces are.
pub(crate) fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> Result<AdminRequest, Unrouted> {
        AdminRequest::parse(&method, path)
    }

    #[test]
    fn every_request_names_its_kubernetes_verb() {
        for (method, path, verb, namespace, name) in [
            (
                Method::GET,
                "/default/oauth2_tokens",
                "list",
                "default",
                None,
            ),
            (Method::GET, "/oauth2_tokens", "list", "default", None),
            (
                Method::GET,
                "/team-a/oauth2_tokens/abc",
                "get",
                "team-a",
                Some("abc"),
            ),
            (
                Method::DELETE,
                "/oauth2_tokens/abc",
                "delete",
                "default",
                Some("abc"),
            ),
            (
                Method::DELETE,
                "/team-a/oauth2_tokens",
                "deletecollection",
                "team-a",
                None,
            ),
            (
                Method::POST,
                "/team-a/oauth2_tokens/",
                "create",
                "team-a",
                None,
            ),
        ] {
            let request = parse(method.clone(), path).unwrap();
            assert_eq!(
                (request.verb(), request.namespace(), request.name()),
                (verb, namespace, name),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        for (method, path, refusal) in [
            (Method::GET, "/default/consumers", Unrouted::NotFound),
            (Method::GET, "/", Unrouted::NotFound),
            (Method::GET, "/a/b/oauth2_tokens", Unrouted::NotFound),
            (
                Method::GET,
                "/default/oauth2_tokens/a/b",
                Unrouted::NotFound,
            ),
            (
                Method::PUT,
                "/default/oauth2_tokens",
                Unrouted::MethodNotAllowed,
            ),
            (
                Method::PATCH,
                "/default/oauth2_tokens/abc",
                Unrouted::MethodNotAllowed,
            ),
            (
                Method::POST,
                "/default/oauth2_tokens/abc",
                Unrouted::MethodNotAllowed,
            ),
            (Method::GET, "/Default/oauth2_tokens", Unrouted::NotFound),
            (Method::GET, "/%7Btg:x%7D/oauth2_tokens", Unrouted::NotFound),
            (Method::GET, "/-a/oauth2_tokens", Unrouted::NotFound),
        ] {
            assert_eq!(parse(method.clone(), path), Err(refusal), "{method} {path}");
        }
        let long = format!("/{}/oauth2_tokens", "a".repeat(64));
        assert_eq!(parse(Method::GET, &long), Err(Unrouted::NotFound));
    }

    #[test]
    fn only_deletes_and_imports_write() {
        let writes = |m: Method, p: &str| parse(m, p).unwrap().writes();
        assert!(!writes(Method::GET, "/default/oauth2_tokens"));
        assert!(!writes(Method::GET, "/default/oauth2_tokens/x"));
        assert!(writes(Method::DELETE, "/default/oauth2_tokens/x"));
        assert!(writes(Method::DELETE, "/default/oauth2_tokens"));
        assert!(writes(Method::POST, "/default/oauth2_tokens"));
    }
}
