//! Connections to the application (crates/sidecar/src/pool.rs): a keep-alive client is served
//! over one upstream connection, a client that leaves hands its connection to the next, a
//! response dropped half-read never leaves its connection for reuse, and an application that
//! closes its connections is connected to again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{
    EVENT_1, Scraper, Sidecar, SidecarBuilder, Store, article_manifests, env, eventually,
};

async fn token(sidecar: &Sidecar) -> String {
    sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The requests of `a_keep_alive_client_is_served_over_one_upstream_connection`, with
/// responses of every shape: a known length, none at all (HEAD, 204), and streamed.
fn requests_of_every_shape(token: &str) -> Vec<http::Request<Full<Bytes>>> {
    let large: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let request = |method: &str, path: &str, body: Vec<u8>| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    vec![
        request("GET", "/event/1", Vec::new()),
        request("HEAD", "/event/1", Vec::new()),
        request("GET", "/event/status/204", Vec::new()),
        request("POST", "/event/echo-body", large),
        request("GET", "/event/1", Vec::new()),
    ]
}

/// What a response must be for `request`.
async fn check(request: &http::Request<Full<Bytes>>, status: u16, body: Bytes) {
    let path = request.uri().path();
    match (request.method().as_str(), path) {
        ("GET", "/event/1") => assert_eq!((status, body.as_ref()), (200, EVENT_1.as_bytes())),
        ("HEAD", _) => assert_eq!((status, body.len()), (200, 0)),
        (_, "/event/status/204") => assert_eq!((status, body.len()), (204, 0)),
        (_, "/event/echo-body") => {
            let sent = request.body().clone().collect().await.unwrap().to_bytes();
            assert_eq!((status, body), (200, sent));
        }
        other => panic!("no check for {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_client_is_served_over_one_upstream_connection() {
    let env = env(Store::Memory, "").await;
    let token = token(&env.sidecar).await;

    // HTTP/2: one connection, whatever the client library.
    let before = env.upstream.count();
    let client = env.sidecar.new_client();
    for request in requests_of_every_shape(&token) {
        let (parts, body) = request.clone().into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let url = env.sidecar.url(parts.uri.path());
        let sent = client
            .request(parts.method, url)
            .bearer_auth(&token)
            .body(body);
        let response = sent.send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let status = response.status().as_u16();
        check(&request, status, response.bytes().await.unwrap()).await;
    }
    let peers: HashSet<SocketAddr> = env.upstream.seen()[before..]
        .iter()
        .map(|s| s.peer)
        .collect();
    assert_eq!(env.upstream.count() - before, 5);
    assert_eq!(peers.len(), 1, "HTTP/2: one upstream connection");

    // HTTP/1.1, over exactly one connection.
    let before = env.upstream.count();
    let mut connection = env.sidecar.http1_connection().await;
    for request in requests_of_every_shape(&token) {
        connection.ready().await.unwrap();
        let response = connection.send_request(request.clone()).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        check(&request, status, body).await;
    }
    let peers: HashSet<SocketAddr> = env.upstream.seen()[before..]
        .iter()
        .map(|s| s.peer)
        .collect();
    assert_eq!(env.upstream.count() - before, 5);
    assert_eq!(peers.len(), 1, "HTTP/1.1: one upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_hands_its_upstream_connection_to_the_next() {
    let env = env(Store::Memory, "").await;
    let token = token(&env.sidecar).await;
    let scraper = Scraper::new(&env.sidecar);

    let first = env.sidecar.new_http1_client();
    let response = first.get(env.sidecar.url("/event/1")).bearer_auth(&token);
    assert_eq!(response.send().await.unwrap().status(), 200);
    let used = env.upstream.last().peer;
    assert_eq!(
        scraper.metric("tollgate_upstream_idle_connections").await,
        0.0,
        "the first client still holds its connection"
    );
    drop(first);
    eventually(
        Duration::from_secs(10),
        "the first client's upstream connection waits for the next client",
        || async { scraper.metric("tollgate_upstream_idle_connections").await == 1.0 },
    )
    .await;

    let second = env.sidecar.new_http1_client();
    let response = second.get(env.sidecar.url("/event/1")).bearer_auth(&token);
    assert_eq!(response.send().await.unwrap().status(), 200);
    assert_eq!(
        env.upstream.last().peer,
        used,
        "the same upstream connection"
    );
    assert_eq!(
        scraper.metric("tollgate_upstream_connections_total").await,
        1.0
    );
    assert_eq!(
        scraper.metric("tollgate_upstream_idle_connections").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_dropped_half_read_takes_its_upstream_connection_with_it() {
    let env = env(Store::Memory, "").await;
    let token = token(&env.sidecar).await;
    // HTTP/2, so the client connection, and what it holds, outlives the dropped response.
    // Reusing the half-read upstream connection would serve the rest of the dropped body as
    // the next response.
    let client = env.sidecar.new_client();
    let url = env.sidecar.url("/event/echo-body");
    // Far more than the socket buffers between the application and the client hold.
    let large: Vec<u8> = vec![b'x'; 8 * 1024 * 1024];
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .body(large)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let half_read = env.upstream.last().peer;
    drop(response);

    let response = client
        .get(env.sidecar.url("/event/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        EVENT_1,
        "the rest of the dropped body is never read as this response"
    );
    assert_ne!(env.upstream.last().peer, half_read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_an_http2_client_get_their_own_responses() {
    let env = env(Store::Memory, "").await;
    let token = token(&env.sidecar).await;
    let client = env.sidecar.new_client();
    let requests = (0..16).map(|i| {
        client
            .get(env.sidecar.url(&format!("/event/n{i}")))
            .bearer_auth(&token)
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    for (i, response) in responses.into_iter().enumerate() {
        let body = response.unwrap().text().await.unwrap();
        assert!(
            body.ends_with(&format!("/n{i}\"}}")),
            "request {i} got {body}"
        );
    }
}

/// A raw HTTP/1.1 application on a free port: `serve` runs on each connection it accepts.
/// Returns its port and the count of connections it accepted.
async fn raw_application<F, Fut>(serve: F) -> (u16, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (port, accepted)
}

/// The article's sidecar in front of the application on `port`, with `setting` (such as
/// `readTimeout: 300`) added to its service's `upstream`, and a token for it.
async fn sidecar_with_upstream(port: u16, setting: &str) -> (Sidecar, String) {
    let manifests = article_manifests(port, "").replace(
        &format!("    port: {port}\n"),
        &format!("    port: {port}\n    {setting}\n"),
    );
    let sidecar = SidecarBuilder::new(manifests).start().await;
    let token = token(&sidecar).await;
    (sidecar, token)
}

/// Reads one request head (the sidecar's GETs have no body); false if the peer closed first.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// An application that answers each connection's first request with `{}` and closes the
/// connection `linger` later: saying so with `Connection: close` when `announce`, silently
/// otherwise.
async fn one_request_per_connection(announce: bool, linger: Duration) -> (u16, Arc<AtomicUsize>) {
    raw_application(move |mut stream| async move {
        if !read_request_head(&mut stream).await {
            return;
        }
        let close = if announce {
            "connection: close\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{close}content-length: 2\r\n\r\n{{}}"
        );
        let _ = stream.write_all(response.as_bytes()).await;
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
        let _ = stream.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_closes_its_connections_is_connected_to_again() {
    for announce in [true, false] {
        let (port, accepted) = one_request_per_connection(announce, Duration::ZERO).await;
        let sidecar = SidecarBuilder::new(article_manifests(port, ""))
            .start()
            .await;
        let token = token(&sidecar).await;
        let client = sidecar.new_http1_client();
        for request in 1..=3 {
            let response = client
                .get(sidecar.url("/event/1"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                200,
                "request {request}, Connection: close said: {announce}"
            );
            assert_eq!(response.text().await.unwrap(), "{}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_application_closes_are_let_go() {
    // The application closes each connection a second after answering, as an idle timeout
    // shorter than the sidecar's would.
    let (port, accepted) = one_request_per_connection(false, Duration::from_secs(1)).await;
    let sidecar = SidecarBuilder::new(article_manifests(port, ""))
        .start()
        .await;
    let token = token(&sidecar).await;
    let scraper = Scraper::new(&sidecar);
    let client = sidecar.new_http1_client();
    let response = client.get(sidecar.url("/event/1")).bearer_auth(&token);
    assert_eq!(response.send().await.unwrap().status(), 200);
    drop(client);
    eventually(
        Duration::from_secs(10),
        "the client's upstream connection is kept for the next client",
        || async { scraper.metric("tollgate_upstream_idle_connections").await == 1.0 },
    )
    .await;
    // The sidecar sweeps its idle list every 10 s.
    eventually(
        Duration::from_secs(30),
        "the connection the application closed is no longer counted as idle",
        || async { scraper.metric("tollgate_upstream_idle_connections").await == 0.0 },
    )
    .await;
    let client = sidecar.new_http1_client();
    let response = client.get(sidecar.url("/event/1")).bearer_auth(&token);
    assert_eq!(response.send().await.unwrap().status(), 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
}

/// An application that answers the first request of each connection with `{}` and keeps the
/// connection open, then closes it without answering the next: the race of a keep-alive
/// connection closed by the application just as the sidecar sends on it, made certain.
async fn drops_the_second_request_of_each_connection() -> (u16, Arc<AtomicUsize>) {
    raw_application(|mut stream| async move {
        if read_request_head(&mut stream).await {
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
            let _ = stream.write_all(response.as_bytes()).await;
        }
        // The second request is read, then the connection is dropped unanswered.
        read_request_head(&mut stream).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_on_a_connection_the_application_just_closed_is_sent_again() {
    let (port, accepted) = drops_the_second_request_of_each_connection().await;
    let sidecar = SidecarBuilder::new(article_manifests(port, ""))
        .start()
        .await;
    let token = token(&sidecar).await;
    let mut connection = sidecar.http1_connection().await;
    let request = |method: &str, body: &'static str| {
        http::Request::builder()
            .method(method)
            .uri("/event/1")
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let mut status_of = async |request| {
        connection.ready().await.unwrap();
        let response = connection.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    };

    assert_eq!(status_of(request("GET", "")).await, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The second GET reaches the application on the kept connection, which it closes
    // unanswered: the sidecar sends the GET again on a new connection.
    assert_eq!(status_of(request("GET", "")).await, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A POST may have been acted on before the connection closed: it is not sent twice.
    assert_eq!(status_of(request("POST", "{\"a\":1}")).await, 502);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the POST went once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_does_not_accept_in_connect_timeout_gets_kongs_504() {
    // A listener that never accepts, its one-place queue already full: Linux drops the SYNs
    // of any further connect, which then hangs as to an unreachable host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut queued = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            queued.push(stream);
        }
    }
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await
        .is_err(),
        "the listener's queue must be full for this test to mean anything"
    );

    let (sidecar, token) = sidecar_with_upstream(port, "connectTimeout: 300").await;
    let response = sidecar.get_with_token("/event/1", &token).await;
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "The upstream server is timing out"})
    );
    drop((listener, queued));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_stops_mid_body_for_read_timeout_fails_the_response() {
    // Answers each request with a head promising 10 bytes, sends 3, then holds the connection.
    let (port, accepted) = raw_application(|mut stream| async move {
        read_request_head(&mut stream).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nabc";
        let _ = stream.write_all(head.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let (sidecar, token) = sidecar_with_upstream(port, "readTimeout: 300").await;
    for attempt in 1..=2 {
        let response = sidecar.get_with_token("/event/1", &token).await;
        // The head had come: the client has its status, and then a body that breaks off
        // rather than one that never ends.
        assert_eq!(response.status(), 200, "attempt {attempt}");
        let error = response
            .bytes()
            .await
            .expect_err("3 of 10 bytes is no body");
        // The sidecar broke the response off; the client's own 20 s timeout did not.
        assert!(!error.is_timeout(), "attempt {attempt}: {error:?}");
    }
    // The connection that stalled is never used again.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_does_not_answer_in_read_timeout_gets_kongs_504() {
    // Reads each request, then holds the connection without a word.
    let (port, accepted) = raw_application(|mut stream| async move {
        read_request_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let (sidecar, token) = sidecar_with_upstream(port, "readTimeout: 300").await;
    for attempt in 1..=2 {
        let response = sidecar.get_with_token("/event/1", &token).await;
        assert_eq!(response.status(), 504, "attempt {attempt}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"message": "The upstream server is timing out"})
        );
    }
    // The connection that timed out is never used again: its answer could still come.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_framed_two_ways_or_coded_gets_kongs_502() {
    // The application answers by path: a body coded with gzip as its transfer coding, which
    // would reach the client still coded with nothing to say so, or a chunked body beside a
    // length, the shape of response smuggling. nginx refuses both heads; so does the sidecar.
    let (port, _) = raw_application(|mut stream| async move {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
        let response: &[u8] = if received.starts_with(b"GET /event/gzip ") {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: gzip\r\n\r\n\x1f\x8b\x08\x00"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        };
        let _ = stream.write_all(response).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let (sidecar, token) = sidecar_with_upstream(port, "readTimeout: 5000").await;
    for path in ["/event/gzip", "/event/length-and-chunked"] {
        let response = sidecar.get_with_token(path, &token).await;
        assert_eq!(response.status(), 502, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"message": "An invalid response was received from the upstream server"}),
            "{path}"
        );
    }
}
