//! `POST …/oauth2/authorize`: called by the application's backend once it has logged the user
//! in. Answers with the `redirect_uri` to send the user's browser to, carrying an
//! authorization code (in the query) or, for the implicit grant, a token (in the fragment).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_api::Snapshot;
use tollgate_api::snapshot::{Application, ClientType, GrantType, Pkce, Service};
use tollgate_store::{TokenHash, TokenStore};
use uuid::Uuid;

use crate::redirect::{self, Part};
use crate::response::{OAuthError, OAuthResponse};
use crate::token_endpoint::{
    Failure, authenticated_userid, check_provision_key, insert, mint, requested_scope,
    store_failure,
};
use crate::{EpochMillis, ParamValue, Params, Transport, random};

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
    let implicit = match params.text("response_type") {
        Some("code") if conf.enable_authorization_code => false,
        Some("token") if conf.enable_implicit_grant => true,
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

/// The `code_challenge` as Kong reads it: required when a method is given, the method `S256`
/// (or `s256`), and the challenge rewritten as unpadded base64url when it decodes as base64
/// of either alphabet. `None` when the client sent no challenge.
fn read_challenge(params: &Params) -> Result<Option<String>, OAuthError> {
    let method = params.get("code_challenge_method");
    let Some(challenge) = params.get("code_challenge") else {
        return match method {
            Some(_) => Err(OAuthError::bad_request(
                "invalid_request",
                "code_challenge is required when code_method is present",
            )),
            None => Ok(None),
        };
    };
    let Some(challenge) = (match challenge {
        ParamValue::Text(text) => Some(text),
        ParamValue::Scalar(_) | ParamValue::NotText => None,
    }) else {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_challenge is not a string",
        ));
    };
    if let Some(method) = method
        && !matches!(method, ParamValue::Text(m) if m == "S256" || m == "s256")
    {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_challenge_method is not supported, must be S256",
        ));
    }
    Ok(Some(canonical_challenge(challenge)))
}

/// PKCE at the authorize step: a challenge is required from public clients (unless
/// `pkce: none`) and from everyone with `pkce: strict`, whatever the response type.
fn check_challenge(
    pkce: Pkce,
    client: &Application,
    params: &Params,
) -> Result<Option<String>, OAuthError> {
    match read_challenge(params)? {
        Some(challenge) => Ok(Some(challenge)),
        None if client.client_type == ClientType::Public && pkce != Pkce::None => {
            Err(OAuthError::bad_request(
                "invalid_request",
                "code_challenge is required for public clients",
            ))
        }
        None if pkce == Pkce::Strict => Err(OAuthError::bad_request(
            "invalid_request",
            "code_challenge is required for confidential clients",
        )),
        None => Ok(None),
    }
}

/// `challenge` as unpadded base64url when it decodes as base64 (`+/` or `-_`, padded or
/// not), else unchanged: Kong's rewrite, so a challenge sent with padding or `+/` matches
/// the verifier's S256.
pub fn canonical_challenge(challenge: &str) -> String {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // nginx's decoder stops at the first `=`.
    let data = challenge.split('=').next().unwrap_or_default();
    let standard: String = data
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    match LENIENT.decode(standard) {
        Ok(decoded) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(decoded),
        Err(_) => challenge.to_owned(),
    }
}

/// PKCE at the token step (RFC 7636 §4.6). A verifier is needed when the code carries a
/// challenge, for public clients unless `pkce: none`, and always with `pkce: strict`.
pub(crate) fn verify_code_verifier(
    pkce: Pkce,
    client: &Application,
    grant: &CodeGrant,
    params: &Params,
) -> Result<(), OAuthError> {
    let needed = grant.challenge.is_some()
        || pkce == Pkce::Strict
        || (client.client_type == ClientType::Public && pkce != Pkce::None);
    if !needed {
        return Ok(());
    }
    let verifier = match params.get("code_verifier") {
        None => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "code_verifier is required for PKCE authorization requests",
            ));
        }
        Some(ParamValue::Scalar(_) | ParamValue::NotText) => {
            return Err(OAuthError::bad_request(
                "invalid_request",
                "code_verifier is not a string",
            ));
        }
        Some(ParamValue::Text(verifier)) => verifier,
    };
    if !(43..=128).contains(&verifier.len()) {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_verifier must be between 43 and 128 characters",
        ));
    }
    if !verifier
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(OAuthError::bad_request(
            "invalid_request",
            "code_verifier contains characters RFC 7636 does not allow",
        ));
    }
    let computed = s256(verifier);
    match &grant.challenge {
        Some(challenge) if subtle_eq(challenge, &computed) => Ok(()),
        _ => Err(OAuthError::bad_request("invalid_grant", "Invalid code")),
    }
}

/// `BASE64URL(SHA256(verifier))`, without padding.
pub fn s256(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn subtle_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_rewritten_as_unpadded_base64url() {
        // 03-access_spec.lua:2495 and :2522.
        assert_eq!(
            canonical_challenge("2aC4cMSkAsMRtZbhHhiZkDW3sddRf_iTRGil1r9gi8w="),
            "2aC4cMSkAsMRtZbhHhiZkDW3sddRf_iTRGil1r9gi8w"
        );
        assert_eq!(
            canonical_challenge("0LoS6Gtrw16r07+ZXsCf8MeAi21QHmKc3LJdUCA5w/o="),
            "0LoS6Gtrw16r07-ZXsCf8MeAi21QHmKc3LJdUCA5w_o"
        );
        assert_eq!(canonical_challenge("1234"), "1234");
        // Not base64 at all: kept as sent (and no verifier will match it).
        assert_eq!(canonical_challenge("a!b"), "a!b");
        assert_eq!(canonical_challenge("abcde"), "abcde");
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::default();
        for (k, v) in pairs {
            p.insert(*k, *v);
        }
        p
    }

    #[test]
    fn a_method_without_a_challenge_and_lowercase_s256() {
        // 03-access_spec.lua:1081.
        assert_eq!(
            read_challenge(&params(&[("code_challenge_method", "H256")]))
                .unwrap_err()
                .description,
            "code_challenge is required when code_method is present"
        );
        assert_eq!(
            read_challenge(&params(&[
                ("code_challenge", "1234"),
                ("code_challenge_method", "s256")
            ])),
            Ok(Some("1234".to_owned()))
        );
        assert_eq!(
            read_challenge(&params(&[
                ("code_challenge", "1234"),
                ("code_challenge_method", "foo")
            ]))
            .unwrap_err()
            .description,
            "code_challenge_method is not supported, must be S256"
        );
    }

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
