//! Helpers shared by the CRD tests (each test binary uses a different subset).
#![allow(dead_code)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
pub mod samples;

use serde_json::Value;

/// The generated CRD of a kind.
pub fn crd(kind: &str) -> CustomResourceDefinition {
    cellplane::api::crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"))
}

/// The openAPIV3Schema of a CRD as JSON.
pub fn schema(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has an openAPIV3Schema");
    serde_json::to_value(schema).unwrap()
}

/// Visit every schema node with its path (`.spec.cluster.nodePools[]`).
pub fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), additional, visit);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in node.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            walk(&format!("{path}.{key}[{i}]"), child, visit);
        }
    }
}

pub const KINDS: [&str; 4] = ["Cell", "Namespace", "DeploymentRing", "Release"];
/// The kinds whose work a workflow does (their status mirrors it, with a phase).
pub const WORKFLOW_KINDS: [&str; 3] = ["Cell", "Namespace", "DeploymentRing"];
