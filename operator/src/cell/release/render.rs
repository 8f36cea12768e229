//! Rendering a release once: its manifests as objects in apply order, namespaced and labelled
//! for the cell.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Deserialize;
use serde_json::Value;

use super::object::{is_namespaced, sort_for_apply};
use super::substitute::{SubstituteError, substitute};
use super::{CELL_LABEL, CellValues, MANAGED_BY, ObjectRef, ReleaseError, SUBSTITUTE_ANNOTATION, Source, helm};

/// The release's objects in apply order (see [`super::object`]'s order: CRDs and Namespaces,
/// built-in kinds, then custom resources of the release's own CRDs), each with
/// `metadata.namespace` set to the cell's namespace when its kind is namespaced and it names
/// none (cluster-scoped ones lose a namespace they name), and labelled
/// `app.kubernetes.io/managed-by: cellplane` and `cellplane.io/cell: <cell>`.
#[tracing::instrument(skip_all, fields(cell = %values.cell, version = %values.version))]
pub async fn render(source: &Source, values: &CellValues) -> Result<Vec<Value>, ReleaseError> {
    let objects = match source {
        Source::Manifests { yaml } => manifests(yaml, &values.variables())?,
        Source::Helm { repository, chart, version, values: user_values } => {
            let rendered = helm::template(repository, chart, version, user_values, values).await?;
            let mut objects = Vec::new();
            for (at, document) in split_documents(&rendered).iter().enumerate() {
                objects.extend(parse_document(document, at + 1)?);
            }
            objects
        }
    };
    let objects = finish(objects, values)?;
    tracing::debug!(objects = objects.len(), "rendered");
    Ok(objects)
}

/// Plain manifests with their variables substituted, document by document.
fn manifests(yaml: &str, variables: &BTreeMap<String, String>) -> Result<Vec<Value>, ReleaseError> {
    let mut objects = Vec::new();
    let mut missing = BTreeSet::new();
    let mut missing_in = Vec::new();
    for (at, document) in split_documents(yaml).iter().enumerate() {
        let number = at + 1;
        // Parsed as written to name it in errors and to see its opt-out; a document that only
        // parses once substituted is substituted.
        let written = parse_document(document, number).ok();
        if written.as_ref().is_some_and(|objects| objects.iter().any(opts_out)) {
            objects.extend(written.unwrap_or_default());
            continue;
        }
        let what = || written.as_ref().and_then(|o| o.first()).map_or(format!("document {number}"), describe);
        match substitute(document, variables) {
            Ok(text) => objects.extend(parse_document(&text, number)?),
            Err(SubstituteError::Missing(names)) => {
                missing.extend(names);
                missing_in.push(what());
            }
            Err(SubstituteError::Syntax(message)) => return Err(ReleaseError::Substitution { what: what(), message }),
        }
    }
    if !missing.is_empty() {
        return Err(ReleaseError::MissingVariables { names: missing.into_iter().collect(), objects: missing_in });
    }
    Ok(objects)
}

fn opts_out(object: &Value) -> bool {
    let annotation = format!("/metadata/annotations/{}", SUBSTITUTE_ANNOTATION.replace('/', "~1"));
    object.pointer(&annotation).and_then(Value::as_str) == Some("disabled")
}

fn describe(object: &Value) -> String {
    let text = |pointer| object.pointer(pointer).and_then(Value::as_str).unwrap_or("?");
    format!("{} {}", text("/kind"), text("/metadata/name"))
}

/// A YAML stream cut at its document markers (`---` at the start of a line; `...` ends one).
/// YAML allows neither inside a document, so the cut is exact; each document can then be
/// substituted and parsed on its own.
fn split_documents(yaml: &str) -> Vec<String> {
    let mut documents = vec![String::new()];
    for line in yaml.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") {
            let rest = bare[3..].trim_start();
            documents.push(if rest.is_empty() { String::new() } else { format!("{rest}\n") });
        } else if bare == "..." {
            documents.push(String::new());
        } else if let Some(document) = documents.last_mut() {
            document.push_str(line);
        }
    }
    documents.retain(|document| !document.trim().is_empty());
    documents
}

/// The objects of one document: none for an empty one, the items of a `List`.
fn parse_document(text: &str, number: usize) -> Result<Vec<Value>, ReleaseError> {
    let bad = |message: String| ReleaseError::Yaml { document: number, message };
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        match Value::deserialize(document).map_err(|e| bad(e.to_string()))? {
            Value::Null => {}
            Value::Object(object) => objects.extend(expand_list(Value::Object(object))),
            other => return Err(bad(format!("expected an object, found {}", kind_of_value(&other)))),
        }
    }
    Ok(objects)
}

fn expand_list(object: Value) -> Vec<Value> {
    let is_list = object.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"));
    match object.get("items") {
        Some(Value::Array(items)) if is_list => items.clone(),
        _ => vec![object],
    }
}

fn kind_of_value(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "something else",
    }
}

/// Namespaces, labels, duplicate check and order.
fn finish(mut objects: Vec<Value>, values: &CellValues) -> Result<Vec<Value>, ReleaseError> {
    let crds: Vec<Value> = objects.iter().filter(|o| ObjectRef::of(o).is_ok_and(|r| r.is_crd())).cloned().collect();
    let mut seen = HashSet::new();
    for object in &mut objects {
        let reference = ObjectRef::of(object)?;
        place(object, &reference, &crds, &values.namespace)?;
        label(object, &values.cell);
        let reference = ObjectRef::of(object)?;
        let identity =
            (reference.group.clone(), reference.kind.clone(), reference.namespace.clone(), reference.name.clone());
        if !seen.insert(identity) {
            return Err(ReleaseError::Duplicate(reference));
        }
    }
    sort_for_apply(&mut objects);
    Ok(objects)
}

fn place(object: &mut Value, reference: &ObjectRef, crds: &[Value], namespace: &str) -> Result<(), ReleaseError> {
    let metadata = object.get_mut("metadata").and_then(Value::as_object_mut);
    let Some(metadata) = metadata else { return Ok(()) };
    if !is_namespaced(&reference.group, &reference.kind, crds) {
        metadata.remove("namespace");
    } else if reference.namespace.is_empty() {
        if namespace.is_empty() {
            return Err(ReleaseError::InvalidObject {
                what: reference.display(),
                message: "names no namespace and the cell's values give none".into(),
            });
        }
        metadata.insert("namespace".into(), namespace.into());
    }
    Ok(())
}

fn label(object: &mut Value, cell: &str) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let labels = metadata.entry("labels").or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        labels.insert(CELL_LABEL.into(), cell.into());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cell() -> CellValues {
        CellValues {
            cell: "eu-1".into(),
            region: "eu-west-1".into(),
            domain: "eu-1.example.net".into(),
            version: "1.10".into(),
            provider: "sim".into(),
            namespace: "svc".into(),
            kubernetes_version: "1.37.0".into(),
            extra: [("tier".to_string(), "gold".to_string())].into(),
        }
    }

    async fn render_yaml(yaml: &str) -> Result<Vec<Value>, ReleaseError> {
        render(&Source::Manifests { yaml: yaml.into() }, &cell()).await
    }

    #[tokio::test]
    async fn variables_keep_the_type_their_quoting_gives() {
        let yaml = r#"
# a comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-${cell}
spec:
  replicas: ${replicas:=3}
  template:
    metadata:
      annotations:
        version: "${version}"
        tier: ${tier}
        home: $${HOME}
"#;
        let objects = render_yaml(yaml).await.unwrap();
        let deployment = &objects[0];
        assert_eq!(deployment["metadata"]["name"], "web-eu-1");
        assert_eq!(deployment["spec"]["replicas"], 3, "an unquoted number is a number");
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["version"], "1.10", "a quoted reference stays a string");
        assert_eq!(annotations["tier"], "gold");
        assert_eq!(annotations["home"], "${HOME}");
    }

    #[tokio::test]
    async fn unknown_variables_are_an_error_naming_them_and_their_objects() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '${zone}'}\n---\n\
                    apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {x: '${account} ${zone}'}\n";
        let error = render_yaml(yaml).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "variables without a value or a default: account, zone (in ConfigMap a, ConfigMap b); \
             give them a value or a default (${name:=default})"
        );
        assert!(!error.is_retryable());
    }

    #[tokio::test]
    async fn an_object_can_opt_out_of_substitution() {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: script\n  annotations:\n    cellplane.io/substitute: disabled\ndata:\n  run: echo ${HOME}\n";
        let objects = render_yaml(yaml).await.unwrap();
        assert_eq!(objects[0]["data"]["run"], "echo ${HOME}");
    }

    #[tokio::test]
    async fn objects_are_namespaced_labelled_and_ordered() {
        let yaml = r#"
apiVersion: example.com/v1
kind: Fleet
metadata: {name: all}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader, namespace: svc}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: other}
...
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: fleets.example.com}
spec: {group: example.com, scope: Cluster, names: {kind: Fleet, plural: fleets}}
"#;
        let objects = render_yaml(yaml).await.unwrap();
        let refs: Vec<String> = objects.iter().map(|o| ObjectRef::of(o).unwrap().to_string()).collect();
        assert_eq!(
            refs,
            [
                "apiextensions.k8s.io/v1/CustomResourceDefinition//fleets.example.com",
                "rbac.authorization.k8s.io/v1/ClusterRole//reader",
                "/v1/ConfigMap/other/elsewhere",
                "apps/v1/Deployment/svc/web",
                "example.com/v1/Fleet//all",
                "example.com/v1/Widget/svc/w",
            ]
        );
        for object in &objects {
            assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "cellplane");
            assert_eq!(object["metadata"]["labels"]["cellplane.io/cell"], "eu-1");
        }
        assert_eq!(objects[3]["metadata"]["labels"]["app"], "web", "the release's own labels stay");
    }

    #[tokio::test]
    async fn malformed_releases_are_refused() {
        let cases = [
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n",
                "document 1 of the manifests is not valid YAML",
            ),
            ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "a ConfigMap: has no metadata.name"),
            ("kind: ConfigMap\nmetadata: {name: x}\n", "a ConfigMap: has no apiVersion"),
            ("- a\n- b\n", "expected an object, found a list"),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: svc}\n",
                "ConfigMap svc/x appears more than once in the release",
            ),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: '${HOME:-/root}'}\n",
                "ConfigMap x: ${HOME:-/root} is not a variable reference",
            ),
        ];
        for (yaml, expected) in cases {
            let error = render_yaml(yaml).await.unwrap_err();
            assert!(error.to_string().contains(expected), "{yaml}: {error}");
            assert!(!error.is_retryable());
        }
    }

    #[test]
    fn lists_are_expanded() {
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": [{ "kind": "A" }, { "kind": "B" }] });
        assert_eq!(expand_list(list).len(), 2);
    }
}
