//! The CEL rules of a CRD's schema (`x-kubernetes-validations`), evaluated on every write of
//! a custom resource as the apiserver evaluates them: on the defaulted object, node by node;
//! a transition rule with the old value that correlates with the new one (the same property
//! or map key, the list-map item with the same keys, the same set item; atomic list items
//! have none); a rule that does not read `oldSelf` skipped where the value is unchanged
//! (validation ratcheting). Each failure is worded as the apiserver words it. kube-cel (kube's
//! `cel` feature) compiles and evaluates each rule.

use kube::core::cel::{self as kube_cel, ErrorKind, ValidationError, Validator};
use serde_json::{Map, Value, json};

use crate::error::Cause;

thread_local! {
    /// Registering the Kubernetes CEL functions is not free: once per thread.
    static VALIDATOR: Validator = Validator::new();
}

/// A rule that compiled but cannot be evaluated here (a CEL function or macro kube-cel lacks):
/// the write is refused rather than let through unchecked.
#[derive(Debug, thiserror::Error)]
#[error("memapi cannot evaluate the CEL rule {rule:?} at {field}: {detail}")]
pub struct Unevaluable {
    rule: String,
    field: String,
    detail: String,
}

/// The rules of one version's schema.
#[derive(Debug, PartialEq, Eq)]
pub struct Rules {
    /// The whole schema, for the defaults applied before the rules run.
    schema: Value,
    root: Node,
}

/// A schema node with rules, or with descendants that have some.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    rules: Vec<Rule>,
    /// The schema's `type`, which the apiserver shows when a rule fails to evaluate.
    type_: String,
    properties: Vec<(String, Node)>,
    items: Option<Box<Node>>,
    /// The values of a map (`additionalProperties`).
    values: Option<Box<Node>>,
    correlation: Correlation,
}

/// How the items of a list find their old selves.
#[derive(Debug, PartialEq, Eq)]
enum Correlation {
    /// Atomic lists: no old item.
    None,
    /// `x-kubernetes-list-type: map`: the old item with the same keys.
    Keys(Vec<String>),
    /// `x-kubernetes-list-type: set`: the equal old item.
    Value,
}

#[derive(Debug, PartialEq, Eq)]
struct Rule {
    /// The node's schema with this rule alone: kube-cel converts the value by it.
    schema: Value,
    text: String,
    message: String,
    message_expression: bool,
    reason: Option<String>,
    field_path: Option<String>,
    transition: bool,
}

impl Rules {
    /// The rules of an `openAPIV3Schema` (None when it has none). `at` names the schema in
    /// its CRD, for the causes of rules that do not compile.
    pub fn of_schema(schema: &Value, at: &str) -> Result<Option<Self>, Vec<Cause>> {
        let mut refused = Vec::new();
        let root = Node::build(schema, at, &mut refused);
        if !refused.is_empty() {
            return Err(refused);
        }
        Ok(root.map(|root| Self { schema: schema.clone(), root }))
    }

    /// The causes of the rules `obj` breaks; `old` is the stored object on an update.
    pub fn check(&self, obj: &Value, old: Option<&Value>) -> Result<Vec<Cause>, Unevaluable> {
        let obj = kube_cel::apply_defaults(&self.schema, obj);
        let old = old.map(|o| kube_cel::apply_defaults(&self.schema, o));
        let mut causes = Vec::new();
        self.root.check(&obj, old.as_ref(), "", &mut causes)?;
        Ok(causes)
    }
}

impl Node {
    fn build(schema: &Value, at: &str, refused: &mut Vec<Cause>) -> Option<Self> {
        let rules = own_rules(schema, at, refused);
        let properties: Vec<(String, Node)> = schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, s)| Some((name.clone(), Self::build(s, &format!("{at}.properties[{name}]"), refused)?)))
            .collect();
        let items = schema.get("items").and_then(|s| Self::build(s, &format!("{at}.items"), refused));
        let values = schema
            .get("additionalProperties")
            .filter(|s| s.is_object())
            .and_then(|s| Self::build(s, &format!("{at}.additionalProperties"), refused));
        if rules.is_empty() && properties.is_empty() && items.is_none() && values.is_none() {
            return None;
        }
        Some(Self {
            rules,
            type_: text(schema, "type"),
            properties,
            items: items.map(Box::new),
            values: values.map(Box::new),
            correlation: Correlation::of(schema),
        })
    }

    fn check(&self, value: &Value, old: Option<&Value>, at: &str, causes: &mut Vec<Cause>) -> Result<(), Unevaluable> {
        let unchanged = old == Some(value);
        for rule in self.rules.iter().filter(|r| r.transition || !unchanged) {
            rule.check(value, old, at, &self.type_, causes)?;
        }
        match value {
            Value::Object(map) => self.check_fields(map, old, at, causes),
            Value::Array(list) => self.check_items(list, old, at, causes),
            _ => Ok(()),
        }
    }

    fn check_fields(
        &self,
        map: &Map<String, Value>,
        old: Option<&Value>,
        at: &str,
        causes: &mut Vec<Cause>,
    ) -> Result<(), Unevaluable> {
        for (name, node) in &self.properties {
            if let Some(value) = map.get(name) {
                let at = if at.is_empty() { name.clone() } else { format!("{at}.{name}") };
                node.check(value, old.and_then(|o| o.get(name)), &at, causes)?;
            }
        }
        let Some(node) = &self.values else { return Ok(()) };
        for (key, value) in map {
            node.check(value, old.and_then(|o| o.get(key)), &format!("{at}[{key}]"), causes)?;
        }
        Ok(())
    }

    fn check_items(
        &self,
        list: &[Value],
        old: Option<&Value>,
        at: &str,
        causes: &mut Vec<Cause>,
    ) -> Result<(), Unevaluable> {
        let Some(node) = &self.items else { return Ok(()) };
        let olds = old.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (i, item) in list.iter().enumerate() {
            node.check(item, self.correlation.find(olds, item), &format!("{at}[{i}]"), causes)?;
        }
        Ok(())
    }
}

/// The rules of one schema node, each compiled once to learn whether it reads `oldSelf`.
fn own_rules(schema: &Value, at: &str, refused: &mut Vec<Cause>) -> Vec<Rule> {
    let Some(defined) = schema.get("x-kubernetes-validations").and_then(Value::as_array) else {
        return Vec::new();
    };
    let bare = without_rules(schema);
    let mut rules = Vec::new();
    for (i, definition) in defined.iter().enumerate() {
        let compiled = kube_cel::compile_schema(&json!({"x-kubernetes-validations": [definition]}));
        match compiled.validations.into_iter().next() {
            Some(Ok(result)) => {
                let mut schema = bare.clone();
                schema["x-kubernetes-validations"] = json!([definition]);
                let rule = result.rule;
                rules.push(Rule {
                    schema,
                    message: rule.message.unwrap_or_default().trim().to_string(),
                    message_expression: rule.message_expression.is_some(),
                    reason: rule.reason,
                    field_path: rule.field_path,
                    transition: result.is_transition_rule,
                    text: rule.rule.trim().to_string(),
                });
            }
            Some(Err(e)) => refused.push(Cause::invalid_shown(
                &format!("{at}.x-kubernetes-validations[{i}].rule"),
                &go_rule(definition),
                &format!("compilation failed: {e}"),
            )),
            None => {}
        }
    }
    rules
}

/// A schema without any rules, its own or its descendants'.
fn without_rules(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| *k != "x-kubernetes-validations")
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "properties" => Value::Object(
                            v.as_object().into_iter().flatten().map(|(n, s)| (n.clone(), without_rules(s))).collect(),
                        ),
                        "items" | "additionalProperties" => without_rules(v),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A rule as the apiserver shows a refused one: its Go struct as JSON, in the struct's order.
fn go_rule(rule: &Value) -> String {
    let quoted = |key: &str| Value::String(text(rule, key)).to_string();
    let or_null = |key: &str| rule.get(key).cloned().unwrap_or(Value::Null).to_string();
    format!(
        r#"{{"Rule":{},"Message":{},"MessageExpression":{},"Reason":{},"FieldPath":{},"OptionalOldSelf":{}}}"#,
        quoted("rule"),
        quoted("message"),
        quoted("messageExpression"),
        or_null("reason"),
        quoted("fieldPath"),
        or_null("optionalOldSelf"),
    )
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

impl Correlation {
    fn of(schema: &Value) -> Self {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array).into_iter().flatten();
                Self::Keys(keys.filter_map(Value::as_str).map(String::from).collect())
            }
            Some("set") => Self::Value,
            _ => Self::None,
        }
    }

    fn find<'a>(&self, olds: &'a [Value], item: &Value) -> Option<&'a Value> {
        match self {
            Self::None => None,
            Self::Value => olds.iter().find(|old| *old == item),
            Self::Keys(keys) => olds.iter().find(|old| keys.iter().all(|k| old.get(k) == item.get(k))),
        }
    }
}

impl Rule {
    fn check(
        &self,
        value: &Value,
        old: Option<&Value>,
        at: &str,
        type_: &str,
        causes: &mut Vec<Cause>,
    ) -> Result<(), Unevaluable> {
        let Err(errors) = VALIDATOR.with(|v| v.validate(&self.schema, value, old)) else { return Ok(()) };
        for error in errors.iter() {
            causes.push(self.cause(error, value, at, type_)?);
        }
        Ok(())
    }

    fn cause(&self, error: &ValidationError, value: &Value, at: &str, type_: &str) -> Result<Cause, Unevaluable> {
        match error.kind {
            ErrorKind::ValidationFailure => Ok(self.failure(error, value, at)),
            ErrorKind::EvaluationError | ErrorKind::InvalidResult => {
                let detail = std::error::Error::source(error).map_or(error.message.clone(), |e| e.to_string());
                let about = if self.message.is_empty() { &self.text } else { &self.message };
                let shown = serde_json::to_string(type_).unwrap_or_default();
                Ok(Cause::invalid_shown(&shown_path(at), &shown, &format!("{detail} evaluating rule: {about}")))
            }
            _ => Err(Unevaluable { rule: self.text.clone(), field: shown_path(at), detail: error.message.clone() }),
        }
    }

    /// The cause of a rule that evaluated to false, by its reason. The value is shown only
    /// when it is a scalar and the message is not computed (a messageExpression may show it).
    fn failure(&self, error: &ValidationError, value: &Value, at: &str) -> Cause {
        let field = shown_path(&with_field_path(at, self.field_path.as_deref()));
        let message = match (self.message_expression, self.message.is_empty()) {
            (true, _) => error.message.clone(),
            (false, true) => format!("failed rule: {}", self.text),
            (false, false) => self.message.clone(),
        };
        let shown = match value {
            _ if self.message_expression => None,
            Value::Object(_) | Value::Array(_) => None,
            Value::String(s) => serde_json::to_string(s).ok(),
            scalar => Some(scalar.to_string()),
        };
        match (self.reason.as_deref(), shown) {
            (Some("FieldValueForbidden"), _) => Cause::forbidden(&field, &message),
            (Some("FieldValueRequired"), _) => Cause::required(&field, &message),
            (Some("FieldValueDuplicate"), Some(shown)) => {
                Cause::new("FieldValueDuplicate", &field, format!("Duplicate value: {shown}"))
            }
            (Some("FieldValueDuplicate"), None) => Cause::new("FieldValueDuplicate", &field, "Duplicate value"),
            (_, Some(shown)) => Cause::invalid_shown(&field, &shown, &message),
            (_, None) => Cause::new("FieldValueInvalid", &field, format!("Invalid value: {message}")),
        }
    }
}

/// A rule's `fieldPath` (`.spec.x`, `.labels['k']`, `.items[0]`) below the rule's node.
fn with_field_path(at: &str, field_path: Option<&str>) -> String {
    let Some(relative) = field_path.filter(|f| !f.is_empty()) else { return at.to_string() };
    let relative = relative.replace("['", "[").replace("']", "]");
    match (at.is_empty(), relative.strip_prefix('.')) {
        (true, Some(child)) => child.to_string(),
        (false, Some(_)) => format!("{at}{relative}"),
        (_, None) => format!("{at}{relative}"),
    }
}

/// A field path as the apiserver prints it; the object itself is `<nil>`.
fn shown_path(at: &str) -> String {
    if at.is_empty() { "<nil>".into() } else { at.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(schema: Value) -> Rules {
        Rules::of_schema(&schema, "spec.validation.openAPIV3Schema").unwrap().expect("rules")
    }

    fn messages(rules: &Rules, obj: Value, old: Option<Value>) -> Vec<(String, String)> {
        let causes = rules.check(&obj, old.as_ref()).unwrap();
        causes.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn list_map_items_meet_the_old_item_with_their_keys() {
        let pools = json!({"type": "object", "properties": {"pools": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}},
                      "x-kubernetes-validations": [{"rule": "self.size == oldSelf.size", "message": "fixed"}]},
        }}});
        let rules = rules(pools);
        let old = json!({"pools": [{"name": "a", "size": 1}, {"name": "b", "size": 2}]});
        let new = json!({"pools": [{"name": "b", "size": 2}, {"name": "a", "size": 3}, {"name": "c", "size": 9}]});
        assert_eq!(messages(&rules, new, Some(old)), [("pools[1]".into(), "Invalid value: fixed".into())]);
    }

    #[test]
    fn unchanged_values_keep_passing_rules_without_old_self() {
        let schema = json!({"type": "object", "properties": {
            "count": {"type": "integer", "x-kubernetes-validations": [{"rule": "self < 3", "message": "small"}]},
            "other": {"type": "integer"},
        }});
        let rules = rules(schema);
        let old = json!({"count": 5, "other": 1});
        assert!(messages(&rules, json!({"count": 5, "other": 2}), Some(old.clone())).is_empty());
        let changed = messages(&rules, json!({"count": 6}), Some(old));
        assert_eq!(changed, [("count".into(), "Invalid value: 6: small".into())]);
    }

    #[test]
    fn map_values_are_named_by_key_and_field_paths_extend_the_node() {
        let schema = json!({"type": "object", "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self != 'no'", "reason": "FieldValueForbidden", "message": "no no"}]}},
            "deep": {"type": "object", "properties": {"x": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.x < 5", "fieldPath": ".x"}]},
        }});
        let found = messages(&rules(schema), json!({"labels": {"k.x": "no"}, "deep": {"x": 9}}), None);
        let expected = [
            ("deep.x".to_string(), "Invalid value: failed rule: self.x < 5".to_string()),
            ("labels[k.x]".into(), "Forbidden: no no".into()),
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn rules_that_do_not_parse_refuse_the_schema() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string",
            "x-kubernetes-validations": [{"rule": "self ==", "message": "m"}]}}});
        let refused = Rules::of_schema(&schema, "spec.validation.openAPIV3Schema").unwrap_err();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "spec.validation.openAPIV3Schema.properties[a].x-kubernetes-validations[0].rule");
        let shown = r#"Invalid value: {"Rule":"self ==","Message":"m","MessageExpression":"","Reason":null,"FieldPath":"","OptionalOldSelf":null}: compilation failed"#;
        assert!(refused[0].message.starts_with(shown), "{}", refused[0].message);
    }

    #[test]
    fn schemas_without_rules_have_none() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert!(Rules::of_schema(&schema, "x").unwrap().is_none());
    }
}
