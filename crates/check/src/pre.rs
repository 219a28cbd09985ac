//! `tollgate check --pre`: before an install, whether the cluster is recent enough and the
//! user may create what the chart creates. Pure functions of a [`PreFetched`].

use k8s_openapi::apimachinery::pkg::version::Info;

use crate::fetched::Fetched;
use crate::report::{CheckResult, Group};

/// The oldest Kubernetes the chart supports (its `kubeVersion`): matchConditions are beta and
/// on by default from 1.28.
pub const MIN_VERSION: (u32, u32) = (1, 28);

/// One right the install needs, asked with a SelfSubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Right {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    /// `Some` for namespaced resources: the release namespace.
    pub namespace: Option<String>,
}

/// What `--pre` reads.
#[derive(Debug, Clone)]
pub struct PreFetched {
    pub version: Fetched<Info>,
    /// Each right, and whether the API server granted it.
    pub rights: Vec<(Right, Fetched<bool>)>,
}

/// The rights `helm install` needs for the chart's objects, in `namespace`.
pub fn install_rights(namespace: &str) -> Vec<Right> {
    let cluster = |group, resource| Right {
        verb: "create",
        group,
        resource,
        namespace: None,
    };
    let namespaced = |group, resource| Right {
        verb: "create",
        group,
        resource,
        namespace: Some(namespace.to_owned()),
    };
    vec![
        cluster("apiextensions.k8s.io", "customresourcedefinitions"),
        cluster(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
        ),
        cluster("apiregistration.k8s.io", "apiservices"),
        cluster("", "namespaces"),
        cluster("rbac.authorization.k8s.io", "clusterroles"),
        cluster("rbac.authorization.k8s.io", "clusterrolebindings"),
        namespaced("rbac.authorization.k8s.io", "roles"),
        namespaced("rbac.authorization.k8s.io", "rolebindings"),
        namespaced("", "serviceaccounts"),
        namespaced("", "services"),
        namespaced("", "secrets"),
        namespaced("apps", "deployments"),
        namespaced("networking.k8s.io", "networkpolicies"),
        namespaced("policy", "poddisruptionbudgets"),
    ]
}

pub fn pre_groups(f: &PreFetched) -> Vec<Group> {
    let mut rights = vec![];
    for (right, allowed) in &f.rights {
        rights.push(right_granted(right, allowed));
    }
    vec![
        Group {
            name: "pre-kubernetes-version",
            checks: vec![version_supported(&f.version)],
        },
        Group {
            name: "pre-kubernetes-rights",
            checks: rights,
        },
    ]
}

/// `(major, minor)` of a version's strings; providers add `+` to the minor ("28+").
pub fn parse_version(info: &Info) -> Option<(u32, u32)> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    Some((digits(&info.major)?, digits(&info.minor)?))
}

pub fn version_supported(version: &Fetched<Info>) -> CheckResult {
    let description = format!(
        "the cluster runs Kubernetes {}.{} or later",
        MIN_VERSION.0, MIN_VERSION.1
    );
    let info = match version {
        Ok(info) => info,
        Err(error) => {
            return CheckResult::failure(
                description,
                vec![format!("cannot read /version: {error}")],
                "check the kubeconfig's context",
            );
        }
    };
    match parse_version(info) {
        Some(found) if found >= MIN_VERSION => {
            CheckResult::success(description).with_detail(info.git_version.clone())
        }
        Some(_) => CheckResult::failure(
            description,
            vec![format!("the cluster runs {}", info.git_version)],
            "upgrade the cluster: the webhook's matchConditions need 1.28",
        ),
        None => CheckResult::failure(
            description,
            vec![format!(
                "cannot read the version {:?}.{:?}",
                info.major, info.minor
            )],
            "check the kubeconfig's context",
        ),
    }
}

pub fn right_granted(right: &Right, allowed: &Fetched<bool>) -> CheckResult {
    let resource = if right.group.is_empty() {
        right.resource.to_owned()
    } else {
        format!("{}.{}", right.resource, right.group)
    };
    let place = match &right.namespace {
        Some(namespace) => format!(" in namespace {namespace}"),
        None => String::new(),
    };
    let description = format!("can {} {resource}{place}", right.verb);
    match allowed {
        Ok(true) => CheckResult::success(description),
        Ok(false) => CheckResult::failure(
            description,
            vec![],
            "installing the chart needs it: ask a cluster admin, or install as one",
        ),
        Err(error) => CheckResult::failure(
            description,
            vec![format!("cannot ask the API server: {error}")],
            "SelfSubjectAccessReview must be allowed (it is for every authenticated user)",
        ),
    }
}
