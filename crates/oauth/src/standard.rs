//! (beyond Kong) The standard endpoints Kong never had, under every route:
//! token introspection (RFC 7662), token revocation (RFC 7009) and authorization server
//! metadata (RFC 8414).

use std::sync::Arc;

use http::StatusCode;
use serde::Serialize;
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, ClientType, GrantType, Service};
use tollgate_store::{TokenHash, TokenRecord, TokenStore};

use crate::bearer::check_record;
use crate::issue::store_failure;
use crate::response::{OAuthError, OAuthResponse};
use crate::token_endpoint::{ClientCredentials, check_client_secret};
use crate::{EpochMillis, Params, Transport};

/// A request to introspect or revoke a token: the client authenticates as at the token
/// endpoint.
#[derive(Debug)]
pub struct ClientRequest<'a> {
    pub params: &'a Params,
    pub auth_header: Option<&'a str>,
    pub transport: Transport,
}

/// RFC 7662 §2.2. Only `active` when the token is not.
#[derive(Serialize, Default)]
struct Introspection<'a> {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// `POST …/oauth2/introspect`: whether `token` is an active access or refresh token for this
/// service, and what it grants. Any confidential client of the namespace may ask, with its
/// secret: resource servers introspect tokens issued to other clients. A public client's id
/// is no credential (anyone can send it), so it may not (RFC 7662 §2.1, §4).
pub async fn introspect<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    service: &Service,
    request: ClientRequest<'_>,
    now: EpochMillis,
) -> OAuthResponse {
    if let Err(error) = authenticate_confidential_client(snapshot, service, &request).await {
        return error.into_response(None);
    }
    let Some(token) = request.params.text("token").filter(|t| !t.is_empty()) else {
        return OAuthError::bad_request("invalid_request", "The token parameter is missing")
            .into_response(None);
    };
    let hash = TokenHash::of(token);
    let hint = request.params.text("token_type_hint");
    let lookups: [bool; 2] = if hint == Some("refresh_token") {
        [true, false]
    } else {
        [false, true]
    };
    for is_refresh in lookups {
        let found = if is_refresh {
            store.find_refresh(&service.namespace, &hash).await
        } else {
            store.find_access(&service.namespace, &hash).await
        };
        match found {
            Err(error) => return store_failure(&error),
            Ok(None) => continue,
            Ok(Some(record)) => {
                // A refresh token outlives its access token: only the binding and the
                // application are checked for it.
                let mut checked = record.clone();
                if is_refresh {
                    checked.expires_in = 0;
                }
                let Ok(identity) = check_record(snapshot, service, Arc::new(checked), now) else {
                    break;
                };
                return OAuthResponse::ok_json(&describe(
                    &record,
                    identity.consumer.username.as_str(),
                    identity.application,
                    is_refresh,
                ));
            }
        }
    }
    OAuthResponse::ok_json(&Introspection::default())
}

fn describe<'a>(
    record: &'a TokenRecord,
    username: &'a str,
    application: &'a Application,
    is_refresh: bool,
) -> Introspection<'a> {
    let iat = record.created_at / 1000;
    let lifetime = if is_refresh {
        record.ttl
    } else {
        record.expires_in
    };
    Introspection {
        active: true,
        scope: Some(record.scope.as_str()).filter(|s| !s.is_empty()),
        client_id: Some(application.client_id.as_str()),
        username: Some(username),
        token_type: Some(if is_refresh {
            "refresh_token"
        } else {
            "bearer"
        }),
        exp: (lifetime > 0).then(|| iat + u64::from(lifetime)),
        iat: Some(iat),
        sub: record.authenticated_userid.as_deref(),
        aud: record.service_id.map(|id| id.to_string()),
        jti: Some(record.id.to_string()),
    }
}

/// `POST …/oauth2/revoke`: revokes an access or refresh token of the calling client, with
/// the whole record, so revoking a refresh token revokes its access token too. An unknown
/// token gets 200, as RFC 7009 §2.2 asks. A token issued to another client is refused and
/// left alone (RFC 7009 §2.1): 400 `invalid_grant`, RFC 6749 §5.2's code for a grant "issued
/// to another client". That tells the caller no more than the token itself does: whoever
/// holds a token can already learn whether it works by using it.
pub async fn revoke<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    service: &Service,
    request: ClientRequest<'_>,
) -> OAuthResponse {
    let client = match authenticate_client(snapshot, service, &request).await {
        Ok(client) => client,
        Err(error) => return error.into_response(None),
    };
    let Some(token) = request.params.text("token").filter(|t| !t.is_empty()) else {
        return OAuthError::bad_request("invalid_request", "The token parameter is missing")
            .into_response(None);
    };
    let hash = TokenHash::of(token);
    let namespace = &service.namespace;
    let record = match store.find_access(namespace, &hash).await {
        Ok(Some(record)) => Some(record),
        Ok(None) => match store.find_refresh(namespace, &hash).await {
            Ok(found) => found,
            Err(error) => return store_failure(&error),
        },
        Err(error) => return store_failure(&error),
    };
    if let Some(record) = record {
        if record.credential_id != client.id {
            tracing::info!(namespace, id = %record.id, client = %client.client_id, "a client tried to revoke another client's token: refused");
            return OAuthError::bad_request(
                "invalid_grant",
                "The token was issued to another client",
            )
            .into_response(None);
        }
        if let Err(error) = store.delete(namespace, record.id).await {
            return store_failure(&error);
        }
        tracing::info!(namespace, id = %record.id, client = %client.client_id, "token revoked by its client");
    }
    OAuthResponse {
        status: StatusCode::OK,
        body: bytes::Bytes::new(),
        www_authenticate: None,
        no_store: true,
        retry_after: None,
    }
}

/// The client credentials of an introspection or revocation request, checked as the token
/// endpoint checks them.
async fn authenticate_client<'s>(
    snapshot: &'s Snapshot,
    service: &Service,
    request: &ClientRequest<'_>,
) -> Result<&'s Application, OAuthError> {
    if let Some(reason) = request.transport.https_error() {
        return Err(OAuthError::bad_request("access_denied", reason));
    }
    let credentials = ClientCredentials::find(request.params, request.auth_header);
    let client = credentials
        .client_id
        .as_deref()
        .and_then(|id| snapshot.application_by_client_id(&service.namespace, id))
        .ok_or_else(|| OAuthError::invalid_client(credentials.from_header))?;
    match check_client_secret(client, &credentials).await {
        Some(error) => Err(error),
        None => Ok(client),
    }
}

/// The client of an introspection request: a confidential client with its secret. Every
/// failure, a public client included, is 401 `invalid_client` with a Basic challenge, as
/// RFC 7662 §2.3 answers a resource server whose credentials do not work.
async fn authenticate_confidential_client<'s>(
    snapshot: &'s Snapshot,
    service: &Service,
    request: &ClientRequest<'_>,
) -> Result<&'s Application, OAuthError> {
    if let Some(reason) = request.transport.https_error() {
        return Err(OAuthError::bad_request("access_denied", reason));
    }
    let credentials = ClientCredentials::find(request.params, request.auth_header);
    let client = credentials
        .client_id
        .as_deref()
        .and_then(|id| snapshot.application_by_client_id(&service.namespace, id))
        .filter(|client| client.client_type == ClientType::Confidential)
        .ok_or_else(OAuthError::unauthenticated_client)?;
    match check_client_secret(client, &credentials).await {
        Some(busy) if busy.status == http::StatusCode::SERVICE_UNAVAILABLE => Err(busy),
        Some(_) => Err(OAuthError::unauthenticated_client()),
        None => Ok(client),
    }
}

/// RFC 8414 metadata for one route: where its endpoints are and what they support.
#[derive(Serialize)]
struct Metadata {
    issuer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_endpoint: Option<String>,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes_supported: Vec<String>,
    response_types_supported: Vec<&'static str>,
    grant_types_supported: Vec<&'static str>,
    token_endpoint_auth_methods_supported: [&'static str; 3],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    revocation_endpoint_auth_methods_supported: [&'static str; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    code_challenge_methods_supported: Option<[&'static str; 1]>,
}

const AUTH_METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "none"];
/// Introspection takes a confidential client's secret: no `none`.
const SECRET_AUTH_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];

/// `GET …/.well-known/oauth-authorization-server`: the document of the service's configured
/// `issuer`, its endpoints under it. Without one, 404: the request's Host is the client's to
/// choose, so building the document from it would let anyone name the endpoints (a cache or
/// a client that trusts the document would send credentials there).
pub fn metadata(service: &Service) -> OAuthResponse {
    let conf = &service.oauth2;
    let Some(base) = conf.issuer.as_deref() else {
        return OAuthResponse::message(
            StatusCode::NOT_FOUND,
            "No authorization server metadata: the OAuthService sets no spec.oauth2.issuer",
        );
    };
    let enabled = conf.enabled_grants();
    let response_types: Vec<&str> = enabled
        .iter()
        .filter_map(GrantType::response_type)
        .collect();
    let mut grants: Vec<&str> = enabled.iter().map(GrantType::as_str).collect();
    // The code and password grants issue refresh tokens, when access tokens expire at all.
    if conf.token_expiration > 0
        && (enabled.contains(GrantType::AuthorizationCode) || enabled.contains(GrantType::Password))
    {
        grants.push(GrantType::RefreshToken.as_str());
    }
    let authorize = !response_types.is_empty();
    let body = Metadata {
        issuer: base.to_owned(),
        authorization_endpoint: authorize.then(|| format!("{base}/oauth2/authorize")),
        token_endpoint: format!("{base}/oauth2/token"),
        introspection_endpoint: format!("{base}/oauth2/introspect"),
        revocation_endpoint: format!("{base}/oauth2/revoke"),
        scopes_supported: conf.scopes.clone(),
        response_types_supported: response_types,
        grant_types_supported: grants,
        token_endpoint_auth_methods_supported: AUTH_METHODS,
        introspection_endpoint_auth_methods_supported: SECRET_AUTH_METHODS,
        revocation_endpoint_auth_methods_supported: AUTH_METHODS,
        code_challenge_methods_supported: enabled
            .contains(GrantType::AuthorizationCode)
            .then_some(["S256"]),
    };
    let mut response = OAuthResponse::ok_json(&body);
    // Metadata is public and changes only with configuration: let clients cache it briefly.
    response.no_store = false;
    response
}
