//! A stand-in for the IRIS web application of the article, for `make run`: answers
//! `GET /event/1` with the article's event and prints the identity each request arrived with,
//! so a newcomer sees what the sidecar hands to IRIS.
//!
//! `cargo run --example demo_upstream -- [ADDR]` (default 127.0.0.1:52773, IRIS's web port).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

const EVENT_1: &str = r#"{"id":1,"Name":"Global Summit","Location":{"id":1,"City":"Boston","Country":"United States of America"}}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:52773".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("demo IRIS listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                Ok::<_, Infallible>(answer(&request))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    println!(
        "IRIS got {} {}  consumer={} userid={} client={}",
        request.method(),
        request.uri(),
        header("x-consumer-username"),
        header("x-authenticated-userid"),
        header("x-credential-identifier"),
    );
    let (status, body) = match request.uri().path() {
        "/event/1" => (StatusCode::OK, EVENT_1.to_owned()),
        path => (
            StatusCode::NOT_FOUND,
            format!(r#"{{"error":"no event at {path}"}}"#),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
