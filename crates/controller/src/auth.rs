//! Who is calling, and may they: bearer tokens checked with a TokenReview, rights with a
//! SubjectAccessReview, the Kubernetes way, so that ordinary RBAC grants the admin API.
//!
//! Both checks sit behind small traits. The API server implements them in a cluster;
//! [`StaticTokens`] implements them from a file for the file-source mode (tests and local
//! development, where there is no API server).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use futures_util::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tollgate_api::SecretString;

use crate::index::ObjectRef;

/// The resource (and its group) the admin API's rights are checked on.
pub use tollgate_admin::{ADMIN_GROUP, ADMIN_RESOURCE};
/// The extra field of a TokenReview naming the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Who a token belongs to, as a TokenReview tells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What the caller wants to do through the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// `list`, `get`, `delete`, `deletecollection` or `create`.
    pub verb: &'static str,
    pub namespace: String,
    /// The token id, for `get` and `delete`: RBAC `resourceNames` can name it.
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The API server could not be asked; the caller should retry.
    #[error("cannot review the request: {0}")]
    Unavailable(String),
}

/// Checks bearer tokens.
pub trait TokenReviewer: Send + Sync + 'static {
    /// Who `token` belongs to, or `None` when it is not valid (for `audience`, when given).
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>>;
}

/// Checks rights.
pub trait AccessReviewer: Send + Sync + 'static {
    fn allowed<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// The API server as reviewer: TokenReview and SubjectAccessReview.
#[derive(Clone)]
pub struct KubeReviewer {
    client: kube::Client,
}

/// Tokens from a file, for the file-source mode. Each line is `TOKEN NAMESPACE/POD`: the
/// token authenticates as that pod's service account, bound to that pod, and grants the admin
/// API (list, get, delete) in that namespace. Blank lines and `#` comments are skipped.
///
/// This is a test and development mode: the tokens are as good as passwords, and nothing
/// expires them.
pub struct StaticTokens {
    tokens: HashMap<String, ObjectRef>,
}

/// The service account name static tokens authenticate as.
const STATIC_SERVICE_ACCOUNT: &str = "tollgate-static";

// === impl Access ===

impl Access {
    /// The right an admin request needs.
    pub fn of(request: &tollgate_admin::AdminRequest) -> Self {
        Self {
            verb: request.verb(),
            namespace: request.namespace().to_owned(),
            name: request.name().map(str::to_owned),
        }
    }
}

// === impl Identity ===

impl Identity {
    /// The pod a projected service-account token is bound to: the namespace from the
    /// username `system:serviceaccount:<namespace>:<name>`, the pod from the review's extra
    /// field. `None` for any other token.
    pub fn pod(&self) -> Option<ObjectRef> {
        let rest = self.username.strip_prefix("system:serviceaccount:")?;
        let (namespace, _service_account) = rest.split_once(':')?;
        let pod = self.extra.get(POD_NAME_EXTRA)?.first()?;
        if namespace.is_empty() || pod.is_empty() {
            return None;
        }
        Some(ObjectRef::new(namespace, pod.as_str()))
    }
}

// === impl KubeReviewer ===

impl KubeReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// The TokenReview sent for `token`.
    pub fn token_review(token: &str, audience: Option<&str>) -> TokenReview {
        TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: audience.map(|a| vec![a.to_owned()]),
            },
            ..Default::default()
        }
    }

    /// The SubjectAccessReview sent for `who` doing `access`.
    pub fn access_review(who: &Identity, access: &Access) -> SubjectAccessReview {
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(who.username.clone()),
                uid: who.uid.clone(),
                groups: (!who.groups.is_empty()).then(|| who.groups.clone()),
                extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(ADMIN_GROUP.to_owned()),
                    resource: Some(ADMIN_RESOURCE.to_owned()),
                    verb: Some(access.verb.to_owned()),
                    namespace: Some(access.namespace.clone()),
                    name: access.name.clone(),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            },
            ..Default::default()
        }
    }
}

impl TokenReviewer for KubeReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = api
                .create(&PostParams::default(), &Self::token_review(token, audience))
                .await
                .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
            let Some(status) = review.status else {
                return Ok(None);
            };
            if status.authenticated != Some(true) {
                return Ok(None);
            }
            // The API server only authenticates a token for the audiences asked for; check
            // anyway, as a reviewer that ignores them would let any token in.
            if let Some(audience) = audience
                && !status.audiences.iter().flatten().any(|a| a == audience)
            {
                return Ok(None);
            }
            let Some(user) = status.user else {
                return Ok(None);
            };
            Ok(Some(Identity {
                username: user.username.unwrap_or_default(),
                uid: user.uid,
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }))
        })
    }
}

impl AccessReviewer for KubeReviewer {
    fn allowed<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let review = api
                .create(&PostParams::default(), &Self::access_review(who, access))
                .await
                .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview: {e}")))?;
            Ok(review.status.is_some_and(|s| s.allowed))
        })
    }
}

// === impl StaticTokens ===

impl StaticTokens {
    /// Reads `path`. Errors name the file and line, never the token.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--static-tokens {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("--static-tokens {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let number = number + 1;
            let mut fields = line.split_whitespace();
            let (Some(token), Some(pod), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("line {number}: expected `TOKEN NAMESPACE/POD`"));
            };
            let Some((namespace, name)) = pod
                .split_once('/')
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
            else {
                return Err(format!("line {number}: `{pod}` is not NAMESPACE/POD"));
            };
            if tokens
                .insert(token.to_owned(), ObjectRef::new(namespace, name))
                .is_some()
            {
                return Err(format!("line {number}: this token is listed twice"));
            }
        }
        if tokens.is_empty() {
            return Err("no token listed (lines are `TOKEN NAMESPACE/POD`)".to_owned());
        }
        Ok(Self { tokens })
    }

    /// The identity a static token stands for: a service account of the pod's namespace,
    /// bound to the pod, as a TokenReview of a projected token would say.
    fn identity(pod: &ObjectRef) -> Identity {
        Identity {
            username: format!(
                "system:serviceaccount:{}:{STATIC_SERVICE_ACCOUNT}",
                pod.namespace
            ),
            uid: None,
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{}", pod.namespace),
                "system:authenticated".to_owned(),
            ],
            extra: BTreeMap::from([(POD_NAME_EXTRA.to_owned(), vec![pod.name.clone()])]),
        }
    }
}

impl TokenReviewer for StaticTokens {
    fn review<'a>(
        &'a self,
        token: &'a str,
        _audience: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let found = self.tokens.get(token).map(Self::identity);
        Box::pin(std::future::ready(Ok(found)))
    }
}

impl AccessReviewer for StaticTokens {
    fn allowed<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        let allowed = who
            .pod()
            .is_some_and(|pod| pod.namespace == access.namespace);
        Box::pin(std::future::ready(Ok(allowed)))
    }
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<SecretString> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| SecretString::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens_are_bound_to_their_pod_and_namespace() {
        let tokens =
            StaticTokens::parse("# comment\n\nsecret-a default/iris-0\nsecret-b other/web\n")
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let who = rt
            .block_on(tokens.review("secret-a", Some("tollgate")))
            .unwrap()
            .unwrap();
        assert_eq!(who.pod(), Some(ObjectRef::new("default", "iris-0")));
        assert!(rt.block_on(tokens.review("nope", None)).unwrap().is_none());
        let access = |ns: &str| Access {
            verb: "delete",
            namespace: ns.to_owned(),
            name: None,
        };
        assert!(
            rt.block_on(tokens.allowed(&who, &access("default")))
                .unwrap()
        );
        assert!(!rt.block_on(tokens.allowed(&who, &access("other"))).unwrap());
        assert!(!format!("{tokens:?}").contains("secret-a"));
    }

    #[test]
    fn static_token_errors_name_the_line_but_never_the_token() {
        for (text, expected) in [
            ("only-a-token\n", "line 1: expected `TOKEN NAMESPACE/POD`"),
            (
                "t1 default/p\nt2 nopod\n",
                "line 2: `nopod` is not NAMESPACE/POD",
            ),
            (
                "t1 default/p\nt1 default/q\n",
                "line 2: this token is listed twice",
            ),
            ("# nothing\n", "no token listed"),
        ] {
            let error = StaticTokens::parse(text).err().unwrap();
            assert!(error.starts_with(expected), "{error}");
            assert!(
                !error.contains("t1") && !error.contains("only-a-token"),
                "{error}"
            );
        }
    }

    #[test]
    fn only_pod_bound_service_account_tokens_name_a_pod() {
        let mut who = Identity {
            username: "system:serviceaccount:default:iris".into(),
            extra: BTreeMap::from([(POD_NAME_EXTRA.to_owned(), vec!["iris-0".to_owned()])]),
            ..Default::default()
        };
        assert_eq!(who.pod(), Some(ObjectRef::new("default", "iris-0")));
        who.username = "alice".into();
        assert_eq!(who.pod(), None);
        who.username = "system:serviceaccount:default:iris".into();
        who.extra.clear();
        assert_eq!(who.pod(), None);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = http::HeaderMap::new();
        assert!(bearer_token(&headers).is_none());
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap().expose(), "abc");
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer_token(&headers).is_none());
        headers.insert(http::header::AUTHORIZATION, "bearer  ".parse().unwrap());
        assert!(bearer_token(&headers).is_none());
    }
}
