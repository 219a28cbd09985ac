//! The identity headers a proxied request carries to the application, as Kong sets them
//! (`X-Consumer-*`, `X-Credential-Identifier`, `X-Authenticated-*`, `X-Anonymous-Consumer`):
//! an application's built once per snapshot and borrowed, a token's own built per request.

use std::collections::HashMap;

use http::header::{HeaderName, HeaderValue};
use tollgate_api::Snapshot;
use tollgate_api::snapshot::Consumer;
use tollgate_oauth::bearer;
use uuid::Uuid;

pub(crate) type HeaderList = Vec<(HeaderName, HeaderValue)>;

/// The identity headers of one request: its application's, built once per snapshot and
/// borrowed, then its token's own (scope, user), built per request when the token has them.
pub(crate) struct IdentityHeaders<'s> {
    shared: &'s [(HeaderName, HeaderValue)],
    own: HeaderList,
}

/// The identity headers of each application of a snapshot (by id), built once per snapshot
/// rather than on every request; only the token's own user and scope are added per request.
#[derive(Debug)]
pub(crate) struct CredentialHeaders(HashMap<Uuid, HeaderList>);

// === impl IdentityHeaders ===

impl<'s> IdentityHeaders<'s> {
    pub(crate) fn owned(own: HeaderList) -> Self {
        Self { shared: &[], own }
    }

    /// The headers of a request let through as the `anonymous` consumer.
    pub(crate) fn anonymous(consumer: &Consumer) -> Self {
        Self::owned(to_header_values(bearer::anonymous_headers(consumer)))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.shared.iter().chain(&self.own)
    }
}

// === impl CredentialHeaders ===

impl CredentialHeaders {
    pub(crate) fn new(snapshot: &Snapshot) -> Self {
        let by_application = snapshot
            .applications
            .iter()
            .filter_map(|application| {
                let consumer = snapshot.consumer(&application.namespace, &application.consumer)?;
                let headers = to_header_values(bearer::credential_headers(consumer, application));
                Some((application.id, headers))
            })
            .collect();
        Self(by_application)
    }

    /// Every identity header of an authenticated request.
    pub(crate) fn of(&self, identity: &bearer::Authenticated<'_>) -> IdentityHeaders<'_> {
        let token = to_header_values(bearer::token_headers(&identity.record));
        match self.0.get(&identity.application.id) {
            Some(shared) => IdentityHeaders { shared, own: token },
            None => {
                let mut own = to_header_values(bearer::credential_headers(
                    identity.consumer,
                    identity.application,
                ));
                own.extend(token);
                IdentityHeaders::owned(own)
            }
        }
    }
}

/// Header values of identity strings. A value a header cannot carry (a control character in
/// a username, say) is left out rather than failing the request.
fn to_header_values(headers: Vec<(HeaderName, String)>) -> HeaderList {
    headers
        .into_iter()
        .filter_map(|(name, value)| HeaderValue::from_str(&value).ok().map(|v| (name, v)))
        .collect()
}
