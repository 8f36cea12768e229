//! The providers a binary was built with, by name; itself a [`CloudProvider`] that routes each
//! call to the provider its cell's scope names.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    CellScope, CloudError, CloudProvider, Cluster, ClusterAccess, ClusterRequest, Components, ComponentsRequest,
    Network, NetworkRequest, NodePool, NodePoolRequest, Progress,
};

#[derive(Clone, Default)]
pub struct Clouds {
    providers: BTreeMap<&'static str, Arc<dyn CloudProvider>>,
}

impl Clouds {
    pub fn new() -> Self {
        Clouds::default()
    }

    /// Adds a provider under its [`CloudProvider::name`].
    pub fn with(mut self, provider: Arc<dyn CloudProvider>) -> Self {
        self.providers.insert(provider.name(), provider);
        self
    }

    /// The names of the providers this registry has.
    pub fn names(&self) -> Vec<&'static str> {
        self.providers.keys().copied().collect()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn CloudProvider>> {
        self.providers.get(name)
    }

    fn route(&self, scope: &CellScope) -> Result<&Arc<dyn CloudProvider>, CloudError> {
        self.get(&scope.provider).ok_or_else(|| {
            CloudError::Invalid(format!(
                "cell {}: provider {:?} is not built into this binary (it has: {})",
                scope.cell,
                scope.provider,
                self.names().join(", ")
            ))
        })
    }
}

#[async_trait]
impl CloudProvider for Clouds {
    fn name(&self) -> &'static str {
        "clouds"
    }

    async fn create_network(&self, key: &str, request: &NetworkRequest) -> Result<Network, CloudError> {
        self.route(&request.scope)?.create_network(key, request).await
    }

    async fn delete_network(&self, key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        self.route(scope)?.delete_network(key, scope, id).await
    }

    async fn create_cluster(&self, key: &str, request: &ClusterRequest) -> Result<Cluster, CloudError> {
        self.route(&request.scope)?.create_cluster(key, request).await
    }

    async fn cluster_progress(&self, request: &ClusterRequest, id: &str) -> Result<Progress<Cluster>, CloudError> {
        self.route(&request.scope)?.cluster_progress(request, id).await
    }

    async fn upgrade_cluster(&self, key: &str, request: &ClusterRequest, id: &str) -> Result<(), CloudError> {
        self.route(&request.scope)?.upgrade_cluster(key, request, id).await
    }

    async fn delete_cluster(&self, key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        self.route(scope)?.delete_cluster(key, scope, id).await
    }

    async fn create_node_pool(&self, key: &str, request: &NodePoolRequest) -> Result<NodePool, CloudError> {
        self.route(&request.scope)?.create_node_pool(key, request).await
    }

    async fn node_pool_progress(&self, request: &NodePoolRequest, id: &str) -> Result<Progress<NodePool>, CloudError> {
        self.route(&request.scope)?.node_pool_progress(request, id).await
    }

    async fn upgrade_node_pool(&self, key: &str, request: &NodePoolRequest, id: &str) -> Result<(), CloudError> {
        self.route(&request.scope)?.upgrade_node_pool(key, request, id).await
    }

    async fn delete_node_pool(&self, key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        self.route(scope)?.delete_node_pool(key, scope, id).await
    }

    async fn install_components(&self, key: &str, request: &ComponentsRequest) -> Result<Components, CloudError> {
        self.route(&request.scope)?.install_components(key, request).await
    }

    async fn delete_components(&self, key: &str, scope: &CellScope, id: &str) -> Result<(), CloudError> {
        self.route(scope)?.delete_components(key, scope, id).await
    }

    async fn grant_cluster_access(&self, key: &str, scope: &CellScope, cluster_id: &str) -> Result<(), CloudError> {
        self.route(scope)?.grant_cluster_access(key, scope, cluster_id).await
    }

    async fn leftovers(&self, scope: &CellScope) -> Result<Vec<String>, CloudError> {
        self.route(scope)?.leftovers(scope).await
    }

    async fn cluster_access(&self, scope: &CellScope) -> Result<Option<ClusterAccess>, CloudError> {
        self.route(scope)?.cluster_access(scope).await
    }
}
