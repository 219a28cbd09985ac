//! Request-header authentication, as every aggregated API server does it: the API server
//! proxies a user's request with its front-proxy client certificate and names the user in
//! `X-Remote-User`/`X-Remote-Group`/`X-Remote-Extra-*`. Those headers are believed only on a
//! connection whose client certificate chains to the request-header CA of
//! `kube-system/extension-apiserver-authentication` and whose CN is one of its allowed names
//! (any, when the list is empty). From anyone else they are never read.
//!
//! Pure: the ConfigMap's data and a request's certificates and headers in, an identity out.
//! Reading the ConfigMap is `kube::request_header_config`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use http::{HeaderMap, HeaderName};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::auth::Identity;

/// Where the API server publishes its front proxy's settings for aggregated API servers.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
pub const CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";

/// The request-header settings of one reading of the ConfigMap.
pub struct RequestHeaderConfig {
    verifier: Arc<dyn ClientCertVerifier>,
    allowed_names: Vec<String>,
    username_headers: Vec<HeaderName>,
    group_headers: Vec<HeaderName>,
    /// Lower case.
    extra_prefixes: Vec<String>,
}

/// The current settings, replaced whenever the ConfigMap is read again; `None` while there
/// are none (no front proxy configured, or not read yet): then no header is believed.
pub type SharedRequestHeaderConfig = Arc<RwLock<Option<Arc<RequestHeaderConfig>>>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{key}: {problem}")]
    Field { key: &'static str, problem: String },
}

/// Why a client certificate does not make its request's headers an identity. Shown to the
/// client: it names nothing it did not send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the client certificate is not signed by the request-header CA")]
    UntrustedCertificate,
    #[error("the client certificate's common name {0:?} is not an allowed request-header name")]
    NameNotAllowed(String),
    #[error("the proxied request names no user")]
    NoUser,
}

// === impl RequestHeaderConfig ===

impl RequestHeaderConfig {
    /// The settings of the ConfigMap's `data`; `None` when it configures no request-header
    /// CA (an API server without front-proxy flags).
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Option<Self>, ConfigError> {
        let Some(pem) = data
            .get("requestheader-client-ca-file")
            .filter(|p| !p.trim().is_empty())
        else {
            return Ok(None);
        };
        let field = |key: &'static str, problem: String| ConfigError::Field { key, problem };
        let mut roots = RootCertStore::empty();
        for cert in
            <CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(pem.as_bytes())
        {
            let cert = cert.map_err(|e| field("requestheader-client-ca-file", e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| field("requestheader-client-ca-file", e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(field(
                "requestheader-client-ca-file",
                "no certificate in it".into(),
            ));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            tollgate_serve::tls::provider(),
        )
        .build()
        .map_err(|e| field("requestheader-client-ca-file", e.to_string()))?;
        let list = |key: &'static str| -> Result<Vec<String>, ConfigError> {
            match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => Ok(Vec::new()),
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| field(key, format!("not a JSON list of strings: {e}"))),
            }
        };
        let headers = |key: &'static str| -> Result<Vec<HeaderName>, ConfigError> {
            list(key)?
                .iter()
                .map(|h| {
                    HeaderName::try_from(h.as_str()).map_err(|e| field(key, format!("{h:?}: {e}")))
                })
                .collect()
        };
        Ok(Some(Self {
            verifier,
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: headers("requestheader-username-headers")?,
            group_headers: headers("requestheader-group-headers")?,
            extra_prefixes: list("requestheader-extra-headers-prefix")?
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        }))
    }

    /// The identity a request proxied by the API server carries. `Ok(None)` without a client
    /// certificate: the headers are not read, and the caller may try a bearer token.
    pub fn authenticate(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
        headers: &HeaderMap,
        now: UnixTime,
    ) -> Result<Option<Identity>, Refusal> {
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return Ok(None);
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|_| Refusal::UntrustedCertificate)?;
        let name = common_name(leaf).unwrap_or_default();
        if !self.allowed_names.is_empty() && !self.allowed_names.contains(&name) {
            return Err(Refusal::NameNotAllowed(name));
        }
        let values = |name: &HeaderName| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let username = self
            .username_headers
            .iter()
            .flat_map(values)
            .find(|u| !u.is_empty())
            .ok_or(Refusal::NoUser)?;
        let groups = self.group_headers.iter().flat_map(values).collect();
        let mut extra: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in headers {
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|p| name.as_str().strip_prefix(p.as_str()))
                .filter(|k| !k.is_empty())
            else {
                continue;
            };
            if let Ok(value) = value.to_str() {
                extra
                    .entry(unescape_extra_key(key))
                    .or_default()
                    .push(value.to_owned());
            }
        }
        Ok(Some(Identity {
            username,
            uid: None,
            groups,
            extra: extra.into_iter().collect(),
        }))
    }
}

/// Extra keys travel percent-encoded in header names (`X-Remote-Extra-Scopes`,
/// `…-Authentication.kubernetes.io%2fpod-Name`), and lower-cased as Kubernetes reads them.
fn unescape_extra_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = key
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// The subject CN of a certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The TLS listener's side: asks every client for a certificate, requires none, and accepts
/// any chain whose leaf key signs the handshake. Whether the chain is worth anything is
/// decided per request by [`RequestHeaderConfig::authenticate`], against the settings of the
/// moment, so a new request-header CA needs no new listener.
#[derive(Debug)]
pub struct OptionalClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl OptionalClientCertificate {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            algorithms: tollgate_serve::tls::provider().signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for OptionalClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests;
