//! The sidecar's side of the snapshot stream: `--controller URL` instead of `--manifests`.
//!
//! The sidecar opens one long-lived HTTP/2 request to the controller, authenticated by its
//! pod's projected service-account token, and publishes every snapshot it receives on a
//! `watch` channel, which the sidecar's start-up connects to the gateway (as Linkerd's policy
//! client publishes policies for its proxy). The last good snapshot is kept in
//! `--snapshot-cache`, so a sidecar that starts (or restarts) while the controller is
//! unreachable serves from it; and a lost stream is reopened with exponential backoff and
//! jitter, while the current snapshot keeps being served. After a connection's first
//! snapshot, changes come as deltas from the version held; one that does not apply (a gap, a
//! bad delta) ends the connection, and the next one starts with a whole snapshot.
//!
//! One module per part: the flags (`source`), the TLS dial (`dial`), the NDJSON framing
//! (`framing`), the cache file (`cache_file`) and the reconnection delays (`backoff`).

mod backoff;
mod cache_file;
mod dial;
mod error;
mod framing;
mod source;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tollgate_api::Snapshot;
use tollgate_api::stream::{self as wire, Frame};

pub(crate) use self::backoff::Backoff;
use self::cache_file::{read_cache, write_cache};
use self::dial::CONNECT_TIMEOUT;
pub(crate) use self::dial::{connect, refusal};
pub(crate) use self::error::StreamError;
use self::framing::Lines;
pub(crate) use self::source::read_token;
pub use self::source::{ControllerSource, ControllerSourceArgs, DEFAULT_TOKEN_FILE};

/// Where [`run`] publishes the latest snapshot: `None` until the first one (or the cached
/// one) comes.
pub type SnapshotTx = watch::Sender<Option<Arc<Snapshot>>>;
/// Where the gateway's side reads the latest snapshot.
pub type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

/// A channel holding no snapshot yet.
pub fn snapshot_channel() -> (SnapshotTx, SnapshotRx) {
    watch::channel(None)
}

/// Follows the controller's stream until `shutdown`, publishing each snapshot on `snapshots`;
/// while none has come, the cached one is published each time the controller cannot be
/// reached.
pub async fn run(
    source: ControllerSource,
    snapshots: SnapshotTx,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut serving = false;
    let mut backoff = Backoff::default();
    loop {
        let mut received = false;
        let result = tokio::select! {
            result = follow(&source, &snapshots, &mut received) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        serving |= received;
        match result {
            Ok(()) => tracing::info!("the controller closed the snapshot stream; reconnecting"),
            Err(error) => {
                tracing::warn!(%error, controller = %source.stream_uri, "snapshot stream lost")
            }
        }
        if received {
            backoff = Backoff::default();
        }
        // Nothing served yet, and the controller is away: the last snapshot this pod was
        // sent, even before a restart, beats serving nothing.
        if !serving && let Some(snapshot) = source.cache.as_deref().and_then(read_cache) {
            tracing::warn!(
                version = snapshot.version,
                "serving the cached snapshot until the controller answers"
            );
            snapshots.send_replace(Some(Arc::new(snapshot)));
            serving = true;
        }
        let delay = backoff.next_delay();
        tracing::debug!(?delay, "reconnecting after a delay");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One connection: `Ok` when the controller ends the stream, an error otherwise.
/// `received` turns true with the first snapshot.
async fn follow(
    source: &ControllerSource,
    snapshots: &SnapshotTx,
    received: &mut bool,
) -> Result<(), StreamError> {
    let token = read_token(&source.token_file)?;
    let (mut sender, _driver) = connect(source).await?;
    let request = Request::get(source.stream_uri.clone())
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::ACCEPT, wire::CONTENT_TYPE)
        .body(Full::new(Bytes::new()))
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    drop(token);
    let response = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| StreamError::Connect("no answer".into()))?
        .map_err(|e| StreamError::Connect(e.to_string()))?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        return Err(refusal(status, body).await);
    }
    tracing::info!(pod = %source.pod, namespace = %source.namespace, "connected to the controller");

    // What this connection delivered last: the base of the next delta. Not the cached
    // snapshot: a connection always starts with a whole one.
    let mut held: Option<Arc<Snapshot>> = None;
    let mut lines = Lines::new();
    loop {
        let frame = match tokio::time::timeout(wire::HEARTBEAT_TIMEOUT, body.frame()).await {
            Err(_) => return Err(StreamError::Silent(wire::HEARTBEAT_TIMEOUT)),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(StreamError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        lines.push(&data);
        while let Some(line) = lines.next_line() {
            handle_line(source, snapshots, &line, &mut held).await?;
            *received |= held.is_some();
        }
        lines.end_of_chunk().map_err(|_| StreamError::TooLong)?;
    }
}

/// Acts on one line of the stream: a snapshot, or a delta applied to the one `held`, is kept
/// in the cache file, then published. A delta that does not apply is an error, which ends the
/// connection while the current snapshot keeps being served.
async fn handle_line(
    source: &ControllerSource,
    snapshots: &SnapshotTx,
    line: &[u8],
    held: &mut Option<Arc<Snapshot>>,
) -> Result<(), StreamError> {
    let frame = match framing::decode(line) {
        Ok(Some(frame)) => frame,
        Ok(None) => return Ok(()),
        // A frame of a newer controller, or garbage: the stream goes on.
        Err(error) => {
            tracing::warn!(%error, "ignored a frame of the snapshot stream");
            return Ok(());
        }
    };
    let is_delta = matches!(frame, Frame::Delta { .. });
    if matches!(frame, Frame::Heartbeat) {
        tracing::trace!("heartbeat");
    }
    let Some(snapshot) = framing::next_snapshot(held.as_deref(), frame)? else {
        return Ok(());
    };
    let version = snapshot.version;
    let services = snapshot.services.len();
    if let Some(cache) = &source.cache {
        write_cache(cache, &snapshot).await;
    }
    let snapshot = Arc::new(snapshot);
    *held = Some(snapshot.clone());
    snapshots.send_replace(Some(snapshot));
    tracing::info!(version, services, is_delta, "serving a new snapshot");
    Ok(())
}
