//! Events about tollgate's objects, recorded with kube's [`Recorder`] by the Lease holder:
//! which ones is [`crate::status::notices`]' decision; this only sends them. kube's Recorder
//! turns a repeat of the same event into a count on the first one.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tollgate_api::manifests::{GROUP, VERSION};

use crate::index::{Kind, ObjectRef};
use crate::metrics::Metrics;
use crate::status::{FIELD_MANAGER, Notice};

/// The Event recorder of this replica: reporting controller [`FIELD_MANAGER`], instance
/// `identity` (its pod's name).
pub fn recorder(client: Client, identity: &str) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity.to_owned()),
        },
    )
}

/// What an Event about `object` refers to.
pub fn reference(kind: Kind, object: &ObjectRef, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{GROUP}/{VERSION}")),
        kind: Some(kind.as_str().to_owned()),
        namespace: Some(object.namespace.clone()),
        name: Some(object.name.clone()),
        uid,
        ..ObjectReference::default()
    }
}

/// The Event recording `notice`.
pub fn event(notice: &Notice) -> Event {
    Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.clone(),
        // The API server refuses a note over 1 kB; messages name at most a few pods.
        note: Some(truncate(&notice.note, 1024)),
        action: notice.action.to_owned(),
        secondary: None,
    }
}

/// Records `notices` about one object. A failure is logged and counted, never retried: the
/// status holds the same news.
pub async fn record(
    recorder: &Recorder,
    reference: &ObjectReference,
    notices: &[Notice],
    metrics: &Metrics,
) {
    for notice in notices {
        if let Err(error) = recorder.publish(&event(notice), reference).await {
            metrics.reconcile_error("Event");
            tracing::warn!(
                kind = reference.kind.as_deref(),
                namespace = reference.namespace.as_deref(),
                name = reference.name.as_deref(),
                reason = notice.reason,
                %error,
                "cannot record an event"
            );
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_takes() {
        let notice = Notice {
            warning: false,
            action: "Programmed",
            reason: "Pending".into(),
            note: "é".repeat(1000),
        };
        let event = event(&notice);
        let note = event.note.unwrap();
        assert!(note.len() <= 1024);
        assert_eq!(note, "é".repeat(512));
        assert_eq!(event.type_, EventType::Normal);
    }
}
