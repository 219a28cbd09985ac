//! Tests of exchanges over a real socket to a scripted application: framing both ways,
//! interim responses, connection reuse, upgrades and a connection closed early.

use super::*;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Stream = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
>;

fn unknown_length_body(pieces: &[&'static str]) -> Stream {
    let frames: Vec<_> = pieces
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames))
}

/// An application that reads one request (head, and the body up to a line `end`), then
/// writes `response` raw; what it read comes back through the join handle.
async fn scripted_application(
    responses: Vec<&'static str>,
) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        for response in responses {
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !(request.ends_with(b"\r\n\r\n") && !request.starts_with(b"POST")
                || request.ends_with(b"end\r\n\r\n")
                || request.ends_with(b"\r\n0\r\n\r\n"))
            {
                if socket.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            seen.push(String::from_utf8(request).unwrap());
            socket.write_all(response.as_bytes()).await.unwrap();
        }
        seen
    });
    (port, task)
}

async fn exchange<B>(conn: Connection, method: &str, body: B) -> (Head, ResponseBody<B>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let request = http::Request::builder()
        .method(method)
        .uri("/x")
        .body(())
        .unwrap();
    let (parts, ()) = request.into_parts();
    let mut exchange = Exchange::new(conn, &parts, body);
    let head = std::future::poll_fn(|cx| exchange.poll_head(cx))
        .await
        .unwrap();
    let body = exchange.into_body(&head);
    (head, body)
}

#[tokio::test]
async fn a_streamed_request_goes_chunked_and_a_chunked_response_comes_back_whole() {
    let (port, application) = scripted_application(vec![
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n5\r\nthing\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    ])
    .await;
    let conn = Connection::open(port).await.unwrap();
    let (head, mut body) = exchange(conn, "POST", unknown_length_body(&["a=1", "&b=2"])).await;
    assert_eq!(head.status, StatusCode::OK, "the interim 100 is skipped");
    let collected = (&mut body).collect().await.unwrap().to_bytes();
    assert_eq!(collected, "something");

    // The connection is reusable, and carries the next request.
    let conn = body
        .take_reusable()
        .expect("a keep-alive connection comes back");
    assert!(!conn.is_closed());
    let (_, mut body) = exchange(conn, "GET", Empty::<Bytes>::new()).await;
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "abc"
    );
    assert!(
        body.take_reusable().is_some(),
        "given back with the last piece"
    );

    let seen = application.await.unwrap();
    assert_eq!(
        seen[0],
        "POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n"
    );
    assert_eq!(seen[1], "GET /x HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn a_body_ended_by_close_leaves_no_connection_to_reuse() {
    let (port, application) =
        scripted_application(vec!["HTTP/1.1 200 OK\r\n\r\nuntil the end"]).await;
    let conn = Connection::open(port).await.unwrap();
    let (_, mut body) = exchange(conn, "GET", Empty::<Bytes>::new()).await;
    application.await.unwrap(); // the application closes its socket
    let collected = (&mut body).collect().await.unwrap().to_bytes();
    assert_eq!(collected, "until the end");
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn an_idle_connection_the_application_closed_is_seen_closed() {
    let (port, application) = scripted_application(vec!["HTTP/1.1 204 No Content\r\n\r\n"]).await;
    let conn = Connection::open(port).await.unwrap();
    let (_, mut body) = exchange(conn, "GET", Empty::<Bytes>::new()).await;
    let conn = body.take_reusable().expect("a 204 has no body to read");
    application.await.unwrap(); // the application closes its socket
    let mut closed = false;
    for _ in 0..500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        closed = conn.is_closed();
        if closed {
            break;
        }
    }
    assert!(closed, "the application's FIN is seen");
}

/// A GET that asks to switch to WebSocket, with the client's own (dropped) fields.
struct WebSocketGet(http::request::Parts);

impl RequestHead for WebSocketGet {
    fn method(&self) -> &http::Method {
        &self.0.method
    }

    fn target(&self) -> Option<&http::uri::PathAndQuery> {
        self.0.uri.path_and_query()
    }

    fn write_fields(&self, fields: &mut Fields<'_>) {
        self.0.write_fields(fields);
    }

    fn websocket_upgrade(&self) -> bool {
        true
    }
}

fn websocket_get() -> WebSocketGet {
    let request = http::Request::builder()
        .uri("/ws")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    WebSocketGet(request.into_parts().0)
}

#[tokio::test]
async fn a_101_gives_up_the_socket_with_the_bytes_read_past_it() {
    let (port, application) = scripted_application(vec![
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x01\x02hi",
    ])
    .await;
    let conn = Connection::open(port).await.unwrap();
    let mut exchange = Exchange::new(conn, &websocket_get(), Empty::<Bytes>::new());
    let head = std::future::poll_fn(|cx| exchange.poll_head(cx))
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = exchange.into_upgraded().unwrap();
    let seen = application.await.unwrap();
    assert_eq!(
        seen[0],
        "GET /ws HTTP/1.1\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         upgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    );
    let mut read_ahead = upgraded.read_ahead.to_vec();
    let mut io = upgraded.io;
    io.read_to_end(&mut read_ahead).await.unwrap();
    assert_eq!(read_ahead, b"\x01\x02hi");
}

#[tokio::test]
async fn a_declined_upgrade_is_a_response_whose_connection_is_not_reused() {
    let (port, _application) = scripted_application(vec![
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
    ])
    .await;
    let conn = Connection::open(port).await.unwrap();
    let mut exchange = Exchange::new(conn, &websocket_get(), Empty::<Bytes>::new());
    let head = std::future::poll_fn(|cx| exchange.poll_head(cx))
        .await
        .unwrap();
    assert_eq!(head.status, StatusCode::FORBIDDEN);
    let mut body = exchange.into_body(&head);
    let collected = (&mut body).collect().await.unwrap().to_bytes();
    assert_eq!(collected, "no");
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn a_connection_closed_before_any_response_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { drop(listener.accept().await) });
    let conn = Connection::open(port).await.unwrap();
    let request = http::Request::builder().uri("/x").body(()).unwrap();
    let (parts, ()) = request.into_parts();
    let mut exchange = Exchange::new(conn, &parts, Empty::<Bytes>::new());
    let error = std::future::poll_fn(|cx| exchange.poll_head(cx))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, Error::ClosedBeforeResponse | Error::Io(_)),
        "{error}"
    );
    assert!(exchange.received_nothing());
}
