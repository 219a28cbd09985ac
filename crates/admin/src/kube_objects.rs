//! The aggregated API's documents, as kubectl reads them: discovery, `OAuthToken` objects and
//! their list, the `Table` kubectl prints, and `Status` errors with Kubernetes' reasons. Pure:
//! records and a clock in, JSON out. A token's value or hash never appears in any of them.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};
use tollgate_store::TokenRecord;
use uuid::Uuid;

use crate::kube_request::{
    Field, FieldRequirement, IncludeObject, KUBE_CATEGORY, KUBE_KIND, KUBE_LIST_KIND,
    KUBE_SHORT_NAME, KUBE_SINGULAR, KUBE_VERSION,
};
use crate::request::{ADMIN_GROUP, ADMIN_RESOURCE};

/// Names the configuration gives a token's ids, for display and for `spec.service` selectors:
/// an OAuthService's name by its id, a Consumer's name by its OAuthApplication's id.
#[derive(Clone, Debug, Default)]
pub struct TokenNames {
    pub services: HashMap<Uuid, String>,
    pub consumers: HashMap<Uuid, String>,
}

/// The namespace of the uid of every token object: a token's uid is stable across requests
/// and controllers without being stored.
const TOKEN_UID_NAMESPACE: Uuid = Uuid::from_u128(0x3f6e_91a2_5c07_4d1b_8e44_b0c9_d2a7_1e55);

/// `tokens.oauth.tollgate.dev/v1alpha1`.
pub fn group_version() -> String {
    format!("{ADMIN_GROUP}/{KUBE_VERSION}")
}

/// `GET /apis`: the one group.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_body()]})
}

/// `GET /apis/tokens.oauth.tollgate.dev`.
pub fn group() -> Value {
    let mut group = group_body();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    group
}

fn group_body() -> Value {
    let version = json!({"groupVersion": group_version(), "version": KUBE_VERSION});
    json!({"name": ADMIN_GROUP, "versions": [version], "preferredVersion": version})
}

/// `GET /apis/tokens.oauth.tollgate.dev/v1alpha1`: the resource, its verbs and names.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(),
        "resources": [{
            "name": ADMIN_RESOURCE,
            "singularName": KUBE_SINGULAR,
            "namespaced": true,
            "kind": KUBE_KIND,
            "verbs": ["create", "delete", "deletecollection", "get", "list"],
            "shortNames": [KUBE_SHORT_NAME],
            "categories": [KUBE_CATEGORY],
        }],
    })
}

/// One token as an `OAuthToken` object.
pub fn token_object(record: &TokenRecord, names: &TokenNames) -> Value {
    let mut spec = json!({
        "clientId": record.client_id,
        "credentialId": record.credential_id,
        "scope": record.scope,
        "tokenType": "bearer",
        "expiresIn": record.expires_in,
    });
    if let Some(user) = &record.authenticated_userid {
        spec["authenticatedUserid"] = json!(user);
    }
    if let Some(id) = record.service_id {
        spec["serviceId"] = json!(id);
        if let Some(name) = names.services.get(&id) {
            spec["service"] = json!(name);
        }
    }
    if let Some(consumer) = names.consumers.get(&record.credential_id) {
        spec["consumer"] = json!(consumer);
    }
    if let Some(at) = expires_at_ms(record) {
        spec["expiresAt"] = json!(rfc3339(at));
    }
    if record.ttl > 0 {
        spec["ttl"] = json!(record.ttl);
    }
    json!({
        "apiVersion": group_version(),
        "kind": KUBE_KIND,
        "metadata": metadata(record),
        "spec": spec,
    })
}

fn metadata(record: &TokenRecord) -> Value {
    json!({
        "name": record.id.to_string(),
        "namespace": record.namespace,
        "uid": token_uid(&record.namespace, record.id),
        "resourceVersion": resource_version(record),
        "creationTimestamp": rfc3339(record.created_at),
    })
}

/// A token's uid: a v5 UUID of its namespace and id.
pub fn token_uid(namespace: &str, id: Uuid) -> Uuid {
    Uuid::new_v5(&TOKEN_UID_NAMESPACE, format!("{namespace}/{id}").as_bytes())
}

/// Opaque, as Kubernetes promises: a record never changes once issued, so its issue time
/// versions it.
fn resource_version(record: &TokenRecord) -> String {
    record.created_at.max(1).to_string()
}

fn expires_at_ms(record: &TokenRecord) -> Option<u64> {
    (record.expires_in > 0).then(|| record.created_at + u64::from(record.expires_in) * 1000)
}

/// An `OAuthTokenList`; `continue_from` resumes it.
pub fn token_list(records: &[TokenRecord], names: &TokenNames, next: Option<&str>) -> Value {
    let items: Vec<Value> = records.iter().map(|r| token_object(r, names)).collect();
    json!({
        "apiVersion": group_version(),
        "kind": KUBE_LIST_KIND,
        "metadata": list_metadata(next),
        "items": items,
    })
}

fn list_metadata(next: Option<&str>) -> Value {
    let mut metadata = json!({"resourceVersion": "1"});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    metadata
}

/// The columns of `kubectl get oauthtokens`.
const COLUMNS: [(&str, &str, &str); 7] = [
    ("Name", "name", "The token's id, as the admin API shows it."),
    (
        "Consumer",
        "",
        "The Consumer of the token's OAuthApplication.",
    ),
    (
        "Client",
        "",
        "The client_id of the token's OAuthApplication.",
    ),
    (
        "User",
        "",
        "The authenticated_userid the token was issued for.",
    ),
    ("Scope", "", "The granted scopes."),
    ("Expires", "", "How long the access token remains valid."),
    ("Age", "date", "How long ago the token was issued."),
];

/// A `meta.k8s.io/v1` Table of `records`, with each row's object as `include` asks.
pub fn table(
    records: &[TokenRecord],
    names: &TokenNames,
    include: IncludeObject,
    next: Option<&str>,
    now_ms: u64,
) -> Value {
    let columns: Vec<Value> = COLUMNS
        .iter()
        .map(|(name, format, description)| {
            json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = records
        .iter()
        .map(|record| {
            let mut row = json!({"cells": cells(record, names, now_ms)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": metadata(record),
                    });
                }
                IncludeObject::Object => row["object"] = token_object(record, names),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata(next),
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// One row's cells, in the order of [`COLUMNS`].
pub fn cells(record: &TokenRecord, names: &TokenNames, now_ms: u64) -> Vec<String> {
    let or_none = |value: Option<&str>| {
        value
            .filter(|v| !v.is_empty())
            .unwrap_or("<none>")
            .to_owned()
    };
    let expires = match expires_at_ms(record) {
        None => "never".to_owned(),
        Some(at) if at <= now_ms => "expired".to_owned(),
        Some(at) => human_duration(at - now_ms),
    };
    vec![
        record.id.to_string(),
        or_none(
            names
                .consumers
                .get(&record.credential_id)
                .map(String::as_str),
        ),
        record.client_id.clone(),
        or_none(record.authenticated_userid.as_deref()),
        or_none(Some(&record.scope)),
        expires,
        human_duration(now_ms.saturating_sub(record.created_at)),
    ]
}

/// Whether `record` matches every term of a field selector.
pub fn matches(record: &TokenRecord, names: &TokenNames, fields: &[FieldRequirement]) -> bool {
    fields.iter().all(|term| {
        let id = record.id.to_string();
        let actual: Option<&str> = match term.field {
            Field::Name => Some(&id),
            Field::Namespace => Some(&record.namespace),
            Field::AuthenticatedUserid => record.authenticated_userid.as_deref(),
            Field::ClientId => Some(&record.client_id),
            Field::Service => record
                .service_id
                .and_then(|s| names.services.get(&s))
                .map(String::as_str),
        };
        // An absent field reads as "", as Kubernetes's field sets do.
        (actual.unwrap_or("") == term.value) == term.equals
    })
}

/// Kubernetes' reasons, each with its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    Invalid,
    RequestEntityTooLarge,
    /// The API server could not be asked who the caller is or what they may do.
    InternalError,
    ServiceUnavailable,
}

/// One cause of an `Invalid`: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    pub field: String,
    pub message: String,
}

impl Reason {
    pub fn code(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyExists => StatusCode::CONFLICT,
            Self::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::AlreadyExists => "AlreadyExists",
            Self::Invalid => "Invalid",
            Self::RequestEntityTooLarge => "RequestEntityTooLarge",
            Self::InternalError => "InternalError",
            Self::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// A `Status` failure: `reason`, `message`, and `details` naming the object when there is one.
pub fn status(
    reason: Reason,
    message: &str,
    name: Option<&str>,
    causes: &[Cause],
) -> Response<Bytes> {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason.name(),
        "code": reason.code().as_u16(),
    });
    let about_the_resource = !matches!(
        reason,
        Reason::ServiceUnavailable | Reason::Unauthorized | Reason::InternalError
    );
    if name.is_some() || !causes.is_empty() || about_the_resource {
        let mut details = json!({"group": ADMIN_GROUP, "kind": ADMIN_RESOURCE});
        if let Some(name) = name {
            details["name"] = json!(name);
        }
        if !causes.is_empty() {
            details["causes"] = json!(causes);
        }
        body["details"] = details;
    }
    json_response(reason.code(), &body)
}

/// `oauthtokens.tokens.oauth.tollgate.dev`, as Kubernetes names the resource in messages.
pub fn qualified_resource() -> String {
    format!("{ADMIN_RESOURCE}.{ADMIN_GROUP}")
}

/// 404 for a token that does not exist.
pub fn not_found(name: &str) -> Response<Bytes> {
    status(
        Reason::NotFound,
        &format!("{} \"{name}\" not found", qualified_resource()),
        Some(name),
        &[],
    )
}

/// 403 naming the user, verb, resource and namespace, as Kubernetes words it.
pub fn forbidden(user: &str, verb: &str, namespace: &str, name: Option<&str>) -> Response<Bytes> {
    let what = match name {
        Some(name) => format!("{} \"{name}\"", qualified_resource()),
        None => qualified_resource(),
    };
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{namespace}\"")
    };
    status(
        Reason::Forbidden,
        &format!(
            "{what} is forbidden: User \"{user}\" cannot {verb} resource \"{ADMIN_RESOURCE}\" in API group \"{ADMIN_GROUP}\" {scope}"
        ),
        name,
        &[],
    )
}

/// 503 when the token store cannot be reached.
pub fn store_unavailable() -> Response<Bytes> {
    status(
        Reason::ServiceUnavailable,
        "the token store is unavailable",
        None,
        &[],
    )
}

pub fn json_response(code: StatusCode, body: &Value) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).map_or_else(|_| Bytes::from_static(b"{}"), Bytes::from);
    let mut response = Response::new(bytes);
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Epoch milliseconds as RFC 3339 in UTC, to the second, as Kubernetes writes times.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration as kubectl prints ages: `45s`, `5m10s`, `3h`, `2d4h`, `400d`, `2y10d`.
pub fn human_duration(ms: u64) -> String {
    let seconds = ms / 1000;
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}
