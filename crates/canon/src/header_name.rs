//! Header names as an application behind the gateway may read them.
//!
//! CGI, and IRIS after it, hands request headers to the application as variables named
//! `HTTP_` + the name in upper case with `-` as `_`: there `X_Consumer_Username` and
//! `X-Consumer-Username` are one variable. A client could then send, under a look-alike name,
//! a header the gateway sets itself and the application trusts. [`judge`] finds those names
//! so the gateway can drop them before forwarding.
//!
//! Kong keeps other underscore headers (its nginx template turns `underscores_in_headers` on),
//! and so does the gateway unless a service asks for nginx's default: drop them all.

/// The headers a proxy hop sets for the application, beside the gateway's identity headers:
/// Kong's `X-Forwarded-*` and `X-Real-IP`.
pub const FORWARDED_HEADERS: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-path",
    "x-real-ip",
];

/// What to do with a client's header before forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Read with `_` as `-`, it is one of the headers the gateway sets.
    LookAlike,
    /// It has `_` in its name, and the service drops every such header.
    Underscore,
}

/// What to do with a client header `name`, given the `protected` names the gateway sets (in
/// lower case) and whether the service drops every header with `_` in its name.
///
/// A name without `_` is always kept here: the exact names the gateway sets are replaced
/// where the head is written, not judged. One scan of the name, no allocation.
pub fn judge<'p>(
    name: &str,
    protected: impl IntoIterator<Item = &'p str>,
    drop_underscore: bool,
) -> Verdict {
    if !name.as_bytes().contains(&b'_') {
        Verdict::Keep
    } else if protected.into_iter().any(|p| reads_as(name, p)) {
        Verdict::LookAlike
    } else if drop_underscore {
        Verdict::Underscore
    } else {
        Verdict::Keep
    }
}

/// Whether `name`, with `_` read as `-` and case folded, is `target` (in lower case).
pub fn reads_as(name: &str, target: &str) -> bool {
    name.len() == target.len()
        && name
            .bytes()
            .zip(target.bytes())
            .all(|(n, t)| n.to_ascii_lowercase() == t || (n == b'_' && t == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTECTED: [&str; 3] = ["x-consumer-username", "x-authenticated-userid", "x-real-ip"];

    #[test]
    fn look_alikes_of_protected_names_are_found() {
        for name in [
            "x_consumer_username",
            "X_Consumer_Username",
            "x-consumer_username",
            "X_AUTHENTICATED_USERID",
            "x_real_ip",
        ] {
            assert_eq!(judge(name, PROTECTED, false), Verdict::LookAlike, "{name}");
            assert_eq!(judge(name, PROTECTED, true), Verdict::LookAlike, "{name}");
        }
    }

    #[test]
    fn other_underscore_names_are_kept_unless_the_service_drops_them() {
        // Kong's own spec reads its token from `custom_header_name`.
        for name in ["custom_header_name", "x_consumer_usernames", "x_real_ipv6"] {
            assert_eq!(judge(name, PROTECTED, false), Verdict::Keep, "{name}");
            assert_eq!(judge(name, PROTECTED, true), Verdict::Underscore, "{name}");
        }
    }

    #[test]
    fn names_without_underscores_are_not_judged() {
        for name in ["x-consumer-username", "x-real-ip", "accept", ""] {
            assert_eq!(judge(name, PROTECTED, true), Verdict::Keep, "{name}");
        }
    }

    #[test]
    fn reading_as_matches_the_naive_fold() {
        let naive =
            |name: &str, target: &str| name.to_ascii_lowercase().replace('_', "-") == target;
        for name in [
            "X_Real_IP",
            "x-real-ip",
            "x_real-ip",
            "x_real_i",
            "x_real_ipp",
            "x.real.ip",
        ] {
            assert_eq!(
                reads_as(name, "x-real-ip"),
                naive(name, "x-real-ip"),
                "{name}"
            );
        }
    }
}
