//! Serving certificates for injected pods, as Linkerd's identity service issues them: the
//! sidecar makes its key and sends a certificate signing request (`POST
//! /v1/certificates/{namespace}/{pod}`, see [`tollgate_api::certificates`]) with its pod's
//! projected service-account token; the controller checks the token as the snapshot stream
//! does, and signs the key with its CA.
//!
//! The names come from the pod as the API server describes it, never from the request: the
//! pod's IPs, `localhost`, and the DNS names of its `tollgate.dev/tls-dns-names` annotation,
//! which must be Service names of the pod's own namespace (`NAME.NAMESPACE.svc` or
//! `NAME.NAMESPACE.svc.CLUSTER-DOMAIN`), so no pod gets a certificate another namespace's
//! clients would take for one of theirs. Whatever names, key usages or CA bit the request asks
//! for are ignored.
//!
//! The decisions are pure functions ([`pod_sans`], [`check_request`], [`validity`]); only
//! [`CertificateServer::handle`] does I/O.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use rcgen::{CertificateSigningRequestParams, SanType};
use rustls_pki_types::CertificateSigningRequestDer;
use tokio::time::Instant;
use tollgate_api::certificates::{
    self as wire, CERTIFICATES_PATH, IssuedCertificate, MAX_CSR_BYTES,
};
use tollgate_api::stream::TOKEN_AUDIENCE;

use crate::auth::{Identity, TokenReviewer, bearer_token};
use crate::ca::{Ca, Validity};
use crate::index::{ObjectRef, PodIdentity, SharedIndex};
use crate::server::{Body, message, response};

/// `--pod-cert-lifetime`: a day, as Linkerd's proxies' certificates; renewed at two thirds.
pub const DEFAULT_POD_CERT_LIFETIME_SECONDS: u64 = 24 * 60 * 60;
/// `--cluster-domain`: Kubernetes' default.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The extra field of a TokenReview naming the uid of the pod a token is bound to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// A certificate is valid from a little before it is issued, for clients whose clock is
/// behind the controller's: a tenth of its lifetime, at most a minute.
const MAX_BACKDATE: Duration = Duration::from_secs(60);

/// How pods' certificates are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCertSettings {
    pub lifetime: Duration,
    pub cluster_domain: String,
    /// The controller's own serving names (`--tls-san`): the same CA signs them, so no pod
    /// may have one, whatever its namespace.
    pub reserved_names: Vec<String>,
}

/// Why a pod gets no certificate from what the API server says of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SanRefusal {
    /// The pod has no IP yet (the kubelet has not reported it): ask again.
    #[error("the pod has no IP address yet; retry")]
    NoAddress,
    /// The pod shares its node's network: its IP is not its own.
    #[error("a hostNetwork pod's IP is its node's: it gets no certificate")]
    HostNetwork,
    /// The annotation names something the pod may not have.
    #[error("annotation {annotation}: {0}", annotation = tollgate_inject::ANNOTATION_TLS_DNS_NAMES)]
    Annotation(String),
}

/// Answers certificate requests. Cheap to share between connections.
pub struct CertificateServer {
    index: SharedIndex,
    reviewer: Arc<dyn TokenReviewer>,
    ca: Arc<Ca>,
    settings: PodCertSettings,
    /// How long a request for a pod the index does not know (or without an IP) waits.
    pod_wait: Duration,
}

// === the decisions ===

/// The names of the pod's certificate: `localhost`, the pod's IPs, then the annotation's DNS
/// names, each checked to lie in the pod's namespace.
pub fn pod_sans(
    pod: &ObjectRef,
    identity: &PodIdentity,
    settings: &PodCertSettings,
) -> Result<Vec<SanType>, SanRefusal> {
    let cluster_domain = settings.cluster_domain.as_str();
    if identity.host_network {
        return Err(SanRefusal::HostNetwork);
    }
    if identity.ips.is_empty() {
        return Err(SanRefusal::NoAddress);
    }
    let names = match identity.tls_dns_names.as_deref() {
        None => Vec::new(),
        Some(value) => {
            tollgate_inject::parse_tls_dns_names(value).map_err(SanRefusal::Annotation)?
        }
    };
    if let Some(outside) = names
        .iter()
        .find(|name| !in_namespace(name, &pod.namespace, cluster_domain))
    {
        return Err(SanRefusal::Annotation(format!(
            "`{outside}` is not a Service name of namespace {ns} (NAME.{ns}.svc or NAME.{ns}.svc.{cluster_domain})",
            ns = pod.namespace
        )));
    }
    if let Some(reserved) = names
        .iter()
        .find(|name| settings.reserved_names.contains(name))
    {
        return Err(SanRefusal::Annotation(format!(
            "`{reserved}` is one of the controller's own names"
        )));
    }
    let mut sans = vec![dns("localhost")?];
    sans.extend(
        identity
            .ips
            .iter()
            .map(|ip: &IpAddr| SanType::IpAddress(*ip)),
    );
    for name in &names {
        sans.push(dns(name)?);
    }
    Ok(sans)
}

/// Whether `name` is a Service (or a pod of a headless Service) of `namespace`:
/// `….NAMESPACE.svc` or `….NAMESPACE.svc.CLUSTER-DOMAIN`, with something before.
pub fn in_namespace(name: &str, namespace: &str, cluster_domain: &str) -> bool {
    let short = format!(".{namespace}.svc");
    let full = format!("{short}.{cluster_domain}");
    [short, full].iter().any(|suffix| {
        name.strip_suffix(suffix.as_str())
            .is_some_and(|service| !service.is_empty())
    })
}

/// The request's key, once its signature proves the sender holds it. Only ECDSA P-256 keys
/// (what the sidecar makes) are accepted; anything the request asks for besides is dropped
/// by [`Ca::sign_pod_certificate`].
pub fn check_request(der: &[u8]) -> Result<CertificateSigningRequestParams, String> {
    let request =
        CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(der))
            .map_err(|error| match error {
                rcgen::Error::InvalidCertificationRequestSignature => {
                    "the certificate signing request's signature does not verify".to_owned()
                }
                _ => "the body is not a DER certificate signing request (PKCS#10) tollgate accepts"
                    .to_owned(),
            })?;
    let key = &request.public_key;
    // An uncompressed P-256 point: 0x04, then two 32-byte coordinates.
    let p256 = key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256
        && rcgen::PublicKeyData::der_bytes(key).len() == 65
        && rcgen::PublicKeyData::der_bytes(key).first() == Some(&0x04);
    if !p256 {
        return Err("the key must be ECDSA P-256, signed with SHA-256".to_owned());
    }
    Ok(request)
}

/// A certificate issued at `now` for `lifetime`: valid from a little before (a tenth of the
/// lifetime, at most [`MAX_BACKDATE`]) to `now + lifetime`.
pub fn validity(now: SystemTime, lifetime: Duration) -> Validity {
    let seconds = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    let backdate = (lifetime / 10).min(MAX_BACKDATE);
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    Validity {
        not_before: at(seconds(now - backdate)),
        not_after: at(seconds(now + lifetime)),
    }
}

fn dns(name: &str) -> Result<SanType, SanRefusal> {
    name.try_into()
        .map(SanType::DnsName)
        .map_err(|_| SanRefusal::Annotation(format!("`{name}` is not a DNS name")))
}

// === impl CertificateServer ===

/// What the index knows of a pod, once waited for.
enum Found {
    Unknown,
    Known(PodIdentity),
}

impl CertificateServer {
    pub fn new(
        index: SharedIndex,
        reviewer: Arc<dyn TokenReviewer>,
        ca: Arc<Ca>,
        settings: PodCertSettings,
    ) -> Self {
        Self {
            index,
            reviewer,
            ca,
            settings,
            pod_wait: crate::stream::POD_WAIT,
        }
    }

    /// Whether `path` is this server's.
    pub fn serves(path: &str) -> bool {
        path.strip_prefix(CERTIFICATES_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Answers one request: authenticated as the stream is, the body read only then.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(pod) = crate::stream::parse_pod_path(CERTIFICATES_PATH, request.uri().path())
        else {
            return message(StatusCode::NOT_FOUND, "Not found");
        };
        if request.method() != Method::POST {
            return message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        }
        let Some(token) = bearer_token(request.headers()) else {
            return crate::stream::unauthorized();
        };
        let identity = match self
            .reviewer
            .review(token.expose(), Some(TOKEN_AUDIENCE))
            .await
        {
            Ok(Some(identity)) => identity,
            Ok(None) => return crate::stream::unauthorized(),
            Err(error) => {
                tracing::warn!(%error, %pod, "cannot authenticate a certificate request");
                return message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot authenticate the request now, retry",
                );
            }
        };
        if identity.pod().as_ref() != Some(&pod) {
            tracing::info!(%pod, user = %identity.username, "refused a certificate for another pod");
            return message(
                StatusCode::FORBIDDEN,
                "this token is not bound to the pod it asks for",
            );
        }
        // Read only once authenticated: nobody without a pod's token makes the controller
        // buffer, or parse.
        let der = match Limited::new(request.into_body(), MAX_CSR_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("a certificate signing request is at most {MAX_CSR_BYTES} bytes"),
                );
            }
            Err(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read",
                );
            }
        };
        let csr = match check_request(&der) {
            Ok(csr) => csr,
            Err(problem) => return message(StatusCode::BAD_REQUEST, &problem),
        };
        let known = match self.wait_for_address(&pod).await {
            Found::Unknown => {
                return message(
                    StatusCode::NOT_FOUND,
                    "this pod is not known to the controller (is it labelled as injected?)",
                );
            }
            Found::Known(known) => known,
        };
        // A token of a deleted pod whose name a new pod took (a StatefulSet's) names the old
        // uid: it gets nothing of the new pod's.
        if let (Some(bound), Some(current)) = (bound_uid(&identity), known.uid.as_deref())
            && bound != current
        {
            return message(
                StatusCode::FORBIDDEN,
                "this token is bound to another pod of that name",
            );
        }
        let sans = match pod_sans(&pod, &known, &self.settings) {
            Ok(sans) => sans,
            Err(SanRefusal::NoAddress) => {
                return message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &SanRefusal::NoAddress.to_string(),
                );
            }
            Err(refusal) => {
                tracing::warn!(%pod, %refusal, "refused a pod's certificate");
                return message(StatusCode::FORBIDDEN, &refusal.to_string());
            }
        };
        let now = SystemTime::now();
        let validity = validity(now, self.settings.lifetime);
        let chain = match self.ca.sign_pod_certificate(
            &csr,
            &format!("{}.{}", pod.name, pod.namespace),
            sans.clone(),
            &validity,
        ) {
            Ok(chain) => chain,
            Err(error) => {
                tracing::warn!(%pod, %error, "cannot sign a pod's certificate");
                return message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot sign the certificate",
                );
            }
        };
        let issued = IssuedCertificate {
            certificate_chain: chain,
            not_before: validity.not_before.unix_timestamp().max(0) as u64,
            not_after: validity.not_after.unix_timestamp().max(0) as u64,
        };
        tracing::info!(%pod, names = ?sans, not_after = issued.not_after, "issued a pod's serving certificate");
        let body = serde_json::to_vec(&issued).unwrap_or_default();
        let mut answer = response(StatusCode::OK, wire::ISSUED_CONTENT_TYPE, body);
        answer
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        answer
    }

    /// The pod as the index knows it, once it has an IP or `pod_wait` has passed: a sidecar
    /// may start before the controller's watch has seen its pod, or its IP.
    async fn wait_for_address(&self, pod: &ObjectRef) -> Found {
        let deadline = Instant::now() + self.pod_wait;
        let mut changes = self.index.lock().changes();
        loop {
            let found = self.index.lock().pod_identity(&pod.namespace, &pod.name);
            if let Some(identity) = &found
                && !identity.ips.is_empty()
            {
                return Found::Known(identity.clone());
            }
            let waited = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(waited, Ok(Ok(()))) {
                return match found {
                    Some(identity) => Found::Known(identity),
                    None => Found::Unknown,
                };
            }
        }
    }
}

/// The uid of the pod a token is bound to, when the TokenReview says.
fn bound_uid(identity: &Identity) -> Option<&str> {
    identity
        .extra
        .get(POD_UID_EXTRA)
        .and_then(|values| values.first())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn pod() -> ObjectRef {
        ObjectRef::new("shop", "iris-0")
    }

    fn identity(ips: &[&str], names: Option<&str>) -> PodIdentity {
        PodIdentity {
            uid: Some("u1".into()),
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            tls_dns_names: names.map(str::to_owned),
            host_network: false,
        }
    }

    fn settings(cluster_domain: &str) -> PodCertSettings {
        PodCertSettings {
            lifetime: Duration::from_secs(86_400),
            cluster_domain: cluster_domain.to_owned(),
            reserved_names: vec![
                "tollgate-controller.shop.svc".to_owned(),
                "localhost".to_owned(),
            ],
        }
    }

    fn names(sans: &[SanType]) -> Vec<String> {
        sans.iter()
            .map(|san| match san {
                SanType::DnsName(name) => name.as_str().to_owned(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn sans_are_localhost_the_pod_ips_and_its_namespace_s_service_names() {
        let sans = pod_sans(
            &pod(),
            &identity(
                &["10.1.2.3", "fd00::3"],
                Some("iris.shop.svc, iris-0.iris.shop.svc.cluster.local"),
            ),
            &settings("cluster.local"),
        )
        .unwrap();
        assert_eq!(
            names(&sans),
            [
                "localhost",
                "10.1.2.3",
                "fd00::3",
                "iris.shop.svc",
                "iris-0.iris.shop.svc.cluster.local"
            ]
        );
        let plain = pod_sans(
            &pod(),
            &identity(&["10.1.2.3"], None),
            &settings("cluster.local"),
        )
        .unwrap();
        assert_eq!(names(&plain), ["localhost", "10.1.2.3"]);
    }

    #[test]
    fn names_outside_the_pod_s_namespace_are_refused() {
        for outside in [
            "payments.bank.svc",
            "shop.svc",
            ".shop.svc",
            "iris.shop.svc.other.domain",
            "kubernetes.default.svc.cluster.local",
            "iris.example.com",
            "iris.shop",
        ] {
            let refusal = pod_sans(
                &pod(),
                &identity(&["10.1.2.3"], Some(&format!("iris.shop.svc,{outside}"))),
                &settings("cluster.local"),
            )
            .unwrap_err();
            assert!(
                matches!(&refusal, SanRefusal::Annotation(m) if m.contains("not a Service name of namespace shop") || m.contains("not a DNS name")),
                "{outside}: {refusal}"
            );
        }
        let bad = pod_sans(
            &pod(),
            &identity(&["10.1.2.3"], Some("*.shop.svc")),
            &settings("cluster.local"),
        )
        .unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("annotation tollgate.dev/tls-dns-names: ")
        );
        // Another cluster domain is the one the flag names.
        assert!(
            pod_sans(
                &pod(),
                &identity(&["10.1.2.3"], Some("iris.shop.svc.corp.internal")),
                &settings("corp.internal"),
            )
            .is_ok()
        );
    }

    #[test]
    fn neither_the_controller_s_names_nor_a_node_s_ip_go_to_a_pod() {
        let refusal = pod_sans(
            &pod(),
            &identity(&["10.1.2.3"], Some("tollgate-controller.shop.svc")),
            &settings("cluster.local"),
        )
        .unwrap_err();
        assert!(
            refusal.to_string().contains("the controller's own names"),
            "{refusal}"
        );
        let mut host = identity(&["192.168.0.9"], None);
        host.host_network = true;
        assert_eq!(
            pod_sans(&pod(), &host, &settings("cluster.local")),
            Err(SanRefusal::HostNetwork)
        );
    }

    #[test]
    fn a_pod_without_an_ip_gets_no_certificate_yet() {
        assert_eq!(
            pod_sans(
                &pod(),
                &identity(&[], Some("iris.shop.svc")),
                &settings("cluster.local")
            ),
            Err(SanRefusal::NoAddress)
        );
    }

    fn csr(key: &KeyPair, names: &[&str]) -> Vec<u8> {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn requests_must_be_signed_p256_requests() {
        let key = KeyPair::generate().unwrap();
        let good = csr(&key, &["localhost"]);
        assert!(check_request(&good).is_ok());

        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        assert!(check_request(&tampered).is_err());
        assert!(check_request(b"not a request").is_err());
        assert!(check_request(&[]).is_err());

        let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            check_request(&csr(&ed25519, &["localhost"])).unwrap_err(),
            "the key must be ECDSA P-256, signed with SHA-256"
        );
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(check_request(&csr(&p384, &["localhost"])).is_err());
    }

    #[test]
    fn what_a_request_asks_for_is_ignored() {
        let ca = Ca::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["bank.example.com".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        let request = check_request(&der).unwrap();
        let sans = pod_sans(
            &pod(),
            &identity(&["10.1.2.3"], None),
            &settings("cluster.local"),
        )
        .unwrap();
        let chain = ca
            .sign_pod_certificate(
                &request,
                "iris-0.shop",
                sans,
                &validity(SystemTime::now(), Duration::from_secs(3600)),
            )
            .unwrap();
        let leaf: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::pem_slice_iter(chain.as_bytes())
                .next()
                .unwrap()
                .unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let sans: Vec<String> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(n) => (*n).to_owned(),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, ["localhost", "10.1.2.3"]);
        let constraints = leaf.basic_constraints().unwrap().unwrap().value;
        assert!(!constraints.ca);
        let usage = leaf.key_usage().unwrap().unwrap().value;
        assert!(usage.digital_signature() && !usage.key_cert_sign());
        assert_eq!(leaf.subject().to_string(), "CN=iris-0.shop");
        assert!(chain.ends_with(ca.cert_pem()));
    }

    #[test]
    fn validity_starts_a_little_before_and_lasts_the_lifetime() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = validity(now, Duration::from_secs(86_400));
        assert_eq!(day.not_before.unix_timestamp(), 1_000_000 - 60);
        assert_eq!(day.not_after.unix_timestamp(), 1_000_000 + 86_400);
        let short = validity(now, Duration::from_secs(30));
        assert_eq!(short.not_before.unix_timestamp(), 1_000_000 - 3);
        assert_eq!(short.not_after.unix_timestamp(), 1_000_030);
    }

    #[test]
    fn only_certificate_paths_are_served() {
        assert!(CertificateServer::serves("/v1/certificates/shop/iris-0"));
        assert!(!CertificateServer::serves("/v1/certificatesx"));
        assert!(!CertificateServer::serves("/v1/snapshots/shop/iris-0"));
    }
}
