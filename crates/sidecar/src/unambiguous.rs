//! Requests the gateway and the application read one way only: exactly one `Host`, and the
//! normal form of the path, which routing, `stripPath` and the application then all see.

use std::borrow::Cow;

use http::header;
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};
use tollgate_canon::path;

/// Makes `request` one the gateway and the application can read one way only, or says why it
/// is not: exactly one `Host` (none only before HTTP/1.1, RFC 9112 §3.2), and the normal form
/// of its path ([`path::normalize`]), which routing, `stripPath` and the application then all
/// see. The query string is kept byte for byte. A path that is normal already costs nothing.
pub(crate) fn read_one_way<B>(request: &mut Request<B>) -> Result<(), &'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("Bad request: more than one Host header"),
        (None, None) if request.version() == Version::HTTP_11 => {
            return Err("Bad request: no Host header");
        }
        _ => {}
    }
    let normal = match path::normalize(request.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(error) => return Err(error.message()),
    };
    *request.uri_mut() = with_path(request.uri(), &normal).ok_or("Bad request")?;
    Ok(())
}

/// `uri` with its path replaced by `path`, its query kept as it is.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(request: http::request::Builder) -> Result<String, &'static str> {
        let mut request = request.body(()).unwrap();
        read_one_way(&mut request)?;
        Ok(request.uri().to_string())
    }

    #[test]
    fn the_path_is_normalised_and_the_query_kept_byte_for_byte() {
        let get = |uri: &str| Request::get(uri).header("host", "iamhost");
        assert_eq!(
            read(get("/public/%2e%2E/event/1?a=%2e%2e&b=..%2F")).unwrap(),
            "/event/1?a=%2e%2e&b=..%2F"
        );
        assert_eq!(
            read(get("https://iamhost/public/../event")).unwrap(),
            "https://iamhost/event"
        );
        assert_eq!(read(get("/event/1?x")).unwrap(), "/event/1?x");
        assert_eq!(
            read(get("/public/../../event")),
            Err("Bad request: the path climbs above /")
        );
    }

    #[test]
    fn an_http11_request_has_exactly_one_host() {
        let no_host = Request::get("/event");
        assert_eq!(read(no_host), Err("Bad request: no Host header"));
        let two = Request::get("/event")
            .header("host", "a")
            .header("host", "b");
        assert_eq!(read(two), Err("Bad request: more than one Host header"));
        let http10 = Request::get("/event").version(Version::HTTP_10);
        assert_eq!(read(http10).unwrap(), "/event");
        let http2 = Request::get("https://iamhost/event").version(Version::HTTP_2);
        assert_eq!(read(http2).unwrap(), "https://iamhost/event");
    }
}
