//! No way around the gate by the shape of a request: the one normalised path that routing,
//! `stripPath` and the application all use; header names the application could take for the
//! sidecar's identity headers; and RFC 9112's one `Host`.
//!
//! Paths go over a raw hyper HTTP/1.1 connection (and curl's `--path-as-is`): reqwest, like a
//! browser, removes dot segments before sending.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;

use crate::harness::{
    Env, RedisServer, Scraper, Sidecar, SidecarBuilder, Store, Upstream, article_manifests,
};

crate::both_stores!(
    dot_segments_cannot_reach_a_protected_route_anonymously,
    identity_header_look_alikes_never_reach_the_application,
);

/// The article's service on `/event` (protected), and on the same application port an
/// anonymous service on `/public` and one on `/machine` that strips its prefix.
fn anonymous_neighbours(upstream_port: u16, oauth2: &str) -> String {
    let mut manifests = article_manifests(upstream_port, oauth2);
    for (name, prefix, strip) in [("public", "/public", false), ("machine", "/machine", true)] {
        manifests.push_str(&format!(
            r#"---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata:
  name: {name}
spec:
  upstream:
    port: {upstream_port}
  routes:
  - pathPrefix: {prefix}
    stripPath: {strip}
  oauth2:
    provisionKeySecretRef:
      name: sampleirisservice-provision-key
    enablePasswordGrant: true
    anonymous: guest
"#
        ));
    }
    manifests.push_str(
        r#"---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: guest
spec:
  username: Guest
"#,
    );
    manifests
}

async fn start(store: Store, manifests: String, upstream: Upstream) -> Env {
    let redis = (store == Store::Redis).then(RedisServer::start);
    let mut builder = SidecarBuilder::new(manifests);
    if let Some(redis) = &redis {
        builder = builder.redis(&redis.url());
    }
    Env {
        sidecar: builder.start().await,
        upstream,
        redis,
    }
}

/// Sends `GET target` with exactly `hosts` as its `Host` fields over `connection`, the target
/// byte for byte; returns the status and the body.
async fn get_raw(
    connection: &mut SendRequest<Full<Bytes>>,
    target: &str,
    hosts: &[&str],
) -> (u16, String) {
    let mut request = hyper::Request::get(target);
    for host in hosts {
        request = request.header(hyper::header::HOST, *host);
    }
    connection.ready().await.unwrap();
    let response = connection
        .send_request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(sidecar: &Sidecar, target: &str) -> (u16, String) {
    let mut connection = sidecar.http1_connection().await;
    get_raw(&mut connection, target, &["localhost"]).await
}

async fn dot_segments_cannot_reach_a_protected_route_anonymously(store: Store) {
    let upstream = Upstream::start().await;
    let manifests = anonymous_neighbours(upstream.port, "");
    let env = start(store, manifests, upstream).await;
    let sidecar = &env.sidecar;

    // Each resolves to `/event/1`, the protected route: no token, so Kong's 401.
    for target in [
        "/public/../event/1",
        "/public/%2e%2e/event/1",
        "/public/.%2e/event/1",
        "/public/%2E./event/1",
        "/public/./../event/1",
        "/public//..//event/1",
        "/machine/../event/1",
    ] {
        let (status, body) = get(sidecar, target).await;
        assert_eq!(status, 401, "{target}: {body}");
        assert!(
            body.contains("The access token is missing"),
            "{target}: {body}"
        );
    }
    // Read as a dot segment by an application that decodes `%2F`, reads `\` as `/` or strips
    // path parameters; or climbing above `/`: no single reading, so 400.
    for (target, message) in [
        (
            "/public/..%2fevent/1",
            "Bad request: the path hides a dot segment behind %2F, %5C, \\ or ;",
        ),
        (
            "/public/..%5Cevent/1",
            "Bad request: the path hides a dot segment behind %2F, %5C, \\ or ;",
        ),
        (
            "/public/..;/event/1",
            "Bad request: the path hides a dot segment behind %2F, %5C, \\ or ;",
        ),
        (
            "/public/../../event/1",
            "Bad request: the path climbs above /",
        ),
        (
            "/public/%2e%2e/%2e%2e/event",
            "Bad request: the path climbs above /",
        ),
        (
            "/public/a%zz",
            "Bad request: invalid percent-encoding in the path",
        ),
        ("/public/a%00", "Bad request: the path contains %00"),
    ] {
        let (status, body) = get(sidecar, target).await;
        assert_eq!(status, 400, "{target}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({ "message": message }), "{target}");
    }
    // An encoded slash is not a separator for routing or forwarding, but an application
    // that decodes it would read `/event/1`: the gateway routes it as such.
    let (status, _) = get(sidecar, "/public/..%2F..%2Fevent%2F1").await;
    assert_eq!(status, 400);
    let (status, body) = get(sidecar, "/event%2F1").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(env.upstream.count(), 0, "{:?}", env.upstream.seen());

    // Anonymous routes still work, and get the one normalised path; the query string is
    // kept byte for byte.
    let (status, _) = get(sidecar, "/public/a/./b/../%7Ec//d?q=..%2F&r=%2e%2e").await;
    assert_eq!(status, 200);
    let seen = env.upstream.last();
    assert_eq!(seen.path_and_query, "/public/a/~c/d?q=..%2F&r=%2e%2e");
    assert_eq!(seen.header("x-forwarded-path"), Some("/public/a/~c/d"));
    assert_eq!(seen.header("x-consumer-username"), Some("Guest"));

    // `stripPath` strips the normalised path's prefix.
    for (target, forwarded) in [
        ("/machine/x/../1", "/1"),
        ("/machine/%2e/1/", "/1/"),
        ("/public/../machine/1", "/1"),
        ("/machine%2F1", "/%2F1"),
    ] {
        let (status, body) = get(sidecar, target).await;
        assert_eq!(status, 200, "{target}: {body}");
        assert_eq!(env.upstream.last().path_and_query, forwarded, "{target}");
    }

    // A real client that sends the path as it is: curl.
    let url = sidecar.url("/public/%2e%2e/event/1");
    let output = std::process::Command::new("curl")
        .args([
            "-sk",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(&url)
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "401");
}

/// Adds `upstream.dropUnderscoreHeaders: true` to the article's service.
fn dropping_underscore_headers(manifests: String) -> String {
    let (head, tail) = manifests.split_once("  routes:\n").unwrap();
    format!("{head}    dropUnderscoreHeaders: true\n  routes:\n{tail}")
}

async fn identity_header_look_alikes_never_reach_the_application(store: Store) {
    let upstream = Upstream::start().await;
    let manifests = article_manifests(upstream.port, "");
    let env = start(store, manifests, upstream).await;
    let sidecar = &env.sidecar;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = sidecar
        .client
        .get(sidecar.url("/event/1"))
        .bearer_auth(&token)
        .header("X_Consumer_Username", "Forged")
        .header("X_Authenticated_Userid", "forged-user")
        .header("x-consumer_id", "forged-id")
        .header("X_Real_IP", "6.6.6.6")
        .header("X_Forwarded_For", "6.6.6.6")
        .header("custom_header_name", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    for name in [
        "x_consumer_username",
        "x_authenticated_userid",
        "x-consumer_id",
        "x_real_ip",
        "x_forwarded_for",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the application");
    }
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    // Kong keeps other underscore headers (`underscores_in_headers on`).
    assert_eq!(seen.header("custom_header_name"), Some("kept"));
    let scraper = Scraper::new(sidecar);
    let dropped =
        |reason: &str| format!("tollgate_dropped_request_headers_total{{reason=\"{reason}\"}}");
    assert_eq!(scraper.metric(&dropped("look_alike")).await, 5.0);
    assert_eq!(scraper.metric(&dropped("underscore")).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_underscore_headers_drops_every_underscore_header() {
    let upstream = Upstream::start().await;
    let manifests = dropping_underscore_headers(article_manifests(
        upstream.port,
        "enablePasswordGrant: true\nauthHeaderName: custom_header_name",
    ));
    let env = start(Store::Redis, manifests, upstream).await;
    let sidecar = &env.sidecar;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The configured `authHeaderName` is still read, underscores and all.
    let response = sidecar
        .client
        .get(sidecar.url("/event/1"))
        .header("custom_header_name", format!("bearer {token}"))
        .header("other_header", "dropped")
        .header("x_consumer_username", "Forged")
        .header("x-other", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last();
    assert_eq!(seen.header("custom_header_name"), None);
    assert_eq!(seen.header("other_header"), None);
    assert_eq!(seen.header("x_consumer_username"), None);
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-other"), Some("kept"));
    let scraper = Scraper::new(sidecar);
    assert_eq!(
        scraper
            .metric("tollgate_dropped_request_headers_total{reason=\"underscore\"}")
            .await,
        2.0
    );
}

/// Kong's spec (`03-access_spec.lua`, route 11 and 12): `auth_header_name =
/// "custom_header_name"`, with and without `hide_credentials`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kongs_custom_header_name_spec_case_keeps_passing() {
    for hide in [false, true] {
        let upstream = Upstream::start().await;
        let oauth2 = format!(
            "enablePasswordGrant: true\nauthHeaderName: custom_header_name\nhideCredentials: {hide}"
        );
        let manifests = article_manifests(upstream.port, &oauth2);
        let env = start(Store::Redis, manifests, upstream).await;
        let sidecar = &env.sidecar;
        let token = sidecar.password_grant().await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let bearer = format!("bearer {token}");
        let response = sidecar
            .client
            .get(sidecar.url("/event/1"))
            .header("custom_header_name", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "hideCredentials: {hide}");
        let seen = env.upstream.last();
        assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
        let expected = (!hide).then_some(bearer.as_str());
        assert_eq!(seen.header("custom_header_name"), expected);

        let response = sidecar
            .client
            .get(sidecar.url("/event/1"))
            .header("custom_header_name", &bearer)
            .header("custom_header_name", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "duplicate custom headers");

        let response = sidecar
            .client
            .get(sidecar.url("/event/1"))
            .header("custom_header_name", "")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request with no `Host`, or with two, is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_needs_exactly_one_host() {
    let upstream = Upstream::start().await;
    let manifests = anonymous_neighbours(upstream.port, "");
    let env = start(Store::Redis, manifests, upstream).await;
    let mut connection = env.sidecar.http1_connection().await;
    let (status, body) = get_raw(&mut connection, "/public/1", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body, r#"{"message":"Bad request: no Host header"}"#);
    let mut connection = env.sidecar.http1_connection().await;
    let (status, body) = get_raw(&mut connection, "/public/1", &["a", "b"]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        r#"{"message":"Bad request: more than one Host header"}"#
    );
    assert_eq!(env.upstream.count(), 0);
    let mut connection = env.sidecar.http1_connection().await;
    let (status, _) = get_raw(&mut connection, "/public/1", &["localhost"]).await;
    assert_eq!(status, 200);
}
