//! The Redis URL a store connects to: checked for its scheme, and never shown with its
//! password (`Debug` and `Display` redact it), so a flag's value can be logged and named in
//! errors. Both the sidecar and the controller take one.

/// A Redis URL, checked for its scheme. `Debug` and `Display` hide the password.
#[derive(Clone)]
pub struct RedisUrl(String);

// === impl RedisUrl ===

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
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
        match s.split_once("://") {
            Some(("redis" | "rediss", rest)) if !rest.is_empty() => Ok(url),
            _ => Err(format!(
                "`{}` is not a redis:// or rediss:// URL",
                url.redacted()
            )),
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
        assert!(err.contains("not a redis:// or rediss:// URL"), "{err}");
    }

    #[test]
    fn redis_password_never_shows() {
        let url: RedisUrl = "rediss://default:s3cret@redis:6380".parse().unwrap();
        assert!(!format!("{url:?} {url}").contains("s3cret"));
        let err = "http://u:s3cret@h".parse::<RedisUrl>().err().unwrap();
        assert!(!err.contains("s3cret"));
    }
}
