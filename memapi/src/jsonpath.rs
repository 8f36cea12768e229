//! The JSONPath subset CRD printer columns use: `.a.b`, `.a[0]`, `.a[*]`, `.a['key.with.dots']`
//! and filters `.a[?(@.type=="Ready")]` (`==` and `!=` on a field path). Like the
//! apiserver's column printer, only the first match is used; missing keys match nothing.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter { path: Vec<String>, equal: bool, value: String },
}

/// The first value `path` selects in `obj`, or None (also for a path it cannot parse).
pub fn first(obj: &Value, path: &str) -> Option<Value> {
    let steps = parse(path.trim().trim_start_matches('{').trim_end_matches('}'))?;
    select(obj, &steps).into_iter().next().cloned()
}

fn select<'a>(obj: &'a Value, steps: &[Step]) -> Vec<&'a Value> {
    let Some((step, rest)) = steps.split_first() else { return vec![obj] };
    let next: Vec<&Value> = match step {
        Step::Field(name) => obj.get(name).into_iter().collect(),
        Step::Index(i) => obj.get(*i).into_iter().collect(),
        Step::All => children(obj),
        Step::Filter { path, equal, value } => children(obj)
            .into_iter()
            .filter(|item| (field_text(item, path).as_deref() == Some(value)) == *equal)
            .collect(),
    };
    next.into_iter().flat_map(|v| select(v, rest)).collect()
}

fn children(obj: &Value) -> Vec<&Value> {
    match obj {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => map.values().collect(),
        _ => Vec::new(),
    }
}

/// A filter operand as text (strings bare, other values as JSON).
fn field_text(item: &Value, path: &[String]) -> Option<String> {
    let v = path.iter().try_fold(item, |cur, key| cur.get(key))?;
    Some(v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))
}

fn parse(mut rest: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end > 0 {
                steps.push(Step::Field(after[..end].to_string()));
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = closing_bracket(after)?;
            steps.push(bracket(&after[..end])?);
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Where the bracket opened just before `s` closes, skipping quoted text.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).or_else(|| s.strip_prefix('\'')?.strip_suffix('\''))
}

fn bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Some(key) = unquote(inner) {
        return Some(Step::Field(key.to_string()));
    }
    if let Ok(i) = inner.parse() {
        return Some(Step::Index(i));
    }
    let condition = inner.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (lhs, rhs, equal) = match condition.split_once("==") {
        Some((l, r)) => (l, r, true),
        None => condition.split_once("!=").map(|(l, r)| (l, r, false))?,
    };
    let path = lhs.trim().strip_prefix("@.")?.split('.').map(String::from).collect();
    let value = unquote(rhs).unwrap_or(rhs.trim()).to_string();
    Some(Step::Filter { path, equal, value })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn selects_fields_indexes_and_filtered_conditions() {
        let obj = json!({
            "metadata": {"labels": {"cellplane.io/ring": "canary"}},
            "spec": {"size": 3, "pools": [{"name": "a"}, {"name": "b"}]},
            "status": {"conditions": [
                {"type": "Reconciling", "status": "False"},
                {"type": "Ready", "status": "True", "message": "all good"},
            ]},
        });
        assert_eq!(first(&obj, ".spec.size"), Some(json!(3)));
        assert_eq!(first(&obj, ".spec.pools[1].name"), Some(json!("b")));
        assert_eq!(first(&obj, ".spec.pools[*].name"), Some(json!("a")));
        assert_eq!(first(&obj, ".metadata.labels['cellplane.io/ring']"), Some(json!("canary")));
        assert_eq!(first(&obj, r#".status.conditions[?(@.type=="Ready")].status"#), Some(json!("True")));
        assert_eq!(first(&obj, ".status.conditions[?(@.type!='Ready')].status"), Some(json!("False")));
        assert_eq!(first(&obj, r#".status.conditions[?(@.type=="Stalled")].status"#), None);
        assert_eq!(first(&obj, ".spec.missing"), None);
        assert_eq!(first(&obj, "{.spec.size}"), Some(json!(3)));
        assert_eq!(first(&obj, "spec"), None);
    }
}
