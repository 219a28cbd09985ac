//! What each admin request does to the token store, in Kong's envelope, once it is routed and
//! authorised. Token values are never shown: tokens are named by their `id`.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde::Serialize;
use tollgate_api::Snapshot;
use tollgate_store::{ListFilter, StoreError, TokenHash, TokenRecord, TokenStore};
use uuid::Uuid;

use crate::request::{AdminRequest, Unrouted};

/// Kong's default page size, and its maximum.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// One token as the admin API shows it: the article's fields, without the token values.
#[derive(Serialize)]
struct TokenEntry<'a> {
    id: Uuid,
    credential_id: Uuid,
    service_id: Option<Uuid>,
    authenticated_userid: Option<&'a str>,
    scope: &'a str,
    token_type: &'static str,
    expires_in: u32,
    created_at: u64,
}

#[derive(Serialize)]
struct ListBody<'a> {
    data: Vec<TokenEntry<'a>>,
    next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<&'a str>,
}

/// Errors of the admin API, each with Kong's `{"message": …}` body.
#[derive(Debug)]
pub(crate) enum AdminError {
    NotFound,
    MethodNotAllowed,
    BadRequest(String),
    /// A token to import that is wrong in `field` (Kong's name of it).
    Invalid {
        field: &'static str,
        message: String,
    },
    Store(StoreError),
}

/// A token to import: the body of `POST /{ns}/oauth2_tokens`, shared with `migrate kong`.
pub(crate) use tollgate_api::token_import::TokenImport as Import;

/// Who sent an admin request, as the audit line of a revocation names them: never a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller<'a> {
    /// The Kubernetes user the controller authenticated: TokenReview's, or the front proxy's
    /// `X-Remote-User`.
    User(&'a str),
    /// A standalone sidecar's admin listener: the holder of its admin token, or, when it has
    /// none (`token: false`), whoever reached the listener.
    Listener { token: bool },
}

impl std::fmt::Display for Caller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Quoted and escaped: a name is text, and a line break must not start a line.
            Caller::User(name) => write!(f, "user {name:?}"),
            Caller::Listener { token: true } => f.write_str("the holder of the admin token"),
            Caller::Listener { token: false } => {
                f.write_str("whoever reached the admin listener (no admin token set)")
            }
        }
    }
}

/// Serves one routed admin request, once whoever serves it (`caller`) has authorised it.
/// `body` is the request's body, read whole; `snapshot` holds the configuration an import is
/// checked against (only an import reads it).
pub async fn handle<S: TokenStore>(
    store: &S,
    request: &AdminRequest,
    query: Option<&str>,
    body: &[u8],
    snapshot: &Snapshot,
    now_ms: u64,
    caller: Caller<'_>,
) -> Response<Bytes> {
    let response = match route(store, request, query, body, snapshot, now_ms).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    let (namespace, kind) = match request {
        AdminRequest::Delete { namespace, .. } => (namespace, "one"),
        AdminRequest::BulkDelete { namespace } => (namespace, "by_user"),
        _ => return response,
    };
    audit_revocation("kong", namespace, kind, false, response.status(), caller);
    response
}

/// Every revocation through the admin API or the aggregated API (`api`) is logged as an
/// audit line, at `warn` so that the default filter keeps it: who asked, the namespace and
/// the outcome, never the token or its id (Kong accepts the token itself in the id's place).
pub(crate) fn audit_revocation(
    api: &'static str,
    namespace: &str,
    kind: &'static str,
    dry_run: bool,
    status: StatusCode,
    caller: Caller<'_>,
) {
    tracing::warn!(
        target: "tollgate::audit",
        event = "admin_revocation",
        api,
        caller = %caller,
        namespace = %namespace,
        kind,
        dry_run,
        status = status.as_u16(),
        "tokens revoked through the admin API"
    );
}

/// Kong's 404 or 405 for a request that is not an admin request.
pub fn unrouted(refusal: Unrouted) -> Response<Bytes> {
    match refusal {
        Unrouted::NotFound => AdminError::NotFound,
        Unrouted::MethodNotAllowed => AdminError::MethodNotAllowed,
    }
    .into_response()
}

/// Kong's `{"message": …}` body with `status`.
pub fn message(status: StatusCode, text: &str) -> Response<Bytes> {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    json(status, &Message { message: text })
}

/// 401 with `WWW-Authenticate: Bearer`, for a request without a valid bearer token.
pub fn unauthorized() -> Response<Bytes> {
    unauthorized_with("Unauthorized")
}

/// 401 with `WWW-Authenticate: Bearer` and `text` as Kong's message: every listener of both
/// processes that asks for a bearer token answers with this one.
pub fn unauthorized_with(text: &str) -> Response<Bytes> {
    let mut response = message(StatusCode::UNAUTHORIZED, text);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn import<S: TokenStore>(
    store: &S,
    snapshot: &Snapshot,
    namespace: &str,
    body: &[u8],
    now_ms: u64,
) -> Result<Response<Bytes>, AdminError> {
    let prepared = prepare_import(snapshot, namespace, parse_import(body)?, now_ms)?;
    store
        .insert(
            &prepared.record,
            &prepared.access,
            prepared.refresh.as_ref(),
        )
        .await
        .map_err(AdminError::Store)?;
    let record = &prepared.record;
    tracing::info!(namespace, id = %record.id, client = %record.client_id, "token imported through the admin API");
    Ok(json(StatusCode::CREATED, &entry(record)))
}

/// A token to import, checked against the namespace's configuration: what to store.
pub(crate) struct PreparedImport {
    pub record: TokenRecord,
    pub access: TokenHash,
    pub refresh: Option<TokenHash>,
}

/// Today's import checks, shared by `POST /{ns}/oauth2_tokens` and `kubectl create`: the
/// application and service must be configured in `namespace`. Errors name Kong's field.
pub(crate) fn prepare_import(
    snapshot: &Snapshot,
    namespace: &str,
    token: Import,
    now_ms: u64,
) -> Result<PreparedImport, AdminError> {
    let invalid = |field: &'static str, message: String| AdminError::Invalid { field, message };
    if token.access_token.is_empty() {
        return Err(invalid(
            "access_token",
            "access_token must not be empty".into(),
        ));
    }
    if token
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(invalid("token_type", "token_type must be bearer".into()));
    }
    let application = match (
        &token.client_id,
        token
            .credential_id
            .or(token.credential.as_ref().map(|c| c.id)),
    ) {
        (Some(client_id), _) => snapshot.application_by_client_id(namespace, client_id),
        (None, Some(id)) => snapshot
            .application_by_id(id)
            .filter(|a| a.namespace == namespace),
        (None, None) => {
            return Err(invalid(
                "client_id",
                "client_id (or credential_id) is required".into(),
            ));
        }
    }
    .ok_or_else(|| {
        invalid(
            "client_id",
            format!("no OAuthApplication matches in namespace {namespace}"),
        )
    })?;
    let service = match (
        token.service_id.or(token.service.as_ref().map(|s| s.id)),
        &token.service_name,
    ) {
        (Some(id), _) => Some(
            snapshot
                .service_by_id(id)
                .filter(|s| s.namespace == namespace)
                .ok_or_else(|| {
                    invalid(
                        "service_id",
                        format!("no OAuthService {id} in namespace {namespace}"),
                    )
                })?,
        ),
        (None, Some(name)) => Some(
            snapshot
                .services
                .iter()
                .find(|s| s.namespace == namespace && &s.name == name)
                .ok_or_else(|| {
                    invalid(
                        "service_name",
                        format!("no OAuthService {name} in namespace {namespace}"),
                    )
                })?,
        ),
        (None, None) => None,
    };
    let defaults = service.map(|s| (s.oauth2.token_expiration, s.oauth2.refresh_token_ttl));
    let expires_in = token
        .expires_in
        .unwrap_or(defaults.map_or(tollgate_api::snapshot::DEFAULT_TOKEN_EXPIRATION, |d| d.0));
    let refresh_ttl = defaults.map_or(tollgate_api::snapshot::DEFAULT_REFRESH_TOKEN_TTL, |d| d.1);
    let created_at = match token.created_at {
        // Before 1973 in milliseconds is after 5138 in seconds: the unit is unambiguous.
        Some(at) if at < 100_000_000_000 => at * 1000,
        Some(at) => at,
        None => now_ms,
    };
    let record = TokenRecord {
        id: token.id.unwrap_or_else(Uuid::new_v4),
        namespace: namespace.to_owned(),
        credential_id: application.id,
        client_id: application.client_id.clone(),
        service_id: service.map(|s| s.id),
        authenticated_userid: token.authenticated_userid,
        scope: token.scope.unwrap_or_default(),
        expires_in,
        created_at,
        ttl: token
            .ttl
            .unwrap_or(if expires_in > 0 { refresh_ttl } else { 0 }),
    };
    let refresh = token
        .refresh_token
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(TokenHash::of);
    Ok(PreparedImport {
        access: TokenHash::of(&token.access_token),
        record,
        refresh,
    })
}

async fn route<S: TokenStore>(
    store: &S,
    request: &AdminRequest,
    query: Option<&str>,
    body: &[u8],
    snapshot: &Snapshot,
    now_ms: u64,
) -> Result<Response<Bytes>, AdminError> {
    match request {
        AdminRequest::List { namespace } => list(store, namespace, query).await,
        AdminRequest::BulkDelete { namespace } => bulk_delete(store, namespace, query).await,
        AdminRequest::Import { namespace } => {
            import(store, snapshot, namespace, body, now_ms).await
        }
        AdminRequest::Get { namespace, id } => {
            let id = parse_id(id)?;
            let record = store.get(namespace, id).await.map_err(AdminError::Store)?;
            record.map_or(Err(AdminError::NotFound), |r| {
                Ok(json(StatusCode::OK, &entry(&r)))
            })
        }
        AdminRequest::Delete { namespace, id } => delete(store, namespace, id).await,
    }
}

/// `DELETE /{ns}/oauth2_tokens/{id}`: 204 whether or not a token had that id, and whatever
/// the id looks like, as Kong answers (its `02-api_spec.lua`, "returns 204 on inexisting
/// tokens"). A caller thus learns nothing about which ids exist: a right to `delete` tokens
/// is not a way to probe for them. Only a store failure is an error.
async fn delete<S: TokenStore>(
    store: &S,
    namespace: &str,
    id: &str,
) -> Result<Response<Bytes>, AdminError> {
    // A malformed id names no token: there is nothing to delete, and nothing to ask the store.
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(empty(StatusCode::NO_CONTENT));
    };
    let deleted = store
        .delete(namespace, id)
        .await
        .map_err(AdminError::Store)?;
    if deleted {
        tracing::info!(namespace, %id, "token deleted through the admin API");
    } else {
        tracing::debug!(namespace, %id, "admin API: no token to delete with this id");
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// (beyond Kong) `DELETE /{ns}/oauth2_tokens?authenticated_userid=…` revokes every token of a
/// user, an application (`client_id`) or a service (`service_id`). A filter is required, so a
/// stray request cannot wipe a namespace.
async fn bulk_delete<S: TokenStore>(
    store: &S,
    namespace: &str,
    query: Option<&str>,
) -> Result<Response<Bytes>, AdminError> {
    let (filter, _, _) = parse_list_query(query)?;
    if filter == ListFilter::default() {
        return Err(AdminError::BadRequest(
            "bulk deletion needs at least one of authenticated_userid, client_id or service_id"
                .into(),
        ));
    }
    let deleted = store
        .delete_matching(namespace, &filter)
        .await
        .map_err(AdminError::Store)?;
    tracing::info!(
        namespace,
        deleted,
        ?filter,
        "tokens deleted in bulk through the admin API"
    );
    #[derive(Serialize)]
    struct Deleted {
        deleted: usize,
    }
    Ok(json(StatusCode::OK, &Deleted { deleted }))
}

/// The filters, page size and offset of a listing's query string.
fn parse_list_query(
    query: Option<&str>,
) -> Result<(ListFilter, usize, Option<String>), AdminError> {
    let mut size = DEFAULT_PAGE_SIZE;
    let mut offset = None;
    let mut filter = ListFilter::default();
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "size" => {
                size = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
                    .ok_or_else(|| {
                        AdminError::BadRequest(format!(
                            "size must be a number from 1 to {MAX_PAGE_SIZE}"
                        ))
                    })?;
            }
            "offset" => offset = Some(value.into_owned()),
            "authenticated_userid" => filter.authenticated_userid = Some(value.into_owned()),
            "client_id" => filter.client_id = Some(value.into_owned()),
            "service_id" => filter.service_id = Some(parse_id(&value)?),
            _ => {}
        }
    }
    Ok((filter, size, offset))
}

async fn list<S: TokenStore>(
    store: &S,
    namespace: &str,
    query: Option<&str>,
) -> Result<Response<Bytes>, AdminError> {
    let (filter, size, offset) = parse_list_query(query)?;
    let page = store
        .list(namespace, &filter, size, offset.as_deref())
        .await
        .map_err(|e| match e {
            StoreError::InvalidOffset => AdminError::BadRequest("invalid offset".into()),
            e => AdminError::Store(e),
        })?;
    let next = page.next_offset.as_deref().map(|next| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("offset", next);
        query.append_pair("size", &size.to_string());
        if let Some(v) = &filter.authenticated_userid {
            query.append_pair("authenticated_userid", v);
        }
        if let Some(v) = &filter.client_id {
            query.append_pair("client_id", v);
        }
        if let Some(v) = &filter.service_id {
            query.append_pair("service_id", &v.to_string());
        }
        format!("/{namespace}/oauth2_tokens?{}", query.finish())
    });
    let body = ListBody {
        data: page.records.iter().map(entry).collect(),
        next,
        offset: page.next_offset.as_deref(),
    };
    Ok(json(StatusCode::OK, &body))
}

fn entry(record: &TokenRecord) -> TokenEntry<'_> {
    TokenEntry {
        id: record.id,
        credential_id: record.credential_id,
        service_id: record.service_id,
        authenticated_userid: record.authenticated_userid.as_deref(),
        scope: &record.scope,
        token_type: "bearer",
        expires_in: record.expires_in,
        created_at: record.created_at,
    }
}

/// The token to import, or an error naming the field that is wrong (`credential.id: …`), as
/// Kong's `fields` name it.
fn parse_import(body: &[u8]) -> Result<Import, AdminError> {
    let mut document = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut document).map_err(|e| {
        let field = e.path().to_string();
        let problem = e.into_inner();
        AdminError::BadRequest(if field == "." {
            format!("invalid token to import: {problem}")
        } else {
            format!("invalid token to import: {field}: {problem}")
        })
    })
}

fn parse_id(id: &str) -> Result<Uuid, AdminError> {
    Uuid::parse_str(id)
        .map_err(|_| AdminError::BadRequest(format!("`{id}` is not a valid token id (a UUID)")))
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from);
    let mut response = Response::new(bytes);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

// === impl AdminError ===

impl AdminError {
    fn into_response(self) -> Response<Bytes> {
        let (status, text) = match &self {
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found".to_owned()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed".to_owned(),
            ),
            Self::BadRequest(m) | Self::Invalid { message: m, .. } => {
                (StatusCode::BAD_REQUEST, m.clone())
            }
            Self::Store(error) => {
                tracing::error!(%error, "admin API: token store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The token store is unavailable".to_owned(),
                )
            }
        };
        message(status, &text)
    }
}
