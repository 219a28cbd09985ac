//! Issuing a token pair: what every grant that issues one checks of the request (the
//! provision key, the user, the scope), minting the record and its tokens, storing them, and
//! the answer when the store fails. The token and authorize endpoints both issue.

use tollgate_api::snapshot::{Application, Service};
use tollgate_store::{StoreError, TokenHash, TokenRecord, TokenStore};
use uuid::Uuid;

use crate::response::{OAuthError, OAuthResponse};
use crate::{EpochMillis, ParamValue, Params, random, secret_gate};

/// A token pair minted for a record, in the clear only until it is sent.
pub(crate) struct Minted {
    pub record: TokenRecord,
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// Why a grant issued nothing: an OAuth error for the client, or the store failing.
pub(crate) enum Failure {
    OAuth(OAuthError),
    Store(StoreError),
}

/// Issues a record and its tokens with the service's current lifetimes, as Kong's
/// `generate_token` does: no refresh token when the access token never expires or the grant
/// has none, and a record that lives `refreshTokenTtl` only while tokens expire at all.
pub(crate) fn mint(
    service: &Service,
    client: &Application,
    authenticated_userid: Option<String>,
    scope: String,
    now: EpochMillis,
    disable_refresh: bool,
) -> Minted {
    let conf = &service.oauth2;
    let expires_in = conf.token_expiration;
    let refresh_token = (!disable_refresh && expires_in > 0).then(random::token);
    let ttl = if expires_in > 0 {
        conf.refresh_token_ttl
    } else {
        0
    };
    Minted {
        record: TokenRecord {
            id: Uuid::new_v4(),
            namespace: service.namespace.clone(),
            credential_id: client.id,
            client_id: client.client_id.clone(),
            service_id: (!conf.global_credentials).then_some(service.id),
            authenticated_userid,
            scope,
            expires_in,
            created_at: now,
            ttl,
        },
        access_token: random::token(),
        refresh_token,
    }
}

pub(crate) async fn insert<S: TokenStore>(store: &S, minted: &Minted) -> Result<(), Failure> {
    let access = TokenHash::of(&minted.access_token);
    let refresh = minted.refresh_token.as_deref().map(TokenHash::of);
    store
        .insert(&minted.record, &access, refresh.as_ref())
        .await
        .map_err(Failure::Store)
}

/// Kong's `retrieve_scope`: only checked when the service declares scopes; then every
/// requested scope must be one of them (and, beyond Kong, one the application may have).
pub(crate) fn requested_scope(
    service: &Service,
    client: &Application,
    params: &Params,
) -> Result<String, OAuthError> {
    let conf = &service.oauth2;
    let declared = !conf.scopes.is_empty();
    match params.get("scope") {
        Some(value) if declared => {
            let ParamValue::Text(requested) = value else {
                return Err(scope_not_a_string());
            };
            let mut granted = Vec::new();
            for scope in requested.split_whitespace() {
                let allowed_here = conf.scopes.iter().any(|s| s == scope);
                let allowed_for_client = client
                    .allowed_scopes
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|s| s == scope));
                if !allowed_here || !allowed_for_client {
                    return Err(OAuthError::bad_request(
                        "invalid_scope",
                        format!("\"{scope}\" is an invalid scope"),
                    ));
                }
                granted.push(scope);
            }
            Ok(granted.join(" "))
        }
        None if conf.mandatory_scope => Err(OAuthError::bad_request(
            "invalid_scope",
            "You must specify a scope",
        )),
        _ => Ok(String::new()),
    }
}

pub(crate) fn scope_not_a_string() -> OAuthError {
    OAuthError::bad_request("invalid_scope", "scope must be a string")
}

pub(crate) async fn check_provision_key(
    service: &Service,
    params: &Params,
) -> Result<(), OAuthError> {
    let matched = match params.text("provision_key") {
        Some(presented) => {
            secret_gate::global()
                .verify(&service.oauth2.provision_key, presented)
                .await?
        }
        None => false,
    };
    if matched {
        Ok(())
    } else {
        Err(OAuthError::bad_request(
            "invalid_provision_key",
            "Invalid provision_key",
        ))
    }
}

pub(crate) fn authenticated_userid(params: &Params) -> Result<&str, OAuthError> {
    match params.text_or_scalar("authenticated_userid") {
        Some(id) if !kong_strip(id).is_empty() => Ok(id),
        _ => Err(OAuthError::bad_request(
            "invalid_authenticated_userid",
            "Missing authenticated_userid parameter",
        )),
    }
}

/// `value` without the blanks Kong's `strip` removes at either end: space, and tab to
/// carriage return.
pub(crate) fn kong_strip(value: &str) -> &str {
    value.trim_matches(|c| matches!(c, ' ' | '\t'..='\r'))
}

/// The answer when the token store cannot be used: a 503, the error logged.
pub(crate) fn store_failure(error: &StoreError) -> OAuthResponse {
    tracing::error!(%error, "token store failed");
    OAuthResponse::message(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "The token store is unavailable",
    )
}

impl From<OAuthError> for Failure {
    fn from(error: OAuthError) -> Self {
        Self::OAuth(error)
    }
}
