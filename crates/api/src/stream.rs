//! The snapshot stream between the controller and its sidecars, as plain data.
//!
//! A sidecar sends `GET /v1/snapshots/{namespace}/{pod}` with its pod's service-account token
//! and reads newline-delimited JSON [`Frame`]s for as long as the connection lives: the pod's
//! full snapshot at once, another one on every change, and heartbeats in between so that a
//! silently dead connection is noticed.
//!
//! A sidecar that asks with `?deltas=1` ([`DELTAS_QUERY`]) is sent each change after the first
//! snapshot as a [`Delta`] from the version it holds; one that does not (an older release)
//! keeps getting whole snapshots.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Snapshot;
use crate::snapshot_delta::Delta;

/// Prefix of the stream's path: `/v1/snapshots/{namespace}/{pod}`.
pub const SNAPSHOTS_PATH: &str = "/v1/snapshots";
/// Audience of the projected service-account token a sidecar presents.
pub const TOKEN_AUDIENCE: &str = "tollgate";
/// The controller sends a heartbeat this often when nothing else is sent.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A sidecar that hears nothing for this long (three heartbeats) reconnects.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(45);
/// The query a sidecar that applies [`Frame::Delta`]s adds to the stream's path.
pub const DELTAS_QUERY: &str = "deltas=1";
/// Content type of the stream's body.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// One line of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Frame {
    /// The pod's whole configuration, replacing the previous one.
    Snapshot { snapshot: Snapshot },
    /// What changed since the version `delta.from`, which the sidecar must hold; sent only
    /// to a sidecar that asked for deltas.
    Delta { delta: Delta },
    /// Nothing changed; the connection is alive.
    Heartbeat,
}

/// `/v1/snapshots/{namespace}/{pod}`.
pub fn snapshots_path(namespace: &str, pod: &str) -> String {
    format!("{SNAPSHOTS_PATH}/{namespace}/{pod}")
}

/// `/v1/snapshots/{namespace}/{pod}?deltas=1`: the stream of a sidecar that applies deltas.
pub fn delta_snapshots_path(namespace: &str, pod: &str) -> String {
    format!("{}?{DELTAS_QUERY}", snapshots_path(namespace, pod))
}

/// Whether a stream request's query asks for deltas.
pub fn asks_for_deltas(query: Option<&str>) -> bool {
    query.is_some_and(|query| query.split('&').any(|pair| pair == DELTAS_QUERY))
}

/// `Frame::Snapshot { snapshot }.to_line()`, without cloning the snapshot.
pub fn snapshot_line(snapshot: &Snapshot) -> Vec<u8> {
    #[derive(Serialize)]
    struct SnapshotFrame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        snapshot: &'a Snapshot,
    }
    let frame = SnapshotFrame {
        kind: "snapshot",
        snapshot,
    };
    let mut line = serde_json::to_vec(&frame).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

// === impl Frame ===

impl Frame {
    /// The frame as one line of JSON, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail; an empty object would be
        // skipped by the reader rather than end the stream.
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_lines() {
        let heartbeat = Frame::Heartbeat.to_line();
        assert_eq!(heartbeat, b"{\"type\":\"heartbeat\"}\n");
        let frame = Frame::Snapshot {
            snapshot: Snapshot {
                version: 7,
                ..Default::default()
            },
        };
        let line = frame.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Frame = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, frame);
        let Frame::Snapshot { snapshot } = &frame else {
            unreachable!()
        };
        assert_eq!(snapshot_line(snapshot), line);
    }

    #[test]
    fn path_names_namespace_and_pod() {
        assert_eq!(
            snapshots_path("default", "iris-0"),
            "/v1/snapshots/default/iris-0"
        );
        let path = delta_snapshots_path("default", "iris-0");
        let (path, query) = path.split_once('?').unwrap();
        assert_eq!(path, "/v1/snapshots/default/iris-0");
        assert!(asks_for_deltas(Some(query)));
        for no in [
            None,
            Some(""),
            Some("deltas=0"),
            Some("xdeltas=1"),
            Some("deltas=10"),
        ] {
            assert!(!asks_for_deltas(no), "{no:?}");
        }
        assert!(asks_for_deltas(Some("a=b&deltas=1")));
    }

    #[test]
    fn a_delta_is_a_tagged_line() {
        let frame = Frame::Delta {
            delta: Delta {
                from: 3,
                version: 4,
                ..Delta::default()
            },
        };
        let line = frame.to_line();
        assert_eq!(
            line,
            b"{\"type\":\"delta\",\"delta\":{\"from\":3,\"version\":4}}\n"
        );
        assert_eq!(serde_json::from_slice::<Frame>(&line).unwrap(), frame);
    }
}
