//! Kubernetes names for Kong's objects: DNS-safe, and unique per kind, the first object in
//! file order keeping its name and the next ones taking `-2`, `-3`…, so that the same file
//! always gives the same names.

use std::collections::BTreeSet;

/// Kubernetes' limit for a DNS label (RFC 1123). Names are kept to a label rather than a
/// subdomain, so the Secret names derived from them (`<name>-client-secret`) stay valid too.
pub const MAX_NAME_LEN: usize = 63;

/// `SampleIRISService` → `sampleirisservice`, `My App_1` → `my-app-1`: lower case, anything
/// but letters and digits turned into one `-`, no `-` at either end, at most 63 characters.
/// `None` when nothing is left.
pub fn dns_label(raw: &str) -> Option<String> {
    let mut name = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    truncate(&mut name, MAX_NAME_LEN);
    (!name.is_empty()).then_some(name)
}

fn truncate(name: &mut String, len: usize) {
    name.truncate(len);
    while name.ends_with('-') {
        name.pop();
    }
}

/// The names taken so far of one kind in one namespace.
#[derive(Default)]
pub struct Names {
    taken: BTreeSet<String>,
}

/// A name given, and the one first wanted when it was taken.
pub struct Given {
    pub name: String,
    pub wanted: Option<String>,
}

impl Names {
    /// Gives `wanted` if free, else `wanted-2`, `wanted-3`… (shortened to fit).
    pub fn give(&mut self, wanted: &str) -> Given {
        if self.taken.insert(wanted.to_owned()) {
            return Given {
                name: wanted.to_owned(),
                wanted: None,
            };
        }
        let mut n = 2usize;
        loop {
            let suffix = format!("-{n}");
            let mut base = wanted.to_owned();
            truncate(&mut base, MAX_NAME_LEN - suffix.len());
            let candidate = format!("{base}{suffix}");
            if self.taken.insert(candidate.clone()) {
                return Given {
                    name: candidate,
                    wanted: Some(wanted.to_owned()),
                };
            }
            n += 1;
        }
    }

    /// Marks `name` taken, as given by someone else.
    pub fn reserve(&mut self, name: &str) {
        self.taken.insert(name.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(
            dns_label("SampleIRISService").as_deref(),
            Some("sampleirisservice")
        );
        assert_eq!(dns_label("My App__1.").as_deref(), Some("my-app-1"));
        assert_eq!(dns_label("--x--").as_deref(), Some("x"));
        assert_eq!(dns_label("日本"), None);
        assert_eq!(dns_label("").as_deref(), None);
        let long = dns_label(&format!("{}-b", "a".repeat(62))).unwrap();
        assert_eq!(long, "a".repeat(62), "cut at 63, without a trailing `-`");
    }

    #[test]
    fn collisions_take_the_next_free_number() {
        let mut names = Names::default();
        assert_eq!(names.give("app").name, "app");
        let second = names.give("app");
        assert_eq!(second.name, "app-2");
        assert_eq!(second.wanted.as_deref(), Some("app"));
        names.reserve("app-3");
        assert_eq!(names.give("app").name, "app-4");
        let long = "a".repeat(63);
        assert_eq!(names.give(&long).name, long);
        assert_eq!(names.give(&long).name, format!("{}-2", "a".repeat(61)));
    }
}
