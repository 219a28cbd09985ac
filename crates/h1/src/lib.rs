//! An HTTP/1.1 client made for one job: forwarding to the application on 127.0.0.1.
//!
//! hyper's client runs each connection on a task of its own and passes every request and
//! response across channels between that task and the one serving the client. Here an exchange
//! runs on the task of the client connection it serves: one poll writes the request and reads
//! the response head, and the response body is read from the socket as the client connection
//! asks for it. A proxied request costs one task wake-up fewer and touches no channel, and a
//! connection is its socket and two buffers: at 256 client connections the sidecar's memory
//! fell by a third against hyper's client (docs/PERFORMANCE.md).
//!
//! Owning the exchange also tells the sidecar exactly what happened to a request, so a request
//! the application never answered on a reused connection is sent again when that is safe.
//!
//! What the application may send is what RFC 9112 allows of a server: a body framed by
//! `Content-Length`, chunked, or by closing the connection, and interim 1xx responses, which
//! are skipped. The request is framed by its body's known length, or chunked. The one upgrade
//! it asks for is to WebSocket ([`wire::RequestHead::websocket_upgrade`]): after a 101 the
//! exchange gives up its socket ([`Exchange::into_upgraded`]), which no pool ever sees again.
//! The wire rules are in [`wire`], as pure functions.
//!
//! The client's scope is written down in `crates/h1/README.md`, beside this crate's manifest:
//! what it sends and reads, what it refuses and why, each rule with the test that pins it,
//! and every difference from hyper's client that `tests/differential/` finds.

use std::fmt::{self, Write as _};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

pub mod wire;

pub use wire::{Asked, Fields, Head, RequestHead};
use wire::{Decoded, Decoder, MAX_HEAD, RequestFraming, ResponseFraming};

/// Room made in the read buffer before a read from the socket: enough for most responses
/// whole, and doubled while reads fill it, for large bodies, up to `MAX_READ_SIZE`.
const READ_SIZE: usize = 8 * 1024;
const MAX_READ_SIZE: usize = 128 * 1024;

/// Why an exchange with the application failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the application closed the connection before responding")]
    ClosedBeforeResponse,
    #[error("the application closed the connection before the end of its response body")]
    ClosedInBody,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the client's request body failed: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One HTTP/1.1 connection to the application, between exchanges.
pub struct Connection {
    io: TcpStream,
    /// Bytes read from the socket and not yet taken: the response being read.
    read: BytesMut,
    /// Request bytes encoded and not yet written: a head, or a chunk's size line. Kept between
    /// exchanges so its allocation is reused.
    write: BytesMut,
    /// The room the next read asks for.
    read_size: usize,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.io.local_addr().ok())
            .field("peer", &self.io.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the application on 127.0.0.1:`port`.
    pub async fn open(port: u16) -> io::Result<Self> {
        let io = TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await?;
        io.set_nodelay(true)?;
        Ok(Self {
            io,
            read: BytesMut::new(),
            write: BytesMut::new(),
            read_size: READ_SIZE,
        })
    }

    /// The application has closed this idle connection, or sent bytes no request asked for:
    /// either way it can carry no more requests.
    pub fn is_closed(&self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        // No readiness since the last read means nothing arrived: no syscall on the request
        // path. Readiness may be left over from the last read, so then look at the socket.
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 8 {
            self.read.reserve(self.read_size);
        }
        let room = self.read.capacity() - self.read.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        // As hyper does: a large body is read in large pieces, and a small one in small.
        self.read_size = if read == room {
            (self.read_size * 2).min(MAX_READ_SIZE)
        } else {
            READ_SIZE
        };
        Poll::Ready(Ok(read))
    }
}

/// The request body still to be written, and the framing around the piece being written.
struct Sending<B> {
    body: Option<B>,
    chunked: bool,
    /// The data of the frame being written; the framing before it is in the connection's
    /// write buffer.
    data: Bytes,
    /// What follows `data`: a chunk's CRLF.
    suffix: &'static [u8],
}

impl<B> Sending<B> {
    /// Only the head, already in the write buffer, is to be written.
    fn bodiless() -> Self {
        Self {
            body: None,
            chunked: false,
            data: Bytes::new(),
            suffix: b"",
        }
    }
}

/// One request on a connection, from its first byte written to its response's last byte read.
pub struct Exchange<B> {
    conn: Connection,
    sending: Option<Sending<B>>,
    framing: RequestFraming,
    /// The request failed to be written: the connection can carry nothing more.
    send_failed: bool,
    received_any: bool,
    asked: Asked,
}

/// A connection the application switched to the WebSocket protocol: its socket, and what
/// was read of it past the 101, which is the start of the application's WebSocket bytes.
#[derive(Debug)]
pub struct Upgraded {
    pub io: TcpStream,
    pub read_ahead: Bytes,
}

impl<B> Exchange<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Starts an exchange: the head is encoded now and written, with as much of the body as
    /// is ready, on the first poll.
    pub fn new(mut conn: Connection, head: &impl RequestHead, body: B) -> Self {
        let framing = wire::request_framing(head.method(), body.size_hint().exact());
        conn.write.clear();
        wire::encode_head(&mut conn.write, head, framing);
        let sending = match framing {
            RequestFraming::None | RequestFraming::Length(0) => Sending::bodiless(),
            RequestFraming::Length(_) | RequestFraming::Chunked => Sending {
                body: Some(body),
                chunked: framing == RequestFraming::Chunked,
                data: Bytes::new(),
                suffix: b"",
            },
        };
        Self {
            conn,
            sending: Some(sending),
            framing,
            send_failed: false,
            received_any: false,
            asked: Asked::of(head),
        }
    }

    /// Nothing of a response has arrived: with the request not processed or not answered, an
    /// idempotent request may be sent again on another connection.
    pub fn received_nothing(&self) -> bool {
        !self.received_any
    }

    /// Writes what it can of the request; `Ready(Ok)` once all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(sending) = &mut self.sending else {
            return Poll::Ready(Ok(()));
        };
        let conn = &mut self.conn;
        loop {
            while !conn.write.is_empty() || !sending.data.is_empty() || !sending.suffix.is_empty() {
                let slices = [
                    IoSlice::new(&conn.write),
                    IoSlice::new(&sending.data),
                    IoSlice::new(sending.suffix),
                ];
                let written = ready!(Pin::new(&mut conn.io).poll_write_vectored(cx, &slices))?;
                if written == 0 {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                advance(conn, sending, written);
            }
            let Some(body) = &mut sending.body else {
                self.sending = None;
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not forwarded
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if sending.chunked {
                        // Writing to a BytesMut cannot fail.
                        let _ = write!(conn.write, "{:x}\r\n", data.len());
                        sending.suffix = b"\r\n";
                    }
                    sending.data = data;
                }
                Some(Err(error)) => return Poll::Ready(Err(Error::RequestBody(error.into()))),
                None => {
                    if sending.chunked {
                        conn.write.put_slice(b"0\r\n\r\n");
                    }
                    sending.body = None;
                }
            }
        }
    }

    /// Keeps writing the request, if it is not all written; a failure ends the writing, and
    /// the response is still read: the application may have answered before it stopped
    /// reading.
    fn drive_send(&mut self, cx: &mut Context<'_>) -> Option<Error> {
        self.sending.as_ref()?;
        match self.poll_send(cx) {
            Poll::Ready(Ok(())) | Poll::Pending => None,
            Poll::Ready(Err(error)) => {
                self.sending = None;
                self.send_failed = true;
                Some(error)
            }
        }
    }

    /// Writes the request and reads the response head, skipping interim responses.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, Error>> {
        let send_error = self.drive_send(cx);
        if let Some(Error::RequestBody(error)) = send_error {
            return Poll::Ready(Err(Error::RequestBody(error)));
        }
        loop {
            if !self.conn.read.is_empty() {
                match wire::parse_head(&mut self.conn.read, self.asked)? {
                    Some(head)
                        if head.status.is_informational()
                            && head.framing != ResponseFraming::Switched =>
                    {
                        continue;
                    }
                    Some(head) => return Poll::Ready(Ok(head)),
                    None => {}
                }
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) if self.received_any => {
                    return Poll::Ready(Err(Error::Malformed("truncated head")));
                }
                Ok(0) => return Poll::Ready(Err(Error::ClosedBeforeResponse)),
                Ok(_) => self.received_any = true,
                Err(error) => return Poll::Ready(Err(error.into())),
            }
        }
    }

    /// The response body that follows `head`, read from this exchange's connection.
    pub fn into_body(self, head: &Head) -> ResponseBody<B> {
        let mut body = ResponseBody {
            decoder: Decoder::new(head.framing),
            // A connection that carried an upgrade request is never reused, even when the
            // application declined: it was asked to be the application's for good.
            keep_alive: head.keep_alive
                && head.framing != ResponseFraming::UntilClose
                && self.asked != Asked::WebSocket,
            exchange: Some(self),
            reusable: None,
        };
        // No body to read (HEAD, 204, 304, `Content-Length: 0`): the server may never poll it.
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    /// The request has no body, so it is still whole and can be sent again.
    pub fn can_resend(&self) -> bool {
        matches!(
            self.framing,
            RequestFraming::None | RequestFraming::Length(0)
        )
    }

    /// Gives up this exchange before it was answered, and starts its request again on `conn`:
    /// `None` when the request has a body ([`Exchange::can_resend`]), which cannot be sent twice.
    pub fn resend_on(self, mut conn: Connection, head: &impl RequestHead) -> Option<Self> {
        if !self.can_resend() {
            return None;
        }
        conn.write.clear();
        wire::encode_head(&mut conn.write, head, self.framing);
        Some(Self {
            conn,
            sending: Some(Sending::bodiless()),
            framing: self.framing,
            send_failed: false,
            received_any: false,
            asked: self.asked,
        })
    }

    /// The socket of an exchange the application answered with a 101
    /// ([`ResponseFraming::Switched`]), and the bytes it sent after the 101.
    pub fn into_upgraded(self) -> Result<Upgraded, Error> {
        if self.sending.is_some() || self.send_failed {
            // Only a request without a body is upgraded, so its head went out whole before
            // any answer could come; anything else would leave request bytes half-written.
            return Err(Error::Malformed("101 before the request was written"));
        }
        Ok(Upgraded {
            io: self.conn.io,
            read_ahead: self.conn.read.freeze(),
        })
    }
}

/// Moves the write position `written` bytes on, across the framing, the data and the suffix.
fn advance<B>(conn: &mut Connection, sending: &mut Sending<B>, mut written: usize) {
    let head = written.min(conn.write.len());
    conn.write.advance(head);
    written -= head;
    let data = written.min(sending.data.len());
    sending.data.advance(data);
    written -= data;
    sending.suffix = &sending.suffix[written.min(sending.suffix.len())..];
}

/// The body of a response, read from its exchange's connection as it is polled. It keeps
/// writing the request too, if the application answered before reading all of it.
pub struct ResponseBody<B> {
    exchange: Option<Exchange<B>>,
    decoder: Decoder,
    keep_alive: bool,
    /// The connection, once this response has been read whole and it can carry another.
    reusable: Option<Connection>,
}

impl<B> ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The connection, if the response has been read whole and the connection can carry
    /// another request; taken once.
    pub fn take_reusable(&mut self) -> Option<Connection> {
        self.reusable.take()
    }

    /// The response has been read whole: the connection goes back if it can be reused.
    fn finish(&mut self) {
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let reusable = self.keep_alive
            && exchange.sending.is_none()
            && !exchange.send_failed
            && exchange.conn.read.is_empty();
        if reusable {
            self.reusable = Some(exchange.conn);
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.exchange = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(error)))
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let Some(exchange) = &mut this.exchange else {
            return Poll::Ready(None);
        };
        if let Some(Error::RequestBody(error)) = exchange.drive_send(cx) {
            return this.fail(Error::RequestBody(error));
        }
        loop {
            let decoded = match this.decoder.decode(&mut exchange.conn.read) {
                Ok(Decoded::NeedMore) => match ready!(exchange.conn.poll_fill(cx)) {
                    Ok(0) => {
                        // The end of the stream: the connection cannot be reused.
                        this.keep_alive = false;
                        this.decoder.at_eof()
                    }
                    Ok(_) => continue,
                    Err(error) => Err(error.into()),
                },
                other => other,
            };
            return match decoded {
                Ok(Decoded::Data(data)) => {
                    // A body of known length ends with its last piece; the server may stop
                    // polling there, so the connection goes back now.
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Ok(Decoded::End) => {
                    this.finish();
                    Poll::Ready(None)
                }
                Ok(Decoded::NeedMore) => continue,
                Err(error) => this.fail(error),
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Done => SizeHint::with_exact(0),
            Decoder::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
