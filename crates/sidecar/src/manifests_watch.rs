//! A standalone sidecar follows its `--manifests`: every `--manifests-poll-interval` it checks
//! whether the files changed and, when they did, reads and compiles them again. A good result
//! is served from the next request on, tokens and connections kept; a bad one is logged, one
//! line per problem naming the file or resource, and the last good configuration kept, as the
//! API server refuses a bad `kubectl apply`. (At start, the same problems stop the sidecar.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tollgate_api::Snapshot;
use tollgate_api::manifests::fingerprint;
use tollgate_store::TokenStore;

use crate::gateway::Gateway;

/// The manifest files a standalone sidecar serves, and the fingerprint of what it read.
#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub paths: Vec<PathBuf>,
    /// [`fingerprint`] of the files, taken before the served snapshot was read from them: a
    /// change made while they were read is seen at the next check.
    pub fingerprint: u64,
    pub interval: Duration,
}

/// The snapshot `paths` describe, or every problem with them, one line each.
pub fn read(paths: &[PathBuf]) -> Result<Snapshot, Vec<String>> {
    let resources =
        tollgate_api::manifests::load(paths).map_err(|e| vec![format!("--manifests: {e}")])?;
    let compiled = tollgate_api::compile(&resources);
    if !compiled.errors.is_empty() {
        return Err(compiled
            .errors
            .iter()
            .map(|e| format!("--manifests: {e}"))
            .collect());
    }
    if compiled.snapshot.services.is_empty() {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(vec![format!(
            "--manifests: no OAuthService found in {}",
            paths.join(", ")
        )]);
    }
    Ok(compiled.snapshot)
}

/// Checks the files every `source.interval` until `stop`, and swaps in what they describe
/// when they changed and are good.
pub async fn follow<S: TokenStore>(
    mut source: ManifestSource,
    gateway: Arc<Gateway<S>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut version = gateway.snapshot().snapshot.version;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(source.interval) => {}
            _ = stop.changed() => return,
        }
        // File reads and password hashes of new secrets: off the threads serving requests.
        let paths = source.paths.clone();
        let seen = source.fingerprint;
        let checked = tokio::task::spawn_blocking(move || {
            let now = fingerprint(&paths);
            (now != seen).then(|| (now, read(&paths)))
        })
        .await;
        let (now, outcome) = match checked {
            Ok(Some(changed)) => changed,
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(%error, "reading the changed --manifests failed");
                continue;
            }
        };
        source.fingerprint = now;
        match outcome {
            Ok(mut snapshot) => {
                version += 1;
                snapshot.version = version;
                let services = snapshot.services.len();
                gateway.swap(snapshot);
                tracing::info!(
                    version,
                    services,
                    "--manifests changed: serving them from now on"
                );
            }
            Err(problems) => {
                for problem in problems {
                    tracing::error!(
                        %problem,
                        "--manifests changed but are not valid: still serving what they held before"
                    );
                }
            }
        }
    }
}
