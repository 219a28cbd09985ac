//! Kong's `spec/03-plugins/25-oauth2/02-api_spec.lua` ported: Kong's admin API for oauth2
//! credentials and tokens. A credential is an OAuthApplication resource in tollgate, so
//! Kong's credential endpoints become checks of the manifests that define one; tokens are the
//! admin API's `/{namespace}/oauth2_tokens`, on both stores.
//!
//! Not ported, as they have no tollgate counterpart: Kong's endpoints that read or edit
//! credentials (`kubectl get`, `kubectl edit` and `kubectl delete` of OAuthApplications do it):
//! 02-api_spec.lua:307-355 (PUT by client_id: the `clientId` of the resource, as ported at
//! 02:56), 02:358-387 (list a consumer's credentials), 02:417-469 (get one, by id or client_id,
//! only under its consumer), 02:471-561 (PATCH; a changed credential is ported in
//! `kong_invalidations_spec`; `client_secret` and `hash_secret` set together is moot, as the
//! secret is in a Secret), 02:563-587 (DELETE: what it does to tokens is in
//! `kong_invalidations_spec`), 02:88-106 (tags: an OAuthApplication has none, labels serve).

use serde_json::{Value, json};

use crate::harness::{
    Controller, RedisServer, Sidecar, SidecarBuilder, Store, Upstream, article_manifests, env,
};
use crate::kong_spec::{
    application, authorize_error, client_credentials, consumer, post, refused, status_and_body,
};

crate::both_stores!(
    a_token_is_imported_with_the_ids_of_its_credential_and_service,
    the_listing_holds_every_token,
    a_token_is_read_by_id_never_by_value,
    tokens_are_neither_put_nor_patched,
    delete_answers_204_for_known_unknown_and_malformed_ids,
    the_controllers_admin_api_answers_204_to_unknown_ids_too,
);

const GRANTS: &str = "enableAuthorizationCode: true
enableClientCredentials: true
enablePasswordGrant: true";

async fn admin_get(sidecar: &Sidecar, path: &str) -> (u16, Value) {
    let response = sidecar
        .client
        .get(sidecar.admin_url(path))
        .send()
        .await
        .unwrap();
    status_and_body(response).await
}

async fn admin(sidecar: &Sidecar, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = sidecar
        .client
        .request(method, sidecar.admin_url(path))
        .json(&json!({"expires_in": 20, "access_token": "updated_token"}))
        .send()
        .await
        .unwrap();
    status_and_body(response).await
}

/// The password grant of the article's application, for user `userid`.
async fn grant(sidecar: &Sidecar, userid: &str) -> Value {
    let body = json!({"client_id": "clientid", "client_secret": "clientsecret",
                      "grant_type": "password", "provision_key": "provisionkey",
                      "authenticated_userid": userid});
    let (status, token) = post(&sidecar.client, &sidecar.url("/event/oauth2/token"), &body).await;
    assert_eq!(status, 200, "{token}");
    token
}

/// The admin listing's entries.
async fn entries(sidecar: &Sidecar) -> Vec<Value> {
    let (status, list) = admin_get(sidecar, "/default/oauth2_tokens").await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

// === /consumers/:consumer/oauth2 and /oauth2: OAuthApplication resources ===

/// 02-api_spec.lua:56 (with and without redirect URIs), 02:107 (several redirect URIs),
/// 02:124 (two consumers' credentials with one secret), 02:152-224 (`hash_secret` true or
/// false: tollgate hashes the secret either way, and checks it alike), 02:226 (no `name`:
/// tollgate names the application after its resource, where Kong answers 400), 02:622 and
/// 02:676 (a credential of an existing consumer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_are_kongs_credentials() {
    let upstream = Upstream::start().await;
    let manifests = article_manifests(upstream.port, GRANTS)
        + &consumer("sally")
        + &application(
            "bare",
            "clientapp",
            "no-redirect",
            "secret123",
            "hashSecret: true",
        )
        + &application(
            "two-uris",
            "sally",
            "two-uris",
            "secret123",
            "name: Test APP
redirectUris:
- http://google.test/
- http://google.example/",
        );
    let sidecar = SidecarBuilder::new(manifests).start().await;

    // 02:56, 02:124, 02:152: without redirect URIs an application still gets tokens of the
    // grant that needs none, and one secret serves two consumers' applications.
    for client_id in ["no-redirect", "two-uris"] {
        let (status, token) = client_credentials(&sidecar, client_id, "secret123").await;
        assert_eq!(status, 200, "{client_id}: {token}");
        assert!(token["access_token"].is_string());
        let (status, body) = client_credentials(&sidecar, client_id, "secret1234").await;
        assert_eq!(
            body["error"], "invalid_client",
            "{client_id}: {status} {body}"
        );
    }
    // 02:170, 02:206: the article's application (hashSecret false) checks its secret alike.
    let (status, _) = client_credentials(&sidecar, "clientid", "clientsecret").await;
    assert_eq!(status, 200);
    let (_, body) = client_credentials(&sidecar, "clientid", "test").await;
    assert_eq!(body["error"], "invalid_client");

    // 02:107: each registered redirect URI is one the authorize endpoint sends the code to.
    for uri in ["http://google.test/", "http://google.example/"] {
        let body = json!({"provision_key": "provisionkey", "client_id": "two-uris",
                          "response_type": "code", "authenticated_userid": "1",
                          "redirect_uri": uri});
        let (status, body) = post(
            &sidecar.client,
            &sidecar.url("/event/oauth2/authorize"),
            &body,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let redirect = body["redirect_uri"].as_str().unwrap();
        assert!(redirect.starts_with(&format!("{uri}?code=")), "{redirect}");
    }
    // An unregistered one is not.
    let body = json!({"provision_key": "provisionkey", "client_id": "two-uris",
                      "response_type": "code", "authenticated_userid": "1",
                      "redirect_uri": "http://google.other/"});
    let (status, body) = post(
        &sidecar.client,
        &sidecar.url("/event/oauth2/authorize"),
        &body,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        authorize_error(&body).as_deref(),
        Some("invalid_request"),
        "{body}"
    );
    // To the first registered URI, not the one asked for.
    let redirect = body["redirect_uri"].as_str().unwrap();
    assert!(
        redirect.starts_with("http://google.test/?error="),
        "{redirect}"
    );
    // Nothing of the secrets reaches the log.
    assert!(!sidecar.logs().contains("secret123"));
}

/// 02-api_spec.lua:239-302: a redirect URI that does not parse, or has a fragment, is refused,
/// alone or after a good one; the message names it (Kong: 400 naming it in `fields`).
#[test]
fn bad_redirect_uris_are_refused_naming_them() {
    for (uris, named, why) in [
        (vec!["not-valid"], "not-valid", "not an absolute URL"),
        (
            vec!["http://test.test/#with-fragment"],
            "http://test.test/#with-fragment",
            "fragment",
        ),
        (
            vec!["http://valid.test", "not-valid"],
            "not-valid",
            "not an absolute URL",
        ),
        (
            vec!["http://valid.test", "http://test.test/#with-fragment"],
            "http://test.test/#with-fragment",
            "fragment",
        ),
    ] {
        let list: String = uris.iter().map(|u| format!("- \"{u}\"\n")).collect();
        let yaml = article_manifests(1, "")
            + &application(
                "test-app",
                "clientapp",
                "test-app",
                "s",
                &format!("name: Test APP\nredirectUris:\n{list}"),
            );
        let message = refused(&yaml);
        assert!(
            message.contains("OAuthApplication default/test-app"),
            "{message}"
        );
        assert!(message.contains(&format!("`{named}`")), "{message}");
        assert!(message.contains(why), "{message}");
    }
}

/// 02-api_spec.lua:605 and 02:659: a credential without a consumer is refused (Kong: 400
/// "schema violation (consumer: required field missing)"); so is one whose consumer does not
/// exist (Kong's foreign key).
#[test]
fn an_application_needs_its_consumer() {
    let without =
        application("test", "x", "client-1", "s", "").replace("  consumerRef:\n    name: x\n", "");
    let message = refused(&(article_manifests(1, "") + &without));
    assert!(
        message.contains("(OAuthApplication default/test): spec.consumerRef: missing field"),
        "{message}"
    );
    let orphan = application("test", "nobody", "client-1", "s", "");
    let message = refused(&(article_manifests(1, "") + &orphan));
    assert!(
        message.contains("OAuthApplication default/test"),
        "{message}"
    );
    assert!(
        message.contains("consumer `nobody` was not found"),
        "{message}"
    );
}

// === /oauth2_tokens ===

/// 02-api_spec.lua:720: a token made through the admin API names its credential and service
/// and expires as asked. tollgate imports a token its caller brings (`access_token` is
/// required): it never makes one there, nor shows a token's value. 02:742: an empty body is
/// 400 naming what is missing.
async fn a_token_is_imported_with_the_ids_of_its_credential_and_service(store: Store) {
    let env = env(store, "").await;
    grant(&env.sidecar, "1").await;
    let issued = entries(&env.sidecar).await.remove(0);
    let (credential, service) = (&issued["credential_id"], &issued["service_id"]);
    let tokens = env.sidecar.admin_url("/default/oauth2_tokens");

    let body = json!({"credential": {"id": credential}, "service": {"id": service},
                      "expires_in": 10, "access_token": "an-imported-token-of-kong"});
    let (status, token) = post(&env.sidecar.client, &tokens, &body).await;
    assert_eq!(status, 201, "{token}");
    assert_eq!(&token["credential_id"], credential);
    assert_eq!(&token["service_id"], service);
    assert_eq!(token["expires_in"], 10);
    assert_eq!(token["token_type"], "bearer");
    assert!(token.get("access_token").is_none(), "{token}");
    assert!(token.get("refresh_token").is_none(), "{token}");
    let response = env
        .sidecar
        .get_with_token("/event/1", "an-imported-token-of-kong")
        .await;
    assert_eq!(response.status(), 200);

    let (status, body) = post(&env.sidecar.client, &tokens, &json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("access_token"),
        "{body}"
    );
}

/// 02-api_spec.lua:781: the first page holds every token.
async fn the_listing_holds_every_token(store: Store) {
    let env = env(store, "").await;
    for user in ["1", "2", "3"] {
        grant(&env.sidecar, user).await;
    }
    let (status, list) = admin_get(&env.sidecar, "/oauth2_tokens").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
}

/// 02-api_spec.lua:834: by id. 02:843: Kong finds a token by its value too; tollgate keeps
/// only a hash of it and never looks a token up by value there: 400, as for any other id
/// that is not a UUID, and the value is not echoed.
async fn a_token_is_read_by_id_never_by_value(store: Store) {
    let env = env(store, "").await;
    let token = grant(&env.sidecar, "1").await;
    let id = entries(&env.sidecar).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, one) = admin_get(&env.sidecar, &format!("/oauth2_tokens/{id}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], id.as_str());

    let value = token["access_token"].as_str().unwrap();
    let (status, body) = admin_get(&env.sidecar, &format!("/oauth2_tokens/{value}")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"],
        "`the token` is not a valid token id (a UUID)".replace("the token", value)
    );
}

/// 02-api_spec.lua:855 and 02:876 (PUT a token by value), 02:896, 02:913 and 02:931 (PATCH
/// one by id or value): tokens cannot be edited in tollgate, as their values are not kept:
/// 405, and nothing changes.
async fn tokens_are_neither_put_nor_patched(store: Store) {
    let env = env(store, "").await;
    let token = grant(&env.sidecar, "1").await;
    let before = entries(&env.sidecar).await.remove(0);
    let id = before["id"].as_str().unwrap();
    let value = token["access_token"].as_str().unwrap();
    for (method, path) in [
        (reqwest::Method::PUT, "/oauth2_tokens/foobar".to_owned()),
        (reqwest::Method::PATCH, format!("/oauth2_tokens/{id}")),
        (reqwest::Method::PATCH, format!("/oauth2_tokens/{value}")),
    ] {
        let (status, body) = admin(&env.sidecar, method.clone(), &path).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(body, json!({"message": "Method not allowed"}));
    }
    assert_eq!(entries(&env.sidecar).await, vec![before]);
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", "foobar")
            .await
            .status(),
        401
    );
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", "updated_token")
            .await
            .status(),
        401
    );
    assert_eq!(
        env.sidecar.get_with_token("/event/1", value).await.status(),
        200
    );
}

/// 02-api_spec.lua:950: a token is deleted, and refused from then on. 02:958: an id that names
/// no token, well-formed or not, is 204 too, so the answer never tells which ids exist.
async fn delete_answers_204_for_known_unknown_and_malformed_ids(store: Store) {
    let env = env(store, "").await;
    let token = grant(&env.sidecar, "1").await;
    let id = entries(&env.sidecar).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/oauth2_tokens/{id}"),
        format!("/oauth2_tokens/{id}"),
        "/oauth2_tokens/blah".to_owned(),
        "/oauth2_tokens/00000000-0000-0000-0000-000000000000".to_owned(),
        "/default/oauth2_tokens/blah".to_owned(),
    ] {
        let response = env
            .sidecar
            .client
            .delete(env.sidecar.admin_url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "DELETE {path}");
        assert_eq!(response.text().await.unwrap(), "", "DELETE {path}");
    }
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(
        env.sidecar
            .get_with_token("/event/1", access)
            .await
            .status(),
        401
    );
    assert!(entries(&env.sidecar).await.is_empty());
    // A namespace this sidecar does not serve is still not found, whatever the id.
    let response = env
        .sidecar
        .client
        .delete(env.sidecar.admin_url("/team-b/oauth2_tokens/blah"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// 02-api_spec.lua:958 on the controller's admin listener, which serves the same grammar behind
/// TokenReview and SubjectAccessReview: 204 for an unknown or malformed id once authorised,
/// and still 401 without a token.
async fn the_controllers_admin_api_answers_204_to_unknown_ids_too(store: Store) {
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("article.yaml"),
        article_manifests(upstream.port, ""),
    )
    .unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, "token-iris-0 default/iris-0\n").unwrap();
    let redis = (store == Store::Redis).then(RedisServer::start);
    let redis_url = redis.as_ref().map(RedisServer::url);
    let controller =
        Controller::start(work.path(), &manifests, &tokens, redis_url.as_deref()).await;
    for path in [
        "/oauth2_tokens/blah",
        "/default/oauth2_tokens/00000000-0000-0000-0000-000000000000",
    ] {
        let url = controller.admin_url(path);
        let response = controller.client.delete(&url).send().await.unwrap();
        assert_eq!(response.status(), 401, "DELETE {path} without a token");
        let response = controller
            .client
            .delete(&url)
            .bearer_auth("token-iris-0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "DELETE {path}");
    }
}
