//! `--snapshot-cache`: the last snapshot received, kept on disk so that a sidecar that starts
//! (or restarts) while the controller is unreachable serves it rather than nothing.

use std::path::Path;

use tollgate_api::Snapshot;
use tollgate_serve::runtime;

/// The last snapshot kept, or `None` (logged) when there is none or it cannot be read.
pub(super) fn read_cache(path: &Path) -> Option<Snapshot> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(cache = %path.display(), %error, "cannot read the snapshot cache");
            return None;
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|error| {
            tracing::warn!(cache = %path.display(), %error, "the snapshot cache is not a snapshot");
        })
        .ok()
}

/// Keeps `snapshot` in `path`, through a temporary file and a rename: a crash mid-write
/// leaves the previous snapshot, never half of one. The file is the sidecar's alone (mode
/// 0600): it holds the hashes of its namespace's client secrets and provision keys.
pub(super) async fn write_cache(path: &Path, snapshot: &Snapshot) {
    let Ok(bytes) = serde_json::to_vec(snapshot) else {
        return;
    };
    let path = path.to_owned();
    let written =
        tokio::task::spawn_blocking(move || runtime::write_atomically_private(&path, &bytes)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot write the snapshot cache"),
        Err(error) => tracing::warn!(%error, "cannot write the snapshot cache"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_round_trips_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        assert!(read_cache(&path).is_none());
        let snapshot = Snapshot {
            version: 42,
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(write_cache(&path, &snapshot));
        assert_eq!(read_cache(&path), Some(snapshot));
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_cache(&path).is_none());
    }

    #[test]
    fn the_cache_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        // A cache and a leftover temporary file written before, readable by all.
        std::fs::write(&path, "{}").unwrap();
        std::fs::write(dir.path().join(".snapshot.json.tmp"), "{}").unwrap();
        for file in [&path, &dir.path().join(".snapshot.json.tmp")] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(write_cache(&path, &Snapshot::default()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(read_cache(&path), Some(Snapshot::default()));
    }
}
