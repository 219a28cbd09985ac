//! Connections to the application (crates/sidecar/src/pool.rs): a keep-alive client is served
//! over one upstream connection, a client that leaves hands its connection to the next, a
//! response dropped half-read never leaves its connection for reuse, and an application that
//! closes its connections is connected to again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_client_is_served_over_one_upstream_connection() {
    let env = env(Store::Memory, "").await;
    let token = token(&env.sidecar).await;
    let url = |path: &str| env.sidecar.url(path);
    for (protocol, client) in [
        ("HTTP/2", env.sidecar.new_client()),
        ("HTTP/1.1", env.sidecar.new_http1_client()),
    ] {
        let before = env.upstream.count();
        // Responses of every shape: a known length, none at all (HEAD, 204), and streamed.
        let get = client.get(url("/event/1")).bearer_auth(&token);
        let response = get.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), EVENT_1);
        let head = client.head(url("/event/1")).bearer_auth(&token);
        assert_eq!(head.send().await.unwrap().status(), 200);
        let no_content = client.get(url("/event/status/204")).bearer_auth(&token);
        assert_eq!(no_content.send().await.unwrap().status(), 204);
        let large: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        let echo = client
            .post(url("/event/echo-body"))
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .body(large.clone());
        let response = echo.send().await.unwrap();
        assert_eq!(response.bytes().await.unwrap().as_ref(), large.as_slice());
        let again = client.get(url("/event/1")).bearer_auth(&token);
        assert_eq!(again.send().await.unwrap().text().await.unwrap(), EVENT_1);

        let seen = &env.upstream.seen()[before..];
        assert_eq!(
            seen.len(),
            5,
            "{protocol}: every request reached the upstream"
        );
        let peers: HashSet<SocketAddr> = seen.iter().map(|s| s.peer).collect();
        assert_eq!(peers.len(), 1, "{protocol}: one upstream connection");
    }
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

/// An application that answers each connection's first request with `{}` and closes the
/// connection: saying so with `Connection: close` when `announce`, silently otherwise.
/// Returns its port and the count of connections it accepted.
async fn one_request_per_connection(announce: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
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
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_closes_its_connections_is_connected_to_again() {
    for announce in [true, false] {
        let (port, accepted) = one_request_per_connection(announce).await;
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
