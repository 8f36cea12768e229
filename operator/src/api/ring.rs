//! The `DeploymentRing` resource: one ring of a software rollout across cells.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DNS_LABEL_PATTERN, DURATION_PATTERN, VERSION_PATTERN, WorkflowStatus};
use super::conditions::{Condition, MAX_CONDITIONS, MAX_MESSAGE_LENGTH, types};
use super::namespace::Tier;

/// Condition: a rollout is moving (batches being upgraded or the bake running). False with a
/// reason while paused, waiting for approval or for the upstream ring, and when done.
pub const PROGRESSING: &str = "Progressing";
/// Condition: every selected cell runs status.targetVersion.
pub const ROLLED_OUT: &str = "RolledOut";
/// Condition: the target version stayed healthy through minBakeTime and the gates; it is now
/// status.bakedVersion and downstream rings may take it.
pub const BAKED: &str = "Baked";
/// Condition: a gate failed and the rollout stopped here and downstream (abnormal-true).
pub const HALTED: &str = "Halted";

/// Most versions listed in status.cellsByVersion (newest first).
pub const MAX_VERSION_GROUPS: usize = 32;
/// Most cell names listed per version in status.cellsByVersion.
pub const MAX_LISTED_CELLS: usize = 100;

/// The per-step conditions of a ring that make it Ready.
pub const RING_STEPS: &[&str] = &[ROLLED_OUT, BAKED];
/// Every condition a DeploymentRing carries from first sight (all Unknown until evaluated).
pub const RING_CONDITIONS: &[&str] =
    &[types::READY, types::RECONCILING, types::STALLED, PROGRESSING, ROLLED_OUT, BAKED, HALTED];

const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Desired state of a deployment ring: which cells it holds, which version they should run,
/// and how fast and how safely to get there.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cellplane.io",
    version = "v1alpha1",
    kind = "DeploymentRing",
    plural = "deploymentrings",
    shortname = "ring",
    status = "DeploymentRingStatus",
    category = "cellplane",
    derive = "PartialEq",
    doc = "A DeploymentRing (short name ring) rolls a software version out to the cells its selector matches, batch by batch, checks health gates before each batch and during a bake, and publishes the version as baked for downstream rings. Rings are ordered by spec.order or chained with spec.upstream; a ring with followUpstream takes only versions that finished baking upstream.",
    printcolumn(
        name = "Order",
        type_ = "integer",
        json_path = ".spec.order",
        description = "Position in the rollout order"
    ),
    printcolumn(
        name = "Upstream",
        type_ = "string",
        json_path = ".spec.upstream",
        description = "Ring whose baked version this ring follows"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.targetVersion",
        description = "Version being rolled out"
    ),
    printcolumn(
        name = "Baked",
        type_ = "string",
        json_path = ".status.bakedVersion",
        description = "Newest version that finished baking here"
    ),
    printcolumn(
        name = "Batch",
        type_ = "integer",
        json_path = ".status.currentBatch",
        description = "Batch being rolled out"
    ),
    printcolumn(
        name = "Batches",
        type_ = "integer",
        json_path = ".status.totalBatches",
        description = "Batches in this rollout"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Rollout phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        description = "Rollout paused by a person",
        priority = 1
    ),
    printcolumn(
        name = "Baked Until",
        type_ = "date",
        json_path = ".status.bakedUntil",
        description = "When the current bake ends",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        description = "What the ring is waiting for or why it halted",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = ("!(has(self.order) && has(self.upstream))", "set at most one of order and upstream"))]
// "At least one and not both" rather than `a != b`: Kubernetes 1.25.0 estimates the cost of
// comparing two has() results as unbounded and refuses the CRD.
#[x_kube(validation = (
    "(has(self.version) || (has(self.followUpstream) && self.followUpstream)) && !(has(self.version) && has(self.followUpstream) && self.followUpstream)",
    "set exactly one of version or followUpstream: true"
))]
#[x_kube(validation = (
    "!(has(self.followUpstream) && self.followUpstream) || has(self.upstream) || (has(self.order) && self.order > 0)",
    "followUpstream needs an upstream ring: set upstream, or an order above 0"
))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRingSpec {
    /// Position in the rollout order, from 0 (first) to 1000. The upstream of a ring with an
    /// order is the ring with the next lower order. Unset, with no upstream: order 0.
    /// Mutually exclusive with upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub order: Option<i32>,

    /// Name of the DeploymentRing this ring follows. Mutually exclusive with order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub upstream: Option<String>,

    /// Cells in this ring, by their labels. An empty selector selects every cell. A cell belongs
    /// to one ring at most: a cell selected by two rings stalls both, and neither rolls.
    pub cell_selector: LabelSelector,

    /// Which tenants the ring's cells may hold; placement honours it. Unset: every tenant.
    #[serde(default)]
    pub admits: Admission,

    /// Synthetic traffic: one synthetic tenant per cell of the ring, probed continuously (mutual
    /// TLS handshake and a database round trip). Its success ratio and latency are metrics and
    /// feed synthetic gates.
    #[serde(default)]
    pub synthetic: SyntheticProbes,

    /// Version to roll out, e.g. 1.4.2. A newer version set mid-rollout supersedes the older
    /// one (its bake starts over). Set exactly one of version and followUpstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = VERSION_PATTERN))]
    pub version: Option<String>,

    /// When true, roll out whatever version finished baking in the upstream ring
    /// (its status.bakedVersion). Set exactly one of version and followUpstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_upstream: Option<bool>,

    /// Most cells upgraded at once: a count such as 2, or a percentage of the ring's cells
    /// such as 25% (rounded up, at least one cell).
    #[serde(default = "default_max_batch")]
    // nullable: false stops kube marking the int-or-string nullable, which would keep an
    // explicit null instead of applying the default.
    #[schemars(extend("pattern" = "^([1-9][0-9]?|100)%$", "maxLength" = 4, "nullable" = false))]
    // The pattern checks strings; the rule checks integers (int() of a percentage errors, which
    // `||` absorbs). Written without type(self) so client-side CEL evaluators agree.
    #[x_kube(validation = (
        "string(self).endsWith('%') || int(self) >= 1",
        "maxBatch must be at least 1 or a percentage from 1% to 100%"
    ))]
    pub max_batch: IntOrString,

    /// Pause after each batch before the gates are checked for the next, e.g. 5m or 1h30m.
    #[serde(default = "default_pause_between_batches")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub pause_between_batches: String,

    /// Least time the new version must run healthy in every cell of this ring before it counts
    /// as baked, e.g. 24h or 7d. The bake restarts when the target version changes.
    #[serde(default = "default_min_bake_time")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub min_bake_time: String,

    /// Health gates checked before each batch and during the bake. A failing gate halts the
    /// ring, and every ring downstream of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 16))]
    pub gates: Vec<Gate>,

    /// When true, a rollout does not start until spec.approval.version names the target
    /// version.
    #[serde(default)]
    pub manual_approval: bool,

    /// Approval of a rollout when manualApproval is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// When true, no new batch starts; the batch in flight finishes. Timers keep running.
    #[serde(default)]
    pub paused: bool,

    /// Longest a batch may take to upgrade its cells; past it the ring is Stalled, naming the
    /// cells that have not finished (the rollout keeps waiting for them), e.g. 30m.
    #[serde(default = "default_progress_deadline")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub progress_deadline: String,

    /// What happens when a gate fails or a cell upgrade fails: none (halt and leave the cells
    /// as they are) or automatic (halt and roll the changed batches back, newest first).
    #[serde(default)]
    pub rollback_policy: RollbackPolicy,
}

fn default_max_batch() -> IntOrString {
    IntOrString::Int(1)
}

fn default_pause_between_batches() -> String {
    "5m".to_owned()
}

fn default_min_bake_time() -> String {
    "1h".to_owned()
}

fn default_progress_deadline() -> String {
    "30m".to_owned()
}

/// Which tenants the cells of a ring may hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// Only synthetic tenants: a canary ring that carries no customer traffic (ring 0).
    #[serde(default)]
    pub synthetic_only: bool,

    /// Highest placement priority (spec.placement.priority, 0 to 1000) admitted. Unset: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_priority: Option<i32>,

    /// Service tiers admitted. Unset: every tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub tiers: Option<Vec<Tier>>,
}

/// Synthetic traffic for a ring's cells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyntheticProbes {
    /// Keep a synthetic tenant in each cell of the ring and probe it. Unset: on for a ring that
    /// admits only synthetic tenants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Time between two probes of a cell, e.g. 30s.
    #[serde(default = "default_probe_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub interval: String,
}

fn default_probe_interval() -> String {
    "30s".to_owned()
}

impl Default for SyntheticProbes {
    fn default() -> Self {
        SyntheticProbes { enabled: None, interval: default_probe_interval() }
    }
}

impl SyntheticProbes {
    /// Whether the ring keeps synthetic tenants, given what it admits.
    pub fn is_enabled(&self, admits: &Admission) -> bool {
        self.enabled.unwrap_or(admits.synthetic_only)
    }
}

/// What happens when a gate fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RollbackPolicy {
    /// Halt, and leave the cells as they are.
    #[default]
    None,
    /// Halt, and roll back the batches this rollout changed, newest first.
    Automatic,
}

/// A person's go-ahead for one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The version approved for rollout; must equal status.targetVersion for the rollout to
    /// start, so an approval never carries over to a later version.
    #[schemars(length(max = 64), regex(pattern = VERSION_PATTERN))]
    pub version: String,

    /// Who approved, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub approved_by: Option<String>,
}

/// A health check: after `wait`, the cells must become healthy within `window` and then stay
/// healthy for `stableFor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = ("self.kind != 'prometheus' || has(self.prometheus)", "a prometheus gate needs the prometheus settings"))]
#[x_kube(validation = ("self.kind == 'prometheus' || !has(self.prometheus)", "prometheus settings are only allowed on a prometheus gate"))]
#[x_kube(validation = ("self.kind == 'cellConditions' || !has(self.conditions)", "conditions are only allowed on a cellConditions gate"))]
#[x_kube(validation = ("self.kind == 'synthetic' || !has(self.synthetic)", "synthetic settings are only allowed on a synthetic gate"))]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Name of the gate, unique within the ring; shown when the gate fails.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// What the gate checks: cellConditions (the conditions of the batch's cells), synthetic
    /// (the synthetic probes of the batch's cells) or prometheus (a metrics query).
    pub kind: GateKind,

    /// Cell condition types that must all be True in every cell of the batch, for a
    /// cellConditions gate. Defaults to Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 316)))]
    pub conditions: Option<Vec<String>>,

    /// Thresholds of a synthetic gate. Unset: a success ratio of at least 0.99 and a p99
    /// latency of at most 1000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticGate>,

    /// Query and threshold, for a prometheus gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,

    /// Time to let the change settle before checking at all, e.g. 2m.
    #[serde(default = "default_wait")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub wait: String,

    /// Time after `wait` within which the cells must become healthy; otherwise the gate fails.
    #[serde(default = "default_window")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub window: String,

    /// Time the cells must then stay healthy without interruption for the gate to pass.
    #[serde(default = "default_stable_for")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub stable_for: String,

    /// Time between two checks, e.g. 30s.
    #[serde(default = "default_check_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub interval: String,
}

fn default_check_interval() -> String {
    "30s".to_owned()
}

/// Thresholds of a synthetic gate, over the probes of the last `interval` × 10 (at least the
/// last ten probes of each cell).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyntheticGate {
    /// Least share of successful probes, from 0 to 1.
    #[serde(default = "default_min_success_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_success_ratio: f64,

    /// Highest 99th-percentile probe latency, in milliseconds.
    #[serde(default = "default_max_p99_millis")]
    #[schemars(range(min = 1, max = 600000))]
    pub max_p99_millis: i32,
}

impl Default for SyntheticGate {
    fn default() -> Self {
        SyntheticGate { min_success_ratio: default_min_success_ratio(), max_p99_millis: default_max_p99_millis() }
    }
}

fn default_min_success_ratio() -> f64 {
    0.99
}

fn default_max_p99_millis() -> i32 {
    1000
}

fn default_wait() -> String {
    "0s".to_owned()
}

fn default_window() -> String {
    "10m".to_owned()
}

fn default_stable_for() -> String {
    "5m".to_owned()
}

/// What a gate checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum GateKind {
    /// The conditions of the batch's cells.
    CellConditions,
    /// The synthetic probes of the batch's cells (their success ratio and p99 latency).
    Synthetic,
    /// A Prometheus query.
    Prometheus,
}

/// A Prometheus query compared with a threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusGate {
    /// Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090.
    /// Unset: the operator's default Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = "^https?://"))]
    pub address: Option<String>,

    /// PromQL instant query. `{cell}` is replaced by each cell's name, so the query is
    /// evaluated per cell of the batch; every returned sample must satisfy the comparison.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// How a sample is compared with threshold: lt, le, gt or ge (healthy when
    /// `sample <comparison> threshold`).
    pub comparison: Comparison,

    /// Threshold the samples are compared with, e.g. 0.01 for a 1% error ratio.
    pub threshold: f64,
}

/// Comparison of a sample with a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    /// Healthy when the sample is less than the threshold.
    Lt,
    /// Healthy when the sample is less than or equal to the threshold.
    Le,
    /// Healthy when the sample is greater than the threshold.
    Gt,
    /// Healthy when the sample is greater than or equal to the threshold.
    Ge,
}

/// Rollout phase of the ring: Pending, WaitingForUpstream, WaitingForApproval, Progressing,
/// Paused, Baking, Baked, Halted or RollingBack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RingPhase {
    /// Pending: seen, nothing resolved yet.
    Pending,
    /// WaitingForUpstream: following the upstream ring, which has not baked a newer version.
    WaitingForUpstream,
    /// WaitingForApproval: manualApproval is set and approval.version is not the target.
    WaitingForApproval,
    /// Progressing: upgrading cells batch by batch.
    Progressing,
    /// Paused: spec.paused is true.
    Paused,
    /// Baking: every cell runs the target; waiting out minBakeTime with gates healthy.
    Baking,
    /// Baked: the target version finished baking; nothing to do until a new version arrives.
    Baked,
    /// Halted: a gate or a cell upgrade failed, or a person aborted the rollout; see the Halted
    /// condition. Nothing rolls out here or downstream until a new version or a retry.
    Halted,
    /// RollingBack: a gate failed and rollbackPolicy is automatic.
    RollingBack,
}

/// Observed state of a DeploymentRing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRingStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Rollout phase of the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RingPhase>,

    /// Version this ring is rolling out, resolved from spec.version or the upstream ring's
    /// bakedVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub target_version: Option<String>,

    /// Version every selected cell ran at the end of the last completed rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub current_version: Option<String>,

    /// Newest version that finished baking in this ring; downstream rings with
    /// followUpstream roll out this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub baked_version: Option<String>,

    /// 1-based number of the batch being rolled out; 0 before the first batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub current_batch: Option<i32>,

    /// Batches the current rollout is split into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub total_batches: Option<i32>,

    /// Selected cells grouped by the version they run, newest first (at most 32 versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["version".into()]))]
    #[schemars(length(max = MAX_VERSION_GROUPS))]
    pub cells_by_version: Vec<VersionCells>,

    /// When the current rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// The health gates of the current rollout: verdict and last value of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 16))]
    pub gates: Vec<GateStatus>,

    /// The approval the current rollout started on, when manualApproval is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalStatus>,

    /// What the last rollback put back, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,

    /// When the current bake ends, if no gate fails first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked_until: Option<Time>,

    /// Current state: Ready, Reconciling, Stalled, Progressing, RolledOut, Baked and Halted
    /// (naming the failed gate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = MAX_CONDITIONS))]
    pub conditions: Vec<Condition>,

    /// Checkpoint of the ring's rollout workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStatus>,
}

/// The selected cells that run one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCells {
    /// The software version (a cell's status.runningVersion).
    #[schemars(length(max = 64))]
    pub version: String,
    /// How many selected cells run it.
    pub count: i32,
    /// Names of the cells that run it (the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_CELLS), inner(length(max = 63)))]
    pub cells: Vec<String>,
}

/// Where a gate stands: settling, waiting for health within its window, stabilizing (healthy,
/// counting stableFor), passed, watching (checked through the bake) or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GateVerdict {
    /// Settling: within `wait`, not checked yet.
    Settling,
    /// Waiting: not healthy yet; must become healthy before the window ends.
    Waiting,
    /// Stabilizing: healthy; must stay so for stableFor.
    Stabilizing,
    /// Passed: healthy for stableFor.
    Passed,
    /// Watching: checked through the bake; healthy.
    Watching,
    /// Failed: not healthy within the window.
    Failed,
}

/// The verdict and last value of one gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// The gate's name.
    #[schemars(length(max = 63))]
    pub name: String,
    /// Where the gate stands.
    pub verdict: GateVerdict,
    /// What the last check measured, e.g. `eu-1: 1.00 ok, p99 12 ms`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub value: String,
    /// The batch the gate checks (0: the bake).
    pub batch: i32,
    /// When the verdict last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// The approval a rollout started on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// The approved version.
    #[schemars(length(max = 64))]
    pub version: String,
    /// Who approved (spec.approval.approvedBy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub approved_by: Option<String>,
    /// When the rollout saw the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Time>,
}

/// What a rollback put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The version rolled back.
    #[schemars(length(max = 64))]
    pub from: String,
    /// Why.
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub reason: String,
    /// The cells put back, each with the version it runs again, newest batch first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_CELLS))]
    pub cells: Vec<CellVersion>,
}

/// A cell and a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellVersion {
    /// The cell's name.
    #[schemars(length(max = 63))]
    pub cell: String,
    /// Its version.
    #[schemars(length(max = 64))]
    pub version: String,
}
