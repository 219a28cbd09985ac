//! The pod annotations that tune the injected sidecar, validated into [`Overrides`]. Every
//! refusal names the annotation and says what a good value looks like, because the person
//! reading it sees only that line in `kubectl` (or in a ReplicaSet's events).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::quantity::{self, Resource};
use crate::{
    ANNOTATION_CONTROLLER_CA, ANNOTATION_INJECT, ANNOTATION_NATIVE_SIDECAR, ANNOTATION_PROXY_CPU,
    ANNOTATION_PROXY_CPU_LIMIT, ANNOTATION_PROXY_MEMORY, ANNOTATION_PROXY_MEMORY_LIMIT,
    ANNOTATION_PROXY_VERSION, ANNOTATION_TLS_DNS_NAMES, ANNOTATION_TLS_SECRET,
    ANNOTATION_UPSTREAM_PORT, INJECT_DISABLED, INJECT_ENABLED, InjectConfig, InjectError,
};

/// IRIS's web server port, the upstream of the article.
pub const DEFAULT_UPSTREAM_PORT: u16 = 52773;
/// Enough for the proxy at rest; the scheduler reserves it on the node.
pub const DEFAULT_CPU_REQUEST: &str = "50m";
/// A sidecar with a few hundred applications in its snapshot stays well below this.
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
/// A leak or a flood ends in an OOM kill of the sidecar, not of the node.
pub const DEFAULT_MEMORY_LIMIT: &str = "128Mi";

/// DNS names a pod's certificate may hold from its annotation: enough for every Service
/// naming a pod, few enough that a certificate stays small.
pub const MAX_TLS_DNS_NAMES: usize = 16;

/// The ports the sidecar binds inside the pod's network namespace (proxy, metrics/probes).
pub(crate) const SIDECAR_PORTS: &[(u16, &str)] = &[(8443, "proxy"), (9090, "metrics and probes")];

/// Every annotation of ours a pod may carry; any other `tollgate.dev/…` key draws a warning.
const KNOWN: &[&str] = &[
    ANNOTATION_INJECT,
    ANNOTATION_TLS_SECRET,
    ANNOTATION_TLS_DNS_NAMES,
    ANNOTATION_UPSTREAM_PORT,
    ANNOTATION_PROXY_CPU,
    ANNOTATION_PROXY_MEMORY,
    ANNOTATION_PROXY_CPU_LIMIT,
    ANNOTATION_PROXY_MEMORY_LIMIT,
    ANNOTATION_NATIVE_SIDECAR,
    ANNOTATION_CONTROLLER_CA,
    ANNOTATION_PROXY_VERSION,
];

/// The prefix of every annotation of ours.
const PREFIX: &str = "tollgate.dev/";

/// The sidecar's requests and limits, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyResources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

/// What one pod's annotations make of the [`InjectConfig`] defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overrides {
    pub native_sidecar: bool,
    /// The Secret to serve :8443 with; `None`: a certificate of the controller's CA.
    pub tls_secret: Option<String>,
    /// Where the application listens on 127.0.0.1 (see `ANNOTATION_UPSTREAM_PORT`).
    pub upstream_port: u16,
    pub resources: ProxyResources,
    /// Not refusals: unknown `tollgate.dev/` annotations, probably typos.
    pub warnings: Vec<String>,
}

// === impl ProxyResources ===

impl Default for ProxyResources {
    fn default() -> Self {
        ProxyResources {
            cpu_request: DEFAULT_CPU_REQUEST.to_owned(),
            memory_request: DEFAULT_MEMORY_REQUEST.to_owned(),
            cpu_limit: None,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT.to_owned()),
        }
    }
}

// === impl Overrides ===

impl Overrides {
    /// Reads and checks every annotation of ours on `pod`, starting from `config`'s defaults.
    pub fn from_pod(pod: &Pod, config: &InjectConfig) -> Result<Self, InjectError> {
        let empty = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let get = |key: &str| annotations.get(key).map(|v| v.trim());

        let native_sidecar = match get(ANNOTATION_NATIVE_SIDECAR) {
            None => config.native_sidecar,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(bad(
                    ANNOTATION_NATIVE_SIDECAR,
                    other,
                    "must be \"true\" or \"false\"",
                ));
            }
        };

        let tls_secret = match get(ANNOTATION_TLS_SECRET) {
            None => None,
            Some(name) if is_dns_subdomain(name) => Some(name.to_owned()),
            Some(name) => {
                return Err(bad(
                    ANNOTATION_TLS_SECRET,
                    name,
                    "is not a Secret name (lowercase letters, digits, '-' and '.', \
                     at most 253 characters)",
                ));
            }
        };

        if let Some(value) = get(ANNOTATION_TLS_DNS_NAMES) {
            parse_tls_dns_names(value)
                .map_err(|problem| bad(ANNOTATION_TLS_DNS_NAMES, value, &problem))?;
        }

        let upstream_port = match get(ANNOTATION_UPSTREAM_PORT) {
            None => DEFAULT_UPSTREAM_PORT,
            Some(text) => parse_upstream_port(text)?,
        };

        let resources = resources(&get, &config.resources)?;

        let mut warnings = unknown_annotation_warnings(pod);
        if tls_secret.is_some() && get(ANNOTATION_TLS_DNS_NAMES).is_some() {
            warnings.push(format!(
                "tollgate: {ANNOTATION_TLS_DNS_NAMES} is ignored: the sidecar serves the certificate of {ANNOTATION_TLS_SECRET}"
            ));
        }

        Ok(Overrides {
            native_sidecar,
            tls_secret,
            upstream_port,
            resources,
            warnings,
        })
    }
}

/// The names of a `tollgate.dev/tls-dns-names` value: comma-separated lowercase DNS names
/// (RFC 1123, labels of at most 63 characters), no wildcard, no IP address, at most
/// [`MAX_TLS_DNS_NAMES`], repeats dropped. Which names a pod may hold is the controller's
/// decision; this is their syntax alone, shared by the injector and the controller.
pub fn parse_tls_dns_names(value: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() {
            return Err("is not a comma-separated list of DNS names (an empty name)".to_owned());
        }
        let labels_fit = name.split('.').all(|label| label.len() <= 63);
        let all_digits = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if !is_dns_subdomain(name) || !labels_fit || all_digits {
            return Err(format!(
                "`{name}` is not a DNS name (lowercase letters, digits, '-' and '.'; no wildcard or IP address)"
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.len() > MAX_TLS_DNS_NAMES {
        return Err(format!("names more than {MAX_TLS_DNS_NAMES} DNS names"));
    }
    Ok(names)
}

/// Unknown annotations warned about one by one; past that, one line counts the rest. The
/// webhook runs before the API server validates the pod, so anyone who may create a pod can
/// send thousands of such keys, each up to the body's 3 MiB: the warnings stay short, and
/// the work on them small.
const MAX_UNKNOWN_WARNINGS: usize = 8;
/// Annotation names (after the prefix) are at most 63 characters; a longer key is refused by
/// the API server anyway, and is shown cut to this many.
const MAX_NAME_SHOWN: usize = 63;

/// One warning per `tollgate.dev/…` annotation of `pod` that is none of ours, probably a typo:
/// it names the nearest known one when that is a few edits away, else lists them all.
pub(crate) fn unknown_annotation_warnings(pod: &Pod) -> Vec<String> {
    let Some(annotations) = pod.metadata.annotations.as_ref() else {
        return Vec::new();
    };
    let unknown: Vec<&String> = annotations
        .keys()
        .filter(|key| key.starts_with(PREFIX) && !KNOWN.contains(&key.as_str()))
        .collect();
    let mut warnings: Vec<String> = unknown
        .iter()
        .take(MAX_UNKNOWN_WARNINGS)
        .map(|key| (shown(key), nearest_known(key)))
        .map(|(key, nearest)| match nearest {
            Some(known) => {
                format!("tollgate: unknown annotation {key} is ignored; did you mean {known}?")
            }
            None => format!(
                "tollgate: unknown annotation {key} is ignored (known: {})",
                KNOWN.join(", ")
            ),
        })
        .collect();
    if unknown.len() > MAX_UNKNOWN_WARNINGS {
        warnings.push(format!(
            "tollgate: {} more unknown tollgate.dev/ annotations are ignored",
            unknown.len() - MAX_UNKNOWN_WARNINGS
        ));
    }
    warnings
}

/// `key`, cut after [`MAX_NAME_SHOWN`] characters of its name.
fn shown(key: &str) -> String {
    let name = &key[PREFIX.len()..];
    match name.char_indices().nth(MAX_NAME_SHOWN) {
        Some((at, _)) => format!("{PREFIX}{}…", &name[..at]),
        None => key.to_owned(),
    }
}

/// The known annotation closest to `key` by edit distance, if close enough to be a typo of
/// it (at most a third of its name, and at least one edit).
fn nearest_known(key: &str) -> Option<&'static str> {
    let name = &key[PREFIX.len()..];
    // The distance is at least the difference in length: a name much longer than every known
    // one is near none, and is not compared at all.
    if name.len() > MAX_NAME_SHOWN {
        return None;
    }
    KNOWN
        .iter()
        .map(|known| (edit_distance(name, &known[PREFIX.len()..]), *known))
        .filter(|(distance, known)| *distance <= (known.len() - PREFIX.len()).div_ceil(3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance over bytes (annotation names are ASCII; a non-ASCII one only counts
/// as further away).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(x != y);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// `Some(true)` for `enabled`, `Some(false)` for `disabled`, `None` when the pod says nothing.
pub(crate) fn inject_request(pod: &Pod) -> Result<Option<bool>, InjectError> {
    let value = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_INJECT))
        .map(|v| v.trim());
    match value {
        None => Ok(None),
        Some(INJECT_ENABLED) => Ok(Some(true)),
        Some(INJECT_DISABLED) => Ok(Some(false)),
        Some(other) => Err(bad(
            ANNOTATION_INJECT,
            other,
            "must be \"enabled\" or \"disabled\"",
        )),
    }
}

fn parse_upstream_port(text: &str) -> Result<u16, InjectError> {
    let port = match text.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => {
            return Err(bad(
                ANNOTATION_UPSTREAM_PORT,
                text,
                "is not a TCP port (1 to 65535)",
            ));
        }
    };
    if let Some((_, what)) = SIDECAR_PORTS.iter().find(|(p, _)| *p == port) {
        return Err(bad(
            ANNOTATION_UPSTREAM_PORT,
            text,
            &format!(
                "is the tollgate sidecar's own {what} port; the application must listen elsewhere"
            ),
        ));
    }
    Ok(port)
}

/// Requests and limits from the annotations over `defaults`. A memory request above the
/// default limit raises that limit with it; a limit *annotated* below its request is refused.
fn resources<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    defaults: &ProxyResources,
) -> Result<ProxyResources, InjectError> {
    let read = |annotation: &'static str,
                resource: Resource|
     -> Result<Option<(String, f64)>, InjectError> {
        match get(annotation) {
            None => Ok(None),
            Some(text) => quantity::parse(text, resource)
                .map(|amount| Some((text.to_owned(), amount)))
                .map_err(|problem| bad(annotation, text, &problem)),
        }
    };
    // Defaults were validated with the flags; an unparsable one counts as absent.
    let default = |text: &str, resource| {
        quantity::parse(text, resource)
            .ok()
            .map(|amount| (text.to_owned(), amount))
    };

    let cpu_request = read(ANNOTATION_PROXY_CPU, Resource::Cpu)?;
    let memory_request = read(ANNOTATION_PROXY_MEMORY, Resource::Memory)?;
    let cpu_limit = read(ANNOTATION_PROXY_CPU_LIMIT, Resource::Cpu)?;
    let memory_limit = read(ANNOTATION_PROXY_MEMORY_LIMIT, Resource::Memory)?;

    let pick = |request: Option<(String, f64)>,
                limit: Option<(String, f64)>,
                default_request: &str,
                default_limit: Option<&str>,
                resource: Resource,
                (request_annotation, limit_annotation): (&'static str, &'static str)|
     -> Result<(String, Option<String>), InjectError> {
        let request_from_pod = request.is_some();
        let request = request
            .or_else(|| default(default_request, resource))
            .unwrap_or_else(|| (default_request.to_owned(), 0.0));
        match limit {
            // Only a limit was annotated: the request follows it down, as Kubernetes does
            // for a container that sets only a limit.
            Some((text, amount)) if amount < request.1 && !request_from_pod => {
                Ok((text.clone(), Some(text)))
            }
            Some((text, amount)) if amount < request.1 => Err(bad(
                limit_annotation,
                &text,
                &format!("is below the request {request_annotation} ({})", request.0),
            )),
            Some((text, _)) => Ok((request.0, Some(text))),
            None => {
                let limit = default_limit.and_then(|d| default(d, resource));
                let limit = match limit {
                    Some((_, amount)) if amount < request.1 => Some(request.0.clone()),
                    other => other.map(|(text, _)| text),
                };
                Ok((request.0, limit))
            }
        }
    };

    let (cpu_request, cpu_limit) = pick(
        cpu_request,
        cpu_limit,
        &defaults.cpu_request,
        defaults.cpu_limit.as_deref(),
        Resource::Cpu,
        (ANNOTATION_PROXY_CPU, ANNOTATION_PROXY_CPU_LIMIT),
    )?;
    let (memory_request, memory_limit) = pick(
        memory_request,
        memory_limit,
        &defaults.memory_request,
        defaults.memory_limit.as_deref(),
        Resource::Memory,
        (ANNOTATION_PROXY_MEMORY, ANNOTATION_PROXY_MEMORY_LIMIT),
    )?;
    Ok(ProxyResources {
        cpu_request,
        memory_request,
        cpu_limit,
        memory_limit,
    })
}

fn bad(annotation: &'static str, value: &str, problem: &str) -> InjectError {
    InjectError::BadAnnotation {
        annotation,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

/// RFC 1123 subdomain, the rule for Secret names.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for good in ["iris-tls", "a", "tls.example.com", "0abc"] {
            assert!(is_dns_subdomain(good), "{good}");
        }
        for bad in ["", "Iris", "-a", "a-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn tls_dns_names() {
        assert_eq!(
            parse_tls_dns_names(" iris.shop.svc , iris.shop.svc.cluster.local,iris.shop.svc"),
            Ok(vec![
                "iris.shop.svc".to_owned(),
                "iris.shop.svc.cluster.local".to_owned()
            ])
        );
        for bad in [
            "",
            "a,,b",
            "*.shop.svc",
            "Iris.shop.svc",
            "10.0.0.1",
            "a_b.shop.svc",
            &format!("{}.shop.svc", "a".repeat(64)),
            &vec!["a.shop.svc"; 1]
                .into_iter()
                .chain((0..MAX_TLS_DNS_NAMES).map(|_| "b.shop.svc"))
                .enumerate()
                .map(|(i, n)| format!("n{i}{n}"))
                .collect::<Vec<_>>()
                .join(","),
        ] {
            assert!(parse_tls_dns_names(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typos_get_the_nearest_known_annotation() {
        assert_eq!(nearest_known("tollgate.dev/injct"), Some(ANNOTATION_INJECT));
        assert_eq!(
            nearest_known("tollgate.dev/proxy-cpus"),
            Some(ANNOTATION_PROXY_CPU)
        );
        assert_eq!(
            nearest_known("tollgate.dev/tls-secrets"),
            Some(ANNOTATION_TLS_SECRET)
        );
        assert_eq!(nearest_known("tollgate.dev/something-else-entirely"), None);
        assert_eq!(
            nearest_known(&format!("tollgate.dev/inject{}", "x".repeat(1 << 20))),
            None
        );
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    /// Anyone who may create a pod reaches the webhook with any annotations it likes (it runs
    /// before the API server's validation): the warnings stay few and short.
    #[test]
    fn a_flood_of_unknown_annotations_draws_few_short_warnings() {
        let mut pod = Pod::default();
        let long = format!("tollgate.dev/{}", "y".repeat(1 << 20));
        pod.metadata.annotations = Some(
            (0..1000)
                .map(|i| (format!("tollgate.dev/x{i}"), String::new()))
                .chain([(long, String::new())])
                .collect(),
        );
        let warnings = unknown_annotation_warnings(&pod);
        assert_eq!(warnings.len(), MAX_UNKNOWN_WARNINGS + 1, "{warnings:?}");
        assert_eq!(
            warnings.last().unwrap(),
            "tollgate: 993 more unknown tollgate.dev/ annotations are ignored"
        );
        assert!(warnings.iter().all(|w| w.len() < 600), "{warnings:?}");

        pod.metadata.annotations = Some(
            [(
                format!("tollgate.dev/{}", "y".repeat(1 << 20)),
                String::new(),
            )]
            .into(),
        );
        let [warning] = &unknown_annotation_warnings(&pod)[..] else {
            panic!("one warning")
        };
        assert!(
            warning.contains(&format!("tollgate.dev/{}…", "y".repeat(63))),
            "{warning}"
        );
        assert!(warning.len() < 600, "{warning}");
    }

    #[test]
    fn upstream_ports() {
        assert_eq!(parse_upstream_port("52773"), Ok(52773));
        assert_eq!(parse_upstream_port("1"), Ok(1));
        for bad in ["0", "65536", "-1", "http", "", "8443", "9090"] {
            let error = parse_upstream_port(bad).unwrap_err().to_string();
            assert!(
                error.starts_with("annotation tollgate.dev/upstream-port: "),
                "{error}"
            );
        }
    }
}
