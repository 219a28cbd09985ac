//! The controller's own certificate authority, and the serving certificate it signs for the
//! snapshot stream and the admin API.
//!
//! Sidecars trust the CA through `--controller-ca`; the CA lives as long as its Secret (or,
//! without one, as the process), while the serving certificate is made anew at every start.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tollgate_api::SecretString;

/// The CA certificate's common name.
const CA_COMMON_NAME: &str = "tollgate controller CA";

/// A CA that can sign serving certificates. Not `Debug`-printable beyond its certificate.
pub struct Ca {
    cert_pem: String,
    key_pem: SecretString,
    issuer: Issuer<'static, KeyPair>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the CA key or certificate is not valid PEM")]
    Pem,
    #[error("the system's random generator failed")]
    Random,
}

// === impl Ca ===

impl Ca {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = distinguished_name();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: SecretString::new(key.serialize_pem()),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA read back from its PEM files (a Secret written by [`Ca::generate`], or one made by
    /// another tool).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|_| CaError::Pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|_| CaError::Pem)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: SecretString::new(key_pem),
            issuer,
        })
    }

    /// The CA certificate, which sidecars are given as `--controller-ca`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, to store the CA in a Secret.
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }

    /// A TLS server configuration with a fresh certificate for `names` (DNS names or IP
    /// addresses), signed by this CA, offering h2 and http/1.1.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<ServerConfig>, CaError> {
        self.server_config_asking(names, None)
    }

    /// [`Ca::server_config`], asking clients for certificates as `clients` decides: the
    /// aggregated API's listener asks the API server's front proxy for its own.
    pub fn server_config_asking(
        &self,
        names: &[String],
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "tollgate controller");
        params.distinguished_name = name;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|_| CaError::Pem)?;
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca_der];
        let private_key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|_| CaError::Pem)?;
        let builder = ServerConfig::builder_with_provider(tollgate_serve::tls::provider())
            .with_safe_default_protocol_versions()?;
        let builder = match clients {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, private_key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl Ca {
    /// A serving certificate for the key of `request`, with `sans` and `validity`, and
    /// nothing else the request asked for: its names, key usages and CA bit are ignored; the
    /// request only proves that its sender holds the key. The chain is the certificate, then
    /// this CA's.
    pub fn sign_pod_certificate(
        &self,
        request: &CertificateSigningRequestParams,
        common_name: &str,
        sans: Vec<SanType>,
        validity: &Validity,
    ) -> Result<String, CaError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let to_sign = CertificateSigningRequestParams {
            params,
            public_key: request.public_key.clone(),
        };
        let cert = to_sign.signed_by(&self.issuer)?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

/// When a certificate is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
}

/// A positive 128-bit serial number from the OS's generator (RFC 5280: unique per CA, at most
/// 20 bytes).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn distinguished_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, "tollgate");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_read_back_signs_certificates_its_pem_verifies() {
        let ca = Ca::generate().unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem().expose()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        again
            .server_config(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        assert!(Ca::from_pem("garbage", "garbage").is_err());
    }
}
