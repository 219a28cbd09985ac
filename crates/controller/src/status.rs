//! What each object's `status` should say, as pure functions of the index's findings and the
//! status the object has now; which Events a change of status is worth; and a log of objects
//! turning accepted or not.
//!
//! Three conditions, as Gateway API and cert-manager write them: `Accepted` (valid and
//! compiled), `Programmed` (every pod that should serve it holds its current form) and `Ready`
//! (both). The status is written with server-side apply under the field manager
//! [`FIELD_MANAGER`]. A patch is only sent when the status would change, and a condition
//! keeps its `lastTransitionTime` while its status stays the same, so the controller's own
//! writes never make it write again.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tollgate_api::manifests::{GROUP, VERSION};

use crate::index::{Kind, ObjectRef, ObjectStatus};

/// The field manager of every status patch.
pub const FIELD_MANAGER: &str = "tollgate-controller";
/// Valid and compiled into the namespace's snapshots.
pub const ACCEPTED: &str = "Accepted";
/// Every pod that should serve the object holds its current form.
pub const PROGRAMMED: &str = "Programmed";
/// Accepted and programmed.
pub const READY: &str = "Ready";
/// `Programmed`/`Ready` False: some pods do not hold the object's current form yet.
pub const PENDING: &str = "Pending";
/// `Programmed` False: the object was not accepted, so no pod serves it.
pub const INVALID: &str = "Invalid";
/// `Programmed` True with no pod to program.
pub const NO_PODS: &str = "NoPods";

/// One condition, before it gets its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

/// An Event worth recording about an object: a refusal (a warning) or a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    /// The condition it is about, as the Event's action.
    pub action: &'static str,
    pub reason: String,
    pub note: String,
}

/// The three conditions the findings make, in the order they are written.
pub fn conditions(found: &ObjectStatus) -> [Condition; 3] {
    let accepted = Condition {
        type_: ACCEPTED,
        status: found.accepted,
        reason: found.reason,
        message: found.message.clone(),
    };
    let programmed = if found.accepted {
        programmed(found)
    } else {
        Condition {
            type_: PROGRAMMED,
            status: false,
            reason: INVALID,
            message: format!("not accepted ({}): no pod serves it", found.reason),
        }
    };
    let ready = if !found.accepted {
        Condition {
            type_: READY,
            ..accepted.clone()
        }
    } else {
        Condition {
            type_: READY,
            reason: if programmed.status { READY } else { PENDING },
            ..programmed.clone()
        }
    };
    [accepted, programmed, ready]
}

/// `Programmed` of an accepted object: which pods hold it, naming a few that do not.
fn programmed(found: &ObjectStatus) -> Condition {
    let pods = found.pods;
    let form = match found.generation {
        Some(generation) => format!("generation {generation}"),
        None => "its current form".to_owned(),
    };
    let which = if found.kind == Kind::OAuthService {
        "selected"
    } else {
        "injected"
    };
    let of_namespace = if found.kind == Kind::OAuthService {
        String::new()
    } else {
        format!(" of namespace `{}`", found.object.namespace)
    };
    let plural = |n: i32| if n == 1 { "" } else { "s" };
    if pods.selected == 0 {
        let message = if found.kind == Kind::OAuthService {
            "no injected pod matches its podSelector yet".to_owned()
        } else {
            format!(
                "no injected pod runs in namespace `{}` yet",
                found.object.namespace
            )
        };
        return Condition {
            type_: PROGRAMMED,
            status: true,
            reason: NO_PODS,
            message,
        };
    }
    if pods.up_to_date >= pods.selected {
        let (all, verb) = if pods.selected == 1 {
            ("the", "holds")
        } else {
            ("all", "hold")
        };
        return Condition {
            type_: PROGRAMMED,
            status: true,
            reason: PROGRAMMED,
            message: format!(
                "{all} {} {which} pod{}{of_namespace} {verb} {form}",
                pods.selected,
                plural(pods.selected)
            ),
        };
    }
    let named: Vec<String> = found
        .stale
        .iter()
        .map(|pod| match pod.holds {
            Some(holds) => format!("{} (holds snapshot {holds} of {})", pod.name, pod.latest),
            None => format!("{} (no snapshot yet)", pod.name),
        })
        .collect();
    let behind = usize::try_from(pods.selected - pods.up_to_date).unwrap_or(0);
    let unnamed = behind.saturating_sub(named.len());
    let list = match named.split_last() {
        _ if unnamed > 0 => format!("{} and {unnamed} more", named.join(", ")),
        Some((last, [])) => last.clone(),
        Some((last, first)) => format!("{} and {last}", first.join(", ")),
        None => String::new(),
    };
    Condition {
        type_: PROGRAMMED,
        status: false,
        reason: PENDING,
        message: format!(
            "{} of {} {which} pods{of_namespace} hold {form}; waiting for {list}",
            pods.up_to_date, pods.selected
        ),
    }
}

/// The `status` an object should have, given what the index found and the object's current
/// `status` (`Value::Null` when it has none).
pub fn desired(found: &ObjectStatus, current: &Value, now: &Time) -> Value {
    let conditions: Vec<Value> = conditions(found)
        .into_iter()
        .map(|condition| {
            let status = if condition.status { "True" } else { "False" };
            // Keep the transition time while the condition's status stays: it says since when
            // the object has been ready (or not), not when the message last changed.
            let last_transition = current_condition(current, condition.type_)
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            let mut out = json!({
                "type": condition.type_,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": last_transition,
            });
            if let Some(generation) = found.generation {
                out["observedGeneration"] = json!(generation);
            }
            out
        })
        .collect();
    let mut out = json!({ "conditions": conditions });
    if let Some(generation) = found.generation {
        out["observedGeneration"] = json!(generation);
    }
    out["selectedPods"] = json!(found.pods.selected);
    out["upToDatePods"] = json!(found.pods.up_to_date);
    out["upToDate"] = json!(format!("{}/{}", found.pods.up_to_date, found.pods.selected));
    out
}

/// Whether `current` already says everything `desired` says (fields the controller does not
/// own, such as other conditions, are left alone).
pub fn up_to_date(desired: &Value, current: &Value) -> bool {
    let Some(fields) = desired.as_object() else {
        return false;
    };
    fields.iter().all(|(key, value)| match key.as_str() {
        "conditions" => value.as_array().is_some_and(|wanted| {
            wanted.iter().all(|condition| {
                let type_ = condition.get("type").and_then(Value::as_str).unwrap_or("");
                current_condition(current, type_) == Some(condition)
            })
        }),
        _ => current.get(key) == Some(value),
    })
}

/// The Events a change of status from `old` to `new` is worth (both as [`desired`] writes
/// them; `old` is `Value::Null` for a new object). Equal statuses are worth none, so a
/// steady state records nothing. A refusal is a warning each time its reason or message
/// changes; `Accepted` and `Ready` turning True, and `Programmed` turning `Pending`, are
/// normal events. `Ready` turning False and `Programmed` turning `Invalid` are not recorded
/// on their own: the refusal or the `Pending` beside them says why.
pub fn notices(old: &Value, new: &Value) -> Vec<Notice> {
    let field = |condition: Option<&Value>, name: &str| -> Option<String> {
        condition?.get(name)?.as_str().map(str::to_owned)
    };
    let mut out = Vec::new();
    for type_ in [ACCEPTED, PROGRAMMED, READY] {
        let (before, after) = (current_condition(old, type_), current_condition(new, type_));
        let Some(after_status) = field(after, "status") else {
            continue;
        };
        let reason = field(after, "reason").unwrap_or_default();
        let note = field(after, "message").unwrap_or_default();
        let turned = field(before, "status").as_deref() != Some(after_status.as_str());
        let is_true = after_status == "True";
        let notice = match type_ {
            ACCEPTED if !is_true => {
                let same = !turned
                    && field(before, "reason").as_deref() == Some(reason.as_str())
                    && field(before, "message").as_deref() == Some(note.as_str());
                (!same).then_some(true)
            }
            ACCEPTED | READY if is_true && turned => Some(false),
            PROGRAMMED if !is_true && reason == PENDING => {
                let was_pending = field(before, "status").as_deref() == Some("False")
                    && field(before, "reason").as_deref() == Some(PENDING);
                (!was_pending).then_some(false)
            }
            _ => None,
        };
        if let Some(warning) = notice {
            out.push(Notice {
                warning,
                action: type_,
                reason,
                note,
            });
        }
    }
    out
}

/// The body of the server-side apply patch to the status subresource.
pub fn apply_patch(kind: Kind, status: &Value) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": kind.as_str(),
        "status": status,
    })
}

/// The condition of `type_` in a status, if any.
fn current_condition<'a>(current: &'a Value, type_: &str) -> Option<&'a Value> {
    current
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// Remembers which objects were not accepted, to log each change once and count new problems.
#[derive(Debug, Default)]
pub struct Findings {
    /// Objects not accepted, with their reason and message.
    failing: BTreeMap<(Kind, ObjectRef), (&'static str, String)>,
}

/// One object that became accepted or not, or whose problem changed.
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
        for status in statuses.iter().filter(|s| !s.accepted) {
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
                tracing::info!(kind = kind.as_str(), %object, "accepted");
            }
        }
    }
}

#[cfg(test)]
mod tests;
