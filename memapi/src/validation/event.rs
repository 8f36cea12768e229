//! Events (pkg/apis/core/validation/events.go). Both APIs store one kind, so the rules
//! and the field paths in messages are the core Event's (`involvedObject`, `message`)
//! whichever API was used. Every event passes the legacy rules; events.k8s.io/v1 creates
//! are also held to the strict ones (eventTime, type, a DNS-subdomain name, and none of the
//! deprecated core fields).

use serde_json::Value;

use super::{each, meta, names, text};
use crate::error::Cause;
use crate::kinds::ResourceKind;

const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

/// An Event's fields under their core names, read from either API's JSON.
struct View<'a> {
    obj: &'a Value,
    /// events.k8s.io/v1 names its fields differently.
    new_api: bool,
}

impl<'a> View<'a> {
    fn new(obj: &'a Value) -> Self {
        let new_api = text(obj, "/apiVersion").starts_with("events.k8s.io/");
        Self { obj, new_api }
    }

    /// A field by its core name.
    fn get(&self, core: &str) -> Option<&'a Value> {
        let field = match (self.new_api, core) {
            (false, name) => name,
            (true, "involvedObject") => "regarding",
            (true, "message") => "note",
            (true, "source") => "deprecatedSource",
            (true, "firstTimestamp") => "deprecatedFirstTimestamp",
            (true, "lastTimestamp") => "deprecatedLastTimestamp",
            (true, "count") => "deprecatedCount",
            (true, name) => name,
        };
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn text(&self, core: &str) -> &'a str {
        self.get(core).and_then(Value::as_str).unwrap_or_default()
    }

    fn reporting_controller(&self) -> &'a str {
        self.text(if self.new_api { "reportingController" } else { "reportingComponent" })
    }

    fn involved_namespace(&self) -> &'a str {
        self.get("involvedObject").map(|o| text(o, "/namespace")).unwrap_or_default()
    }

    fn is_set(&self, core: &str) -> bool {
        self.get(core).is_some_and(|v| !matches!(v, Value::String(s) if s.is_empty()))
    }
}

fn too_long(field: &str, max: usize) -> Cause {
    Cause::invalid(field, "", &format!("can have at most {max} characters"))
}

/// Rules every event meets, whichever API wrote it.
pub fn legacy(obj: &Value) -> Vec<Cause> {
    let e = View::new(obj);
    let namespace = crate::meta::namespace(obj).unwrap_or_default();
    let involved = e.involved_namespace();
    let mismatch = || Cause::invalid("involvedObject.namespace", involved, "does not match event.namespace");
    let mut causes = Vec::new();
    if !e.is_set("eventTime") {
        let allowed = if involved.is_empty() { ["", "default"].contains(&namespace) } else { namespace == involved };
        if !allowed {
            causes.push(mismatch());
        }
    } else {
        if involved.is_empty() && namespace != "default" && namespace != "kube-system" {
            causes.push(mismatch());
        }
        causes.extend(reporting(&e));
        let note = e.text("message");
        if note.len() > NOTE_MAX {
            causes.push(too_long("message", NOTE_MAX));
        }
    }
    causes.extend(each("namespace", namespace, names::dns1123_subdomain(namespace)));
    causes
}

/// Who reported a new-style event, what it did and why.
fn reporting(e: &View<'_>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let controller = e.reporting_controller();
    if controller.is_empty() {
        causes.push(Cause::required("reportingController", ""));
    }
    causes.extend(each("reportingController", controller, names::qualified_name(controller)));
    for (field, max) in [("reportingInstance", REPORTING_INSTANCE_MAX), ("action", ACTION_MAX), ("reason", REASON_MAX)]
    {
        let value = e.text(field);
        if value.is_empty() {
            causes.push(Cause::required(field, ""));
        }
        if value.len() > max {
            causes.push(too_long(field, max));
        }
    }
    causes
}

/// Core/v1 Events: the legacy rules and metadata (any path-segment name).
pub fn legacy_with_meta(obj: &Value, kind: &ResourceKind) -> Vec<Cause> {
    [legacy(obj), meta::object_meta(obj, kind)].concat()
}

/// events.k8s.io/v1 creates.
pub fn strict_create(obj: &Value, kind: &ResourceKind) -> Vec<Cause> {
    let e = View::new(obj);
    let mut causes = legacy(obj);
    causes.extend(meta::object_meta(obj, kind));
    causes.extend(series(&e));
    if !e.is_set("eventTime") {
        causes.push(Cause::required("eventTime", ""));
    }
    let type_ = e.text("type");
    if type_ != "Normal" && type_ != "Warning" {
        causes.push(Cause::invalid("type", "", &format!("has invalid value: {type_}")));
    }
    let source = e.get("source");
    let deprecated = [
        ("firstTimestamp", e.is_set("firstTimestamp")),
        ("lastTimestamp", e.is_set("lastTimestamp")),
        ("count", e.get("count").and_then(Value::as_i64).unwrap_or(0) != 0),
        ("source", source.is_some_and(|s| !text(s, "/component").is_empty() || !text(s, "/host").is_empty())),
    ];
    for (field, _) in deprecated.iter().filter(|(_, set)| *set) {
        causes.push(Cause::invalid(field, "", "needs to be unset"));
    }
    causes
}

/// events.k8s.io/v1 updates: the legacy rules, and the series when it changed.
pub fn strict_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = legacy(new);
    if old.get("series") != new.get("series") {
        causes.extend(series(&View::new(new)));
    }
    causes
}

fn series(e: &View<'_>) -> Vec<Cause> {
    let Some(series) = e.get("series") else { return Vec::new() };
    let mut causes = Vec::new();
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        causes.push(Cause::invalid("series.count", "", "should be at least 2"));
    }
    if series.get("lastObservedTime").is_none_or(Value::is_null) {
        causes.push(Cause::required("series.lastObservedTime", ""));
    }
    causes
}
