//! tollgate's data model: the resources users apply, the `Snapshot` a sidecar serves, and the
//! pure compiler that turns the first into the second. No I/O happens here except reading
//! manifest files in [`manifests`], so the controller and standalone mode share every rule.
#![forbid(unsafe_code)]

pub mod certificates;
pub mod compile;
pub mod cors;
pub mod manifests;
pub mod resources;
pub mod secret;
pub mod snapshot;
pub mod snapshot_delta;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token_import;

pub use compile::{CompileError, compile};
pub use secret::{SecretDigest, SecretString};
pub use snapshot::Snapshot;
