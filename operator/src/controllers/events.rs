//! Kubernetes Events (events.k8s.io/v1) for milestones and failures: what a kind announces is a
//! [`Note`], published by the driver once the status it follows is written.

use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Resource};

use super::context::Context;
use crate::api::MANAGER;

/// An Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// A Warning (a failure or a stall), else Normal.
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Note {
    pub fn normal(reason: impl Into<String>, message: impl Into<String>) -> Note {
        Note { warning: false, reason: reason.into(), message: message.into() }
    }

    pub fn warning(reason: impl Into<String>, message: impl Into<String>) -> Note {
        Note { warning: true, reason: reason.into(), message: message.into() }
    }
}

/// The longest Event note an API server accepts, in bytes.
const EVENT_NOTE_LIMIT: usize = 1024;

impl Context {
    /// Publishes an Event about `obj`; failing to record one never fails a reconcile. Written
    /// directly rather than through kube's `Recorder`, which keeps every event for six minutes
    /// and scans them all on each publish: at fleet scale that was tens of MiB and quadratic
    /// time, for series counting that milestone events do not need.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, note: &Note) {
        let regarding = obj.object_ref(&());
        let now = Timestamp::now();
        let event = K8sEvent {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{}.{:x}", regarding.name.as_deref().unwrap_or(MANAGER), now.as_nanosecond())),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(note.reason.clone()),
            note: Some(truncate_bytes(note.message.clone(), EVENT_NOTE_LIMIT)),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(MANAGER.into()),
            reporting_instance: Some(self.engine.owner().to_string()),
            regarding: Some(regarding.clone()),
            ..Default::default()
        };
        // Events of cluster-scoped objects go to kube-system: every API server accepts them
        // there (1.20 refuses `default`), and kubectl describe finds them in any namespace.
        let namespace = regarding.namespace.as_deref().unwrap_or("kube-system");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %crate::kube_error::describe(&e), reason = %note.reason, "could not publish an event");
        }
    }
}

/// `text` cut to at most `limit` bytes (not characters, as for conditions) at a character
/// boundary, marked with an ellipsis.
fn truncate_bytes(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
