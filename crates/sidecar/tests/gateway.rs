//! The gateway in memory: [`Gateway::handle`] called oneshot, as axum's router tests call a
//! router, with a request whose body is already whole. The snapshot is compiled from
//! manifests, tokens live in the in-memory store and are issued by the token endpoint through
//! `handle` itself, and the application is a scripted HTTP/1.1 server on localhost that
//! records what reaches it. No TLS and no listener: each test reads what the client gets back
//! and what the application received.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tollgate_serve::ConnInfo;
use tollgate_sidecar::access_log::{AccessLogFormat, LineSink};
use tollgate_sidecar::config::{BodyLimits, UpgradeLimits};
use tollgate_sidecar::gateway::{ClientConnection, Gateway};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::observe::ObserveSettings;
use tollgate_sidecar::trusted::TrustedIps;
use tollgate_store::{MemoryStore, TokenHash, TokenStore};
use uuid::Uuid;

/// What the scripted application received of one request.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    /// Path and query, as on the request line.
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// How the scripted application answers every request.
#[derive(Debug, Clone, Copy)]
struct Script {
    status: StatusCode,
    body: &'static str,
    /// How long it waits before it answers.
    delay: Duration,
}

const ANSWER: Script = Script {
    status: StatusCode::OK,
    body: r#"{"id":1,"Name":"Global Summit"}"#,
    delay: Duration::ZERO,
};

/// An HTTP/1.1 application on 127.0.0.1 that answers as scripted and records what it received.
struct ScriptedUpstream {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl ScriptedUpstream {
    async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let answer = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push(Received {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        tokio::time::sleep(script.delay).await;
                        let mut response = Response::new(Full::new(Bytes::from(script.body)));
                        *response.status_mut() = script.status;
                        response
                            .headers_mut()
                            .insert("x-upstream", "scripted".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer),
                );
            }
        });
        Self { port, received }
    }

    /// A port on which nothing listens: connecting is refused.
    async fn refusing() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// The article's objects: service `sampleirisservice` on route `/event` forwarding to
/// `port`, consumer `ClientApp`, application `clientid` / `clientsecret`, provision key
/// `provisionkey`, and a consumer `guest`. `oauth2` and `upstream` are extra YAML lines under
/// `spec.oauth2` and `spec.upstream`.
fn manifests(port: u16, oauth2: &[&str], upstream: &[&str]) -> String {
    let indented = |lines: &[&str]| {
        lines
            .iter()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let (oauth2, upstream) = (indented(oauth2), indented(upstream));
    format!(
        r#"apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata:
  name: sampleirisservice
spec:
  upstream:
    port: {port}
{upstream}  routes:
  - pathPrefix: /event
    stripPath: false
  oauth2:
    enablePasswordGrant: true
    provisionKeySecretRef:
      name: sampleirisservice-provision-key
{oauth2}---
apiVersion: v1
kind: Secret
metadata:
  name: sampleirisservice-provision-key
stringData:
  provisionKey: provisionkey
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: clientapp
spec:
  username: ClientApp
  customId: client-app-7
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: guest
spec:
  username: Guest
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata:
  name: sampleapp
spec:
  name: SampleApp
  consumerRef:
    name: clientapp
  clientId: clientid
  clientSecretRef:
    name: sampleapp-secret
  redirectUris:
  - https://localhost/callback
---
apiVersion: v1
kind: Secret
metadata:
  name: sampleapp-secret
stringData:
  clientSecret: clientsecret
"#
    )
}

/// A gateway serving the compiled manifests, over the in-memory store, and one client
/// connection to it (from 10.0.0.7, over TLS).
struct Harness {
    gateway: Arc<Gateway<MemoryStore>>,
    client: Arc<ClientConnection>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(upstream_port: u16, oauth2: &[&str], upstream: &[&str]) -> Self {
        Self::observed(upstream_port, oauth2, upstream, ObserveSettings::default())
    }

    /// As [`Harness::new`], with `--access-log` and the request-id settings given.
    fn observed(
        upstream_port: u16,
        oauth2: &[&str],
        upstream: &[&str],
        settings: ObserveSettings,
    ) -> Self {
        Self::serving(&manifests(upstream_port, oauth2, upstream), settings)
    }

    /// The article's objects, the service with `cors` (YAML lines under `spec.cors`).
    fn with_cors(upstream_port: u16, cors: &[&str]) -> Self {
        let cors: String = cors.iter().map(|l| format!("    {l}\n")).collect();
        let text = manifests(upstream_port, &[], &[]).replacen(
            "  oauth2:\n",
            &format!("  cors:\n{cors}  oauth2:\n"),
            1,
        );
        Self::serving(&text, ObserveSettings::default())
    }

    fn serving(text: &str, settings: ObserveSettings) -> Self {
        let resources =
            tollgate_api::manifests::load_str(Path::new("gateway-test.yaml"), text).unwrap();
        let compiled = tollgate_api::compile(&resources);
        assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
        let metrics = Metrics::new(None);
        let gateway = Arc::new(
            Gateway::new(
                compiled.snapshot,
                MemoryStore::new(),
                metrics.clone(),
                TrustedIps::parse(&[]).unwrap(),
                BodyLimits {
                    oauth: 16 * 1024,
                    proxied_form: 16 * 1024,
                    budget: 1024 * 1024,
                },
                Duration::from_secs(60),
                UpgradeLimits {
                    idle_timeout: Duration::from_secs(60),
                    max_open: 16,
                },
            )
            .with_observe_settings(settings),
        );
        let client = Arc::new(gateway.client_connection(ConnInfo {
            remote: "10.0.0.7:5555".parse().unwrap(),
            local: "10.0.0.1:8443".parse().unwrap(),
            tls: true,
        }));
        Self {
            gateway,
            client,
            metrics,
        }
    }

    /// Sends one request through the gateway, and reads the whole answer.
    async fn send(&self, request: http::request::Builder, body: &str) -> Answer {
        let request = request
            .header("host", "iamhost")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self.gateway.handle(request, &self.client).await;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .expect("a whole response body")
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, target: &str) -> Answer {
        self.send(Request::get(target), "").await
    }

    async fn get_with(&self, target: &str, authorization: &str) -> Answer {
        self.send(
            Request::get(target).header("authorization", authorization),
            "",
        )
        .await
    }

    async fn post_form(&self, target: &str, form: &str) -> Answer {
        let request = Request::post(target)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", form.len());
        self.send(request, form).await
    }

    /// An access token from the token endpoint, reached through `handle` (password grant).
    async fn token(&self) -> String {
        let answer = self
            .post_form(
                "/event/oauth2/token",
                "grant_type=password&client_id=clientid&client_secret=clientsecret\
                 &provision_key=provisionkey&authenticated_userid=1",
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Requests counted under `outcome` in `tollgate_requests_total`.
    fn counted(&self, outcome: &str) -> u64 {
        let scrape = self
            .metrics
            .handle(&Request::get("/metrics").body(()).unwrap());
        let text = String::from_utf8(scrape.into_body().to_vec()).unwrap();
        let prefix = format!("tollgate_requests_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
            .parse()
            .unwrap()
    }
}

/// What the client got back.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

const MISSING: &str =
    r#"{"error":"invalid_request","error_description":"The access token is missing"}"#;
const INVALID: &str =
    r#"{"error":"invalid_token","error_description":"The access token is invalid or has expired"}"#;
const INVALID_CHALLENGE: &str = r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#;

#[tokio::test]
async fn the_token_endpoint_is_reached_through_handle() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let answer = harness
        .post_form(
            "/event/oauth2/token",
            "grant_type=password&client_id=clientid&client_secret=clientsecret\
             &provision_key=provisionkey&authenticated_userid=1",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let body = answer.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 7200);
    assert!(!body["access_token"].as_str().unwrap().is_empty());
    assert!(body["refresh_token"].is_string());

    // Kong's answer to another method than POST.
    let answer = harness.get("/event/oauth2/token").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        answer.json(),
        json!({"error": "invalid_method", "error_description": "The HTTP method GET is invalid for the token endpoint"})
    );
    assert_eq!(harness.counted("token_endpoint"), 2);
    assert_eq!(
        upstream.count(),
        0,
        "the endpoints never reach the application"
    );
}

#[tokio::test]
async fn a_valid_bearer_token_reaches_the_upstream_with_the_identity_headers() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let token = harness.token().await;
    let answer = harness
        .send(
            Request::get("/event/1?a=b")
                .header("authorization", format!("Bearer {token}"))
                .header("x-consumer-username", "forged")
                .header("x-authenticated-userid", "forged"),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, ANSWER.body);
    assert_eq!(answer.header("x-upstream"), Some("scripted"));

    let seen = upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("GET", "/event/1?a=b")
    );
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-consumer-custom-id"), Some("client-app-7"));
    assert!(seen.header("x-consumer-id").is_some());
    assert_eq!(seen.header("x-credential-identifier"), Some("clientid"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));
    assert_eq!(seen.header("x-authenticated-scope"), None);
    assert_eq!(seen.header("x-anonymous-consumer"), None);
    assert_eq!(
        seen.headers.get_all("x-consumer-username").iter().count(),
        1
    );
    // Without hideCredentials the token goes on, as in Kong.
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", upstream.port).as_str())
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("10.0.0.7"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("iamhost"));
    assert_eq!(seen.header("x-forwarded-path"), Some("/event/1"));
    assert_eq!(harness.counted("forwarded"), 1);
}

#[tokio::test]
async fn no_token_gets_kongs_401() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let answer = harness.get("/event/1").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    assert_eq!(answer.body, MISSING);

    let answer = harness.get_with("/event/1", "Bearer nope").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("www-authenticate"), Some(INVALID_CHALLENGE));
    assert_eq!(answer.body, INVALID);
    assert_eq!(harness.counted("unauthorized"), 2);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn an_expired_token_gets_kongs_401() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let token = harness.token().await;
    let answer = harness
        .get_with("/event/1", &format!("Bearer {token}"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);

    // The same grant, issued over two hours ago: past its `expires_in` of 7200 s, though
    // the store still holds it. The clock of the bearer check is the wall clock.
    let store = harness.gateway.store();
    let namespace = &harness.gateway.snapshot().snapshot.services[0].namespace;
    let mut record = store
        .find_access(namespace, &TokenHash::of(&token))
        .await
        .unwrap()
        .expect("the token's record");
    record.id = Uuid::new_v4();
    record.created_at -= 7201 * 1000;
    store
        .insert(&record, &TokenHash::of("an-expired-token"), None)
        .await
        .unwrap();
    let answer = harness
        .get_with("/event/1", "Bearer an-expired-token")
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("www-authenticate"), Some(INVALID_CHALLENGE));
    assert_eq!(answer.body, INVALID);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn the_anonymous_consumer_stands_in_for_a_missing_or_bad_token() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &["anonymous: guest"], &[]);
    for answer in [
        harness.get("/event/1").await,
        harness.get_with("/event/1", "Bearer nope").await,
    ] {
        assert_eq!(answer.status, StatusCode::OK);
        let seen = upstream.last();
        assert_eq!(seen.header("x-consumer-username"), Some("Guest"));
        assert_eq!(seen.header("x-anonymous-consumer"), Some("true"));
        assert!(seen.header("x-consumer-id").is_some());
        assert_eq!(seen.header("x-credential-identifier"), None);
        assert_eq!(seen.header("x-authenticated-userid"), None);
    }

    // A real token still counts as its own consumer.
    let token = harness.token().await;
    let answer = harness
        .get_with("/event/1", &format!("Bearer {token}"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(seen.header("x-anonymous-consumer"), None);
    assert_eq!(harness.counted("forwarded"), 3);
    assert_eq!(harness.counted("unauthorized"), 0);
}

#[tokio::test]
async fn an_anonymous_consumer_that_does_not_exist_is_kongs_500() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &["anonymous: nonexisting"], &[]);
    let answer = harness.get("/event/1").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.json(),
        json!({"message": "anonymous consumer nonexisting is configured but doesn't exist"})
    );
    assert_eq!(harness.counted("anonymous_missing"), 1);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn an_access_token_in_a_form_body_reaches_the_upstream_with_the_body() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let token = harness.token().await;
    let form = format!("access_token={token}&name=Global+Summit");
    let answer = harness.post_form("/event/echo-body", &form).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body, form.as_bytes());
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));

    // The query string is read too; the body wins over it.
    let target = format!("/event/echo-body?access_token={token}");
    let answer = harness.post_form(&target, "access_token=nope").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, INVALID);
    let answer = harness.post_form(&target, "name=x").await;
    assert_eq!(answer.status, StatusCode::OK);
    // A body of another type is never looked into.
    let answer = harness
        .send(
            Request::post("/event/echo-body").header("content-type", "text/plain"),
            &format!("access_token={token}"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, MISSING);
}

#[tokio::test]
async fn hide_credentials_takes_the_token_out_of_the_header_query_and_form_body() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &["hideCredentials: true"], &[]);
    let token = harness.token().await;

    let answer = harness
        .get_with("/event/1?a=1", &format!("Bearer {token}"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.target, "/event/1?a=1");
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));

    let answer = harness
        .get(&format!("/event/1?a=1&access_token={token}&b=2"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().target, "/event/1?a=1&b=2");

    let answer = harness
        .post_form("/event/echo-body", &format!("name=x&access_token={token}"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.body, "name=x");
    assert_eq!(seen.header("content-length"), Some("6"));
    assert_eq!(seen.header("x-authenticated-userid"), Some("1"));
}

#[tokio::test]
async fn an_upstream_that_refuses_the_connection_is_kongs_502() {
    let harness = Harness::new(ScriptedUpstream::refusing().await, &[], &[]);
    let token = harness.token().await;
    let answer = harness
        .get_with("/event/1", &format!("Bearer {token}"))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.json(),
        json!({"message": "An invalid response was received from the upstream server"})
    );
    assert_eq!(harness.counted("upstream_error"), 1);
    assert_eq!(harness.counted("forwarded"), 0);
}

#[tokio::test]
async fn an_upstream_slower_than_read_timeout_is_kongs_504() {
    let slow = Script {
        delay: Duration::from_secs(3),
        ..ANSWER
    };
    let upstream = ScriptedUpstream::start(slow).await;
    let harness = Harness::new(upstream.port, &[], &["readTimeout: 200"]);
    let token = harness.token().await;
    let started = std::time::Instant::now();
    let answer = harness
        .get_with("/event/1", &format!("Bearer {token}"))
        .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        answer.json(),
        json!({"message": "The upstream server is timing out"})
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream.count(), 1, "the request reached the application");
    assert_eq!(harness.counted("upstream_timeout"), 1);
}

#[tokio::test]
async fn the_gateways_own_refusals_keep_kongs_answers() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);

    let answer = harness.get("/elsewhere").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.json(),
        json!({"message": "no Route matched with those values"})
    );
    assert_eq!(harness.counted("no_route"), 1);

    let answer = harness
        .send(Request::get("/event/1").header("host", "other"), "")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.json(),
        json!({"message": "Bad request: more than one Host header"})
    );
    let answer = harness.send(Request::connect("/event/1"), "").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.json(), json!({"message": "Method not allowed"}));
    assert_eq!(harness.counted("bad_request"), 2);

    // A token endpoint body over `--max-oauth-body`: 413, and the connection is to close.
    let answer = harness
        .post_form("/event/oauth2/token", &"a".repeat(17 * 1024))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(
        answer.json(),
        json!({"message": "Request size limit exceeded"})
    );
    assert_eq!(upstream.count(), 0);
}

/// A swapped-in snapshot is served from the next request on, and shared with whoever handed
/// it over rather than copied: a controller-fed sidecar's channel keeps the latest snapshot
/// too, and a copy would hold a large namespace twice.
#[tokio::test]
async fn a_swapped_snapshot_is_served_and_shared_not_copied() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    assert_eq!(harness.get("/nowhere").await.status, StatusCode::NOT_FOUND);

    let mut empty = harness.gateway.snapshot().snapshot.as_ref().clone();
    empty.services.clear();
    empty.version += 1;
    let handed_over = Arc::new(empty);
    harness.gateway.swap(handed_over.clone());
    assert!(Arc::ptr_eq(
        &harness.gateway.snapshot().snapshot,
        &handed_over
    ));
    let answer = harness
        .post_form(
            "/event/oauth2/token",
            "grant_type=client_credentials&client_id=clientid&client_secret=clientsecret",
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "the new snapshot serves no service"
    );
}

// === CORS (issue 18, part 5) ===

const APP_ORIGIN: &str = "https://app.example.com";

/// A browser's preflight for `method` to `target` from `origin`.
fn preflight(target: &str, origin: &str, method: &str) -> http::request::Builder {
    Request::options(target)
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
}

const APP_CORS: &[&str] = &[
    r#"origins: ["https://app.example.com", "https://(.*\\.)?partner\\.example"]"#,
    "methods: [GET, POST]",
    "exposedHeaders: [X-Upstream]",
    "maxAge: 600",
];

#[tokio::test]
async fn without_a_cors_block_preflights_get_todays_405_and_401_and_no_cors_header() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let answer = harness
        .send(preflight("/event/oauth2/token", APP_ORIGIN, "POST"), "")
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.json()["error"], "invalid_method");
    let answer = harness
        .send(preflight("/event/1", APP_ORIGIN, "GET"), "")
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, MISSING);
    let token = harness.token().await;
    let answer = harness
        .send(
            Request::get("/event/1")
                .header("origin", APP_ORIGIN)
                .header("authorization", format!("Bearer {token}")),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    for answer_header in ["access-control-allow-origin", "vary"] {
        assert_eq!(answer.header(answer_header), None, "{answer_header}");
    }
    assert_eq!(harness.counted("cors_preflight"), 0);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_preflight_to_the_token_endpoint_is_answered_before_its_post_rule() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::with_cors(upstream.port, APP_CORS);
    let answer = harness
        .send(preflight("/event/oauth2/token", APP_ORIGIN, "POST"), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "");
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        answer.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(
        answer.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    assert_eq!(answer.header("access-control-max-age"), Some("600"));
    assert_eq!(answer.header("vary"), Some("Origin"));
    assert_eq!(answer.header("access-control-allow-credentials"), None);
    assert_eq!(harness.counted("cors_preflight"), 1);
    assert_eq!(harness.counted("token_endpoint"), 0);

    // The real request: the token endpoint's own answer carries the headers.
    let form = "grant_type=password&client_id=clientid&client_secret=clientsecret\
                &provision_key=provisionkey&authenticated_userid=1";
    let answer = harness
        .send(
            Request::post("/event/oauth2/token")
                .header("origin", "https://eu.partner.example")
                .header("content-type", "application/x-www-form-urlencoded"),
            form,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.json()["access_token"].is_string());
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://eu.partner.example")
    );
    assert_eq!(
        answer.header("access-control-expose-headers"),
        Some("X-Upstream")
    );
    assert_eq!(answer.header("vary"), Some("Origin"));

    // An origin not listed gets the answer, but no header a browser would let it read.
    for evil in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "https://partner.example.evil.example",
    ] {
        let answer = harness
            .send(preflight("/event/oauth2/token", evil, "POST"), "")
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("access-control-allow-origin"), None, "{evil}");
        let answer = harness
            .send(
                Request::get("/event/oauth2/token").header("origin", evil),
                "",
            )
            .await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.header("access-control-allow-origin"), None, "{evil}");
        assert_eq!(answer.header("vary"), Some("Origin"));
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_preflight_to_a_route_never_reaches_the_application_nor_skips_the_bearer_check() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::with_cors(upstream.port, APP_CORS);
    let answer = harness
        .send(preflight("/event/1", APP_ORIGIN, "GET"), "")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        upstream.count(),
        0,
        "a preflight never reaches the application"
    );

    // The real request still needs its token; its 401 is readable by the allowed origin.
    let answer = harness
        .send(Request::get("/event/1").header("origin", APP_ORIGIN), "")
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, MISSING);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    // What looks like a preflight but is no OPTIONS is an ordinary request.
    let answer = harness
        .send(preflight("/event/1", APP_ORIGIN, "GET").method("GET"), "")
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(upstream.count(), 0);

    let token = harness.token().await;
    let answer = harness
        .send(
            Request::get("/event/1")
                .header("origin", APP_ORIGIN)
                .header("authorization", format!("Bearer {token}")),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, ANSWER.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some(APP_ORIGIN)
    );
    assert_eq!(
        answer.header("access-control-expose-headers"),
        Some("X-Upstream")
    );
    assert_eq!(answer.header("vary"), Some("Origin"));
    assert_eq!(upstream.last().header("origin"), Some(APP_ORIGIN));
    assert_eq!(harness.counted("cors_preflight"), 1);
    assert_eq!(harness.counted("forwarded"), 1);
}

#[tokio::test]
async fn preflight_continue_sends_a_preflight_through_the_bearer_check() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let mut cors = APP_CORS.to_vec();
    cors.push("preflightContinue: true");
    let harness = Harness::with_cors(upstream.port, &cors);
    let answer = harness
        .send(preflight("/event/1", APP_ORIGIN, "GET"), "")
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    assert_eq!(upstream.count(), 0);
    let answer = harness
        .send(preflight("/event/oauth2/token", APP_ORIGIN, "POST"), "")
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);

    let token = harness.token().await;
    let answer = harness
        .send(
            preflight("/event/1", APP_ORIGIN, "GET")
                .header("authorization", format!("Bearer {token}")),
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.last().method, "OPTIONS");
    assert_eq!(harness.counted("cors_preflight"), 0);
}

/// A harness whose access log (JSON) is kept in memory, line by line.
fn logged(upstream_port: u16) -> (Harness, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let settings = ObserveSettings {
        access_log: AccessLogFormat::Json,
        sink: LineSink::Function(Arc::new(move |line: &str| {
            kept.lock().unwrap().push(line.to_owned())
        })),
        ..ObserveSettings::default()
    };
    (Harness::observed(upstream_port, &[], &[], settings), lines)
}

fn scrape(metrics: &Metrics) -> String {
    let scrape = metrics.handle(&Request::get("/metrics").body(()).unwrap());
    String::from_utf8(scrape.into_body().to_vec()).unwrap()
}

/// The value of the sample named exactly `series` (name and labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test]
async fn the_application_receives_a_request_id_and_the_sidecars_traceparent() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let bearer = format!("Bearer {}", harness.token().await);

    // None sent: a new id, and no trace invented.
    assert_eq!(
        harness.get_with("/event/1", &bearer).await.status,
        StatusCode::OK
    );
    let first = upstream.last();
    let id = first
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(first.header("traceparent"), None);

    // A valid id and trace context: the id kept, the trace and flags kept, the span the
    // sidecar's own, the state passed on.
    let sent = Request::get("/event/1")
        .header("authorization", &bearer)
        .header("x-request-id", "client-id-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "congo=t61rcWkgMzE");
    assert_eq!(harness.send(sent, "").await.status, StatusCode::OK);
    let second = upstream.last();
    assert_eq!(second.header("x-request-id"), Some("client-id-42"));
    let traceparent = second.header("traceparent").unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-01"), "{traceparent}");
    assert_ne!(&traceparent[36..52], "00f067aa0ba902b7");
    assert_eq!(second.header("tracestate"), Some("congo=t61rcWkgMzE"));

    // A request id with a space, and a malformed traceparent: both replaced, never refused.
    let forged = Request::get("/event/1")
        .header("authorization", &bearer)
        .header("x-request-id", "a b")
        .header("traceparent", "00-nonsense")
        .header("tracestate", "congo=t61rcWkgMzE");
    assert_eq!(harness.send(forged, "").await.status, StatusCode::OK);
    let third = upstream.last();
    assert_ne!(third.header("x-request-id"), Some("a b"));
    assert_ne!(third.header("x-request-id"), Some(id.as_str()));
    let replaced = third.header("traceparent").unwrap();
    assert_eq!(replaced.len(), 55, "{replaced}");
    assert!(replaced.ends_with("-00"), "{replaced}");
    assert_eq!(third.header("tracestate"), None);
}

#[tokio::test]
async fn an_access_line_holds_the_request_and_never_a_token_or_secret() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let (harness, lines) = logged(upstream.port);
    let token = harness.token().await;

    // The token in the header, then in the query, then in a form body.
    let header = Request::get("/event/1?page=2")
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "req-header")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    assert_eq!(harness.send(header, "").await.status, StatusCode::OK);
    let query = Request::get(format!("/event/2?access_token={token}"));
    assert_eq!(harness.send(query, "").await.status, StatusCode::OK);
    let form = format!("access_token={token}&name=x");
    let body = Request::post("/event/3")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", form.len());
    assert_eq!(harness.send(body, &form).await.status, StatusCode::OK);
    assert_eq!(
        harness.get("/event/4").await.status,
        StatusCode::UNAUTHORIZED
    );

    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    for line in &lines {
        for secret in [token.as_str(), "clientsecret", "provisionkey", "Bearer"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(!line.contains('?'), "a query in {line}");
    }
    let json: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let issued = &json[0];
    assert_eq!(issued["route"], "token");
    assert_eq!(issued["path"], "/event/oauth2/token");
    assert_eq!(issued["status"], 200);
    assert_eq!(issued["service"], "default/sampleirisservice");

    let proxied = &json[1];
    assert_eq!(proxied["request_id"], "req-header");
    assert_eq!(proxied["client"], "10.0.0.7:5555");
    assert_eq!(proxied["method"], "GET");
    assert_eq!(proxied["path"], "/event/1");
    assert_eq!(proxied["route"], "proxy");
    assert_eq!(proxied["status"], 200);
    assert_eq!(proxied["bytes"], ANSWER.body.len());
    assert_eq!(proxied["consumer"], "ClientApp");
    assert_eq!(proxied["client_id"], "clientid");
    assert_eq!(proxied["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(proxied["upstream_ms"].as_f64().unwrap() <= proxied["duration_ms"].as_f64().unwrap());
    assert_eq!(
        upstream.received.lock().unwrap()[0].header("x-request-id"),
        Some("req-header")
    );
    assert_eq!(json[2]["path"], "/event/2");
    // An id the sidecar made: the line names the one the application received.
    let made = upstream.received.lock().unwrap()[1]
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    assert_eq!(made.len(), 32);
    assert_eq!(json[2]["request_id"], made.as_str());
    assert_eq!(json[3]["method"], "POST");
    let refused = &json[4];
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["consumer"], Value::Null);
    assert_eq!(refused["upstream_ms"], Value::Null);
}

#[tokio::test]
async fn metrics_count_durations_grants_and_oauth_errors() {
    let upstream = ScriptedUpstream::start(ANSWER).await;
    let harness = Harness::new(upstream.port, &[], &[]);
    let token = harness.token().await;
    assert_eq!(
        harness.get("/event/1").await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong_secret = harness
        .post_form(
            "/event/oauth2/token",
            "grant_type=password&client_id=clientid&client_secret=wrong\
             &provision_key=provisionkey&authenticated_userid=1",
        )
        .await;
    assert_eq!(wrong_secret.json()["error"], "invalid_client");
    let proxied = harness
        .get_with("/event/1", &format!("Bearer {token}"))
        .await;
    assert_eq!(proxied.status, StatusCode::OK);

    let text = scrape(&harness.metrics);
    let series = |route: &str, status: &str| {
        format!(
            "tollgate_request_duration_seconds_count{{namespace=\"default\",service=\"sampleirisservice\",route=\"{route}\",status=\"{status}\"}}"
        )
    };
    assert_eq!(sample(&text, &series("token", "2xx")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &series("token", "4xx")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &series("proxy", "4xx")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &series("proxy", "2xx")), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "tollgate_token_requests_total{grant=\"password\",error=\"none\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tollgate_token_requests_total{grant=\"password\",error=\"invalid_client\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("tollgate_build_info{version=\""), "{text}");
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    // Never a client id or a path in a label.
    assert!(!text.contains("clientid"), "{text}");
    assert!(!text.contains("/event"), "{text}");

    // Each snapshot holds its services' series, found once: a new snapshot adds to the
    // same ones, never to a fresh count. A request no route took has its own series.
    let mut next = harness.gateway.snapshot().snapshot.as_ref().clone();
    next.version += 1;
    harness.gateway.swap(next);
    let proxied = harness
        .get_with("/event/1", &format!("Bearer {token}"))
        .await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert_eq!(harness.get("/nowhere").await.status, StatusCode::NOT_FOUND);
    let text = scrape(&harness.metrics);
    assert_eq!(sample(&text, &series("proxy", "2xx")), Some(2.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "tollgate_request_duration_seconds_count{namespace=\"\",service=\"\",route=\"none\",status=\"4xx\"}"
        ),
        Some(1.0),
        "{text}"
    );
}
