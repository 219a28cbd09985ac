//! The route table: which OAuthService a request path belongs to, what the gateway answers
//! itself, and the path the upstream receives. Paths here are normalised already
//! ([`tollgate_canon::path::normalize`]): the one path routing, `stripPath` and the upstream
//! request all use.

use std::borrow::Cow;

use tollgate_api::Snapshot;
use tollgate_canon::path::match_prefix;

use crate::metrics::Outcome;

/// Routes of a snapshot, longest prefix first so the most specific route wins.
#[derive(Debug, Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    prefix: String,
    strip_path: bool,
    service: usize,
}

/// A matched request.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'p> {
    /// Index into `Snapshot::services`.
    pub service: usize,
    pub prefix: &'p str,
    /// Bytes of the path the prefix covers: its own length, or more when the path separates
    /// the prefix's segments with `%2F` or runs of separators.
    pub matched_len: usize,
    pub strip_path: bool,
    pub endpoint: Endpoint,
}

/// What the gateway does with a matched request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    Authorize,
    /// (beyond Kong) RFC 7662.
    Introspect,
    /// (beyond Kong) RFC 7009.
    Revoke,
    /// (beyond Kong) RFC 8414.
    Metadata,
    /// Everything else: check the token, then forward.
    Proxy,
}

/// RFC 8414's well-known path. Served under each route, and also in the RFC's own form with
/// the route appended (`/.well-known/oauth-authorization-server/event`).
pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

// === impl RouteTable ===

impl RouteTable {
    pub fn new(snapshot: &Snapshot) -> Self {
        let mut entries: Vec<Entry> = snapshot
            .services
            .iter()
            .enumerate()
            .flat_map(|(service, s)| {
                s.routes.iter().map(move |r| Entry {
                    prefix: r.path_prefix.clone(),
                    strip_path: r.strip_path,
                    service,
                })
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        Self { entries }
    }

    /// The route of `path`. A prefix matches at a segment boundary: `/event` matches `/event`,
    /// `/event/1` and `/event%2F1` (an application may decode `%2F`), not `/events`
    /// ([`match_prefix`]).
    pub fn find<'t>(&'t self, path: &str) -> Option<Matched<'t>> {
        let (entry, matched_len) = self
            .entries
            .iter()
            .find_map(|e| Some((e, match_prefix(&e.prefix, path)?)))?;
        Some(Matched {
            service: entry.service,
            prefix: &entry.prefix,
            matched_len,
            strip_path: entry.strip_path,
            endpoint: Endpoint::of(path),
        })
    }
}

// === impl Endpoint ===

impl Endpoint {
    /// Any path ending in `/oauth2/token` or `/oauth2/authorize` (and tollgate's own
    /// endpoints), with or without a trailing slash, is answered by the gateway and never
    /// forwarded.
    fn of(path: &str) -> Self {
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.ends_with("/oauth2/token") {
            Self::Token
        } else if path.ends_with("/oauth2/authorize") {
            Self::Authorize
        } else if path.ends_with("/oauth2/introspect") {
            Self::Introspect
        } else if path.ends_with("/oauth2/revoke") {
            Self::Revoke
        } else if path.ends_with(METADATA_PATH) {
            Self::Metadata
        } else {
            Self::Proxy
        }
    }
}

impl Endpoint {
    /// Kong's name for the endpoint in its `invalid_method` description.
    pub fn kong_name(self) -> &'static str {
        match self {
            Self::Token => "token endpoint",
            Self::Authorize => "authorization endpoint",
            Self::Introspect => "introspection endpoint",
            Self::Revoke => "revocation endpoint",
            Self::Metadata => "metadata endpoint",
            Self::Proxy => "proxy",
        }
    }

    /// The `route` label of the request-duration histogram, and the access log's.
    pub fn route_label(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::Introspect => "introspect",
            Self::Revoke => "revoke",
            Self::Metadata => "metadata",
            Self::Proxy => "proxy",
        }
    }

    /// The `outcome` label of requests answered by this endpoint.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Token => Outcome::TokenEndpoint,
            Self::Authorize => Outcome::AuthorizeEndpoint,
            Self::Introspect => Outcome::IntrospectEndpoint,
            Self::Revoke => Outcome::RevokeEndpoint,
            Self::Metadata => Outcome::MetadataEndpoint,
            Self::Proxy => Outcome::Forwarded,
        }
    }
}

impl Matched<'_> {
    /// Bytes of a matched path the route strips: what its prefix matched when `strip_path`
    /// is set.
    pub fn strip_len(&self) -> usize {
        if self.strip_path && self.prefix != "/" {
            self.matched_len
        } else {
            0
        }
    }
}

/// The path the upstream receives: the service's base path, then the request path without
/// its first `strip_len` bytes ([`Matched::strip_len`]), as Kong joins them.
pub fn upstream_path<'p>(base: Option<&'p str>, strip_len: usize, path: &'p str) -> Cow<'p, str> {
    // A prefix ends at a segment boundary, so `strip_len` is one of `path`'s char boundaries.
    let rest = path.get(strip_len.min(path.len())..).unwrap_or(path);
    let base = base.unwrap_or("");
    let base = base.strip_suffix('/').unwrap_or(base);
    // What follows a stripped prefix may be an encoded separator (`%2F1`): the upstream path
    // still begins a segment there, as Kong begins a stripped path with `/`.
    let slash = if rest.is_empty() || rest.starts_with('/') {
        ""
    } else {
        "/"
    };
    match (base.is_empty(), rest.is_empty(), slash.is_empty()) {
        (true, true, _) => Cow::Borrowed("/"),
        (true, false, true) => Cow::Borrowed(rest),
        (false, true, _) => Cow::Borrowed(base),
        (false, false, true) => Cow::Owned(format!("{base}{rest}")),
        (_, false, false) => Cow::Owned(format!("{base}/{rest}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[(&str, bool)]) -> RouteTable {
        let mut entries: Vec<Entry> = prefixes
            .iter()
            .enumerate()
            .map(|(i, (p, s))| Entry {
                prefix: (*p).to_owned(),
                strip_path: *s,
                service: i,
            })
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        RouteTable { entries }
    }

    #[test]
    fn matches_at_segment_boundaries() {
        let t = table(&[("/event", false)]);
        assert!(t.find("/event").is_some());
        assert!(t.find("/event/1").is_some());
        assert!(t.find("/events").is_none());
        assert!(t.find("/other").is_none());
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[("/", false), ("/event", false), ("/event/admin", false)]);
        assert_eq!(t.find("/event/admin/x").unwrap().service, 2);
        assert_eq!(t.find("/event/1").unwrap().service, 1);
        assert_eq!(t.find("/x").unwrap().service, 0);
    }

    #[test]
    fn oauth_endpoints_with_or_without_trailing_slash() {
        let t = table(&[("/event", false)]);
        assert_eq!(
            t.find("/event/oauth2/token").unwrap().endpoint,
            Endpoint::Token
        );
        assert_eq!(
            t.find("/event/oauth2/token/").unwrap().endpoint,
            Endpoint::Token
        );
        assert_eq!(
            t.find("/event/x/oauth2/authorize").unwrap().endpoint,
            Endpoint::Authorize
        );
        assert_eq!(
            t.find("/event/oauth2/tokens").unwrap().endpoint,
            Endpoint::Proxy
        );
    }

    #[test]
    fn upstream_paths_as_kong_joins_them() {
        let t = table(&[("/event", true), ("/keep", false)]);
        let strip = t.find("/event/1").unwrap();
        assert_eq!(upstream_path(None, strip.strip_len(), "/event/1"), "/1");
        assert_eq!(upstream_path(None, strip.strip_len(), "/event"), "/");
        assert_eq!(
            upstream_path(Some("/api"), strip.strip_len(), "/event/1"),
            "/api/1"
        );
        assert_eq!(
            upstream_path(Some("/api/"), strip.strip_len(), "/event"),
            "/api"
        );
        // A prefix followed by an encoded slash still strips at a segment boundary.
        let encoded = t.find("/event%2F1").unwrap();
        assert_eq!(
            upstream_path(None, encoded.strip_len(), "/event%2F1"),
            "/%2F1"
        );
        assert_eq!(
            upstream_path(Some("/api"), encoded.strip_len(), "/event%2F1"),
            "/api/%2F1"
        );
        let keep = t.find("/keep/1").unwrap();
        assert_eq!(upstream_path(None, keep.strip_len(), "/keep/1"), "/keep/1");
        assert_eq!(
            upstream_path(Some("/csp/api"), keep.strip_len(), "/keep/1"),
            "/csp/api/keep/1"
        );
    }
}
