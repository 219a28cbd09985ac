//! The sidecar's footprint after a burst: the connections it counts, and the memory their
//! buffers held handed back to the OS once they close (crates/sidecar/src/memory.rs).

use std::time::Duration;

use crate::harness::{Scraper, Store, env, eventually};

/// Above the 16 connections at the peak below which the sidecar does not bother to trim.
const BURST: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_is_counted_and_its_memory_returned_when_it_ends() {
    let env = env(Store::Redis, "").await;
    let sidecar = &env.sidecar;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let scraper = Scraper::new(sidecar);
    assert_eq!(scraper.metric("tollgate_memory_trims_total").await, 0.0);
    // The harness's client and the scraper each hold one connection, once the readiness
    // probes' connections have closed.
    eventually(
        Duration::from_secs(10),
        "only the harness's and the scraper's connections are open",
        || async { scraper.metric("tollgate_open_connections").await == 2.0 },
    )
    .await;

    // Each client holds its own keep-alive connection, as a burst of callers would.
    let clients: Vec<reqwest::Client> = (0..BURST).map(|_| sidecar.new_client()).collect();
    let requests = clients.iter().map(|client| {
        client
            .get(sidecar.url("/event/1"))
            .bearer_auth(&token)
            .send()
    });
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let open = scraper.metric("tollgate_open_connections").await;
    assert!(
        open >= 2.0 + BURST as f64,
        "{open} connections open during the burst"
    );

    // A trim follows once at most half the peak is still open; how fast the client library
    // closes the last few connections is not this test's business.
    drop(clients);
    eventually(
        Duration::from_secs(10),
        "the memory of the burst's connections is returned",
        || async { scraper.metric("tollgate_memory_trims_total").await >= 1.0 },
    )
    .await;
    let open = scraper.metric("tollgate_open_connections").await;
    assert!(
        open <= 2.0 + (BURST / 2) as f64,
        "{open} connections still open"
    );
    // The sidecar still serves after giving its memory back.
    let response = sidecar.get_with_token("/event/1", &token).await;
    assert_eq!(response.status(), 200);
}
