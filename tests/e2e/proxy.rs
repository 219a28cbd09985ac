//! The bearer check and forwarding: where tokens are read from, Kong's 401s, and what the
//! upstream receives.

use serde_json::Value;

use crate::harness::{Store, env};

crate::both_stores!(
    missing_token_gets_kongs_401,
    unknown_token_gets_kongs_401,
    token_scheme_is_case_insensitive_and_token_is_accepted,
    access_token_in_the_query_string,
    access_token_in_a_form_body,
    header_wins_over_query,
    forged_identity_headers_never_reach_the_upstream,
    hide_credentials_strips_header_query_and_form,
    realm_appears_in_www_authenticate,
    upstream_status_and_body_pass_through,
    large_bodies_stream_both_ways,
    unknown_route_is_kongs_404,
    dead_upstream_is_502,
    http2_clients_are_served,
);

async fn missing_token_gets_kongs_401(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":"invalid_request","error_description":"The access token is missing"}"#
    );
    assert_eq!(env.upstream.count(), 0);
}

async fn unknown_token_gets_kongs_401(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .get_with_token("/event/1", "hCviOzuhHTUdFxpCM6z5KUf4IRnV1IsD")
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#
    );
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":"invalid_token","error_description":"The access token is invalid or has expired"}"#
    );
    assert_eq!(env.upstream.count(), 0);
}

async fn token_scheme_is_case_insensitive_and_token_is_accepted(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for value in [
        format!("bearer {token}"),
        format!("TOKEN {token}"),
        token.clone(),
    ] {
        let response = env
            .sidecar
            .client
            .get(env.sidecar.url("/event/1"))
            .header("authorization", value.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{value}");
    }
}

async fn access_token_in_the_query_string(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = env
        .sidecar
        .client
        .get(
            env.sidecar
                .url(&format!("/event/1?access_token={token}&x=1")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        env.upstream.last().path_and_query,
        format!("/event/1?access_token={token}&x=1")
    );
}

async fn access_token_in_a_form_body(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/echo-body"))
        .form(&[("access_token", token.as_str()), ("name", "Global Summit")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    assert_eq!(seen.path_and_query, "/event/echo-body");
    assert_eq!(
        seen.body,
        format!("access_token={token}&name=Global+Summit")
    );
}

async fn header_wins_over_query(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A bad header token is not rescued by a good query token: Kong reads only the header.
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url(&format!("/event/1?access_token={token}")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

async fn forged_identity_headers_never_reach_the_upstream(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .bearer_auth(&token)
        .header("x-consumer-username", "admin")
        .header("x-authenticated-userid", "0")
        .header("x-authenticated-scope", "everything")
        .header("x-anonymous-consumer", "true")
        .header("x-consumer-custom-id", "forged")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-path", "/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    // The forwarded chain keeps what the client sent and ends with the client's address;
    // the rest describe this hop, whatever the client claimed.
    assert_eq!(seen.headers["x-forwarded-for"], ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(seen.headers["x-real-ip"], ["127.0.0.1"]);
    assert_eq!(seen.headers["x-forwarded-proto"], ["https"]);
    assert_eq!(seen.headers["x-forwarded-path"], ["/event/1"]);
    assert_eq!(seen.headers["x-consumer-username"], ["ClientApp"]);
    assert_eq!(seen.headers["x-authenticated-userid"], ["1"]);
    assert_eq!(seen.headers["x-consumer-custom-id"], ["client-app-7"]);
    assert!(!seen.headers.contains_key("x-authenticated-scope"));
    assert!(!seen.headers.contains_key("x-anonymous-consumer"));

    // Refused requests do not reach the upstream at all.
    let before = env.upstream.count();
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .header("x-consumer-username", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(env.upstream.count(), before);
}

async fn hide_credentials_strips_header_query_and_form(store: Store) {
    let env = env(store, "hideCredentials: true").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    env.sidecar.get_with_token("/event/1", &token).await;
    let seen = env.upstream.last();
    assert!(!seen.headers.contains_key("authorization"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));

    env.sidecar
        .client
        .get(
            env.sidecar
                .url(&format!("/event/1?a=1&access_token={token}&b=2")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(env.upstream.last().path_and_query, "/event/1?a=1&b=2");

    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/echo-body"))
        .form(&[("name", "x"), ("access_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    assert_eq!(seen.body, "name=x");
    assert_eq!(seen.header("content-length"), Some("6"));
}

async fn realm_appears_in_www_authenticate(store: Store) {
    let env = env(store, "realm: iris").await;
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/event/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="iris""#
    );
    let response = env.sidecar.get_with_token("/event/1", "nope").await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="iris", error="invalid_token", error_description="The access token is invalid or has expired""#
    );
}

async fn upstream_status_and_body_pass_through(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = env
        .sidecar
        .get_with_token("/event/status/404", &token)
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-upstream"], "iris");
    assert_eq!(response.text().await.unwrap(), r#"{"status":404}"#);
    let seen = env.upstream.last();
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", env.upstream.port).as_str())
    );
    assert_eq!(seen.header("x-forwarded-host"), Some("localhost"));
    assert_eq!(seen.header("x-forwarded-path"), Some("/event/status/404"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
}

async fn large_bodies_stream_both_ways(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Larger than the sidecar's buffering bound: it must stream.
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let response = env
        .sidecar
        .client
        .post(env.sidecar.url("/event/echo-body"))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());
}

async fn unknown_route_is_kongs_404(store: Store) {
    let env = env(store, "").await;
    let response = env
        .sidecar
        .client
        .get(env.sidecar.url("/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "no Route matched with those values");
}

async fn dead_upstream_is_502(store: Store) {
    let port = crate::harness::free_port();
    let manifests = crate::harness::article_manifests(port, "");
    let redis = crate::harness::RedisServer::start();
    let mut builder = crate::harness::SidecarBuilder::new(manifests);
    if store == Store::Redis {
        builder = builder.redis(&redis.url());
    }
    let sidecar = builder.start().await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = sidecar.get_with_token("/event/1", &token).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "An invalid response was received from the upstream server"
    );
}

async fn http2_clients_are_served(store: Store) {
    let env = env(store, "").await;
    let token = env.sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = env.sidecar.get_with_token("/event/1", &token).await;
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose h2"
    );
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), crate::harness::EVENT_1);
}
