//! Secrets and ConfigMaps: key format, total size, the keys a Secret's type requires, and
//! immutability.

use k8s_openapi::ByteString;
use serde_json::{Map, Value};

use super::{names, text};
use crate::error::{ApiError, Cause};

/// The most a Secret's or a ConfigMap's data may hold.
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Keys a Secret of a type must have.
const REQUIRED_KEYS: [(&str, &[&str]); 4] = [
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
];

fn entries<'a>(obj: &'a Value, field: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    obj.get(field).and_then(Value::as_object).into_iter().flatten()
}

/// Decoded size of base64 values, or the 400 the apiserver answers for bad base64.
fn decoded_len(kind: &str, value: &Value) -> Result<usize, ApiError> {
    serde_json::from_value::<ByteString>(value.clone())
        .map(|b| b.0.len())
        .map_err(|e| ApiError::BadRequest(format!("{kind} in version \"v1\" cannot be handled as a {kind}: {e}")))
}

fn key_causes(field: &str, key: &str) -> impl Iterator<Item = Cause> + use<> {
    let (at, key) = (format!("{field}[{key}]"), key.to_string());
    names::config_map_key(&key).into_iter().map(move |m| Cause::invalid(&at, &key, &m))
}

/// What decoding a written Secret does before validation: `stringData` is stored as base64
/// `data` (stringData wins) and never returned, and a missing `type` becomes `Opaque`.
pub fn decode_secret(obj: &mut Value) {
    let Some(secret) = obj.as_object_mut() else { return };
    if secret.get("type").and_then(Value::as_str).is_none_or(str::is_empty) {
        secret.insert("type".into(), "Opaque".into());
    }
    let Some(string_data) = secret.remove("stringData") else { return };
    let Value::Object(data) = secret.entry("data").or_insert_with(|| Value::Object(Map::new())) else { return };
    for (key, value) in string_data.as_object().into_iter().flatten() {
        let bytes = ByteString(value.as_str().unwrap_or_default().as_bytes().to_vec());
        data.insert(key.clone(), serde_json::to_value(bytes).unwrap_or_default());
    }
}

pub fn secret(old: Option<&Value>, obj: &Value) -> Result<Vec<Cause>, ApiError> {
    let type_ = text(obj, "/type");
    let mut causes = Vec::new();
    if let Some(old) = old {
        if text(old, "/type") != type_ {
            causes.push(Cause::invalid("type", type_, "field is immutable"));
        }
        causes.extend(immutable(old, obj, &["data"]));
    }
    let mut size = 0;
    for (key, value) in entries(obj, "data") {
        causes.extend(key_causes("data", key));
        size += decoded_len("Secret", value)?;
    }
    if size > MAX_DATA_BYTES {
        causes.push(Cause::too_long("data", MAX_DATA_BYTES));
    }
    let required = REQUIRED_KEYS.iter().filter(|(t, _)| *t == type_).flat_map(|(_, keys)| keys.iter());
    for key in required.filter(|k| obj.pointer(&format!("/data/{k}")).is_none()) {
        causes.push(Cause::required(&format!("data[{key}]"), ""));
    }
    Ok(causes)
}

pub fn config_map(old: Option<&Value>, obj: &Value) -> Result<Vec<Cause>, ApiError> {
    let mut causes = old.map(|old| immutable(old, obj, &["data", "binaryData"])).unwrap_or_default();
    let mut size = 0;
    for (key, value) in entries(obj, "data") {
        causes.extend(key_causes("data", key));
        if obj.pointer(&format!("/binaryData/{}", key.replace('~', "~0").replace('/', "~1"))).is_some() {
            causes.push(Cause::invalid(&format!("data[{key}]"), key, "duplicate of key present in binaryData"));
        }
        size += value.as_str().map_or(0, str::len);
    }
    for (key, value) in entries(obj, "binaryData") {
        causes.extend(key_causes("binaryData", key));
        size += decoded_len("ConfigMap", value)?;
    }
    if size > MAX_DATA_BYTES {
        // The apiserver names no field, and prints the empty path as `[]`.
        causes.push(Cause::too_long("[]", MAX_DATA_BYTES));
    }
    Ok(causes)
}

/// Updates of an object marked `immutable: true` may not change these fields.
fn immutable(old: &Value, new: &Value, fields: &[&str]) -> Vec<Cause> {
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return Vec::new();
    }
    let mut causes = Vec::new();
    if new.get("immutable") != Some(&Value::Bool(true)) {
        causes.push(Cause::forbidden("immutable", "field is immutable when `immutable` is set"));
    }
    for field in fields.iter().filter(|f| old.get(**f) != new.get(**f)) {
        causes.push(Cause::forbidden(field, "field is immutable when `immutable` is set"));
    }
    causes
}
