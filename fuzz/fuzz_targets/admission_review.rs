//! Defends the injection webhook's handling of a request body (`review_with_outcome`, which
//! `server::handle` calls on the raw bytes): AdmissionReview JSON in, the pure pod mutation
//! over its pod, an AdmissionReview out.
//!
//! Input: the request body. Invariants, for both webhooks (annotation and namespace scope):
//! no panic; an error only for a body that is not an AdmissionReview with a request; an
//! answer is an AdmissionReview of the request's type for its uid; it allows the pod unless
//! it refuses it; a patch is base64 JSON Patch that applies to the object the API server sent.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_inject::{InjectConfig, Outcome, Scope, review_with_outcome};

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fuzz_target!(|data: &[u8]| {
    let config = InjectConfig::new("tollgate:0.1.0").with_controller_ca_pem(CA_PEM);
    let is_review = serde_json::from_slice::<
        kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
    >(data)
    .is_ok_and(|review| review.request.is_some());
    for scope in [Scope::PodAnnotation, Scope::Namespace] {
        match review_with_outcome(data, &config, scope) {
            Ok(reviewed) => check_answer(data, &reviewed.body, &reviewed.outcome),
            Err(error) => assert!(!is_review, "a readable review got an error: {error}"),
        }
    }
});

fn check_answer(request: &[u8], answer: &[u8], outcome: &Outcome) {
    let answer: Value = serde_json::from_slice(answer).expect("the answer is JSON");
    // Typed parsing skips unknown fields unchecked (a lone surrogate in `\u` escapes, say);
    // such a request has no `Value` to compare the answer with.
    let Ok(request) = serde_json::from_slice::<Value>(request) else {
        return;
    };
    // kube answers in the request's own type (the API server only sends v1 reviews).
    assert_eq!(answer["apiVersion"], request["apiVersion"]);
    assert_eq!(answer["kind"], request["kind"]);
    let response = &answer["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(
        response["allowed"],
        !matches!(outcome, Outcome::Refused(_)),
        "{outcome:?}"
    );

    let patch = response.get("patch");
    assert_eq!(
        patch.is_some(),
        *outcome == Outcome::Injected,
        "{outcome:?}"
    );
    if let Some(patch) = patch {
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("the patch is a string"))
            .expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON Patch");
        let mut object = request["request"]["object"].clone();
        // The API server always sends `metadata` and `spec.containers` (Go fields without
        // `omitempty`); a pod read without them gets a patch for the pod it would have sent.
        if !(object["metadata"].is_object() && object["spec"]["containers"].is_array()) {
            return;
        }
        if let Err(error) = json_patch::patch(&mut object, &patch) {
            panic!("the patch does not apply to the pod: {error}");
        }
    }
}
