//! What the apiserver validates before it stores an object: metadata of every kind (name
//! format per kind, labels, annotations, finalizers), and the kinds cellplane writes:
//! Events (both APIs), Ingresses, Secrets and ConfigMaps. Failures are 422 Invalid with one
//! `field: message` cause per problem, worded as the apiserver words them.

mod data;
mod event;

pub use data::decode_secret;
mod ingress;
mod meta;
pub mod names;
#[cfg_attr(not(feature = "cel"), path = "no_rules.rs")]
mod rules;

pub use rules::Rules;

use serde_json::Value;

use crate::error::{ApiError, Cause};
use crate::kinds::ResourceKind;

/// Checks a new object (its name already chosen).
pub fn on_create(kind: &ResourceKind, obj: &Value) -> Result<(), ApiError> {
    let causes = match (kind.group.as_str(), kind.plural.as_str()) {
        ("events.k8s.io", "events") => event::strict_create(obj, kind),
        ("", "events") => event::legacy_with_meta(obj, kind),
        _ => [meta::object_meta(obj, kind), spec(kind, None, obj)?, cel(kind, None, obj)?].concat(),
    };
    verdict(kind, obj, causes)
}

/// Checks the new state of an updated object (main resource).
pub fn on_update(kind: &ResourceKind, old: &Value, new: &Value) -> Result<(), ApiError> {
    let causes = match (kind.group.as_str(), kind.plural.as_str()) {
        ("events.k8s.io", "events") => event::strict_update(old, new),
        ("", "events") => event::legacy(new),
        _ => [meta::object_meta_update(new, kind), spec(kind, Some(old), new)?, cel(kind, Some(old), new)?].concat(),
    };
    verdict(kind, new, causes)
}

/// Checks an object whose status was written (the rules see the whole object).
pub fn on_status_update(kind: &ResourceKind, old: &Value, new: &Value) -> Result<(), ApiError> {
    verdict(kind, new, cel(kind, Some(old), new)?)
}

/// The CEL rules of a custom kind's schema.
fn cel(kind: &ResourceKind, old: Option<&Value>, obj: &Value) -> Result<Vec<Cause>, ApiError> {
    let Some(rules) = &kind.rules else { return Ok(Vec::new()) };
    rules.check(obj, old).map_err(|e| ApiError::internal(e.to_string()))
}

/// Kind-specific rules beyond metadata.
fn spec(kind: &ResourceKind, old: Option<&Value>, obj: &Value) -> Result<Vec<Cause>, ApiError> {
    Ok(match (kind.group.as_str(), kind.plural.as_str()) {
        ("", "secrets") => data::secret(old, obj)?,
        ("", "configmaps") => data::config_map(old, obj)?,
        ("networking.k8s.io", "ingresses") => ingress::ingress(obj),
        _ => Vec::new(),
    })
}

fn verdict(kind: &ResourceKind, obj: &Value, causes: Vec<Cause>) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    // Both Event APIs are one kind to the apiserver, the core one, and it reports it so.
    let group = if kind.plural == "events" { "" } else { kind.group.as_str() };
    let name = crate::meta::name(obj).unwrap_or_default();
    Err(ApiError::invalid(&kind.kind, group, name, causes))
}

/// A string field, empty when absent.
fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// One cause per message of a format check.
fn each(field: &str, value: &str, messages: Vec<String>) -> impl Iterator<Item = Cause> + use<> {
    let (field, value) = (field.to_string(), value.to_string());
    messages.into_iter().map(move |m| Cause::invalid(&field, &value, &m))
}
