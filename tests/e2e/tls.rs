//! Certificate rotation, as cert-manager or a mounted Secret does it: the files change under
//! a running sidecar, which serves the new pair without a restart and keeps the current one
//! when the new files are broken (crates/sidecar/src/tls.rs).

use std::path::Path;
use std::time::Duration;

use crate::harness::{Certs, SidecarBuilder, article_manifests, eventually};

/// The sidecar looks at the files every 10 s; two looks are enough.
const ROTATION: Duration = Duration::from_secs(30);

/// Replaces `to` with `from` in one rename, as Kubernetes's atomic volume writer does, so the
/// sidecar never reads a half-written file.
fn replace(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// Whether `client`, which trusts exactly one certificate, gets an HTTP answer over TLS.
async fn handshakes(client: &reqwest::Client, url: &str) -> bool {
    client.get(url).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let sidecar = SidecarBuilder::new(article_manifests(1, "")).start().await;
    let url = sidecar.url("/healthz");
    let (cert, key) = sidecar.tls_files();
    let (cert, key) = (cert.to_owned(), key.to_owned());
    let old = sidecar.new_client();
    assert!(handshakes(&old, &url).await);

    // A broken pair: logged, and the current certificate kept.
    std::fs::write(cert.with_extension("broken"), "not a certificate").unwrap();
    replace(&cert.with_extension("broken"), &cert);
    eventually(ROTATION, "the broken certificate is noticed", || async {
        sidecar.logs().contains("kept the current TLS certificate")
    })
    .await;
    assert!(handshakes(&sidecar.new_client(), &url).await);

    // A new valid pair: served to new connections, and the old certificate no longer is.
    let dir = tempfile::tempdir().unwrap();
    let rotated = Certs::new(dir.path());
    replace(&rotated.key, &key);
    replace(&rotated.cert, &cert);
    let new = rotated.client();
    eventually(ROTATION, "the rotated certificate is served", || async {
        handshakes(&new, &url).await
    })
    .await;
    assert!(!handshakes(&sidecar.new_client(), &url).await);
    assert!(sidecar.logs().contains("reloaded the TLS certificate"));
}
