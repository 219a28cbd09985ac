//! The OAuth 2.0 rules of Kong's "OAuth 2.0 Authentication" plugin, as functions: request
//! parameters, the snapshot and a token store in; Kong's status codes, bodies and headers out.
//!
//! Nothing here touches a socket. Time comes in as an argument, so every rule is testable as
//! a plain function.
#![forbid(unsafe_code)]

pub mod bearer;
pub mod params;
pub mod random;
pub mod response;
pub mod token_endpoint;

pub use bearer::{Authenticated, authenticate};
pub use params::{ParamValue, Params};
pub use response::OAuthResponse;
pub use token_endpoint::{TokenRequest, issue_token};

/// Milliseconds since the Unix epoch: the clock every rule takes as an argument.
pub type EpochMillis = u64;
