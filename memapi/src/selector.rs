//! Label and field selectors with the apiserver's syntax and matching rules.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::ApiError;
use crate::validation::names;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    /// Also matches objects without the label, as in Kubernetes.
    NotEq(String, String),
    In(String, BTreeSet<String>),
    /// Also matches objects without the label, as in Kubernetes.
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; all requirements must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let bad = |why: &str| ApiError::BadRequest(format!("unable to parse requirement: {why}: {input:?}"));
        let mut reqs = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(label_key(key.trim()).map_err(|e| bad(&e))?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEq(
                    label_key(k.trim()).map_err(|e| bad(&e))?,
                    label_value(v.trim()).map_err(|e| bad(&e))?,
                )
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Eq(label_key(k.trim()).map_err(|e| bad(&e))?, label_value(v.trim()).map_err(|e| bad(&e))?)
            } else if let Some((k, set)) = split_set_op(term, " notin ") {
                Requirement::NotIn(label_key(k).map_err(|e| bad(&e))?, set_values(set).map_err(|e| bad(&e))?)
            } else if let Some((k, set)) = split_set_op(term, " in ") {
                Requirement::In(label_key(k).map_err(|e| bad(&e))?, set_values(set).map_err(|e| bad(&e))?)
            } else {
                Requirement::Exists(label_key(term).map_err(|e| bad(&e))?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => !get(k).is_some_and(|v| set.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( … )`.
fn split_terms(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
}

fn split_set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let (k, rest) = term.split_once(op)?;
    Some((k.trim(), rest.trim()))
}

fn set_values(set: &str) -> Result<BTreeSet<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| "expected a parenthesised set of values".to_string())?;
    inner.split(',').map(|v| label_value(v.trim())).collect::<Result<_, _>>()
}

/// A label key as label validation accepts it (the apiserver's message on failure).
fn label_key(key: &str) -> Result<String, String> {
    match names::qualified_name(key).into_iter().next() {
        None => Ok(key.to_string()),
        Some(why) => Err(format!("invalid label key {key:?}: {why}")),
    }
}

fn label_value(value: &str) -> Result<String, String> {
    match names::label_value(value).into_iter().next() {
        None => Ok(value.to_string()),
        Some(why) => Err(format!("invalid label value {value:?}: {why}")),
    }
}

/// A parsed `fieldSelector` (`a=b`, `a==b`, `a!=b`, comma-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every field against the selectable ones of the kind.
    pub fn parse(input: &str, selectable: &[String]) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in input.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::BadRequest(format!("invalid selector: '{input}'; can't understand '{term}'")));
            };
            let field = field.trim();
            let known =
                matches!(field, "metadata.name" | "metadata.namespace") || selectable.iter().any(|s| s == field);
            if !known {
                return Err(ApiError::BadRequest(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut cur = Some(obj);
            for part in field.split('.') {
                cur = cur.and_then(|v| v.get(part));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "type": "Opaque"})
    }

    #[test]
    fn label_operators_follow_kubernetes_semantics() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let none = obj(json!({}));
        let m = |s: &str, o: &Value| LabelSelector::parse(s).unwrap().matches(o);
        assert!(m("app=web", &o) && m("app==web", &o) && !m("app=db", &o));
        assert!(m("app!=db", &o) && m("app!=db", &none) && !m("app!=web", &o));
        assert!(m("app in (web, db)", &o) && !m("app in (db)", &o) && !m("app in (web)", &none));
        assert!(m("app notin (db)", &o) && m("app notin (web)", &none) && !m("app notin (web)", &o));
        assert!(m("app", &o) && !m("app", &none) && m("!app", &none) && !m("!app", &o));
        assert!(m("app in (web,db),tier=front,!gone", &o));
        assert!(!m("app in (web,db),tier=back", &o));
        assert!(m("", &none));
    }

    #[test]
    fn malformed_label_selectors_are_rejected() {
        for bad in ["app in web", "-bad=x", "app=in valid", "a/b/c=d"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_check_known_fields() {
        let o = obj(json!({}));
        let fields = vec!["type".to_string()];
        let m = |s: &str| FieldSelector::parse(s, &fields).unwrap().matches(&o);
        assert!(m("metadata.name=a") && !m("metadata.name!=a") && m("metadata.namespace==ns"));
        assert!(m("type=Opaque,metadata.name=a") && !m("type=kubernetes.io/tls"));
        assert!(FieldSelector::parse("spec.x=1", &fields).is_err());
        assert!(FieldSelector::parse("nonsense", &fields).is_err());
    }
}
