//! The request path as routing, `stripPath` and the application all see it: normalised once,
//! before routing, as nginx does for `$uri` and Kong 3's router does for its paths.
//!
//! [`normalize`] decodes percent-encoded *unreserved* characters (RFC 3986 §2.3), writes the
//! hex digits of every other percent-encoding in upper case (§6.2.2.1), merges runs of `/`
//! (nginx's `merge_slashes`, on by default, and Kong's router), and removes dot segments,
//! encoded ones included (§5.2.4). `%2F` stays encoded and never separates segments.
//!
//! What it refuses, with a reason ([`PathError`]), is what no single reading settles:
//! - a path whose `..` segments climb above `/` (RFC 3986 would silently stop at the root);
//! - a `%` not followed by two hex digits, and `%00` (nginx answers both with 400);
//! - a `.` or `..` between an encoded slash (`%2F`), a backslash (`%5C`, `\`) or `;` and the
//!   rest of its segment, such as `..%2F` or `..;`. An application that decodes `%2F`, runs on
//!   Windows or strips path parameters as servlet containers do reads that as a dot segment,
//!   and would resolve a path into a route other than the one the gateway checked.
//!
//! [`match_prefix`] matches a route's prefix the same way an application that decodes `%2F`
//! would: any run of `/`, `%2F`, `%5C` and `\` in the path separates segments there.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no single normal form: the gateway answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` that two hex digits do not follow.
    BadPercentEncoding,
    /// `%00`, which ends the path early for an application written in C.
    EncodedNul,
    /// More `..` segments than segments before them.
    AboveRoot,
    /// A `.` or `..` piece of a segment, set apart by `%2F`, `%5C`, `\` or `;`.
    HiddenDotSegment,
}

impl PathError {
    /// The `message` of the 400 the gateway answers with.
    pub fn message(self) -> &'static str {
        match self {
            Self::BadPercentEncoding => "Bad request: invalid percent-encoding in the path",
            Self::EncodedNul => "Bad request: the path contains %00",
            Self::AboveRoot => "Bad request: the path climbs above /",
            Self::HiddenDotSegment => {
                "Bad request: the path hides a dot segment behind %2F, %5C, \\ or ;"
            }
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

/// The normal form of `path` (the path of a request target, without its query), borrowed when
/// it is normal already: a path with no `%`, no `\`, no `//` and no dot segment costs one scan
/// and no allocation.
///
/// A path that does not begin with `/` (the `*` of `OPTIONS *`) is returned as it is: it
/// matches no route.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    normalize_segments(&path[1..]).map(Cow::Owned)
}

/// Whether `path` (beginning with `/`) is its own normal form, judged without allocating.
/// Only says yes when [`normalize_segments`] would return `path` unchanged.
fn is_normal(path: &[u8]) -> bool {
    let mut segment_start = 1;
    for (i, &byte) in path.iter().enumerate().skip(1) {
        match byte {
            b'%' | b'\\' => return false,
            b'/' => {
                let segment = &path[segment_start..i];
                if segment.is_empty() || !is_plain_segment(segment) {
                    return false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    // The last segment may be empty: a trailing `/` is kept.
    is_plain_segment(&path[segment_start..])
}

/// A segment with no `%` and no `\` that has no dot piece: no `.` or `..` between `;`s.
fn is_plain_segment(segment: &[u8]) -> bool {
    // Most segments have no dot at all.
    !segment.contains(&b'.') || segment.split(|&b| b == b';').all(|piece| !is_dot(piece))
}

fn is_dot(piece: &[u8]) -> bool {
    piece == b"." || piece == b".."
}

/// RFC 3986 §5.2.4 over the segments of `path` (the path after its leading `/`), each decoded
/// first, with empty segments merged.
fn normalize_segments(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len() + 1);
    let mut segment = String::new();
    let mut segments = path.split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        segment.clear();
        decode_unreserved(raw, &mut segment)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                let parent = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(parent);
            }
            kept => {
                if has_hidden_dot(kept.as_bytes()) {
                    return Err(PathError::HiddenDotSegment);
                }
                out.push('/');
                out.push_str(kept);
                continue;
            }
        }
        // A path that ends in a dot segment or `/` names a directory: it keeps its `/`.
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Appends `raw` to `out` with its percent-encoded unreserved characters decoded and every
/// other percent-encoding in upper case.
fn decode_unreserved(raw: &str, out: &mut String) -> Result<(), PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        // `%` is ASCII, so `i` is a char boundary of `raw`.
        out.push_str(&raw[copied..i]);
        let high = bytes.get(i + 1).and_then(|&b| hex_value(b));
        let low = bytes.get(i + 2).and_then(|&b| hex_value(b));
        let (Some(high), Some(low)) = (high, low) else {
            return Err(PathError::BadPercentEncoding);
        };
        let byte = (high << 4) | low;
        if byte == 0 {
            return Err(PathError::EncodedNul);
        }
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(high)]));
            out.push(char::from(HEX[usize::from(low)]));
        }
        i += 3;
        copied = i;
    }
    out.push_str(&raw[copied..]);
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether a decoded segment has a `.` or `..` piece between `%2F`, `%5C`, `\` and `;`.
fn has_hidden_dot(segment: &[u8]) -> bool {
    if !segment.contains(&b'.') {
        return false;
    }
    let mut piece_start = 0;
    let mut i = 0;
    while i <= segment.len() {
        let separator = match segment.get(i) {
            None => 1,
            Some(b'\\' | b';') => 1,
            Some(b'%') if is_encoded_separator(&segment[i..]) => 3,
            Some(_) => 0,
        };
        if separator == 0 {
            i += 1;
            continue;
        }
        if is_dot(&segment[piece_start..i]) {
            return true;
        }
        i += separator;
        piece_start = i;
    }
    false
}

/// `%2F` or `%5C`, in either case.
fn is_encoded_separator(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..]
    )
}

/// Bytes at the start of `path` that an application could read as one segment separator: a
/// run of `/`, `\`, `%2F` and `%5C`.
fn separator_run(path: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match path.get(i) {
            Some(b'/' | b'\\') => i += 1,
            Some(b'%') if is_encoded_separator(&path[i..]) => i += 3,
            _ => return i,
        }
    }
}

/// How many bytes of `path` (normalised) the route prefix `prefix` covers, when it matches at
/// a segment boundary: `/event` matches `/event`, `/event/1` and `/event%2F1`, not `/events`
/// or `/event;x` (path parameters are not read: `;` is a character like any other).
///
/// `prefix` is plain `/`-separated segments, as the compiler leaves it. Where it has a `/`,
/// `path` may have any run of separators ([`separator_run`]): the route an application that
/// decodes `%2F` or reads `\` as `/` would pick is the route the gateway picks.
pub fn match_prefix(prefix: &str, path: &str) -> Option<usize> {
    let prefix = prefix.as_bytes();
    let path = path.as_bytes();
    if prefix == b"/" {
        return path.starts_with(b"/").then_some(0);
    }
    let mut matched = 0;
    let mut i = 0;
    while i < prefix.len() {
        if prefix[i] == b'/' {
            let run = separator_run(&path[matched..]);
            if run == 0 {
                return None;
            }
            matched += run;
            while prefix.get(i) == Some(&b'/') {
                i += 1;
            }
        } else if path.get(matched) == Some(&prefix[i]) {
            matched += 1;
            i += 1;
        } else {
            return None;
        }
    }
    let rest = &path[matched..];
    let at_boundary = rest.is_empty() || separator_run(rest) > 0;
    at_boundary.then_some(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_owned()
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/",
            "/event",
            "/event/1",
            "/event/1/",
            "/.well-known/oauth-authorization-server",
            "/a;b/c",
            "/a.b/..c/...",
            "*",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed_encoded_or_not() {
        for (path, expected) in [
            ("/public/../event/1", "/event/1"),
            ("/public/%2e%2e/event/1", "/event/1"),
            ("/public/.%2E/event/1", "/event/1"),
            ("/public/%2E./event/1", "/event/1"),
            ("/event/./1", "/event/1"),
            ("/event/%2e/1", "/event/1"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/a/b/../../c", "/c"),
        ] {
            assert_eq!(normal(path), expected, "{path}");
        }
    }

    #[test]
    fn unreserved_characters_are_decoded_and_the_rest_stays_encoded() {
        assert_eq!(normal("/%7Euser/%41%62%2D%5F"), "/~user/Ab-_");
        assert_eq!(normal("/a%2fb"), "/a%2Fb");
        assert_eq!(normal("/a%2Fb/%20%c3%a9"), "/a%2Fb/%20%C3%A9");
        assert_eq!(normal("/%25/%3b"), "/%25/%3B");
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(normal("//event//1"), "/event/1");
        assert_eq!(normal("/event//"), "/event/");
        assert_eq!(normal("//"), "/");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, error) in [
            ("/..", PathError::AboveRoot),
            ("/%2e%2e/event", PathError::AboveRoot),
            ("/a/../../event", PathError::AboveRoot),
            ("/a%", PathError::BadPercentEncoding),
            ("/a%2", PathError::BadPercentEncoding),
            ("/a%zz", PathError::BadPercentEncoding),
            ("/a%00b", PathError::EncodedNul),
            ("/public/..%2fevent/1", PathError::HiddenDotSegment),
            ("/public/..%2Fevent/1", PathError::HiddenDotSegment),
            ("/public/x%2F..%2F..%2Fevent", PathError::HiddenDotSegment),
            ("/public/..%5Cevent", PathError::HiddenDotSegment),
            ("/public/..\\event", PathError::HiddenDotSegment),
            ("/public/..;/event/1", PathError::HiddenDotSegment),
            ("/public/%2e%2e;x/event/1", PathError::HiddenDotSegment),
            ("/public/.;/event", PathError::HiddenDotSegment),
        ] {
            assert_eq!(normalize(path), Err(error), "{path}");
        }
    }

    #[test]
    fn prefixes_match_at_any_separator_an_application_might_read() {
        assert_eq!(match_prefix("/event", "/event"), Some(6));
        assert_eq!(match_prefix("/event", "/event/1"), Some(6));
        assert_eq!(match_prefix("/event", "/event;jsessionid=1"), None);
        assert_eq!(match_prefix("/event", "/event%2F1"), Some(6));
        assert_eq!(match_prefix("/event", "/events"), None);
        assert_eq!(match_prefix("/event", "/other"), None);
        assert_eq!(match_prefix("/event/admin", "/event%2Fadmin/1"), Some(14));
        assert_eq!(match_prefix("/event/admin", "/event\\admin"), Some(12));
        assert_eq!(match_prefix("/event", "/%2Fevent/1"), Some(9));
        assert_eq!(match_prefix("/", "/anything"), Some(0));
        assert_eq!(match_prefix("/", "*"), None);
    }

    // === properties, over every path made of up to five pieces of a small alphabet ===

    /// Pieces that between them make every case above: separators, dots, encodings.
    const PIECES: [&str; 16] = [
        "/", "a", ".", "%2e", "%2E", "%2F", "%2f", "%5C", "\\", ";", "%41", "%", "%3B", "~",
        "event", "public",
    ];

    /// Every path `/` + up to `len` pieces, in turn.
    fn every_path(len: u32, mut check: impl FnMut(&str)) {
        let n = PIECES.len();
        let mut path = String::new();
        for length in 0..=len {
            for mut index in 0..n.pow(length) {
                path.clear();
                path.push('/');
                for _ in 0..length {
                    path.push_str(PIECES[index % n]);
                    index /= n;
                }
                check(&path);
            }
        }
    }

    const PREFIXES: [&str; 4] = ["/", "/public", "/event", "/event/a"];

    /// The gateway's route of `path`: the longest prefix that matches.
    fn route(path: &str, matches: impl Fn(&str, &str) -> bool) -> Option<&'static str> {
        PREFIXES
            .iter()
            .filter(|prefix| matches(prefix, path))
            .max_by_key(|prefix| prefix.len())
            .copied()
    }

    /// The most liberal reading an application could make of a path: every percent-encoding
    /// decoded, `\` read as `/`, dot segments removed (stopping at the root), slashes merged.
    fn liberal(path: &str) -> String {
        let bytes = path.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'%', Some(byte)) => {
                    decoded.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    decoded.push(byte);
                    i += 1;
                }
            }
        }
        let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
        let mut out: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                kept => out.push(kept),
            }
        }
        format!("/{}", out.join("/"))
    }

    fn plain_prefix_matches(prefix: &str, path: &str) -> bool {
        prefix == "/"
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Over every path of up to five pieces (1.1 million): normalising is idempotent, leaves
    /// no dot segment, and the route it picks is the route a second normalisation picks and
    /// the route an application picks from what it receives, however liberally it reads it.
    #[test]
    fn normal_forms_are_stable_and_route_as_the_application_reads_them() {
        let gateway = |prefix: &str, path: &str| match_prefix(prefix, path).is_some();
        every_path(5, |path| {
            let Ok(once) = normalize(path) else { return };
            let twice = normalize(&once);
            assert_eq!(twice.as_deref(), Ok(&*once), "{path}");
            assert!(once.starts_with('/'), "{path} -> {once}");
            assert!(
                once.split('/').all(|s| s != "." && s != ".."),
                "{path} -> {once}"
            );
            assert!(!once.contains("//"), "{path} -> {once}");
            assert!(!once.contains("%2e") && !once.contains("%2E"), "{path}");

            let chosen = route(&once, gateway);
            assert_eq!(route(&twice.unwrap(), gateway), chosen, "{path}");
            let read = liberal(&once);
            assert_eq!(
                route(&read, plain_prefix_matches),
                chosen,
                "{path} -> {once} -> {read}"
            );
        });
    }
}
