//! Request parameters of the OAuth endpoints: the query string merged with the body, where the
//! body wins, as Kong merges them. The body may be JSON, form-urlencoded or multipart.

use std::collections::HashMap;

use bytes::Bytes;

/// One parameter. Kong hands its rules whatever the body decoder produced, so a parameter may
/// be something other than a string (a JSON array, a repeated form key); rules that need a
/// string treat those as Kong does.
#[derive(Clone, PartialEq, Eq)]
pub enum ParamValue {
    Text(String),
    /// A JSON number or boolean, with its JSON text. Kong's rules see a number, not a string:
    /// `scope`, `code_verifier` and the rest refuse it. Only `authenticated_userid` takes its
    /// text (Kong fails with a 500 when it stores one).
    Scalar(String),
    /// A JSON array, object or null, or a key repeated in a form or query string.
    NotText,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params(HashMap<String, ParamValue>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamsError {
    #[error("the request body is not valid JSON")]
    InvalidJson,
    #[error("a JSON request body must be an object")]
    JsonNotObject,
    #[error("the multipart request body is malformed")]
    InvalidMultipart,
}

/// The body kinds the endpoints decode, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Multipart,
    /// Anything else: the body is ignored, as Kong ignores it.
    Other,
}

// === impl Params ===

impl Params {
    /// Decodes the query string and the body, the body's values replacing the query's.
    pub async fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Self, ParamsError> {
        let mut params = Self::from_urlencoded(query.unwrap_or("").as_bytes());
        let body_params = match BodyKind::of(content_type) {
            BodyKind::Json if body.iter().all(u8::is_ascii_whitespace) => Self::default(),
            BodyKind::Json => Self::from_json(&body)?,
            BodyKind::Form => Self::from_urlencoded(&body),
            BodyKind::Multipart => {
                match content_type.and_then(|ct| multer::parse_boundary(ct).ok()) {
                    Some(boundary) => Self::from_multipart(boundary, body).await?,
                    None => return Err(ParamsError::InvalidMultipart),
                }
            }
            BodyKind::Other => Self::default(),
        };
        params.0.extend(body_params.0);
        Ok(params)
    }

    /// Decodes `a=1&b=2`. A key given more than once becomes [`ParamValue::NotText`], as Kong
    /// turns it into a table.
    pub fn from_urlencoded(input: &[u8]) -> Self {
        let mut map = HashMap::new();
        for (key, value) in form_urlencoded::parse(input) {
            map.entry(key.into_owned())
                .and_modify(|v| *v = ParamValue::NotText)
                .or_insert_with(|| ParamValue::Text(value.into_owned()));
        }
        Self(map)
    }

    fn from_json(body: &[u8]) -> Result<Self, ParamsError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| ParamsError::InvalidJson)?;
        let serde_json::Value::Object(object) = value else {
            return Err(ParamsError::JsonNotObject);
        };
        let map = object
            .into_iter()
            .map(|(key, value)| {
                let value = match value {
                    serde_json::Value::String(s) => ParamValue::Text(s),
                    serde_json::Value::Number(n) => ParamValue::Scalar(n.to_string()),
                    serde_json::Value::Bool(b) => ParamValue::Scalar(b.to_string()),
                    _ => ParamValue::NotText,
                };
                (key, value)
            })
            .collect();
        Ok(Self(map))
    }

    async fn from_multipart(boundary: String, body: Bytes) -> Result<Self, ParamsError> {
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut map = HashMap::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|_| ParamsError::InvalidMultipart)?
        {
            let Some(name) = field.name().map(str::to_owned) else {
                continue;
            };
            let is_file = field.file_name().is_some();
            let text = field
                .text()
                .await
                .map_err(|_| ParamsError::InvalidMultipart)?;
            if is_file {
                continue;
            }
            map.entry(name)
                .and_modify(|v| *v = ParamValue::NotText)
                .or_insert(ParamValue::Text(text));
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.0.get(key)
    }

    /// The parameter's text; `None` when it is absent or not a string.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(ParamValue::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// The parameter's text, a JSON number's or boolean's included: scripts often send
    /// `"authenticated_userid": 1`, and its text is what they mean.
    pub fn text_or_scalar(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(ParamValue::Text(s) | ParamValue::Scalar(s)) => Some(s),
            _ => None,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), ParamValue::Text(value.into()));
    }
}

/// A value may be a client secret or a provision key: `Debug` shows only its kind.
/// `input`, a query string or a form body, without the pairs whose key decodes to `name`, or
/// `None` when it has none. The pairs kept keep their exact bytes, so the application gets
/// what the client sent with only the credential gone (Kong's `hide_credentials`).
pub fn without_key(input: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut removed = false;
    let mut kept: Vec<&[u8]> = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        if pair_has_key(pair, name) {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    removed.then(|| kept.join(&b'&'))
}

/// Whether `key=value` (or a bare `key`) has the key `name`, decoded as the parser decodes it:
/// `access%5Ftoken` and `access_token` are the same key.
fn pair_has_key(pair: &[u8], name: &str) -> bool {
    let key = pair.split(|&b| b == b'=').next().unwrap_or_default();
    form_urlencoded::parse(key)
        .next()
        .is_some_and(|(decoded, _)| decoded == name)
}

impl std::fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(_) => f.write_str("Text(<redacted>)"),
            Self::Scalar(_) => f.write_str("Scalar(<redacted>)"),
            Self::NotText => f.write_str("NotText"),
        }
    }
}

/// Parameters carry client secrets and provision keys: `Debug` lists only the names.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.0.keys().collect();
        keys.sort();
        f.debug_struct("Params").field("keys", &keys).finish()
    }
}

// === impl BodyKind ===

impl BodyKind {
    pub fn of(content_type: Option<&str>) -> Self {
        let Some(ct) = content_type else {
            return Self::Other;
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Self::Json,
            "application/x-www-form-urlencoded" => Self::Form,
            "multipart/form-data" => Self::Multipart,
            e if e.starts_with("application/") && e.ends_with("+json") => Self::Json,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_key_removes_every_spelling_of_the_key_and_keeps_the_rest_exactly() {
        let input = b"a=1&access_token=x&b=%20y+z&access%5Ftoken=y&access_token&&c";
        assert_eq!(
            without_key(input, "access_token").as_deref(),
            Some(&b"a=1&b=%20y+z&&c"[..])
        );
        assert_eq!(
            without_key(b"access_token=x", "access_token").as_deref(),
            Some(&b""[..])
        );
        // A value that looks like the key is not the key.
        assert_eq!(without_key(b"x=access_token", "access_token"), None);
        assert_eq!(without_key(b"", "access_token"), None);
    }

    async fn parse(
        query: Option<&str>,
        ct: Option<&str>,
        body: &str,
    ) -> Result<Params, ParamsError> {
        Params::parse(query, ct, Bytes::from(body.to_owned())).await
    }

    #[tokio::test]
    async fn the_articles_json_body() {
        let p = parse(
            None,
            Some("application/json"),
            r#"{"client_id":"clientid","client_secret":"clientsecret","grant_type":"password",
                "provision_key":"provisionkey","authenticated_userid":"1"}"#,
        )
        .await
        .unwrap();
        assert_eq!(p.text("grant_type"), Some("password"));
        assert_eq!(p.text("authenticated_userid"), Some("1"));
    }

    #[tokio::test]
    async fn body_wins_over_query() {
        let p = parse(
            Some("grant_type=password&state=q"),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            "grant_type=refresh_token",
        )
        .await
        .unwrap();
        assert_eq!(p.text("grant_type"), Some("refresh_token"));
        assert_eq!(p.text("state"), Some("q"));
    }

    #[tokio::test]
    async fn json_numbers_and_arrays_are_not_text() {
        let p = parse(
            None,
            Some("application/json"),
            r#"{"authenticated_userid":1,"code_verifier":true,"scope":["a"]}"#,
        )
        .await
        .unwrap();
        // 03-access_spec.lua:2656: Kong sees a number, not a string.
        assert_eq!(p.text("authenticated_userid"), None);
        assert_eq!(p.text_or_scalar("authenticated_userid"), Some("1"));
        assert_eq!(
            p.get("code_verifier"),
            Some(&ParamValue::Scalar("true".into()))
        );
        assert_eq!(p.get("scope"), Some(&ParamValue::NotText));
        assert_eq!(p.text("scope"), None);
    }

    #[tokio::test]
    async fn repeated_form_keys_are_not_text() {
        let p = parse(
            None,
            Some("application/x-www-form-urlencoded"),
            "scope=a&scope=b",
        )
        .await
        .unwrap();
        assert_eq!(p.get("scope"), Some(&ParamValue::NotText));
    }

    #[tokio::test]
    async fn multipart_fields() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\npassword\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\nclientid\r\n--XyZ--\r\n";
        let p = parse(None, Some("multipart/form-data; boundary=XyZ"), body)
            .await
            .unwrap();
        assert_eq!(p.text("grant_type"), Some("password"));
        assert_eq!(p.text("client_id"), Some("clientid"));
    }

    #[tokio::test]
    async fn bad_bodies_are_errors_not_panics() {
        assert_eq!(
            parse(None, Some("application/json"), "{not json").await,
            Err(ParamsError::InvalidJson)
        );
        assert_eq!(
            parse(None, Some("application/json"), "[1]").await,
            Err(ParamsError::JsonNotObject)
        );
        assert!(parse(None, Some("multipart/form-data"), "x").await.is_err());
        assert!(
            parse(
                None,
                Some("multipart/form-data; boundary=b"),
                "--b\r\ngarbage"
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn other_content_types_are_ignored() {
        let p = parse(Some("a=1"), Some("text/plain"), "grant_type=password")
            .await
            .unwrap();
        assert_eq!(p.text("a"), Some("1"));
        assert!(!p.contains("grant_type"));
    }

    #[test]
    fn debug_lists_names_only() {
        let mut p = Params::default();
        p.insert("client_secret", "clientsecret");
        assert!(!format!("{p:?}").contains("clientsecret"));
    }
}
