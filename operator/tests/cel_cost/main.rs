//! The API server refuses a CRD whose CEL rules it estimates too expensive: a rule whose cost
//! times the number of times it can run (the product of the maxItems/maxProperties of the
//! lists and maps around it) exceeds 10,000,000, or a CRD whose rules add up to more than
//! 100,000,000. These tests estimate every rule the way kube-apiserver 1.25.0 does, the most
//! pessimistic release the README promises (see `estimator` and `sizes` for the model).

#[path = "../common/mod.rs"]
mod common;
mod estimator;
mod sizes;

use common::{KINDS, crd, schema};
use estimator::rule_cost;
use serde_json::{Value, json};
use sizes::{Decl, MAX_REQUEST_SIZE, children_per_value, is_embedded, min_size};

/// StaticEstimatedCostLimit: the most one rule may cost, over all the times it can run.
const RULE_LIMIT: u64 = 10_000_000;
/// StaticEstimatedCRDCostLimit: the most all the rules of one CRD may cost together.
const CRD_LIMIT: u64 = 100_000_000;

/// The estimated cost of one rule of a CRD.
struct RuleCost {
    path: String,
    rule: String,
    per_run: u64,
    runs: u64,
}

impl RuleCost {
    fn total(&self) -> u64 {
        self.per_run.saturating_mul(self.runs)
    }
}

/// Every rule of a CRD schema with its estimated cost.
fn rule_costs(schema: &Value) -> Vec<RuleCost> {
    let mut costs = vec![];
    visit("", schema, Some(1), true, &mut costs);
    costs
}

/// `runs`: how many times data of `node` can occur in one object; None when a list or map
/// around it is unbounded.
fn visit(path: &str, node: &Value, runs: Option<u64>, root: bool, costs: &mut Vec<RuleCost>) {
    for rule in node.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let rule = rule["rule"].as_str().unwrap_or_default().to_owned();
        let scope = Decl::of(node, root || is_embedded(node)).unwrap_or_else(|| panic!("{path}: no CEL type"));
        let per_run = rule_cost(&rule, &scope).unwrap_or_else(|e| panic!("{path}: {e}"));
        // Under an unbounded list or map: as many as fit in a request at their smallest.
        let runs = runs.unwrap_or(MAX_REQUEST_SIZE / (min_size(node) + 1));
        costs.push(RuleCost { path: path.to_owned(), rule, per_run, runs });
    }
    let child_runs = runs.zip(children_per_value(node)).map(|(runs, per_value)| runs.saturating_mul(per_value));
    let properties = node.get("properties").and_then(Value::as_object).into_iter().flatten();
    for (name, child) in properties {
        visit(&format!("{path}.{name}"), child, child_runs, false, costs);
    }
    if let Some(items) = node.get("items") {
        visit(&format!("{path}[]"), items, child_runs, false, costs);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        visit(&format!("{path}{{}}"), values, child_runs, false, costs);
    }
}

#[test]
fn every_rule_fits_the_budget_of_kubernetes_1_25() {
    for kind in KINDS {
        let costs = rule_costs(&schema(&crd(kind)));
        assert!(!costs.is_empty(), "{kind} has no rules");
        for cost in &costs {
            eprintln!("{kind}{}: {} x {} = {}  {}", cost.path, cost.per_run, cost.runs, cost.total(), cost.rule);
            assert!(
                cost.total() <= RULE_LIMIT,
                "{kind}{}: {:?} costs {} x {} runs, over the limit of {RULE_LIMIT}",
                cost.path,
                cost.rule,
                cost.per_run,
                cost.runs
            );
        }
        let total = costs.iter().map(RuleCost::total).fold(0, u64::saturating_add);
        eprintln!("{kind}: all rules {total}");
        assert!(total <= CRD_LIMIT, "{kind}: the rules cost {total} together, over the limit of {CRD_LIMIT}");
    }
}

/// The rules kube-apiserver 1.25.0 refused ("estimated rule cost exceeds budget by factor of
/// more than 100x"), with the schema node that declares their rewrites.
const REFUSED_RULES: [(&str, &str, &str); 2] = [
    ("DeploymentRing", "/properties/spec", "has(self.version) != (has(self.followUpstream) && self.followUpstream)"),
    (
        "Namespace",
        "/properties/spec/properties/mtls",
        "has(self.acceptedClientCA) != (has(self.issueClientCertificate) && self.issueClientCertificate)",
    ),
];

#[test]
fn comparing_has_results_exceeds_the_budget_100_fold_and_the_rewrites_fit() {
    for (kind, pointer, refused) in REFUSED_RULES {
        let schema = schema(&crd(kind));
        let node = schema.pointer(pointer).unwrap();
        let scope = Decl::of(node, false).unwrap();
        let refused_cost = rule_cost(refused, &scope).unwrap();
        eprintln!("{kind}: {refused} costs {refused_cost}");
        assert!(refused_cost / RULE_LIMIT > 100, "{kind}: {refused} costs only {refused_cost}");

        let rewrite = node["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["message"].as_str().unwrap().starts_with("set exactly one of"))
            .and_then(|rule| rule["rule"].as_str())
            .unwrap();
        let rewrite_cost = rule_cost(rewrite, &scope).unwrap();
        eprintln!("{kind}: {rewrite} costs {rewrite_cost}");
        assert!(rewrite_cost <= RULE_LIMIT, "{kind}: {rewrite} costs {rewrite_cost}");
    }
}

/// Costs Kubernetes' own tests expect of its estimator (apiextensions-apiserver
/// TestCostEstimation), for schemas without bounds and with them.
#[test]
fn estimates_match_the_costs_kubernetes_expects() {
    let string = |max: Option<u64>| json!({"type": "string", "maxLength": max});
    let list = |items: Value, max: Option<u64>| json!({"type": "array", "items": items, "maxItems": max});
    let map = |values: Value, max: Option<u64>| json!({"type": "object", "additionalProperties": values, "maxProperties": max});
    let number = json!({"type": "number"});
    let cases = [
        (string(None), "self.contains('test')", 314_574),
        (string(Some(10)), "self.contains('test')", 5),
        (string(None), "self.startsWith('test')", 2),
        (string(None), r#"size(self + "hello") > size("hello")"#, 314_578),
        (string(Some(4)), r#"size(self + "hello") > size("hello")"#, 7),
        (string(None), r#"self == "x""#, 2),
        (string(Some(0)), r#"self == "x""#, 1),
        (string(None), r#"self.matches("x")"#, 314_574),
        (string(Some(50)), r#"self.matches("x")"#, 22),
        (list(number.clone(), None), "self.all(x, true)", 4_718_591),
        (list(number.clone(), Some(10)), "self.all(x, true)", 32),
        (list(number.clone(), Some(10)), "self.all(x, self.all(y, true))", 352),
        (list(number.clone(), None), "self[1] == 0.0", 2),
        (list(json!({"type": "string"}), None), "self.all(x, true)", 3_145_727),
        (list(json!({"type": "string"}), Some(8)), "self[1] == self[1]", 314_577),
        (list(json!({"type": "boolean"}), None), "self.all(x, true)", 1_887_437),
        (list(json!({"type": "string", "format": "date-time"}), None), "self.all(x, true)", 428_963),
        (list(json!({"x-kubernetes-int-or-string": true}), None), "self[0] == 5", 3),
        (list(map(number.clone(), None), None), "self.all(x, x.y == 25.2)", 6_291_452),
        (list(map(number.clone(), None), Some(12)), "self.all(x, x.y == 25.2)", 74),
        (map(json!({"type": "string"}), None), "self.all(x, true)", 1_179_647),
        (map(json!({"type": "string"}), Some(3)), "self.all(x, true)", 11),
        (map(number, None), "has(self.x)", 0),
    ];
    for (schema, rule, expected) in cases {
        let scope = Decl::of(&schema, false).unwrap();
        assert_eq!(rule_cost(rule, &scope), Ok(expected), "{rule} on {schema}");
    }
}
