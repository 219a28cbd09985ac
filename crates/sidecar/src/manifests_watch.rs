//! A standalone sidecar follows its `--manifests`: every `--manifests-poll-interval` it checks
//! whether the files changed and, when they did, reads and compiles them again. A good result
//! is served from the next request on, tokens and connections kept; a bad one is logged, one
//! line per problem naming the file or resource, and the last good configuration kept, as the
//! API server refuses a bad `kubectl apply`. (At start, the same problems stop the sidecar.)
//!
//! As Kong deletes the tokens of a deleted service or credential, the tokens of a service or
//! application that a change removed are deleted from the store: they are refused from the
//! new snapshot on anyway, and deleting them means that putting an object of the same name
//! back (the same id, in manifest files) does not bring them back to life.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tollgate_api::Snapshot;
use tollgate_api::manifests::fingerprint;
use tollgate_store::{ListFilter, TokenStore};
use uuid::Uuid;

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
                let removed = removed_owners(&gateway.snapshot().snapshot, &snapshot);
                gateway.swap(snapshot);
                tracing::info!(
                    version,
                    services,
                    "--manifests changed: serving them from now on"
                );
                delete_tokens_of(gateway.store(), &removed).await;
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

/// A service or an application that a change removed, whose tokens go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Service { namespace: String, id: Uuid },
    Application { namespace: String, id: Uuid },
}

/// What `before` had and `after` has not, by id: an edited object keeps its id, a removed or
/// renamed one does not.
pub fn removed_owners(before: &Snapshot, after: &Snapshot) -> Vec<Removed> {
    let services = before
        .services
        .iter()
        .filter(|old| !after.services.iter().any(|new| new.id == old.id))
        .map(|old| Removed::Service {
            namespace: old.namespace.clone(),
            id: old.id,
        });
    let applications = before
        .applications
        .iter()
        .filter(|old| after.application_by_id(old.id).is_none())
        .map(|old| Removed::Application {
            namespace: old.namespace.clone(),
            id: old.id,
        });
    services.chain(applications).collect()
}

/// Page size of the scan for a removed application's tokens: the admin API's largest.
const SCAN_PAGE: usize = 1000;

/// Deletes the tokens of what `removed` names. A failure is logged: they are refused anyway.
async fn delete_tokens_of<S: TokenStore>(store: &S, removed: &[Removed]) {
    for owner in removed {
        let deleted = match owner {
            Removed::Service { namespace, id } => {
                let filter = ListFilter {
                    service_id: Some(*id),
                    ..ListFilter::default()
                };
                store.delete_matching(namespace, &filter).await
            }
            // A token names its application by id, and by the client_id it had then, which
            // may have changed since: the namespace's tokens are scanned for the id.
            Removed::Application { namespace, id } => {
                delete_application_tokens(store, namespace, *id).await
            }
        };
        match deleted {
            Ok(deleted) => tracing::info!(
                ?owner,
                deleted,
                "deleted the tokens of a service or application removed from --manifests"
            ),
            Err(error) => tracing::warn!(
                ?owner,
                %error,
                "could not delete the tokens of a removed service or application; they are refused all the same"
            ),
        }
    }
}

async fn delete_application_tokens<S: TokenStore>(
    store: &S,
    namespace: &str,
    application: Uuid,
) -> Result<usize, tollgate_store::StoreError> {
    let mut owned = Vec::new();
    let mut offset: Option<String> = None;
    loop {
        let page = store
            .list(
                namespace,
                &ListFilter::default(),
                SCAN_PAGE,
                offset.as_deref(),
            )
            .await?;
        owned.extend(
            page.records
                .iter()
                .filter(|record| record.credential_id == application)
                .map(|record| record.id),
        );
        match page.next_offset {
            Some(next) => offset = Some(next),
            None => break,
        }
    }
    let mut deleted = 0;
    for id in owned {
        if store.delete(namespace, id).await? {
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const ARTICLE: &str = "apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthService
metadata: {name: svc}
spec:
  upstream: {port: 1}
  routes: [{pathPrefix: /event}]
  oauth2: {enablePasswordGrant: true, provisionKeySecretRef: {name: pk}}
---
apiVersion: v1
kind: Secret
metadata: {name: pk}
stringData: {provisionKey: k, clientSecret: s}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: Consumer
metadata: {name: c}
spec: {username: c}
---
apiVersion: oauth.tollgate.dev/v1alpha1
kind: OAuthApplication
metadata: {name: app}
spec: {consumerRef: {name: c}, clientId: cid, clientSecretRef: {name: pk}}
";

    fn snapshot(yaml: &str) -> Snapshot {
        let resources = tollgate_api::manifests::load_str(Path::new("t.yaml"), yaml).unwrap();
        let compiled = tollgate_api::compile(&resources);
        assert!(compiled.errors.is_empty(), "{:?}", compiled.errors);
        compiled.snapshot
    }

    #[test]
    fn only_what_a_change_removed_loses_its_tokens() {
        let before = snapshot(ARTICLE);
        assert!(removed_owners(&before, &before).is_empty());
        // Edited, not removed: same ids.
        let edited = snapshot(&ARTICLE.replace("port: 1", "port: 2"));
        assert!(removed_owners(&before, &edited).is_empty());

        let renamed = snapshot(
            &ARTICLE
                .replace("metadata: {name: svc}", "metadata: {name: svc2}")
                .replace("metadata: {name: app}", "metadata: {name: app2}"),
        );
        assert_eq!(
            removed_owners(&before, &renamed),
            [
                Removed::Service {
                    namespace: "default".into(),
                    id: before.services[0].id
                },
                Removed::Application {
                    namespace: "default".into(),
                    id: before.applications[0].id
                },
            ]
        );
        // A new client id is an edit: the same application.
        let new_client_id = snapshot(&ARTICLE.replace("clientId: cid", "clientId: cid2"));
        assert!(removed_owners(&before, &new_client_id).is_empty());
    }
}
