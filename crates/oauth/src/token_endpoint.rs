//! `POST …/oauth2/token`: client authentication and the grants, checked in Kong's order.
//!
//! Kong evaluates its checks one after another and the last failing one decides the answer;
//! [`issue_token`] keeps that precedence so scripts written against Kong see the same errors
//! when several things are wrong at once.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, ClientType, GrantType, Service};
use tollgate_store::{Reuse, TokenHash, TokenStore};

use crate::authorize::CodeGrant;
use crate::issue::{
    Failure, Minted, authenticated_userid, check_provision_key, insert, kong_strip, mint,
    requested_scope, scope_not_a_string, store_failure,
};
use crate::pkce::verify_code_verifier;
use crate::response::{OAuthError, OAuthResponse};
use crate::{EpochMillis, Params, Transport, secret_gate};

/// What the token endpoint needs from the HTTP request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub params: &'a Params,
    /// The value of the service's `authHeaderName` header, which may carry Basic credentials.
    pub auth_header: Option<&'a str>,
    pub transport: Transport,
}

/// Client credentials as Kong finds them: both parameters, else Basic in the auth header,
/// else a lone `client_id` (a public client).
#[derive(Debug, Default)]
pub(crate) struct ClientCredentials<'a> {
    pub client_id: Option<Cow<'a, str>>,
    pub client_secret: Option<Cow<'a, str>>,
    pub from_header: bool,
}

/// The success body. Field order is the article's: `refresh_token`, `token_type`,
/// `access_token`, `expires_in`.
#[derive(Serialize)]
pub(crate) struct TokenBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<&'a str>,
    pub token_type: &'static str,
    pub access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'a str>,
}

/// Handles a request to `…/oauth2/token` of `service`.
pub async fn issue_token<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    service: &Service,
    request: TokenRequest<'_>,
    now: EpochMillis,
) -> OAuthResponse {
    let state = request.params.text("state");
    match token_grant(store, snapshot, service, &request, now).await {
        Ok(minted) => OAuthResponse::ok_json(&token_body(&minted, state)),
        Err(Failure::OAuth(error)) => error.into_response(state),
        Err(Failure::Store(error)) => store_failure(&error),
    }
}

async fn token_grant<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    service: &Service,
    request: &TokenRequest<'_>,
    now: EpochMillis,
) -> Result<Minted, Failure> {
    let params = request.params;
    let conf = &service.oauth2;
    if let Some(reason) = request.transport.https_error() {
        return Err(OAuthError::bad_request("access_denied", reason).into());
    }

    // Kong's checks run in sequence and a later failure replaces an earlier one.
    let mut error = None;
    let grant = params
        .text("grant_type")
        .and_then(|g| g.parse::<GrantType>().ok())
        .filter(|&grant| match grant {
            // As in Kong, whatever the flags say: a code only comes from the authorize
            // endpoint, which checks its flag, and refresh tokens from the grants that issue them.
            GrantType::AuthorizationCode | GrantType::RefreshToken => true,
            GrantType::ClientCredentials | GrantType::Password => {
                conf.enabled_grants().contains(grant)
            }
            // A response type of the authorize endpoint, never a grant_type here.
            GrantType::Implicit => false,
        });
    if grant.is_none() {
        error = Some(OAuthError::bad_request(
            "unsupported_grant_type",
            "Invalid grant_type",
        ));
    }

    let credentials = ClientCredentials::find(params, request.auth_header);
    let client = credentials
        .client_id
        .as_deref()
        .and_then(|id| snapshot.application_by_client_id(&service.namespace, id));
    match client {
        None => error = Some(OAuthError::invalid_client(credentials.from_header)),
        Some(client) => {
            // Every grant but client_credentials needs the application's redirect URIs: one
            // without any is no client of these grants (Kong's `get_redirect_uris`).
            if grant != Some(GrantType::ClientCredentials) {
                if client.redirect_uris.is_empty() {
                    error = Some(OAuthError::invalid_client(credentials.from_header));
                } else if let Some(uri) = params.text("redirect_uri")
                    && !client.redirect_uris.iter().any(|r| r == uri)
                {
                    error = Some(invalid_redirect_uri());
                }
            }
            if let Some(e) = check_client_secret(client, &credentials).await {
                error = Some(e);
            }
        }
    }
    if let Some(error) = error {
        return Err(error.into());
    }
    let (Some(grant), Some(client)) = (grant, client) else {
        // Both were checked above; an absent one has already returned its error.
        return Err(OAuthError::invalid_client(credentials.from_header).into());
    };

    // (stricter than Kong) RFC 6749 §4.4: the client credentials grant is for confidential
    // clients only. Anyone can present a public client's id, so Kong's answer let anyone mint
    // tokens, and records that live for refreshTokenTtl.
    if grant == GrantType::ClientCredentials && client.client_type == ClientType::Public {
        return Err(OAuthError::bad_request(
            "unauthorized_client",
            "The client_credentials grant is only for confidential clients",
        )
        .into());
    }

    // (beyond Kong) an application may be limited to some grants.
    if let Some(allowed) = &client.allowed_grants
        && !allowed.contains(&grant)
    {
        return Err(OAuthError::bad_request(
            "unauthorized_client",
            format!(
                "The client is not allowed to use the {} grant",
                grant.as_str()
            ),
        )
        .into());
    }

    match grant {
        GrantType::Password => {
            check_provision_key(service, params).await?;
            let userid = authenticated_userid(params)?;
            let scope = requested_scope(service, client, params)?;
            let minted = mint(service, client, Some(userid.to_owned()), scope, now, false);
            insert(store, &minted).await?;
            Ok(minted)
        }
        GrantType::ClientCredentials => {
            // The provision key only guards the `authenticated_userid` a backend may assert.
            let userid = params.text("authenticated_userid");
            if params.contains("authenticated_userid") {
                check_provision_key(service, params).await?;
            }
            let scope = requested_scope(service, client, params)?;
            let minted = mint(service, client, userid.map(str::to_owned), scope, now, true);
            insert(store, &minted).await?;
            Ok(minted)
        }
        GrantType::RefreshToken => refresh(store, service, client, params, now).await,
        GrantType::AuthorizationCode => exchange_code(store, service, client, params, now).await,
        // `implicit` is a response type of the authorize endpoint, never a grant_type here.
        GrantType::Implicit => {
            Err(OAuthError::bad_request("unsupported_grant_type", "Invalid grant_type").into())
        }
    }
}

/// The authorization code grant, checked in Kong's order: the code must belong to this
/// service (the plugin instance that issued it, with `globalCredentials` too) and this client,
/// and pass its PKCE challenge. A failed check leaves the code usable, as Kong leaves it; only
/// the exchange that issues tokens takes it, in one step, so it works once even when two
/// requests race with it.
async fn exchange_code<S: TokenStore>(
    store: &S,
    service: &Service,
    client: &Application,
    params: &Params,
    now: EpochMillis,
) -> Result<Minted, Failure> {
    let invalid = || OAuthError::bad_request("invalid_request", "Invalid code");
    let Some(code) = params.text("code") else {
        return Err(invalid().into());
    };
    let code_hash = TokenHash::of(code);
    let Some(payload) = store
        .find_code(&service.namespace, &code_hash)
        .await
        .map_err(Failure::Store)?
    else {
        return Err(invalid().into());
    };
    let grant: CodeGrant = match serde_json::from_slice(&payload) {
        Ok(grant) => grant,
        Err(error) => {
            tracing::warn!(%error, "an authorization code's record could not be read");
            return Err(invalid().into());
        }
    };
    check_code_binding(service, client, &grant)?;
    verify_code_verifier(
        service.oauth2.pkce,
        client,
        grant.challenge.as_deref(),
        params,
    )?;
    // Another exchange may have taken the code since it was read.
    if store
        .take_code(&service.namespace, &code_hash)
        .await
        .map_err(Failure::Store)?
        .is_none()
    {
        return Err(invalid().into());
    }
    let minted = mint(
        service,
        client,
        Some(grant.authenticated_userid),
        grant.scope,
        now,
        false,
    );
    insert(store, &minted).await?;
    Ok(minted)
}

/// A code is exchanged only at the service that issued it, by the client it was issued to.
/// With `globalCredentials` Kong binds it to the plugin instance: the same rule. A code from
/// before that binding was recorded (no `issuer`) passes, as Kong lets such codes pass.
fn check_code_binding(
    service: &Service,
    client: &Application,
    grant: &CodeGrant,
) -> Result<(), OAuthError> {
    let invalid = || OAuthError::bad_request("invalid_request", "Invalid code");
    let bound_elsewhere =
        !service.oauth2.global_credentials && grant.service_id != Some(service.id);
    if bound_elsewhere || grant.credential_id != client.id {
        return Err(invalid());
    }
    if let Some(issuer) = grant.issuer
        && issuer != service.id
    {
        return Err(invalid());
    }
    Ok(())
}

async fn refresh<S: TokenStore>(
    store: &S,
    service: &Service,
    client: &Application,
    params: &Params,
    now: EpochMillis,
) -> Result<Minted, Failure> {
    let invalid = || OAuthError::bad_request("invalid_request", "Invalid refresh_token");
    let Some(presented) = params.text("refresh_token") else {
        return Err(invalid().into());
    };
    let old_hash = TokenHash::of(presented);
    let Some(old) = store
        .find_refresh(&service.namespace, &old_hash)
        .await
        .map_err(Failure::Store)?
    else {
        // (beyond Kong) A refresh token that was already swapped is either a retry or a
        // stolen copy; past the grace window the whole chain issued from it is revoked
        // (OAuth 2.0 Security BCP §4.14). The client sees the same answer either way.
        let grace = service.oauth2.refresh_token_reuse_grace;
        match store
            .revoke_on_reuse(&service.namespace, &old_hash, grace)
            .await
            .map_err(Failure::Store)?
        {
            Reuse::Revoked { records } => tracing::warn!(
                namespace = %service.namespace,
                client = %client.client_id,
                records,
                "a refresh token was used twice: revoked every token issued from it"
            ),
            Reuse::WithinGrace | Reuse::NotRetired => {}
        }
        return Err(invalid().into());
    };
    if !service.oauth2.global_credentials && old.service_id != Some(service.id) {
        return Err(invalid().into());
    }
    if old.credential_id != client.id {
        return Err(OAuthError::invalid_client(false).into());
    }

    // Kong: every scope of the token must be one of this service's. A global token refreshed
    // at a service that does not declare its scopes would otherwise carry them there.
    if old
        .scope
        .split_whitespace()
        .any(|scope| !service.oauth2.scopes.iter().any(|s| s == scope))
    {
        return Err(OAuthError::bad_request("invalid_scope", "Scope mismatch").into());
    }

    // RFC 6749 §6: a refresh may narrow the scope, never widen it.
    let scope = match params.get("scope") {
        None => old.scope.clone(),
        Some(crate::ParamValue::NotText | crate::ParamValue::Scalar(_)) => {
            return Err(scope_not_a_string().into());
        }
        Some(crate::ParamValue::Text(requested)) => {
            let granted: Vec<&str> = old.scope.split_whitespace().collect();
            if !requested.split_whitespace().all(|s| granted.contains(&s)) {
                return Err(OAuthError::bad_request("invalid_scope", "Scope mismatch").into());
            }
            requested.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };

    let mut minted = mint(
        service,
        client,
        old.authenticated_userid.clone(),
        scope,
        now,
        false,
    );
    if service.oauth2.reuse_refresh_token {
        // Kong keeps the record (same id) and its refresh token, with a new access token and
        // a fresh creation time.
        minted.record.id = old.id;
        if minted.refresh_token.is_some() {
            minted.refresh_token = Some(presented.to_owned());
        }
    }
    let access = TokenHash::of(&minted.access_token);
    let refresh = minted.refresh_token.as_deref().map(TokenHash::of);
    let swapped = store
        .swap_refresh(
            &service.namespace,
            &old_hash,
            &minted.record,
            &access,
            refresh.as_ref(),
        )
        .await
        .map_err(Failure::Store)?;
    if swapped {
        Ok(minted)
    } else {
        // Another request swapped this refresh token first.
        Err(invalid().into())
    }
}

/// `None` when the client authenticated. A 503 from [`secret_gate`] when its secret could
/// not be checked now: callers pass that one through unchanged.
pub(crate) async fn check_client_secret(
    client: &Application,
    credentials: &ClientCredentials<'_>,
) -> Option<OAuthError> {
    match (
        client.client_type,
        &client.client_secret,
        &credentials.client_secret,
    ) {
        // Blanks are no secret: Kong lets a public client send `Basic` of `id:` or `id:  `.
        (ClientType::Public, _, Some(secret)) if !kong_strip(secret).is_empty() => {
            Some(OAuthError::bad_request(
                "invalid_request",
                "client_secret is disallowed for public clients",
            ))
        }
        (ClientType::Public, _, _) => None,
        (ClientType::Confidential, Some(digest), Some(secret)) => {
            match secret_gate::global().verify(digest, secret).await {
                Ok(true) => None,
                Ok(false) => Some(OAuthError::invalid_client(credentials.from_header)),
                Err(busy) => Some(busy),
            }
        }
        (ClientType::Confidential, _, _) => {
            Some(OAuthError::invalid_client(credentials.from_header))
        }
    }
}

fn invalid_redirect_uri() -> OAuthError {
    OAuthError::bad_request(
        "invalid_request",
        "Invalid redirect_uri that does not match with any redirect_uri created with the application",
    )
}

// === impl ClientCredentials ===

impl<'a> ClientCredentials<'a> {
    pub(crate) fn find(params: &'a Params, auth_header: Option<&'a str>) -> Self {
        if let (Some(id), Some(secret)) = (params.text("client_id"), params.text("client_secret")) {
            return Self {
                client_id: Some(Cow::Borrowed(id)),
                client_secret: Some(Cow::Borrowed(secret)),
                from_header: false,
            };
        }
        if let Some(header) = auth_header {
            let mut credentials = Self {
                from_header: true,
                ..Self::default()
            };
            if let Some((id, secret)) = parse_basic(header) {
                credentials.client_id = Some(Cow::Owned(id));
                credentials.client_secret = secret.map(Cow::Owned);
            }
            return credentials;
        }
        Self {
            client_id: params.text("client_id").map(Cow::Borrowed),
            client_secret: params.text("client_secret").map(Cow::Borrowed),
            from_header: false,
        }
    }
}

/// `Basic base64(id:secret)`, scheme case-insensitive: the id, and the secret after the first
/// `:` when there is one (a public client may send its id alone, as Kong reads it). `None`
/// for anything else.
fn parse_basic(header: &str) -> Option<(String, Option<String>)> {
    let header = header.trim_start();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    Some(match decoded.split_once(':') {
        Some((id, secret)) => (id.to_owned(), Some(secret.to_owned())),
        None => (decoded, None),
    })
}

/// The success body of `minted`.
fn token_body<'a>(minted: &'a Minted, state: Option<&'a str>) -> TokenBody<'a> {
    TokenBody {
        refresh_token: minted.refresh_token.as_deref(),
        token_type: "bearer",
        access_token: &minted.access_token,
        expires_in: (minted.record.expires_in > 0).then_some(minted.record.expires_in),
        state,
    }
}

#[cfg(test)]
mod tests;
