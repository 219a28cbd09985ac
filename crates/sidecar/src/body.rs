//! Body types of the sidecar: responses are either the gateway's own (buffered) or the
//! upstream's (streamed); requests to the upstream are the client's body (streamed) or one the
//! gateway rewrote.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tollgate_oauth::OAuthResponse;

use crate::pool::ReturningBody;

pub type ResponseBody = Either<Full<Bytes>, ReturningBody>;
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// Bodies the gateway reads whole (OAuth parameters, a form carrying `access_token`) are
/// bounded, so a client cannot make the sidecar buffer without limit.
pub const MAX_BUFFERED_BODY: usize = 1024 * 1024;

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    TooLarge,
    Aborted,
}

pub async fn read_bounded(body: Incoming) -> Result<Bytes, ReadError> {
    match Limited::new(body, MAX_BUFFERED_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Aborted),
    }
}

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

pub fn read_error(error: ReadError) -> Response<ResponseBody> {
    match error {
        ReadError::TooLarge => {
            message(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded")
        }
        ReadError::Aborted => message(
            StatusCode::BAD_REQUEST,
            "The request body could not be read",
        ),
    }
}
