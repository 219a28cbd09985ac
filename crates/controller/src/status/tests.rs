//! Conditions and Events over fake findings: what `kubectl get` and `kubectl describe` show
//! for each state an object can be in.

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::index::{PodCounts, StalePod};

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

/// An application, accepted or not, with `up_to_date` of `selected` pods holding it.
fn found(accepted: bool, selected: i32, up_to_date: i32) -> ObjectStatus {
    let stale = (0..(selected - up_to_date).min(3))
        .map(|n| StalePod {
            name: format!("iris-{n}"),
            holds: (n > 0).then_some(17),
            latest: 19,
        })
        .collect();
    ObjectStatus {
        kind: Kind::OAuthApplication,
        object: ObjectRef::new("default", "sampleapp"),
        generation: Some(3),
        accepted,
        reason: if accepted {
            "Accepted"
        } else {
            "SecretNotFound"
        },
        message: if accepted {
            "configuration accepted".into()
        } else {
            "Secret `sampleapp-secret` was not found".into()
        },
        pods: PodCounts {
            selected,
            up_to_date,
        },
        stale,
    }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    current_condition(status, type_).unwrap_or_else(|| panic!("no {type_} in {status}"))
}

fn summary(status: &Value, type_: &str) -> (String, String) {
    let c = condition(status, type_);
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

#[test]
fn accepted_and_held_by_every_pod_is_ready() {
    let status = desired(&found(true, 2, 2), &Value::Null, &time(100));
    assert_eq!(
        status,
        json!({
            "observedGeneration": 3,
            "selectedPods": 2,
            "upToDatePods": 2,
            "upToDate": "2/2",
            "conditions": [{
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "configuration accepted",
                "lastTransitionTime": "1970-01-01T00:01:40Z",
                "observedGeneration": 3,
            }, {
                "type": "Programmed",
                "status": "True",
                "reason": "Programmed",
                "message": "all 2 injected pods of namespace `default` hold generation 3",
                "lastTransitionTime": "1970-01-01T00:01:40Z",
                "observedGeneration": 3,
            }, {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "all 2 injected pods of namespace `default` hold generation 3",
                "lastTransitionTime": "1970-01-01T00:01:40Z",
                "observedGeneration": 3,
            }],
        })
    );
    assert!(!up_to_date(&status, &Value::Null));
    assert!(up_to_date(&status, &status));
}

/// The lie this replaces: `Ready: True` with "0 of 1 selected pods serve it".
#[test]
fn accepted_but_not_held_by_every_pod_is_not_ready() {
    let mut service = found(true, 1, 0);
    service.kind = Kind::OAuthService;
    let status = desired(&service, &Value::Null, &time(1));
    assert_eq!(summary(&status, "Accepted"), pair("True", "Accepted"));
    assert_eq!(summary(&status, "Programmed"), pair("False", "Pending"));
    assert_eq!(summary(&status, "Ready"), pair("False", "Pending"));
    assert_eq!(
        condition(&status, "Ready")["message"],
        "0 of 1 selected pods hold generation 3; waiting for iris-0 (no snapshot yet)"
    );
    assert_eq!(status["upToDate"], "0/1");
}

#[test]
fn a_pending_message_names_a_few_pods_and_counts_the_rest() {
    let status = desired(&found(true, 10, 2), &Value::Null, &time(1));
    assert_eq!(
        condition(&status, "Programmed")["message"],
        "2 of 10 injected pods of namespace `default` hold generation 3; waiting for \
         iris-0 (no snapshot yet), iris-1 (holds snapshot 17 of 19), \
         iris-2 (holds snapshot 17 of 19) and 5 more"
    );
    let two = desired(&found(true, 3, 1), &Value::Null, &time(1));
    assert!(
        condition(&two, "Programmed")["message"]
            .as_str()
            .unwrap()
            .ends_with("waiting for iris-0 (no snapshot yet) and iris-1 (holds snapshot 17 of 19)"),
        "{two}"
    );
}

#[test]
fn a_refused_object_says_why_in_accepted_and_ready() {
    let status = desired(&found(false, 2, 2), &Value::Null, &time(1));
    assert_eq!(
        summary(&status, "Accepted"),
        pair("False", "SecretNotFound")
    );
    assert_eq!(summary(&status, "Programmed"), pair("False", "Invalid"));
    assert_eq!(summary(&status, "Ready"), pair("False", "SecretNotFound"));
    assert_eq!(
        condition(&status, "Ready")["message"],
        "Secret `sampleapp-secret` was not found"
    );
}

#[test]
fn no_pod_to_program_is_programmed_and_says_so() {
    let mut service = found(true, 0, 0);
    service.kind = Kind::OAuthService;
    let status = desired(&service, &Value::Null, &time(1));
    assert_eq!(summary(&status, "Programmed"), pair("True", "NoPods"));
    assert_eq!(summary(&status, "Ready"), pair("True", "Ready"));
    assert_eq!(
        condition(&status, "Ready")["message"],
        "no injected pod matches its podSelector yet"
    );
    assert_eq!(status["upToDate"], "0/0");
}

#[test]
fn the_transition_time_moves_only_when_the_status_does() {
    let first = desired(&found(false, 1, 1), &Value::Null, &time(100));
    // The same finding later: nothing to write.
    let again = desired(&found(false, 1, 1), &first, &time(200));
    assert_eq!(again, first);
    assert!(up_to_date(&again, &first));
    // Another message, same status: written, same transition time.
    let mut other = found(false, 1, 1);
    other.message = "Secret `sampleapp-secret` has no key `clientSecret`".into();
    other.reason = "SecretKeyNotFound";
    let changed = desired(&other, &first, &time(300));
    assert!(!up_to_date(&changed, &first));
    assert_eq!(
        condition(&changed, "Ready")["lastTransitionTime"],
        "1970-01-01T00:01:40Z"
    );
    // Accepted, not yet held: Accepted moves, Ready and Programmed stay False.
    let pending = desired(&found(true, 1, 0), &changed, &time(400));
    assert_eq!(
        condition(&pending, "Accepted")["lastTransitionTime"],
        "1970-01-01T00:06:40Z"
    );
    assert_eq!(
        condition(&pending, "Ready")["lastTransitionTime"],
        "1970-01-01T00:01:40Z"
    );
    // Held: Ready moves.
    let ready = desired(&found(true, 1, 1), &pending, &time(500));
    assert_eq!(
        condition(&ready, "Ready")["lastTransitionTime"],
        "1970-01-01T00:08:20Z"
    );
    assert_eq!(
        condition(&ready, "Accepted")["lastTransitionTime"],
        "1970-01-01T00:06:40Z"
    );
}

#[test]
fn other_conditions_are_left_alone() {
    let ours = desired(&found(true, 1, 1), &Value::Null, &time(1));
    let mut current = ours.clone();
    current["conditions"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"type": "Other", "status": "True"}));
    assert!(up_to_date(&ours, &current));
    // One of ours missing is not up to date.
    current["conditions"].as_array_mut().unwrap().pop();
    assert!(!up_to_date(&ours, &current));
}

#[test]
fn patches_name_their_kind() {
    let status = desired(&found(true, 3, 2), &Value::Null, &time(1));
    let patch = apply_patch(Kind::OAuthService, &status);
    assert_eq!(patch["apiVersion"], "oauth.tollgate.dev/v1alpha1");
    assert_eq!(patch["kind"], "OAuthService");
    assert_eq!(patch["status"], status);
}

// --- events ---

fn kinds(notices: &[Notice]) -> Vec<(bool, &str, &str)> {
    notices
        .iter()
        .map(|n| (n.warning, n.action, n.reason.as_str()))
        .collect()
}

#[test]
fn a_steady_state_records_nothing() {
    for state in [found(true, 2, 2), found(true, 2, 1), found(false, 2, 0)] {
        let status = desired(&state, &Value::Null, &time(1));
        let later = desired(&state, &status, &time(2));
        assert_eq!(notices(&status, &later), [], "{status}");
    }
    // Pods catching up one by one change the message, not the state: no event each time.
    let one = desired(&found(true, 3, 1), &Value::Null, &time(1));
    let two = desired(&found(true, 3, 2), &one, &time(2));
    assert_ne!(one, two);
    assert_eq!(notices(&one, &two), []);
}

#[test]
fn a_refusal_is_a_warning_with_the_finding_s_reason() {
    let ready = desired(&found(true, 1, 1), &Value::Null, &time(1));
    let refused = desired(&found(false, 1, 1), &ready, &time(2));
    let events = notices(&ready, &refused);
    assert_eq!(kinds(&events), [(true, "Accepted", "SecretNotFound")]);
    assert_eq!(events[0].note, "Secret `sampleapp-secret` was not found");
    // A new object refused from the start: the same warning.
    assert_eq!(
        kinds(&notices(&Value::Null, &refused)),
        [(true, "Accepted", "SecretNotFound")]
    );
    // Refused for another reason: warned again.
    let mut other = found(false, 1, 1);
    other.reason = "SecretKeyNotFound";
    other.message = "Secret `sampleapp-secret` has no key `clientSecret`".into();
    let other = desired(&other, &refused, &time(3));
    assert_eq!(
        kinds(&notices(&refused, &other)),
        [(true, "Accepted", "SecretKeyNotFound")]
    );
}

#[test]
fn each_transition_is_recorded_once() {
    // A new object, accepted, not yet held by its pods.
    let pending = desired(&found(true, 2, 0), &Value::Null, &time(1));
    assert_eq!(
        kinds(&notices(&Value::Null, &pending)),
        [
            (false, "Accepted", "Accepted"),
            (false, "Programmed", "Pending")
        ]
    );
    // Every pod holds it.
    let ready = desired(&found(true, 2, 2), &pending, &time(2));
    let events = notices(&pending, &ready);
    assert_eq!(kinds(&events), [(false, "Ready", "Ready")]);
    assert_eq!(
        events[0].note,
        "all 2 injected pods of namespace `default` hold generation 3"
    );
    // Fixed after a refusal, with no pods: accepted and ready at once.
    let refused = desired(&found(false, 0, 0), &Value::Null, &time(3));
    let fixed = desired(&found(true, 0, 0), &refused, &time(4));
    assert_eq!(
        kinds(&notices(&refused, &fixed)),
        [(false, "Accepted", "Accepted"), (false, "Ready", "Ready")]
    );
}

// --- the log of findings ---

#[test]
fn findings_report_each_change_once() {
    let mut findings = Findings::default();
    assert_eq!(findings.update(&[found(true, 0, 0)]), []);
    let failing = findings.update(&[found(false, 0, 0)]);
    assert!(matches!(
        &failing[..],
        [Transition::Failing {
            reason: "SecretNotFound",
            ..
        }]
    ));
    assert_eq!(findings.update(&[found(false, 0, 0)]), []);
    let recovered = findings.update(&[found(true, 0, 0)]);
    assert!(matches!(&recovered[..], [Transition::Recovered { .. }]));
    // A failing object deleted is not "recovered".
    findings.update(&[found(false, 0, 0)]);
    assert_eq!(findings.update(&[]), []);
}
