//! Why one connection (or request) to the controller ended: each is logged, and the sidecar
//! reconnects after a delay.

use std::time::Duration;

use http::StatusCode;

use super::framing::{MAX_LINE, RefusedDelta};

/// Why one connection (or request) to the controller ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("cannot read --token-file {path}: {error}")]
    Token { path: String, error: std::io::Error },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the controller answered {status}: {message}")]
    Refused { status: StatusCode, message: String },
    #[error("no frame for {0:?}: the connection is presumed dead")]
    Silent(Duration),
    #[error("the stream broke: {0}")]
    Broken(String),
    #[error("a line of the stream is longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("refused a delta, reconnecting for a whole snapshot: {0}")]
    Delta(#[from] RefusedDelta),
}
