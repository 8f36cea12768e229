//! The CEL rules of a CRD's schema refuse writes as the apiserver refuses them (checked
//! against Kubernetes 1.37): one 422 Invalid listing every broken rule with its field and
//! message, on create, update, patch, server-side apply and status writes, transition rules
//! given the old object.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use serde_json::{Value, json};

use crate::common::api_error;
use crate::reference::*;

/// (reason, field, message) of each cause, sorted: the apiserver checks sibling fields in no
/// fixed order.
fn causes(status: &Status) -> Vec<(String, String, String)> {
    let details = status.details.as_ref().expect("details");
    let mut causes: Vec<_> =
        details.causes.iter().map(|c| (c.reason.clone(), c.field.clone(), c.message.clone())).collect();
    causes.sort();
    causes
}

fn cause(reason: &str, field: &str, message: &str) -> (String, String, String) {
    (reason.into(), field.into(), message.into())
}

fn invalid<T: std::fmt::Debug>(result: Result<T, kube::Error>, server: &str) -> Status {
    let status = api_error(result.expect_err("refused"));
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{server}: {}", status.message);
    status
}

fn rulebook(name: &str, spec: Value) -> DynamicObject {
    object(RULEBOOKS, "rulebooks", name, json!({"spec": spec}))
}

#[tokio::test]
async fn every_broken_rule_is_one_cause_of_one_refusal() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("cel").await;
        let api = s.dynamic(RULEBOOKS, "rulebooks", Some(&ns));
        let spec = json!({
            "a": -1, "b": "bad", "c": "x", "f": "x", "count": 200,
            "labels": {"k.x": "no", "ok": "yes"}, "pools": [{"name": "p", "size": 0}],
        });
        let status = invalid(api.create(&PostParams::default(), &rulebook("broken", spec)).await, n);
        assert!(
            status.message.starts_with("Rulebook.cel.test.cellplane.io \"broken\" is invalid: [spec: Invalid value: "),
            "{n}: {}",
            status.message
        );
        let expected = [
            cause("FieldValueForbidden", "spec.c", "Forbidden: c may not be x"),
            cause("FieldValueInvalid", "spec", "Invalid value: a must not be negative"),
            cause("FieldValueInvalid", "spec", "Invalid value: b may not be bad"),
            cause("FieldValueInvalid", "spec", "Invalid value: failed rule: !has(self.f) || self.f != 'x'"),
            cause("FieldValueInvalid", "spec.count", "Invalid value: 200: count small"),
            cause("FieldValueInvalid", "spec.labels[k.x]", "Invalid value: \"no\": no no"),
            cause("FieldValueInvalid", "spec.pools[0]", "Invalid value: size positive"),
        ];
        assert_eq!(causes(&status), expected, "{n}");

        let long = format!("{}-a-rather-long-name", s.run);
        let status = invalid(api.create(&PostParams::default(), &rulebook(&long, json!({}))).await, n);
        assert_eq!(causes(&status), [cause("FieldValueInvalid", "<nil>", "Invalid value: short names only")], "{n}");
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        invalid(api.create(&dry_run, &rulebook("dry", json!({"a": -1}))).await, n);
        s.drop_namespace(&ns).await;
    }
}

#[tokio::test]
async fn transition_rules_compare_with_the_old_object() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("cel-old").await;
        let api = s.dynamic(RULEBOOKS, "rulebooks", Some(&ns));
        let pools = json!([{"name": "a", "size": 1}, {"name": "b", "size": 2}]);
        api.create(&PostParams::default(), &rulebook("book", json!({"fixed": "one", "pools": pools}))).await.unwrap();

        let changed = json!({"spec": {"fixed": "two"}});
        let status = invalid(api.patch("book", &PatchParams::default(), &Patch::Merge(&changed)).await, n);
        assert_eq!(
            causes(&status),
            [cause("FieldValueInvalid", "spec.fixed", "Invalid value: \"two\": fixed is immutable")],
            "{n}"
        );
        // List-map items meet their old selves by key, wherever they moved; new ones have none.
        let pools =
            json!({"spec": {"pools": [{"name": "b", "size": 2}, {"name": "a", "size": 3}, {"name": "c", "size": 9}]}});
        let status = invalid(api.patch("book", &PatchParams::default(), &Patch::Merge(&pools)).await, n);
        assert_eq!(
            causes(&status),
            [cause("FieldValueInvalid", "spec.pools[1]", "Invalid value: pool size fixed")],
            "{n}"
        );
        let grown =
            json!({"spec": {"pools": [{"name": "b", "size": 2}, {"name": "a", "size": 1}, {"name": "c", "size": 9}]}});
        api.patch("book", &PatchParams::default(), &Patch::Merge(&grown)).await.unwrap();

        let mut replaced = api.get("book").await.unwrap();
        replaced.data["spec"]["fixed"] = json!("three");
        invalid(api.replace("book", &PostParams::default(), &replaced).await, n);
        s.drop_namespace(&ns).await;
    }
}

#[tokio::test]
async fn applies_and_status_writes_are_checked_too() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("cel-apply").await;
        let api: Api<DynamicObject> = s.dynamic(RULEBOOKS, "rulebooks", Some(&ns));
        let apply = PatchParams::apply("cel-test");
        let applied = |spec: Value| json!({"apiVersion": "cel.test.cellplane.io/v1", "kind": "Rulebook", "metadata": {"name": "applied"}, "spec": spec});
        let status = invalid(api.patch("applied", &apply, &Patch::Apply(applied(json!({"count": 100})))).await, n);
        assert_eq!(
            causes(&status),
            [cause("FieldValueInvalid", "spec.count", "Invalid value: 100: count small")],
            "{n}"
        );
        api.patch("applied", &apply, &Patch::Apply(applied(json!({"count": 1})))).await.unwrap();

        let bad = json!({"status": {"phase": "Bad"}});
        let status = invalid(api.patch_status("applied", &PatchParams::default(), &Patch::Merge(&bad)).await, n);
        assert_eq!(
            causes(&status),
            [cause("FieldValueInvalid", "status.phase", "Invalid value: \"Bad\": bad phase")],
            "{n}"
        );
        let good = json!({"status": {"phase": "Good"}});
        api.patch_status("applied", &PatchParams::default(), &Patch::Merge(&good)).await.unwrap();
        s.drop_namespace(&ns).await;
    }
}

/// A rule that does not parse refuses its CRD (the apiserver also refuses rules that do not
/// type-check; memapi's CEL only parses, and its error text is its own).
#[tokio::test]
async fn crds_with_rules_that_do_not_parse_are_refused() {
    for s in servers().await {
        let n = s.name;
        let group = format!("{}.broken.test.cellplane.io", s.run);
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("brokens.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": "brokens", "singular": "broken", "kind": "Broken"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "x-kubernetes-validations": [{"rule": "self ==", "message": "m"}]}},
                }}}],
            },
        });
        let raw = s.raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(&crd)).await;
        assert!(raw.is_status(422, "Invalid"), "{n}: {raw:?}");
        let refused = &raw.json()["details"]["causes"][0];
        let field = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule";
        assert_eq!(refused["field"], field, "{n}");
        let shown = r#"Invalid value: {"Rule":"self ==","Message":"m","MessageExpression":"","Reason":null,"FieldPath":"","OptionalOldSelf":null}: compilation failed: "#;
        assert!(refused["message"].as_str().unwrap().starts_with(shown), "{n}: {refused}");
    }
}
