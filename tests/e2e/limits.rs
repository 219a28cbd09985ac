//! What a client with no token can hold of the sidecar (issue 13, points 3 to 6): the client
//! timeouts of every listener, the bounded bodies and their process-wide budget, a readable
//! 413 over HTTP/1.1 and HTTP/2, and the application connections idle clients may keep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::harness::{Sidecar, SidecarBuilder, Upstream, article_manifests, eventually};

/// Long enough for any check here, so that a hang fails the test instead of stalling it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn sidecar(args: &[&str]) -> (Sidecar, Upstream) {
    let upstream = Upstream::start().await;
    let mut builder = SidecarBuilder::new(article_manifests(upstream.port, ""));
    for arg in args {
        builder = builder.arg(arg);
    }
    (builder.start().await, upstream)
}

/// Reads until the peer closes (or fails); everything read. Panics when it stays open past
/// [`PATIENCE`].
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin), what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "{what}: the connection was still open after {PATIENCE:?}; read {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> (u16, String, String) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                return (status, head.to_lowercase(), body.into_owned());
            }
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("a response, not an error");
        assert!(n > 0, "closed before a whole response: {received:?}");
        received.extend_from_slice(&chunk[..n]);
    }
}

const TOKEN_HEAD: &str = "POST /event/oauth2/token HTTP/1.1\r\nHost: localhost\r\n\
    Content-Type: application/x-www-form-urlencoded\r\n";

// === 3. timeouts on every listener ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout_on_every_listener() {
    let (sidecar, _upstream) = sidecar(&["--client-header-timeout", "1"]).await;
    for (listener, addr) in [("proxy", sidecar.proxy), ("admin", sidecar.admin)] {
        let mut tls = sidecar.tls_stream(addr, &[b"http/1.1"]).await;
        tls.write_all(b"GET /event/1 HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        read_until_closed(&mut tls, listener).await;
    }
    // The metrics listener is plain HTTP; a connection that sends nothing is closed too.
    let mut plain = tokio::net::TcpStream::connect(sidecar.metrics)
        .await
        .unwrap();
    read_until_closed(&mut plain, "metrics").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408_after_the_body_timeout() {
    let (sidecar, _upstream) = sidecar(&["--client-body-timeout", "1"]).await;
    let mut tls = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    tls.write_all(format!("{TOKEN_HEAD}Content-Length: 100\r\n\r\ngrant_type=").as_bytes())
        .await
        .unwrap();
    let (status, _head, body) = read_response(&mut tls).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body, r#"{"message":"Request timeout"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_with_nothing_in_flight_is_closed_after_the_idle_timeout() {
    // The header timeout is the default 30 s: only the idle timeout can close it in time.
    let (sidecar, _upstream) = sidecar(&["--client-idle-timeout", "1"]).await;
    let mut tls = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    tls.write_all(b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (status, head, _) = read_response(&mut tls).await;
    assert_eq!(status, 404);
    assert!(!head.contains("connection: close"), "{head}");
    let rest = read_until_closed(&mut tls, "idle proxy connection").await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_outlives_the_header_timeout_until_the_idle_timeout() {
    let (sidecar, _upstream) = sidecar(&["--client-header-timeout", "1"]).await;
    let mut tls = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    for _ in 0..2 {
        tls.write_all(b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut tls).await.0, 404);
        // Idle for more than the header timeout, far less than the idle one (75 s).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

// === 5. an oversized body gets a readable 413 ===

/// A token request of `size` bytes, sent by curl as python-requests sends it: the whole body
/// at once, without `Expect: 100-continue`. Returns curl's exit code, the status and the body.
async fn curl_token_request(sidecar: &Sidecar, size: usize, http: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'a'; size]).unwrap();
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", http, "--cacert"])
        .arg(sidecar.cert_pem_file())
        .args(["-H", "Expect:", "-H"])
        .arg("Content-Type: application/x-www-form-urlencoded")
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args([
            "--write-out",
            "\n%{http_code} %{http_version}",
            "--max-time",
            "20",
        ])
        .arg(sidecar.url("/event/oauth2/token"))
        .output()
        .await
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {http}: {:?} {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_body_sees_its_413_over_http1_and_http2_with_curl() {
    let (sidecar, _upstream) = sidecar(&[]).await;
    for (http, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (_, out) = curl_token_request(&sidecar, 8 << 20, http).await;
        assert_eq!(
            out,
            format!("{{\"message\":\"Request size limit exceeded\"}}\n413 {version}"),
            "curl {http}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_sees_its_413_with_an_http2_client_library() {
    let (sidecar, _upstream) = sidecar(&["--max-oauth-body", "65536"]).await;
    let client = sidecar.new_client();
    let response = tokio::time::timeout(
        PATIENCE,
        client
            .post(sidecar.url("/event/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'a'; 4 << 20])
            .send(),
    )
    .await
    .expect("an answer in time")
    .expect("an answer, not a reset");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"message":"Request size limit exceeded"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_http1_body_is_answered_then_the_connection_lingers_and_closes() {
    let (sidecar, _upstream) = sidecar(&["--max-oauth-body", "65536"]).await;
    let mut tls = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    let size = 1 << 20;
    tls.write_all(format!("{TOKEN_HEAD}Content-Length: {size}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (mut read, mut write) = tokio::io::split(tls);
    // The whole body is sent before anything is read, as a simple client does.
    write
        .write_all(&vec![b'a'; size])
        .await
        .expect("the body is drained, not reset");
    let (status, head, body) = read_response(&mut read).await;
    assert_eq!(status, 413);
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, r#"{"message":"Request size limit exceeded"}"#);
    assert!(read_until_closed(&mut read, "after a 413").await.is_empty());
}

// === 4. bounded memory ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_bodies_past_the_budget_get_503_with_retry_after() {
    let (sidecar, _upstream) = sidecar(&["--body-buffer-budget", "32768"]).await;
    // A client with no token holds 30,000 bytes of a token request and stalls.
    let mut stalled = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    stalled
        .write_all(format!("{TOKEN_HEAD}Content-Length: 40000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stalled.write_all(&[b'a'; 30_000]).await.unwrap();
    stalled.flush().await.unwrap();

    let form = "grant_type=password&client_id=clientid&client_secret=clientsecret\
        &provision_key=provisionkey&authenticated_userid=1&padding=";
    let request = |padding: usize| {
        sidecar
            .new_http1_client()
            .post(sidecar.url("/event/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{form}{}", "a".repeat(padding)))
            .send()
    };
    eventually(
        PATIENCE,
        "a token request is refused for the budget",
        || async {
            let response = request(5000).await.unwrap();
            if response.status() != 503 {
                return false;
            }
            assert_eq!(response.headers()["retry-after"], "1");
            true
        },
    )
    .await;
    // A small one still fits.
    assert_eq!(request(10).await.unwrap().status(), 200);
    // The stalled client gone, its share of the budget is free again.
    drop(stalled);
    eventually(PATIENCE, "the budget is given back", || async {
        request(5000).await.unwrap().status() == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_longer_than_the_buffer_is_streamed_unread() {
    let (sidecar, upstream) = sidecar(&["--client-body-buffer-size", "16384"]).await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let long_form = format!("access_token={token}&note={}", "n".repeat(20_000));
    let post = |path: String, body: String| {
        sidecar
            .client
            .post(sidecar.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // Past the buffer size, the token in the form is not looked for.
    let response = post("/event/echo-body".into(), long_form.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // With the token in the query string, the long form reaches the application whole.
    let response = post(
        format!("/event/echo-body?access_token={token}"),
        long_form.clone(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), long_form);
    assert_eq!(upstream.last().body, long_form.as_bytes());
    // A short form is still read for its token.
    let response = post(
        "/event/echo-body".into(),
        format!("access_token={token}&a=1"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_for_a_free_slot() {
    let (sidecar, _upstream) = sidecar(&["--max-connections", "2"]).await;
    let first = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    let _second = sidecar.tls_stream(sidecar.proxy, &[b"http/1.1"]).await;
    let third = tokio::spawn({
        let tls = Arc::new(sidecar.tls_config(&[b"http/1.1"]));
        let addr = sidecar.proxy;
        async move { handshake(addr, tls).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served at once"
    );
    drop(first);
    tokio::time::timeout(PATIENCE, third)
        .await
        .expect("served once a slot is free")
        .unwrap();
}

async fn handshake(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
}

// === 6. idle clients do not pin application connections ===

/// An application that answers every request with `{}` on kept-alive connections, and counts
/// the connections open to it.
async fn counting_application() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut received = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                        received.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
                        if stream.write_all(answer).await.is_err() {
                            break;
                        }
                    }
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_give_their_application_connections_back() {
    let (port, open) = counting_application().await;
    let manifests = article_manifests(port, "");
    let sidecar = SidecarBuilder::new(manifests)
        .arg("--upstream-keepalive-idle-timeout")
        .arg("1")
        .start()
        .await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut client = sidecar.http1_connection().await;
        let request = http::Request::get(sidecar.url("/event/anything"))
            .header("authorization", format!("Bearer {token}"))
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        clients.push(client);
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        5,
        "one per client while in use"
    );
    // The clients stay connected and send nothing.
    eventually(
        PATIENCE,
        "idle clients hold no application connection",
        || async { open.load(Ordering::SeqCst) == 0 },
    )
    .await;
    assert!(
        clients.iter().all(|c| !c.is_closed()),
        "the clients are still connected"
    );
}
