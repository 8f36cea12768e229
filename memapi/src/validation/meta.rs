//! `metadata` rules shared by every kind (ValidateObjectMeta).

use serde_json::Value;

use super::{each, names};
use crate::error::Cause;
use crate::kinds::{NameRule, Origin, ResourceKind};

const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;
/// Finalizers built-in kinds accept without a domain prefix.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// Name, labels, annotations and finalizers of a new object.
pub fn object_meta(obj: &Value, kind: &ResourceKind) -> Vec<Cause> {
    let name = crate::meta::name(obj).unwrap_or_default();
    let rule = match kind.names {
        NameRule::Subdomain => names::dns1123_subdomain,
        NameRule::Label => names::dns1123_label,
        NameRule::Dns1035 => names::dns1035_label,
        NameRule::PathSegment => names::path_segment_name,
    };
    each("metadata.name", name, rule(name)).chain(object_meta_update(obj, kind)).collect()
}

/// What is checked again on every update (the name cannot change).
pub fn object_meta_update(obj: &Value, kind: &ResourceKind) -> Vec<Cause> {
    [labels(obj), annotations(obj), finalizers(obj, kind)].concat()
}

fn string_map(obj: &Value, field: &str) -> Vec<(String, String)> {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn labels(obj: &Value) -> Vec<Cause> {
    let field = "metadata.labels";
    string_map(obj, "labels")
        .into_iter()
        .flat_map(|(k, v)| each(field, &k, names::qualified_name(&k)).chain(each(field, &v, names::label_value(&v))))
        .collect()
}

fn annotations(obj: &Value) -> Vec<Cause> {
    let field = "metadata.annotations";
    let entries = string_map(obj, "annotations");
    let mut causes: Vec<Cause> =
        entries.iter().flat_map(|(k, _)| each(field, k, names::qualified_name(&k.to_lowercase()))).collect();
    let size: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > ANNOTATIONS_MAX_BYTES {
        causes.push(Cause::too_long(field, ANNOTATIONS_MAX_BYTES));
    }
    causes
}

/// Built-in kinds index the field (`metadata.finalizers[0]`) and accept only standard or
/// domain-qualified names; custom kinds check the format alone, on the unindexed field.
fn finalizers(obj: &Value, kind: &ResourceKind) -> Vec<Cause> {
    let builtin = kind.origin == Origin::BuiltIn;
    let mut causes = Vec::new();
    for (i, f) in crate::meta::finalizers(obj).iter().enumerate() {
        let field = if builtin { format!("metadata.finalizers[{i}]") } else { "metadata.finalizers".into() };
        causes.extend(each(&field, f, names::qualified_name(f)));
        let standard = f.contains('/') || STANDARD_FINALIZERS.contains(&f.as_str());
        if builtin && !standard {
            causes.push(Cause::invalid(
                &field,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    causes
}
