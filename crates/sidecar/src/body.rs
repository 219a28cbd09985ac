//! Body types of the sidecar: responses are either the gateway's own (buffered) or the
//! upstream's (streamed, its connection given back once read whole); requests to the upstream
//! are the client's body (streamed) or one the gateway rewrote.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tollgate_h1 as h1;
use tollgate_oauth::OAuthResponse;
use tollgate_serve::InFlight;
pub use tollgate_serve::Incoming;
use tollgate_serve::body::BodyBudget;
pub use tollgate_serve::body::{Buffered, ReadError};

use crate::pool::Bound;

/// What the client gets: the gateway's own answer, or the application's, streamed.
pub type ResponseBody<B> = Either<Full<Bytes>, ReturningBody<B>>;
/// What the application gets: the client's body `B`, streamed, or one the gateway read or
/// rewrote.
pub type UpstreamBody<B> = Either<B, Full<Bytes>>;

/// How much of a request body the sidecar reads into memory, per request and in all.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `--max-oauth-body`, also the admin API's.
    pub oauth: usize,
    /// `--client-body-buffer-size`.
    pub proxied_form: usize,
    /// `--body-buffer-budget`.
    pub budget: usize,
}

/// Seconds a client refused for a spent body budget is asked to wait: buffered bodies are
/// small and read quickly, so the budget frees up within about that.
const RETRY_AFTER_SECONDS: &str = "1";

/// A request body as the gateway takes it: [`Incoming`] from a listener, or [`Full`] from a
/// caller that holds the whole body already (a test). Generic, not boxed: the proxy path
/// costs the same as with `Incoming` alone.
pub trait RequestBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + Sized
    + 'static
{
    /// Keeps the client connection's HTTP timeouts off it while a WebSocket tunnel holds it;
    /// `None` for a body that came on no connection.
    fn hold_connection_busy(&self) -> Option<InFlight>;

    /// Reads the whole body when it is at most `limit` bytes, each taken from `budget` first;
    /// a longer one comes back unread (what was read of it is sent first), for the caller to
    /// stream.
    fn read_up_to(
        self,
        limit: usize,
        budget: &BodyBudget,
    ) -> impl Future<Output = Result<Result<Buffered, Self>, ReadError>> + Send;
}

impl RequestBody for Incoming {
    fn hold_connection_busy(&self) -> Option<InFlight> {
        Some(self.keep_connection_busy())
    }

    fn read_up_to(
        self,
        limit: usize,
        budget: &BodyBudget,
    ) -> impl Future<Output = Result<Result<Buffered, Self>, ReadError>> + Send {
        tollgate_serve::body::read_up_to(self, limit, budget)
    }
}

impl RequestBody for Full<Bytes> {
    fn hold_connection_busy(&self) -> Option<InFlight> {
        None
    }

    async fn read_up_to(
        self,
        limit: usize,
        budget: &BodyBudget,
    ) -> Result<Result<Buffered, Self>, ReadError> {
        if self.size_hint().lower() > limit as u64 {
            return Ok(Err(self));
        }
        let bytes = match self.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        let mut reservation = budget.reserve();
        if !reservation.grow(bytes.len()) {
            return Err(ReadError::BudgetSpent);
        }
        Ok(Ok(Buffered { bytes, reservation }))
    }
}

/// Reads a whole body of at most `limit` bytes, each taken from `budget` first.
pub async fn read_bounded<B: RequestBody>(
    body: B,
    limit: usize,
    budget: &BodyBudget,
) -> Result<Buffered, ReadError> {
    match body.read_up_to(limit, budget).await? {
        Ok(buffered) => Ok(buffered),
        Err(_longer) => Err(ReadError::TooLarge),
    }
}

/// The gateway's own answer, as the client gets it.
pub fn own<B>(response: Response<Full<Bytes>>) -> Response<ResponseBody<B>> {
    response.map(Either::Left)
}

pub fn full(response: Response<Bytes>) -> Response<Full<Bytes>> {
    response.map(Full::new)
}

pub fn oauth(response: OAuthResponse) -> Response<Full<Bytes>> {
    full(response.into_http())
}

/// Kong's `{"message": …}` responses for the gateway's own failures.
pub fn message(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    oauth(OAuthResponse::message(status, text))
}

/// The answer to a body that could not be read whole, with Kong's messages.
pub fn read_error(error: ReadError) -> Response<Full<Bytes>> {
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

/// The application's response body. Once it has been read whole, its connection goes back to
/// the client connection that sent the request. A body dropped before its end closes its
/// connection: the rest of that response would otherwise be read as the next one.
///
/// Kong's `read_timeout` bounds each wait for more of the body, as nginx's
/// `proxy_read_timeout` bounds the time between two reads: an application that stops
/// mid-body fails the response then, and its connection is closed.
pub struct ReturningBody<B> {
    body: h1::ResponseBody<UpstreamBody<B>>,
    port: u16,
    home: Arc<Bound>,
    read_timeout: Duration,
    /// The timer of the current wait. Made the first time a read waits, and reset for each
    /// wait after that: a body that never waits, the usual small one, costs no timer.
    waiting: Option<Pin<Box<Sleep>>>,
    /// The timer is running for the current wait.
    armed: bool,
}

impl<B: RequestBody> ReturningBody<B> {
    pub fn new(
        body: h1::ResponseBody<UpstreamBody<B>>,
        port: u16,
        home: Arc<Bound>,
        read_timeout: Duration,
    ) -> Self {
        let mut returning = Self {
            body,
            port,
            home,
            read_timeout,
            waiting: None,
            armed: false,
        };
        // No body to read (HEAD, 204, 304, `Content-Length: 0`): the server may never poll it.
        returning.give_back();
        returning
    }

    fn give_back(&mut self) {
        if let Some(conn) = self.body.take_reusable() {
            self.home.give_back(self.port, conn);
        }
    }

    /// Starts the timer of a wait for more of the body, or polls the one running: ready
    /// when the wait has lasted the read timeout.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let read_timeout = self.read_timeout;
        let deadline = move || tokio::time::Instant::now() + read_timeout;
        let timer = match &mut self.waiting {
            Some(timer) => {
                if !self.armed {
                    timer.as_mut().reset(deadline());
                }
                timer
            }
            None => self
                .waiting
                .insert(Box::pin(tokio::time::sleep_until(deadline()))),
        };
        self.armed = true;
        timer.as_mut().poll(cx)
    }
}

impl<B: RequestBody> Body for ReturningBody<B> {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                ready!(this.poll_wait(cx));
                tracing::warn!(
                    port = this.port,
                    timeout_ms = this.read_timeout.as_millis() as u64,
                    "the application sent no more of its response body within readTimeout"
                );
                // The connection is not given back: dropping the body closes it.
                Poll::Ready(Some(Err(h1::Error::Io(
                    std::io::ErrorKind::TimedOut.into(),
                ))))
            }
            polled => {
                this.armed = false;
                this.give_back();
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
