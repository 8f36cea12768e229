//! `metadata.managedFields` bookkeeping and server-side apply.
//!
//! Field sets are sets of leaf paths. Objects are granular (each key is its own
//! field); lists are atomic (a list is one leaf, as for CRD lists without
//! `x-kubernetes-list-type`); an empty object is a leaf. Applied `null` values are
//! ignored (neither written nor owned).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::meta;

type Path = Vec<String>;

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything, or everything but `.status` when the kind has
    /// a status subresource.
    Main { status_subresource: bool },
    /// The `/status` subresource: only `.status`.
    Status,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Self::Main { .. } => "",
            Self::Status => "status",
        }
    }

    /// Whether a path is tracked for this scope (system metadata never is).
    fn tracks(self, path: &[String]) -> bool {
        let Some(first) = path.first() else {
            return false;
        };
        match first.as_str() {
            "apiVersion" | "kind" => false,
            "metadata" => {
                matches!(self, Self::Main { .. })
                    && path.get(1).is_none_or(|f| {
                        matches!(f.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
                    })
            }
            "status" => match self {
                Self::Main { status_subresource } => !status_subresource,
                Self::Status => true,
            },
            _ => matches!(self, Self::Main { .. }),
        }
    }
}

fn leaves(value: &Value, scope: Scope) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, scope: Scope, out: &mut BTreeSet<Path>) {
        match v {
            Value::Null => {}
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    path.push(k.clone());
                    if scope.tracks(path) {
                        walk(child, path, scope, out);
                    }
                    path.pop();
                }
            }
            _ => {
                if scope.tracks(path) {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), scope, &mut out);
    out
}

fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key.as_str())).filter(|v| !v.is_null())
}

/// Whether one path is a prefix of the other (they name overlapping fields).
fn overlaps(a: &[String], b: &[String]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn dotted(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Value,
    subresource: String,
    fields: BTreeSet<Path>,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(&self.fields),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = self.subresource.clone().into();
        }
        v
    }
}

fn fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for key in path {
            let next = cur.entry(format!("f:{key}")).or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            cur = next.as_object_mut().expect("made an object above");
        }
    }
    Value::Object(root)
}

fn parse_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(map) = v.as_object() else { return };
        if map.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, child) in map {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            path.push(k.strip_prefix("f:").unwrap_or(k).to_string());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: s(e, "manager"),
            operation: s(e, "operation"),
            api_version: s(e, "apiVersion"),
            time: e.get("time").cloned().unwrap_or(Value::Null),
            subresource: s(e, "subresource"),
            fields: e.get("fieldsV1").map(parse_fields_v1).unwrap_or_default(),
        })
        .collect()
}

/// Writes the entries in the apiserver's order: Apply before Update, then oldest first, then
/// by manager, API version and subresource.
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    // Times are RFC 3339 in UTC to the second, so they sort as text.
    let time = |e: &Entry| e.time.as_str().unwrap_or_default().to_string();
    entries.sort_by_cached_key(|e| {
        (e.operation.clone(), time(e), e.manager.clone(), e.api_version.clone(), e.subresource.clone())
    });
    let list: Vec<Value> = entries.iter().filter(|e| !e.fields.is_empty()).map(Entry::to_json).collect();
    let m = meta::meta_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

/// Records a non-apply write (create, update, merge or JSON patch) by `manager`:
/// it takes ownership of every field it changed, without conflicts, and fields it
/// removed are no longer owned by anyone.
pub fn track_update(old: Option<&Value>, new: &mut Value, manager: &str, api_version: &str, scope: Scope) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_leaves = leaves(new, scope);
    let old_leaves = old.map(|o| leaves(o, scope)).unwrap_or_default();
    let changed: BTreeSet<Path> =
        new_leaves.iter().filter(|p| old.and_then(|o| get(o, p)) != get(new, p)).cloned().collect();
    let removed: BTreeSet<&Path> = old_leaves.difference(&new_leaves).collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, entries);
        return;
    }
    let sub = scope.subresource();
    for e in entries.iter_mut().filter(|e| e.subresource == sub) {
        e.fields.retain(|q| !removed.contains(q) && !changed.iter().any(|p| overlaps(p, q) && p.len() <= q.len()));
    }
    let idx = match entries.iter().position(|e| e.is(manager, "Update", sub)) {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                time: Value::Null,
                subresource: sub.into(),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    let own = &mut entries[idx];
    own.fields.retain(|q| !changed.iter().any(|p| overlaps(p, q)));
    own.fields.extend(changed);
    own.time = meta::now();
    own.api_version = api_version.into();
    write_entries(new, entries);
}

/// Errors are described in terms of this object.
pub struct ApplyTarget<'a> {
    pub resource: &'a str,
    pub group: &'a str,
    pub name: &'a str,
    pub api_version: &'a str,
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object does
/// not exist yet). Returns the merged object with updated managedFields; the
/// caller then enforces subresource and metadata rules as for any update.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    target: &ApplyTarget<'_>,
) -> Result<Value, ApiError> {
    let sub = scope.subresource();
    let mut entries = live.map(read_entries).unwrap_or_default();
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let new_set = leaves(applied, scope);

    let mut conflicts = Vec::new();
    for e in entries.iter_mut() {
        if e.subresource != sub || e.is(manager, "Apply", sub) {
            continue;
        }
        let mut lost = BTreeSet::new();
        for q in &e.fields {
            for p in new_set.iter().filter(|p| overlaps(p, q)) {
                let at = if p.len() >= q.len() { p } else { q };
                if get(&base, at) != get(applied, at) {
                    conflicts.push((e.manager.clone(), e.api_version.clone(), q.clone()));
                    lost.insert(q.clone());
                }
            }
        }
        if force {
            e.fields.retain(|q| !lost.contains(q));
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.dedup();
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(m, v, p)| Cause::new("FieldManagerConflict", &dotted(p), format!("conflict with \"{m}\" using {v}")))
            .collect();
        let list: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.message, c.field)).collect();
        let noun = if causes.len() == 1 { "conflict" } else { "conflicts" };
        return Err(ApiError::Conflict {
            message: format!("Apply failed with {} {noun}: {}", causes.len(), list.join("\n")),
            kind: target.resource.into(),
            group: target.group.into(),
            name: target.name.into(),
            causes,
        });
    }

    let mut result = base;
    let previous = entries.iter().find(|e| e.is(manager, "Apply", sub)).map(|e| e.fields.clone()).unwrap_or_default();
    for p in previous.difference(&new_set) {
        let owned_elsewhere = entries
            .iter()
            .filter(|e| e.subresource == sub && !e.is(manager, "Apply", sub))
            .any(|e| e.fields.iter().any(|q| overlaps(p, q)));
        if !owned_elsewhere {
            remove_path(&mut result, p);
        }
    }
    merge_applied(&mut result, applied);

    match entries.iter_mut().find(|e| e.is(manager, "Apply", sub)) {
        Some(e) => {
            if e.fields != new_set {
                e.time = meta::now();
            }
            e.fields = new_set;
            e.api_version = target.api_version.into();
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version: target.api_version.into(),
            time: meta::now(),
            subresource: sub.into(),
            fields: new_set,
        }),
    }
    write_entries(&mut result, entries);
    Ok(result)
}

/// Removes a field and any parent objects left empty by that.
fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *obj;
    for key in parents {
        match cur.get_mut(key.as_str()) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
        if map.is_empty() && !parents.is_empty() {
            remove_path(obj, parents);
        }
    }
}

fn merge_applied(dst: &mut Value, src: &Value) {
    let (Some(d), Some(s)) = (dst.as_object_mut(), src.as_object()) else {
        if !src.is_null() {
            *dst = src.clone();
        }
        return;
    };
    for (k, v) in s {
        if v.is_null() {
            continue;
        }
        match d.get_mut(k) {
            Some(existing) if existing.is_object() && v.is_object() => merge_applied(existing, v),
            _ => {
                d.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: Scope = Scope::Main { status_subresource: true };

    fn target() -> ApplyTarget<'static> {
        ApplyTarget { resource: "things", group: "example.com", name: "a", api_version: "example.com/v1" }
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"apiVersion": "v1", "metadata": {"name": "a", "labels": {"x": "1"}},
                         "spec": {"a": 1, "b": {"c": [1]}, "e": {}}, "status": {"s": 1}});
        let set = leaves(&obj, MAIN);
        let expected: BTreeSet<Path> =
            [vec!["metadata", "labels", "x"], vec!["spec", "a"], vec!["spec", "b", "c"], vec!["spec", "e"]]
                .into_iter()
                .map(|p| p.into_iter().map(String::from).collect())
                .collect();
        assert_eq!(set, expected);
        assert_eq!(parse_fields_v1(&fields_v1(&set)), set);
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_applying() {
        let first = json!({"spec": {"a": 1, "b": 2}});
        let live = apply(None, &first, "m", false, MAIN, &target()).unwrap();
        let second = json!({"spec": {"a": 1}});
        let out = apply(Some(&live), &second, "m", false, MAIN, &target()).unwrap();
        assert_eq!(out["spec"], json!({"a": 1}));
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let live = apply(None, &json!({"spec": {"a": 1}}), "one", false, MAIN, &target()).unwrap();
        let same = apply(Some(&live), &json!({"spec": {"a": 1}}), "two", false, MAIN, &target());
        assert!(same.is_ok(), "same value is shared ownership");
        let err = apply(Some(&live), &json!({"spec": {"a": 2}}), "two", false, MAIN, &target()).unwrap_err();
        assert_eq!(err.code(), http::StatusCode::CONFLICT);
        assert!(err.to_string().contains("conflict with \"one\""), "{err}");
        let forced = apply(Some(&live), &json!({"spec": {"a": 2}}), "two", true, MAIN, &target()).unwrap();
        assert_eq!(forced["spec"]["a"], 2);
        let owners = read_entries(&forced);
        assert!(owners.iter().all(|e| e.manager != "one"), "ownership moved");
    }
}
