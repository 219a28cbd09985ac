//! TLS for the proxy and admin listeners: rustls with the ring provider, TLS 1.2 and 1.3,
//! ALPN h2 and http/1.1, session resumption, and certificate files re-read when they change
//! (cert-manager rotates them in place). A certificate from the controller's CA (the
//! sidecar's `pod_cert`) is swapped in the same way. The controller's listeners take the same
//! provider and the same files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often certificate files are checked for a change. Rotation is rare and a minute-old
/// certificate is still valid, so a coarse poll is enough and costs nothing.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from.
#[derive(Debug)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
        loaded: Arc<CertifiedKey>,
    },
    SelfSigned,
    /// `--tls-from-controller`: no certificate until the controller's CA signs this process's
    /// key; handshakes fail until then.
    FromController,
}

/// Resolves to the current certificate, which a background task may replace; none (every
/// handshake refused) until a certificate from the controller arrives.
#[derive(Debug)]
pub struct ReloadingCert(ArcSwapOption<CertifiedKey>);

// === impl TlsSource ===

impl TlsSource {
    /// Reads and checks both files now, so a bad file is a start-up error naming it.
    pub fn files(cert: &Path, key: &Path) -> Result<Self, String> {
        let loaded = load_certified_key(cert, key)?;
        Ok(Self::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            loaded: Arc::new(loaded),
        })
    }

    /// The rustls configuration, and the resolver whose certificate [`watch`] keeps current.
    pub fn server_config(&self) -> Result<(Arc<ServerConfig>, Arc<ReloadingCert>), String> {
        let certified = match self {
            Self::Files { loaded, .. } => Some(loaded.clone()),
            Self::SelfSigned => {
                tracing::warn!(
                    "no --tls-cert/--tls-key given: serving a self-signed certificate for localhost; clients must be told to trust it"
                );
                Some(Arc::new(self_signed()?))
            }
            Self::FromController => None,
        };
        let resolver = Arc::new(ReloadingCert(ArcSwapOption::new(certified)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless resumption: reconnecting clients skip the full handshake.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS: {e}"))?;
        Ok((Arc::new(config), resolver))
    }

    /// Re-reads the certificate files when their modification time changes. A bad new pair is
    /// logged and the current certificate kept: a half-written rotation must not take the
    /// listener down.
    pub async fn watch(&self, resolver: Arc<ReloadingCert>) {
        let Self::Files { cert, key, .. } = self else {
            return;
        };
        let mut seen = modified(cert, key);
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let now = modified(cert, key);
            if now == seen {
                continue;
            }
            match load_certified_key(cert, key) {
                Ok(certified) => {
                    resolver.swap(certified);
                    seen = now;
                    tracing::info!(cert = %cert.display(), "reloaded the TLS certificate");
                }
                Err(error) => tracing::warn!(%error, "kept the current TLS certificate"),
            }
        }
    }
}

// === impl ReloadingCert ===

impl ReloadingCert {
    /// Serves `certified` from the next handshake on.
    pub fn swap(&self, certified: CertifiedKey) {
        self.0.store(Some(Arc::new(certified)));
    }

    /// Whether any certificate is served yet.
    pub fn is_serving(&self) -> bool {
        self.0.load().is_some()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(cert), mtime(key))
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {}", cert.display(), pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate found",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {}", key.display(), pem_error(&e)))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        format!(
            "--tls-key {} does not belong to the certificate in --tls-cert {}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

fn pem_error(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind found".into()
        }
        other => format!("not valid PEM ({other:?})"),
    }
}

/// A certificate for localhost signed by its own key: standalone mode's default, and an
/// injected sidecar's last resort when the controller's CA does not answer in time.
pub fn self_signed() -> Result<CertifiedKey, String> {
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|e| format!("self-signed certificate: {e}"))?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    Ok(CertifiedKey::new(
        vec![generated.cert.der().clone()],
        signing_key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_flag_and_path() {
        let err = TlsSource::files(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .err()
        .unwrap();
        assert!(err.starts_with("--tls-cert /nonexistent/c.pem:"), "{err}");
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let err = TlsSource::files(&cert, &cert).err().unwrap();
        assert!(err.contains("--tls-cert"), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let err = TlsSource::files(&cert, &key).err().unwrap();
        assert!(err.contains("does not belong"), "{err}");
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        assert!(TlsSource::files(&cert, &key).is_ok());
    }

    #[test]
    fn a_sidecar_waiting_for_its_certificate_serves_none_until_swapped() {
        let (_, resolver) = TlsSource::FromController.server_config().unwrap();
        assert!(!resolver.is_serving());
        resolver.swap(self_signed().unwrap());
        assert!(resolver.is_serving());
    }

    #[test]
    fn self_signed_config_offers_h2_and_http11() {
        let (config, _) = TlsSource::SelfSigned.server_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
