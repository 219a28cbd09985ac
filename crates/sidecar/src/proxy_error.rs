//! Why the gateway answers a request itself, in place of the application or an OAuth
//! endpoint: each reason's response (Kong's status, body and headers) and the outcome it is
//! counted under, in one place.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tollgate_oauth::OAuthResponse;
use tollgate_oauth::params::ParamsError;
use tollgate_oauth::response::OAuthError;

use crate::body::{self, ReadError};
use crate::forward::ForwardError;
use crate::metrics::Outcome;

/// Seconds a client refused for want of a place for its WebSocket is asked to wait.
const UPGRADE_RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A request the gateway cannot read one way only: a path with no normal form, or an
    /// HTTP/1.1 request without exactly one `Host`.
    #[error("{0}")]
    Unreadable(&'static str),
    #[error("no Route matched with those values")]
    NoRoute,
    /// Only a WebSocket is opened with CONNECT here: the sidecar is no proxy to anywhere
    /// else, and the application is never asked for a tunnel of another kind.
    #[error("a CONNECT that opens no WebSocket")]
    ConnectWithoutWebSocket,
    /// The metadata document is read with GET or HEAD.
    #[error("the metadata document was asked for with another method")]
    MetadataMethod,
    /// An OAuth endpoint called with another method than POST: Kong's answer.
    #[error("an OAuth endpoint was called with another method than POST")]
    EndpointMethod(OAuthResponse),
    /// A request body that had to be read whole and could not be.
    #[error("the request body could not be read: {0:?}")]
    Body(ReadError),
    /// An OAuth endpoint's parameters did not parse.
    #[error("invalid parameters: {0}")]
    Params(#[from] ParamsError),
    /// The bearer check refused the request: Kong's 401 (or 403), with its `WWW-Authenticate`.
    #[error("no valid access token")]
    Unauthorized(OAuthResponse),
    /// The bearer check could not reach the token store.
    #[error("the token store is unavailable")]
    StoreUnavailable(OAuthResponse),
    /// `anonymous` names a consumer the snapshot does not have.
    #[error("anonymous consumer {0} is configured but doesn't exist")]
    AnonymousMissing(String),
    /// A WebSocket handshake while as many as `--max-connections` are open.
    #[error("as many WebSockets as --max-connections are open")]
    TooManyUpgrades,
    /// Kong's `connect_timeout` or `read_timeout` passed.
    #[error("upstream request timed out: {0}")]
    UpstreamTimeout(ForwardError),
    #[error("upstream request failed: {0}")]
    Upstream(ForwardError),
}

impl ProxyError {
    /// The bearer check's refusal: the store's failure, or the client's missing or bad token.
    pub fn refused(response: OAuthResponse) -> Self {
        if response.status == StatusCode::SERVICE_UNAVAILABLE {
            Self::StoreUnavailable(response)
        } else {
            Self::Unauthorized(response)
        }
    }

    /// The outcome the request is counted under; `None` for a request to an OAuth endpoint,
    /// counted as such when it arrived.
    pub fn outcome(&self) -> Option<Outcome> {
        Some(match self {
            Self::Unreadable(_) | Self::ConnectWithoutWebSocket => Outcome::BadRequest,
            Self::NoRoute => Outcome::NoRoute,
            Self::Unauthorized(_) => Outcome::Unauthorized,
            Self::StoreUnavailable(_) => Outcome::StoreError,
            Self::AnonymousMissing(_) => Outcome::AnonymousMissing,
            Self::TooManyUpgrades => Outcome::TooManyUpgrades,
            Self::UpstreamTimeout(_) => Outcome::UpstreamTimeout,
            Self::Upstream(_) => Outcome::UpstreamError,
            Self::MetadataMethod | Self::EndpointMethod(_) | Self::Params(_) => return None,
            // A proxied body is read only for its token, and its refusal counted with none:
            // as before this type existed.
            Self::Body(_) => return None,
        })
    }

    /// The response the client gets, Kong's where Kong has one.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Unreadable(reason) => body::message(StatusCode::BAD_REQUEST, reason),
            Self::NoRoute => {
                body::message(StatusCode::NOT_FOUND, "no Route matched with those values")
            }
            Self::ConnectWithoutWebSocket | Self::MetadataMethod => {
                body::message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
            }
            Self::EndpointMethod(response)
            | Self::Unauthorized(response)
            | Self::StoreUnavailable(response) => body::oauth(response),
            Self::Body(error) => body::read_error(error),
            Self::Params(error) => body::oauth(
                OAuthError::bad_request("invalid_request", error.to_string()).into_response(None),
            ),
            Self::AnonymousMissing(_) => {
                body::message(StatusCode::INTERNAL_SERVER_ERROR, &self.to_string())
            }
            Self::TooManyUpgrades => {
                let mut response =
                    body::message(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(UPGRADE_RETRY_AFTER_SECONDS),
                );
                response
            }
            Self::UpstreamTimeout(_) => body::message(
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream server is timing out",
            ),
            Self::Upstream(_) => body::message(
                StatusCode::BAD_GATEWAY,
                "An invalid response was received from the upstream server",
            ),
        }
    }
}

impl From<ForwardError> for ProxyError {
    fn from(error: ForwardError) -> Self {
        match error {
            ForwardError::Timeout => Self::UpstreamTimeout(error),
            error => Self::Upstream(error),
        }
    }
}

impl From<ReadError> for ProxyError {
    fn from(error: ReadError) -> Self {
        Self::Body(error)
    }
}
