//! Kong's cors plugin as data: the `cors` block of an OAuthService, what it compiles to in the
//! Snapshot, and which `Access-Control-Allow-Origin` a request's `Origin` gets.
//!
//! Kong's rules, kept: an origin with no character outside `[A-Za-z0-9.:/-]` is compared
//! exactly (after dropping a default port), anything else is a regular expression, matched
//! against the host alone when it has no `:`, else against `scheme://host[:port]`. One
//! difference, on purpose: Kong anchors a regex by appending `$` and matching from the start,
//! which leaves the first branch of `a\.test|b\.test` unanchored at its end, so that
//! `a.test.evil.example` matches. Here the whole expression is anchored, `^(?:…)$`.

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Kong's `methods` values, its default being all of them, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CorsMethod {
    Get,
    Head,
    Put,
    Patch,
    Post,
    Delete,
    Options,
    Trace,
    Connect,
}

impl CorsMethod {
    pub const ALL: [CorsMethod; 9] = [
        CorsMethod::Get,
        CorsMethod::Head,
        CorsMethod::Put,
        CorsMethod::Patch,
        CorsMethod::Post,
        CorsMethod::Delete,
        CorsMethod::Options,
        CorsMethod::Trace,
        CorsMethod::Connect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CorsMethod::Get => "GET",
            CorsMethod::Head => "HEAD",
            CorsMethod::Put => "PUT",
            CorsMethod::Patch => "PATCH",
            CorsMethod::Post => "POST",
            CorsMethod::Delete => "DELETE",
            CorsMethod::Options => "OPTIONS",
            CorsMethod::Trace => "TRACE",
            CorsMethod::Connect => "CONNECT",
        }
    }
}

/// Kong's cors plugin configuration (`config.*` in camelCase), for browser clients: which
/// origins may read the responses of this service's routes and OAuth endpoints, and the
/// answer to their preflight requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins allowed in `Access-Control-Allow-Origin`. An entry made only of letters,
    /// digits and `.:/-` is compared exactly (`https://app.example.com`); any other is a
    /// regular expression matched against the whole host (`(.*\.)?example\.com`) or, when it
    /// contains `:`, the whole `scheme://host[:port]`. `*` alone, or no entry, allows every
    /// origin.
    #[serde(default)]
    #[schemars(inner(length(min = 1, max = 1024)))]
    pub origins: Vec<String>,
    /// `Access-Control-Allow-Methods` of a preflight's answer (all nine by default).
    #[serde(default = "default_methods")]
    pub methods: Vec<CorsMethod>,
    /// `Access-Control-Allow-Headers` of a preflight's answer. Empty: the headers the
    /// preflight asked for (`Access-Control-Request-Headers`) are allowed.
    #[serde(default)]
    #[schemars(inner(length(min = 1)))]
    pub headers: Vec<String>,
    /// `Access-Control-Expose-Headers` of actual responses.
    #[serde(default)]
    #[schemars(inner(length(min = 1)))]
    pub exposed_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`. As in Kong, with every origin allowed
    /// (`*` or no origins), the request's own Origin is then sent back: any site may make
    /// credentialed requests and read the answers. List the origins instead.
    #[serde(default)]
    pub credentials: bool,
    /// `Access-Control-Max-Age` of a preflight's answer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    /// Answer `Access-Control-Request-Private-Network: true` with
    /// `Access-Control-Allow-Private-Network: true`.
    #[serde(default)]
    pub private_network: bool,
    /// Do not answer preflights: they are treated as any other request (a proxied route
    /// then requires its bearer token, an OAuth endpoint answers 405).
    #[serde(default)]
    pub preflight_continue: bool,
    /// Add the CORS headers to responses whose request had no `Origin` (Kong's default).
    #[serde(default = "default_true")]
    pub allow_origin_absent: bool,
}

fn default_methods() -> Vec<CorsMethod> {
    CorsMethod::ALL.to_vec()
}

fn default_true() -> bool {
    true
}

/// A service's CORS settings, compiled: origins classified and regexes built, lists joined
/// into the header values they are sent as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    pub origins: AllowedOrigins,
    /// `Access-Control-Allow-Methods`, comma-separated.
    pub methods: String,
    /// `Access-Control-Allow-Headers`; `None` echoes `Access-Control-Request-Headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
    /// `Access-Control-Expose-Headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_headers: Option<String>,
    pub credentials: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    pub private_network: bool,
    pub preflight_continue: bool,
    pub allow_origin_absent: bool,
}

/// Which origins are allowed, in the four shapes Kong's handler tells apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AllowedOrigins {
    /// No origins, or `*` alone: `*` to every request.
    Every,
    /// One exact origin: sent as written whatever the request's Origin; the browser compares.
    One { origin: String },
    /// Several entries, one of them `*`: `*` to a request with an Origin.
    EveryListed,
    /// Matched against the request's Origin.
    Listed { entries: Vec<OriginEntry> },
}

/// One entry of [`AllowedOrigins::Listed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum OriginEntry {
    /// `scheme://host[:port]` without a default port, or the entry as written when it is no
    /// URL (`example.com`, which only an Origin without a scheme equals).
    Exact { origin: String },
    /// A regular expression, against the host alone or the whole origin.
    Pattern { regex: OriginRegex, by_host: bool },
}

/// An origin regex, built once: when compiled from a resource, and when a snapshot is read.
#[derive(Clone)]
pub struct OriginRegex {
    written: String,
    anchored: regex_lite::Regex,
}

/// Why an origin regex cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{written}` is not a regular expression tollgate can use: {why}")]
pub struct BadOriginRegex {
    pub written: String,
    pub why: String,
}

/// What a request's Origin is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginAnswer<'a> {
    /// `Access-Control-Allow-Origin: *`; `vary` says whether `Vary: Origin` goes with it.
    Every { vary: bool },
    /// This origin, with `Vary: Origin`.
    Origin(Cow<'a, str>),
    /// No `Access-Control-Allow-Origin` (and none from the application), `Vary: Origin`.
    Nobody,
}

impl OriginAnswer<'_> {
    /// Kong's `allow_all`: credentials then reflect the request's Origin.
    pub fn is_every(&self) -> bool {
        matches!(self, OriginAnswer::Every { .. })
    }
}

// === compile ===

/// Compiles a `cors` block; the error is the message of the resource's refusal.
pub fn compile(spec: &CorsSpec) -> Result<Cors, String> {
    let origins = compile_origins(&spec.origins)?;
    let methods = spec
        .methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let headers = header_list("headers", &spec.headers)?;
    let exposed_headers = header_list("exposedHeaders", &spec.exposed_headers)?;
    Ok(Cors {
        origins,
        methods,
        headers,
        exposed_headers,
        credentials: spec.credentials,
        max_age: spec.max_age,
        private_network: spec.private_network,
        preflight_continue: spec.preflight_continue,
        allow_origin_absent: spec.allow_origin_absent,
    })
}

fn compile_origins(origins: &[String]) -> Result<AllowedOrigins, String> {
    if let Some(empty) = origins.iter().position(String::is_empty) {
        return Err(format!(
            "cors.origins[{empty}] is empty: remove it, or write an origin such as \
             https://app.example.com"
        ));
    }
    match origins {
        [] => return Ok(AllowedOrigins::Every),
        [only] if only == "*" => return Ok(AllowedOrigins::Every),
        [only] if is_plain(only) => {
            return Ok(AllowedOrigins::One {
                origin: only.clone(),
            });
        }
        _ => {}
    }
    let mut entries = Vec::with_capacity(origins.len());
    for (index, written) in origins.iter().enumerate() {
        if written == "*" {
            // Every regex is still checked: the resource must be right as written.
            continue;
        }
        if is_plain(written) {
            // `https://app.example.com/` is how a URL is often copied; Kong drops the path.
            let written = match written.split_once("://") {
                Some(_) => written.trim_end_matches('/'),
                None => written,
            };
            let origin = match normalize_origin(written) {
                Some(origin) => origin.domain.into_owned(),
                None => written.to_owned(),
            };
            entries.push(OriginEntry::Exact { origin });
        } else {
            let regex = OriginRegex::new(written).map_err(|error| {
                format!(
                    "cors.origins[{index}] {error}: write an exact origin such as \
                     https://app.example.com, or a regex such as `(.*\\.)?example\\.com`"
                )
            })?;
            entries.push(OriginEntry::Pattern {
                by_host: !written.contains(':'),
                regex,
            });
        }
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(AllowedOrigins::EveryListed);
    }
    Ok(AllowedOrigins::Listed { entries })
}

/// Kong's test of an exact origin: nothing but `[A-Za-z0-9.:/-]`.
fn is_plain(origin: &str) -> bool {
    !origin.is_empty()
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b))
}

/// A list of header names as one header value; each name must be a token, so that the
/// value is a valid header and means what it lists.
fn header_list(field: &str, names: &[String]) -> Result<Option<String>, String> {
    if names.is_empty() {
        return Ok(None);
    }
    for (index, name) in names.iter().enumerate() {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!(
                "cors.{field}[{index}] `{}` is not a header name: use letters, digits and \
                 `-`, such as `Content-Type`",
                name.escape_default()
            ));
        }
    }
    Ok(Some(names.join(",")))
}

// === matching ===

/// A request's Origin as Kong compares it: `domain` is `scheme://host[:port]` without a
/// default port, `host` the host alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedOrigin<'a> {
    pub domain: Cow<'a, str>,
    pub host: &'a str,
}

/// Kong's normalisation of an origin. Without `://` it is not a URL and both parts are the
/// value itself (`example.com`, `null`). `None` for what no browser sends: a path, query,
/// fragment, user name, an empty host or a port that is not a number.
pub fn normalize_origin(origin: &str) -> Option<NormalizedOrigin<'_>> {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Some(NormalizedOrigin {
            domain: Cow::Borrowed(origin),
            host: origin,
        });
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || authority.bytes().any(|b| b"/?#@\\ \t".contains(&b)) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let default_port = matches!(
        (scheme, port),
        ("http", Some("80")) | ("https", Some("443"))
    );
    let domain = match port {
        Some(_) if default_port => Cow::Owned(format!("{scheme}://{host}")),
        _ => Cow::Borrowed(origin),
    };
    Some(NormalizedOrigin { domain, host })
}

impl AllowedOrigins {
    /// The answer to a request whose Origin is `origin` (`None` when it has none or an empty
    /// one), before credentials are considered.
    pub fn answer<'a>(&'a self, origin: Option<&'a str>) -> OriginAnswer<'a> {
        match self {
            AllowedOrigins::Every => OriginAnswer::Every { vary: false },
            AllowedOrigins::One { origin } => OriginAnswer::Origin(Cow::Borrowed(origin)),
            AllowedOrigins::EveryListed => match origin {
                Some(_) => OriginAnswer::Every { vary: true },
                None => OriginAnswer::Nobody,
            },
            AllowedOrigins::Listed { entries } => {
                let Some(normalized) = origin.and_then(normalize_origin) else {
                    return OriginAnswer::Nobody;
                };
                let allowed = entries.iter().any(|entry| match entry {
                    OriginEntry::Exact { origin } => *origin == normalized.domain,
                    OriginEntry::Pattern { regex, by_host } => {
                        let subject = if *by_host {
                            normalized.host
                        } else {
                            &normalized.domain
                        };
                        regex.is_match(subject)
                    }
                });
                if allowed {
                    OriginAnswer::Origin(normalized.domain)
                } else {
                    OriginAnswer::Nobody
                }
            }
        }
    }
}

// === impl OriginRegex ===

impl OriginRegex {
    pub fn new(written: &str) -> Result<Self, BadOriginRegex> {
        let anchored = regex_lite::Regex::new(&format!("^(?:{written})$")).map_err(|error| {
            BadOriginRegex {
                written: written.to_owned(),
                why: error.to_string(),
            }
        })?;
        Ok(Self {
            written: written.to_owned(),
            anchored,
        })
    }

    /// Whether the whole of `subject` matches.
    pub fn is_match(&self, subject: &str) -> bool {
        self.anchored.is_match(subject)
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl PartialEq for OriginRegex {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Eq for OriginRegex {}

impl fmt::Debug for OriginRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.written, f)
    }
}

impl Serialize for OriginRegex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for OriginRegex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        OriginRegex::new(&written).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
