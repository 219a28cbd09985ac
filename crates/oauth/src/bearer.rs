//! The bearer check on every proxied request: where Kong looks for the access token, what it
//! accepts, and the identity it hands to the upstream.

use std::sync::Arc;

use http::HeaderName;
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, Consumer, Service};
use tollgate_store::{TokenHash, TokenRecord, TokenStore};

use crate::issue;
use crate::response::OAuthResponse;
use crate::{EpochMillis, Params};

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

/// The token in the value of the `authHeaderName` header: the second word of `Bearer X` or
/// `Token X` (any case), else the whole value, as Kong reads it. Words are split at ASCII
/// whitespace, as Kong's Lua patterns split them; a header value read as text is ASCII anyway,
/// and the ASCII split is several times cheaper than the Unicode one on every request.
pub fn token_from_header(value: &str) -> &str {
    let mut words = value.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(scheme), Some(token), None)
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") =>
        {
            token
        }
        _ => value,
    }
}

/// `access_token` of a proxied request without the auth header, as Kong's
/// `parse_access_token` reads it: from the query string merged with a JSON, form or multipart
/// `body`, the body winning. `None` when absent or not a string (a JSON number, a repeated
/// key). A body that does not parse counts as none, as Kong's `get_body` failing leaves only
/// the query string.
pub async fn token_from_params(
    query: Option<&str>,
    content_type: Option<&str>,
    body: bytes::Bytes,
) -> Option<String> {
    let query_params = || Params::from_urlencoded(query.unwrap_or("").as_bytes());
    let params = Params::parse(query, content_type, body)
        .await
        .unwrap_or_else(|_| query_params());
    params.text("access_token").map(str::to_owned)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_token_schemes_in_any_case() {
        assert_eq!(token_from_header("Bearer abc"), "abc");
        assert_eq!(token_from_header("bearer abc"), "abc");
        assert_eq!(token_from_header("TOKEN abc"), "abc");
        assert_eq!(token_from_header("  Bearer   abc  "), "abc");
        assert_eq!(token_from_header("Bearer\tabc"), "abc");
    }

    async fn from_params(query: Option<&str>, content_type: &str, body: &str) -> Option<String> {
        token_from_params(
            query,
            Some(content_type),
            bytes::Bytes::from(body.to_owned()),
        )
        .await
    }

    #[tokio::test]
    async fn access_token_in_a_json_form_or_multipart_body() {
        // 03-access_spec.lua:3189.
        let json = "application/json";
        assert_eq!(
            from_params(None, json, r#"{"access_token":"t"}"#)
                .await
                .as_deref(),
            Some("t")
        );
        // The body wins, even with a value that is no token at all.
        assert_eq!(
            from_params(Some("access_token=q"), json, r#"{"access_token":1}"#).await,
            None
        );
        assert_eq!(
            from_params(Some("access_token=q"), json, "{not json")
                .await
                .as_deref(),
            Some("q")
        );
        let multipart = "multipart/form-data; boundary=b";
        let body =
            "--b\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\nm\r\n--b--\r\n";
        assert_eq!(
            from_params(None, multipart, body).await.as_deref(),
            Some("m")
        );
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            from_params(Some("a=1"), form, "access_token=f")
                .await
                .as_deref(),
            Some("f")
        );
        assert_eq!(
            from_params(None, form, "access_token=a&access_token=b").await,
            None
        );
    }

    #[test]
    fn anything_else_is_the_whole_value() {
        assert_eq!(token_from_header("abc"), "abc");
        assert_eq!(token_from_header("Basic abc"), "Basic abc");
        assert_eq!(token_from_header("Bearer a b"), "Bearer a b");
        // Only ASCII whitespace separates words, as in Kong's Lua patterns.
        assert_eq!(token_from_header("Bearer\u{a0}abc"), "Bearer\u{a0}abc");
    }
}
