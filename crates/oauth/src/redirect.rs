//! Building the `redirect_uri` of the authorize endpoint: parameters merged into the
//! registered URI's query (or fragment, for the implicit grant), keys sorted and values
//! percent-encoded as Kong's `encode_args` writes them.

use std::collections::BTreeMap;

/// Where the parameters go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Query,
    Fragment,
}

/// `uri` with `params` merged into its query or fragment. Parameters already in the
/// registered URI are kept; ours replace any of the same name.
pub fn with_params(uri: &str, part: Part, params: &[(&str, &str)]) -> String {
    let (before_fragment, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let existing = match part {
        Part::Query => query,
        Part::Fragment => fragment,
    };
    let mut merged: BTreeMap<String, String> =
        form_urlencoded::parse(existing.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    for (k, v) in params {
        merged.insert((*k).to_owned(), (*v).to_owned());
    }
    let encoded = merged
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&");
    match part {
        Part::Query => {
            let mut out = format!("{base}?{encoded}");
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
            out
        }
        Part::Fragment => match query {
            Some(q) => format!("{base}?{q}#{encoded}"),
            None => format!("{base}#{encoded}"),
        },
    }
}

/// Percent-encodes as LuaSocket's `url.escape`, which Kong's `encode_args` uses: every byte
/// but ASCII letters, digits and `_`, in lowercase hex (`-` is `%2d`, a space `%20`). Scripts
/// compare these strings with Kong's.
pub fn escape(value: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_state_join_the_registered_query_sorted() {
        assert_eq!(
            with_params(
                "https://app/cb?foo=bar",
                Part::Query,
                &[("state", "s 1"), ("code", "c")]
            ),
            "https://app/cb?code=c&foo=bar&state=s%201"
        );
        assert_eq!(
            with_params("https://app/cb", Part::Query, &[("code", "c")]),
            "https://app/cb?code=c"
        );
    }

    #[test]
    fn escapes_as_luasockets_url_escape() {
        // 03-access_spec.lua:1079.
        assert_eq!(
            escape("code_challenge_method is not supported, must be S256"),
            "code_challenge_method%20is%20not%20supported%2c%20must%20be%20S256"
        );
        assert_eq!(escape("a-b.c~d_e/é"), "a%2db%2ec%7ed_e%2f%c3%a9");
    }

    #[test]
    fn implicit_tokens_go_in_the_fragment() {
        assert_eq!(
            with_params(
                "https://app/cb?keep=1",
                Part::Fragment,
                &[
                    ("token_type", "bearer"),
                    ("access_token", "a"),
                    ("expires_in", "7200")
                ]
            ),
            "https://app/cb?keep=1#access_token=a&expires_in=7200&token_type=bearer"
        );
    }
}
