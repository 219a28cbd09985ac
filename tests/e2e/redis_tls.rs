//! Redis over TLS with a private CA, as cert-manager issues it: `--redis-ca` makes the
//! article's flow work over `rediss://`, `--redis-client-cert`/`--redis-client-key` satisfy a
//! Redis that requires client certificates, and every way of getting it wrong is one clear
//! message.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_test_support::RedisServer;

use crate::harness::{STORE_KEY, SidecarBuilder, Upstream, article_manifests, free_port, tollgate};

/// A CA, the server certificate it signed for 127.0.0.1, a client certificate it signed, and
/// a second CA that signed nothing here; all as files.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    other_ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let (ca_cert, issuer) = ca("redis test CA");
        let (other_ca_cert, _) = ca("some other CA");
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tollgate sidecar");
        let client = client_params.signed_by(&client_key, &issuer).unwrap();
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            other_ca: write("other-ca.pem", other_ca_cert.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            dir,
        }
    }
}

/// `redis-server` with a TLS port; the plain port stays open for the harness's checks.
pub(crate) fn tls_redis(pki: &Pki, require_client_certificates: bool) -> (RedisServer, String) {
    let tls_port = free_port().to_string();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path(&pki.server_cert),
        "--tls-key-file",
        &path(&pki.server_key),
        "--tls-ca-cert-file",
        &path(&pki.ca),
        "--tls-auth-clients",
        if require_client_certificates {
            "yes"
        } else {
            "no"
        },
    ]);
    (server, format!("rediss://127.0.0.1:{tls_port}"))
}

/// `tollgate sidecar` on the article's manifests with `args`, expected to exit by itself:
/// its output. Killed (and the test failed) if it is still running after 30 s.
pub(crate) fn sidecar_that_exits(pki: &Pki, args: &[&str]) -> Output {
    let manifests = pki.dir.path().join("manifests.yaml");
    std::fs::write(&manifests, article_manifests(free_port(), "")).unwrap();
    let key = pki.dir.path().join("store.key");
    std::fs::write(&key, STORE_KEY).unwrap();
    let mut child = tollgate()
        .arg("sidecar")
        .arg("--manifests")
        .arg(&manifests)
        .arg("--store-key-file")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("TOLLGATE_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the sidecar is still running:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_article_flow_works_over_rediss_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::new();
    let (redis, url) = tls_redis(&pki, true);
    let upstream = Upstream::start().await;
    let sidecar = SidecarBuilder::new(article_manifests(upstream.port, ""))
        .redis(&url)
        .arg("--redis-ca")
        .arg(pki.ca.to_str().unwrap())
        .arg("--redis-client-cert")
        .arg(pki.client_cert.to_str().unwrap())
        .arg("--redis-client-key")
        .arg(pki.client_key.to_str().unwrap())
        .start()
        .await;
    let token = sidecar.password_grant().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        sidecar.get_with_token("/event/1", &token).await.status(),
        200
    );
    assert_eq!(upstream.count(), 1);
    // The token went to this Redis, over its TLS port: it holds the access key.
    assert!(
        redis
            .keys()
            .iter()
            .any(|k| k.starts_with("{tg:default}:at:")),
        "{:?}",
        redis.keys()
    );

    // Revoked through the admin API: refused.
    let response = sidecar
        .client
        .delete(sidecar.admin_url("/default/oauth2_tokens?client_id=clientid"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        sidecar.get_with_token("/event/1", &token).await.status(),
        401
    );
    let body: Value = sidecar
        .get_with_token("/event/1", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[test]
fn without_redis_ca_a_private_ca_is_not_trusted_and_the_sidecar_says_so() {
    let pki = Pki::new();
    let (_redis, url) = tls_redis(&pki, false);
    let output = sidecar_that_exits(&pki, &["--redis-url", &url]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains(&format!("--redis-url {url}")), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(
        err.contains("--redis-ca"),
        "the message names the fix: {err}"
    );

    // Another CA than the one that signed Redis's certificate: refused just the same.
    let other = pki.other_ca.to_str().unwrap();
    let output = sidecar_that_exits(&pki, &["--redis-url", &url, "--redis-ca", other]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("UnknownIssuer"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_redis_requiring_client_certificates_refuses_a_sidecar_without_one_clearly() {
    let pki = Pki::new();
    let (_redis, url) = tls_redis(&pki, true);
    let ca = pki.ca.to_str().unwrap();
    let output = sidecar_that_exits(&pki, &["--redis-url", &url, "--redis-ca", ca]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains(&format!("--redis-url {url}")), "{err}");
    assert!(
        err.contains("--redis-client-cert"),
        "the message names the fix: {err}"
    );
}

#[test]
fn bad_redis_tls_files_are_exit_64_naming_flag_and_file() {
    let pki = Pki::new();
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "no certificate here").unwrap();
    let garbage = garbage.to_str().unwrap();
    let missing = pki.dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let url = "rediss://127.0.0.1:1";
    let output = sidecar_that_exits(
        &pki,
        &[
            "--redis-url",
            url,
            "--redis-ca",
            garbage,
            "--redis-client-cert",
            missing,
            "--redis-client-key",
            pki.client_cert.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(64));
    let err = stderr(&output);
    for expected in [
        format!("--redis-ca {garbage}: holds no PEM certificate"),
        format!("--redis-client-cert {missing}: cannot read it"),
        format!(
            "--redis-client-key {}: holds no PEM private key",
            pki.client_cert.display()
        ),
    ] {
        assert!(err.contains(&expected), "{expected}\n{err}");
    }

    // A CA for a URL without TLS would mean nothing: said, not ignored.
    let ca = pki.ca.to_str().unwrap();
    let output = sidecar_that_exits(
        &pki,
        &["--redis-url", "redis://127.0.0.1:1", "--redis-ca", ca],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("--redis-ca: only used with a rediss://"),
        "{}",
        stderr(&output)
    );

    // The controller takes the same flags.
    let output = tollgate()
        .args(["controller", "--redis-url", url, "--redis-ca", garbage])
        .env_remove("TOLLGATE_REDIS_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains(&format!("--redis-ca {garbage}: holds no PEM certificate")),
        "{}",
        stderr(&output)
    );
}
