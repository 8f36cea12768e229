//! Installing a release (an immutable set of a service's manifests at one version) into one
//! cell's Kubernetes cluster, as Flux's kustomize-controller does it:
//!
//! 1. [`render`] once, from plain YAML with `${var}` substitution or a Helm chart rendered by the
//!    real `helm template`: the objects in apply order, namespaced and labelled for the cell.
//! 2. [`apply`] (or [`apply_all`]) each with server-side apply as field manager `cellplane`.
//! 3. [`assess`] the inventory by kstatus rules ([`health`]) until healthy or failed.
//! 4. [`prune`] what the previous inventory had and this one lacks ([`stale`]), touching only
//!    what is cellplane's for the cell.
//! 5. Now and then, [`drift`] finds hand edits; a forced apply corrects them.
//! 6. [`remove`] tears the release down.
//!
//! Every function is idempotent and safe to call again after a crash: the cell's entity
//! workflow calls them from durable steps. None waits on its own except [`apply_all`], whose
//! wait the caller bounds; a caller's timeout may drop any of these futures (a Helm process is
//! killed with it). Errors say whether retrying can help ([`ReleaseError::is_retryable`]).

mod cluster;
mod drift;
mod error;
mod health;
mod helm;
mod object;
mod prune;
mod render;
mod substitute;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use cluster::{Action, Applied, CellCluster, apply, apply_all};
pub use drift::{Drifted, drift};
pub use error::{FieldConflict, ReleaseError};
pub use health::{Assessed, Health, HealthReport, assess, health};
pub use object::{ObjectRef, stale};
pub use prune::{Kept, PruneReport, prune, remove};
pub use render::render;

/// The field manager of everything a release applies.
pub use crate::api::MANAGER;
pub use crate::cell::routes::{CELL_LABEL, MANAGED_BY};

/// An annotation that turns `${var}` substitution off for one object of a plain-manifests
/// release (value `disabled`), for objects that carry `${...}` meant for someone else.
pub const SUBSTITUTE_ANNOTATION: &str = "cellplane.io/substitute";

/// Where a release's manifests come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// Plain multi-document YAML (e.g. `helm template` or kustomize output) with `${var}`
    /// substitution as Flux's post-build substitution does it: `${name}` and
    /// `${name:=default}`; `$${name}` escapes; unknown variables without a default are an error
    /// naming them. The text of each document is substituted as written (comments too), so
    /// `"${version}"` stays a string and `${replicas}` becomes a number.
    Manifests { yaml: String },
    /// A Helm chart from a chart repository: an HTTP(S) repository with index.yaml, or
    /// `oci://...` (the chart is then `repository/chart`); rendered by the real `helm template`
    /// (HELM env var, else `helm` on PATH) with `values`, CRDs included and test hooks left out.
    /// The release is named after the chart.
    Helm { repository: String, chart: String, version: String, values: serde_json::Value },
}

/// The per-cell values every source gets. Plain manifests see them as `${cell}`, `${region}`,
/// `${domain}`, `${version}`, `${provider}`, `${namespace}`, `${kubernetesVersion}` and
/// `${key}` for each extra; Helm charts as `.Values.cellplane.*` (the same names), which win
/// over a `cellplane` map in the user's values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellValues {
    pub cell: String,
    pub region: String,
    /// The DNS domain of the cell's front door.
    pub domain: String,
    /// The release's version.
    pub version: String,
    pub provider: String,
    /// Where namespaced objects without a namespace go.
    pub namespace: String,
    /// The cell cluster's Kubernetes version, e.g. `1.37.0` (Helm's `.Capabilities.KubeVersion`).
    pub kubernetes_version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl CellValues {
    /// The variables by name; an extra never replaces a built-in one.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let mut variables = self.extra.clone();
        let builtin = [
            ("cell", &self.cell),
            ("region", &self.region),
            ("domain", &self.domain),
            ("version", &self.version),
            ("provider", &self.provider),
            ("namespace", &self.namespace),
            ("kubernetesVersion", &self.kubernetes_version),
        ];
        variables.extend(builtin.into_iter().map(|(name, value)| (name.to_string(), value.clone())));
        variables
    }
}
