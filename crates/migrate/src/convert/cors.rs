//! Kong's cors plugin → an OAuthService's `cors` block: which plugin applies to which
//! OAuthService (a route's over its service's over a global one, as Kong picks), its settings
//! in tollgate's names, and where an origin regex means something else in tollgate.
//!
//! Kong (since 1.0.3) strips a leading `^` from an origin regex, appends `$` unless it ends
//! with one, and matches from the start. tollgate matches `^(?:regex)$`. The two differ when
//! an alternative other than the last does not end with `$` (Kong leaves it open at its end:
//! `a\.test|b\.test` also allows `a.test.evil.example`), and when the regex ends with an
//! escaped `\$` (Kong takes it for an anchor and appends none). A regex without anchors means
//! the same in both.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use tollgate_api::cors::{CorsMethod, CorsSpec, OriginRegex};

use super::{CorsAt, Scope, Writer};

/// The cors plugins of a file by where they apply, and which of them were carried over (or
/// already explained), so that the others are named.
#[derive(Default)]
pub(super) struct CorsPlugins {
    pub(super) global: Option<CorsAt>,
    services: HashMap<usize, CorsAt>,
    routes: HashMap<usize, CorsAt>,
    /// The labels of the plugins written into an OAuthService or already warned about.
    used: RefCell<HashSet<String>>,
}

impl CorsPlugins {
    /// Keeps `plugin` for `scope`; when a plugin is there already, the label of that one.
    pub(super) fn insert(&mut self, scope: Scope, plugin: CorsAt) -> Option<String> {
        let slot = match scope {
            Scope::Global => match &self.global {
                Some(first) => return Some(first.label.clone()),
                None => {
                    self.global = Some(plugin);
                    return None;
                }
            },
            Scope::Service(i) => self.services.entry(i),
            Scope::Route(j) => self.routes.entry(j),
            // Refused before it gets here: Kong's cors plugin has no consumer scope.
            Scope::Consumer(_) => return Some(plugin.label),
        };
        match slot {
            Entry::Occupied(first) => Some(first.get().label.clone()),
            Entry::Vacant(slot) => {
                slot.insert(plugin);
                None
            }
        }
    }

    pub(super) fn get(&self, scope: Scope) -> Option<&CorsAt> {
        match scope {
            Scope::Global => self.global.as_ref(),
            Scope::Service(i) => self.services.get(&i),
            Scope::Route(j) => self.routes.get(&j),
            Scope::Consumer(_) => None,
        }
    }

    /// The cors plugin of route `j` itself.
    pub(super) fn route_of(&self, j: usize) -> Option<&CorsAt> {
        self.routes.get(&j)
    }

    pub(super) fn mark_used(&self, plugin: Option<&CorsAt>) {
        if let Some(plugin) = plugin {
            self.used.borrow_mut().insert(plugin.label.clone());
        }
    }

    /// The plugins never carried over nor explained, in the file's order of scopes.
    pub(super) fn unused(&self) -> Vec<&CorsAt> {
        let used = self.used.borrow();
        let mut services: Vec<_> = self.services.iter().collect();
        services.sort_by_key(|(i, _)| **i);
        let mut routes: Vec<_> = self.routes.iter().collect();
        routes.sort_by_key(|(j, _)| **j);
        self.global
            .iter()
            .chain(services.into_iter().map(|(_, p)| p))
            .chain(routes.into_iter().map(|(_, p)| p))
            .filter(|p| !used.contains(&p.label))
            .collect()
    }
}

impl Writer<'_> {
    /// The `cors` block of OAuthService `name` from Kong's plugin, with a warning for what
    /// changes on the way.
    pub(super) fn cors(&mut self, plugin: &CorsAt, name: &str) -> CorsSpec {
        let label = &plugin.label;
        let config = &plugin.config;
        if plugin.global {
            self.warn(format!(
                "{label}: applied to OAuthService `{name}` as its own spec.cors (tollgate has \
                 no global plugin)"
            ));
        }
        let origins = self.cors_origins(plugin, name);
        let methods = match &config.methods {
            None => CorsMethod::ALL.to_vec(),
            Some(methods) => methods
                .iter()
                .filter_map(|method| {
                    let known = CorsMethod::ALL.into_iter().find(|m| m.as_str() == method);
                    if known.is_none() {
                        self.warn(format!(
                            "{label}: config.methods `{method}` not migrated: not one of Kong's \
                             methods in capitals (GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, \
                             TRACE, CONNECT)"
                        ));
                    }
                    known
                })
                .collect(),
        };
        let max_age = config.max_age.and_then(|age| {
            let whole = age >= 0.0 && age <= f64::from(u32::MAX) && age.fract() == 0.0;
            if !whole {
                self.warn(format!(
                    "{label}: config.max_age {age} is not a whole number of seconds: not \
                     migrated (preflight answers carry no Access-Control-Max-Age)"
                ));
            }
            whole.then_some(age as u32)
        });
        let credentials = config.credentials.unwrap_or(false);
        if credentials && origins.iter().all(|o| o == "*") {
            self.warn(format!(
                "{label}: config.credentials with every origin allowed: as in Kong, any web \
                 site may send credentialed requests to OAuthService `{name}` and read the \
                 answers; list the origins in spec.cors.origins"
            ));
        }
        CorsSpec {
            origins,
            methods,
            headers: header_names(&config.headers),
            exposed_headers: header_names(&config.exposed_headers),
            credentials,
            max_age,
            private_network: config.private_network.unwrap_or(false),
            preflight_continue: config.preflight_continue.unwrap_or(false),
            allow_origin_absent: config.allow_origin_absent.unwrap_or(true),
        }
    }

    /// Kong's origins as tollgate reads them: a regex tollgate cannot compile is left out
    /// (one origin fewer allowed), unless none would be left, which would allow every origin.
    fn cors_origins(&mut self, plugin: &CorsAt, name: &str) -> Vec<String> {
        let label = &plugin.label;
        let written = &plugin.config.origins;
        let mut kept = Vec::with_capacity(written.len());
        let mut refused = Vec::new();
        for origin in written {
            if origin == "*" || is_exact(origin) {
                kept.push(origin.clone());
                continue;
            }
            match OriginRegex::new(origin) {
                Err(error) => refused.push(error),
                Ok(_) => {
                    if let Some(why) = regex_meaning_changes(origin) {
                        self.warn(format!("{label}: config.origins `{origin}`: {why}"));
                    }
                    kept.push(origin.clone());
                }
            }
        }
        if !refused.is_empty() && kept.is_empty() {
            self.warn(format!(
                "{label}: no origin of config.origins is a regular expression tollgate can \
                 use: kept as written, so that OAuthService `{name}` is refused rather than \
                 open to every origin"
            ));
            return written.clone();
        }
        for error in refused {
            self.warn(format!(
                "{label}: config.origins {error}: not migrated (that origin is no longer \
                 allowed)"
            ));
        }
        kept
    }
}

/// Kong's test of an exact origin: nothing but `[A-Za-z0-9.:/-]`.
fn is_exact(origin: &str) -> bool {
    !origin.is_empty()
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:/-".contains(&b))
}

/// Kong joins the list with `,`, so an entry may hold several names (`Content-Type,
/// Authorization`): one name per entry, as tollgate reads them.
fn header_names(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .flat_map(|entry| entry.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why Kong's matching of the origin regex `written` differs from tollgate's, if it does.
pub(super) fn regex_meaning_changes(written: &str) -> Option<&'static str> {
    let stripped = written.strip_prefix('^').unwrap_or(written);
    let kong = if stripped.ends_with('$') {
        stripped.to_owned()
    } else {
        format!("{stripped}$")
    };
    let branches = top_level_branches(&kong);
    let (last, others) = branches.split_last()?;
    if others.iter().any(|branch| !ends_with_anchor(branch)) {
        return Some(
            "Kong anchored only the last alternative of `|` at the end, so it also allowed \
             origins that merely start with a match of another (`a\\.test|b\\.test` allowed \
             `a.test.evil.example`); tollgate matches the whole origin, so it allows fewer",
        );
    }
    if !ends_with_anchor(last) {
        return Some(
            "Kong took its final `\\$` for an anchor and allowed any origin that starts with \
             a match; tollgate matches the whole origin, so it allows fewer",
        );
    }
    None
}

/// Whether a regex ends with `$` that is no escaped `\$`.
fn ends_with_anchor(regex: &str) -> bool {
    let Some(before) = regex.strip_suffix('$') else {
        return false;
    };
    let backslashes = before.bytes().rev().take_while(|b| *b == b'\\').count();
    backslashes % 2 == 0
}

/// The alternatives of a regex at its top level: `|` outside groups, classes and escapes.
fn top_level_branches(regex: &str) -> Vec<&str> {
    let mut branches = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    let mut class = false;
    let mut chars = regex.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' if !class => {
                class = true;
                // `]` first in a class (`[]a]`, `[^]a]`) is a literal.
                if chars.peek().is_some_and(|(_, c)| *c == '^') {
                    chars.next();
                }
                if chars.peek().is_some_and(|(_, c)| *c == ']') {
                    chars.next();
                }
            }
            ']' if class => class = false,
            '(' if !class => depth += 1,
            ')' if !class => depth = depth.saturating_sub(1),
            '|' if !class && depth == 0 => {
                branches.push(&regex[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    branches.push(&regex[start..]);
    branches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_open_alternative_or_an_escaped_dollar_changes_a_regexs_meaning() {
        for same in [
            r"(.*\.)?example\.com",
            r"^(.*\.)?example\.com$",
            r"https://(a|b)\.example\.com",
            r"a\.test$|b\.test",
            r"[|]x\.test",
            r"\|x\.test",
            r"x\\$",
        ] {
            assert_eq!(regex_meaning_changes(same), None, "{same}");
        }
        for changed in [r"a\.test|b\.test", r"^a\.test|b\.test$", r"a|(b)|c"] {
            assert!(
                regex_meaning_changes(changed)
                    .unwrap()
                    .contains("alternative"),
                "{changed}"
            );
        }
        assert!(
            regex_meaning_changes(r"x\.test\$")
                .unwrap()
                .contains("`\\$`")
        );
    }

    #[test]
    fn header_entries_holding_several_names_are_split() {
        assert_eq!(
            header_names(&[
                "Content-Type, Authorization".into(),
                " X-A ".into(),
                ",".into()
            ]),
            ["Content-Type", "Authorization", "X-A"]
        );
    }
}
