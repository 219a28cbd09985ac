//! The two clients, driven the same way: a request sent through each, and a response read by
//! each into the same form.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::Ipv4Addr;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body, Frame};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tollgate_h1::wire::ResponseFraming;
use tollgate_h1::{Asked, Connection, Exchange, Fields, RequestHead};

/// A request body both clients take: the same frames, the same size hint.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// What a request's body is.
#[derive(Debug, Clone)]
pub enum Payload {
    Empty,
    /// Of known length.
    Full(&'static [u8]),
    /// Of unknown length: these data frames, then trailer fields if `trailers`.
    Streamed {
        pieces: Vec<&'static [u8]>,
        trailers: bool,
    },
}

/// A request as the sidecar hands it to its client: method, target, fields and body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    pub uri: String,
    pub version: Version,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub payload: Payload,
    /// Asks the application to switch to WebSocket ([`RequestHead::websocket_upgrade`]).
    pub websocket: bool,
}

impl Outgoing {
    /// A GET of `uri`, over HTTP/1.1, with no fields and no body.
    pub fn get(uri: &str) -> Self {
        Self {
            method: Method::GET,
            uri: uri.to_owned(),
            version: Version::HTTP_11,
            headers: Vec::new(),
            payload: Payload::Empty,
            websocket: false,
        }
    }

    pub fn request(&self) -> Request<TestBody> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.uri)
            .version(self.version)
            .body(body(&self.payload))
            .unwrap();
        for (name, value) in &self.headers {
            request.headers_mut().append(name, value.clone());
        }
        request
    }
}

fn body(payload: &Payload) -> TestBody {
    match payload {
        Payload::Empty => Empty::new().boxed(),
        Payload::Full(bytes) => Full::new(Bytes::from_static(bytes)).boxed(),
        Payload::Streamed { pieces, trailers } => {
            let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = pieces
                .iter()
                .map(|piece| Ok(Frame::data(Bytes::from_static(piece))))
                .collect();
            if *trailers {
                let mut fields = HeaderMap::new();
                fields.insert("x-checksum", HeaderValue::from_static("abc"));
                frames.push(Ok(Frame::trailers(fields)));
            }
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        }
    }
}

/// A request's head as tollgate-h1 writes it, asking for WebSocket when `websocket`.
struct Head<'p> {
    parts: &'p http::request::Parts,
    websocket: bool,
}

impl RequestHead for Head<'_> {
    fn method(&self) -> &Method {
        &self.parts.method
    }

    fn target(&self) -> Option<&PathAndQuery> {
        self.parts.uri.path_and_query()
    }

    fn write_fields(&self, fields: &mut Fields<'_>) {
        self.parts.write_fields(fields);
    }

    fn websocket_upgrade(&self) -> bool {
        self.websocket
    }
}

/// Sends `outgoing` through tollgate-h1 to 127.0.0.1:`port`, reads the answer's head, and
/// closes the connection.
pub async fn send_with_h1(port: u16, outgoing: &Outgoing) {
    let conn = Connection::open(port).await.unwrap();
    let (parts, body) = outgoing.request().into_parts();
    let head = Head {
        parts: &parts,
        websocket: outgoing.websocket,
    };
    let mut exchange = Exchange::new(conn, &head, body);
    // The answer only ends the exchange: what counts is what the listener recorded.
    let _ = poll_fn(|cx| exchange.poll_head(cx)).await;
}

/// Sends `outgoing` through hyper's HTTP/1.1 client to 127.0.0.1:`port`, and closes the
/// connection once answered or failed.
pub async fn send_with_hyper(port: u16, outgoing: &Outgoing) {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    // A request hyper refuses to finish (a body shorter than the length it was given) is an
    // error here, and the bytes it wrote before are what counts.
    let _ = sender.send_request(outgoing.request()).await;
    drop(sender);
    let _ = connection.await.unwrap();
}

/// What a client made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Received),
    /// The client's error, as it says it.
    Refused(String),
}

/// A response as a client handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub status: u16,
    /// The fields, by name (values of one name in the order received): the order of fields
    /// of different names carries no meaning (RFC 9110 §5.3), and a `HeaderMap` moves fields
    /// about when one is removed.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// After a 101: every byte the application sent after its head.
    pub switched: Option<Vec<u8>>,
}

fn sorted_fields(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<_> = map
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// The request that asks for a response of the kind `asked` says: a GET, a HEAD, or a GET
/// asking to switch to WebSocket.
fn asking(asked: Asked) -> Request<TestBody> {
    let mut request = Request::builder().uri("/");
    if asked == Asked::Head {
        request = request.method(Method::HEAD);
    }
    if asked == Asked::WebSocket {
        request = request
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13");
    }
    request.body(body(&Payload::Empty)).unwrap()
}

/// Reads the response the application on `port` gives to the request `asked` describes,
/// through tollgate-h1.
pub async fn read_with_h1(port: u16, asked: Asked) -> Verdict {
    let conn = Connection::open(port).await.unwrap();
    let (parts, body) = asking(asked).into_parts();
    let head = Head {
        parts: &parts,
        websocket: asked == Asked::WebSocket,
    };
    let mut exchange = Exchange::new(conn, &head, body);
    let head = match poll_fn(|cx| exchange.poll_head(cx)).await {
        Ok(head) => head,
        Err(error) => return Verdict::Refused(error.to_string()),
    };
    let mut received = Received {
        status: head.status.as_u16(),
        headers: sorted_fields(&head.headers),
        body: Vec::new(),
        trailers: Vec::new(),
        switched: None,
    };
    if head.framing == ResponseFraming::Switched {
        let upgraded = match exchange.into_upgraded() {
            Ok(upgraded) => upgraded,
            Err(error) => return Verdict::Refused(error.to_string()),
        };
        let mut after = upgraded.read_ahead.to_vec();
        let mut io = upgraded.io;
        io.read_to_end(&mut after).await.unwrap();
        received.switched = Some(after);
        return Verdict::Accepted(received);
    }
    collect(exchange.into_body(&head), received).await
}

/// Reads the response the application on `port` gives to the request `asked` describes,
/// through hyper's HTTP/1.1 client.
pub async fn read_with_hyper(port: u16, asked: Asked) -> Verdict {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection.with_upgrades());
    let verdict = match sender.send_request(asking(asked)).await {
        Err(error) => Verdict::Refused(error.to_string()),
        Ok(mut response) => {
            let mut received = Received {
                status: response.status().as_u16(),
                headers: sorted_fields(response.headers()),
                body: Vec::new(),
                trailers: Vec::new(),
                switched: None,
            };
            if received.status == 101 {
                match hyper::upgrade::on(&mut response).await {
                    Ok(upgraded) => {
                        let mut after = Vec::new();
                        TokioIo::new(upgraded)
                            .read_to_end(&mut after)
                            .await
                            .unwrap();
                        received.switched = Some(after);
                        Verdict::Accepted(received)
                    }
                    Err(error) => Verdict::Refused(error.to_string()),
                }
            } else {
                collect(response.into_body(), received).await
            }
        }
    };
    drop(sender);
    let _ = connection.await.unwrap();
    verdict
}

/// The rest of `received`: the body's data and trailers, or the error that ended it.
async fn collect<B>(mut body: B, mut received: Received) -> Verdict
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => received.body.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        received.trailers = sorted_fields(&trailers);
                    }
                }
            },
            Err(error) => return Verdict::Refused(error.to_string()),
        }
    }
    Verdict::Accepted(received)
}
