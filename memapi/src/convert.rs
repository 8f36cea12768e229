//! Kinds of two APIs that share one storage: events.k8s.io/v1 Events are stored as
//! core/v1 Events (the apiserver's storage version), so each API sees the other's events
//! under its own field names.

use serde_json::Value;

use crate::kinds::ResourceKind;

/// events.k8s.io/v1 field → core/v1 field.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_new_event(kind: &ResourceKind) -> bool {
    kind.group == "events.k8s.io" && kind.plural == "events"
}

fn rename(obj: &mut Value, pairs: impl Iterator<Item = (&'static str, &'static str)>) {
    let Some(map) = obj.as_object_mut() else { return };
    for (from, to) in pairs {
        if let Some(v) = map.remove(from) {
            map.insert(to.into(), v);
        }
    }
}

/// A written object as stored.
pub fn to_storage(kind: &ResourceKind, obj: &mut Value) {
    if is_new_event(kind) {
        rename(obj, EVENT_FIELDS.into_iter());
        obj["apiVersion"] = "v1".into();
    }
}

/// A stored object as this kind's API shows it (apiVersion and kind are set by the caller).
pub fn from_storage(kind: &ResourceKind, obj: &mut Value) {
    if is_new_event(kind) {
        rename(obj, EVENT_FIELDS.into_iter().map(|(new, core)| (core, new)));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_events_are_stored_under_core_names_and_shown_under_their_own() {
        let kind = ResourceKind::builtins().into_iter().find(|k| k.group == "events.k8s.io").unwrap();
        let written =
            json!({"apiVersion": "events.k8s.io/v1", "regarding": {"name": "w"}, "note": "hi", "reason": "R"});
        let mut stored = written.clone();
        to_storage(&kind, &mut stored);
        assert_eq!(
            stored,
            json!({"apiVersion": "v1", "involvedObject": {"name": "w"}, "message": "hi", "reason": "R"})
        );
        from_storage(&kind, &mut stored);
        stored["apiVersion"] = written["apiVersion"].clone();
        assert_eq!(stored, written);
    }
}
