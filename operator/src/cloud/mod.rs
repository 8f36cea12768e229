//! The cloud a cell lives in: the [`CloudProvider`] trait and its implementations (`sim` now;
//! `aws` and `gcp` later, each in its own module so their SDKs stay out of other builds).
//!
//! Every create takes an idempotency key (the workflow step's key): calling it again with the
//! same key returns the resource the first call made, with no second effect. Every delete
//! treats a resource that is already gone as deleted.

pub mod sim;

use std::collections::BTreeMap;

use async_trait::async_trait;
use cellplane_workflows::StepError;
use serde::{Deserialize, Serialize};

/// An error of a cloud API call, classified by whether retrying can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// Throttling, timeouts, 5xx: retry with backoff.
    #[error("transient cloud error: {0}")]
    Transient(String),
    /// The credentials may not do this; retrying cannot help.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The request is wrong (bad CIDR, unknown version); retrying cannot help.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl CloudError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Transient(_))
    }
}

impl CloudError {
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
        }
    }
}

/// Where a cell's resources live: used for naming and tagging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellScope {
    /// The cell's name: a DNS label (validated by the controller), used in resource names and tags.
    pub cell: String,
    pub region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub scope: CellScope,
    pub cidr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub subnet_ids: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRequest {
    pub scope: CellScope,
    pub network_id: String,
    pub kubernetes_version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePoolRequest {
    pub scope: CellScope,
    pub cluster_id: String,
    pub name: String,
    pub instance_type: String,
    pub min_nodes: i32,
    pub max_nodes: i32,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePool {
    pub id: String,
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
#[async_trait]
pub trait CloudProvider: Send + Sync + 'static {
    /// Short name shown in logs and status (`sim`, `aws`, `gcp`).
    fn name(&self) -> &'static str;

    async fn create_network(&self, key: &str, request: &NetworkRequest) -> Result<Network, CloudError>;
    async fn delete_network(&self, key: &str, scope: &CellScope, id: &str) -> Result<(), CloudError>;

    async fn create_cluster(&self, key: &str, request: &ClusterRequest) -> Result<Cluster, CloudError>;
    async fn delete_cluster(&self, key: &str, scope: &CellScope, id: &str) -> Result<(), CloudError>;

    async fn create_node_pool(&self, key: &str, request: &NodePoolRequest) -> Result<NodePool, CloudError>;
    async fn delete_node_pool(&self, key: &str, scope: &CellScope, id: &str) -> Result<(), CloudError>;

    /// Installs the components at `request.version`, or upgrades them in place to it.
    async fn install_components(&self, key: &str, request: &ComponentsRequest) -> Result<Components, CloudError>;
    async fn delete_components(&self, key: &str, scope: &CellScope, id: &str) -> Result<(), CloudError>;
}
