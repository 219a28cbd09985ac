//! What each object's `status` should say, as pure functions of the index's findings and the
//! status the object has now; and a log of objects turning ready or not.
//!
//! The status is written with server-side apply under the field manager
//! [`FIELD_MANAGER`]. A patch is only sent when the status would change, and a `Ready`
//! condition keeps its `lastTransitionTime` while its status stays the same, so the
//! controller's own writes never make it write again.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tollgate_api::manifests::{GROUP, VERSION};

use crate::index::{Kind, ObjectRef, ObjectStatus};

/// The field manager of every status patch.
pub const FIELD_MANAGER: &str = "tollgate-controller";
/// The one condition type tollgate writes.
pub const READY: &str = "Ready";

/// The `status` an object should have, given what the index found and the object's current
/// `status` (`Value::Null` when it has none).
pub fn desired(found: &ObjectStatus, current: &Value, now: &Time) -> Value {
    let status = if found.ready { "True" } else { "False" };
    // Keep the transition time while the condition's status stays: it says since when the
    // object has been ready (or not), not when the message last changed.
    let last_transition = current_ready(current)
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let mut condition = json!({
        "type": READY,
        "status": status,
        "reason": found.reason,
        "message": found.message,
        "lastTransitionTime": last_transition,
    });
    let mut out = json!({ "conditions": [] });
    if let Some(generation) = found.generation {
        condition["observedGeneration"] = json!(generation);
        out["observedGeneration"] = json!(generation);
    }
    out["conditions"] = json!([condition]);
    if let Some(pods) = found.pods {
        out["selectedPods"] = json!(pods.selected);
        out["upToDatePods"] = json!(pods.up_to_date);
    }
    out
}

/// Whether `current` already says everything `desired` says (fields the controller does not
/// own, such as other conditions, are left alone).
pub fn up_to_date(desired: &Value, current: &Value) -> bool {
    let Some(fields) = desired.as_object() else {
        return false;
    };
    fields.iter().all(|(key, value)| match key.as_str() {
        "conditions" => {
            let wanted = value.get(0);
            wanted.is_some() && current_ready(current) == wanted
        }
        _ => current.get(key) == Some(value),
    })
}

/// The body of the server-side apply patch to the status subresource.
pub fn apply_patch(kind: Kind, status: &Value) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": kind.as_str(),
        "status": status,
    })
}

/// The `Ready` condition of a status, if any.
fn current_ready(current: &Value) -> Option<&Value> {
    current
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(READY))
}

/// Remembers which objects were not ready, to log each change once and count new problems.
#[derive(Debug, Default)]
pub struct Findings {
    /// Objects not ready, with their reason and message.
    failing: BTreeMap<(Kind, ObjectRef), (&'static str, String)>,
}

/// One object that became ready or not, or whose problem changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Failing {
        kind: Kind,
        object: ObjectRef,
        reason: &'static str,
        message: String,
    },
    Recovered {
        kind: Kind,
        object: ObjectRef,
    },
}

// === impl Findings ===

impl Findings {
    /// The changes since the last call.
    pub fn update(&mut self, statuses: &[ObjectStatus]) -> Vec<Transition> {
        let mut now = BTreeMap::new();
        for status in statuses.iter().filter(|s| !s.ready) {
            now.insert(
                (status.kind, status.object.clone()),
                (status.reason, status.message.clone()),
            );
        }
        let mut transitions = Vec::new();
        for ((kind, object), (reason, message)) in &now {
            if self.failing.get(&(*kind, object.clone())) != Some(&(reason, message.clone())) {
                transitions.push(Transition::Failing {
                    kind: *kind,
                    object: object.clone(),
                    reason,
                    message: message.clone(),
                });
            }
        }
        let still_there: std::collections::BTreeSet<_> = statuses
            .iter()
            .map(|s| (s.kind, s.object.clone()))
            .collect();
        for key in self.failing.keys() {
            if !now.contains_key(key) && still_there.contains(key) {
                transitions.push(Transition::Recovered {
                    kind: key.0,
                    object: key.1.clone(),
                });
            }
        }
        self.failing = now;
        transitions
    }
}

/// Logs transitions; counts each new problem under its reason.
pub fn report(transitions: &[Transition], metrics: &crate::metrics::Metrics) {
    for transition in transitions {
        match transition {
            Transition::Failing {
                kind,
                object,
                reason,
                message,
            } => {
                metrics.reconcile_error(reason);
                tracing::warn!(kind = kind.as_str(), %object, reason, "{message}");
            }
            Transition::Recovered { kind, object } => {
                tracing::info!(kind = kind.as_str(), %object, "ready");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::index::PodCounts;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn found(ready: bool) -> ObjectStatus {
        ObjectStatus {
            kind: Kind::OAuthApplication,
            object: ObjectRef::new("default", "sampleapp"),
            generation: Some(3),
            ready,
            reason: if ready { "Accepted" } else { "SecretNotFound" },
            message: if ready {
                "configuration accepted".into()
            } else {
                "Secret `sampleapp-secret` was not found".into()
            },
            pods: None,
        }
    }

    #[test]
    fn a_new_status_says_ready_with_the_generation() {
        let status = desired(&found(true), &Value::Null, &time(100));
        assert_eq!(
            status,
            json!({
                "observedGeneration": 3,
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "configuration accepted",
                    "lastTransitionTime": "1970-01-01T00:01:40Z",
                    "observedGeneration": 3,
                }],
            })
        );
        assert!(!up_to_date(&status, &Value::Null));
        assert!(up_to_date(&status, &status));
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_does() {
        let first = desired(&found(false), &Value::Null, &time(100));
        // The same finding later: nothing to write.
        let again = desired(&found(false), &first, &time(200));
        assert_eq!(again, first);
        assert!(up_to_date(&again, &first));
        // Another message, same status: written, same transition time.
        let mut other = found(false);
        other.message = "Secret `sampleapp-secret` has no key `clientSecret`".into();
        other.reason = "SecretKeyNotFound";
        let changed = desired(&other, &first, &time(300));
        assert!(!up_to_date(&changed, &first));
        assert_eq!(
            changed["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
        // Ready now: a new transition time.
        let ready = desired(&found(true), &changed, &time(400));
        assert_eq!(
            ready["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:06:40Z"
        );
    }

    #[test]
    fn other_conditions_are_left_alone() {
        let ours = desired(&found(true), &Value::Null, &time(1));
        let mut current = ours.clone();
        current["conditions"]
            .as_array_mut()
            .unwrap()
            .insert(0, json!({"type": "Other", "status": "True"}));
        assert!(up_to_date(&ours, &current));
    }

    #[test]
    fn services_carry_pod_counts_and_patches_name_their_kind() {
        let mut service = found(true);
        service.kind = Kind::OAuthService;
        service.pods = Some(PodCounts {
            selected: 3,
            up_to_date: 2,
        });
        let status = desired(&service, &Value::Null, &time(1));
        assert_eq!(status["selectedPods"], 3);
        assert_eq!(status["upToDatePods"], 2);
        let patch = apply_patch(Kind::OAuthService, &status);
        assert_eq!(patch["apiVersion"], "oauth.tollgate.dev/v1alpha1");
        assert_eq!(patch["kind"], "OAuthService");
        assert_eq!(patch["status"], status);
    }

    #[test]
    fn findings_report_each_change_once() {
        let mut findings = Findings::default();
        assert_eq!(findings.update(&[found(true)]), []);
        let failing = findings.update(&[found(false)]);
        assert!(matches!(
            &failing[..],
            [Transition::Failing {
                reason: "SecretNotFound",
                ..
            }]
        ));
        assert_eq!(findings.update(&[found(false)]), []);
        let recovered = findings.update(&[found(true)]);
        assert!(matches!(&recovered[..], [Transition::Recovered { .. }]));
        // A failing object deleted is not "recovered".
        findings.update(&[found(false)]);
        assert_eq!(findings.update(&[]), []);
    }
}
