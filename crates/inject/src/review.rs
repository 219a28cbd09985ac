//! The webhook without HTTP: an AdmissionReview v1 (JSON) in, an AdmissionReview v1 out,
//! with the patch as base64 JSONPatch. Everything but an unreadable review is an answer to
//! the API server; only a body that is not an AdmissionReview is an error (HTTP 400).

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};

use crate::annotations::unknown_annotation_warnings;
use crate::{Decision, InjectConfig, Scope, SkipReason, decide};

/// The body is not an AdmissionReview with a request.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("not an AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// What the review did, for the listener's log line and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not a pod CREATE: admitted untouched.
    Ignored,
    Injected,
    Skipped(SkipReason),
    /// The pod asked for a sidecar it cannot have; the message went back to its creator.
    Refused(String),
}

/// The answer to the API server, and what it says.
#[derive(Clone, Debug)]
pub struct Reviewed {
    pub body: Vec<u8>,
    pub outcome: Outcome,
    /// The pod, `namespace/name` (or `namespace/generateName*`), for logs.
    pub pod: String,
}

/// Answers one AdmissionReview for the webhook of `scope`.
pub fn review(body: &[u8], config: &InjectConfig, scope: Scope) -> Result<Vec<u8>, ReviewError> {
    review_with_outcome(body, config, scope).map(|reviewed| reviewed.body)
}

/// [`review`], also saying what it did.
pub fn review_with_outcome(
    body: &[u8],
    config: &InjectConfig,
    scope: Scope,
) -> Result<Reviewed, ReviewError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let response = AdmissionResponse::from(&request);
    let namespace = request.namespace.clone().unwrap_or_default();
    let name = if request.name.is_empty() {
        request
            .object
            .as_ref()
            .and_then(|o| o.metadata.generate_name.clone())
            .map(|prefix| format!("{prefix}*"))
            .unwrap_or_default()
    } else {
        request.name.clone()
    };
    let pod_name = format!("{namespace}/{name}");

    let is_pod_create = request.operation == Operation::Create
        && request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.sub_resource.is_none();
    let object = match (&request.object, is_pod_create) {
        (Some(object), true) => object,
        _ => return finish(response, Outcome::Ignored, pod_name),
    };

    let pod = serde_json::to_value(object).and_then(serde_json::from_value::<Pod>);
    let mut pod = match pod {
        Ok(pod) => pod,
        Err(error) => {
            let message = format!("tollgate: cannot read the pod: {error}");
            return finish(
                refuse(response, &message),
                Outcome::Refused(message),
                pod_name,
            );
        }
    };
    // A pod being created may not carry its namespace yet; the request does.
    if pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        pod.metadata.namespace = request.namespace.clone();
    }

    let (mut response, outcome, decision) = match decide(&pod, config, scope) {
        Ok(Decision::Inject { patch, warnings }) => {
            let mut response = match response.with_patch(patch) {
                Ok(response) => response,
                Err(error) => {
                    let message = format!("tollgate: {error}");
                    return finish(
                        refuse(AdmissionResponse::from(&request), &message),
                        Outcome::Refused(message),
                        pod_name,
                    );
                }
            };
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            (response, Outcome::Injected, "injected".to_owned())
        }
        Ok(Decision::Skip(reason)) => {
            let decision = format!("skipped: {}", reason.describe());
            // A typo such as `tollgate.dev/injct: enabled` is why many pods are not injected:
            // its author hears of it from kubectl.
            let mut response = response;
            let warnings = unknown_annotation_warnings(&pod);
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            (response, Outcome::Skipped(reason), decision)
        }
        Err(error) => {
            let message = error.to_string();
            (
                refuse(response, &message),
                Outcome::Refused(message),
                "refused".to_owned(),
            )
        }
    };
    // Recorded in the API server's audit log under this webhook's name.
    response
        .audit_annotations
        .insert("decision".to_owned(), decision);
    finish(response, outcome, pod_name)
}

/// A refusal the API server passes on to the pod's creator as `400 Bad Request`: the pod
/// (its annotations) is what is wrong, not the creator's rights.
fn refuse(mut response: AdmissionResponse, message: &str) -> AdmissionResponse {
    response.allowed = false;
    response.result = Status::failure(message, "BadRequest").with_code(400);
    response
}

/// Serializes the answer. kube writes `patch` as an array of byte values; the API documents
/// it as base64 (Go's `[]byte`), so it is written that way.
fn finish(
    response: AdmissionResponse,
    outcome: Outcome,
    pod: String,
) -> Result<Reviewed, ReviewError> {
    let mut review = serde_json::to_value(response.into_review())?;
    if let Some(patch) = review.pointer_mut("/response/patch") {
        let bytes: Vec<u8> = serde_json::from_value(patch.take())?;
        *patch = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
    }
    let body = serde_json::to_vec(&review)?;
    Ok(Reviewed { body, outcome, pod })
}

// === impl SkipReason ===

impl SkipReason {
    /// A few words for logs and audit annotations.
    pub fn describe(&self) -> String {
        match self {
            SkipReason::NotRequested => "not requested".to_owned(),
            SkipReason::Disabled => "annotated disabled".to_owned(),
            SkipReason::AlreadyInjected => "already injected".to_owned(),
            SkipReason::HostNetwork => "hostNetwork pod".to_owned(),
            SkipReason::ExcludedNamespace(ns) => format!("namespace {ns} is excluded"),
        }
    }
}
