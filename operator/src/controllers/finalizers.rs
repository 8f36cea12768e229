//! The finalizer on every cellplane object: teardown runs before the object goes.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::ReconcileError;

pub const FINALIZER: &str = "cellplane.io/teardown";

/// Adds the finalizer if missing. Returns true when it was added (the write re-triggers us).
pub async fn ensure<K>(api: &Api<K>, obj: &K) -> Result<bool, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(false);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch(api, obj, finalizers).await?;
    Ok(true)
}

/// Removes the finalizer; an object that is already gone is fine.
pub async fn remove<K>(api: &Api<K>, obj: &K) -> Result<(), ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let finalizers: Vec<String> = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match patch(api, obj, finalizers).await {
        Err(ReconcileError::Kube(kube::Error::Api(status))) if status.code == 404 => Ok(()),
        other => other,
    }
}

async fn patch<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<(), ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.meta().name.as_deref().ok_or(ReconcileError::MissingField("metadata.name"))?;
    // The resourceVersion makes a concurrent change to the list a conflict, not an overwrite.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": obj.meta().resource_version }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}
