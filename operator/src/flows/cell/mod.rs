//! The cell entity workflow: provisions the cell, then takes commands one at a time (apply a
//! spec generation, upgrade, reserve or release capacity, drain, delete) until it is deleted.
//! Serialising every change to a cell through it makes over-commit impossible without locks.
//! Its software, the release of a version, is installed into the cell's cluster by the steps of
//! [`software`].

mod software;

use std::collections::BTreeMap;
use std::sync::Arc;

use cellplane_workflows::{Ctx, WfError, Workflow};
use serde::{Deserialize, Serialize};

use super::fleet::CellView;
use super::{FlowDeps, call_retry, ids, send_from_step};
use crate::api::cell::{
    CLUSTER_READY, COMPONENTS_READY, CapacityUsage, CellPhase, CellSpec, CloudResources, NETWORK_READY,
    NODE_POOLS_READY,
};
use crate::cell::{CellCa, CellContext, CellError};
use crate::cloud::{
    CellScope, CloudError, Cluster, ClusterRequest, Components, ComponentsRequest, Network, NetworkRequest,
    NodePoolRequest, Progress, wait_for,
};

/// The changes to this workflow's steps that histories of earlier releases do not have (see
/// `Ctx::patched`): each name stays while a running cell may still replay such a history.
pub mod patches {
    /// Node pools are upgraded after the control plane (shipped unmarked in 0.1.0).
    pub const NODE_POOL_UPGRADES: &str = "node-pool-upgrades";
    /// A version is a Release installed into the cell's cluster, checked for drift, removed on
    /// teardown (0.2.0; before, the cloud only recorded the version).
    pub const RELEASES: &str = "releases";
}

pub use software::InstalledRelease;

/// Commands handled per run before the workflow continues as new (keeps replay short).
pub const COMMANDS_PER_RUN: u32 = 50;

/// The signal every command arrives on.
pub const COMMAND: &str = "command";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellInput {
    pub cell: String,
    pub spec: CellSpec,
    pub generation: i64,
    /// Carried over by continue-as-new.
    #[serde(default)]
    pub state: Option<CellState>,
    /// A command the previous run received and left for this one to handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CellCommand>,
}

/// Everything the workflow knows about its cell.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CellState {
    pub network: Option<Network>,
    pub cluster: Option<Cluster>,
    pub node_pools: BTreeMap<String, String>,
    pub components: Option<Components>,
    pub spec: Option<CellSpec>,
    pub applied_generation: i64,
    /// Units reserved, by namespace.
    pub reservations: BTreeMap<String, i32>,
    pub draining: bool,
    pub delete_requested: bool,
    /// The cell's certificate authority, once created.
    #[serde(default)]
    pub ca: Option<CellCa>,
    /// CA rotations so far (names their steps).
    #[serde(default)]
    pub ca_rotations: u32,
    /// What the workflow published last, carried over so a new run shows no step going back.
    #[serde(default)]
    pub view: CellView,
    /// The release the cell runs in its cluster (0.2.0; before, `components` alone).
    #[serde(default)]
    pub release: Option<InstalledRelease>,
    /// Drift checks so far (they name their steps), and when the next is due (ms).
    #[serde(default)]
    pub drift_checks: u32,
    #[serde(default)]
    pub next_drift_ms: Option<i64>,
    /// Whether the operator's identity was given access to the cell's cluster (0.2.0).
    #[serde(default)]
    pub cluster_access_granted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum CellCommand {
    /// A new spec generation. `ring`: the ring that owns the cell's version (it upgrades the
    /// cell by command; spec.version then only says what a new cell starts with).
    ApplySpec {
        generation: i64,
        spec: Box<CellSpec>,
        #[serde(default)]
        ring: Option<String>,
    },
    Upgrade {
        version: String,
        reply_to: String,
        request_id: String,
    },
    Reserve {
        namespace: String,
        units: i32,
        reply_to: String,
        request_id: String,
    },
    Release {
        namespace: String,
    },
    Drain {
        draining: bool,
    },
    Delete,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ReserveReply {
    Accepted { cell: Box<CellContext> },
    Refused { reason: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpgradeReply {
    pub version: String,
    pub error: Option<String>,
}

pub struct CellWorkflow {
    pub deps: Arc<FlowDeps>,
}

impl Workflow for CellWorkflow {
    const NAME: &'static str = "cell";
    type Input = CellInput;
    type Output = ();

    async fn run(self: Arc<Self>, ctx: Ctx, mut input: CellInput) -> Result<(), WfError> {
        let mut carried = input.command.take();
        let mut state = input.state.clone().unwrap_or_default();
        let spec = match &state.spec {
            Some(spec) => spec.clone(),
            None => {
                state.spec = Some(input.spec.clone());
                state.applied_generation = input.generation;
                input.spec.clone()
            }
        };
        let scope = crate::cloud::providers::scope(&input.cell, &spec);
        let view = state.view.clone();
        let mut entity = Entity { ctx: &ctx, deps: &self.deps, scope, spec, state, view };
        if !entity.state.view.provisioned {
            entity.publish(|v| v.phase = Some(CellPhase::Provisioning)).await?;
        }
        entity.provision().await?;
        entity.publish(|v| v.phase = Some(CellPhase::Ready)).await?;
        let mut handled = 0;
        loop {
            if entity.state.delete_requested && entity.state.reservations.is_empty() {
                entity.publish(|v| v.phase = Some(CellPhase::Deleting)).await?;
                entity.teardown().await?;
                return Ok(());
            }
            let releases = ctx.patched(patches::RELEASES).await?;
            // The CA's rotation and the release's drift checks are durable timers: the wait for
            // the next command ends at the first due.
            let timer = entity.next_timer(releases).await?;
            let wait = timer.map(|(at, _)| at);
            let received = match carried.take() {
                Some(command) => Some(command),
                None => ctx.wait_signal::<CellCommand>(COMMAND, wait).await?,
            };
            let Some(command) = received else {
                match timer.map(|(_, timer)| timer) {
                    Some(Timer::DriftCheck) => {
                        entity.check_drift().await?;
                        handled += 1;
                    }
                    _ => entity.rotate_ca().await?,
                }
                continue;
            };
            // A run begun by a release before Releases keeps its way of installing versions to
            // its end (a patch answers the same throughout a run): the next run handles the
            // command, installing a version as a Release.
            if !releases && ctx.may_continue_as_new_here() {
                return ctx.continue_as_new(&entity.next_run(&input, Some(command))).await;
            }
            entity.handle(command).await?;
            handled += 1;
            if handled >= COMMANDS_PER_RUN {
                return ctx.continue_as_new(&entity.next_run(&input, None)).await;
            }
        }
    }
}

/// What ends a wait for the next command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    RotateCa,
    DriftCheck,
}

struct Entity<'a> {
    ctx: &'a Ctx,
    deps: &'a FlowDeps,
    scope: CellScope,
    /// The spec last applied (also in `state.spec`, for continue-as-new).
    spec: CellSpec,
    state: CellState,
    /// What the workflow publishes.
    view: CellView,
}

impl Entity<'_> {
    fn spec(&self) -> &CellSpec {
        &self.spec
    }

    fn key(key: &cellplane_workflows::IdempotencyKey) -> String {
        key.digest()
    }

    /// The workflow's clock, in ms (recorded, so a replay sees the same).
    async fn now_ms(&self) -> Result<i64, WfError> {
        let now = self.ctx.now().await?;
        Ok(now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
    }

    /// The input of the next run: this one's state, and the command it leaves to it.
    fn next_run(&self, input: &CellInput, command: Option<CellCommand>) -> CellInput {
        let state = CellState { view: self.view.clone(), ..self.state.clone() };
        CellInput { state: Some(state), command, ..input.clone() }
    }

    /// The first timer due, and how long until it is (drift checks only with `releases`).
    async fn next_timer(&mut self, releases: bool) -> Result<Option<(std::time::Duration, Timer)>, WfError> {
        let rotation = self.state.ca.as_ref().and_then(|ca| ca.renew_at_ms).map(|at| (at, Timer::RotateCa));
        let drift = match releases {
            true => self.state.next_drift_ms.filter(|_| self.state.release.is_some()).map(|at| (at, Timer::DriftCheck)),
            false => None,
        };
        let Some((at, timer)) = [rotation, drift].into_iter().flatten().min_by_key(|(at, _)| *at) else {
            return Ok(None);
        };
        let until = u64::try_from(at - self.now_ms().await?).unwrap_or(0);
        Ok(Some((std::time::Duration::from_millis(until), timer)))
    }

    /// Creates whatever of network, cluster, node pools and components does not exist yet.
    async fn provision(&mut self) -> Result<(), WfError> {
        let (ctx, deps, scope) = (self.ctx, self.deps, self.scope.clone());
        let (cloud, scope) = (&deps.cloud, &scope);
        if self.state.network.is_none() {
            let network = &self.spec().network;
            let request =
                NetworkRequest { scope: scope.clone(), cidr: network.cidr.clone(), nat_gateway: network.nat_gateway };
            let network = ctx
                .step("create-network")
                .retry(call_retry())
                .run(|key| {
                    let request = &request;
                    async move { cloud.create_network(&Self::key(&key), request).await.map_err(CloudError::into_step) }
                })
                .await?;
            self.state.network = Some(network);
        }
        self.publish(|v| v.done.push(NETWORK_READY.into())).await?;
        if self.state.cluster.is_none() {
            let request = self.cluster_request(&self.spec().cluster.kubernetes_version);
            let created = ctx
                .step("create-cluster")
                .retry(call_retry())
                .run(|key| {
                    let request = &request;
                    async move { cloud.create_cluster(&Self::key(&key), request).await.map_err(CloudError::into_step) }
                })
                .await?;
            // Journaled before the long wait, so status shows the cluster's id while it is created.
            self.state.cluster = Some(created.clone());
            self.publish(|_| {}).await?;
            let cluster = self.wait_cluster("wait-cluster", &request, &created.id).await?;
            self.state.cluster = Some(cluster);
        }
        self.publish(|v| v.done.push(CLUSTER_READY.into())).await?;
        let pools = self.spec().cluster.node_pools.clone();
        for pool in pools {
            self.create_node_pool(&pool).await?;
        }
        self.publish(|v| v.done.push(NODE_POOLS_READY.into())).await?;
        if self.state.components.is_none() && self.state.release.is_none() {
            let version = self.spec().version.clone();
            if self.ctx.patched(patches::RELEASES).await? {
                if let Err(why) = self.install_release(&version).await? {
                    self.publish(|v| v.last_failure = Some(why)).await?;
                }
            } else {
                let components = self.install(&version).await?;
                self.state.components = Some(components);
            }
        }
        if self.state.ca.is_none() {
            let (services, cell) = (&self.deps.services, self.context());
            let cell = &cell;
            let ca = ctx
                .step("create-cell-ca")
                .retry(call_retry())
                .run(|_| async move { services.ensure_cell_ca(cell).await.map_err(CellError::into_step) })
                .await?;
            self.state.ca = Some(ca);
        }
        self.publish(|v| v.provisioned = true).await?;
        Ok(())
    }

    /// The version the cell's software runs.
    fn running_version(&self) -> Option<&str> {
        match &self.state.release {
            Some(release) => Some(&release.rendered.version),
            None => self.state.components.as_ref().map(|c| c.version.as_str()),
        }
    }

    /// Its software runs: the release healthy (or, installed before releases, the components).
    fn software_ready(&self) -> bool {
        match &self.state.release {
            Some(release) => release.is_healthy(),
            None => self.state.components.is_some(),
        }
    }

    /// The cell as the in-cell services need it.
    fn context(&self) -> CellContext {
        let spec = self.spec();
        CellContext {
            name: self.scope.cell.clone(),
            region: self.scope.region.clone(),
            provider: spec.provider,
            ingress: spec.ingress.clone(),
            database: spec.database.clone(),
            version: None,
            cloud: Some(self.scope.clone()),
            front_door: self.state.release.as_ref().and_then(|r| r.rendered.front_door.clone()),
        }
    }

    /// Replaces the cell CA before it expires; the old one stays trusted meanwhile.
    async fn rotate_ca(&mut self) -> Result<(), WfError> {
        self.state.ca_rotations += 1;
        let (services, cell) = (&self.deps.services, self.context());
        let cell = &cell;
        let ca = self
            .ctx
            .step(format!("rotate-cell-ca-{}", self.state.ca_rotations))
            .retry(call_retry())
            .run(|key| async move { services.rotate_cell_ca(&key.digest(), cell).await.map_err(CellError::into_step) })
            .await?;
        self.state.ca = Some(ca);
        Ok(())
    }

    fn node_pool_request(&self, pool: &crate::api::cell::NodePool) -> NodePoolRequest {
        let kubernetes_version = self.state.cluster.as_ref().map(|c| c.kubernetes_version.clone()).unwrap_or_default();
        NodePoolRequest {
            scope: self.scope.clone(),
            cluster_id: self.cluster_id(),
            subnet_ids: self.state.network.as_ref().map(|n| n.subnet_ids.clone()).unwrap_or_default(),
            name: pool.name.clone(),
            instance_type: pool.instance_type.clone(),
            min_nodes: pool.min_nodes,
            max_nodes: pool.max_nodes,
            labels: pool.labels.clone(),
            kubernetes_version,
        }
    }

    async fn create_node_pool(&mut self, pool: &crate::api::cell::NodePool) -> Result<(), WfError> {
        if self.state.node_pools.contains_key(&pool.name) {
            return Ok(());
        }
        let (cloud, request) = (&self.deps.cloud, self.node_pool_request(pool));
        let created = self
            .ctx
            .step(format!("create-node-pool-{}", pool.name))
            .retry(call_retry())
            .run(|key| {
                let request = &request;
                async move { cloud.create_node_pool(&Self::key(&key), request).await.map_err(CloudError::into_step) }
            })
            .await?;
        self.state.node_pools.insert(pool.name.clone(), created.id.clone());
        self.publish(|_| {}).await?;
        self.wait_node_pool(&format!("wait-node-pool-{}", pool.name), &request, &created.id).await
    }

    async fn wait_node_pool(&self, step: &str, request: &NodePoolRequest, id: &str) -> Result<(), WfError> {
        let (cloud, wait) = (&self.deps.cloud, self.deps.wait);
        let what = format!("node pool {id}");
        let what = what.as_str();
        self.ctx
            .step(step)
            .retry(call_retry())
            .run(|_| async move {
                wait_for(what, wait, || cloud.node_pool_progress(request, id)).await.map_err(CloudError::into_step)
            })
            .await?;
        Ok(())
    }

    /// Moves the nodes of every pool to the control plane's version, one pool at a time.
    async fn upgrade_node_pools(&self, kubernetes_version: &str) -> Result<(), WfError> {
        let cloud = &self.deps.cloud;
        for pool in &self.spec().cluster.node_pools {
            let Some(id) = self.state.node_pools.get(&pool.name) else { continue };
            let request = self.node_pool_request(pool);
            let (request, id) = (&request, id.as_str());
            self.ctx
                .step(format!("upgrade-node-pool-{}-{kubernetes_version}", pool.name))
                .retry(call_retry())
                .run(|key| async move {
                    cloud.upgrade_node_pool(&Self::key(&key), request, id).await.map_err(CloudError::into_step)
                })
                .await?;
            self.wait_node_pool(&format!("wait-node-pool-{}-{kubernetes_version}", pool.name), request, id).await?;
        }
        Ok(())
    }

    fn cluster_request(&self, kubernetes_version: &str) -> ClusterRequest {
        ClusterRequest {
            scope: self.scope.clone(),
            network: self.state.network.clone().unwrap_or_default(),
            kubernetes_version: kubernetes_version.to_string(),
        }
    }

    /// Polls the cluster until it is ready at the request's version.
    async fn wait_cluster(&self, step: &str, request: &ClusterRequest, id: &str) -> Result<Cluster, WfError> {
        let (cloud, wait) = (&self.deps.cloud, self.deps.wait);
        let what = format!("cluster {id}");
        let what = what.as_str();
        self.ctx
            .step(step)
            .retry(call_retry())
            .run(|_| async move {
                wait_for(what, wait, || cloud.cluster_progress(request, id)).await.map_err(CloudError::into_step)
            })
            .await
    }

    /// Upgrades the control plane to the spec's Kubernetes version when it runs another.
    async fn upgrade_cluster(&mut self, kubernetes_version: &str) -> Result<(), WfError> {
        let Some(cluster) = self.state.cluster.clone() else { return Ok(()) };
        if cluster.kubernetes_version.is_empty() || cluster.kubernetes_version == kubernetes_version {
            return Ok(());
        }
        let (cloud, request) = (&self.deps.cloud, self.cluster_request(kubernetes_version));
        let (request, id) = (&request, cluster.id.as_str());
        self.ctx
            .step(format!("upgrade-cluster-{kubernetes_version}"))
            .retry(call_retry())
            .run(|key| async move {
                cloud.upgrade_cluster(&Self::key(&key), request, id).await.map_err(CloudError::into_step)
            })
            .await?;
        let upgraded = self.wait_cluster(&format!("wait-cluster-{kubernetes_version}"), request, id).await?;
        self.state.cluster = Some(upgraded);
        // Before 0.1.0 the nodes stayed on their version, and 0.1.0 upgraded them unmarked.
        let pools = &self.spec().cluster.node_pools;
        let first_pool = pools.iter().find(|p| self.state.node_pools.contains_key(&p.name)).map(|p| p.name.clone());
        let first_pool = first_pool.unwrap_or_default();
        let first_step = format!("upgrade-node-pool-{first_pool}-{kubernetes_version}");
        if self.ctx.patched_since_step(patches::NODE_POOL_UPGRADES, &first_step).await? {
            self.upgrade_node_pools(kubernetes_version).await?;
        }
        Ok(())
    }

    /// Deletes one resource and waits until it is gone (`delete` is called until it says so).
    async fn delete<F, Fut>(&self, step: &str, what: &str, delete: F) -> Result<(), WfError>
    where
        F: Fn(String) -> Fut + Send + Sync,
        Fut: std::future::Future<Output = Result<Progress<()>, CloudError>> + Send,
    {
        let (wait, delete) = (self.deps.wait, &delete);
        self.ctx
            .step(step)
            .retry(call_retry())
            .run(|key| async move {
                let key = Self::key(&key);
                wait_for(what, wait, || delete(key.clone())).await.map_err(CloudError::into_step)
            })
            .await
    }

    fn cluster_id(&self) -> String {
        self.state.cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default()
    }

    async fn install(&self, version: &str) -> Result<Components, WfError> {
        let cloud = &self.deps.cloud;
        let request = ComponentsRequest {
            scope: self.scope.clone(),
            cluster_id: self.cluster_id(),
            version: version.to_string(),
        };
        self.ctx
            .step(format!("install-components-{version}"))
            .retry(call_retry())
            .run(|key| {
                let request = &request;
                async move { cloud.install_components(&Self::key(&key), request).await.map_err(CloudError::into_step) }
            })
            .await
    }

    async fn handle(&mut self, command: CellCommand) -> Result<(), WfError> {
        match command {
            CellCommand::ApplySpec { generation, spec, ring } => self.apply_spec(generation, *spec, ring).await?,
            CellCommand::Upgrade { version, reply_to, request_id } => {
                let reply = self.upgrade(&version).await?;
                self.reply(&reply_to, &request_id, &reply).await?;
            }
            CellCommand::Reserve { namespace, units, reply_to, request_id } => {
                let reply = self.reserve(&namespace, units);
                self.publish(|_| {}).await?;
                self.reply(&reply_to, &request_id, &reply).await?;
            }
            CellCommand::Release { namespace } => {
                self.state.reservations.remove(&namespace);
            }
            CellCommand::Drain { draining } => self.state.draining = draining,
            CellCommand::Delete => self.state.delete_requested = true,
        }
        self.publish(|_| {}).await?;
        Ok(())
    }

    async fn apply_spec(&mut self, generation: i64, spec: CellSpec, ring: Option<String>) -> Result<(), WfError> {
        if generation <= self.state.applied_generation {
            return Ok(());
        }
        self.publish(|v| v.phase = Some(CellPhase::Updating)).await?;
        let previous_version = self.spec().version.clone();
        self.upgrade_cluster(&spec.cluster.kubernetes_version).await?;
        let wanted: Vec<String> = spec.cluster.node_pools.iter().map(|p| p.name.clone()).collect();
        for pool in &spec.cluster.node_pools {
            self.create_node_pool(pool).await?;
        }
        let removed: Vec<(String, String)> = self
            .state
            .node_pools
            .iter()
            .filter(|(n, _)| !wanted.contains(n))
            .map(|(n, id)| (n.clone(), id.clone()))
            .collect();
        for (name, id) in removed {
            self.delete_node_pool(&name, &id).await?;
            self.state.node_pools.remove(&name);
        }
        let new_version = spec.version.clone();
        self.state.spec = Some(spec.clone());
        self.spec = spec;
        self.state.applied_generation = generation;
        // A person edited spec.version (rings upgrade by command and leave the spec alone); a
        // cell in a ring takes its version from the ring only.
        if new_version != previous_version && ring.is_none() {
            let reply = self.upgrade(&new_version).await?;
            if let Some(error) = reply.error {
                self.publish(|v| v.last_failure = Some(error)).await?;
            }
        }
        self.publish(|v| v.phase = Some(CellPhase::Ready)).await?;
        Ok(())
    }

    async fn upgrade(&mut self, version: &str) -> Result<UpgradeReply, WfError> {
        if self.running_version() == Some(version) && self.software_ready() {
            return Ok(UpgradeReply { version: version.to_string(), error: None });
        }
        self.publish(|v| v.phase = Some(CellPhase::Upgrading)).await?;
        if self.ctx.patched(patches::RELEASES).await? {
            let error =
                self.install_release(version).await?.err().map(|why| format!("upgrade to {version} failed: {why}"));
            self.publish(|v| v.last_failure = error.clone()).await?;
            self.publish(|v| v.phase = Some(CellPhase::Ready)).await?;
            return Ok(UpgradeReply { version: version.to_string(), error });
        }
        let reply = match self.install(version).await {
            Ok(components) => {
                self.state.components = Some(components);
                self.publish(|v| v.last_failure = None).await?;
                UpgradeReply { version: version.to_string(), error: None }
            }
            // The cell stays on its version; the requester decides what a failed upgrade means.
            Err(WfError::Step { error, .. }) => {
                let message = format!("upgrade to {version} failed: {error}");
                self.publish(|v| v.last_failure = Some(message.clone())).await?;
                UpgradeReply { version: version.to_string(), error: Some(message) }
            }
            Err(other) => return Err(other),
        };
        self.publish(|v| v.phase = Some(CellPhase::Ready)).await?;
        Ok(reply)
    }

    fn reserve(&mut self, namespace: &str, units: i32) -> ReserveReply {
        let spec = self.spec().clone();
        let refuse = |reason: String| ReserveReply::Refused { reason };
        if !self.state.reservations.contains_key(namespace) {
            if self.state.delete_requested {
                return refuse("the cell is being deleted".into());
            }
            if self.state.draining || spec.cordoned {
                return refuse("the cell is cordoned".into());
            }
            let used = self.usage();
            if used.namespaces >= spec.capacity.max_namespaces {
                return refuse(format!("full ({}/{} namespaces)", used.namespaces, spec.capacity.max_namespaces));
            }
            if let Some(max_units) = spec.capacity.max_units
                && used.units + units > max_units
            {
                return refuse(format!("full ({}/{max_units} units)", used.units));
            }
            self.state.reservations.insert(namespace.to_string(), units);
        }
        ReserveReply::Accepted { cell: Box::new(self.context()) }
    }

    fn usage(&self) -> CapacityUsage {
        CapacityUsage {
            namespaces: self.state.reservations.len() as i32,
            units: self.state.reservations.values().sum(),
        }
    }

    async fn reply<T: Serialize + Sync>(&self, to: &str, request_id: &str, payload: &T) -> Result<(), WfError> {
        // A requester that is gone no longer needs the answer.
        send_from_step(self.ctx, self.deps, "reply", to, &ids::reply(request_id), payload).await?;
        Ok(())
    }

    async fn delete_node_pool(&self, name: &str, id: &str) -> Result<(), WfError> {
        let (cloud, scope) = (&self.deps.cloud, &self.scope);
        let delete = |key: String| async move { cloud.delete_node_pool(&key, scope, id).await };
        self.delete(&format!("delete-node-pool-{name}"), &format!("node pool {id}"), delete).await
    }

    /// Deletes what provisioning created, in reverse order.
    async fn teardown(&mut self) -> Result<(), WfError> {
        if self.ctx.patched(patches::RELEASES).await? {
            self.remove_release().await?;
        }
        let (ctx, cloud, scope) = (self.ctx, &self.deps.cloud, &self.scope);
        if let Some(components) = self.state.components.take() {
            let id = components.id.as_str();
            ctx.step("delete-components")
                .retry(call_retry())
                .run(|key| async move {
                    cloud.delete_components(&Self::key(&key), scope, id).await.map_err(CloudError::into_step)
                })
                .await?;
        }
        let pools: Vec<(String, String)> = std::mem::take(&mut self.state.node_pools).into_iter().rev().collect();
        for (name, id) in pools {
            self.delete_node_pool(&name, &id).await?;
        }
        if let Some(cluster) = self.state.cluster.take() {
            let id = cluster.id.as_str();
            let delete = |key: String| async move { cloud.delete_cluster(&key, scope, id).await };
            self.delete("delete-cluster", &format!("cluster {id}"), delete).await?;
        }
        if let Some(network) = self.state.network.take() {
            let id = network.id.as_str();
            let delete = |key: String| async move { cloud.delete_network(&key, scope, id).await };
            self.delete("delete-network", &format!("network {id}"), delete).await?;
        }
        self.check_leftovers().await?;
        if self.state.ca.take().is_some() {
            let (services, cell) = (&self.deps.services, self.context());
            let cell = &cell;
            ctx.step("delete-cell-ca")
                .retry(call_retry())
                .run(|_| async move { services.remove_cell_ca(cell).await.map_err(CellError::into_step) })
                .await?;
        }
        self.publish(|v| {
            v.done.clear();
            v.provisioned = false;
            v.resources = CloudResources::default();
        })
        .await?;
        Ok(())
    }

    /// Proves the teardown complete: lists the cell's resources by its tag or label. What is
    /// found is published (the Deleting condition names it) and the step retries; when its
    /// attempts run out the workflow fails with the list, and the finalizer stays.
    async fn check_leftovers(&mut self) -> Result<(), WfError> {
        let (cloud, scope) = (&self.deps.cloud, &self.scope);
        let left = self
            .ctx
            .step("check-leftovers")
            .retry(call_retry())
            .run(|_| async move { cloud.leftovers(scope).await.map_err(CloudError::into_step) })
            .await?;
        if left.is_empty() {
            return Ok(());
        }
        let message = format!("resources of cell {} left after teardown: {}", self.scope.cell, left.join(", "));
        self.publish(|v| v.left = left).await?;
        let error = cellplane_workflows::StepError { kind: "resources-left".into(), message, retryable: false };
        Err(WfError::Step { step: "check-leftovers".into(), error })
    }

    /// Publishes the workflow's view (for status, on any replica), after `update` adds what is new.
    async fn publish(&mut self, update: impl FnOnce(&mut CellView)) -> Result<(), WfError> {
        let used = self.usage();
        let (running, software_ready) = (self.running_version().map(str::to_string), self.software_ready());
        let state = &self.state;
        let view = &mut self.view;
        update(view);
        view.done.sort_unstable();
        view.done.dedup();
        view.used = used;
        view.applied_generation = state.applied_generation;
        view.running_version = running;
        view.release = state.release.as_ref().map(InstalledRelease::status);
        if view.provisioned && software_ready {
            view.done.push(COMPONENTS_READY.into());
        } else {
            view.done.retain(|d| d != COMPONENTS_READY);
        }
        view.endpoint = state.cluster.as_ref().map(|c| c.endpoint.clone());
        let network = state.network.as_ref();
        view.resources = CloudResources {
            network_id: network.map(|n| n.id.clone()),
            subnet_ids: network
                .map(|n| [n.subnet_ids.clone(), n.public_subnet_ids.clone()].concat())
                .unwrap_or_default(),
            nat_gateway_id: network.and_then(|n| n.nat_gateway_id.clone()),
            cluster_id: state.cluster.as_ref().map(|c| c.id.clone()),
            node_pool_ids: state.node_pools.clone(),
        };
        view.blocked = (state.delete_requested && !state.reservations.is_empty()).then(|| {
            let names: Vec<&str> = state.reservations.keys().map(String::as_str).take(10).collect();
            format!("{} namespaces are still placed in the cell: {}", state.reservations.len(), names.join(", "))
        });
        if state.delete_requested {
            view.phase = Some(CellPhase::Deleting);
        }
        self.ctx.publish(&self.view).await
    }
}
