//! Body types of the sidecar: responses are either the gateway's own (buffered) or the
//! upstream's (streamed); requests to the upstream are the client's body (streamed) or one the
//! gateway rewrote.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};
use tollgate_oauth::OAuthResponse;
pub use tollgate_serve::Incoming;
pub use tollgate_serve::body::{Buffered, ReadError, read_bounded, read_up_to};

use crate::pool::ReturningBody;

pub type ResponseBody = Either<Full<Bytes>, ReturningBody>;
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// Seconds a client refused for a spent body budget is asked to wait: buffered bodies are
/// small and read quickly, so the budget frees up within about that.
const RETRY_AFTER_SECONDS: &str = "1";

pub fn full(response: Response<Bytes>) -> Response<ResponseBody> {
    response.map(|b| Either::Left(Full::new(b)))
}

pub fn oauth(response: OAuthResponse) -> Response<ResponseBody> {
    full(response.into_http())
}

/// Kong's `{"message": …}` responses for the gateway's own failures.
pub fn message(status: StatusCode, text: &str) -> Response<ResponseBody> {
    oauth(OAuthResponse::message(status, text))
}

/// The answer to a body that could not be read whole, with Kong's messages.
pub fn read_error(error: ReadError) -> Response<ResponseBody> {
    match error {
        ReadError::TooLarge => {
            // The rest of the body is not read: over HTTP/1.1 the connection closes (after a
            // lingering read), and the client is told so, as nginx does.
            let mut response =
                message(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded");
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        ReadError::BudgetSpent => {
            let mut response = message(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            response
        }
        ReadError::TimedOut => message(StatusCode::REQUEST_TIMEOUT, "Request timeout"),
        ReadError::Aborted => message(
            StatusCode::BAD_REQUEST,
            "The request body could not be read",
        ),
    }
}
