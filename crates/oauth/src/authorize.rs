//! `POST …/oauth2/authorize`: called by the application's backend once it has logged the user
//! in. Answers with the `redirect_uri` to send the user's browser to, carrying an
//! authorization code (in the query) or, for the implicit grant, a token (in the fragment).

use serde::{Deserialize, Serialize};
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, GrantType, Service};
use tollgate_store::{TokenHash, TokenStore};
use uuid::Uuid;

use crate::issue::{
    Failure, authenticated_userid, check_provision_key, insert, mint, requested_scope,
    store_failure,
};
use crate::pkce::{check_challenge, read_challenge};
use crate::redirect::{self, Part};
use crate::response::{OAuthError, OAuthResponse};
use crate::{EpochMillis, Params, Transport, random};

/// Codes live five minutes, as Kong's do.
pub const CODE_TTL_SECS: u32 = 300;

/// What an authorization code stands for, kept in the store under the code's hash.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CodeGrant {
    pub credential_id: Uuid,
    pub service_id: Option<Uuid>,
    pub authenticated_userid: String,
    pub scope: String,
    /// The S256 `code_challenge`, when the client sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// The service that issued the code, `globalCredentials` or not: Kong binds a code to the
    /// plugin instance that issued it. Absent from codes issued before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<Uuid>,
}

#[derive(Debug)]
pub struct AuthorizeRequest<'a> {
    pub params: &'a Params,
    pub transport: Transport,
}

#[derive(Serialize)]
struct RedirectBody<'a> {
    redirect_uri: &'a str,
}

/// Handles a request to `…/oauth2/authorize` of `service`.
pub async fn authorize<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    service: &Service,
    request: AuthorizeRequest<'_>,
    now: EpochMillis,
) -> OAuthResponse {
    let params = request.params;
    let conf = &service.oauth2;
    let state = params.text("state");

    // Until the client is known there is nowhere to redirect to: these errors are plain JSON.
    if let Some(reason) = request.transport.https_error() {
        return OAuthError::bad_request("access_denied", reason).into_response(state);
    }
    if let Err(error) = check_provision_key(service, params).await {
        return error.into_response(state);
    }
    let userid = match authenticated_userid(params) {
        Ok(userid) => userid,
        Err(error) => return error.into_response(state),
    };

    // Kong's checks run in sequence and a later failure replaces an earlier one.
    let mut error = None;
    // The enabled grant whose `response_type` was asked for: the table in `GrantType` says
    // which grant answers to which name.
    let requested = params.text("response_type");
    let grant = conf.enabled_grants().iter().find(|grant| {
        grant
            .response_type()
            .is_some_and(|name| Some(name) == requested)
    });
    let implicit = match grant {
        Some(GrantType::AuthorizationCode) => false,
        Some(GrantType::Implicit) => true,
        _ => {
            error = Some(OAuthError::bad_request(
                "unsupported_response_type",
                "Invalid response_type",
            ));
            false
        }
    };
    let client = params
        .text("client_id")
        .and_then(|id| snapshot.application_by_client_id(&service.namespace, id))
        .filter(|client| !client.redirect_uris.is_empty());
    let Some(client) = client else {
        // An unknown client (or one without redirect URIs) replaces every error before it,
        // and leaves nowhere to redirect to; only a malformed PKCE challenge comes after it.
        let error = match read_challenge(params) {
            Err(pkce) => pkce,
            Ok(_) => OAuthError::bad_request("invalid_client", "Invalid client authentication"),
        };
        return error.into_response(state);
    };
    let scope = requested_scope(service, client, params).unwrap_or_else(|e| {
        error = Some(e);
        String::new()
    });
    let mut redirect_uri = params
        .text("redirect_uri")
        .unwrap_or(&client.redirect_uris[0]);
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        error = Some(OAuthError::bad_request(
            "invalid_request",
            "Invalid redirect_uri that does not match with any redirect_uri created with the application",
        ));
        // Never send the user to an unregistered URI, even with an error.
        redirect_uri = &client.redirect_uris[0];
    }
    // Kong checks the challenge for both response types, after everything above.
    let challenge = match check_challenge(conf.pkce, client, params) {
        Ok(challenge) => challenge,
        Err(e) => {
            error = Some(e);
            None
        }
    };
    if error.is_none() {
        let grant = if implicit {
            GrantType::Implicit
        } else {
            GrantType::AuthorizationCode
        };
        if let Some(allowed) = &client.allowed_grants
            && !allowed.contains(&grant)
        {
            error = Some(OAuthError::bad_request(
                "unauthorized_client",
                format!(
                    "The client is not allowed to use the {} grant",
                    grant.as_str()
                ),
            ));
        }
    }
    if let Some(error) = error {
        let mut query = vec![
            ("error", error.code),
            ("error_description", error.description.as_ref()),
        ];
        if let Some(state) = state {
            query.push(("state", state));
        }
        let uri = redirect::with_params(redirect_uri, Part::Query, &query);
        return OAuthResponse::json(
            http::StatusCode::BAD_REQUEST,
            &RedirectBody { redirect_uri: &uri },
        );
    }

    let result = if implicit {
        issue_implicit(
            store,
            service,
            client,
            userid,
            scope,
            state,
            redirect_uri,
            now,
        )
        .await
    } else {
        issue_code(
            store,
            service,
            client,
            userid,
            scope,
            challenge,
            state,
            redirect_uri,
        )
        .await
    };
    match result {
        Ok(uri) => OAuthResponse::ok_json(&RedirectBody { redirect_uri: &uri }),
        Err(Failure::OAuth(error)) => error.into_response(state),
        Err(Failure::Store(error)) => store_failure(&error),
    }
}

#[allow(clippy::too_many_arguments)]
async fn issue_code<S: TokenStore>(
    store: &S,
    service: &Service,
    client: &Application,
    userid: &str,
    scope: String,
    challenge: Option<String>,
    state: Option<&str>,
    redirect_uri: &str,
) -> Result<String, Failure> {
    let code = random::token();
    let grant = CodeGrant {
        credential_id: client.id,
        service_id: (!service.oauth2.global_credentials).then_some(service.id),
        authenticated_userid: userid.to_owned(),
        scope,
        challenge,
        issuer: Some(service.id),
    };
    let payload = serde_json::to_vec(&grant)
        .map_err(|e| Failure::Store(tollgate_store::StoreError::Corrupt(e.to_string())))?;
    store
        .put_code(
            &service.namespace,
            &TokenHash::of(&code),
            &payload,
            CODE_TTL_SECS,
        )
        .await
        .map_err(Failure::Store)?;
    let mut query = vec![("code", code.as_str())];
    if let Some(state) = state {
        query.push(("state", state));
    }
    Ok(redirect::with_params(redirect_uri, Part::Query, &query))
}

#[allow(clippy::too_many_arguments)]
async fn issue_implicit<S: TokenStore>(
    store: &S,
    service: &Service,
    client: &Application,
    userid: &str,
    scope: String,
    state: Option<&str>,
    redirect_uri: &str,
    now: EpochMillis,
) -> Result<String, Failure> {
    // The implicit grant never gets a refresh token: it would end up in browser history.
    let minted = mint(service, client, Some(userid.to_owned()), scope, now, true);
    insert(store, &minted).await?;
    let expires_in = minted.record.expires_in.to_string();
    let mut fragment = vec![
        ("access_token", minted.access_token.as_str()),
        ("token_type", "bearer"),
    ];
    if minted.record.expires_in > 0 {
        fragment.push(("expires_in", &expires_in));
    }
    if let Some(state) = state {
        fragment.push(("state", state));
    }
    Ok(redirect::with_params(
        redirect_uri,
        Part::Fragment,
        &fragment,
    ))
}
