//! What a `rediss://` connection trusts and shows: `--redis-ca`, and `--redis-client-cert` with
//! `--redis-client-key` for servers that require client certificates (`tls-auth-clients yes`).
//! Files are read and checked once, at startup, so that a bad one is named before anything
//! binds; the key never shows in `Debug`.

use std::fmt;
use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS material of the Redis connections, as PEM. Empty by default: the system's roots,
/// and no client certificate.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// Trusted instead of the system's roots: the CA bundle that signed Redis's certificate.
    pub(crate) ca: Option<Vec<u8>>,
    /// A certificate chain and its private key, offered to Redis.
    pub(crate) client: Option<ClientIdentity>,
}

/// A client certificate chain and its key, as PEM.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

// === impl RedisTls ===

impl RedisTls {
    /// Trusts only `pem`, a bundle of one or more CA certificates.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<Self, String> {
        certificates(pem)?;
        self.ca = Some(pem.to_vec());
        Ok(self)
    }

    /// Offers `cert_pem` (a chain, leaf first) with its private key `key_pem`.
    pub fn with_client_identity(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        certificates(cert_pem)?;
        private_key(key_pem)?;
        self.client = Some(ClientIdentity {
            cert: cert_pem.to_vec(),
            key: key_pem.to_vec(),
        });
        Ok(self)
    }

    /// Reads the files of `--redis-ca`, `--redis-client-cert` and `--redis-client-key`; one
    /// message per problem, each naming its flag and file.
    pub fn load(
        ca: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        // Each file read and checked in the order of the flags; one message per problem.
        let mut load = |flag: &str, path: Option<&Path>, check: fn(&[u8]) -> Result<(), String>| {
            let path = path?;
            let checked = std::fs::read(path)
                .map_err(|e| format!("cannot read it: {e}"))
                .and_then(|bytes| check(&bytes).map(|()| bytes));
            checked
                .map_err(|e| errors.push(format!("{flag} {}: {e}", path.display())))
                .ok()
        };
        let ca = load("--redis-ca", ca, |pem| certificates(pem).map(drop));
        let cert = load("--redis-client-cert", client_cert, |pem| {
            certificates(pem).map(drop)
        });
        let key = load("--redis-client-key", client_key, private_key);
        if client_cert.is_some() != client_key.is_some() {
            errors.push("--redis-client-cert and --redis-client-key: give both or neither".into());
        }
        let tls = RedisTls {
            ca,
            client: cert
                .zip(key)
                .map(|(cert, key)| ClientIdentity { cert, key }),
        };
        if errors.is_empty() {
            Ok(tls)
        } else {
            Err(errors)
        }
    }

    /// Whether anything was configured: meaningful only with a TLS URL.
    pub fn is_configured(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }

    /// The CA bundle of `--redis-ca`, as PEM: public, so the controller may publish it.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_deref()
    }

    /// Whether a client certificate is offered.
    pub fn has_client_certificate(&self) -> bool {
        self.client.is_some()
    }

    /// As the redis crate takes it; `None` when nothing is configured (the system's roots).
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if !self.is_configured() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|id| redis::ClientTlsConfig {
                client_cert: id.cert.clone(),
                client_key: id.key.clone(),
            }),
            root_cert: self.ca.clone(),
        })
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

fn private_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|_| "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())
}

/// The certificates of a PEM bundle; an error when it holds none, or a broken one.
fn certificates(pem: &[u8]) -> Result<usize, String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("holds a malformed PEM certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_and_key() -> (String, String) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    #[test]
    fn every_bad_file_is_named_with_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert_and_key();
        let good_cert = dir.path().join("cert.pem");
        let good_key = dir.path().join("key.pem");
        let garbage = dir.path().join("garbage.pem");
        let missing = dir.path().join("missing.pem");
        std::fs::write(&good_cert, &cert).unwrap();
        std::fs::write(&good_key, &key).unwrap();
        std::fs::write(&garbage, "not a certificate").unwrap();

        let tls = RedisTls::load(Some(&good_cert), Some(&good_cert), Some(&good_key)).unwrap();
        assert!(tls.ca.is_some() && tls.client.is_some());

        let errors = RedisTls::load(Some(&garbage), Some(&missing), Some(&good_cert)).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[2].starts_with("--redis-client-key"), "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("--redis-ca {}: holds no PEM", garbage.display())),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with(&format!(
                "--redis-client-cert {}: cannot read",
                missing.display()
            )),
            "{errors:?}"
        );

        let errors = RedisTls::load(None, Some(&good_cert), Some(&good_cert)).unwrap_err();
        assert_eq!(
            errors,
            [format!(
                "--redis-client-key {}: holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                good_cert.display()
            )]
        );
        let errors = RedisTls::load(None, None, Some(&good_key)).unwrap_err();
        assert!(errors[0].contains("both or neither"), "{errors:?}");
    }

    #[test]
    fn the_key_never_shows() {
        let (cert, key) = cert_and_key();
        let tls = RedisTls::default()
            .with_client_identity(cert.as_bytes(), key.as_bytes())
            .unwrap();
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert_eq!(shown, "RedisTls { ca: false, client_certificate: true }");
    }
}
