//! What kube-apiserver 1.25 knows about the size of data in a schema: the CEL type of each
//! schema node with the most elements (characters, items, properties) it may hold, and the
//! fallbacks it assumes where the schema sets no maxLength, maxItems or maxProperties.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The largest request the API server accepts; unbounded data is assumed to fill it.
pub const MAX_REQUEST_SIZE: u64 = 3 * 1024 * 1024;
/// An unbounded data element: room for a whole request, less the two quotes or brackets.
const WHOLE_REQUEST: u64 = MAX_REQUEST_SIZE - 2;
/// Longest JSON duration and date-time strings (the format bounds them, not maxLength).
const MAX_DURATION_SIZE: u64 = 32;
const MAX_DATE_TIME_SIZE: u64 = 32;
const DATE_SIZE: u64 = 12;

/// The CEL type a schema node gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    /// x-kubernetes-int-or-string.
    Dyn,
    List,
    Map,
    Object,
}

/// A schema node as CEL sees it.
#[derive(Clone, Debug)]
pub struct Decl {
    pub kind: Kind,
    /// Characters of a string (counted as 4 bytes each), items of a list, entries of a map.
    pub max_elements: u64,
    pub fields: BTreeMap<String, Decl>,
    /// Items of a list, values of a map.
    pub elem: Option<Box<Decl>>,
}

impl Decl {
    fn new(kind: Kind, max_elements: u64) -> Self {
        Self { kind, max_elements, fields: BTreeMap::new(), elem: None }
    }

    /// Map keys: declared as plain strings without a size (0 elements), as 1.25 does.
    pub fn map_key() -> Self {
        Self::new(Kind::String, 0)
    }

    /// The declaration of `schema`; `resource_root` for the root of a resource, where
    /// apiVersion, kind and metadata.name are always visible. None for what CEL cannot see.
    pub fn of(schema: &Value, resource_root: bool) -> Option<Self> {
        if is_int_or_string(schema) {
            return Some(Self::new(Kind::Dyn, WHOLE_REQUEST));
        }
        let schema = if resource_root { with_type_and_object_meta(schema) } else { Cow::Borrowed(schema) };
        let decl = match type_of(&schema) {
            "boolean" => Self::new(Kind::Bool, 0),
            "integer" => Self::new(Kind::Int, 0),
            "number" => Self::new(Kind::Double, 0),
            "string" => string_decl(&schema),
            "array" => {
                let items = schema.get("items")?;
                let max = uint(&schema, "maxItems").unwrap_or(WHOLE_REQUEST / (min_size(items) + 1));
                Self { elem: Some(Box::new(Self::of(items, is_embedded(items))?)), ..Self::new(Kind::List, max) }
            }
            "object" => match schema.get("additionalProperties").filter(|v| v.is_object()) {
                Some(values) => {
                    let max = uint(&schema, "maxProperties").unwrap_or(WHOLE_REQUEST / (min_size(values) + 6));
                    Self { elem: Some(Box::new(Self::of(values, is_embedded(values))?)), ..Self::new(Kind::Map, max) }
                }
                None => Self { fields: field_decls(&schema), ..Self::new(Kind::Object, 0) },
            },
            _ => return None,
        };
        Some(decl)
    }
}

fn string_decl(schema: &Value) -> Decl {
    let max_length = uint(schema, "maxLength");
    match schema.get("format").and_then(Value::as_str) {
        Some("byte") => Decl::new(Kind::Bytes, max_length.unwrap_or(WHOLE_REQUEST)),
        Some("duration") => Decl::new(Kind::Duration, MAX_DURATION_SIZE),
        Some("date") => Decl::new(Kind::Timestamp, DATE_SIZE),
        Some("date-time") => Decl::new(Kind::Timestamp, MAX_DATE_TIME_SIZE),
        // maxLength counts characters; the estimate counts bytes, up to 4 a character. An enum
        // does not bound the estimate in 1.25.
        _ => Decl::new(Kind::String, max_length.map_or(WHOLE_REQUEST, |n| n.saturating_mul(4))),
    }
}

fn field_decls(schema: &Value) -> BTreeMap<String, Decl> {
    let properties = schema.get("properties").and_then(Value::as_object).into_iter().flatten();
    properties.filter_map(|(name, prop)| Some((name.clone(), Decl::of(prop, is_embedded(prop))?))).collect()
}

/// The root of a resource always offers apiVersion, kind and metadata.name/generateName, as
/// plain (unbounded) strings unless the schema declares them.
fn with_type_and_object_meta(schema: &Value) -> Cow<'_, Value> {
    let typed = |pointer: &str, ty: &str| schema.pointer(pointer).map(type_of) == Some(ty);
    if typed("/properties/kind", "string")
        && typed("/properties/apiVersion", "string")
        && typed("/properties/metadata/properties/name", "string")
        && typed("/properties/metadata/properties/generateName", "string")
    {
        return Cow::Borrowed(schema);
    }
    let mut schema = schema.clone();
    let string = json!({"type": "string"});
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("kind".into(), string.clone());
        properties.insert("apiVersion".into(), string.clone());
        let metadata = json!({"type": "object", "properties": {"name": string, "generateName": string}});
        properties.insert("metadata".into(), metadata);
    }
    Cow::Owned(schema)
}

/// The fewest bytes a value of `schema` takes in JSON (1.25's estimateMinSizeJSON): what an
/// unbounded list, map or rule scope is divided by to find how many fit in one request.
pub fn min_size(schema: &Value) -> u64 {
    match type_of(schema) {
        "boolean" => 4,
        "number" | "integer" => 1,
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("duration") => 3,
            Some("date") => DATE_SIZE,
            Some("date-time") => 21,
            _ => 2,
        },
        "array" => 2,
        "object" => 2 + required_fields_size(schema),
        // An int-or-string ("0"), or a node without a type.
        _ => 1,
    }
}

/// Bytes of the required properties without a default: name, two quotes, colon, comma, value.
fn required_fields_size(schema: &Value) -> u64 {
    let required = schema.get("required").and_then(Value::as_array).into_iter().flatten();
    required
        .filter_map(Value::as_str)
        .filter_map(|name| Some((name, schema.pointer(&format!("/properties/{name}"))?)))
        .filter(|(_, prop)| prop.get("default").is_none())
        .map(|(name, prop)| name.len() as u64 + min_size(prop) + 4)
        .sum()
}

/// How many values of a child of `schema` there can be per value of `schema`: maxItems of a
/// list, maxProperties of a map, 1 for an object; None when the list or map is unbounded.
pub fn children_per_value(schema: &Value) -> Option<u64> {
    match type_of(schema) {
        "array" => uint(schema, "maxItems"),
        "object" if schema.get("additionalProperties").is_some_and(Value::is_object) => uint(schema, "maxProperties"),
        _ => Some(1),
    }
}

pub fn is_embedded(schema: &Value) -> bool {
    schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true))
}

fn is_int_or_string(schema: &Value) -> bool {
    schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
}

fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn uint(schema: &Value, key: &str) -> Option<u64> {
    schema.get(key).and_then(Value::as_i64).map(|n| n.max(0) as u64)
}
