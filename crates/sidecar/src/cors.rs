//! Kong's cors plugin at the gateway, as pure functions: a preflight's answer, and the CORS
//! headers every other response of a service with a `cors` block carries.
//!
//! The gateway asks [`Step::of`] once a request is routed, before anything else of its
//! service runs: a preflight is answered here and never reaches the bearer check, the OAuth
//! endpoints or the application; any other request goes on, and its answer, whoever made it
//! (the application, a 401, an OAuth endpoint), gets [`ResponseHeaders::add_to`].

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tollgate_api::cors::{Cors, OriginAnswer};

static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");
static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
static ORIGIN_VALUE: HeaderValue = HeaderValue::from_static("Origin");
static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");

/// What the gateway does with a request of a service, as to CORS.
#[derive(Debug)]
pub enum Step {
    /// A preflight, answered in full.
    Answer(Response<Full<Bytes>>),
    /// Go on; the response gets these headers, if any.
    Continue(Option<Box<ResponseHeaders>>),
}

/// The CORS headers of an actual response, worked out from its request's Origin before the
/// request is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// `Some`: set (replacing the application's); `None`: remove the application's.
    allow_origin: Option<HeaderValue>,
    /// `Vary: Origin`: the answer depends on the request's Origin.
    vary_origin: bool,
    allow_credentials: bool,
    expose_headers: Option<HeaderValue>,
}

impl Step {
    /// The step for `request` to a service whose `cors` block is `cors` (`None`: no CORS).
    pub fn of<B>(cors: Option<&Cors>, request: &Request<B>) -> Step {
        let Some(cors) = cors else {
            return Step::Continue(None);
        };
        let headers = request.headers();
        let origin = request_origin(headers);
        if is_preflight(request.method(), origin, headers) {
            if cors.preflight_continue {
                // Kong leaves the answer wholly to what comes next: no header is added.
                return Step::Continue(None);
            }
            return Step::Answer(preflight(cors, origin, headers));
        }
        Step::Continue(response_headers(cors, origin).map(Box::new))
    }
}

/// The request's first Origin, when it is non-empty text (Kong's `is_origin_provided`).
fn request_origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(header::ORIGIN)
        .filter(|v| !v.is_empty() && v.to_str().is_ok())
}

/// Kong's test of a preflight: OPTIONS with an Origin and an
/// `Access-Control-Request-Method`. An OPTIONS without them is an ordinary request.
fn is_preflight(method: &Method, origin: Option<&HeaderValue>, headers: &HeaderMap) -> bool {
    *method == Method::OPTIONS
        && origin.is_some()
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The origin and credentials headers, Kong's `configure_origin` and `configure_credentials`:
/// `(Access-Control-Allow-Origin, Vary: Origin, Access-Control-Allow-Credentials)`.
fn origin_headers(cors: &Cors, origin: Option<&HeaderValue>) -> (Option<HeaderValue>, bool, bool) {
    let origin_text = origin.and_then(|v| v.to_str().ok());
    let answer = cors.origins.answer(origin_text);
    let (mut allow_origin, mut vary) = match &answer {
        OriginAnswer::Every { vary } => (Some(STAR.clone()), *vary),
        // From the configuration or the request's own header: valid header bytes either way.
        OriginAnswer::Origin(value) => (HeaderValue::from_str(value).ok(), true),
        OriginAnswer::Nobody => (None, true),
    };
    let mut credentials = false;
    if cors.credentials {
        if !answer.is_every() {
            credentials = true;
        } else if let Some(origin) = origin {
            // Kong: `*` cannot go with credentials, so the request's Origin is sent back,
            // whatever it is. Documented: list the origins instead.
            allow_origin = Some(origin.clone());
            vary = true;
            credentials = true;
        }
    }
    (allow_origin, vary, credentials)
}

/// The answer to a preflight: 200, empty, with every header Kong's `access` phase sets.
fn preflight(
    cors: &Cors,
    origin: Option<&HeaderValue>,
    request: &HeaderMap,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let (allow_origin, vary, credentials) = origin_headers(cors, origin);
    if let Some(value) = allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    if vary {
        headers.insert(header::VARY, ORIGIN_VALUE.clone());
    }
    if credentials {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
    }
    let allow_headers = match &cors.headers {
        Some(listed) => HeaderValue::from_str(listed).ok(),
        None => request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
    };
    if let Some(value) = allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
    }
    if let Ok(methods) = HeaderValue::from_str(&cors.methods) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    }
    if let Some(max_age) = cors.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
    }
    if cors.private_network
        && request
            .get(&REQUEST_PRIVATE_NETWORK)
            .is_some_and(|v| v.as_bytes() == b"true")
    {
        headers.insert(ALLOW_PRIVATE_NETWORK.clone(), TRUE.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// Kong's `header_filter`: what an actual response gets; `None` when a request without
/// Origin gets nothing (`allowOriginAbsent: false`).
fn response_headers(cors: &Cors, origin: Option<&HeaderValue>) -> Option<ResponseHeaders> {
    if origin.is_none() && !cors.allow_origin_absent {
        return None;
    }
    let (allow_origin, vary_origin, allow_credentials) = origin_headers(cors, origin);
    Some(ResponseHeaders {
        allow_origin,
        vary_origin,
        allow_credentials,
        expose_headers: cors
            .exposed_headers
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok()),
    })
}

impl ResponseHeaders {
    /// Sets them on a response, as Kong's `header_filter` does: `Vary: Origin` is added to
    /// the application's own `Vary`, the others replace its values.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        match &self.allow_origin {
            Some(value) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value.clone());
            }
            None => {
                headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
            }
        }
        if self.vary_origin {
            headers.append(header::VARY, ORIGIN_VALUE.clone());
        }
        if self.allow_credentials {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(value) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value.clone());
        }
    }
}

/// Adds `cors`'s headers, if any, to `response`.
pub fn add<B>(mut response: Response<B>, cors: Option<Box<ResponseHeaders>>) -> Response<B> {
    if let Some(cors) = cors {
        cors.add_to(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests;
