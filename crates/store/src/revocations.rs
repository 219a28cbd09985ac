//! The receiving end of [`crate::TokenStore::subscribe`]: what a sidecar's validation cache
//! listens to.
//!
//! The contract a cache relies on: it may trust what it cached only between a
//! [`RevocationEvent::Subscribed`] and the next [`RevocationEvent::Lost`]. Every revocation
//! that happens in such a stretch arrives as [`RevocationEvent::Revoked`]; whenever one might
//! have been missed (the connection dropped, the consumer fell too far behind), `Lost` comes
//! first.

use std::fmt;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::TokenHash;

/// One thing a [`Revocations`] receiver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationEvent {
    /// This access token no longer holds: evict it.
    Revoked {
        namespace: String,
        access: TokenHash,
    },
    /// The subscription was lost: anything cached may be stale. Drop it all, and cache
    /// nothing until [`RevocationEvent::Subscribed`].
    Lost,
    /// Subscribed (again): revocations flow from now on, so caching is safe again.
    Subscribed,
}

/// A subscription to revocations; see [`crate::TokenStore::subscribe`]. Dropping it ends the
/// subscription (on Redis, closes its connection).
pub struct Revocations {
    source: Source,
}

enum Source {
    /// In-process: the memory store's broadcast channel.
    Broadcast {
        rx: broadcast::Receiver<RevocationEvent>,
        /// Delivered before anything else from `rx`.
        pending: Option<RevocationEvent>,
    },
    /// From a task that owns a subscription elsewhere (Redis), aborted when this is dropped.
    Task {
        rx: mpsc::Receiver<RevocationEvent>,
        task: JoinHandle<()>,
    },
}

impl Revocations {
    /// Listens to an in-process broadcast; the first event is `Subscribed`.
    pub(crate) fn from_broadcast(rx: broadcast::Receiver<RevocationEvent>) -> Self {
        Self {
            source: Source::Broadcast {
                rx,
                pending: Some(RevocationEvent::Subscribed),
            },
        }
    }

    /// Listens to what `task` sends on the other end of `rx`; the task is aborted when the
    /// receiver is dropped.
    pub(crate) fn from_task(rx: mpsc::Receiver<RevocationEvent>, task: JoinHandle<()>) -> Self {
        Self {
            source: Source::Task { rx, task },
        }
    }

    /// The next event; `None` once the store that made this subscription is gone.
    pub async fn next(&mut self) -> Option<RevocationEvent> {
        match &mut self.source {
            Source::Broadcast { rx, pending } => {
                if let Some(event) = pending.take() {
                    return Some(event);
                }
                match rx.recv().await {
                    Ok(event) => Some(event),
                    // The consumer fell so far behind that revocations were overwritten
                    // before it read them: exactly what `Lost` is for. The receiver has
                    // skipped to the oldest event still held, so it is subscribed again.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        *pending = Some(RevocationEvent::Subscribed);
                        Some(RevocationEvent::Lost)
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
            Source::Task { rx, .. } => rx.recv().await,
        }
    }
}

impl Drop for Revocations {
    fn drop(&mut self) {
        if let Source::Task { task, .. } = &self.source {
            task.abort();
        }
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            Source::Broadcast { .. } => "memory",
            Source::Task { .. } => "redis",
        };
        f.debug_struct("Revocations")
            .field("source", &source)
            .finish_non_exhaustive()
    }
}
