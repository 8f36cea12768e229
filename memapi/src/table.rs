//! Server-side printing: the `meta.k8s.io` Table kubectl asks for (`Accept:
//! application/json;as=Table;v=v1;g=meta.k8s.io`). Custom kinds print their CRD's
//! `additionalPrinterColumns` after the name (an Age column when they have none), as the
//! apiserver's CRD table convertor does; the built-in kinds memapi serves print the
//! apiserver's columns for them; anything else gets the default Name and Created At.
//! Rows carry the object as `includeObject` asks (PartialObjectMetadata by default).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::jsonpath;
use crate::kinds::{Origin, PrinterColumn, ResourceKind};
use crate::meta;
use crate::path::Query;

/// What a Table response carries in each row besides the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// A request for a Table, in an API version (v1 or v1beta1).
#[derive(Debug, Clone, Copy)]
pub struct TableRequest {
    pub version: &'static str,
    pub include: Include,
}

impl TableRequest {
    pub fn new(version: &'static str, q: &Query) -> Result<Self, ApiError> {
        let include = match q.get("includeObject") {
            None | Some("Metadata") => Include::Metadata,
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            Some(other) => {
                return Err(ApiError::BadRequest(format!("unrecognized includeObject value: {other:?}")));
            }
        };
        Ok(Self { version, include })
    }
}

/// How a column's cell is computed from an object.
enum Cell {
    Name,
    /// A CRD column: a JSONPath, the value shaped by the column type.
    Path(String),
    /// A string at a JSON pointer, `""` when missing.
    Pointer(&'static str),
    /// Time since `metadata.creationTimestamp`.
    Age,
    Computed(fn(&Value) -> Value),
}

struct Column {
    name: String,
    type_: String,
    format: String,
    description: String,
    priority: i64,
    cell: Cell,
}

fn column(name: &str, description: &str, cell: Cell) -> Column {
    Column {
        name: name.into(),
        type_: "string".into(),
        format: String::new(),
        description: description.into(),
        priority: 0,
        cell,
    }
}

fn wide(mut c: Column) -> Column {
    c.priority = 1;
    c
}

fn name_column() -> Column {
    Column { format: "name".into(), ..column("Name", "Name must be unique within a namespace.", Cell::Name) }
}

/// The first sentence of the API's description of `metadata.creationTimestamp`.
const CREATED: &str = "CreationTimestamp is a timestamp representing the server time when this object was created.";

fn age_column() -> Column {
    column("Age", CREATED, Cell::Age)
}

/// A response (one object, or a list) as a Table; `headers` false leaves the column
/// definitions out (watch events after the first).
pub fn convert(kind: &ResourceKind, doc: &Value, req: &TableRequest, headers: bool) -> Value {
    let columns = columns(kind);
    let (items, mut metadata) = match doc.get("items").and_then(Value::as_array) {
        Some(items) => (items.iter().collect(), doc.get("metadata").cloned().unwrap_or_else(|| json!({}))),
        None => (vec![doc], json!({"resourceVersion": meta::resource_version(doc).unwrap_or_default()})),
    };
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|k, _| matches!(k.as_str(), "resourceVersion" | "continue" | "remainingItemCount"));
    }
    let rows: Vec<Value> = items.into_iter().map(|obj| row(&columns, obj, req.include)).collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{}", req.version),
        "metadata": metadata,
        "rows": rows,
    });
    if headers {
        table["columnDefinitions"] = columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
            .collect();
    }
    table
}

fn row(columns: &[Column], obj: &Value, include: Include) -> Value {
    let cells: Vec<Value> = columns.iter().map(|c| cell(c, obj)).collect();
    let object = match include {
        Include::None => Value::Null,
        Include::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        Include::Object => obj.clone(),
    };
    json!({"cells": cells, "object": object})
}

fn cell(c: &Column, obj: &Value) -> Value {
    match &c.cell {
        Cell::Name => meta::name(obj).unwrap_or_default().into(),
        Cell::Pointer(pointer) => meta::str_at(obj, pointer).unwrap_or_default().into(),
        Cell::Age => since(meta::str_at(obj, "/metadata/creationTimestamp")).into(),
        Cell::Computed(f) => f(obj),
        Cell::Path(path) => match jsonpath::first(obj, path) {
            None | Some(Value::Null) => Value::Null,
            Some(value) => typed(&c.type_, value),
        },
    }
}

/// A CRD column's value as the apiserver shapes it for the column's type.
fn typed(type_: &str, value: Value) -> Value {
    match (type_, &value) {
        ("string", Value::String(_)) => value,
        ("string", other) => other.to_string().into(),
        ("integer", Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).into(),
        ("number", Value::Number(n)) => n.as_f64().into(),
        ("boolean", Value::Bool(_)) => value,
        ("date", Value::String(s)) => match s.parse::<Timestamp>() {
            Ok(t) => human_duration(Timestamp::now().duration_since(t).as_secs()).into(),
            Err(_) => "<invalid>".into(),
        },
        _ => Value::Null,
    }
}

fn columns(kind: &ResourceKind) -> Vec<Column> {
    if kind.origin == Origin::Custom {
        return custom_columns(&kind.columns);
    }
    let mut columns = vec![name_column()];
    columns.extend(match (kind.group.as_str(), kind.plural.as_str()) {
        ("", "namespaces") => vec![column("Status", "The status of the namespace", Cell::Pointer("/status/phase"))],
        ("", "secrets") => vec![
            column("Type", "The type of the secret", Cell::Pointer("/type")),
            column("Data", "The number of keys in data", Cell::Computed(|o| count(o, &["data"]))),
        ],
        ("", "configmaps") => {
            vec![column("Data", "The number of keys in data", Cell::Computed(|o| count(o, &["data", "binaryData"])))]
        }
        ("coordination.k8s.io", "leases") => {
            vec![column("Holder", "The holder of the lease", Cell::Pointer("/spec/holderIdentity"))]
        }
        ("networking.k8s.io", "ingresses") => ingress_columns(),
        ("apiextensions.k8s.io", "customresourcedefinitions") => return crd_columns(),
        (_, "events") => return event_columns(),
        _ => return vec![name_column(), created_at_column()],
    });
    columns.push(age_column());
    columns
}

/// The default printer's timestamp column (not an age).
fn created_at_column() -> Column {
    let created = column("Created At", CREATED, Cell::Pointer("/metadata/creationTimestamp"));
    Column { type_: "date".into(), ..created }
}

/// CustomResourceDefinitions, as the apiextensions-apiserver prints them.
fn crd_columns() -> Vec<Column> {
    let established = Column {
        type_: "boolean".into(),
        ..wide(column("Established", "Established status", Cell::Computed(crd_established)))
    };
    vec![
        name_column(),
        column("Scope", "Cluster/Namespaced", Cell::Pointer("/spec/scope")),
        column("Versions", "Served versions", Cell::Computed(crd_versions)),
        created_at_column(),
        wide(column("Group", "API group", Cell::Pointer("/spec/group"))),
        wide(column("Kind", "CustomResource kind", Cell::Pointer("/spec/names/kind"))),
        wide(column("ShortNames", "Short names", Cell::Computed(crd_short_names))),
        established,
    ]
}

/// The served versions, sorted as strings, the storage one marked: `v1(storage),v1alpha1`.
fn crd_versions(crd: &Value) -> Value {
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).into_iter().flatten();
    let mut served: Vec<String> = versions
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .map(|v| {
            let name = meta::str_at(v, "/name").unwrap_or_default();
            let storage = v.get("storage").and_then(Value::as_bool) == Some(true);
            if storage { format!("{name}(storage)") } else { name.to_string() }
        })
        .collect();
    served.sort();
    served.join(",").into()
}

fn crd_short_names(crd: &Value) -> Value {
    let names = crd.pointer("/spec/names/shortNames").and_then(Value::as_array).into_iter().flatten();
    names.filter_map(Value::as_str).collect::<Vec<_>>().join(",").into()
}

fn crd_established(crd: &Value) -> Value {
    let mut conditions = crd.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten();
    conditions.any(|c| c["type"] == "Established" && c["status"] == "True").into()
}

/// Name, then the CRD's columns; without any, the Age column a CRD is given by default.
fn custom_columns(defined: &[PrinterColumn]) -> Vec<Column> {
    let default_age = [PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        format: String::new(),
        description: CREATED.into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }];
    let defined = if defined.is_empty() { &default_age[..] } else { defined };
    let mut columns = vec![name_column()];
    for c in defined {
        let description = if c.description.is_empty() {
            format!("Custom resource definition column (in JSONPath format): {}", c.json_path)
        } else {
            c.description.clone()
        };
        columns.push(Column {
            name: c.name.clone(),
            type_: c.type_.clone(),
            format: c.format.clone(),
            description,
            priority: c.priority,
            cell: Cell::Path(c.json_path.clone()),
        });
    }
    columns
}

fn count(obj: &Value, maps: &[&str]) -> Value {
    maps.iter().map(|m| obj.get(m).and_then(Value::as_object).map_or(0, |o| o.len())).sum::<usize>().into()
}

fn ingress_columns() -> Vec<Column> {
    vec![
        column(
            "Class",
            "The IngressClass of the ingress",
            Cell::Computed(|o| meta::str_at(o, "/spec/ingressClassName").unwrap_or("<none>").into()),
        ),
        column(
            "Hosts",
            "Hosts that requests are matched against",
            Cell::Computed(|o| {
                let hosts = strings(o, "/spec/rules", "/host");
                if hosts.is_empty() { "*".into() } else { hosts.join(",").into() }
            }),
        ),
        column(
            "Address",
            "Addresses of the load balancer",
            Cell::Computed(|o| {
                let ips = strings(o, "/status/loadBalancer/ingress", "/ip");
                let names = strings(o, "/status/loadBalancer/ingress", "/hostname");
                [ips, names].concat().join(",").into()
            }),
        ),
        column(
            "Ports",
            "Ports the ingress serves",
            Cell::Computed(|o| {
                let tls = o.pointer("/spec/tls").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
                if tls { "80, 443".into() } else { "80".into() }
            }),
        ),
    ]
}

fn strings(obj: &Value, list: &str, field: &str) -> Vec<String> {
    let items = obj.pointer(list).and_then(Value::as_array).into_iter().flatten();
    items.filter_map(|i| meta::str_at(i, field)).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// The events printer, the same for both Event APIs (one kind to the apiserver).
fn event_columns() -> Vec<Column> {
    vec![
        column("Last Seen", "When the event was last seen", Cell::Computed(|o| event_times(o).1.into())),
        column("Type", "Normal or Warning", Cell::Computed(|o| event_field(o, "type", "type").into())),
        column("Reason", "Why the event happened", Cell::Computed(|o| event_field(o, "reason", "reason").into())),
        column("Object", "The object the event is about", Cell::Computed(event_object)),
        wide(column(
            "Subobject",
            "The part of the object",
            Cell::Computed(|o| {
                let regarding = o.get("regarding").or_else(|| o.get("involvedObject")).cloned().unwrap_or_default();
                meta::str_at(&regarding, "/fieldPath").unwrap_or_default().into()
            }),
        )),
        wide(column("Source", "Who reported the event", Cell::Computed(event_source))),
        column("Message", "What happened", Cell::Computed(|o| event_field(o, "note", "message").trim().into())),
        wide(column("First Seen", "When the event was first seen", Cell::Computed(|o| event_times(o).0.into()))),
        wide(column("Count", "How often the event happened", Cell::Computed(event_count))),
        wide(name_column()),
    ]
}

fn is_new_event(obj: &Value) -> bool {
    meta::str_at(obj, "/apiVersion").is_some_and(|v| v.starts_with("events.k8s.io/"))
}

/// A field under its events.k8s.io name or its core one.
fn event_field<'a>(obj: &'a Value, new: &str, core: &str) -> &'a str {
    let field = if is_new_event(obj) { new } else { core };
    obj.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// (first seen, last seen)
fn event_times(obj: &Value) -> (String, String) {
    let first_at = event_field(obj, "deprecatedFirstTimestamp", "firstTimestamp");
    let first_at = if first_at.is_empty() { meta::str_at(obj, "/eventTime") } else { Some(first_at) };
    let first = since(first_at);
    let last_at = event_field(obj, "deprecatedLastTimestamp", "lastTimestamp");
    let last = match meta::str_at(obj, "/series/lastObservedTime") {
        Some(observed) => since(Some(observed)),
        None if last_at.is_empty() => first.clone(),
        None => since(Some(last_at)),
    };
    (first, last)
}

fn event_object(obj: &Value) -> Value {
    let regarding =
        obj.get(if is_new_event(obj) { "regarding" } else { "involvedObject" }).cloned().unwrap_or_default();
    let kind = meta::str_at(&regarding, "/kind").unwrap_or_default().to_lowercase();
    match meta::str_at(&regarding, "/name").filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind}/{name}").into(),
        None => kind.into(),
    }
}

fn event_source(obj: &Value) -> Value {
    let source = obj.get(if is_new_event(obj) { "deprecatedSource" } else { "source" }).cloned().unwrap_or_default();
    let (component, host) = (meta::str_at(&source, "/component"), meta::str_at(&source, "/host"));
    let controller = event_field(obj, "reportingController", "reportingComponent");
    let instance = meta::str_at(obj, "/reportingInstance").unwrap_or_default();
    match (component.filter(|c| !c.is_empty()), host.filter(|h| !h.is_empty())) {
        (Some(c), Some(h)) => format!("{c}, {h}").into(),
        (Some(c), None) => c.into(),
        _ if controller.is_empty() => "".into(),
        _ => format!("{controller}, {instance}").into(),
    }
}

fn event_count(obj: &Value) -> Value {
    let series = obj.pointer("/series/count").and_then(Value::as_i64);
    let count = obj.get(if is_new_event(obj) { "deprecatedCount" } else { "count" }).and_then(Value::as_i64);
    series.or(count.filter(|c| *c != 0)).unwrap_or(1).into()
}

/// Time since an RFC 3339 timestamp, `<unknown>` without one.
fn since(at: Option<&str>) -> String {
    match at.filter(|s| !s.is_empty()).map(str::parse::<Timestamp>) {
        Some(Ok(t)) => human_duration(Timestamp::now().duration_since(t).as_secs()),
        Some(Err(_)) => "<invalid>".into(),
        None => "<unknown>".into(),
    }
}

/// A duration as kubectl shows ages: `45s`, `3m20s`, `12m`, `5h30m`, `3d4h`, `40d`, `2y10d`.
pub fn human_duration(seconds: i64) -> String {
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const YEAR: i64 = 365 * DAY;
    let with = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 { format!("{big}{big_unit}") } else { format!("{big}{big_unit}{small}{small_unit}") }
    };
    match seconds {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 2 * MINUTE => format!("{s}s"),
        s if s < 10 * MINUTE => with(s / MINUTE, "m", s % MINUTE, "s"),
        s if s < 3 * HOUR => format!("{}m", s / MINUTE),
        s if s < 8 * HOUR => with(s / HOUR, "h", (s % HOUR) / MINUTE, "m"),
        s if s < 48 * HOUR => format!("{}h", s / HOUR),
        s if s < 8 * DAY => with(s / DAY, "d", (s % DAY) / HOUR, "h"),
        s if s < 2 * YEAR => format!("{}d", s / DAY),
        s if s < 8 * YEAR => with(s / YEAR, "y", (s % YEAR) / DAY, "d"),
        s => format!("{}y", s / YEAR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (200, "3m20s"),
            (240, "4m"),
            (1800, "30m"),
            (5 * 3600 + 1800, "5h30m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (40 * 86400, "40d"),
            (2 * 365 * 86400 + 10 * 86400, "2y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(human_duration(seconds), shown, "{seconds}s");
        }
    }

    #[test]
    fn crd_columns_are_typed_and_missing_values_are_null() {
        let mut kind = ResourceKind::cluster("cellplane.io", "v1alpha1", "cells", "Cell");
        let col = |name: &str, type_: &str, path: &str, priority: i64| PrinterColumn {
            name: name.into(),
            type_: type_.into(),
            format: String::new(),
            description: String::new(),
            priority,
            json_path: path.into(),
        };
        kind.columns = vec![
            col("Region", "string", ".spec.region", 0),
            col("Namespaces", "integer", ".status.capacityUsed.namespaces", 0),
            col("Cordoned", "boolean", ".spec.cordoned", 1),
            col("Ready", "string", r#".status.conditions[?(@.type=="Ready")].status"#, 0),
            col("Size", "string", ".spec.size", 0),
        ];
        let obj = json!({"metadata": {"name": "c1", "resourceVersion": "7"}, "spec": {"region": "eu", "cordoned": false, "size": 3},
                         "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let req = TableRequest { version: "v1", include: Include::None };
        let table = convert(&kind, &obj, &req, true);
        assert_eq!(table["rows"][0]["cells"], json!(["c1", "eu", null, false, "True", "3"]));
        assert_eq!(table["rows"][0]["object"], Value::Null);
        assert_eq!(table["metadata"], json!({"resourceVersion": "7"}));
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Region", "Namespaces", "Cordoned", "Ready", "Size"]);
        assert_eq!(table["columnDefinitions"][3]["priority"], 1);
        assert!(convert(&kind, &obj, &req, false).get("columnDefinitions").is_none());
    }
}
