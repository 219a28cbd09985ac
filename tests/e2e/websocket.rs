//! WebSockets through the gate (issue 15): a real WebSocket client (tokio-tungstenite, over
//! the harness's rustls) talks to a real WebSocket server (tokio-tungstenite again) standing in
//! for an IRIS `%CSP.WebSocket` application behind the sidecar.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

use crate::harness::{
    RedisServer, Scraper, Sidecar, SidecarBuilder, Store, article_manifests, env, eventually,
};

crate::both_stores!(
    messages_are_echoed_and_the_application_sees_the_identity,
    no_token_gets_kongs_401_before_any_upgrade,
    a_revoked_token_gets_kongs_401_before_any_upgrade,
);

/// The application's path that declines every handshake with a 403.
const REFUSING_PATH: &str = "/event/refuse";
const REFUSAL: &str = "no WebSocket here";

/// One handshake as the application received it.
#[derive(Clone, Debug)]
struct Handshake {
    path: String,
    headers: http::HeaderMap,
}

/// A WebSocket application on 127.0.0.1 that echoes every message, and records each
/// handshake; it declines those to [`REFUSING_PATH`].
struct EchoApplication {
    port: u16,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// TCP connections accepted, handshake or not.
    connections: Arc<AtomicUsize>,
    /// Connections whose echo loop has ended: the other side closed or failed.
    ended: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoApplication {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (seen, accepted, done) = (handshakes.clone(), connections.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, done) = (seen.clone(), done.clone());
                tokio::spawn(async move {
                    echo(stream, &seen).await;
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            handshakes,
            connections,
            ended,
            task,
        }
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for EchoApplication {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(stream: TcpStream, seen: &Mutex<Vec<Handshake>>) {
    // tungstenite's callback: its error is the response to send, whatever its size.
    #[allow(clippy::result_large_err)]
    let record = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        seen.lock().unwrap().push(Handshake {
            path: request.uri().path().to_owned(),
            headers: request.headers().clone(),
        });
        if request.uri().path() == REFUSING_PATH {
            let refusal = http::Response::builder()
                .status(403)
                .header("content-type", "text/plain")
                .body(Some(REFUSAL.to_owned()))
                .unwrap();
            return Err(refusal);
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        if message.is_text() || message.is_binary() {
            if socket.send(message).await.is_err() {
                return;
            }
        } else if message.is_close() {
            return;
        }
    }
}

/// A sidecar on the article's manifests in front of `application`, on `store`, with `args`.
async fn sidecar_for(
    application: &EchoApplication,
    store: Store,
    args: &[&str],
) -> (Sidecar, Option<RedisServer>) {
    let mut builder = SidecarBuilder::new(article_manifests(application.port, ""));
    let redis = (store == Store::Redis).then(RedisServer::start);
    if let Some(redis) = &redis {
        builder = builder.redis(&redis.url());
    }
    for arg in args {
        builder = builder.arg(arg);
    }
    (builder.start().await, redis)
}

async fn token(sidecar: &Sidecar) -> String {
    sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

type Client = WebSocketStream<TlsStream<TcpStream>>;

/// A WebSocket handshake to `path` over TLS (HTTP/1.1 by ALPN), with `token` as a bearer.
async fn connect(
    sidecar: &Sidecar,
    path: &str,
    token: Option<&str>,
) -> Result<(Client, tungstenite::handshake::client::Response), tungstenite::Error> {
    let url = format!("wss://localhost:{}{path}", sidecar.proxy.port());
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        let bearer = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
    }
    let tls = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    client_async(request, tls).await
}

/// The status a refused handshake got, as the WebSocket client saw it.
fn refused_status(result: Result<(Client, impl std::fmt::Debug), tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("the handshake failed otherwise: {other}"),
        Ok((_, response)) => panic!("the handshake succeeded: {response:?}"),
    }
}

/// A handshake written by hand on one HTTP/1.1 connection, for the whole response the
/// sidecar sends back when it does not switch: status, headers and body.
async fn handshake_answer(
    sidecar: &Sidecar,
    path: &str,
    token: Option<&str>,
) -> (u16, http::HeaderMap, Bytes) {
    let mut connection = sidecar.http1_connection().await;
    let mut request = http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = connection
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

async fn requests_with_outcome(sidecar: &Sidecar, outcome: &str) -> f64 {
    let name = format!("tollgate_requests_total{{outcome=\"{outcome}\"}}");
    Scraper::new(sidecar).metric(&name).await
}

async fn messages_are_echoed_and_the_application_sees_the_identity(store: Store) {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(&application, store, &[]).await;
    let token = token(&sidecar).await;

    let (mut socket, response) = connect(&sidecar, "/event/ws?room=1", Some(&token))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "through the gate"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket
        .send(Message::binary(vec![0, 1, 2, 255]))
        .await
        .unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(vec![0, 1, 2, 255]));
    socket.close(None).await.unwrap();

    let handshakes = application.handshakes();
    assert_eq!(handshakes.len(), 1);
    let seen = &handshakes[0];
    assert_eq!(seen.path, "/event/ws");
    let header = |name: &str| seen.headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(header("x-consumer-custom-id"), Some("client-app-7"));
    assert_eq!(header("x-authenticated-userid"), Some("1"));
    assert_eq!(header("x-credential-identifier"), Some("clientid"));
    assert_eq!(header("x-forwarded-proto"), Some("https"));
    assert_eq!(header("upgrade"), Some("websocket"));
    assert_eq!(header("sec-websocket-version"), Some("13"));
    assert!(header("sec-websocket-key").is_some());
    assert_eq!(requests_with_outcome(&sidecar, "upgraded").await, 1.0);
}

async fn no_token_gets_kongs_401_before_any_upgrade(store: Store) {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(&application, store, &[]).await;

    assert_eq!(
        refused_status(connect(&sidecar, "/event/ws", None).await),
        401
    );
    let (status, headers, body) = handshake_answer(&sidecar, "/event/ws", None).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(
        body,
        r#"{"error":"invalid_request","error_description":"The access token is missing"}"#
    );
    assert_eq!(application.connections.load(Ordering::SeqCst), 0);
    assert_eq!(requests_with_outcome(&sidecar, "unauthorized").await, 2.0);
    assert_eq!(requests_with_outcome(&sidecar, "upgraded").await, 0.0);
}

async fn a_revoked_token_gets_kongs_401_before_any_upgrade(store: Store) {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(&application, store, &[]).await;
    let token = token(&sidecar).await;
    let (mut socket, _) = connect(&sidecar, "/event/ws", Some(&token)).await.unwrap();
    socket.close(None).await.unwrap();

    let tokens: serde_json::Value = sidecar
        .client
        .get(sidecar.admin_url("/default/oauth2_tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = tokens["data"][0]["id"].as_str().unwrap();
    let deleted = sidecar
        .client
        .delete(sidecar.admin_url(&format!("/default/oauth2_tokens/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let refused = connect(&sidecar, "/event/ws", Some(&token)).await;
    assert_eq!(refused_status(refused), 401);
    let (status, headers, body) = handshake_answer(&sidecar, "/event/ws", Some(&token)).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="The access token is invalid or has expired""#
    );
    assert_eq!(
        body,
        r#"{"error":"invalid_token","error_description":"The access token is invalid or has expired"}"#
    );
    assert_eq!(
        application.connections.load(Ordering::SeqCst),
        1,
        "only the handshake before the revocation reached the application"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mib_message_is_echoed_intact() {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(&application, Store::Memory, &[]).await;
    let token = token(&sidecar).await;
    let (mut socket, _) = connect(&sidecar, "/event/ws", Some(&token)).await.unwrap();
    let large: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    socket.send(Message::binary(large.clone())).await.unwrap();
    match socket.next().await.unwrap().unwrap() {
        Message::Binary(echoed) => assert!(echoed[..] == large[..], "the echo differs"),
        other => panic!("not a binary message: {other:?}"),
    }
    socket.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_after_the_upgrade_idle_timeout() {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(
        &application,
        Store::Memory,
        &["--upgrade-idle-timeout", "1"],
    )
    .await;
    let token = token(&sidecar).await;
    let (mut socket, _) = connect(&sidecar, "/event/ws", Some(&token)).await.unwrap();
    socket.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    // Then nothing, either way: the sidecar closes both connections. (The bound only keeps
    // a broken sidecar from hanging the test.)
    let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .expect("the idle tunnel was not closed");
    assert!(
        !matches!(next, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{next:?}"
    );
    eventually(
        Duration::from_secs(10),
        "the application saw its connection end",
        || async { application.ended.load(Ordering::SeqCst) == 1 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_handshake_is_relayed_as_a_response() {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(&application, Store::Memory, &[]).await;
    let token = token(&sidecar).await;

    let refused = connect(&sidecar, REFUSING_PATH, Some(&token)).await;
    assert_eq!(refused_status(refused), 403);
    let (status, headers, body) = handshake_answer(&sidecar, REFUSING_PATH, Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(headers["content-type"], "text/plain");
    assert!(headers.get("upgrade").is_none(), "{headers:?}");
    assert_eq!(body, REFUSAL);
    assert_eq!(application.handshakes().len(), 2);
    assert_eq!(requests_with_outcome(&sidecar, "forwarded").await, 2.0);
    assert_eq!(requests_with_outcome(&sidecar, "upgraded").await, 0.0);
}

/// Only `websocket` is ever asked of the application: any other `Upgrade` (h2c above all)
/// is a hop's field, dropped as before, and the request is forwarded as an ordinary one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_upgrades_are_never_forwarded() {
    let env = env(Store::Memory, "").await;
    let token = token(&env.sidecar).await;
    for (upgrade, connection_field) in [
        ("h2c", "Upgrade, HTTP2-Settings"),
        ("websocket", "keep-alive"),
        ("TLS/1.2", "Upgrade"),
    ] {
        let request = http::Request::builder()
            .uri("/event/1")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("upgrade", upgrade)
            .header("connection", connection_field)
            .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let mut connection = env.sidecar.http1_connection().await;
        let response = connection.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{upgrade}");
        response.into_body().collect().await.unwrap();
        let seen = env.upstream.last();
        assert_eq!(seen.header("upgrade"), None, "{upgrade}");
        assert_eq!(seen.header("connection"), None, "{upgrade}");
        if connection_field.contains("HTTP2-Settings") {
            assert_eq!(seen.header("http2-settings"), None);
        }
    }
    assert_eq!(requests_with_outcome(&env.sidecar, "upgraded").await, 0.0);
}

/// After the 101 the connection is the tunnel's: the HTTP timeouts of a client connection
/// (a request head within --client-header-timeout, the next request within
/// --client-idle-timeout) no longer apply, only --upgrade-idle-timeout does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_is_not_bound_by_the_http_client_timeouts() {
    let application = EchoApplication::start().await;
    let args = ["--client-header-timeout", "1", "--client-idle-timeout", "1"];
    let (sidecar, _redis) = sidecar_for(&application, Store::Memory, &args).await;
    let token = token(&sidecar).await;
    let (mut socket, _) = connect(&sidecar, "/event/ws", Some(&token)).await.unwrap();
    for text in ["before", "after both HTTP timeouts passed"] {
        socket.send(Message::text(text)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(text));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    socket.close(None).await.unwrap();
}

/// A tunnel is a client connection: it holds its place under --max-connections until it
/// closes, so clients with tokens cannot hold more of the application's connections than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_holds_its_place_under_max_connections() {
    let application = EchoApplication::start().await;
    // The token's own connection is idle-closed after a second, freeing the one place.
    let args = ["--max-connections", "1", "--client-idle-timeout", "1"];
    let (sidecar, _redis) = sidecar_for(&application, Store::Memory, &args).await;
    let token = token(&sidecar).await;
    let (mut socket, _) = connect(&sidecar, "/event/ws", Some(&token)).await.unwrap();
    socket.send(Message::text("open")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("open"));

    // The listener takes no other connection while the tunnel is open: its TLS handshake
    // waits in the kernel's accept queue.
    let second = tokio::time::timeout(
        Duration::from_secs(2),
        sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]),
    )
    .await;
    assert!(second.is_err(), "a second connection was served");

    // The client ends the WebSocket and, as clients do, its connection.
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);
    let mut answered = false;
    for _ in 0..100 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]),
        );
        if attempt.await.is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the closed tunnel's place was never given back");
}

/// An HTTP/2 extended CONNECT (RFC 8441) with `:protocol` websocket, as a client of
/// `h2` alone sends it; the same checks as an HTTP/1.1 handshake.
fn extended_connect(
    sidecar: &Sidecar,
    protocol: &'static str,
    token: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::builder()
        .method("CONNECT")
        .uri(sidecar.url("/event/ws"))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request.body(Full::new(Bytes::new())).unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_opens_a_websocket_with_extended_connect() {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) = sidecar_for(&application, Store::Memory, &[]).await;
    let token = token(&sidecar).await;
    let tls = sidecar.tls_stream(sidecar.proxy, &[b"h2"]).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // A first request, so the sidecar's SETTINGS, which allow extended CONNECT, are in.
    let first = http::Request::get(sidecar.url("/event/1"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(first).await.unwrap().status(), 401);

    let refused = sender
        .send_request(extended_connect(&sidecar, "websocket", None))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        r#"{"error":"invalid_request","error_description":"The access token is missing"}"#
    );
    // A tunnel of another kind is never asked of the application.
    let other = sender
        .send_request(extended_connect(&sidecar, "connect-udp", Some(&token)))
        .await
        .unwrap();
    assert_eq!(other.status(), 405);
    assert_eq!(application.connections.load(Ordering::SeqCst), 0);

    let response = sender
        .send_request(extended_connect(&sidecar, "websocket", Some(&token)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let stream = hyper::upgrade::on(response).await.unwrap();
    let mut socket = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(stream),
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    socket.send(Message::text("over HTTP/2")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("over HTTP/2")
    );
    socket.close(None).await.unwrap();

    let handshakes = application.handshakes();
    assert_eq!(handshakes.len(), 1);
    let header = |name: &str| handshakes[0].headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(handshakes[0].path, "/event/ws");
    assert_eq!(header("x-consumer-username"), Some("ClientApp"));
    assert_eq!(header("upgrade"), Some("websocket"));
    assert_eq!(header("sec-websocket-key").map(str::len), Some(24));
    assert_eq!(header("sec-websocket-version"), Some("13"));
    assert_eq!(header("sec-websocket-protocol"), Some("chat"));
    assert_eq!(requests_with_outcome(&sidecar, "upgraded").await, 1.0);
}

/// One HTTP/2 connection may carry many WebSockets, each holding an application connection:
/// WebSockets open at once are bounded by --max-connections on their own, over every
/// connection and listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_open_at_once_are_bounded_by_max_connections() {
    let application = EchoApplication::start().await;
    let (sidecar, _redis) =
        sidecar_for(&application, Store::Memory, &["--max-connections", "1"]).await;
    // The one connection the listener takes: the token and every WebSocket go over it.
    let tls = sidecar.tls_stream(sidecar.proxy, &[b"h2"]).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let grant = http::Request::post(sidecar.url("/event/oauth2/token"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"client_id":"clientid","client_secret":"clientsecret","grant_type":"password","provision_key":"provisionkey","authenticated_userid":"1"}"#,
        )))
        .unwrap();
    let granted = sender.send_request(grant).await.unwrap();
    assert_eq!(granted.status(), 200);
    let granted = granted.into_body().collect().await.unwrap().to_bytes();
    let granted: serde_json::Value = serde_json::from_slice(&granted).unwrap();
    let token = granted["access_token"].as_str().unwrap().to_owned();

    let opened = sender
        .send_request(extended_connect(&sidecar, "websocket", Some(&token)))
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let stream = hyper::upgrade::on(opened).await.unwrap();
    let mut socket = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(stream),
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    socket.send(Message::text("one")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("one"));

    let refused = sender
        .send_request(extended_connect(&sidecar, "websocket", Some(&token)))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"{"message":"Service unavailable"}"#);
    assert_eq!(application.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        requests_with_outcome(&sidecar, "too_many_upgrades").await,
        1.0
    );

    // Once the first closes, its place is free again.
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);
    let mut reopened = false;
    for _ in 0..100 {
        let again = sender
            .send_request(extended_connect(&sidecar, "websocket", Some(&token)))
            .await
            .unwrap();
        if again.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reopened,
        "the closed WebSocket's place was never given back"
    );
}
