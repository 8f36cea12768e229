//! Deleting a release's objects: what a new version dropped ([`prune`]) and everything at
//! teardown ([`remove`]). Only what is cellplane's for the cell is deleted: labelled
//! `cellplane.io/cell: <cell>` and applied by field manager `cellplane`. Anything else with the
//! same identity (made by hand or by another tool after cellplane's was deleted) is kept and
//! reported with why.

use std::fmt;

use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::object::deletion_stages;
use super::{CELL_LABEL, CellCluster, MANAGER, ObjectRef, ReleaseError};

/// An object left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub object: ObjectRef,
    pub why: String,
}

/// `ConfigMap svc/legacy: not applied by cellplane (managers: kubectl-client-side-apply)`.
impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object.display(), self.why)
    }
}

/// What a prune or a removal did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Deleted now, or already gone.
    pub deleted: Vec<ObjectRef>,
    /// Still there: being deleted (finalizers), or waiting for an earlier stage to be gone.
    /// Call again until this is empty.
    pub remaining: Vec<ObjectRef>,
    /// Left alone: not cellplane's for this cell.
    pub kept: Vec<Kept>,
}

impl PruneReport {
    pub fn is_done(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// Deletes `stale` objects (see [`super::stale`]) that are cellplane's for `cell`.
#[tracing::instrument(skip_all, fields(cell = cell, objects = stale.len()))]
pub async fn prune(cluster: &CellCluster, stale: &[ObjectRef], cell: &str) -> Result<PruneReport, ReleaseError> {
    delete_in_stages(cluster, stale, cell).await
}

/// Teardown: deletes every object of `inventory` that is cellplane's for `cell`. Stage by
/// stage: the release's custom resources first (their controllers, in the release, are still
/// there to run their finalizers), then the rest, then Namespaces and CRDs; a stage starts once
/// the one before is gone. Waiting is the caller's: call again until the report is done.
#[tracing::instrument(skip_all, fields(cell = cell, objects = inventory.len()))]
pub async fn remove(cluster: &CellCluster, inventory: &[ObjectRef], cell: &str) -> Result<PruneReport, ReleaseError> {
    delete_in_stages(cluster, inventory, cell).await
}

async fn delete_in_stages(
    cluster: &CellCluster,
    objects: &[ObjectRef],
    cell: &str,
) -> Result<PruneReport, ReleaseError> {
    let mut report = PruneReport::default();
    for stage in deletion_stages(objects) {
        let blocked = !report.remaining.is_empty();
        for reference in stage {
            delete_one(cluster, &reference, cell, blocked, &mut report).await?;
        }
    }
    tracing::debug!(
        deleted = report.deleted.len(),
        remaining = report.remaining.len(),
        kept = report.kept.len(),
        "deleted"
    );
    Ok(report)
}

async fn delete_one(
    cluster: &CellCluster,
    reference: &ObjectRef,
    cell: &str,
    blocked: bool,
    report: &mut PruneReport,
) -> Result<(), ReleaseError> {
    let Some((live, scoped)) = cluster.get(reference).await? else {
        report.deleted.push(reference.clone());
        return Ok(());
    };
    if let Err(why) = owned_by(&live, cell) {
        tracing::info!(object = %reference, %why, "left alone");
        report.kept.push(Kept { object: reference.clone(), why });
        return Ok(());
    }
    if blocked || live.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        report.remaining.push(reference.clone());
        return Ok(());
    }
    let (api, _) = cluster.api(&scoped).await?;
    // Only the object that was inspected: a new one made meanwhile under the name is not ours.
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: live.pointer("/metadata/uid").and_then(Value::as_str).map(String::from),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&scoped.name, &params).await {
        Ok(either) if either.is_left() => {
            tracing::info!(object = %reference, "deleting");
            report.remaining.push(reference.clone());
        }
        Ok(_) => {
            tracing::info!(object = %reference, "deleted");
            report.deleted.push(reference.clone());
        }
        // Gone, or its kind is (its CRD was deleted): either way, done.
        Err(e) if crate::kube_error::code(&e) == Some(404) => report.deleted.push(reference.clone()),
        Err(e) => return Err(cluster.request_error(reference, "deleting", e)),
    }
    Ok(())
}

/// Whether a live object is cellplane's for `cell`; else why not.
fn owned_by(live: &Value, cell: &str) -> Result<(), String> {
    let mut managers: Vec<&str> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|fields| fields.iter().filter_map(|f| f.get("manager").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    managers.sort_unstable();
    managers.dedup();
    if !managers.contains(&MANAGER) {
        let managers = if managers.is_empty() { "none recorded".to_string() } else { managers.join(", ") };
        return Err(format!("not applied by cellplane (managers: {managers})"));
    }
    let label = format!("/metadata/labels/{}", CELL_LABEL.replace('/', "~1"));
    match live.pointer(&label).and_then(Value::as_str) {
        Some(owner) if owner == cell => Ok(()),
        Some(other) => Err(format!("belongs to cell {other}")),
        None => Err(format!("not labelled for a cell ({CELL_LABEL} is unset)")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn live(managers: &[&str], cell: Option<&str>) -> Value {
        let fields: Vec<Value> = managers.iter().map(|m| json!({ "manager": m, "operation": "Apply" })).collect();
        let labels = cell.map(|c| json!({ "cellplane.io/cell": c })).unwrap_or(json!({}));
        json!({ "metadata": { "name": "x", "labels": labels, "managedFields": fields } })
    }

    #[test]
    fn only_what_cellplane_applied_for_the_cell_is_its_own() {
        assert_eq!(owned_by(&live(&["cellplane", "kube-controller-manager"], Some("eu-1")), "eu-1"), Ok(()));
        assert_eq!(
            owned_by(&live(&["kubectl-client-side-apply"], None), "eu-1"),
            Err("not applied by cellplane (managers: kubectl-client-side-apply)".into())
        );
        assert_eq!(owned_by(&live(&["cellplane"], Some("us-1")), "eu-1"), Err("belongs to cell us-1".into()));
        assert_eq!(
            owned_by(&live(&["cellplane"], None), "eu-1"),
            Err("not labelled for a cell (cellplane.io/cell is unset)".into())
        );
        assert_eq!(
            owned_by(&live(&[], Some("eu-1")), "eu-1"),
            Err("not applied by cellplane (managers: none recorded)".into())
        );
    }
}
