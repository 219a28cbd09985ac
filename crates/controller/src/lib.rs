//! The control plane: resources (from the API server or manifest files) in, one snapshot per
//! pod out, streamed to sidecars; status on every resource; the admin API.
#![forbid(unsafe_code)]

pub mod index;
