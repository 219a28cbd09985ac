//! The bearer check on every proxied request: what Kong accepts as an access token (found
//! where [`crate::token_location`] says), and the identity it hands to the upstream.

use std::sync::Arc;

use http::HeaderName;
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, Consumer, Service};
use tollgate_store::{TokenHash, TokenRecord, TokenStore};

use crate::EpochMillis;
use crate::issue;
use crate::response::OAuthResponse;

/// The identity headers Kong sets. A client's own copies are always removed before forwarding,
/// so an upstream can trust them.
pub const IDENTITY_HEADERS: [HeaderName; 7] = [
    HeaderName::from_static("x-consumer-id"),
    HeaderName::from_static("x-consumer-custom-id"),
    HeaderName::from_static("x-consumer-username"),
    HeaderName::from_static("x-credential-identifier"),
    HeaderName::from_static("x-authenticated-scope"),
    HeaderName::from_static("x-authenticated-userid"),
    HeaderName::from_static("x-anonymous-consumer"),
];

/// A request that presented a valid token.
#[derive(Debug, Clone)]
pub struct Authenticated<'s> {
    pub consumer: &'s Consumer,
    pub application: &'s Application,
    pub record: Arc<TokenRecord>,
}

/// Checks `token` for `service`. Errors are Kong's 401 responses (or a store failure).
pub async fn authenticate<'s, S: TokenStore>(
    store: &S,
    snapshot: &'s Snapshot,
    service: &Service,
    token: Option<&str>,
    now: EpochMillis,
) -> Result<Authenticated<'s>, OAuthResponse> {
    let realm = service.oauth2.realm.as_deref();
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(OAuthResponse::token_missing(realm));
    };
    let record = store
        .find_access_shared(&service.namespace, &TokenHash::of(token))
        .await
        .map_err(|e| issue::store_failure(&e))?
        .ok_or_else(|| OAuthResponse::token_invalid(realm))?;
    let identity = check_record(snapshot, service, record, now)?;
    Ok(identity)
}

/// The rules applied to a record found for a token: the service binding, expiry, and that its
/// application and consumer still exist.
pub fn check_record<'s>(
    snapshot: &'s Snapshot,
    service: &Service,
    record: Arc<TokenRecord>,
    now: EpochMillis,
) -> Result<Authenticated<'s>, OAuthResponse> {
    let realm = service.oauth2.realm.as_deref();
    match record.service_id {
        None if !service.oauth2.global_credentials => {
            return Err(OAuthResponse::token_global_on_local_service(realm));
        }
        Some(id) if id != service.id => return Err(OAuthResponse::token_invalid(realm)),
        _ => {}
    }
    // The store expires tokens by TTL too; this check keeps Kong's exact boundary and guards
    // against clock skew between sidecars and Redis.
    if record.expires_in > 0
        && now.saturating_sub(record.created_at) > u64::from(record.expires_in) * 1000
    {
        return Err(OAuthResponse::token_invalid(realm));
    }
    // A token outlives nothing it was issued to: a deleted application or consumer voids it.
    let application = snapshot
        .application_by_id(record.credential_id)
        .ok_or_else(|| OAuthResponse::token_invalid(realm))?;
    let consumer = snapshot
        .consumer(&application.namespace, &application.consumer)
        .ok_or_else(|| OAuthResponse::token_invalid(realm))?;
    Ok(Authenticated {
        consumer,
        application,
        record,
    })
}

/// The identity headers for an authenticated request, as Kong sets them.
pub fn identity_headers(identity: &Authenticated<'_>) -> Vec<(HeaderName, String)> {
    let mut headers = credential_headers(identity.consumer, identity.application);
    headers.extend(token_headers(&identity.record));
    headers
}

/// The headers that depend only on the application and its consumer: the same for every
/// token of the application, so a proxy can build them once per configuration.
pub fn credential_headers(
    consumer: &Consumer,
    application: &Application,
) -> Vec<(HeaderName, String)> {
    let mut headers = consumer_headers(consumer);
    headers.push((
        HeaderName::from_static("x-credential-identifier"),
        application.client_id.clone(),
    ));
    headers
}

/// The headers that depend on the token: its scope and the user it was issued for.
pub fn token_headers(record: &TokenRecord) -> Vec<(HeaderName, String)> {
    let mut headers = Vec::new();
    if !record.scope.is_empty() {
        headers.push((
            HeaderName::from_static("x-authenticated-scope"),
            record.scope.clone(),
        ));
    }
    if let Some(userid) = &record.authenticated_userid {
        headers.push((
            HeaderName::from_static("x-authenticated-userid"),
            userid.clone(),
        ));
    }
    headers
}

/// The headers for a request let through as the `anonymous` consumer.
pub fn anonymous_headers(consumer: &Consumer) -> Vec<(HeaderName, String)> {
    let mut headers = consumer_headers(consumer);
    headers.push((
        HeaderName::from_static("x-anonymous-consumer"),
        "true".to_owned(),
    ));
    headers
}

fn consumer_headers(consumer: &Consumer) -> Vec<(HeaderName, String)> {
    let mut headers = vec![
        (
            HeaderName::from_static("x-consumer-id"),
            consumer.id.to_string(),
        ),
        (
            HeaderName::from_static("x-consumer-username"),
            consumer.username.clone(),
        ),
    ];
    if let Some(custom_id) = &consumer.custom_id {
        headers.push((
            HeaderName::from_static("x-consumer-custom-id"),
            custom_id.clone(),
        ));
    }
    headers
}
