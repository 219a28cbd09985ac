//! What each aggregated-API request does to the token store, once it is routed and authorised:
//! the same store operations as the admin API's, answered in Kubernetes' documents
//! (`kube_objects`). Discovery needs no store.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;
use tollgate_api::Snapshot;
use tollgate_store::{ListFilter, StoreError, TokenRecord, TokenStore};
use uuid::Uuid;

use crate::handler::{AdminError, Caller, Import, audit_revocation, prepare_import};
use crate::kube_objects::{
    self as objects, Cause, Reason, TokenNames, json_response, not_found, status, store_unavailable,
};
use crate::kube_request::{
    Field, KUBE_KIND, KubeRefusal, KubeRequest, ListOptions, MAX_LIMIT, Output,
};

/// What the aggregated API needs from the configuration besides the store.
pub trait TokenContext: Send + Sync {
    /// The namespaces a list across every namespace walks: those with a configuration.
    fn namespaces(&self) -> Vec<String>;
    /// The names of the namespace's services and consumers, to show tokens by name.
    fn names(&self, namespace: &str) -> TokenNames;
    /// The namespace's configuration, which an import is checked against.
    fn configuration(&self, namespace: &str) -> Snapshot;
}

/// The Status of a request the grammar refuses.
pub fn kube_refusal(refusal: &KubeRefusal) -> Response<Bytes> {
    match refusal {
        KubeRefusal::NotFound => status(
            Reason::NotFound,
            "the server could not find the requested resource",
            None,
            &[],
        ),
        KubeRefusal::MethodNotAllowed(message) => {
            status(Reason::MethodNotAllowed, message, None, &[])
        }
        KubeRefusal::BadRequest(message) => status(Reason::BadRequest, message, None, &[]),
    }
}

/// Serves one routed, authorised request. `body` is the request's body, read whole.
pub async fn handle_kube<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    request: &KubeRequest,
    body: &[u8],
    now_ms: u64,
    caller: Caller<'_>,
) -> Response<Bytes> {
    let answer = match request {
        KubeRequest::Groups => Ok(json_response(StatusCode::OK, &objects::group_list())),
        KubeRequest::Group => Ok(json_response(StatusCode::OK, &objects::group())),
        KubeRequest::Resources => Ok(json_response(StatusCode::OK, &objects::resource_list())),
        KubeRequest::List {
            namespace,
            options,
            output,
        } => {
            list(
                store,
                context,
                namespace.as_deref(),
                options,
                *output,
                now_ms,
            )
            .await
        }
        KubeRequest::Get {
            namespace,
            name,
            output,
        } => get(store, context, namespace, name, *output, now_ms).await,
        KubeRequest::Delete {
            namespace,
            name,
            dry_run,
        } => match delete_options(body) {
            Ok(body_dry_run) => {
                delete(store, context, namespace, name, *dry_run || body_dry_run).await
            }
            Err(message) => Ok(status(Reason::BadRequest, &message, None, &[])),
        },
        KubeRequest::DeleteCollection {
            namespace,
            options,
            dry_run,
        } => match delete_options(body) {
            Ok(body_dry_run) => {
                delete_collection(store, context, namespace, options, *dry_run || body_dry_run)
                    .await
            }
            Err(message) => Ok(status(Reason::BadRequest, &message, None, &[])),
        },
        KubeRequest::Create { namespace, dry_run } => {
            create(store, context, namespace, body, *dry_run, now_ms).await
        }
    };
    let response = answer.unwrap_or_else(|error| {
        tracing::error!(%error, "aggregated API: token store failed");
        store_unavailable()
    });
    let (namespace, kind, dry_run) = match request {
        KubeRequest::Delete {
            namespace, dry_run, ..
        } => (namespace, "one", dry_run),
        KubeRequest::DeleteCollection {
            namespace, dry_run, ..
        } => (namespace, "collection", dry_run),
        _ => return response,
    };
    let dry_run = *dry_run || delete_options(body).unwrap_or(false);
    audit_revocation(
        "kubernetes",
        namespace,
        kind,
        dry_run,
        response.status(),
        caller,
    );
    response
}

/// Every token of `namespace` (or of every namespace) the options select, up to `limit`,
/// and where the next page starts. `continue` is `NAMESPACE/OFFSET`, opaque to clients.
async fn select<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    namespace: Option<&str>,
    options: &ListOptions,
    names_of: &mut (dyn FnMut(&str) -> TokenNames + Send),
) -> Result<Result<(Vec<TokenRecord>, Option<String>), Response<Bytes>>, StoreError> {
    let mut namespaces = match namespace {
        Some(namespace) => vec![namespace.to_owned()],
        None => context.namespaces(),
    };
    namespaces.sort();
    namespaces.dedup();
    let (start, mut offset) = match &options.continue_from {
        None => (None, None),
        Some(token) => match token.split_once('/') {
            Some((ns, offset)) if namespaces.iter().any(|n| n == ns) => (
                Some(ns.to_owned()),
                (!offset.is_empty()).then(|| offset.to_owned()),
            ),
            _ => return Ok(Err(bad_continue())),
        },
    };
    let filter = store_filter(options);
    let mut items = Vec::new();
    let remaining = |items: &Vec<TokenRecord>| options.limit.map(|l| l.saturating_sub(items.len()));
    let pending: Vec<&String> = namespaces
        .iter()
        .filter(|ns| start.as_ref().is_none_or(|s| *ns >= s))
        .collect();
    for (i, ns) in pending.iter().enumerate() {
        let names = names_of(ns);
        loop {
            let size = remaining(&items).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
            let page = match store.list(ns, &filter, size, offset.as_deref()).await {
                Ok(page) => page,
                Err(StoreError::InvalidOffset) => return Ok(Err(bad_continue())),
                Err(error) => return Err(error),
            };
            items.extend(
                page.records
                    .into_iter()
                    .filter(|r| objects::matches(r, &names, &options.fields)),
            );
            offset = page.next_offset;
            let full = remaining(&items) == Some(0);
            match (&offset, full) {
                (Some(next), true) => return Ok(Ok((items, Some(format!("{ns}/{next}"))))),
                (Some(_), false) => continue,
                (None, true) => {
                    let next = pending.get(i + 1).map(|n| format!("{n}/"));
                    return Ok(Ok((items, next)));
                }
                (None, false) => break,
            }
        }
    }
    Ok(Ok((items, None)))
}

fn bad_continue() -> Response<Bytes> {
    status(
        Reason::BadRequest,
        "the provided continue parameter is not valid",
        None,
        &[],
    )
}

/// The equality terms the store can filter on itself; every term is checked again after.
fn store_filter(options: &ListOptions) -> ListFilter {
    let mut filter = ListFilter::default();
    for term in options.fields.iter().filter(|t| t.equals) {
        match term.field {
            Field::AuthenticatedUserid => filter.authenticated_userid = Some(term.value.clone()),
            Field::ClientId => filter.client_id = Some(term.value.clone()),
            _ => {}
        }
    }
    filter
}

async fn list<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    namespace: Option<&str>,
    options: &ListOptions,
    output: Output,
    now_ms: u64,
) -> Result<Response<Bytes>, StoreError> {
    let mut all_names = TokenNames::default();
    let mut names_of = |ns: &str| {
        let names = context.names(ns);
        all_names.services.extend(names.services.clone());
        all_names.consumers.extend(names.consumers.clone());
        names
    };
    let (records, next) = match select(store, context, namespace, options, &mut names_of).await? {
        Ok(selected) => selected,
        Err(refusal) => return Ok(refusal),
    };
    let body = match output {
        Output::Object => objects::token_list(&records, &all_names, next.as_deref()),
        Output::Table(include) => {
            objects::table(&records, &all_names, include, next.as_deref(), now_ms)
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// The record named `name`, if it is a token id with a record.
async fn find<S: TokenStore>(
    store: &S,
    namespace: &str,
    name: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    match Uuid::parse_str(name) {
        Ok(id) => store.get(namespace, id).await,
        Err(_) => Ok(None),
    }
}

async fn get<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    namespace: &str,
    name: &str,
    output: Output,
    now_ms: u64,
) -> Result<Response<Bytes>, StoreError> {
    let Some(record) = find(store, namespace, name).await? else {
        return Ok(not_found(name));
    };
    let names = context.names(namespace);
    let body = match output {
        Output::Object => objects::token_object(&record, &names),
        Output::Table(include) => objects::table(&[record], &names, include, None, now_ms),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// A DeleteOptions body, when one is sent: whether it asks for a dry run.
/// Errors are the Status message of a 400.
fn delete_options(body: &[u8]) -> Result<bool, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct DeleteOptions {
        #[serde(default)]
        dry_run: Vec<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let options: DeleteOptions = serde_json::from_slice(body)
        .map_err(|e| format!("the DeleteOptions body does not parse: {e}"))?;
    match options.dry_run.as_slice() {
        [] => Ok(false),
        [all] if all == "All" => Ok(true),
        _ => Err("dryRun: the only valid value is All".to_owned()),
    }
}

/// Revokes one token: 200 with the object as it was, or 404 when it does not exist.
async fn delete<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    namespace: &str,
    name: &str,
    dry_run: bool,
) -> Result<Response<Bytes>, StoreError> {
    let Some(record) = find(store, namespace, name).await? else {
        return Ok(not_found(name));
    };
    if !dry_run {
        if !store.delete(namespace, record.id).await? {
            return Ok(not_found(name));
        }
        tracing::info!(namespace, id = %record.id, "token deleted through the aggregated API");
    }
    let names = context.names(namespace);
    Ok(json_response(
        StatusCode::OK,
        &objects::token_object(&record, &names),
    ))
}

/// Revokes every token the selectors match; the answer lists them.
async fn delete_collection<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    namespace: &str,
    options: &ListOptions,
    dry_run: bool,
) -> Result<Response<Bytes>, StoreError> {
    let options = ListOptions {
        limit: None,
        continue_from: None,
        ..options.clone()
    };
    let names = context.names(namespace);
    let mut names_of = |_: &str| names.clone();
    let (records, _) =
        match select(store, context, Some(namespace), &options, &mut names_of).await? {
            Ok(selected) => selected,
            Err(refusal) => return Ok(refusal),
        };
    let mut deleted = Vec::with_capacity(records.len());
    for record in records {
        if dry_run || store.delete(namespace, record.id).await? {
            deleted.push(record);
        }
    }
    if !dry_run {
        tracing::info!(
            namespace,
            deleted = deleted.len(),
            "tokens deleted in bulk through the aggregated API"
        );
    }
    Ok(json_response(
        StatusCode::OK,
        &objects::token_list(&deleted, &names, None),
    ))
}

/// An `OAuthToken` to create: today's import, in Kubernetes' shape. The token's values are
/// write-only: no answer shows them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewToken {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: NewMetadata,
    spec: NewSpec,
}

#[derive(Default, Deserialize)]
struct NewMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSpec {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    credential_id: Option<Uuid>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    service_id: Option<Uuid>,
    #[serde(default)]
    authenticated_userid: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_in: Option<u32>,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    token_type: Option<String>,
    /// Shown by `get`; accepted back so that `get -o yaml` can be edited into a new token,
    /// and ignored: the configuration decides them.
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

fn invalid(name: Option<&str>, field: &str, message: String) -> Response<Bytes> {
    let kind = format!("{KUBE_KIND}.{}", crate::request::ADMIN_GROUP);
    let what = name.map_or(kind.clone(), |name| format!("{kind} \"{name}\""));
    status(
        Reason::Invalid,
        &format!("{what} is invalid: {field}: {message}"),
        name,
        &[Cause {
            field: field.to_owned(),
            message,
        }],
    )
}

async fn create<S: TokenStore, C: TokenContext + ?Sized>(
    store: &S,
    context: &C,
    namespace: &str,
    body: &[u8],
    dry_run: bool,
    now_ms: u64,
) -> Result<Response<Bytes>, StoreError> {
    let mut document = serde_json::Deserializer::from_slice(body);
    let token: NewToken = match serde_path_to_error::deserialize(&mut document) {
        Ok(token) => token,
        Err(error) => {
            let field = error.path().to_string();
            let field = if field == "." {
                "body".to_owned()
            } else {
                field
            };
            // serde quotes what it could not read: never a token value, even a mistyped one.
            let message = if field.starts_with("spec.accessToken")
                || field.starts_with("spec.refreshToken")
            {
                "must be a string".to_owned()
            } else {
                error.into_inner().to_string()
            };
            return Ok(invalid(None, &field, message));
        }
    };
    if token
        .api_version
        .as_deref()
        .is_some_and(|v| v != objects::group_version())
        || token.kind.as_deref().is_some_and(|k| k != KUBE_KIND)
    {
        return Ok(status(
            Reason::BadRequest,
            &format!(
                "the object must be a {KUBE_KIND} of {}",
                objects::group_version()
            ),
            None,
            &[],
        ));
    }
    if token
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != namespace)
    {
        return Ok(status(
            Reason::BadRequest,
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
            &[],
        ));
    }
    let name = token.metadata.name.as_deref();
    let id = match name.map(Uuid::parse_str) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return Ok(invalid(
                name,
                "metadata.name",
                "must be a token id (a UUID), or absent".into(),
            ));
        }
    };
    let spec = token.spec;
    let _ = (spec.consumer, spec.expires_at);
    let import = Import {
        id,
        access_token: spec.access_token,
        refresh_token: spec.refresh_token,
        client_id: spec.client_id,
        credential_id: spec.credential_id,
        service_id: spec.service_id,
        service_name: spec.service,
        authenticated_userid: spec.authenticated_userid,
        scope: spec.scope,
        expires_in: spec.expires_in,
        token_type: spec.token_type,
        ttl: spec.ttl,
        ..Import::default()
    };
    let prepared =
        match prepare_import(&context.configuration(namespace), namespace, import, now_ms) {
            Ok(prepared) => prepared,
            Err(AdminError::Invalid { field, message }) => {
                return Ok(invalid(name, spec_field(field), message));
            }
            Err(other) => return Ok(invalid(name, "spec", format!("{other:?}"))),
        };
    let record = &prepared.record;
    if id.is_some() && store.get(namespace, record.id).await?.is_some() {
        let name = record.id.to_string();
        return Ok(status(
            Reason::AlreadyExists,
            &format!(
                "{} \"{name}\" already exists",
                objects::qualified_resource()
            ),
            Some(&name),
            &[],
        ));
    }
    if !dry_run {
        store
            .insert(record, &prepared.access, prepared.refresh.as_ref())
            .await?;
        tracing::info!(namespace, id = %record.id, client = %record.client_id, "token imported through the aggregated API");
    }
    Ok(json_response(
        StatusCode::CREATED,
        &objects::token_object(record, &context.names(namespace)),
    ))
}

/// The `spec` field of an import error that names Kong's field.
fn spec_field(kong: &str) -> &'static str {
    match kong {
        "access_token" => "spec.accessToken",
        "token_type" => "spec.tokenType",
        "client_id" => "spec.clientId",
        "service_id" => "spec.serviceId",
        "service_name" => "spec.service",
        _ => "spec",
    }
}
