//! The `Release` resource: what a cell runs at one version of the service.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DNS_LABEL_PATTERN, DURATION_PATTERN, VERSION_PATTERN};
use super::conditions::{Condition, MAX_CONDITIONS, types};

/// Most cells a Release's status names (the count is exact).
pub const MAX_LISTED_CELLS: usize = 50;

/// Every condition a Release carries from first sight.
pub const RELEASE_CONDITIONS: &[&str] = &[types::READY, types::RECONCILING, types::STALLED];

/// An immutable, named set of the service's manifests at one version: a Helm chart from a chart
/// repository, or plain multi-document YAML. A Cell (spec.version) or a DeploymentRing
/// (spec.version) names the version; exactly one Release has it. Cells install it into their own
/// cluster, wait until it is healthy and prune what the previous release had and this one lacks.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cellplane.io",
    version = "v1alpha1",
    kind = "Release",
    plural = "releases",
    shortname = "rel",
    status = "ReleaseStatus",
    category = "cellplane",
    derive = "PartialEq",
    doc = "A Release is the service's software at one version, as every cell runs it: a Helm chart from a chart repository or plain manifests with ${var} substitution, with per-cell values. Releases are immutable: publish a new version as a new Release.",
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.version",
        description = "The version rings and cells name"
    ),
    printcolumn(
        name = "Cells",
        type_ = "integer",
        json_path = ".status.cellCount",
        description = "Cells running this release"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "integer",
        json_path = ".status.healthyCells",
        description = "Cells where it is healthy"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        description = "Why the release cannot be used",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = ("self == oldSelf", "a Release is immutable: publish a new version as a new Release"))]
#[x_kube(validation = ("(has(self.helm) || has(self.manifests)) && !(has(self.helm) && has(self.manifests))", "set exactly one of helm or manifests"))]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSpec {
    /// The version this release is, e.g. 1.4.2: what Cells and DeploymentRings name in their
    /// spec.version. At most one Release may have a version.
    #[schemars(length(min = 1, max = 64), regex(pattern = VERSION_PATTERN))]
    pub version: String,

    /// A Helm chart from a chart repository, rendered by Helm with the values below and the
    /// cell's own (under `cellplane`: cell, region, domain, version, provider, namespace,
    /// kubernetesVersion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSource>,

    /// Plain multi-document YAML (e.g. `helm template` or kustomize output). `${var}` is
    /// replaced by the cell's value (cell, region, domain, version, provider, namespace,
    /// kubernetesVersion) or a spec.substitute entry; `${var:=default}` has a default; `$${`
    /// is a literal `${`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 524288))]
    pub manifests: Option<String>,

    /// Extra variables for `${var}` in the manifests (at most 64; values at most 4096 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub substitute: BTreeMap<String, String>,

    /// The namespace of the cell's cluster that the release's namespaced objects go to when
    /// they name none. Sim cells share the operator's cluster: theirs is `<namespace>-<cell>`.
    #[serde(default = "default_namespace")]
    #[schemars(length(min = 1, max = 40), regex(pattern = DNS_LABEL_PATTERN))]
    pub namespace: String,

    /// The Service (in the release's namespace) and port that tenants' routes send traffic to:
    /// the service's front door. Unset: tenants' routes name a Service of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_door: Option<FrontDoor>,

    /// How long a cell may take to make the release healthy before the install or upgrade
    /// fails (e.g. 10m).
    #[serde(default = "default_health_timeout")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub health_timeout: String,

    /// Take over fields another field manager owns in the cells' clusters (server-side apply
    /// with force). Off: such a conflict fails the install, naming the field and the manager.
    #[serde(default)]
    pub force: bool,

    /// How often a cell checks that its objects are as the release applied them; what was
    /// changed by hand is reported (an Event and the cell's status name the objects) and
    /// applied again. `0s`: never.
    #[serde(default = "default_drift_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub drift_interval: String,
}

fn default_drift_interval() -> String {
    "10m".into()
}

fn default_namespace() -> String {
    "service".into()
}

fn default_health_timeout() -> String {
    "5m".into()
}

/// A chart in a Helm chart repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmSource {
    /// The chart repository: an HTTP(S) repository with an index.yaml, or `oci://host/path`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = "^(https?|oci)://"))]
    pub repository: String,
    /// The chart's name in the repository.
    #[schemars(length(min = 1, max = 253))]
    pub chart: String,
    /// The chart version, exactly (no ranges: a release is immutable).
    #[schemars(length(min = 1, max = 64), regex(pattern = VERSION_PATTERN))]
    pub chart_version: String,
    /// Values for the chart, as YAML (the cell's own are added under `cellplane`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub values: Option<String>,
}

/// The Service and port of the service's front door.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontDoor {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub service: String,
    /// Its port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Observed state of a Release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (the release can be installed: its version is its own), Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = MAX_CONDITIONS))]
    pub conditions: Vec<Condition>,

    /// Cells running this release.
    #[serde(default)]
    pub cell_count: i32,

    /// Cells where it is healthy.
    #[serde(default)]
    pub healthy_cells: i32,

    /// The cells running it, by name (at most 50; cellCount is exact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_CELLS), inner(length(max = 63)))]
    pub cells: Vec<String>,
}
