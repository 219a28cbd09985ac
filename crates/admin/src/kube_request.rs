//! The aggregated API's one grammar: a method, a path, a query and an `Accept` header become a
//! [`KubeRequest`], which names the RBAC verb and namespace it needs, as Kubernetes would for a
//! resource of its own. The same resource as the admin API's ([`ADMIN_RESOURCE`] in
//! [`ADMIN_GROUP`]), so one Role grants both.

use http::Method;

use crate::request::{ADMIN_GROUP, ADMIN_RESOURCE, is_dns_label};

/// The one version served.
pub const KUBE_VERSION: &str = "v1alpha1";
/// The kind of one token, and of a list of them.
pub const KUBE_KIND: &str = "OAuthToken";
pub const KUBE_LIST_KIND: &str = "OAuthTokenList";
pub const KUBE_SINGULAR: &str = "oauthtoken";
/// `kubectl get oat`.
pub const KUBE_SHORT_NAME: &str = "oat";
/// Not `all`: `kubectl delete all --all` must not revoke every token of a namespace.
pub const KUBE_CATEGORY: &str = "tollgate";

/// One request to the aggregated API, routed, with its options parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeRequest {
    /// `GET /apis`: the APIGroupList.
    Groups,
    /// `GET /apis/tokens.oauth.tollgate.dev`: the APIGroup.
    Group,
    /// `GET /apis/tokens.oauth.tollgate.dev/v1alpha1`: the APIResourceList.
    Resources,
    /// `GET …/namespaces/{ns}/oauthtokens`, or `…/oauthtokens` across every namespace (`None`).
    List {
        namespace: Option<String>,
        options: ListOptions,
        output: Output,
    },
    /// `GET …/namespaces/{ns}/oauthtokens/{name}`.
    Get {
        namespace: String,
        name: String,
        output: Output,
    },
    /// `DELETE …/namespaces/{ns}/oauthtokens/{name}`: revoke one token.
    Delete {
        namespace: String,
        name: String,
        dry_run: bool,
    },
    /// `DELETE …/namespaces/{ns}/oauthtokens`: revoke every token the selectors match.
    DeleteCollection {
        namespace: String,
        options: ListOptions,
        dry_run: bool,
    },
    /// `POST …/namespaces/{ns}/oauthtokens`: import a token exported from IAM.
    Create { namespace: String, dry_run: bool },
}

/// How a `get` or `list` answer is shaped: as objects, or as the `Table` kubectl prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Object,
    Table(IncludeObject),
}

/// `includeObject` of a Table request: what each row carries besides its cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The options of a list (and of a deletecollection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub fields: Vec<FieldRequirement>,
    /// `limit`: the most items in one answer; `None` lists them all.
    pub limit: Option<usize>,
    /// `continue`: where the previous page stopped.
    pub continue_from: Option<String>,
}

/// One term of a field selector: `field=value`, `field==value` or `field!=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: Field,
    pub value: String,
    pub equals: bool,
}

/// The fields a selector may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Name,
    Namespace,
    AuthenticatedUserid,
    ClientId,
    Service,
}

/// Why a request is not one the aggregated API serves, each with its Kubernetes `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeRefusal {
    /// 404 NotFound: no such path.
    NotFound,
    /// 405 MethodNotAllowed: a path that does not take this method (or `watch`).
    MethodNotAllowed(String),
    /// 400 BadRequest: a query that does not parse.
    BadRequest(String),
}

/// The largest `limit` honoured; a larger one is lowered to it, as Kubernetes may.
pub const MAX_LIMIT: usize = 1000;

// === impl KubeRequest ===

impl KubeRequest {
    /// Whether `path` belongs to this grammar rather than the admin API's: `/apis` and below,
    /// except `/apis/oauth2_tokens…`, which is Kong's path for a namespace named `apis`.
    pub fn claims(path: &str) -> bool {
        let mut segments = path.trim_start_matches('/').split('/');
        segments.next() == Some("apis")
            && segments
                .next()
                .is_none_or(|second| second != "oauth2_tokens")
    }

    /// Routes `method` on `path`, with its `query` and `Accept` header.
    pub fn parse(
        method: &Method,
        path: &str,
        query: Option<&str>,
        accept: Option<&str>,
    ) -> Result<Self, KubeRefusal> {
        let trimmed = path.trim_end_matches('/');
        let segments: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
        let rest = match segments.as_slice() {
            ["apis"] => return only_get(method, Self::Groups),
            ["apis", group] if *group == ADMIN_GROUP => return only_get(method, Self::Group),
            ["apis", group, version] if *group == ADMIN_GROUP && *version == KUBE_VERSION => {
                return only_get(method, Self::Resources);
            }
            ["apis", group, version, rest @ ..]
                if *group == ADMIN_GROUP && *version == KUBE_VERSION =>
            {
                rest
            }
            _ => return Err(KubeRefusal::NotFound),
        };
        let query = Query::parse(query)?;
        let output = Output::of(accept, query.include_object)?;
        if query.watch {
            return Err(KubeRefusal::MethodNotAllowed(
                "watch is not supported on oauthtokens".into(),
            ));
        }
        let dry_run = query.dry_run;
        match rest {
            [resource] if *resource == ADMIN_RESOURCE => match *method {
                Method::GET => Ok(Self::List {
                    namespace: None,
                    options: query.list,
                    output,
                }),
                _ => Err(not_allowed(method)),
            },
            ["namespaces", namespace, resource, rest @ ..] if *resource == ADMIN_RESOURCE => {
                if !is_dns_label(namespace) {
                    return Err(KubeRefusal::NotFound);
                }
                let namespace = (*namespace).to_owned();
                match (method, rest) {
                    (&Method::GET, []) => Ok(Self::List {
                        namespace: Some(namespace),
                        options: query.list,
                        output,
                    }),
                    (&Method::DELETE, []) => Ok(Self::DeleteCollection {
                        namespace,
                        options: query.list,
                        dry_run,
                    }),
                    (&Method::POST, []) => Ok(Self::Create { namespace, dry_run }),
                    (&Method::GET, [name]) => Ok(Self::Get {
                        namespace,
                        name: (*name).to_owned(),
                        output,
                    }),
                    (&Method::DELETE, [name]) => Ok(Self::Delete {
                        namespace,
                        name: (*name).to_owned(),
                        dry_run,
                    }),
                    (_, [] | [_]) => Err(not_allowed(method)),
                    _ => Err(KubeRefusal::NotFound),
                }
            }
            _ => Err(KubeRefusal::NotFound),
        }
    }

    /// The RBAC verb this request needs on [`ADMIN_RESOURCE`]; `None` for discovery, which
    /// any authenticated caller may read, as the API server's own `system:discovery` allows.
    pub fn verb(&self) -> Option<&'static str> {
        match self {
            Self::Groups | Self::Group | Self::Resources => None,
            Self::List { .. } => Some("list"),
            Self::Get { .. } => Some("get"),
            Self::Delete { .. } => Some("delete"),
            Self::DeleteCollection { .. } => Some("deletecollection"),
            Self::Create { .. } => Some("create"),
        }
    }

    /// The namespace the request acts in; `""` across every namespace (as a
    /// SubjectAccessReview names that).
    pub fn namespace(&self) -> &str {
        match self {
            Self::Groups | Self::Group | Self::Resources => "",
            Self::List { namespace, .. } => namespace.as_deref().unwrap_or(""),
            Self::Get { namespace, .. }
            | Self::Delete { namespace, .. }
            | Self::DeleteCollection { namespace, .. }
            | Self::Create { namespace, .. } => namespace,
        }
    }

    /// The token's name, for `get` and `delete`: RBAC `resourceNames` can name it.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Get { name, .. } | Self::Delete { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Whether the request changes the store (a dry run does not).
    pub fn writes(&self) -> bool {
        match self {
            Self::Delete { dry_run, .. }
            | Self::DeleteCollection { dry_run, .. }
            | Self::Create { dry_run, .. } => !dry_run,
            _ => false,
        }
    }
}

fn only_get(method: &Method, request: KubeRequest) -> Result<KubeRequest, KubeRefusal> {
    if method == Method::GET {
        Ok(request)
    } else {
        Err(not_allowed(method))
    }
}

fn not_allowed(method: &Method) -> KubeRefusal {
    KubeRefusal::MethodNotAllowed(format!(
        "the server does not allow this method on the requested resource ({method})"
    ))
}

/// The query parameters that matter; others (`fieldValidation`, `timeoutSeconds`,
/// `resourceVersion`, `pretty`, …) are accepted and ignored, as they change nothing here.
#[derive(Default)]
struct Query {
    list: ListOptions,
    include_object: Option<IncludeObject>,
    dry_run: bool,
    watch: bool,
}

impl Query {
    fn parse(query: Option<&str>) -> Result<Self, KubeRefusal> {
        let mut parsed = Self::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "fieldSelector" => parsed
                    .list
                    .fields
                    .extend(FieldRequirement::parse_all(&value)?),
                "labelSelector" if !value.trim().is_empty() => {
                    return Err(KubeRefusal::BadRequest(format!(
                        "labelSelector {value:?}: oauthtokens carry no labels; select them with --field-selector"
                    )));
                }
                "limit" => {
                    let limit: i64 = value.parse().map_err(|_| {
                        KubeRefusal::BadRequest(format!("limit {value:?} is not a number"))
                    })?;
                    // Kubernetes reads 0 and below as no limit.
                    parsed.list.limit = (limit > 0).then(|| (limit as usize).min(MAX_LIMIT));
                }
                "continue" if !value.is_empty() => {
                    parsed.list.continue_from = Some(value.into_owned())
                }
                "includeObject" => {
                    parsed.include_object = Some(match value.as_ref() {
                        "None" => IncludeObject::None,
                        "Metadata" | "" => IncludeObject::Metadata,
                        "Object" => IncludeObject::Object,
                        other => {
                            return Err(KubeRefusal::BadRequest(format!(
                                "includeObject {other:?} is not one of None, Metadata, Object"
                            )));
                        }
                    })
                }
                "dryRun" => match value.as_ref() {
                    "All" => parsed.dry_run = true,
                    other => {
                        return Err(KubeRefusal::BadRequest(format!(
                            "dryRun {other:?}: the only valid value is All"
                        )));
                    }
                },
                "watch" => parsed.watch = matches!(value.as_ref(), "true" | "1"),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

// === impl Output ===

impl Output {
    /// A Table when `accept` asks for `meta.k8s.io/v1` Tables (kubectl's `get` does), else
    /// objects.
    fn of(accept: Option<&str>, include: Option<IncludeObject>) -> Result<Self, KubeRefusal> {
        let wants_table = accept.is_some_and(|accept| {
            accept.split(',').any(|media| {
                let mut parts = media.split(';').map(str::trim);
                let essence = parts.next().unwrap_or("");
                let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
                essence.eq_ignore_ascii_case("application/json")
                    && params.contains(&("as", "Table"))
                    && params.contains(&("g", "meta.k8s.io"))
                    && params.contains(&("v", "v1"))
            })
        });
        Ok(if wants_table {
            Self::Table(include.unwrap_or(IncludeObject::Metadata))
        } else {
            Self::Object
        })
    }
}

// === impl FieldRequirement ===

impl FieldRequirement {
    /// A whole selector: terms separated by commas.
    fn parse_all(selector: &str) -> Result<Vec<Self>, KubeRefusal> {
        selector
            .split(',')
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(Self::parse)
            .collect()
    }

    fn parse(term: &str) -> Result<Self, KubeRefusal> {
        let (key, value, equals) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, true)
        } else {
            return Err(KubeRefusal::BadRequest(format!(
                "invalid selector: '{term}'; can't understand '{term}'"
            )));
        };
        let field = match key.trim() {
            "metadata.name" => Field::Name,
            "metadata.namespace" => Field::Namespace,
            "spec.authenticatedUserid" => Field::AuthenticatedUserid,
            "spec.clientId" => Field::ClientId,
            "spec.service" => Field::Service,
            other => {
                return Err(KubeRefusal::BadRequest(format!(
                    "field label not supported: {other}"
                )));
            }
        };
        Ok(Self {
            field,
            value: value.trim().to_owned(),
            equals,
        })
    }
}
