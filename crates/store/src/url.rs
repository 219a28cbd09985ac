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
//! as the path. The credentials are the master's; sentinels are asked without AUTH.

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
}

impl SentinelUrl {
    fn parse(tls: bool, rest: &str) -> Result<Self, String> {
        if rest.contains(['?', '#']) {
            return Err("takes no query or fragment".to_owned());
        }
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

    /// The URL of the `index`th sentinel: no credentials, no database.
    pub fn sentinel_url(&self, index: usize) -> Option<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        Some(format!("{scheme}://{}", self.sentinels.get(index)?))
    }
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

    /// The URL with any password replaced, for logs and errors.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.0.clone(),
        }
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
            ("redis+sentinel://s1/m?x=1", "no query"),
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
    fn redis_password_never_shows() {
        let url: RedisUrl = "rediss://default:s3cret@redis:6380".parse().unwrap();
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        let err = "http://u:s3cret@h".parse::<RedisUrl>().err().unwrap();
        assert!(!err.contains("s3cret"));
    }
}
