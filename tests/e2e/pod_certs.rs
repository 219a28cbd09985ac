//! Injected pods' serving certificates end to end: `tollgate controller --manifests` signs the
//! key a `tollgate sidecar --tls-from-controller` makes, for the names the controller takes
//! from the pod (its IP, `localhost`, its `tollgate.dev/tls-dns-names`), never from the
//! request; clients that trust only the controller's CA connect; the certificate is renewed
//! in place; requests without the pod's credentials get nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::harness::{Controller, PodSidecarBuilder, Upstream, article_manifests, eventually};

/// A renewal or a fallback happens within this long; only ever a ceiling.
const WITHIN: Duration = Duration::from_secs(60);

/// iris-0 names two Services of its namespace; iris-1 names one of another namespace. Both
/// have the IP a kubelet would have reported.
const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: iris-0
  labels: {app: iris}
  annotations:
    tollgate.dev/tls-dns-names: "iris.default.svc, iris-0.iris.default.svc.cluster.local"
status: {podIP: 127.0.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: iris-1
  labels: {app: iris}
  annotations:
    tollgate.dev/tls-dns-names: "payments.bank.svc"
status: {podIP: 127.0.0.1}
"#;

const TOKENS: &str = "token-iris-0 default/iris-0\ntoken-iris-1 default/iris-1\n";

struct Setup {
    _upstream: Upstream,
    work: tempfile::TempDir,
    controller: Controller,
    ca_pem: String,
}

async fn setup(controller_flags: &[&str]) -> Setup {
    let upstream = Upstream::start().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("article.yaml"),
        article_manifests(upstream.port, ""),
    )
    .unwrap();
    std::fs::write(manifests.join("pods.yaml"), PODS).unwrap();
    let tokens = work.path().join("tokens");
    std::fs::write(&tokens, TOKENS).unwrap();
    let controller =
        Controller::start_with(work.path(), &manifests, &tokens, None, controller_flags).await;
    let ca_pem = std::fs::read_to_string(&controller.ca).unwrap();
    Setup {
        _upstream: upstream,
        work,
        controller,
        ca_pem,
    }
}

fn pod_sidecar(setup: &Setup, pod: &str) -> PodSidecarBuilder {
    PodSidecarBuilder::new(
        &setup.controller.stream_url(),
        &setup.controller.ca,
        "default",
        pod,
        &format!("token-{pod}"),
        &setup.work.path().join(format!("{pod}.snapshot.json")),
    )
    .tls_from_controller()
}

/// The chain `addr` serves to a client that trusts only `ca_pem` and asks for `name`; the
/// handshake's error when that client does not accept it.
pub async fn served_chain(
    addr: SocketAddr,
    name: &str,
    ca_pem: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .to_vec())
}

/// The subject alternative names of a certificate, as text.
pub fn sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let Some(names) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => (*dns).to_owned(),
            x509_parser::extensions::GeneralName::IPAddress(ip) if ip.len() == 4 => {
                std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()
            }
            other => format!("{other:?}"),
        })
        .collect()
}

fn not_after(der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.validity().not_after.timestamp()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_sidecar_serves_a_certificate_of_the_controller_s_ca_for_the_pod_s_names() {
    let setup = setup(&[]).await;
    let sidecar = pod_sidecar(&setup, "iris-0").start().await;
    let ca = &setup.ca_pem;

    // Every name the pod has, and none other, passes a client that trusts only the CA.
    for name in [
        "localhost",
        "127.0.0.1",
        "iris.default.svc",
        "iris-0.iris.default.svc.cluster.local",
    ] {
        let chain = served_chain(sidecar.proxy, name, ca).await.unwrap();
        assert_eq!(chain.len(), 2, "the certificate, then the CA's");
    }
    let error = served_chain(sidecar.proxy, "payments.bank.svc", ca)
        .await
        .unwrap_err();
    assert!(
        error.contains("certificate") || error.contains("Name"),
        "{error}"
    );

    let chain = served_chain(sidecar.proxy, "localhost", ca).await.unwrap();
    assert_eq!(
        sans(&chain[0]),
        [
            "localhost",
            "127.0.0.1",
            "iris.default.svc",
            "iris-0.iris.default.svc.cluster.local"
        ]
    );
    // A day's certificate, by default.
    let left = not_after(&chain[0]) - now();
    assert!((86_000..=86_400).contains(&left), "{left}s left");

    // The article's flow with curl, which trusts only the controller's CA.
    let body = r#"{"client_id":"clientid","client_secret":"clientsecret","grant_type":"password","provision_key":"provisionkey","authenticated_userid":"1"}"#;
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail"])
        .arg("--cacert")
        .arg(&setup.controller.ca)
        .args(["-H", "content-type: application/json", "--data", body])
        .arg(format!(
            "https://localhost:{}/event/oauth2/token",
            sidecar.proxy.port()
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(token["access_token"].is_string(), "{token}");

    let scraped = reqwest::get(format!("http://{}/metrics", sidecar.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let expiry: i64 = scraped
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_tls_certificate_expiry_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expiry, not_after(&chain[0]));
    // The key never leaves the sidecar: not in its logs, not in the controller's.
    for logs in [sidecar.logs(), setup.controller.logs()] {
        assert!(!logs.contains("PRIVATE KEY"));
    }
    assert!(
        sidecar
            .logs()
            .contains("serving a certificate of the controller's CA")
    );
}

/// Renewed at two thirds of its life, swapped in place; with the controller gone, the sidecar
/// keeps serving the current certificate and keeps asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_in_place() {
    let mut setup = setup(&["--pod-cert-lifetime", "30"]).await;
    let sidecar = pod_sidecar(&setup, "iris-0").start().await;
    let first = served_chain(sidecar.proxy, "localhost", &setup.ca_pem)
        .await
        .unwrap();
    eventually(WITHIN, "a renewed certificate is served", || async {
        let now = served_chain(sidecar.proxy, "localhost", &setup.ca_pem)
            .await
            .unwrap();
        now[0] != first[0]
    })
    .await;
    let renewed = served_chain(sidecar.proxy, "localhost", &setup.ca_pem)
        .await
        .unwrap();
    assert!(not_after(&renewed[0]) > not_after(&first[0]));
    assert_eq!(sans(&renewed[0]), sans(&first[0]));

    // The next renewal fails: the current certificate is still served, the sidecar ready.
    assert_eq!(setup.controller.terminate(), Some(0));
    eventually(WITHIN, "the failed renewal is logged", || async {
        sidecar
            .logs()
            .contains("cannot renew the serving certificate")
    })
    .await;
    let still = served_chain(sidecar.proxy, "localhost", &setup.ca_pem)
        .await
        .unwrap();
    assert_eq!(still[0], renewed[0]);
    let readyz = reqwest::get(format!("http://{}/readyz", sidecar.metrics))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
}

fn request_for(names: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_requests_need_the_pod_s_token_and_get_only_the_pod_s_names() {
    let setup = setup(&[]).await;
    let controller = &setup.controller;
    let url = |pod: &str| format!("{}/v1/certificates/default/{pod}", controller.stream_url());
    let post = |pod: &str, token: Option<&str>, body: Vec<u8>| {
        let mut request = controller
            .client
            .post(url(pod))
            .header("content-type", "application/pkcs10")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let csr = request_for(&["bank.example.com", "iris.default.svc"]);

    let anonymous = post("iris-0", None, csr.clone()).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        post("iris-0", Some("not-a-token"), csr.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    let other = post("iris-0", Some("token-iris-1"), csr.clone())
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    let get = controller
        .client
        .get(url("iris-0"))
        .bearer_auth("token-iris-0")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let garbage = post("iris-0", Some("token-iris-0"), b"not a request".to_vec())
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let huge = post("iris-0", Some("token-iris-0"), vec![0u8; 64 * 1024])
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    // The pod's own token: a certificate for the pod's names, not the request's, and no CA.
    let issued = post("iris-0", Some("token-iris-0"), csr.clone())
        .await
        .unwrap();
    assert_eq!(issued.status(), 200);
    let issued: Value = issued.json().await.unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued["certificateChain"].as_str().unwrap().as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(
        sans(&chain[0]),
        [
            "localhost",
            "127.0.0.1",
            "iris.default.svc",
            "iris-0.iris.default.svc.cluster.local"
        ]
    );
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(issued["notAfter"].as_i64().unwrap(), not_after(&chain[0]));
    assert_eq!(
        CertificateDer::from_pem_slice(setup.ca_pem.as_bytes()).unwrap(),
        chain[1]
    );

    // A pod whose annotation names another namespace's Service gets no certificate at all.
    let refused = post("iris-1", Some("token-iris-1"), csr).await.unwrap();
    assert_eq!(refused.status(), 403);
    let message: Value = refused.json().await.unwrap();
    let message = message["message"].as_str().unwrap();
    assert!(
        message.contains("`payments.bank.svc` is not a Service name of namespace default"),
        "{message}"
    );
}

/// With no certificate from the controller, the sidecar is not ready; after
/// --tls-from-controller-timeout it serves a self-signed one, says so loudly, and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_certificate_then_falls_back_loudly() {
    let setup = setup(&[]).await;
    // iris-1's annotation is refused: its snapshot comes, its certificate never does.
    let mut sidecar = pod_sidecar(&setup, "iris-1")
        .arg("--tls-from-controller-timeout")
        .arg("15")
        .spawn();
    eventually(
        WITHIN,
        "the snapshot served, the refusal logged",
        || async {
            let logs = sidecar.logs();
            logs.contains("serving a new snapshot")
                && logs.contains("no serving certificate from the controller yet")
        },
    )
    .await;
    let readyz = reqwest::get(format!("http://{}/readyz", sidecar.metrics))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503, "{}", sidecar.logs());
    assert!(
        served_chain(sidecar.proxy, "localhost", &setup.ca_pem)
            .await
            .is_err(),
        "no certificate is served before the fallback"
    );
    sidecar.wait_ready().await;
    assert!(sidecar.logs().contains("SELF-SIGNED"), "{}", sidecar.logs());
    let error = served_chain(sidecar.proxy, "localhost", &setup.ca_pem)
        .await
        .unwrap_err();
    assert!(
        error.contains("UnknownIssuer") || error.contains("certificate"),
        "{error}"
    );
}
