//! Drift: where live objects differ from the release. Each object is server-side applied as a
//! dry run (forced, as cellplane, so fields a hand edit took over count) and the result compared
//! with the live object: the server defaults and normalises both alike, so only real changes
//! differ. Server-set fields (status, managedFields, resourceVersion, generation, ...) are not
//! compared.

use std::fmt;

use kube::api::Patch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cluster::{apply_error, apply_params, scoped, to_value};
use super::{CellCluster, ObjectRef, ReleaseError};

/// Fields the server sets, never drift.
const SERVER_SET: &[&str] = &[
    "/status",
    "/metadata/managedFields",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/creationTimestamp",
    "/metadata/uid",
    "/metadata/selfLink",
];

/// How many differences one object's report names.
const SHOWN: usize = 5;

/// An object that differs from the release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drifted {
    pub object: ObjectRef,
    /// Each difference: `spec.replicas is 5, the release has 3`, or `not found`.
    pub differences: Vec<String>,
}

/// `Deployment svc/frontend: spec.replicas is 5, the release has 3`.
impl fmt::Display for Drifted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object.display(), self.differences.join("; "))
    }
}

/// The rendered `objects` that differ from what is live, and how. A forced [`super::apply`]
/// of them corrects it; when is the caller's choice.
#[tracing::instrument(skip_all, fields(objects = objects.len()))]
pub async fn drift(cluster: &CellCluster, objects: &[Value]) -> Result<Vec<Drifted>, ReleaseError> {
    let mut drifted = Vec::new();
    for object in objects {
        if let Some(found) = drift_of(cluster, object).await? {
            tracing::info!(object = %found.object, differences = %found.differences.join("; "), "drift");
            drifted.push(found);
        }
    }
    Ok(drifted)
}

async fn drift_of(cluster: &CellCluster, object: &Value) -> Result<Option<Drifted>, ReleaseError> {
    let reference = ObjectRef::of(object)?;
    let Some((live, reference)) = cluster.get(&reference).await? else {
        return Ok(Some(Drifted { object: reference, differences: vec!["not found".into()] }));
    };
    let (api, _) = cluster.api(&reference).await?;
    let desired = api
        .patch(&reference.name, &apply_params(true, true), &Patch::Apply(&scoped(object, &reference)))
        .await
        .map_err(|e| apply_error(cluster, &reference, e))?;
    let mut differences = Vec::new();
    compare(&mut String::new(), &without_server_set(live), &without_server_set(to_value(&desired)?), &mut differences);
    if differences.len() > SHOWN {
        let more = differences.len() - SHOWN;
        differences.truncate(SHOWN);
        differences.push(format!("and {more} more"));
    }
    Ok((!differences.is_empty()).then_some(Drifted { object: reference, differences }))
}

fn without_server_set(mut object: Value) -> Value {
    for pointer in SERVER_SET {
        let (parent, field) = pointer.rsplit_once('/').unwrap_or_default();
        let parent = if parent.is_empty() { Some(&mut object) } else { object.pointer_mut(parent) };
        if let Some(Value::Object(map)) = parent {
            map.remove(field);
        }
    }
    object
}

/// Appends where `live` differs from `desired`, by path (`spec.template.spec.containers[0].image`).
fn compare(path: &mut String, live: &Value, desired: &Value, differences: &mut Vec<String>) {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => {
            let mut keys: Vec<&String> = live.keys().chain(desired.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (have, want) = (live.get(key).unwrap_or(&Value::Null), desired.get(key).unwrap_or(&Value::Null));
                let before = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                compare(path, have, want, differences);
                path.truncate(before);
            }
        }
        (Value::Array(have), Value::Array(want)) if have.len() == want.len() => {
            for (at, (have, want)) in have.iter().zip(want).enumerate() {
                let before = path.len();
                path.push_str(&format!("[{at}]"));
                compare(path, have, want, differences);
                path.truncate(before);
            }
        }
        (have, want) if have != want => {
            differences.push(format!("{path} is {}, the release has {}", brief(have), brief(want)))
        }
        _ => {}
    }
}

/// A value in a few words: `absent`, `3`, `"nginx:1.27"`, `[2 items]`, `{...}`.
fn brief(value: &Value) -> String {
    match value {
        Value::Null => "absent".into(),
        Value::Array(items) => format!("[{} items]", items.len()),
        Value::Object(_) => "{...}".into(),
        Value::String(text) if text.chars().count() > 60 => {
            format!("{:?}", format!("{}...", text.chars().take(57).collect::<String>()))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn differences(live: Value, desired: Value) -> Vec<String> {
        let mut found = Vec::new();
        compare(&mut String::new(), &without_server_set(live), &without_server_set(desired), &mut found);
        found
    }

    #[test]
    fn differences_name_the_field_and_both_values() {
        let live = json!({ "metadata": { "name": "web", "resourceVersion": "7", "generation": 3 },
            "spec": { "replicas": 5, "template": { "spec": { "containers": [{ "image": "web:2" }] } } },
            "status": { "replicas": 5 } });
        let desired = json!({ "metadata": { "name": "web", "resourceVersion": "8", "generation": 4 },
            "spec": { "replicas": 3, "template": { "spec": { "containers": [{ "image": "web:1" }] } } },
            "status": { "replicas": 3 } });
        assert_eq!(
            differences(live, desired),
            [
                "spec.replicas is 5, the release has 3",
                "spec.template.spec.containers[0].image is \"web:2\", the release has \"web:1\""
            ]
        );
    }

    #[test]
    fn added_and_removed_fields_read_as_absent() {
        let found =
            differences(json!({ "data": { "a": "1", "b": [1, 2] } }), json!({ "data": { "c": "3", "b": [1] } }));
        assert_eq!(
            found,
            [
                "data.a is \"1\", the release has absent",
                "data.b is [2 items], the release has [1 items]",
                "data.c is absent, the release has \"3\""
            ]
        );
    }

    #[test]
    fn server_set_fields_are_not_drift() {
        let live = json!({ "metadata": { "uid": "a", "managedFields": [1], "creationTimestamp": "x" }, "status": {} });
        assert!(differences(live, json!({ "metadata": {} })).is_empty());
    }
}
