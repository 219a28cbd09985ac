//! The admin API of the article: `/{namespace}/oauth2_tokens` to list, get and delete tokens,
//! in Kong's envelope. Token values are never shown: tokens are named by their `id`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use serde::Serialize;
use tollgate_store::{ListFilter, StoreError, TokenRecord, TokenStore};
use uuid::Uuid;

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
enum AdminError {
    NotFound,
    MethodNotAllowed,
    BadRequest(String),
    Store(StoreError),
}

/// Serves one admin request.
pub async fn handle<S: TokenStore, B>(store: &S, request: &Request<B>) -> Response<Bytes> {
    match route(store, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route<S: TokenStore, B>(
    store: &S,
    request: &Request<B>,
) -> Result<Response<Bytes>, AdminError> {
    let segments: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    // `/oauth2_tokens` without a workspace is Kong's default workspace.
    let (namespace, rest) = match segments.as_slice() {
        ["oauth2_tokens", rest @ ..] => ("default", rest),
        [namespace, "oauth2_tokens", rest @ ..] => (*namespace, rest),
        _ => return Err(AdminError::NotFound),
    };
    match (request.method(), rest) {
        (&Method::GET, []) => list(store, namespace, request.uri().query()).await,
        (&Method::GET, [id]) => {
            let id = parse_id(id)?;
            let record = store.get(namespace, id).await.map_err(AdminError::Store)?;
            record.map_or(Err(AdminError::NotFound), |r| {
                Ok(json(StatusCode::OK, &entry(&r)))
            })
        }
        (&Method::DELETE, [id]) => {
            let id = parse_id(id)?;
            if store
                .delete(namespace, id)
                .await
                .map_err(AdminError::Store)?
            {
                tracing::info!(namespace, %id, "token deleted through the admin API");
                Ok(empty(StatusCode::NO_CONTENT))
            } else {
                Err(AdminError::NotFound)
            }
        }
        (_, [] | [_]) => Err(AdminError::MethodNotAllowed),
        _ => Err(AdminError::NotFound),
    }
}

async fn list<S: TokenStore>(
    store: &S,
    namespace: &str,
    query: Option<&str>,
) -> Result<Response<Bytes>, AdminError> {
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
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        let (status, message) = match &self {
            Self::NotFound => (StatusCode::NOT_FOUND, "Not found".to_owned()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed".to_owned(),
            ),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            Self::Store(error) => {
                tracing::error!(%error, "admin API: token store failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The token store is unavailable".to_owned(),
                )
            }
        };
        json(status, &Message { message: &message })
    }
}
