//! JSON merge patch, strategic merge patch (as merge patch) and JSON patch.
//! Server-side apply lives in `managed.rs`.

use serde_json::Value;

use crate::error::ApiError;

/// The patch types of the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    /// Handled as a JSON merge patch: lists are replaced, `$patch` directives are not
    /// interpreted. Faithful for custom resources (the apiserver refuses strategic
    /// merge for them) and for the built-in fields cellplane patches.
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        match mime {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }
}

/// Applies a merge or JSON patch to a copy of `target`.
pub fn apply_patch(target: &Value, kind: PatchType, body: &Value) -> Result<Value, ApiError> {
    let mut doc = target.clone();
    match kind {
        PatchType::Merge | PatchType::Strategic => {
            if !body.is_object() {
                return Err(ApiError::BadRequest("merge patch body must be a JSON object".into()));
            }
            json_patch::merge(&mut doc, body);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(body.clone())
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
            let ops = lenient_tests(&doc, ops);
            json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::Invalid {
                message: format!("the server rejected our request due to an error in our request: {e}"),
                kind: String::new(),
                group: String::new(),
                name: String::new(),
                causes: Vec::new(),
            })?;
        }
        PatchType::Apply => {
            return Err(ApiError::internal("apply patches are handled by managed.rs"));
        }
    }
    Ok(doc)
}

/// The apiserver's JSON-patch library lets `test` of a missing path against `null`
/// pass; kube's finalizer helper relies on that when adding the first finalizer.
fn lenient_tests(doc: &Value, ops: json_patch::Patch) -> json_patch::Patch {
    let kept = ops
        .0
        .into_iter()
        .filter(|op| match op {
            json_patch::PatchOperation::Test(t) => !(t.value.is_null() && doc.pointer(t.path.as_str()).is_none()),
            _ => true,
        })
        .collect();
    json_patch::Patch(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = apply_patch(&doc, PatchType::Merge, &json!({"a": {"b": null, "d": 3}, "l": [3]})).unwrap();
        assert_eq!(out, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_test_of_missing_path_against_null_passes() {
        let doc = json!({"metadata": {"name": "x"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        let out = apply_patch(&doc, PatchType::Json, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["f"]));
        let failing = json!([{"op": "test", "path": "/metadata/name", "value": "y"}]);
        assert!(apply_patch(&doc, PatchType::Json, &failing).is_err());
    }
}
