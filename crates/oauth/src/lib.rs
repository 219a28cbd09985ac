//! The OAuth 2.0 rules of Kong's "OAuth 2.0 Authentication" plugin, as functions: request
//! parameters, the snapshot and a token store in; Kong's status codes, bodies and headers out.
//!
//! Nothing here touches a socket. Time comes in as an argument, so every rule is testable as
//! a plain function.
#![forbid(unsafe_code)]

pub mod authorize;
pub mod bearer;
mod issue;
pub mod params;
pub mod pkce;
pub mod random;
pub mod redirect;
pub mod response;
pub mod secret_gate;
pub mod standard;
pub mod token_endpoint;
pub mod token_location;

pub use authorize::{AuthorizeRequest, authorize};
pub use bearer::{Authenticated, authenticate};
pub use params::{ParamValue, Params};
pub use response::OAuthResponse;
pub use secret_gate::configure_secret_hashing;
pub use token_endpoint::{TokenRequest, issue_token};

/// Milliseconds since the Unix epoch: the clock every rule takes as an argument.
pub type EpochMillis = u64;

/// How a request to the OAuth endpoints arrived. OAuth 2.0 requires TLS for them; Kong also
/// accepts plain HTTP from a trusted proxy that terminated TLS, when the service allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Over the sidecar's own TLS listener.
    Tls,
    /// Plain HTTP carrying exactly one `X-Forwarded-Proto: https` from a trusted address, on a
    /// service with `acceptHttpIfAlreadyTerminated`.
    TerminatedUpstream,
    /// Plain HTTP, refused with this description.
    Plain(&'static str),
}

impl Transport {
    /// Kong's description of why the request is not HTTPS, if it is not.
    pub fn https_error(self) -> Option<&'static str> {
        match self {
            Self::Tls | Self::TerminatedUpstream => None,
            Self::Plain(reason) => Some(reason),
        }
    }
}
