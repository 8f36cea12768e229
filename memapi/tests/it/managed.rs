//! `metadata.managedFields` as the apiserver keeps them (checked against Kubernetes 1.37):
//! one entry per manager and operation, the fields each owns, and apply conflicts. memapi
//! owns leaves only: the `"."` entries the apiserver adds for a map a manager created are left
//! out of the comparison.

use serde_json::{Value, json};

use crate::reference::*;

/// (manager, operation, apiVersion, fieldsType, fieldsV1 without `"."`) of each entry.
fn entries(obj: &Value) -> Vec<(String, String, String, String, Value)> {
    let managed = obj["metadata"]["managedFields"].as_array().expect("managedFields");
    let text = |e: &Value, key: &str| e[key].as_str().unwrap_or_default().to_string();
    managed
        .iter()
        .map(|e| {
            (
                text(e, "manager"),
                text(e, "operation"),
                text(e, "apiVersion"),
                text(e, "fieldsType"),
                leaves(&e["fieldsV1"]),
            )
        })
        .collect()
}

fn leaves(fields: &Value) -> Value {
    match fields {
        Value::Object(map) => map.iter().filter(|(k, _)| *k != ".").map(|(k, v)| (k.clone(), leaves(v))).collect(),
        other => other.clone(),
    }
}

fn entry(manager: &str, operation: &str, fields: Value) -> (String, String, String, String, Value) {
    (manager.into(), operation.into(), "v1".into(), "FieldsV1".into(), fields)
}

#[tokio::test]
async fn managers_own_what_they_wrote_and_appliers_meet_conflicts() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("managed").await;
        let path = format!("/api/v1/namespaces/{ns}/configmaps");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mf", "labels": {"l": "1"}}, "data": {"a": "1", "b": "2"}});
        let created = s.raw("POST", &format!("{path}?fieldManager=creator"), Some(&cm)).await.json();
        let creator = entry(
            "creator",
            "Update",
            json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:l": {}}}}),
        );
        assert_eq!(entries(&created), std::slice::from_ref(&creator), "{n}");
        assert!(created["metadata"]["managedFields"][0]["time"].is_string(), "{n}");

        let applied = s
            .apply(
                &format!("{path}/mf?fieldManager=applier"),
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mf"}, "data": {"c": "3"}}),
            )
            .await;
        let applier = entry("applier", "Apply", json!({"f:data": {"f:c": {}}}));
        assert_eq!(entries(&applied.json()), [applier, creator], "{n}");

        let taking =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mf"}, "data": {"c": "3", "a": "x"}});
        let conflict = s.apply(&format!("{path}/mf?fieldManager=applier"), &taking).await;
        assert!(conflict.is_status(409, "Conflict"), "{n}: {conflict:?}");
        let status = conflict.json();
        assert_eq!(
            status["message"], "Apply failed with 1 conflict: conflict with \"creator\" using v1: .data.a",
            "{n}"
        );
        let causes = json!([{"reason": "FieldManagerConflict", "message": "conflict with \"creator\" using v1", "field": ".data.a"}]);
        assert_eq!(status["details"]["causes"], causes, "{n}");
        s.drop_namespace(&ns).await;
    }
}
