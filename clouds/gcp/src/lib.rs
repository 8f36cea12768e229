//! Cells on Google Cloud: a GKE cluster in the cell's project, region and VPC network, and one
//! node pool per spec node pool, through the GKE REST API (`google-cloud-container-v1`). GKE
//! takes no request token, so a create that answers 409 ALREADY_EXISTS (an earlier attempt's,
//! whose answer was lost) takes the existing resource; a long operation is followed through the
//! resource's status (PROVISIONING, RECONCILING, STOPPING) until it settles. Every cluster and
//! node carries the label `cellplane-cell=<cell>`.

mod error;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cellplane_cloud::{
    Account, CELL_LABEL, CellScope, CloudError, CloudProvider, Cluster, ClusterAccess, ClusterRequest, Components,
    ComponentsRequest, GcpAccount, Network, NetworkRequest, NodePool, NodePoolRequest, Progress, Secrets,
};
use google_cloud_auth::credentials::{AccessTokenCredentials, Credentials, anonymous, service_account};
use google_cloud_container_v1::client::ClusterManager;
use google_cloud_container_v1::model::{self, cluster, node_pool};

use error::fail;

/// The label that records the cell's software version on its cluster.
const VERSION_LABEL: &str = "cellplane-version";
/// The node pool GKE clusters are created with (GKE wants one); the spec's pools follow.
const SYSTEM_POOL: &str = "system";

/// Where the client sends its requests.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// None: Google's endpoint with the cell's credentials; Some: a local peer, anonymously.
    pub url: Option<String>,
}

pub struct GcpCloud {
    endpoint: Endpoint,
    secrets: Option<Arc<dyn Secrets>>,
    /// Clients with the ambient credentials (ADC), by nothing: there is one identity.
    ambient: Mutex<Option<ClusterManager>>,
}

impl GcpCloud {
    pub fn new(secrets: Option<Arc<dyn Secrets>>) -> Self {
        GcpCloud::with_endpoint(Endpoint::default(), secrets)
    }

    pub fn with_endpoint(endpoint: Endpoint, secrets: Option<Arc<dyn Secrets>>) -> Self {
        GcpCloud { endpoint, secrets, ambient: Mutex::new(None) }
    }

    async fn client(&self, scope: &CellScope) -> Result<ClusterManager, CloudError> {
        let account = account(scope)?;
        if account.credentials.is_none()
            && let Some(client) = self.lock().clone()
        {
            return Ok(client);
        }
        let credentials = self.credentials(&account).await?;
        let mut builder = ClusterManager::builder().with_credentials(credentials);
        if let Some(url) = &self.endpoint.url {
            builder = builder.with_endpoint(url);
        }
        let client = builder.build().await.map_err(|e| CloudError::Invalid(format!("GKE client: {e}")))?;
        if account.credentials.is_none() {
            *self.lock() = Some(client.clone());
        }
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ClusterManager>> {
        self.ambient.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn credentials(&self, account: &GcpAccount) -> Result<Credentials, CloudError> {
        if self.endpoint.url.is_some() {
            return Ok(anonymous::Builder::new().build());
        }
        match &account.credentials {
            Some(secret) => {
                let key = self.service_account_key(secret).await?;
                service_account::Builder::new(key)
                    .build()
                    .map_err(|e| CloudError::Invalid(format!("service-account key in {}: {e}", secret.name)))
            }
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| CloudError::AccessDenied(format!("Application Default Credentials: {e}"))),
        }
    }

    async fn service_account_key(&self, secret: &cellplane_cloud::SecretRef) -> Result<serde_json::Value, CloudError> {
        let Some(secrets) = &self.secrets else {
            return Err(CloudError::Invalid("this operator reads no credentials Secrets".into()));
        };
        let data = secrets.read(secret).await?;
        let json = data.get("credentials.json").ok_or_else(|| {
            CloudError::Invalid(format!("Secret {}/{} has no key credentials.json", secret.namespace, secret.name))
        })?;
        serde_json::from_slice(json)
            .map_err(|e| CloudError::Invalid(format!("Secret {}: credentials.json is not JSON: {e}", secret.name)))
    }

    /// An OAuth access token for the cell's GKE API server (about an hour; made when needed).
    pub async fn cluster_token(&self, scope: &CellScope) -> Result<String, CloudError> {
        let account = account(scope)?;
        let credentials: AccessTokenCredentials = match &account.credentials {
            Some(secret) => service_account::Builder::new(self.service_account_key(secret).await?)
                .build_access_token_credentials()
                .map_err(|e| CloudError::Invalid(format!("service-account key: {e}")))?,
            None => google_cloud_auth::credentials::Builder::default()
                .build_access_token_credentials()
                .map_err(|e| CloudError::AccessDenied(format!("Application Default Credentials: {e}")))?,
        };
        let token =
            credentials.access_token().await.map_err(|e| CloudError::AccessDenied(format!("access token: {e}")))?;
        Ok(token.token)
    }
}

fn account(scope: &CellScope) -> Result<GcpAccount, CloudError> {
    match &scope.account {
        Account::Gcp(account) => Ok(account.clone()),
        _ => Err(CloudError::Invalid(format!("cell {}: spec.gcp (project) is required", scope.cell))),
    }
}

/// `projects/P/locations/REGION`
fn parent(scope: &CellScope) -> Result<String, CloudError> {
    Ok(format!("projects/{}/locations/{}", account(scope)?.project, scope.region))
}

fn cluster_path(scope: &CellScope) -> Result<String, CloudError> {
    Ok(format!("{}/clusters/{}", parent(scope)?, scope.cell))
}

fn labels(scope: &CellScope) -> HashMap<String, String> {
    HashMap::from([(CELL_LABEL.to_string(), scope.cell.clone())])
}

/// An update that started, or whose operation is running already (ours, retried: GKE answers
/// FAILED_PRECONDITION); the wait that follows sees it through.
fn started<T>(update: Result<T, error::Failure>) -> Result<(), CloudError> {
    match update {
        Err(e) if !e.failed_precondition => Err(e.error),
        _ => Ok(()),
    }
}

fn gone<T>(result: Result<T, error::Failure>) -> Result<Option<T>, CloudError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.not_found => Ok(None),
        Err(e) => Err(e.error),
    }
}

#[async_trait]
impl CloudProvider for GcpCloud {
    fn name(&self) -> &'static str {
        "gcp"
    }

    /// The cell joins an existing VPC network of its project (`spec.gcp.network`); GKE makes
    /// the cluster's subnetwork ranges itself.
    async fn create_network(&self, _key: &str, request: &NetworkRequest) -> Result<Network, CloudError> {
        let account = account(&request.scope)?;
        let network = account.network.unwrap_or_else(|| "default".into());
        let id = format!("projects/{}/global/networks/{network}", account.project);
        Ok(Network { id, subnet_ids: Vec::new(), public_subnet_ids: Vec::new(), nat_gateway_id: None })
    }

    async fn delete_network(&self, _key: &str, _scope: &CellScope, _id: &str) -> Result<Progress<()>, CloudError> {
        Ok(Progress::Ready(()))
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell))]
    async fn create_cluster(&self, _key: &str, request: &ClusterRequest) -> Result<Cluster, CloudError> {
        let scope = &request.scope;
        let client = self.client(scope).await?;
        let system = model::NodePool::new().set_name(SYSTEM_POOL).set_initial_node_count(1);
        let spec = model::Cluster::new()
            .set_name(&scope.cell)
            .set_initial_cluster_version(&request.kubernetes_version)
            .set_network(&request.network.id)
            .set_resource_labels(labels(scope))
            .set_node_pools([system]);
        let created = client.create_cluster().set_parent(parent(scope)?).set_cluster(spec).send().await;
        match created.map_err(|e| fail("clusters.create", e)) {
            Ok(operation) => tracing::info!(operation = %operation.name, "creating GKE cluster"),
            Err(e) if e.already_exists => {}
            Err(e) => return Err(e.error),
        }
        Ok(Cluster { id: cluster_path(scope)?, endpoint: String::new(), kubernetes_version: String::new() })
    }

    async fn cluster_progress(&self, request: &ClusterRequest, id: &str) -> Result<Progress<Cluster>, CloudError> {
        let client = self.client(&request.scope).await?;
        let found = client.get_cluster().set_name(id).send().await.map_err(|e| fail("clusters.get", e));
        let found = found.map_err(|e| e.error)?;
        let version = found.current_master_version.clone();
        match found.status {
            cluster::Status::Running if version_matches(&version, &request.kubernetes_version) => {
                Ok(Progress::Ready(Cluster {
                    id: id.to_string(),
                    endpoint: format!("https://{}", found.endpoint),
                    kubernetes_version: request.kubernetes_version.clone(),
                }))
            }
            cluster::Status::Error | cluster::Status::Degraded => Err(CloudError::Invalid(format!(
                "GKE cluster {id} is {:?}: {}",
                found.status,
                messages(&found.conditions)
            ))),
            status => Ok(Progress::Pending(format!("{status:?} at {version}"))),
        }
    }

    async fn upgrade_cluster(&self, _key: &str, request: &ClusterRequest, id: &str) -> Result<(), CloudError> {
        let client = self.client(&request.scope).await?;
        let updated = client.update_master().set_name(id).set_master_version(&request.kubernetes_version).send().await;
        started(updated.map_err(|e| fail("clusters.updateMaster", e)))
    }

    async fn delete_cluster(&self, _key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let client = self.client(scope).await?;
        let found = gone(client.get_cluster().set_name(id).send().await.map_err(|e| fail("clusters.get", e)))?;
        match found {
            None => return Ok(Progress::Ready(())),
            Some(found) if found.status == cluster::Status::Stopping => {
                return Ok(Progress::Pending("STOPPING".into()));
            }
            Some(_) => {}
        }
        match gone(client.delete_cluster().set_name(id).send().await.map_err(|e| fail("clusters.delete", e)))? {
            Some(_) => Ok(Progress::Pending("STOPPING".into())),
            None => Ok(Progress::Ready(())),
        }
    }

    #[tracing::instrument(skip_all, fields(cell = %request.scope.cell, pool = %request.name))]
    async fn create_node_pool(&self, _key: &str, request: &NodePoolRequest) -> Result<NodePool, CloudError> {
        if request.min_nodes > request.max_nodes {
            return Err(CloudError::Invalid(format!("node pool {}: minNodes is greater than maxNodes", request.name)));
        }
        let client = self.client(&request.scope).await?;
        let mut node_labels: BTreeMap<String, String> = request.labels.clone();
        node_labels.insert(CELL_LABEL.into(), request.scope.cell.clone());
        let config = model::NodeConfig::new()
            .set_machine_type(&request.instance_type)
            .set_labels(node_labels)
            .set_resource_labels(labels(&request.scope));
        let autoscaling = model::NodePoolAutoscaling::new()
            .set_enabled(true)
            .set_min_node_count(request.min_nodes)
            .set_max_node_count(request.max_nodes);
        let pool = model::NodePool::new()
            .set_name(&request.name)
            .set_version(&request.kubernetes_version)
            .set_initial_node_count(request.min_nodes.max(1))
            .set_config(config)
            .set_autoscaling(autoscaling);
        let created = client.create_node_pool().set_parent(&request.cluster_id).set_node_pool(pool).send().await;
        match created.map_err(|e| fail("nodePools.create", e)) {
            Err(e) if !e.already_exists => return Err(e.error),
            _ => {}
        }
        Ok(NodePool { id: format!("{}/nodePools/{}", request.cluster_id, request.name) })
    }

    async fn node_pool_progress(&self, request: &NodePoolRequest, id: &str) -> Result<Progress<NodePool>, CloudError> {
        let client = self.client(&request.scope).await?;
        let found = client.get_node_pool().set_name(id).send().await.map_err(|e| fail("nodePools.get", e).error)?;
        let wanted = &request.kubernetes_version;
        match found.status {
            node_pool::Status::Running if wanted.is_empty() || version_matches(&found.version, wanted) => {
                Ok(Progress::Ready(NodePool { id: id.to_string() }))
            }
            node_pool::Status::Error | node_pool::Status::RunningWithError => Err(CloudError::Invalid(format!(
                "node pool {id} is {:?}: {}",
                found.status,
                messages(&found.conditions)
            ))),
            status => Ok(Progress::Pending(format!("{status:?} at {}", found.version))),
        }
    }

    /// Upgrades the pool's nodes, keeping their image type (which GKE's update requires).
    async fn upgrade_node_pool(&self, _key: &str, request: &NodePoolRequest, id: &str) -> Result<(), CloudError> {
        let client = self.client(&request.scope).await?;
        let found = client.get_node_pool().set_name(id).send().await.map_err(|e| fail("nodePools.get", e).error)?;
        if version_matches(&found.version, &request.kubernetes_version) {
            return Ok(());
        }
        let image_type = found.config.map(|c| c.image_type).unwrap_or_default();
        let updated = client
            .update_node_pool()
            .set_name(id)
            .set_node_version(&request.kubernetes_version)
            .set_image_type(image_type)
            .send()
            .await;
        started(updated.map_err(|e| fail("nodePools.update", e)))
    }

    async fn delete_node_pool(&self, _key: &str, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let client = self.client(scope).await?;
        let found = gone(client.get_node_pool().set_name(id).send().await.map_err(|e| fail("nodePools.get", e)))?;
        match found {
            None => return Ok(Progress::Ready(())),
            Some(found) if found.status == node_pool::Status::Stopping => {
                return Ok(Progress::Pending("STOPPING".into()));
            }
            Some(_) => {}
        }
        match gone(client.delete_node_pool().set_name(id).send().await.map_err(|e| fail("nodePools.delete", e)))? {
            Some(_) => Ok(Progress::Pending("STOPPING".into())),
            None => Ok(Progress::Ready(())),
        }
    }

    /// Records the version on the cluster (a resource label); the software itself reaches the
    /// cluster through the in-cell services.
    async fn install_components(&self, _key: &str, request: &ComponentsRequest) -> Result<Components, CloudError> {
        let client = self.client(&request.scope).await?;
        let mut labels = labels(&request.scope);
        labels.insert(VERSION_LABEL.into(), request.version.replace('.', "_"));
        let set = client.set_labels().set_name(&request.cluster_id).set_resource_labels(labels).send().await;
        set.map_err(|e| fail("clusters.setResourceLabels", e).error)?;
        Ok(Components { id: format!("{}#components", request.cluster_id), version: request.version.clone() })
    }

    async fn delete_components(&self, _key: &str, _scope: &CellScope, _id: &str) -> Result<(), CloudError> {
        Ok(())
    }

    async fn cluster_access(&self, scope: &CellScope) -> Result<Option<ClusterAccess>, CloudError> {
        let client = self.client(scope).await?;
        let found = client.get_cluster().set_name(cluster_path(scope)?).send().await;
        let found = found.map_err(|e| fail("clusters.get", e).error)?;
        let authority = found.master_auth.map(|a| a.cluster_ca_certificate).unwrap_or_default();
        if found.endpoint.is_empty() || authority.is_empty() {
            return Err(CloudError::Transient(format!("GKE cluster {} has no endpoint yet", scope.cell)));
        }
        Ok(Some(ClusterAccess {
            endpoint: format!("https://{}", found.endpoint),
            certificate_authority_pem: cellplane_cloud::decode_certificate_authority(&authority)?,
            token: self.cluster_token(scope).await?,
        }))
    }

    /// The project's clusters labelled with the cell, and their node pools.
    async fn leftovers(&self, scope: &CellScope) -> Result<Vec<String>, CloudError> {
        let client = self.client(scope).await?;
        let listed = client.list_clusters().set_parent(parent(scope)?).send().await;
        let listed = listed.map_err(|e| fail("clusters.list", e).error)?;
        let mine = listed.clusters.iter().filter(|c| c.resource_labels.get(CELL_LABEL) == Some(&scope.cell));
        let mut left = Vec::new();
        for cluster in mine {
            left.push(format!("gke-cluster {}", cluster.name));
            left.extend(cluster.node_pools.iter().map(|p| format!("gke-node-pool {}/{}", cluster.name, p.name)));
        }
        Ok(left)
    }
}

fn messages(conditions: &[model::StatusCondition]) -> String {
    conditions.iter().map(|c| c.message.as_str()).collect::<Vec<_>>().join("; ")
}

/// GKE reports `1.31.2-gke.1000` for a requested `1.31`.
fn version_matches(running: &str, wanted: &str) -> bool {
    running == wanted || running.strip_prefix(wanted).is_some_and(|rest| rest.starts_with(['.', '-']))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_patch_release_matches_its_minor_version() {
        assert!(super::version_matches("1.31.2-gke.1000", "1.31"));
        assert!(super::version_matches("1.31", "1.31"));
        assert!(!super::version_matches("1.310.0", "1.31"));
        assert!(!super::version_matches("1.30.5-gke.1", "1.31"));
    }
}
