//! The `Cell` resource: one self-contained slice of infrastructure.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DNS_LABEL_PATTERN, SecretReference, VERSION_PATTERN, WorkflowStatus};
use super::conditions::{Condition, MAX_CONDITIONS, MAX_MESSAGE_LENGTH, types};

/// Condition: the cloud network (VPC, subnets, routing) exists and matches the spec.
pub const NETWORK_READY: &str = "NetworkReady";
/// Condition: the cell's Kubernetes control plane exists at the requested version.
pub const CLUSTER_READY: &str = "ClusterReady";
/// Condition: every node pool exists with the requested size bounds.
pub const NODE_POOLS_READY: &str = "NodePoolsReady";
/// Condition: the cell's software components run spec.version and are healthy.
pub const COMPONENTS_READY: &str = "ComponentsReady";

/// The per-step conditions of a Cell, in the order provisioning makes them True.
pub const CELL_STEPS: &[&str] = &[NETWORK_READY, CLUSTER_READY, NODE_POOLS_READY, COMPONENTS_READY];
/// Every condition a Cell carries from first sight (all Unknown until evaluated).
pub const CELL_CONDITIONS: &[&str] = &[
    types::READY,
    types::RECONCILING,
    types::STALLED,
    NETWORK_READY,
    CLUSTER_READY,
    NODE_POOLS_READY,
    COMPONENTS_READY,
];

/// IPv4 CIDR with a prefix length between /8 and /28 (the range cloud networks accept).
pub const CIDR_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([89]|1[0-9]|2[0-8])$";

/// Longest cloud resource id or self link in a status (an ARN is at most 2048; ids are shorter).
const MAX_CLOUD_ID_LENGTH: usize = 2048;

/// A Kubernetes minor version such as `1.31`.
pub const KUBERNETES_VERSION_PATTERN: &str = r"^1\.[0-9]{2}$";

/// DNS subdomain, used for domains and hosts.
const DNS_SUBDOMAIN_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Desired state of a Cell: one self-contained slice of infrastructure (its own cloud account
/// or project, network, Kubernetes cluster, database and ingress) that tenant namespaces are
/// placed into. The Cell's metadata.labels are what DeploymentRing and Namespace cell
/// selectors match, e.g. `cellplane.io/ring: canary` or `cellplane.io/tier: critical`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cellplane.io",
    version = "v1alpha1",
    kind = "Cell",
    plural = "cells",
    status = "CellStatus",
    category = "cellplane",
    derive = "PartialEq",
    doc = "A Cell is one self-contained slice of infrastructure: its own cloud account or project, network, Kubernetes cluster, database and ingress. Tenant namespaces are placed into cells, and DeploymentRings roll software versions out to them. The cell name is used in cloud resource names and hostnames, so it must be a DNS label.",
    validation = ("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')", "metadata.name must be a DNS label: at most 63 characters and no dots"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider", description = "Cloud provider"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region", description = "Cloud region"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version", description = "Software version the cell should run"),
    printcolumn(name = "Running", type_ = "string", json_path = ".status.runningVersion", description = "Software version the cell runs"),
    printcolumn(name = "Namespaces", type_ = "integer", json_path = ".status.capacityUsed.namespaces", description = "Namespaces placed in the cell"),
    printcolumn(name = "Cordoned", type_ = "boolean", json_path = ".spec.cordoned", description = "No new namespaces are placed", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].message", description = "What the cell is waiting for or why it failed", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = ("self.provider != 'aws' || has(self.aws)", "spec.aws is required for the aws provider"))]
#[x_kube(validation = ("self.provider != 'gcp' || has(self.gcp)", "spec.gcp is required for the gcp provider"))]
#[serde(rename_all = "camelCase")]
pub struct CellSpec {
    /// Cloud provider that hosts the cell: aws, gcp, or sim (an in-process simulator for
    /// tests and sandboxes). Immutable.
    #[x_kube(validation = ("self == oldSelf", "provider is immutable"))]
    pub provider: Provider,

    /// Cloud region of the cell, e.g. eu-west-1 (aws) or europe-west1 (gcp). Immutable.
    #[x_kube(validation = ("self == oldSelf", "region is immutable"))]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub region: String,

    /// The cell's cloud network.
    pub network: NetworkSpec,

    /// The cell's Kubernetes cluster.
    pub cluster: ClusterSpec,

    /// How much tenant load the cell may hold. Placement never exceeds it.
    pub capacity: CapacitySpec,

    /// Software version the cell should run, e.g. 1.4.2. A DeploymentRing selecting this cell
    /// sets it during a rollout; status.runningVersion shows what actually runs.
    #[schemars(length(max = 64), regex(pattern = VERSION_PATTERN))]
    pub version: String,

    /// Secret with the cloud credentials the operator uses for this cell's account or
    /// project: for aws the keys `aws_access_key_id`, `aws_secret_access_key` and optionally
    /// `aws_session_token`; for gcp a service-account key under `credentials.json`. Without
    /// it the operator's own identity is used (IRSA or the default chain on AWS, Application
    /// Default Credentials or Workload Identity on Google Cloud), through `spec.aws.roleArn`
    /// when set. Ignored for sim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// The cell's AWS account and IAM roles. Required when provider is aws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSpec>,

    /// The cell's Google Cloud project and network. Required when provider is gcp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpSpec>,

    /// The cell's PostgreSQL server that holds tenant databases (one login role and one
    /// database per tenant). When unset, tenants of a sim cell get a simulated database (their
    /// DatabaseReady condition says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSpec>,

    /// How tenant endpoints of this cell are exposed.
    pub ingress: IngressSpec,

    /// When true, no new namespaces are placed into this cell; the ones already in it stay
    /// and keep being served and upgraded.
    #[serde(default)]
    pub cordoned: bool,
}

/// Cloud provider of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// In-process simulator for tests and sandboxes.
    Sim,
}

/// An IAM role ARN, e.g. arn:aws:iam::123456789012:role/cell-eu-1.
const ROLE_ARN_PATTERN: &str = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$";

/// The AWS side of a cell: each cell is its own account, reached by assuming a role in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSpec {
    /// A role in the cell's account that the operator assumes with STS for every call about
    /// this cell (the operator's own identity must be allowed to assume it). Unset: the
    /// operator's identity (or credentialsSecretRef) acts directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 600), regex(pattern = ROLE_ARN_PATTERN))]
    pub role_arn: Option<String>,
    /// The IAM role the EKS control plane uses (trusts eks.amazonaws.com, with
    /// AmazonEKSClusterPolicy).
    #[schemars(length(max = 600), regex(pattern = ROLE_ARN_PATTERN))]
    pub cluster_role_arn: String,
    /// The IAM role of the managed node groups' nodes (trusts ec2.amazonaws.com, with
    /// AmazonEKSWorkerNodePolicy, AmazonEKS_CNI_Policy, AmazonEC2ContainerRegistryReadOnly).
    #[schemars(length(max = 600), regex(pattern = ROLE_ARN_PATTERN))]
    pub node_role_arn: String,
}

/// The Google Cloud side of a cell: its project and the VPC network its GKE cluster joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSpec {
    /// Project id, e.g. acme-cell-eu-1.
    #[schemars(length(min = 6, max = 30), regex(pattern = r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"))]
    pub project: String,
    /// VPC network the cluster joins; `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub network: Option<String>,
}

/// The cell's cloud network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// IPv4 CIDR block of the cell's network (VPC), e.g. 10.20.0.0/16; prefix length
    /// between /8 and /28. Immutable: a network's primary range cannot be changed in place.
    #[x_kube(validation = ("self == oldSelf", "network.cidr is immutable"))]
    #[schemars(length(max = 18), regex(pattern = CIDR_PATTERN))]
    pub cidr: String,

    /// Put the nodes in private subnets that reach the internet through a NAT gateway (aws;
    /// gcp cells join an existing network and use its NAT). Off: the nodes get public
    /// addresses in public subnets. Immutable, like the network.
    #[serde(default)]
    #[x_kube(validation = ("self == oldSelf", "network.natGateway is immutable"))]
    pub nat_gateway: bool,
}

/// The cell's Kubernetes cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Kubernetes minor version of the cell's cluster, e.g. 1.31. Raising it upgrades the
    /// control plane first, then the node pools one at a time.
    #[schemars(length(max = 16), regex(pattern = KUBERNETES_VERSION_PATTERN))]
    pub kubernetes_version: String,

    /// Node pools of the cell's cluster, keyed by name.
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(min = 1, max = 16))]
    pub node_pools: Vec<NodePool>,
}

/// A group of identical nodes that scales between minNodes and maxNodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = ("self.minNodes <= self.maxNodes", "minNodes must not be greater than maxNodes"))]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// Name of the node pool, unique within the cell; a DNS label of at most 40 characters.
    #[schemars(length(min = 1, max = 40), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Provider machine type, e.g. m6i.xlarge (aws) or n2-standard-4 (gcp); any value for sim.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub instance_type: String,

    /// Fewest nodes the pool scales down to.
    #[serde(default = "default_min_nodes")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_nodes: i32,

    /// Most nodes the pool scales up to.
    #[schemars(range(min = 1, max = 1000))]
    pub max_nodes: i32,

    /// Kubernetes labels put on the pool's nodes (at most 64; values at most 63 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub labels: BTreeMap<String, String>,
}

fn default_min_nodes() -> i32 {
    1
}

/// How much tenant load a cell may hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacitySpec {
    /// Most namespaces placed into the cell.
    #[schemars(range(min = 0, max = 100000))]
    pub max_namespaces: i32,

    /// Most capacity units placed into the cell. A unit is the load of one standard-tier
    /// namespace; critical-tier namespaces weigh more. Unset: only maxNamespaces limits
    /// placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_units: Option<i32>,
}

/// Connection to the cell's PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Host name or IP address of the server.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// TCP port of the server.
    #[serde(default = "default_db_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Database the operator connects to for administration (creating tenant roles and
    /// databases).
    #[serde(default = "default_db_name")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,

    /// Secret with the administrator credentials, keys `username` and `password`.
    pub admin_secret_ref: SecretReference,
}

fn default_db_port() -> i32 {
    5432
}

fn default_db_name() -> String {
    "postgres".to_owned()
}

/// How tenant endpoints of a cell are exposed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// DNS domain under which tenant endpoints of this cell are published; fills `{domain}`
    /// in a Namespace's endpoint hostname template (default `{namespace}.{cell}.{domain}`),
    /// e.g. cells.example.com gives acme.eu-west-1a.cells.example.com.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub domain: String,

    /// IngressClass used for tenant routes inside the cell. Unset: the cell cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,

    /// Annotations put on every tenant ingress route, e.g. for the load balancer (at most 64;
    /// values at most 4096 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,

    /// The Gateway that tenant TLSRoutes attach to, used when the cell's cluster serves Gateway
    /// API TLSRoutes (else tenant routes are Ingresses). Unset: the Gateway `cellplane` in the
    /// operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayReference>,

    /// Secret (key `kubeconfig`) to reach the cell's own Kubernetes cluster for tenant routes.
    /// Unset: an aws or gcp cell's EKS or GKE cluster, reached with a short-lived token the
    /// operator makes from its cloud credentials; for sim cells, the operator's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretReference>,
}

/// A Gateway API Gateway (and optionally one of its listeners) that tenant TLSRoutes attach to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayReference {
    /// Name of the Gateway. Default: cellplane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Namespace of the Gateway. Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Listener of the Gateway (a TLS listener in Passthrough mode). Default: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// Lifecycle phase of the cell: Pending, Provisioning, Ready, Updating, Upgrading, Degraded,
/// Deleting or Failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CellPhase {
    /// Pending: seen, no work started yet.
    Pending,
    /// Provisioning: cloud resources are being created.
    Provisioning,
    /// Ready: provisioned, at spec.version and healthy.
    Ready,
    /// Updating: a spec change (cluster, node pools, ingress) is being applied.
    Updating,
    /// Upgrading: moving to a new spec.version.
    Upgrading,
    /// Degraded: provisioned, but a health check fails.
    Degraded,
    /// Deleting: cloud resources are being torn down.
    Deleting,
    /// Failed: stopped on an error that needs a person; see the Stalled condition.
    Failed,
}

/// Observed state of a Cell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase of the cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CellPhase>,

    /// Current state: Ready, Reconciling, Stalled, NetworkReady, ClusterReady, NodePoolsReady,
    /// ComponentsReady (and Deleting while being deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = MAX_CONDITIONS))]
    pub conditions: Vec<Condition>,

    /// Ids of the cloud resources created for this cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<CloudResources>,

    /// URL of the cell cluster's Kubernetes API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,

    /// Software version the cell's components run; differs from spec.version during an upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub running_version: Option<String>,

    /// Capacity currently taken by namespaces placed into the cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_used: Option<CapacityUsage>,

    /// Checkpoint of the cell's entity workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStatus>,

    /// The synthetic probes of the cell, when a ring probes it (written by the prober, field
    /// manager cellplane-synthetic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticStatus>,

    /// The release the cell runs in its cluster, and its health there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<CellRelease>,
}

/// Most objects of a release a cell's status lists.
pub const MAX_INVENTORY: usize = 512;

/// The release a cell runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellRelease {
    /// Its version.
    #[schemars(length(max = 64))]
    pub version: String,
    /// The Release object it came from.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Whether it is healthy in the cell's cluster: Healthy, Progressing or Failed.
    pub health: ReleaseHealth,
    /// The objects that are not healthy and why, e.g. `Deployment service/frontend: 1/3 available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub message: Option<String>,
    /// The objects it applied, as `group/version/Kind/namespace/name`: what the next release
    /// prunes against (nothing else in the cluster is ever deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_INVENTORY), inner(length(max = 512)))]
    pub inventory: Vec<String>,
    /// What the last check for changes made by hand found and applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
}

impl CellRelease {
    /// How people read it: `1.1.0 Healthy`, or `1.2.0 Failed: Deployment service/frontend: 0/2 available`.
    pub fn summary(&self) -> String {
        match &self.message {
            Some(why) if self.health != ReleaseHealth::Healthy => format!("{} {:?}: {why}", self.version, self.health),
            _ => format!("{} {:?}", self.version, self.health),
        }
    }
}

/// Health of a release in a cell's cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReleaseHealth {
    /// Progressing: applied, not yet healthy.
    #[default]
    Progressing,
    /// Healthy: every workload rolled out, every object present.
    Healthy,
    /// Failed: not healthy within the release's healthTimeout, or a workload failed.
    Failed,
}

/// The last check of a cell's release objects against what was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// When it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The objects found changed by hand (and applied again), with what changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(max = 1024)))]
    pub corrected: Vec<String>,
}

/// The recent synthetic probes of a cell: a mutual-TLS handshake with its synthetic tenant's
/// endpoint and a round trip to its database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyntheticStatus {
    /// The synthetic tenant probed (`<name>.<account>`).
    #[schemars(length(max = 127))]
    pub tenant: String,
    /// Probes that succeeded, of the recent ones.
    #[schemars(range(min = 0))]
    pub succeeded: i32,
    /// Probes that failed, of the recent ones.
    #[schemars(range(min = 0))]
    pub failed: i32,
    /// 99th percentile of the recent probes' latency, in milliseconds.
    #[schemars(range(min = 0))]
    pub p99_millis: i32,
    /// The last failure, if the last probe failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub last_error: Option<String>,
    /// When the cell was last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl SyntheticStatus {
    pub fn probes(&self) -> i32 {
        self.succeeded + self.failed
    }

    /// Share of the recent probes that succeeded (0 without probes).
    pub fn success_ratio(&self) -> f64 {
        if self.probes() == 0 { 0.0 } else { f64::from(self.succeeded) / f64::from(self.probes()) }
    }
}

/// Ids of the cloud resources created for a cell, as the provider names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudResources {
    /// Network id, e.g. vpc-0abc (aws) or a network self link (gcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CLOUD_ID_LENGTH))]
    pub network_id: Option<String>,

    /// Subnet ids of the network: the nodes' first, then the public ones behind a NAT gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = MAX_CLOUD_ID_LENGTH)))]
    pub subnet_ids: Vec<String>,

    /// The NAT gateway the nodes reach the internet through (network.natGateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CLOUD_ID_LENGTH))]
    pub nat_gateway_id: Option<String>,

    /// Cluster id, e.g. an EKS cluster ARN or a GKE cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CLOUD_ID_LENGTH))]
    pub cluster_id: Option<String>,

    /// Cloud node pool (node group) id by node pool name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16, "additionalProperties" = {"type": "string", "maxLength": MAX_CLOUD_ID_LENGTH}))]
    pub node_pool_ids: BTreeMap<String, String>,
}

/// Capacity taken by the namespaces placed into a cell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityUsage {
    /// Namespaces placed into the cell, including reservations not yet provisioned.
    pub namespaces: i32,
    /// Capacity units taken (see spec.capacity.maxUnits).
    pub units: i32,
}
