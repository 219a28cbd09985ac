//! The Redis URL a store connects to: checked for its scheme, and never shown with its
//! password (`Debug` and `Display` redact it), so a flag's value can be logged and named in
//! errors. Both the sidecar and the controller take one.
//!
//! Besides redis-rs's own `redis://` and `rediss://`, one grammar of ours names a Redis
//! watched by Sentinel, parsed once into [`SentinelUrl`]:
//!
//! ```text
//! redis+sentinel://[user:password@]host[:port][,host[:port]…]/master-name[/db]
//! rediss+sentinel://…   (TLS to the sentinels and to the master alike)
//! ```
//!
//! The form of Celery's and Spring's Sentinel URLs: every sentinel in the authority (port
//! 26379 by default), the master's name as Sentinel knows it (`sentinel monitor <name> …`)
//! as the path. The credentials in the authority are the master's. Sentinels with their own
//! password (`requirepass` in sentinel.conf) take it from the query, as redis-py's and
//! go-redis's options name it: `?sentinel_password=…[&sentinel_username=…]`, percent-encoded.
//! The URL is a secret as a whole (it comes from `TOLLGATE_REDIS_URL`, a Secret in a
//! cluster), never an argument that `ps` would show; both passwords are redacted when shown.

/// A Redis URL, checked for its scheme. `Debug` and `Display` hide the password.
#[derive(Clone)]
pub struct RedisUrl(String);

// === impl RedisUrl ===

/// The port a sentinel listens on when the URL names none.
pub const SENTINEL_DEFAULT_PORT: u16 = 26379;

/// A `redis+sentinel://` or `rediss+sentinel://` URL, parsed. Holds the password: no `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `rediss+sentinel://`: TLS to the sentinels and the master.
    pub tls: bool,
    /// `user:password` as written (percent-encoded), for the master's URL.
    pub userinfo: Option<String>,
    /// `host:port` of each sentinel, as written (an IPv6 host in brackets).
    pub sentinels: Vec<String>,
    /// The master's name, as the sentinels monitor it.
    pub master: String,
    pub db: u32,
    /// What the sentinels themselves ask (`?sentinel_password=…`); `None`: no AUTH.
    pub sentinel_auth: Option<SentinelAuth>,
}

/// The credentials of the sentinels, decoded. Holds the password: no `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelAuth {
    /// An ACL user (Redis 6.2+); `None`: the default user.
    pub username: Option<String>,
    pub password: String,
}

/// The query parameters a Sentinel URL takes.
const SENTINEL_PASSWORD: &str = "sentinel_password";
const SENTINEL_USERNAME: &str = "sentinel_username";

impl SentinelUrl {
    fn parse(tls: bool, rest: &str) -> Result<Self, String> {
        if rest.contains('#') {
            return Err("takes no fragment".to_owned());
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let sentinel_auth = query.map(sentinel_auth).transpose()?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or("names no master: add `/<master-name>` after the sentinels")?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo.to_owned()), hosts),
            None => (None, authority),
        };
        let sentinels = hosts
            .split(',')
            .map(sentinel_address)
            .collect::<Result<Vec<_>, _>>()?;
        let (master, db) = match path.split_once('/') {
            None => (path, 0),
            Some((master, db)) => (
                master,
                db.parse::<u32>()
                    .map_err(|_| format!("`{db}` is not a database number"))?,
            ),
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if master.is_empty() || !master.chars().all(name_char) {
            return Err(format!(
                "`{master}` is not a master name (letters, digits, `.`, `-`, `_`)"
            ));
        }
        Ok(Self {
            tls,
            userinfo,
            sentinels,
            master: master.to_owned(),
            db,
            sentinel_auth,
        })
    }

    /// The URL of the Redis at `host:port`, which a sentinel named as this master, with the
    /// credentials and database of this URL.
    pub fn master_url(&self, host: &str, port: u16) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let userinfo = self
            .userinfo
            .as_ref()
            .map(|userinfo| format!("{userinfo}@"))
            .unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("{scheme}://{userinfo}{host}:{port}/{}", self.db)
    }

    /// The URL of the `index`th sentinel: the sentinels' credentials, no database.
    pub fn sentinel_url(&self, index: usize) -> Option<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let userinfo = match &self.sentinel_auth {
            None => String::new(),
            Some(auth) => format!(
                "{}:{}@",
                percent_encode(auth.username.as_deref().unwrap_or("")),
                percent_encode(&auth.password)
            ),
        };
        Some(format!(
            "{scheme}://{userinfo}{}",
            self.sentinels.get(index)?
        ))
    }
}

/// `sentinel_password=…&sentinel_username=…`: each at most once, nothing else, the password
/// not empty. Messages never hold a value.
fn sentinel_auth(query: &str) -> Result<SentinelAuth, String> {
    let (mut username, mut password) = (None, None);
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            SENTINEL_PASSWORD => &mut password,
            SENTINEL_USERNAME => &mut username,
            _ => {
                return Err(format!(
                    "`{key}` is not a query parameter it takes ({SENTINEL_PASSWORD}, \
                     {SENTINEL_USERNAME})"
                ));
            }
        };
        if slot.is_some() {
            return Err(format!("`{key}` is given twice"));
        }
        let decoded =
            percent_decode(value).ok_or_else(|| format!("`{key}` is not percent-encoded UTF-8"))?;
        if decoded.is_empty() {
            return Err(format!("`{key}` is empty"));
        }
        *slot = Some(decoded);
    }
    let password = password
        .ok_or_else(|| format!("`{SENTINEL_USERNAME}` needs `{SENTINEL_PASSWORD}` with it"))?;
    Ok(SentinelAuth { username, password })
}

/// `%XX` escapes decoded (`+` is kept: it is a plus in a URL's userinfo, and the query
/// follows the same rule here); `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Everything but RFC 3986's unreserved characters escaped: safe in a URL's userinfo.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `host[:port]`, with the default port when none is written.
fn sentinel_address(address: &str) -> Result<String, String> {
    let (host, port) = match address.rsplit_once(':') {
        // `[::1]` alone: the colon is inside the brackets.
        Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
        _ => (address, None),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.contains(['/', '@', ' ']) {
        return Err(format!("`{address}` is not a sentinel's host[:port]"));
    }
    let port = match port {
        None => SENTINEL_DEFAULT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("`{address}` is not a sentinel's host[:port]"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// Where a [`RedisUrl`] leads.
pub enum RedisEndpoint {
    /// `redis://` or `rediss://`: one server, or any node of a cluster.
    Direct,
    /// Whichever master the sentinels name.
    Sentinel(SentinelUrl),
}

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Where this URL leads. Parsing cannot fail here: [`str::parse`] checked it.
    pub fn endpoint(&self) -> RedisEndpoint {
        endpoint(&self.0).unwrap_or(RedisEndpoint::Direct)
    }

    /// Whether connections are TLS (`rediss://`, `rediss+sentinel://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://") || self.0.starts_with("rediss+sentinel://")
    }

    /// The URL with any password replaced, for logs and errors: the userinfo's, and every
    /// query value but `sentinel_username`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let mut shown = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => format!("{scheme}://{rest}"),
        };
        if let Some(query) = query {
            let pairs: Vec<String> = query
                .split('&')
                // Every value but the user's: a misspelt `sentinel_pasword` is a password too.
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key != SENTINEL_USERNAME => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            shown.push('?');
            shown.push_str(&pairs.join("&"));
        }
        shown
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Self(s.to_owned());
        match endpoint(s) {
            Ok(_) => Ok(url),
            Err(e) => Err(format!("`{}` {e}", url.redacted())),
        }
    }
}

/// The one place URLs are told apart.
pub(crate) fn endpoint(url: &str) -> Result<RedisEndpoint, String> {
    match url.split_once("://") {
        Some(("redis" | "rediss", rest)) if !rest.is_empty() => Ok(RedisEndpoint::Direct),
        Some((scheme @ ("redis+sentinel" | "rediss+sentinel"), rest)) => {
            SentinelUrl::parse(scheme == "rediss+sentinel", rest)
                .map(RedisEndpoint::Sentinel)
                .map_err(|e| format!("is not a Sentinel URL: {e}"))
        }
        _ => {
            Err("is not a redis://, rediss://, redis+sentinel:// or rediss+sentinel:// URL".into())
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_scheme_is_checked() {
        assert!("redis://127.0.0.1:6379".parse::<RedisUrl>().is_ok());
        assert!("rediss://h:6380/0".parse::<RedisUrl>().is_ok());
        let err = "http://h".parse::<RedisUrl>().err().unwrap();
        assert!(err.contains("not a redis://, rediss://"), "{err}");
    }

    fn sentinel(url: &str) -> SentinelUrl {
        match endpoint(url) {
            Ok(RedisEndpoint::Sentinel(parsed)) => parsed,
            Ok(RedisEndpoint::Direct) => panic!("{url}: not a Sentinel URL"),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_master_and_database() {
        let url = sentinel("redis+sentinel://u:p%40ss@s1:5000,s2,[::1]:26380,[::2]/mymaster/3");
        assert!(!url.tls);
        assert_eq!(url.userinfo.as_deref(), Some("u:p%40ss"));
        assert_eq!(
            url.sentinels,
            ["s1:5000", "s2:26379", "[::1]:26380", "[::2]:26379"]
        );
        assert_eq!(url.master, "mymaster");
        assert_eq!(url.db, 3);
        assert_eq!(
            url.master_url("10.0.0.7", 6379),
            "redis://u:p%40ss@10.0.0.7:6379/3"
        );
        assert_eq!(
            url.master_url("fd00::7", 6379),
            "redis://u:p%40ss@[fd00::7]:6379/3"
        );
        assert_eq!(url.sentinel_url(2).as_deref(), Some("redis://[::1]:26380"));
        assert_eq!(url.sentinel_url(4), None);

        let url = sentinel("rediss+sentinel://s1/m.a-s_ter");
        assert!(url.tls);
        assert_eq!((url.userinfo.as_deref(), url.db), (None, 0));
        assert_eq!(url.master_url("h", 1), "rediss://h:1/0");
        assert_eq!(url.sentinel_url(0).as_deref(), Some("rediss://s1:26379"));
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() {
        for (url, why) in [
            ("redis+sentinel://s1:26379", "names no master"),
            ("redis+sentinel://s1/", "is not a master name"),
            ("redis+sentinel://s1/a b", "is not a master name"),
            ("redis+sentinel://s1/m/x", "is not a database number"),
            ("redis+sentinel://s1:0/m", "is not a sentinel's host[:port]"),
            (
                "redis+sentinel://s1:99999/m",
                "is not a sentinel's host[:port]",
            ),
            (
                "redis+sentinel://s1,,s2/m",
                "is not a sentinel's host[:port]",
            ),
            ("redis+sentinel:///m", "is not a sentinel's host[:port]"),
            ("redis+sentinel://s1/m#x", "no fragment"),
            ("redis+sentinel://s1/m?x=1", "`x` is not a query parameter"),
            (
                "redis+sentinel://s1/m?sentinel_password=a&sentinel_password=b",
                "`sentinel_password` is given twice",
            ),
            (
                "redis+sentinel://s1/m?sentinel_password=",
                "`sentinel_password` is empty",
            ),
            (
                "redis+sentinel://s1/m?sentinel_password=%zz",
                "is not percent-encoded",
            ),
            (
                "redis+sentinel://s1/m?sentinel_username=u",
                "`sentinel_username` needs `sentinel_password`",
            ),
        ] {
            let err = url.parse::<RedisUrl>().err().unwrap();
            assert!(err.contains(why), "{url}: {err}");
            assert!(err.contains("is not a Sentinel URL"), "{url}: {err}");
        }
        let err = "redis+sentinel://u:s3cret@s1/a b"
            .parse::<RedisUrl>()
            .err()
            .unwrap();
        assert!(!err.contains("s3cret"), "{err}");
        let url: RedisUrl = "redis+sentinel://u:s3cret@s1,s2/m".parse().unwrap();
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        assert!(matches!(url.endpoint(), RedisEndpoint::Sentinel(_)));
        assert!(!url.is_tls());
    }

    #[test]
    fn sentinel_credentials_come_from_the_query_and_never_show() {
        let url = sentinel(
            "redis+sentinel://:master-pw@s1,s2/m?sentinel_username=sen%40tinel&sentinel_password=s3n%2Btinel%3A%2F",
        );
        let auth = url.sentinel_auth.as_ref().unwrap();
        assert_eq!(auth.username.as_deref(), Some("sen@tinel"));
        assert_eq!(auth.password, "s3n+tinel:/");
        // The sentinels get their own credentials, escaped; the master keeps the authority's.
        assert_eq!(
            url.sentinel_url(1).as_deref(),
            Some("redis://sen%40tinel:s3n%2Btinel%3A%2F@s2:26379")
        );
        assert_eq!(url.master_url("h", 1), "redis://:master-pw@h:1/0");
        assert_eq!(url.db, 0);

        let url = sentinel("rediss+sentinel://s1/m/2?sentinel_password=pw");
        let auth = url.sentinel_auth.as_ref().unwrap();
        assert_eq!(
            (auth.username.as_deref(), auth.password.as_str()),
            (None, "pw")
        );
        assert_eq!(
            url.sentinel_url(0).as_deref(),
            Some("rediss://:pw@s1:26379")
        );
        assert_eq!(url.master_url("h", 1), "rediss://h:1/2");
        assert!(sentinel("redis+sentinel://s1/m").sentinel_auth.is_none());

        let url: RedisUrl =
            "redis+sentinel://u:m4ster@s1/m?sentinel_username=admin&sentinel_password=s3ntinel"
                .parse()
                .unwrap();
        let shown = format!("{url:?} {url}");
        assert!(
            !shown.contains("m4ster") && !shown.contains("s3ntinel"),
            "{shown}"
        );
        assert_eq!(
            url.to_string(),
            "redis+sentinel://u:***@s1/m?sentinel_username=admin&sentinel_password=***"
        );
        let url: RedisUrl = "redis+sentinel://s1/m?sentinel_password=s3ntinel"
            .parse()
            .unwrap();
        assert_eq!(
            url.to_string(),
            "redis+sentinel://s1/m?sentinel_password=***"
        );
        for typo in [
            "redis+sentinel://s1/m?sentinel_password=s3ntinel&x=1",
            "redis+sentinel://s1/m?sentinel_pasword=s3ntinel",
            "redis+sentinel://s1/m?sentinel_password=a&sentinel_password=s3ntinel",
        ] {
            let err = typo.parse::<RedisUrl>().err().unwrap();
            assert!(!err.contains("s3ntinel"), "{err}");
        }
    }

    #[test]
    fn redis_password_never_shows() {
        let url: RedisUrl = "rediss://default:s3cret@redis:6380".parse().unwrap();
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        let err = "http://u:s3cret@h".parse::<RedisUrl>().err().unwrap();
        assert!(!err.contains("s3cret"));
    }
}
