//! Kong's responses: status, JSON body and headers, built in one place so that every endpoint
//! answers with the same bytes Kong does.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// A response of the OAuth endpoints or of the bearer check, ready to become HTTP.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthResponse {
    pub status: StatusCode,
    /// JSON. Token responses hold fresh tokens, so `Debug` never prints it.
    pub body: Bytes,
    pub www_authenticate: Option<String>,
    /// The token and authorize endpoints forbid caching (RFC 6749 §5.1); the bearer check's
    /// 401s carry no such headers in Kong.
    pub no_store: bool,
    /// Seconds for a `Retry-After` header: on a 503 that a later attempt may not get.
    pub retry_after: Option<u32>,
}

/// An error of the OAuth endpoints, before the `state` is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: Cow<'static, str>,
    /// Client credentials came in the auth header: Kong answers 401 with a Basic challenge.
    pub basic_challenge: bool,
    /// Seconds for a `Retry-After` header (a 503 the client may retry).
    pub retry_after: Option<u32>,
}

/// The description of every refused token in `WWW-Authenticate`, as Kong writes it.
const INVALID_TOKEN: &str = "The access token is invalid or has expired";

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
}

// === impl OAuthResponse ===

impl OAuthResponse {
    /// 200 with a JSON body, for the token and authorize endpoints.
    pub fn ok_json<T: Serialize>(body: &T) -> Self {
        Self {
            status: StatusCode::OK,
            body: to_json(body),
            www_authenticate: None,
            no_store: true,
            retry_after: None,
        }
    }

    /// Any status with a JSON body, for the token and authorize endpoints.
    pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Self {
        Self {
            status,
            body: to_json(body),
            www_authenticate: None,
            no_store: true,
            retry_after: None,
        }
    }

    /// 405 for a method other than POST on an OAuth endpoint. `endpoint` is Kong's wording:
    /// "token endpoint" or "authorization endpoint".
    pub fn invalid_method(method: &http::Method, endpoint: &str, realm: Option<&str>) -> Self {
        let description = format!("The HTTP method {method} is invalid for the {endpoint}");
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: to_json(&ErrorBody {
                error: "invalid_method",
                error_description: &description,
                state: None,
            }),
            www_authenticate: Some(bearer_challenge(
                realm,
                Some(("invalid_method", &description)),
            )),
            no_store: true,
            retry_after: None,
        }
    }

    /// 401 for a protected request that carries no token.
    pub fn token_missing(realm: Option<&str>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: to_json(&ErrorBody {
                error: "invalid_request",
                error_description: "The access token is missing",
                state: None,
            }),
            www_authenticate: Some(bearer_challenge(realm, None)),
            no_store: false,
            retry_after: None,
        }
    }

    /// 401 for an unknown, expired, revoked or foreign token.
    pub fn token_invalid(realm: Option<&str>) -> Self {
        Self::token_refused(realm, INVALID_TOKEN)
    }

    /// 401 for a global token presented to a service without `globalCredentials`: Kong's
    /// own description in the body, its generic one in `WWW-Authenticate`.
    pub fn token_global_on_local_service(realm: Option<&str>) -> Self {
        Self::token_refused(
            realm,
            "The access token is global, but the current plugin is configured without 'global_credentials'",
        )
    }

    fn token_refused(realm: Option<&str>, description: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            body: to_json(&ErrorBody {
                error: "invalid_token",
                error_description: description,
                state: None,
            }),
            www_authenticate: Some(bearer_challenge(
                realm,
                Some(("invalid_token", INVALID_TOKEN)),
            )),
            no_store: false,
            retry_after: None,
        }
    }

    /// Kong's body for failures that are the gateway's own fault.
    pub fn message(status: StatusCode, message: &str) -> Self {
        #[derive(Serialize)]
        struct MessageBody<'a> {
            message: &'a str,
        }
        Self {
            status,
            body: to_json(&MessageBody { message }),
            www_authenticate: None,
            no_store: false,
            retry_after: None,
        }
    }

    pub fn into_http(self) -> Response<Bytes> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if self.no_store {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.www_authenticate {
            // A realm with bytes a header cannot hold is refused by the schema; should one slip
            // through, the response goes out without the challenge rather than not at all.
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

impl std::fmt::Debug for OAuthResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

// === impl OAuthError ===

impl OAuthError {
    pub fn bad_request(code: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    /// `invalid_client`: 401 with a Basic challenge when the credentials came in the header,
    /// else 400, as Kong answers.
    pub fn invalid_client(from_header: bool) -> Self {
        Self {
            status: if from_header {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            },
            code: "invalid_client",
            description: Cow::Borrowed("Invalid client authentication"),
            basic_challenge: from_header,
            retry_after: None,
        }
    }

    /// `invalid_client` as RFC 6749 §5.2 and RFC 7662 §2.3 answer it wherever Kong has no
    /// say: 401 with a Basic challenge, however the client sent its credentials.
    pub fn unauthenticated_client() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            ..Self::invalid_client(true)
        }
    }

    /// 503 `temporarily_unavailable` (RFC 6749 §4.1.2.1's code) with `Retry-After`: the
    /// server cannot take the request now, and the same request may succeed later.
    pub fn temporarily_unavailable(description: &'static str, retry_after: u32) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "temporarily_unavailable",
            description: Cow::Borrowed(description),
            basic_challenge: false,
            retry_after: Some(retry_after),
        }
    }

    pub fn into_response(self, state: Option<&str>) -> OAuthResponse {
        OAuthResponse {
            status: self.status,
            body: to_json(&ErrorBody {
                error: self.code,
                error_description: &self.description,
                state,
            }),
            www_authenticate: self
                .basic_challenge
                .then(|| "Basic realm=\"OAuth2.0\"".to_owned()),
            no_store: true,
            retry_after: self.retry_after,
        }
    }
}

/// `Bearer`, then `realm="…"` and `error="…", error_description="…"` when present, joined
/// with ", " as RFC 6750 §3 writes them.
fn bearer_challenge(realm: Option<&str>, error: Option<(&str, &str)>) -> String {
    let mut params = Vec::new();
    if let Some(realm) = realm {
        params.push(format!("realm=\"{realm}\""));
    }
    if let Some((code, description)) = error {
        params.push(format!("error=\"{code}\""));
        params.push(format!("error_description=\"{description}\""));
    }
    if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    }
}

fn to_json<T: Serialize>(body: &T) -> Bytes {
    // Serialising these plain structs cannot fail; an empty object keeps the response valid.
    serde_json::to_vec(body).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response<Bytes>, name: header::HeaderName) -> Option<&str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn missing_token_is_kongs_401() {
        let r = OAuthResponse::token_missing(None).into_http();
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.body().as_ref(),
            br#"{"error":"invalid_request","error_description":"The access token is missing"}"#
        );
        assert_eq!(header(&r, header::WWW_AUTHENTICATE), Some("Bearer"));
        let r = OAuthResponse::token_missing(Some("iam")).into_http();
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some("Bearer realm=\"iam\"")
        );
    }

    #[test]
    fn invalid_token_is_kongs_401() {
        let r = OAuthResponse::token_invalid(Some("iam")).into_http();
        assert_eq!(
            r.body().as_ref(),
            br#"{"error":"invalid_token","error_description":"The access token is invalid or has expired"}"#
        );
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some(
                "Bearer realm=\"iam\", error=\"invalid_token\", error_description=\"The access token is invalid or has expired\""
            )
        );
        assert_eq!(header(&r, header::CACHE_CONTROL), None);
    }

    #[test]
    fn a_global_token_on_a_local_service_keeps_the_generic_challenge() {
        // 03-access_spec.lua:4415.
        let r = OAuthResponse::token_global_on_local_service(None).into_http();
        assert_eq!(
            r.body().as_ref(),
            br#"{"error":"invalid_token","error_description":"The access token is global, but the current plugin is configured without 'global_credentials'"}"#
        );
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some(
                "Bearer error=\"invalid_token\", error_description=\"The access token is invalid or has expired\""
            )
        );
    }

    #[test]
    fn invalid_method_is_405_with_challenge() {
        let r =
            OAuthResponse::invalid_method(&http::Method::GET, "token endpoint", None).into_http();
        assert_eq!(r.status(), 405);
        assert_eq!(
            r.body().as_ref(),
            br#"{"error":"invalid_method","error_description":"The HTTP method GET is invalid for the token endpoint"}"#
        );
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some(
                "Bearer error=\"invalid_method\", error_description=\"The HTTP method GET is invalid for the token endpoint\""
            )
        );
        assert_eq!(header(&r, header::CACHE_CONTROL), Some("no-store"));
        assert_eq!(header(&r, header::PRAGMA), Some("no-cache"));
    }

    #[test]
    fn invalid_client_from_header_is_401_basic() {
        let r = OAuthError::invalid_client(true)
            .into_response(Some("xyz"))
            .into_http();
        assert_eq!(r.status(), 401);
        assert_eq!(
            header(&r, header::WWW_AUTHENTICATE),
            Some("Basic realm=\"OAuth2.0\"")
        );
        assert_eq!(
            r.body().as_ref(),
            br#"{"error":"invalid_client","error_description":"Invalid client authentication","state":"xyz"}"#
        );
        let r = OAuthError::invalid_client(false)
            .into_response(None)
            .into_http();
        assert_eq!(r.status(), 400);
        assert_eq!(header(&r, header::WWW_AUTHENTICATE), None);
    }
}
