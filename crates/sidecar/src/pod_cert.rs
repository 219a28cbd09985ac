//! `--tls-from-controller`: the sidecar's serving certificate, signed by the controller's CA,
//! as a Linkerd proxy gets its identity.
//!
//! The sidecar makes an ECDSA P-256 key that never leaves its memory, and sends a certificate
//! signing request for it to the controller ([`tollgate_api::certificates`]), authenticated
//! by the pod's projected service-account token, as the snapshot stream is. The controller
//! chooses the names. The certificate is swapped into the listener's resolver, and renewed
//! (with a new key) at two thirds of its life; a failed request is retried with backoff while
//! the current certificate is served.
//!
//! Until the first certificate arrives the proxy completes no handshake and the sidecar is
//! not ready. After `--tls-from-controller-timeout` without one it serves a self-signed
//! certificate, logs an error, becomes ready, and keeps asking.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_api::certificates::{CSR_CONTENT_TYPE, ISSUED_CONTENT_TYPE, IssuedCertificate};

use crate::controller_client::{
    Backoff, ControllerSource, StreamError, connect, read_token, refusal,
};
use crate::metrics::Metrics;
use crate::tls::{ReloadingCert, provider, self_signed};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// The answer is a chain of two certificates in JSON.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Never ask again sooner than this, whatever a certificate's dates say.
const MIN_RENEWAL_DELAY: Duration = Duration::from_secs(1);

/// Why one certificate request failed.
#[derive(Debug, thiserror::Error)]
enum CertError {
    #[error(transparent)]
    Controller(#[from] StreamError),
    #[error("cannot make a key: {0}")]
    Key(String),
    #[error("the controller's answer is not a certificate for this key: {0}")]
    Answer(String),
    #[error("no answer in {REQUEST_TIMEOUT:?}")]
    Timeout,
}

/// How long after `now` to ask for the next certificate: at two thirds of the current one's
/// life (Unix seconds), at once when that is past, never sooner than [`MIN_RENEWAL_DELAY`].
pub fn renewal_delay(not_before: u64, not_after: u64, now: u64) -> Duration {
    let life = not_after.saturating_sub(not_before);
    let renew_at = not_before.saturating_add(life * 2 / 3);
    Duration::from_secs(renew_at.saturating_sub(now)).max(MIN_RENEWAL_DELAY)
}

/// Keeps the listener's certificate one the controller's CA signed, until `shutdown`.
/// `metrics` is ready (as far as TLS goes) once a certificate is served, whichever.
pub async fn run(
    source: ControllerSource,
    resolver: Arc<ReloadingCert>,
    metrics: Arc<Metrics>,
    first_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let give_up_waiting = Instant::now() + first_timeout;
    let mut backoff = Backoff::default();
    loop {
        let delay = match obtain(&source).await {
            Ok((certified, issued)) => {
                resolver.swap(certified);
                metrics.set_certificate(Some(issued.not_after));
                backoff = Backoff::default();
                let delay = renewal_delay(issued.not_before, issued.not_after, unix_now());
                tracing::info!(
                    not_after = issued.not_after,
                    renew_in = ?delay,
                    "serving a certificate of the controller's CA"
                );
                delay
            }
            Err(error) => {
                let delay = backoff.next_delay();
                if resolver.is_serving() {
                    tracing::warn!(%error, retry_in = ?delay, "cannot renew the serving certificate; the current one is served meanwhile");
                    delay
                } else if Instant::now() >= give_up_waiting {
                    fall_back(&resolver, &metrics, &error);
                    delay
                } else {
                    tracing::warn!(%error, retry_in = ?delay, "no serving certificate from the controller yet; not ready");
                    // Wake up for the fallback when it is due.
                    delay.min(give_up_waiting.saturating_duration_since(Instant::now()))
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// After `--tls-from-controller-timeout` with nothing: serve something, and say so loudly.
fn fall_back(resolver: &ReloadingCert, metrics: &Metrics, error: &CertError) {
    match self_signed() {
        Ok(certified) => {
            resolver.swap(certified);
            metrics.set_certificate(None);
            tracing::error!(
                %error,
                "NO CERTIFICATE FROM THE CONTROLLER within --tls-from-controller-timeout: serving a SELF-SIGNED certificate that clients will not trust, and still asking"
            );
        }
        Err(problem) => tracing::error!(%problem, "cannot make a self-signed certificate either"),
    }
}

/// One request: a new key, its CSR, the controller's certificate for it.
async fn obtain(source: &ControllerSource) -> Result<(CertifiedKey, IssuedCertificate), CertError> {
    let key = KeyPair::generate().map_err(|e| CertError::Key(e.to_string()))?;
    let csr = signing_request(&key, &source.pod, &source.namespace)?;
    let issued = tokio::time::timeout(REQUEST_TIMEOUT, ask(source, csr))
        .await
        .map_err(|_| CertError::Timeout)??;
    let certified = certified_key(&issued, &key).map_err(CertError::Answer)?;
    Ok((certified, issued))
}

/// A CSR for `key` naming the pod (the controller ignores any name asked for).
fn signing_request(key: &KeyPair, pod: &str, namespace: &str) -> Result<Bytes, CertError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("{pod}.{namespace}"));
    params.distinguished_name = name;
    let request = params
        .serialize_request(key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    Ok(Bytes::copy_from_slice(request.der()))
}

async fn ask(source: &ControllerSource, csr: Bytes) -> Result<IssuedCertificate, CertError> {
    let token = read_token(&source.token_file)?;
    let (mut sender, _driver) = connect(source).await?;
    let request = Request::post(source.certificates_uri.clone())
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::CONTENT_TYPE, CSR_CONTENT_TYPE)
        .header(header::ACCEPT, ISSUED_CONTENT_TYPE)
        .body(Full::new(csr))
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    drop(token);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    let status = response.status();
    let body = response.into_body();
    if status != StatusCode::OK {
        return Err(refusal(status, body).await.into());
    }
    let bytes = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| CertError::Answer(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| CertError::Answer(e.to_string()))
}

/// The answer's chain with `key`, checked to belong together.
fn certified_key(issued: &IssuedCertificate, key: &KeyPair) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.certificate_chain.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not PEM: {e:?}"))?;
    if chain.is_empty() {
        return Err("no certificate".to_owned());
    }
    let private_key =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| format!("key: {e}"))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| format!("key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|_| "it certifies another key".to_owned())?;
    Ok(certified)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_two_thirds_of_the_life() {
        // A day from 0: renewed at 16 h.
        assert_eq!(renewal_delay(0, 86_400, 0), Duration::from_secs(57_600));
        assert_eq!(
            renewal_delay(1_000, 1_000 + 86_400, 1_000 + 3_600),
            Duration::from_secs(57_600 - 3_600)
        );
        // Backdated by a minute, as the controller does: still two thirds of the whole.
        assert_eq!(
            renewal_delay(940, 1_000 + 86_400, 1_000),
            Duration::from_secs((86_460 * 2 / 3) - 60)
        );
    }

    #[test]
    fn a_late_or_strange_certificate_is_renewed_soon_but_not_in_a_loop() {
        assert_eq!(renewal_delay(0, 90, 80), MIN_RENEWAL_DELAY);
        assert_eq!(renewal_delay(0, 90, 1_000), MIN_RENEWAL_DELAY);
        assert_eq!(renewal_delay(100, 50, 0), Duration::from_secs(100));
        assert_eq!(renewal_delay(100, 50, 200), MIN_RENEWAL_DELAY);
    }

    #[test]
    fn the_request_names_the_pod_and_only_the_answer_for_this_key_is_taken() {
        let key = KeyPair::generate().unwrap();
        let csr = signing_request(&key, "iris-0", "shop").unwrap();
        assert!(!csr.is_empty());

        let ca_key = KeyPair::generate().unwrap();
        let ca = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let issuer = rcgen::Issuer::new(CertificateParams::default(), &ca_key);
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let issued = IssuedCertificate {
            certificate_chain: format!("{}{}", leaf.pem(), ca.pem()),
            not_before: 0,
            not_after: 1,
        };
        let certified = certified_key(&issued, &key).unwrap();
        assert_eq!(certified.cert.len(), 2);
        let other = KeyPair::generate().unwrap();
        assert_eq!(
            certified_key(&issued, &other).err().unwrap(),
            "it certifies another key"
        );
        let garbage = IssuedCertificate {
            certificate_chain: "nothing".into(),
            ..issued
        };
        assert!(certified_key(&garbage, &key).is_err());
    }
}
