//! The one reading of a client's request that the gateway decides on and the application
//! receives: the path ([`path`]) and the header names ([`header_name`]).
//!
//! A crate of its own, with no dependencies: the fuzz targets build it in seconds, and
//! neither the OAuth rules nor the HTTP stack can make it allocate or fail in a way its tests
//! do not see. Both modules are pure functions of their input.

#![forbid(unsafe_code)]

pub mod header_name;
pub mod path;
