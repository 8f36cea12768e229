//! Cells on AWS: a VPC from `spec.network.cidr` with subnets in two availability zones, an
//! internet gateway and default route, the cluster's security group, an EKS cluster and one
//! managed node group per node pool. Every resource carries the tag `cellplane.io/cell=<cell>`;
//! creates are idempotent through the workflow step's key (EKS `clientRequestToken`) or, where
//! EC2 has no token, by finding the cell's tagged resource first. Each cell's calls act in its
//! own account: a role assumed with STS, keys from a Secret, or the default chain (IRSA).

mod clients;
mod eks;
mod error;
mod nat;
mod network;
mod token;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use cellplane_cloud::{
    CellScope, CloudError, CloudProvider, Cluster, ClusterAccess, ClusterRequest, Components, ComponentsRequest,
    Network, NetworkRequest, NodePool, NodePoolRequest, Progress, Secrets,
};

pub use clients::{Clients, Endpoint};
pub use token::eks_token;

/// The tag that records the cell's software version on its cluster.
const VERSION_TAG: &str = "cellplane.io/version";

pub struct AwsCloud {
    clients: clients::ClientCache,
}

impl AwsCloud {
    /// Against AWS; `secrets` reads the cells' `credentialsSecretRef`.
    pub fn new(secrets: Option<Arc<dyn Secrets>>) -> Self {
        AwsCloud::with_endpoint(Endpoint::default(), secrets)
    }

    /// Against another endpoint (a local peer in tests).
    pub fn with_endpoint(endpoint: Endpoint, secrets: Option<Arc<dyn Secrets>>) -> Self {
        AwsCloud { clients: clients::ClientCache::new(endpoint, secrets) }
    }

    /// The SDK clients a cell's calls use.
    pub async fn clients(&self, scope: &CellScope) -> Result<Clients, CloudError> {
        self.clients.get(scope).await
    }

    /// A bearer token for the cell's EKS API server, valid for about a minute.
    pub async fn cluster_token(&self, scope: &CellScope) -> Result<String, CloudError> {
        let clients = self.clients(scope).await?;
        Self::token(&clients, scope).await
    }

    async fn token(clients: &Clients, scope: &CellScope) -> Result<String, CloudError> {
        let provider = clients
            .config
            .credentials_provider()
            .ok_or_else(|| CloudError::AccessDenied("no AWS credentials for the EKS token".into()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| CloudError::AccessDenied(format!("AWS credentials for the EKS token: {e}")))?;
        eks_token(&credentials, &scope.region, eks::cluster_name(scope), SystemTime::now())
    }

    async fn roles(&self, scope: &CellScope) -> Result<cellplane_cloud::AwsAccount, CloudError> {
        clients::account(scope)
    }
}

#[async_trait]
impl CloudProvider for AwsCloud {
    fn name(&self) -> &'static str {
        "aws"
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell))]
    async fn create_network(&self, key: &str, request: &NetworkRequest) -> Result<Network, CloudError> {
        let clients = self.clients(&request.scope).await?;
        network::create(&clients.ec2, key, request).await
    }

    #[tracing::instrument(skip_all, fields(cell = %scope.cell, vpc = id))]
    async fn delete_network(&self, _key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let clients = self.clients(scope).await?;
        network::delete(&clients.ec2, scope, id).await
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell))]
    async fn create_cluster(&self, key: &str, request: &ClusterRequest) -> Result<Cluster, CloudError> {
        let clients = self.clients(&request.scope).await?;
        let roles = self.roles(&request.scope).await?;
        let group = network::security_group(&clients.ec2, &request.scope, &request.network.id).await?;
        eks::create_cluster(&clients.eks, key, request, &roles.cluster_role_arn, &group).await
    }

    async fn cluster_progress(&self, request: &ClusterRequest, id: &str) -> Result<Progress<Cluster>, CloudError> {
        let clients = self.clients(&request.scope).await?;
        eks::cluster_progress(&clients.eks, request, id).await
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell, version = %request.kubernetes_version))]
    async fn upgrade_cluster(&self, key: &str, request: &ClusterRequest, _id: &str) -> Result<(), CloudError> {
        let clients = self.clients(&request.scope).await?;
        eks::upgrade_cluster(&clients.eks, key, request).await
    }

    #[tracing::instrument(skip_all, fields(cell = %scope.cell))]
    async fn delete_cluster(&self, _key: &str, scope: &CellScope, _id: &str) -> Result<Progress<()>, CloudError> {
        let clients = self.clients(scope).await?;
        eks::delete_cluster(&clients.eks, scope).await
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell, pool = %request.name))]
    async fn create_node_pool(&self, key: &str, request: &NodePoolRequest) -> Result<NodePool, CloudError> {
        if request.min_nodes > request.max_nodes {
            return Err(CloudError::Invalid(format!("node pool {}: minNodes is greater than maxNodes", request.name)));
        }
        let clients = self.clients(&request.scope).await?;
        let roles = self.roles(&request.scope).await?;
        eks::create_node_group(&clients.eks, key, request, &roles.node_role_arn).await
    }

    async fn node_pool_progress(&self, request: &NodePoolRequest, id: &str) -> Result<Progress<NodePool>, CloudError> {
        let clients = self.clients(&request.scope).await?;
        eks::node_group_progress(&clients.eks, request, id).await
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell, pool = %request.name))]
    async fn upgrade_node_pool(&self, key: &str, request: &NodePoolRequest, _id: &str) -> Result<(), CloudError> {
        let clients = self.clients(&request.scope).await?;
        eks::upgrade_node_group(&clients.eks, key, request).await
    }

    #[tracing::instrument(skip_all, fields(cell = %scope.cell, nodegroup = id))]
    async fn delete_node_pool(&self, _key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let clients = self.clients(scope).await?;
        eks::delete_node_group(&clients.eks, scope, id).await
    }

    /// Records the version on the cluster (a tag); the software itself reaches the cluster
    /// through the in-cell services.
    async fn install_components(&self, _key: &str, request: &ComponentsRequest) -> Result<Components, CloudError> {
        let clients = self.clients(&request.scope).await?;
        clients
            .eks
            .tag_resource()
            .resource_arn(&request.cluster_id)
            .tags(VERSION_TAG, &request.version)
            .send()
            .await
            .map_err(|e| error::fail("TagResource", e))?;
        Ok(Components { id: format!("{}#components", request.cluster_id), version: request.version.clone() })
    }

    /// The components go with the cluster.
    async fn delete_components(&self, _key: &str, _scope: &CellScope, _id: &str) -> Result<(), CloudError> {
        Ok(())
    }

    /// An EKS access entry with cluster-admin for the identity the cell's calls use: the role
    /// assumed for the cell, else the caller STS names.
    #[tracing::instrument(skip_all, fields(cell = %scope.cell))]
    async fn grant_cluster_access(&self, _key: &str, scope: &CellScope, _cluster_id: &str) -> Result<(), CloudError> {
        let clients = self.clients(scope).await?;
        let principal = match self.roles(scope).await?.role_arn {
            Some(role) => role,
            None => {
                let sts = aws_sdk_sts::Client::new(&clients.config);
                let caller = sts.get_caller_identity().send().await.map_err(|e| error::fail("GetCallerIdentity", e))?;
                eks::principal_of(caller.arn().unwrap_or_default())
            }
        };
        eks::grant_access(&clients.eks, scope, &principal).await
    }

    async fn leftovers(&self, scope: &CellScope) -> Result<Vec<String>, CloudError> {
        let clients = self.clients(scope).await?;
        let mut left = eks::leftovers(&clients.eks, scope).await?;
        left.extend(network::leftovers(&clients.ec2, scope).await?);
        Ok(left)
    }

    async fn cluster_access(&self, scope: &CellScope) -> Result<Option<ClusterAccess>, CloudError> {
        let clients = self.clients(scope).await?;
        let token = Self::token(&clients, scope).await?;
        eks::access(&clients.eks, scope, token).await.map(Some)
    }
}
