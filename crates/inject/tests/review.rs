//! The webhook with real AdmissionReview v1 documents, as kube-apiserver sends them
//! (`tests/fixtures/*.json`): the answer's shape, and the pod the API server would store after
//! applying the answer's patch.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};
use tollgate_inject::{InjectConfig, ReviewError, Scope, review};

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn config() -> InjectConfig {
    let mut config =
        InjectConfig::new("ghcr.io/example/tollgate:0.1.0").with_controller_ca_pem(CA_PEM);
    config.excluded_namespaces.push("tollgate-system".into());
    config
}

/// The answer as JSON, checked for what every answer must have.
fn answer(name: &str, scope: Scope) -> Value {
    let request: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let body = review(&fixture(name), &config(), scope).unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer:#}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer:#}");
    assert!(answer.get("request").is_none(), "{answer:#}");
    assert_eq!(answer["response"]["uid"], request["request"]["uid"]);
    answer
}

/// The stored pod: the request's object with the answer's patch applied.
fn stored(name: &str, answer: &Value) -> Value {
    let request: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let mut pod = request["request"]["object"].clone();
    let Some(patch) = answer["response"].get("patch") else {
        return pod;
    };
    let patch = patch.as_str().expect("the patch is a base64 string");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_annotated_pod_from_a_replicaset_is_injected() {
    let answer = answer("pod-annotated.json", Scope::PodAnnotation);
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert_eq!(response["auditAnnotations"]["decision"], "injected");
    assert!(response.get("warnings").is_none(), "{response:#}");

    let pod = stored("pod-annotated.json", &answer);
    assert_eq!(
        container_names(&pod, "containers"),
        ["iris", "tollgate-sidecar"]
    );
    assert_eq!(
        pod["metadata"]["labels"]["oauth.tollgate.dev/injected"],
        "true"
    );
    assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], "5d8f7c9b4");
    assert_eq!(
        pod["metadata"]["annotations"]["tollgate.dev/controller-ca"],
        CA_PEM
    );
    // Which sidecar the pod runs, for finding pods left on an old one after an upgrade.
    assert_eq!(
        pod["metadata"]["annotations"]["tollgate.dev/proxy-version"],
        "0.1.0"
    );
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        [
            "kube-api-access-7xq2k",
            "tollgate-token",
            "tollgate-ca",
            "tollgate-cache"
        ]
    );
    // A field newer than this crate's Kubernetes types is still there.
    assert_eq!(pod["spec"]["hostnameOverride"], "iris-from-the-future");
    assert_eq!(
        pod["metadata"]["managedFields"][0]["manager"],
        "kube-controller-manager"
    );
    assert_eq!(
        pod["spec"]["containers"][1]["image"],
        "ghcr.io/example/tollgate:0.1.0"
    );
}

#[test]
fn an_unannotated_pod_is_admitted_untouched_unless_its_namespace_opted_in() {
    let answer_plain = answer("pod-plain.json", Scope::PodAnnotation);
    let response = &answer_plain["response"];
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none());
    assert!(response.get("patchType").is_none());
    assert_eq!(
        response["auditAnnotations"]["decision"],
        "skipped: not requested"
    );

    let answer_ns = answer("pod-plain.json", Scope::Namespace);
    let pod = stored("pod-plain.json", &answer_ns);
    assert_eq!(
        container_names(&pod, "containers"),
        ["iris", "tollgate-sidecar"]
    );
}

#[test]
fn a_bad_annotation_refuses_the_pod_with_its_name() {
    let answer = answer("pod-bad-annotation.json", Scope::PodAnnotation);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none());
    assert_eq!(response["status"]["status"], "Failure");
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(response["status"]["reason"], "BadRequest");
    let message = response["status"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "annotation tollgate.dev/proxy-memory: \"64m\" is a fraction of a byte; \
         a memory quantity such as 64Mi or 1Gi (Mi, not m)"
    );
}

#[test]
fn host_network_pods_and_the_clusters_own_namespaces_are_left_alone() {
    for (name, decision) in [
        ("pod-host-network.json", "skipped: hostNetwork pod"),
        (
            "pod-kube-system.json",
            "skipped: namespace kube-system is excluded",
        ),
    ] {
        for scope in [Scope::PodAnnotation, Scope::Namespace] {
            let answer = answer(name, scope);
            assert_eq!(answer["response"]["allowed"], true, "{name}");
            assert!(answer["response"].get("patch").is_none(), "{name}");
            assert_eq!(answer["response"]["auditAnnotations"]["decision"], decision);
        }
    }
}

#[test]
fn updates_and_other_kinds_are_admitted_untouched() {
    for name in ["pod-update.json", "deployment-create.json"] {
        let answer = answer(name, Scope::Namespace);
        assert_eq!(
            answer["response"],
            json!({"uid": answer["response"]["uid"], "allowed": true, "status": {}}),
            "{name}"
        );
    }
}

#[test]
fn a_dry_run_is_answered_the_same_and_the_namespace_comes_from_the_request() {
    let answer = answer("pod-native-dry-run.json", Scope::PodAnnotation);
    assert_eq!(answer["response"]["allowed"], true);
    let pod = stored("pod-native-dry-run.json", &answer);
    assert_eq!(container_names(&pod, "containers"), ["iris"]);
    assert_eq!(
        container_names(&pod, "initContainers"),
        ["tollgate-sidecar"]
    );
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(
        sidecar["command"],
        json!(["/usr/local/bin/tollgate-sidecar"])
    );
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.ends_with(&[
        "--tls-cert",
        "/var/run/tollgate/tls/tls.crt",
        "--tls-key",
        "/var/run/tollgate/tls/tls.key"
    ]));
}

#[test]
fn a_pod_injected_by_inject_f_gets_the_controller_s_ca() {
    // The pod template as `tollgate inject -f` wrote it: sidecar in, CA annotation empty.
    let mut request: Value = serde_json::from_slice(&fixture("pod-annotated.json")).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(request["request"]["object"].clone()).unwrap();
    let ahead = tollgate_inject::inject(&pod, &InjectConfig::new("tollgate:0.1.0")).unwrap();
    json_patch::patch(&mut request["request"]["object"], &ahead.0).unwrap();

    let body = review(
        &serde_json::to_vec(&request).unwrap(),
        &config(),
        Scope::PodAnnotation,
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/metadata/annotations/tollgate.dev~1controller-ca", "value": CA_PEM}])
    );
}

#[test]
fn what_is_not_an_admission_review_is_an_error() {
    for body in [
        &b"{}"[..],
        b"not json",
        br#"{"kind":"Pod","apiVersion":"v1"}"#,
    ] {
        let error = review(body, &config(), Scope::PodAnnotation).unwrap_err();
        assert!(
            matches!(error, ReviewError::Malformed(_) | ReviewError::NoRequest),
            "{error}"
        );
    }
    let no_request = br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#;
    assert!(matches!(
        review(no_request, &config(), Scope::PodAnnotation),
        Err(ReviewError::NoRequest)
    ));
}

/// A typo in the annotation that asks for a sidecar leaves the pod without one: its author
/// hears why from kubectl, through the answer's `warnings`, with the annotation it meant.
#[test]
fn a_misspelt_annotation_draws_a_warning_naming_the_nearest_known_one() {
    let mut request: Value = serde_json::from_slice(&fixture("pod-plain.json")).unwrap();
    request["request"]["object"]["metadata"]["annotations"] =
        json!({"tollgate.dev/injct": "enabled", "example.com/other": "x"});
    let body = review(
        &serde_json::to_vec(&request).unwrap(),
        &config(),
        Scope::PodAnnotation,
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response:#}");
    assert_eq!(
        response["warnings"],
        json!([
            "tollgate: unknown annotation tollgate.dev/injct is ignored; did you mean tollgate.dev/inject?"
        ])
    );

    // Injected pods get the same warnings beside their patch.
    request["request"]["object"]["metadata"]["annotations"] =
        json!({"tollgate.dev/inject": "enabled", "tollgate.dev/proxy-memry": "1Gi"});
    let body = review(
        &serde_json::to_vec(&request).unwrap(),
        &config(),
        Scope::PodAnnotation,
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["response"].get("patch").is_some(), "{answer:#}");
    assert_eq!(
        answer["response"]["warnings"],
        json!([
            "tollgate: unknown annotation tollgate.dev/proxy-memry is ignored; did you mean tollgate.dev/proxy-memory?"
        ])
    );
}
