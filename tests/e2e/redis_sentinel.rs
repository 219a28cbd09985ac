//! Redis behind Sentinel, with real processes: a master, a replica and three sentinels. The
//! master is killed while requests run; the sidecars follow the new master by themselves, and
//! a revocation after the failover holds, on the sidecar that made it and on the one that
//! hears of it through the new master's revocation channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_test_support::{RedisServer, RespValue};

use crate::harness::{Sidecar, SidecarBuilder, Upstream, article_manifests};

const MASTER: &str = "tollgate";

/// A master, its replica in sync, and three sentinels that know both and each other.
struct Deployment {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
}

impl Deployment {
    fn start() -> Self {
        let master = RedisServer::start();
        let replica = RedisServer::start_replica_of(&master, &[]);
        let sentinels: Vec<_> = (0..3)
            .map(|_| {
                RedisServer::start_sentinel(
                    MASTER,
                    &master,
                    2,
                    Duration::from_millis(1000),
                    Duration::from_millis(3000),
                )
            })
            .collect();
        master.wait_until(&["INFO", "replication"], |reply| {
            reply
                .as_string()
                .is_some_and(|info| info.contains("state=online"))
        });
        let count = |reply: &RespValue| match reply {
            RespValue::Array(Some(items)) => items.len(),
            _ => 0,
        };
        for sentinel in &sentinels {
            sentinel.wait_until(&["SENTINEL", "REPLICAS", MASTER], |r| count(r) == 1);
            sentinel.wait_until(&["SENTINEL", "SENTINELS", MASTER], |r| count(r) == 2);
        }
        Self {
            master,
            replica,
            sentinels,
        }
    }

    fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", sentinels.join(","))
    }

    /// The port the sentinels name as the master's.
    fn named_master_port(&self, sentinel: usize) -> Option<String> {
        self.sentinels[sentinel]
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
            .strings()
            .get(1)
            .cloned()
    }
}

async fn access_token(sidecar: &Sidecar) -> String {
    sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn status(sidecar: &Sidecar, token: &str) -> u16 {
    sidecar
        .get_with_token("/event/1", token)
        .await
        .status()
        .as_u16()
}

/// Polls until `sidecar` answers `want` for `token`; fails after `within`.
async fn until_status(sidecar: &Sidecar, token: &str, want: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let got = status(sidecar, token).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_is_followed_and_revocations_after_it_hold() {
    let mut deployment = Deployment::start();
    let upstream = Upstream::start().await;
    let manifests = article_manifests(upstream.port, "");
    // Cached validations are trusted for an hour here: only a revocation message can end
    // one early, so a subscriber left on the dead master would show.
    let watcher = SidecarBuilder::new(manifests.clone())
        .redis(&deployment.url())
        .arg("--validation-cache-ttl")
        .arg("3600")
        .start()
        .await;
    let revoker = SidecarBuilder::new(manifests)
        .redis(&deployment.url())
        .start()
        .await;

    let before = access_token(&revoker).await;
    let kept = access_token(&revoker).await;
    assert_eq!(status(&watcher, &before).await, 200);
    assert_eq!(status(&watcher, &kept).await, 200);
    // Both tokens reached the replica: a failover loses nothing issued before it.
    let acknowledged = deployment.master.command(&["WAIT", "1", "10000"]);
    assert_eq!(acknowledged.as_integer(), Some(1), "{acknowledged}");

    // Load: requests run while the master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let client = watcher.new_client();
        let url = watcher.url("/event/1");
        let kept = kept.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = client.get(&url).bearer_auth(&kept).send().await.unwrap();
                statuses.push(response.status().as_u16());
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    deployment.master.kill();
    let replica_port = deployment.replica.port().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while deployment.named_master_port(0).as_ref() != Some(&replica_port) {
        assert!(Instant::now() < deadline, "the sentinels never failed over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both sidecars come back by themselves: the token issued before the failover works,
    // and new tokens are written to the new master.
    let recovery = Duration::from_secs(30);
    until_status(
        &watcher,
        &kept,
        200,
        recovery,
        "the watcher never recovered",
    )
    .await;
    let deadline = Instant::now() + recovery;
    let after = loop {
        let response = revoker
            .client
            .post(revoker.url("/event/oauth2/token"))
            .json(&serde_json::json!({"client_id": "clientid", "client_secret": "clientsecret",
                "grant_type": "password", "provision_key": "provisionkey", "authenticated_userid": "1"}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            break body["access_token"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no token issued after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 503)),
        "a valid token was refused, or worse: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");

    // The watcher caches all three again, from the new master.
    for token in [&before, &kept, &after] {
        until_status(
            &watcher,
            token,
            200,
            recovery,
            "not served after the failover",
        )
        .await;
    }
    let deadline = Instant::now() + recovery;
    while !watcher.logs().contains("revocation subscription restored") {
        assert!(
            Instant::now() < deadline,
            "the revocation subscription never followed the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Revoked after the failover, through the other sidecar: refused by both, the one issued
    // before the failover included.
    let response = revoker
        .client
        .delete(revoker.admin_url("/default/oauth2_tokens?client_id=clientid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for token in [&before, &kept, &after] {
        assert_eq!(status(&revoker, token).await, 401);
        until_status(
            &watcher,
            token,
            401,
            Duration::from_secs(10),
            "a revocation after the failover never reached the watcher",
        )
        .await;
    }
    assert!(
        watcher
            .logs()
            .contains("Redis master changed; following it"),
        "{}",
        watcher.logs()
    );
}
