//! A real, third-party OAuth 2.0 client library (the `oauth2` crate) against the sidecar, as a
//! user's application would use it: one test per grant and standard endpoint.

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthUrl, ClientId, ClientSecret, EmptyExtraTokenFields, IntrospectionUrl, PkceCodeChallenge,
    RefreshToken, RevocationUrl, Scope, StandardRevocableToken, TokenIntrospectionResponse,
    TokenResponse, TokenUrl,
};
use serde_json::json;

use crate::harness::{Env, Sidecar, Store, env};

const GRANTS: &str = "enableAuthorizationCode: true
enableClientCredentials: true
enablePasswordGrant: true
scopes: [read, write]";

crate::both_stores!(
    client_credentials_with_the_oauth2_crate,
    authorization_code_with_pkce_with_the_oauth2_crate,
    refresh_with_the_oauth2_crate,
    introspection_and_revocation_with_the_oauth2_crate,
);

/// The library's HTTP seam, served by our TLS client trusting the sidecar's certificate.
async fn send(
    client: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let mut builder = client
        .request(parts.method, parts.uri.to_string())
        .body(body);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await?;
    let mut out = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    Ok(out
        .body(response.bytes().await?.to_vec())
        .expect("a valid response"))
}

fn url(sidecar: &Sidecar, path: &str) -> String {
    sidecar.url(&format!("/event/oauth2/{path}"))
}

async fn setup(store: Store) -> Env {
    env(store, GRANTS).await
}

async fn client_credentials_with_the_oauth2_crate(store: Store) {
    let env = setup(store).await;
    let sidecar = &env.sidecar;
    let http = sidecar.client.clone();
    let client = BasicClient::new(ClientId::new("clientid".into()))
        .set_client_secret(ClientSecret::new("clientsecret".into()))
        .set_token_uri(TokenUrl::new(url(sidecar, "token")).unwrap());
    let token = client
        .exchange_client_credentials()
        .add_scope(Scope::new("read".into()))
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();
    assert_eq!(*token.token_type(), BasicTokenType::Bearer);
    assert!(token.refresh_token().is_none());
    assert_eq!(token.expires_in().unwrap().as_secs(), 7200);
    let response = sidecar
        .get_with_token("/event/1", token.access_token().secret())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        env.upstream.last().header("x-authenticated-scope"),
        Some("read")
    );

    // The library reports the server's error as the RFC says.
    let bad = BasicClient::new(ClientId::new("clientid".into()))
        .set_client_secret(ClientSecret::new("wrong".into()))
        .set_token_uri(TokenUrl::new(url(sidecar, "token")).unwrap());
    let error = bad
        .exchange_client_credentials()
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap_err();
    match error {
        oauth2::RequestTokenError::ServerResponse(response) => {
            assert_eq!(*response.error(), BasicErrorResponseType::InvalidClient);
        }
        other => panic!("expected the server's invalid_client, got {other:?}"),
    }
}

async fn authorization_code_with_pkce_with_the_oauth2_crate(store: Store) {
    let env = setup(store).await;
    let sidecar = &env.sidecar;
    let http = sidecar.client.clone();
    let client = BasicClient::new(ClientId::new("clientid".into()))
        .set_client_secret(ClientSecret::new("clientsecret".into()))
        .set_auth_uri(AuthUrl::new(url(sidecar, "authorize")).unwrap())
        .set_token_uri(TokenUrl::new(url(sidecar, "token")).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();

    // The test plays the application's backend: the user logged in, so it asks the gateway
    // for a code on their behalf, as Kong's flow does.
    let response = sidecar
        .client
        .post(url(sidecar, "authorize"))
        .json(&json!({
            "provision_key": "provisionkey", "authenticated_userid": "alice",
            "client_id": "clientid", "response_type": "code", "scope": "read write",
            "state": "af0ifjsldkj",
            "code_challenge": challenge.as_str(), "code_challenge_method": challenge.method().as_str(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let redirect = reqwest::Url::parse(body["redirect_uri"].as_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = redirect.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "af0ifjsldkj");

    let token = client
        .exchange_code(oauth2::AuthorizationCode::new(query["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();
    assert!(token.refresh_token().is_some());
    let response = sidecar
        .get_with_token("/event/1", token.access_token().secret())
        .await;
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    assert_eq!(seen.header("x-authenticated-userid"), Some("alice"));
    assert_eq!(seen.header("x-authenticated-scope"), Some("read write"));
}

async fn refresh_with_the_oauth2_crate(store: Store) {
    let env = setup(store).await;
    let sidecar = &env.sidecar;
    let http = sidecar.client.clone();
    let first = sidecar.password_grant().await;
    let client = BasicClient::new(ClientId::new("clientid".into()))
        .set_client_secret(ClientSecret::new("clientsecret".into()))
        .set_token_uri(TokenUrl::new(url(sidecar, "token")).unwrap());
    let refresh = RefreshToken::new(first["refresh_token"].as_str().unwrap().into());
    let token = client
        .exchange_refresh_token(&refresh)
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();
    assert_ne!(
        token.access_token().secret(),
        first["access_token"].as_str().unwrap()
    );
    assert_eq!(
        sidecar
            .get_with_token("/event/1", token.access_token().secret())
            .await
            .status(),
        200
    );
    assert_eq!(
        sidecar
            .get_with_token("/event/1", first["access_token"].as_str().unwrap())
            .await
            .status(),
        401
    );
}

async fn introspection_and_revocation_with_the_oauth2_crate(store: Store) {
    let env = setup(store).await;
    let sidecar = &env.sidecar;
    let http = sidecar.client.clone();
    let client = BasicClient::new(ClientId::new("clientid".into()))
        .set_client_secret(ClientSecret::new("clientsecret".into()))
        .set_token_uri(TokenUrl::new(url(sidecar, "token")).unwrap())
        .set_introspection_url(IntrospectionUrl::new(url(sidecar, "introspect")).unwrap())
        .set_revocation_url(RevocationUrl::new(url(sidecar, "revoke")).unwrap());
    let token = client
        .exchange_client_credentials()
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();

    let introspection: oauth2::StandardTokenIntrospectionResponse<
        EmptyExtraTokenFields,
        BasicTokenType,
    > = client
        .introspect(token.access_token())
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();
    assert!(introspection.active());
    assert_eq!(introspection.client_id().unwrap().as_str(), "clientid");

    client
        .revoke_token(StandardRevocableToken::AccessToken(
            token.access_token().clone(),
        ))
        .unwrap()
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();
    let after = client
        .introspect(token.access_token())
        .request_async(&|r| send(http.clone(), r))
        .await
        .unwrap();
    assert!(!after.active());
    assert_eq!(
        sidecar
            .get_with_token("/event/1", token.access_token().secret())
            .await
            .status(),
        401
    );
}
