//! The file source: the index fed from manifest files instead of the API server, for
//! end-to-end tests and local development (`tollgate controller --manifests PATH`).
//!
//! The files hold what a user would `kubectl apply`: OAuthServices, Consumers,
//! OAuthApplications and Secrets, read by the loader standalone mode uses, and Pods, which
//! stand for the injected pods of a cluster (every Pod in the files counts as injected). The
//! files are re-read when their content changes; a file that no longer loads is logged and the
//! last good content kept, as a bad `kubectl apply` would be refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_yaml::Value;
use tokio::sync::watch;
use tollgate_api::manifests::{self, DEFAULT_NAMESPACE, Resources};

use crate::index::{Index, SharedIndex};
use crate::metrics::Metrics;

/// A hash of the files' names and contents, to notice any change: the one the sidecar's
/// `--manifests` poller takes, over the same files.
pub use tollgate_api::manifests::fingerprint;

/// How often the files are checked. Reading a few small files a second costs nothing, and a
/// test or a person editing a file sees the change at once.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the files hold that the index uses. Not `Debug`: it holds Secrets.
pub struct Manifests {
    pub resources: Resources,
    pub pods: Vec<Pod>,
}

/// Reads every manifest under `paths`. One line of error naming the file.
pub fn load(paths: &[PathBuf]) -> Result<Manifests, String> {
    let resources = manifests::load(paths).map_err(|e| e.to_string())?;
    let mut pods = Vec::new();
    for file in manifests::manifest_files(paths).map_err(|e| e.to_string())? {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        pods.extend(pods_in(&file, &text)?);
    }
    Ok(Manifests { resources, pods })
}

/// Puts everything in `manifests` into the index, in place of what it held.
pub fn feed(index: &mut Index, manifests: Manifests) {
    index.replace_all(manifests.resources, &manifests.pods);
}

/// Re-reads the files whenever they change, until `shutdown`. `seen` is the fingerprint of
/// what the index holds.
pub async fn watch(
    paths: Vec<PathBuf>,
    index: SharedIndex,
    metrics: Arc<Metrics>,
    mut seen: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let scan_paths = paths.clone();
        let Ok((now, loaded)) = tokio::task::spawn_blocking(move || {
            let now = fingerprint(&scan_paths);
            (now, (now != seen).then(|| load(&scan_paths)))
        })
        .await
        else {
            continue;
        };
        match loaded {
            None => {}
            Some(Ok(manifests)) => {
                feed(&mut index.lock(), manifests);
                tracing::info!("manifests changed: index updated");
                seen = now;
            }
            Some(Err(error)) => {
                metrics.reconcile_error("ManifestLoad");
                tracing::warn!(%error, "manifests changed but do not load: keeping the last good ones");
                seen = now;
            }
        }
    }
}

/// The Pods of one file's text (documents and `List` items).
fn pods_in(path: &Path, text: &str) -> Result<Vec<Pod>, String> {
    let mut pods = Vec::new();
    for (number, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let fail = |e: String| format!("{}: document {}: {e}", path.display(), number + 1);
        let value = Value::deserialize(document).map_err(|e| fail(e.to_string()))?;
        let items = if value.get("kind").and_then(Value::as_str) == Some("List") {
            value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
        } else {
            vec![value]
        };
        for item in items {
            let is_pod = item.get("apiVersion").and_then(Value::as_str) == Some("v1")
                && item.get("kind").and_then(Value::as_str) == Some("Pod");
            if !is_pod {
                continue;
            }
            let mut pod: Pod = serde_yaml::from_value(item)
                .map_err(|e| fail(format!("Pod: {}", one_line(&e.to_string()))))?;
            if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
                return Err(fail("Pod: metadata.name: missing field".to_owned()));
            }
            if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
                pod.metadata.namespace = Some(DEFAULT_NAMESPACE.to_owned());
            }
            pods.push(pod);
        }
    }
    Ok(pods)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: iris-0\n  labels: {app: iris}\nspec:\n  containers: []\n";

    #[test]
    fn pods_are_read_from_documents_and_lists_with_the_default_namespace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: web, namespace: other}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join(".hidden")).unwrap();
        std::fs::write(dir.path().join(".hidden/c.yaml"), POD).unwrap();
        let manifests = load(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = manifests
            .pods
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap(),
                    p.metadata.name.as_deref().unwrap()
                )
            })
            .collect();
        assert_eq!(names, ["default/iris-0", "other/web"]);
    }

    #[test]
    fn a_bad_pod_names_its_file_and_document() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(
            &file,
            format!("{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{}}\n"),
        )
        .unwrap();
        let error = load(std::slice::from_ref(&file)).err().unwrap();
        assert_eq!(
            error,
            format!(
                "{}: document 2: Pod: metadata.name: missing field",
                file.display()
            )
        );
    }

    #[test]
    fn the_fingerprint_follows_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, POD).unwrap();
        let paths = [dir.path().to_owned()];
        let first = fingerprint(&paths);
        assert_eq!(first, fingerprint(&paths));
        std::fs::write(&file, POD.replace("iris-0", "iris-1")).unwrap();
        assert_ne!(first, fingerprint(&paths));
    }
}
