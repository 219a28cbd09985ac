//! What the checks read: the objects the fetch layer got from the API server (or a test made
//! up), each with the error that kept it from being read. Every check is a pure function of
//! a [`FetchedObjects`].

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use serde::Deserialize;

use crate::names::ChartNames;

/// An object as read: `Err` says why it could not be (forbidden, unreachable), `Ok(None)`
/// that it does not exist.
pub type Fetched<T> = Result<T, String>;

/// Everything `tollgate check` looks at, read once.
#[derive(Debug, Clone)]
pub struct FetchedObjects {
    pub names: ChartNames,
    /// The clock the Lease and certificates are judged by.
    pub now: Timestamp,
    /// `--cert-expiry-days`: a certificate closer than this to its end fails.
    pub cert_expiry_days: u32,
    /// The installed CRD of each CRD this binary generates, by name.
    pub crds: Vec<(String, Fetched<Option<CustomResourceDefinition>>)>,
    pub deployment: Fetched<Option<Deployment>>,
    pub lease: Fetched<Option<Lease>>,
    pub webhook_configuration: Fetched<Option<MutatingWebhookConfiguration>>,
    /// The controller's CA certificate (PEM), and where it was read.
    pub ca: Fetched<Option<CaCertificate>>,
    pub api_service: Fetched<Option<APIService>>,
    /// The answer to a one-item list of the tokens API.
    pub tokens_probe: TokensProbe,
    /// Certificates the controller (or cert-manager, for it) serves with, read from Secrets.
    pub serving_certificates: Vec<NamedCertificate>,
    /// The OAuthServices, Consumers and OAuthApplications of every namespace.
    pub resources: Fetched<Vec<ObservedResource>>,
}

/// The controller's CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    pub pem: String,
    /// "Secret tollgate/tollgate-ca", for messages.
    pub source: String,
}

/// A certificate, PEM, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCertificate {
    /// "the controller's CA (Secret tollgate/tollgate-ca)".
    pub what: String,
    pub pem: Fetched<String>,
}

/// What `GET /apis/tokens.oauth.tollgate.dev/v1alpha1/namespaces/<ns>/oauthtokens?limit=1`
/// answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokensProbe {
    /// A list: the controller read the store.
    Listed,
    /// A Kubernetes `Status` error (or a body that was not one, with reason empty).
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer at all.
    Unreachable(String),
    /// Not asked (the APIService is not there to route it).
    NotAsked,
}

/// One OAuthService, Consumer or OAuthApplication, with what its status says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedResource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub status: ObservedStatus,
}

/// The part of the three kinds' `status` the checks read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedStatus {
    pub conditions: Vec<ObservedCondition>,
    pub observed_generation: Option<i64>,
    pub selected_pods: Option<i64>,
    pub up_to_date_pods: Option<i64>,
}

/// A status condition, read leniently: a condition missing a field is still shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}
