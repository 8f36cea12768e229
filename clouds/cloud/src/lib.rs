//! The cloud a cell lives in: the [`CloudProvider`] trait, the classification of cloud errors,
//! the [`Clouds`] registry that routes each cell to its provider, and the simulated cloud
//! ([`sim`]). The real providers live in their own crates (`cellplane-cloud-aws`,
//! `cellplane-cloud-gcp`) so their SDKs stay out of every other build.
//!
//! Every create takes an idempotency key (the workflow step's key): calling it again with the
//! same key returns the resource the first call made, with no second effect. Creates and
//! deletes that take minutes are split: the call starts the work, and a progress call
//! ([`Progress`]) tells whether it has finished; [`wait_for`] polls one with backoff and a
//! deadline. Every delete treats a resource that is already gone as deleted.

mod clouds;
mod progress;
pub mod sim;

use std::collections::BTreeMap;

use async_trait::async_trait;
use cellplane_workflows::StepError;
use serde::{Deserialize, Serialize};

pub use clouds::Clouds;
pub use progress::{Progress, WaitPolicy, wait_for};

/// The tag (AWS) or label (GCP) naming the cell a resource belongs to.
pub const CELL_TAG: &str = "cellplane.io/cell";
/// The GCP label form of [`CELL_TAG`] (labels allow no `/` or `.`).
pub const CELL_LABEL: &str = "cellplane-cell";

/// An error of a cloud API call, classified by whether retrying can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// Throttling, timeouts, 5xx, a resource still changing state: retry with backoff.
    #[error("transient cloud error: {0}")]
    Transient(String),
    /// The credentials may not do this; retrying cannot help.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The request is wrong (bad CIDR, unknown version); retrying cannot help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The operator's own Kubernetes identity may not read what it needs (a credentials Secret):
    /// waited out, since an administrator grants the permission after the fact.
    #[error("{MISSING_PERMISSION}{0}")]
    MissingPermission(String),
}

/// How a missing Kubernetes permission of the operator's starts its message (a controller
/// turns such a step error into a Stalled condition that names the permission).
pub const MISSING_PERMISSION: &str = "missing permission: ";

impl CloudError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Transient(_))
    }

    /// The step error a workflow sees: transient errors retry, the others end the step.
    pub fn into_step(self) -> StepError {
        let error = self;
        match &error {
            CloudError::Transient(_) => StepError::of_kind("cloud-transient", error),
            CloudError::AccessDenied(_) => {
                StepError { kind: "access-denied".into(), message: error.to_string(), retryable: false }
            }
            CloudError::Invalid(_) => {
                StepError { kind: "invalid-request".into(), message: error.to_string(), retryable: false }
            }
            CloudError::MissingPermission(_) => StepError::blocked(error),
        }
    }
}

/// A Secret in the management cluster (credentials are read from it when needed, never kept in
/// a journal or a status).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

/// Reads Secrets for the providers (the operator reads them from Kubernetes).
#[async_trait]
pub trait Secrets: Send + Sync + 'static {
    /// The Secret's data, by key.
    async fn read(&self, secret: &SecretRef) -> Result<BTreeMap<String, Vec<u8>>, CloudError>;
}

/// The AWS account of a cell and the roles its cluster uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AwsAccount {
    /// A role in the cell's account, assumed with STS for this cell's calls.
    pub role_arn: Option<String>,
    /// A Secret with `aws_access_key_id` and `aws_secret_access_key` (and optionally
    /// `aws_session_token`); without it and without a role, the default chain (IRSA, the
    /// environment, the instance role).
    pub credentials: Option<SecretRef>,
    /// The EKS cluster's IAM role.
    pub cluster_role_arn: String,
    /// The IAM role of the managed node groups' nodes.
    pub node_role_arn: String,
}

/// The Google Cloud project of a cell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcpAccount {
    pub project: String,
    /// The VPC network the cluster joins (`default` when unset).
    pub network: Option<String>,
    /// A Secret with a service-account key JSON under `credentials.json`; without it,
    /// Application Default Credentials (Workload Identity on GKE).
    pub credentials: Option<SecretRef>,
}

/// Who a cell's cloud calls act as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Account {
    /// The provider's own credentials and settings (the sim, tests).
    #[default]
    Ambient,
    Aws(AwsAccount),
    Gcp(GcpAccount),
}

/// Where a cell's resources live: used for naming, tagging and choosing credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellScope {
    /// The cell's name: a DNS label (validated by the controller), used in resource names and tags.
    pub cell: String,
    pub region: String,
    /// The provider's name (`sim`, `aws`, `gcp`): [`Clouds`] routes by it.
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub account: Account,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub scope: CellScope,
    pub cidr: String,
    /// Nodes in private subnets that reach out through a NAT gateway (else public subnets).
    #[serde(default)]
    pub nat_gateway: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    /// Where the nodes go: the private subnets behind the NAT gateway when there is one.
    pub subnet_ids: Vec<String>,
    /// With a NAT gateway: the public subnets holding it (and the load balancers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_subnet_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateway_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRequest {
    pub scope: CellScope,
    pub network: Network,
    pub kubernetes_version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    /// The API server's URL; empty until the cluster is ready.
    pub endpoint: String,
    /// The Kubernetes version it runs (empty where the provider does not say).
    #[serde(default)]
    pub kubernetes_version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePoolRequest {
    pub scope: CellScope,
    pub cluster_id: String,
    pub subnet_ids: Vec<String>,
    pub name: String,
    pub instance_type: String,
    pub min_nodes: i32,
    pub max_nodes: i32,
    pub labels: BTreeMap<String, String>,
    /// The Kubernetes version of the nodes (the control plane's; empty: the provider's default).
    #[serde(default)]
    pub kubernetes_version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePool {
    pub id: String,
}

/// How to reach a cell's Kubernetes API: made when needed from the cloud's own answer and a
/// short-lived token, so nothing long-lived is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAccess {
    /// The API server's URL.
    pub endpoint: String,
    /// The cluster's CA certificate, PEM (EKS and GKE hand it out base64-encoded).
    pub certificate_authority_pem: String,
    /// A bearer token for the API server (EKS: a presigned STS request; GKE: an OAuth token).
    pub token: String,
}

/// The PEM of a cluster CA as EKS and GKE hand it out (base64 of the PEM text).
pub fn decode_certificate_authority(data: &str) -> Result<String, CloudError> {
    use base64::Engine;
    let invalid = || CloudError::Invalid("the cluster's CA certificate is not base64-encoded PEM".into());
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|_| invalid())?;
    let pem = String::from_utf8(bytes).map_err(|_| invalid())?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid());
    }
    Ok(pem)
}

impl std::fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess").field("endpoint", &self.endpoint).field("token", &"<redacted>").finish()
    }
}

/// The cell's software components, installed (or upgraded in place) at one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentsRequest {
    pub scope: CellScope,
    pub cluster_id: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Components {
    pub id: String,
    pub version: String,
}

/// A cloud that can host cells. `key` is the idempotency key of the calling step.
///
/// Deletes start the deletion and report whether the resource is gone: call them again (with
/// [`wait_for`]) until they return [`Progress::Ready`].
#[async_trait]
pub trait CloudProvider: Send + Sync + 'static {
    /// Short name shown in logs and status (`sim`, `aws`, `gcp`).
    fn name(&self) -> &'static str;

    async fn create_network(&self, key: &str, request: &NetworkRequest) -> Result<Network, CloudError>;
    async fn delete_network(&self, key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError>;

    async fn create_cluster(&self, key: &str, request: &ClusterRequest) -> Result<Cluster, CloudError>;
    /// Whether the cluster is ready at `request.kubernetes_version` (after a create or an upgrade).
    async fn cluster_progress(&self, request: &ClusterRequest, id: &str) -> Result<Progress<Cluster>, CloudError>;
    /// Starts an upgrade of the control plane to `request.kubernetes_version`.
    async fn upgrade_cluster(&self, key: &str, request: &ClusterRequest, id: &str) -> Result<(), CloudError>;
    async fn delete_cluster(&self, key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError>;

    async fn create_node_pool(&self, key: &str, request: &NodePoolRequest) -> Result<NodePool, CloudError>;
    /// Whether the node pool is ready (at `request.kubernetes_version`, when one is given).
    async fn node_pool_progress(&self, request: &NodePoolRequest, id: &str) -> Result<Progress<NodePool>, CloudError>;
    /// Starts an upgrade of the pool's nodes to `request.kubernetes_version`.
    async fn upgrade_node_pool(&self, key: &str, request: &NodePoolRequest, id: &str) -> Result<(), CloudError>;
    async fn delete_node_pool(&self, key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError>;

    /// Installs the components at `request.version`, or upgrades them in place to it.
    async fn install_components(&self, key: &str, request: &ComponentsRequest) -> Result<Components, CloudError>;
    async fn delete_components(&self, key: &str, scope: &CellScope, id: &str) -> Result<(), CloudError>;

    /// Lets the identity the operator reaches the cell's cluster with administer it, as the
    /// cell's software needs (cluster-scoped objects too). Where creating the cluster already
    /// did, nothing to do.
    async fn grant_cluster_access(&self, _key: &str, _scope: &CellScope, _cluster_id: &str) -> Result<(), CloudError> {
        Ok(())
    }

    /// What of the cell still exists, found by its tag or label (not by the ids the workflow
    /// remembers): after a teardown, anything here leaked. Each entry names the resource.
    async fn leftovers(&self, scope: &CellScope) -> Result<Vec<String>, CloudError>;

    /// How to reach the cell's cluster now; None where the provider has no cluster of its own
    /// to reach (the sim: its cells' routes live where the operator runs).
    async fn cluster_access(&self, scope: &CellScope) -> Result<Option<ClusterAccess>, CloudError>;
}
