//! Where a proxied request carries its access token, as Kong's `parse_access_token` looks for
//! it, and how `hideCredentials` takes it out again. Pure functions: the gateway reads the
//! body; these read the bytes.
//!
//! The rule: the value of the service's `authHeaderName` header, when the request has one
//! that is text; only when it has none, `access_token` in the query string merged with a
//! JSON, form or multipart body of a POST, PUT or PATCH, the body winning.

use std::borrow::Cow;

use bytes::Bytes;
use http::{Method, Uri};

use crate::params::{self, BodyKind, Params};

/// The parameter that carries the token in a query string or a body.
pub const ACCESS_TOKEN: &str = "access_token";

/// Where a request's access token was found: `hideCredentials` removes it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundIn {
    /// The `authHeaderName` header.
    Header,
    /// The query string or the body.
    Parameters,
    Nowhere,
}

/// A request's access token, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<'r> {
    pub token: Option<Cow<'r, str>>,
    pub found_in: FoundIn,
}

/// What `hideCredentials` changes in a request before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// The `authHeaderName` header is removed.
    pub remove_auth_header: bool,
    /// The URI without `access_token` in its query; `None` when it is unchanged.
    pub uri: Option<Uri>,
    /// The form body without `access_token`, to forward in place of the one read (without its
    /// `Content-Length`): always there when a form body was read, even an unchanged one.
    pub form_body: Option<Bytes>,
}

/// The access token of a request: in `auth_header`, the value of its `authHeaderName`
/// header read as text; else `access_token` of the parameters: `body`'s when its body was
/// read ([`body_parameters`], the query string merged in), the query string's otherwise. A
/// token given twice, or as something other than a string, is none.
pub fn locate<'r>(
    auth_header: Option<&'r str>,
    query: Option<&str>,
    body: Option<&Params>,
) -> Located<'r> {
    if let Some(value) = auth_header {
        return Located {
            token: Some(Cow::Borrowed(in_header(value))),
            found_in: FoundIn::Header,
        };
    }
    let token = match body {
        Some(params) => params.text(ACCESS_TOKEN).map(str::to_owned),
        None => Params::from_urlencoded(query.unwrap_or("").as_bytes())
            .text(ACCESS_TOKEN)
            .map(str::to_owned),
    };
    match token {
        Some(token) => Located {
            token: Some(Cow::Owned(token)),
            found_in: FoundIn::Parameters,
        },
        None => Located {
            token: None,
            found_in: FoundIn::Nowhere,
        },
    }
}

/// The token in the value of the `authHeaderName` header: the second word of `Bearer X` or
/// `Token X` (any case), else the whole value, as Kong reads it. Words are split at ASCII
/// whitespace, as Kong's Lua patterns split them; a header value read as text is ASCII anyway,
/// and the ASCII split is several times cheaper than the Unicode one on every request.
pub fn in_header(value: &str) -> &str {
    let mut words = value.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(scheme), Some(token), None)
            if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") =>
        {
            token
        }
        _ => value,
    }
}

/// The kind of body to read for a token, for a request without the auth header: a JSON, form
/// or multipart body of a POST, PUT or PATCH. `None`: the body is not looked into.
pub fn body_to_read(method: &Method, content_type: Option<&str>) -> Option<BodyKind> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return None;
    }
    match BodyKind::of(content_type) {
        BodyKind::Other => None,
        kind => Some(kind),
    }
}

/// The parameters of a request whose body was read: its query string merged with the body,
/// the body winning. A body that does not parse counts as none, as Kong's `get_body` failing
/// leaves only the query string.
pub async fn body_parameters(
    query: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
) -> Params {
    Params::parse(query, content_type, body)
        .await
        .unwrap_or_else(|_| Params::from_urlencoded(query.unwrap_or("").as_bytes()))
}

/// Kong's `hideCredentials`: a token found in the header goes with the header; any other
/// request loses `access_token` from its query string and from a form body (`form`, when one
/// was read), not from a JSON or multipart body, as in Kong.
pub fn hide(found_in: FoundIn, uri: &Uri, form: Option<&Bytes>) -> Hidden {
    match found_in {
        FoundIn::Header => Hidden {
            remove_auth_header: true,
            uri: None,
            form_body: None,
        },
        FoundIn::Parameters | FoundIn::Nowhere => Hidden {
            remove_auth_header: false,
            uri: without_query_token(uri),
            form_body: form.map(without_form_token),
        },
    }
}

/// The URI without `access_token=…` in its query, or `None` when its query has no such pair.
/// The other parameters keep their exact bytes.
fn without_query_token(uri: &Uri) -> Option<Uri> {
    let kept = params::without_key(uri.query()?.as_bytes(), ACCESS_TOKEN)?;
    // Whole pairs of a string, cut at ASCII `&`: still UTF-8.
    let kept = String::from_utf8(kept).ok()?;
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{kept}", uri.path())
    };
    let mut builder = Uri::builder();
    if let Some(scheme) = uri.scheme() {
        builder = builder.scheme(scheme.clone());
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.clone());
    }
    builder.path_and_query(path_and_query).build().ok()
}

/// The form body without `access_token=…`; bytes that are not UTF-8 pass through untouched.
fn without_form_token(body: &Bytes) -> Bytes {
    params::without_key(body, ACCESS_TOKEN).map_or_else(|| body.clone(), Bytes::from)
}

#[cfg(test)]
mod tests;
