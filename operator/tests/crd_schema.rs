//! Structural checks of the generated CRDs: what `kubectl`, kstatus and the API server
//! rely on, and that every CEL rule compiles on Kubernetes 1.25 (tests/cel_cost checks that
//! the API server accepts their cost).

mod common;

use common::{KINDS, WORKFLOW_KINDS, crd, schema, walk};
use kube::core::cel::{ScopeContext, check_rule_scope, compile_schema};
use serde_json::Value;

#[test]
fn names_scope_and_subresources() {
    let expected_short_names: [(&str, &[&str]); 3] =
        [("Cell", &[]), ("Namespace", &["cns", "cellns"]), ("DeploymentRing", &["ring"])];
    for (kind, short_names) in expected_short_names {
        let crd = crd(kind);
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "cellplane.io");
        // A tenant lives in its account's namespace; cells and rings are fleet infrastructure.
        let scope = if kind == "Namespace" { "Namespaced" } else { "Cluster" };
        assert_eq!(crd.spec.scope, scope, "{kind}");
        assert_eq!(names.categories.as_deref(), Some(&["cellplane".to_string()][..]), "{kind}");
        assert_eq!(names.short_names.clone().unwrap_or_default(), short_names, "{kind}");
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some(), "{kind} needs the status subresource");
    }
    assert_eq!(crd("Namespace").metadata.name.as_deref(), Some("namespaces.cellplane.io"));
    assert_eq!(crd("DeploymentRing").spec.names.plural, "deploymentrings");
}

#[test]
fn printer_columns_show_phase_ready_and_age() {
    for kind in KINDS {
        let crd = crd(kind);
        let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap_or_default();
        let by_name = |name: &str| columns.iter().find(|c| c.name == name);
        if WORKFLOW_KINDS.contains(&kind) {
            assert_eq!(by_name("Phase").map(|c| c.json_path.as_str()), Some(".status.phase"), "{kind}");
        }
        assert_eq!(
            by_name("Ready").map(|c| c.json_path.as_str()),
            Some(r#".status.conditions[?(@.type=="Ready")].status"#),
            "{kind}"
        );
        assert_eq!(by_name("Age").map(|c| c.type_.as_str()), Some("date"), "{kind}");
        assert_eq!(columns.last().map(|c| c.name.as_str()), Some("Age"), "{kind}: Age goes last");
        for column in &columns {
            let path = column.json_path.split('[').next().unwrap_or_default();
            assert!(
                path.starts_with(".spec.") || path.starts_with(".status.") || path == ".metadata.creationTimestamp",
                "{kind}: column {} has path {}",
                column.name,
                column.json_path
            );
        }
    }
    let cell = crd("Cell");
    let cell_columns: Vec<_> =
        cell.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    for name in ["Provider", "Region", "Version", "Running"] {
        assert!(cell_columns.contains(&name), "Cell lacks column {name}");
    }
    let ns = crd("Namespace");
    assert!(
        ns.spec.versions[0].additional_printer_columns.iter().flatten().any(|c| c.json_path == ".status.assignedCell")
    );
}

#[test]
fn every_property_has_a_description() {
    let mut missing = vec![];
    for kind in KINDS {
        let schema = schema(&crd(kind));
        walk(kind, &schema, &mut |path, node| {
            let Some(props) = node.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, prop) in props {
                let described = prop.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(format!("{path}.{name}"));
                }
            }
        });
        assert!(schema.get("description").is_some(), "{kind} has no root description");
    }
    assert!(missing.is_empty(), "properties without a description:\n{}", missing.join("\n"));
}

#[test]
fn descriptions_are_unwrapped() {
    for kind in KINDS {
        walk(kind, &schema(&crd(kind)), &mut |path, node| {
            if let Some(d) = node.get("description").and_then(Value::as_str) {
                assert!(!d.replace("\n\n", "").contains('\n'), "{path}: wrapped description {d:?}");
            }
        });
    }
}

/// Every x-kubernetes-validations rule of a kind, with its schema path.
fn rules(kind: &str) -> Vec<(String, serde_json::Map<String, Value>)> {
    let mut found = vec![];
    walk(kind, &schema(&crd(kind)), &mut |path, node| {
        for rule in node.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
            found.push((path.to_owned(), rule.as_object().cloned().unwrap_or_default()));
        }
    });
    found
}

#[test]
fn validations_use_only_rule_and_message() {
    let mut total = 0;
    for kind in KINDS {
        for (path, rule) in rules(kind) {
            total += 1;
            let keys: Vec<_> = rule.keys().map(String::as_str).collect();
            assert_eq!(keys, ["message", "rule"], "{path}: keys {keys:?}; Kubernetes 1.25 knows only rule and message");
            let message = rule["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty() && !message.contains('\n'), "{path}: bad message {message:?}");
        }
    }
    assert!(total >= 15, "expected the CEL rules to be present, found {total}");
}

/// CEL functions and macros Kubernetes 1.25 offers that these rules may use. Newer libraries
/// (ip/cidr 1.31, quantity 1.29, semver 1.33, optionals, sets, format) are left out on purpose.
const CEL_FUNCTIONS_IN_1_25: &[&str] = &[
    "has",
    "size",
    "type",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
];

/// Names called as functions in a CEL expression, ignoring string literals.
fn called_functions(rule: &str) -> Vec<String> {
    let mut calls = vec![];
    let mut chars = rule.chars().peekable();
    let mut ident = String::new();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            ident.clear();
        } else if c.is_alphanumeric() || c == '_' {
            ident.push(c);
        } else {
            if c == '(' && !ident.is_empty() {
                calls.push(ident.clone());
            }
            if !c.is_whitespace() {
                ident.clear();
            }
        }
    }
    calls
}

#[test]
fn cel_rules_use_only_functions_available_in_kubernetes_1_25() {
    for kind in KINDS {
        for (path, rule) in rules(kind) {
            let expr = rule["rule"].as_str().unwrap_or_default();
            assert!(!expr.contains(".?"), "{path}: optional field selection needs Kubernetes 1.29");
            for function in called_functions(expr) {
                assert!(
                    CEL_FUNCTIONS_IN_1_25.contains(&function.as_str()),
                    "{path}: `{function}` in {expr:?} is not known to be available on Kubernetes 1.25"
                );
            }
        }
    }
    assert_eq!(called_functions("has(self.a) && self.b.matches('x(y)')"), ["has", "matches"]);
}

#[test]
fn cel_rules_compile_and_name_only_variables_in_scope() {
    for kind in KINDS {
        let schema = schema(&crd(kind));
        let compiled = compile_schema(&schema);
        let mut errors = vec![];
        collect_errors(kind, &compiled, &mut errors);
        assert!(errors.is_empty(), "CEL rules that do not compile:\n{}", errors.join("\n"));

        for (path, rule) in rules(kind) {
            let expr = rule["rule"].as_str().unwrap_or_default();
            // kube-cel's scope check takes CEL type names (`type(self) == string`) for variables.
            let warnings: Vec<_> = check_rule_scope(expr, ScopeContext::CrdValidation)
                .into_iter()
                .filter(|w| !CEL_TYPE_NAMES.iter().any(|t| w.message.starts_with(&format!("variable '{t}'"))))
                .collect();
            assert!(warnings.is_empty(), "{path}: {expr}: {warnings:?}");
        }
    }
}

const CEL_TYPE_NAMES: &[&str] = &["int", "uint", "double", "bool", "string", "bytes", "list", "map"];

fn collect_errors(path: &str, node: &kube::core::cel::CompiledSchema, errors: &mut Vec<String>) {
    for err in node.compilation_errors() {
        errors.push(format!("{path}: {err:?}"));
    }
    for (name, child) in &node.properties {
        collect_errors(&format!("{path}.{name}"), child, errors);
    }
    if let Some(items) = &node.items {
        collect_errors(&format!("{path}[]"), items, errors);
    }
    if let Some(additional) = &node.additional_properties {
        collect_errors(&format!("{path}{{}}"), additional, errors);
    }
}

/// Why a schema node holds data of unbounded size, if it does. Kubernetes' CEL cost estimator
/// takes such data to fill a whole request, which makes rules near it too expensive to install.
fn missing_bound(node: &Value) -> Option<&'static str> {
    let has = |key: &str| node.get(key).is_some();
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return (!has("maxLength")).then_some("int-or-string without maxLength");
    }
    match node.get("type").and_then(Value::as_str) {
        Some("string") if !has("maxLength") && !has("enum") => Some("string without maxLength or enum"),
        Some("array") if !has("maxItems") => Some("list without maxItems"),
        Some("object") if has("additionalProperties") && !has("maxProperties") => Some("map without maxProperties"),
        _ => None,
    }
}

#[test]
fn every_string_list_and_map_is_bounded() {
    let mut unbounded = vec![];
    for kind in KINDS {
        walk(kind, &schema(&crd(kind)), &mut |path, node| {
            if let Some(problem) = missing_bound(node) {
                unbounded.push(format!("{path}: {problem}"));
            }
        });
    }
    assert!(unbounded.is_empty(), "unbounded data in the CRDs:\n{}", unbounded.join("\n"));
    let unbounded_list = serde_json::json!({"type": "array", "items": {"type": "string", "maxLength": 1}});
    assert_eq!(missing_bound(&unbounded_list), Some("list without maxItems"));
}

#[test]
fn defaulted_fields_are_not_nullable() {
    // With nullable: true the API server keeps an explicit null instead of the default,
    // and the controller could not read the object back.
    for kind in KINDS {
        walk(kind, &schema(&crd(kind)), &mut |path, node| {
            if node.get("default").is_some() {
                assert_ne!(node.get("nullable"), Some(&Value::Bool(true)), "{path}");
            }
        });
    }
}

#[test]
fn patterns_are_valid_regular_expressions() {
    for kind in KINDS {
        walk(kind, &schema(&crd(kind)), &mut |path, node| {
            if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
                assert!(regex::Regex::new(pattern).is_ok(), "{path}: bad pattern {pattern}");
            }
        });
    }
}

#[test]
fn status_conditions_are_list_maps_keyed_by_type() {
    for kind in KINDS {
        let schema = schema(&crd(kind));
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], serde_json::json!(["type"]), "{kind}");
        let fields: &[&str] = match WORKFLOW_KINDS.contains(&kind) {
            true => &["observedGeneration", "workflow", "phase"],
            false => &["observedGeneration"],
        };
        for field in fields {
            assert!(
                schema["properties"]["status"]["properties"].get(field).is_some(),
                "{kind}: status.{field} missing"
            );
        }
    }
}
