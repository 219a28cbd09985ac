//! The snapshot being served, with what the request path derives from it once per snapshot
//! rather than once per request: the route table, the identity headers of each application,
//! what each service's proxied requests need, and its metric series.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tollgate_api::Snapshot;
use tollgate_store::{KeyPair, StoreKey};

use crate::forward;
use crate::identity::CredentialHeaders;
use crate::metrics::ServiceLabels;
use crate::observe::ServiceDurations;
use crate::routes::RouteTable;

/// The snapshot being served, with the structures derived from it. Swapped whole, so no
/// request ever sees half of a new configuration.
#[derive(Debug)]
pub struct Served {
    /// Shared with whoever handed it over (the controller client's channel keeps the latest
    /// one): one copy in memory, however large.
    pub snapshot: Arc<Snapshot>,
    pub routes: RouteTable,
    /// The identity headers of each application, built once per snapshot.
    pub(crate) credential_headers: CredentialHeaders,
    /// What each service's requests need, by service index.
    pub(crate) prepared: Vec<PreparedService>,
}

/// What a service's proxied requests need that its snapshot entry only describes: made once
/// per snapshot, not once per request.
#[derive(Debug)]
pub(crate) struct PreparedService {
    /// `authHeaderName` as a header name; `None` when it is not one, and no request has it.
    auth_header: Option<HeaderName>,
    /// `Host` as its application receives it (`127.0.0.1:port`).
    pub(crate) upstream_host: HeaderValue,
    /// Where its application listens, and how long it is waited for.
    pub(crate) target: forward::Target,
    /// Its request duration series: each request adds to one, with no label hashed.
    pub(crate) durations: ServiceDurations,
}

// === impl Served ===

impl Served {
    pub fn new(snapshot: impl Into<Arc<Snapshot>>) -> Self {
        let snapshot = snapshot.into();
        let routes = RouteTable::new(&snapshot);
        let credential_headers = CredentialHeaders::new(&snapshot);
        let prepared = snapshot
            .services
            .iter()
            .map(|service| PreparedService {
                auth_header: HeaderName::try_from(&service.oauth2.auth_header_name).ok(),
                upstream_host: forward::upstream_host(service.upstream.port),
                target: forward::Target::of(&service.upstream),
                durations: ServiceDurations::new(&ServiceLabels {
                    namespace: Arc::new(service.namespace.clone()),
                    service: Arc::new(service.name.clone()),
                }),
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

// === impl PreparedService ===

impl PreparedService {
    /// The value of the service's `authHeaderName` header in `headers`, when it is text.
    pub(crate) fn auth_header_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let value = headers.get(self.auth_header.as_ref()?)?;
        value.to_str().ok()
    }
}

/// The store keys a snapshot brings: its namespace's, when the controller sent one that is
/// long enough.
pub(crate) fn store_keys_of(snapshot: &Snapshot) -> Vec<(String, KeyPair)> {
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
