//! A token exported from Kong (its `oauth2_tokens` entity) as the admin API imports it:
//! the body of `POST /{namespace}/oauth2_tokens`, read by the admin API and written by
//! `tollgate migrate kong`. Plain data; the checks against the configuration are the admin
//! API's.
//!
//! Holds the token values: no `Debug`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// (beyond Kong) One token to import. The application is named by `client_id` (or
/// tollgate's `credential_id`), the service by `service_id` or `service_name`; without
/// either, the token is global, as in Kong. Unknown fields are refused.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenImport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<Uuid>,
    /// Kong's export names the credential as `{"id": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<IdRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<IdRef>,
    /// The OAuthService's name in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated_userid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u32>,
    /// Kong exports seconds; milliseconds are accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// `bearer`, the only type there is, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// A foreign key as Kong writes it: `{"id": …}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRef {
    pub id: Uuid,
}
