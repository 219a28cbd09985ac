//! Redis behind Sentinel, with real processes: a master, a replica and three sentinels. The
//! master is killed while requests run; the sidecars follow the new master by themselves, and
//! a revocation after the failover holds, on the sidecar that made it and on the one that
//! hears of it through the new master's revocation channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_test_support::{RedisServer, RespValue};

use crate::harness::{Sidecar, SidecarBuilder, Upstream, article_manifests, free_port};
use crate::redis_tls::{Pki, sidecar_that_exits, stderr};

const MASTER: &str = "tollgate";

/// A master, its replica in sync, and three sentinels that know both and each other.
struct Deployment {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
    /// The ports the sidecars are given and the sentinels name: the TLS ports with TLS.
    master_port: u16,
    replica_port: u16,
    sentinel_ports: Vec<u16>,
    tls: bool,
}

/// How a [`Deployment`] is protected; the default: not at all.
#[derive(Default)]
struct Protection<'a> {
    /// `requirepass` of the master and the replica (and the sentinels' `auth-pass`).
    data_password: Option<&'a str>,
    /// `requirepass` of the sentinels.
    sentinel_password: Option<&'a str>,
    /// Every node and sentinel on TLS, client certificates required, replication and the
    /// sentinels' own links included. The plain ports stay open for the harness's checks.
    tls: Option<&'a Pki>,
}

impl Protection<'_> {
    /// The `--tls-*` settings of a node (or sentinel) whose TLS port is `port`.
    fn tls_args(&self, port: u16) -> Vec<String> {
        let Some(pki) = self.tls else {
            return Vec::new();
        };
        let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        [
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            path(&pki.server_cert),
            "--tls-key-file".to_owned(),
            path(&pki.server_key),
            "--tls-ca-cert-file".to_owned(),
            path(&pki.ca),
            "--tls-auth-clients".to_owned(),
            "yes".to_owned(),
            "--tls-replication".to_owned(),
            "yes".to_owned(),
        ]
        .into()
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl Deployment {
    /// The token went to the master the sentinels named.
    fn assert_master_holds_a_token(&self) {
        let keys = self.master.keys();
        assert!(
            keys.iter().any(|k| k.starts_with("{tg:default}:at:")),
            "{keys:?}"
        );
    }

    fn start() -> Self {
        Self::start_protected(&Protection::default())
    }

    fn start_protected(protection: &Protection) -> Self {
        let tls = protection.tls.is_some();
        // Each node's TLS port, or its plain one; the plain port is the harness's either way.
        let port_of = |server: &RedisServer, tls_port: u16| {
            if tls { tls_port } else { server.port() }
        };
        let data_args = |tls_port: u16| {
            let mut args = protection.tls_args(tls_port);
            if let Some(password) = protection.data_password {
                args.extend(
                    ["--requirepass", password, "--masterauth", password].map(String::from),
                );
            }
            args
        };

        let master_tls = free_port();
        let master = RedisServer::start_with_args(&as_strs(&data_args(master_tls)));
        let master_port = port_of(&master, master_tls);
        let replica_tls = free_port();
        let mut replica_args = data_args(replica_tls);
        replica_args.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master_port.to_string(),
        ]);
        let replica = RedisServer::start_with_args(&as_strs(&replica_args));
        let replica_port = port_of(&replica, replica_tls);

        let (sentinels, sentinel_ports): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| {
                let tls_port = free_port();
                let mut args = protection.tls_args(tls_port);
                if let Some(password) = protection.data_password {
                    args.extend(["--sentinel", "auth-pass", MASTER, password].map(String::from));
                }
                if let Some(password) = protection.sentinel_password {
                    // Sentinels talk to each other with it too.
                    args.extend(["--requirepass", password].map(String::from));
                    args.extend(["--sentinel", "sentinel-pass", password].map(String::from));
                }
                let sentinel = RedisServer::start_sentinel_with(
                    MASTER,
                    master_port,
                    2,
                    Duration::from_millis(1000),
                    Duration::from_millis(3000),
                    &as_strs(&args),
                );
                let port = port_of(&sentinel, tls_port);
                (sentinel, port)
            })
            .unzip();
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
            master_port,
            replica_port,
            sentinel_ports,
            tls,
        }
    }

    /// The sidecars' URL: `userinfo` (the master's credentials) and `query` as given.
    fn url_with(&self, userinfo: &str, query: &str) -> String {
        let scheme = if self.tls {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        let sentinels: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!(
            "{scheme}://{userinfo}{}/{MASTER}{query}",
            sentinels.join(",")
        )
    }

    fn url(&self) -> String {
        self.url_with("", "")
    }

    /// The port the sentinels name as the master's.
    fn named_master_port(&self, sentinel: usize) -> Option<String> {
        self.sentinels[sentinel]
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER])
            .strings()
            .get(1)
            .cloned()
    }

    /// Polls until every sentinel names the replica as the master.
    async fn until_failed_over(&self) {
        let replica_port = self.replica_port.to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (0..self.sentinels.len())
            .any(|i| self.named_master_port(i).as_ref() != Some(&replica_port))
        {
            assert!(Instant::now() < deadline, "the sentinels never failed over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn access_token(sidecar: &Sidecar) -> String {
    sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A token from `sidecar` once it issues one again after a failover, before `deadline`.
async fn token_after_failover(sidecar: &Sidecar, deadline: Instant) -> String {
    loop {
        let response = sidecar.password_grant_with("clientsecret").await;
        if response.status() == 200 {
            let body: Value = response.json().await.unwrap();
            return body["access_token"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no token issued after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    deployment.until_failed_over().await;

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
    let after = token_after_failover(&revoker, deadline).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_password_are_asked_with_the_url_s_sentinel_password() {
    let deployment = Deployment::start_protected(&Protection {
        data_password: Some("m4ster-pw"),
        sentinel_password: Some("s3ntinel+pw"),
        tls: None,
    });
    let upstream = Upstream::start().await;
    // `+` escaped, as a query's value must be.
    let url = deployment.url_with(":m4ster-pw@", "?sentinel_password=s3ntinel%2Bpw");
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .redis(&url)
        .start()
        .await;
    let token = access_token(&sidecar).await;
    assert_eq!(status(&sidecar, &token).await, 200);
    assert_eq!(upstream.count(), 1);
    deployment.assert_master_holds_a_token();
    // Not even at debug (the harness's level) does a password show.
    let logs = sidecar.logs();
    assert!(
        logs.contains("connected to the master Sentinel names"),
        "{logs}"
    );
    assert!(
        !logs.contains("s3ntinel") && !logs.contains("m4ster-pw"),
        "{logs}"
    );
}

#[test]
fn a_wrong_or_missing_sentinel_password_stops_the_start_naming_each_sentinel() {
    let deployment = Deployment::start_protected(&Protection {
        data_password: None,
        sentinel_password: Some("s3ntinel-pw"),
        tls: None,
    });
    let pki = Pki::new(); // for its directory
    let wrong = deployment.url_with("", "?sentinel_password=not-s3ntinel");
    let output = sidecar_that_exits(&pki, &["--redis-url", &wrong]);
    // As a Redis that refuses the sidecar's TLS: exit 1, the URL named, its secrets not.
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("--redis-url redis+sentinel://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("sentinel_password=***"), "{err}");
    assert!(
        err.contains("no sentinel named a usable master `tollgate`"),
        "{err}"
    );
    for port in &deployment.sentinel_ports {
        assert!(
            err.contains(&format!("sentinel 127.0.0.1:{port}: ")),
            "{err}"
        );
    }
    assert!(
        err.contains("this sentinel refuses the URL's `sentinel_password`"),
        "{err}"
    );
    assert!(!err.contains("not-s3ntinel"), "{err}");

    // None at all: the sentinels say they want one.
    let output = sidecar_that_exits(&pki, &["--redis-url", &deployment.url()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("this sentinel requires a password: add `?sentinel_password=…`"),
        "{err}"
    );

    // A malformed one is a bad flag: exit 64, before anything is asked.
    let bad = deployment.url_with("", "?sentinel_pasword=s3ntinel-pw");
    let output = sidecar_that_exits(&pki, &["--redis-url", &bad]);
    assert_eq!(output.status.code(), Some(64));
    let err = stderr(&output);
    assert!(
        err.contains("`sentinel_pasword` is not a query parameter"),
        "{err}"
    );
    assert!(!err.contains("s3ntinel-pw"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_sentinel_with_every_link_on_tls_and_client_certificates() {
    let pki = Pki::new();
    let mut deployment = Deployment::start_protected(&Protection {
        data_password: Some("m4ster-pw"),
        sentinel_password: Some("s3ntinel-pw"),
        tls: Some(&pki),
    });
    // The sentinels know the master and the replica by their TLS ports.
    assert_eq!(
        deployment.named_master_port(0),
        Some(deployment.master_port.to_string())
    );
    let upstream = Upstream::start().await;
    let url = deployment.url_with(":m4ster-pw@", "?sentinel_password=s3ntinel-pw");
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .redis(&url)
        .arg("--redis-ca")
        .arg(&path(&pki.ca))
        .arg("--redis-client-cert")
        .arg(&path(&pki.client_cert))
        .arg("--redis-client-key")
        .arg(&path(&pki.client_key))
        .start()
        .await;
    let before = access_token(&sidecar).await;
    assert_eq!(status(&sidecar, &before).await, 200);
    deployment.assert_master_holds_a_token();
    let acknowledged = deployment.master.command(&["WAIT", "1", "10000"]);
    assert_eq!(acknowledged.as_integer(), Some(1), "{acknowledged}");

    // A failover over TLS: the sidecar follows the replica's TLS port by itself.
    deployment.master.kill();
    deployment.until_failed_over().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = token_after_failover(&sidecar, deadline).await;
    for token in [&before, &after] {
        until_status(
            &sidecar,
            token,
            200,
            Duration::from_secs(30),
            "after the failover",
        )
        .await;
    }
    assert!(
        deployment
            .replica
            .keys()
            .iter()
            .filter(|k| k.starts_with("{tg:default}:at:"))
            .count()
            >= 2,
        "{:?}",
        deployment.replica.keys()
    );

    // Without the CA, the sentinels' certificates are not trusted: the start says so.
    let output = sidecar_that_exits(
        &pki,
        &[
            "--redis-url",
            &url,
            "--redis-client-cert",
            &path(&pki.client_cert),
            "--redis-client-key",
            &path(&pki.client_key),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        !err.contains("s3ntinel-pw") && !err.contains("m4ster-pw"),
        "{err}"
    );
}
