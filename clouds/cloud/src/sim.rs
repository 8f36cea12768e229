//! A simulated cloud for tests, the sandbox and benchmarks: configurable latency per call,
//! injectable transient and permanent failures (seeded, so a run can be replayed), and an
//! effect ledger recording every create, upgrade and delete with its idempotency key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{
    CellScope, CloudError, CloudProvider, Cluster, ClusterAccess, ClusterRequest, Components, ComponentsRequest,
    Network, NetworkRequest, NodePool, NodePoolRequest, Progress,
};

/// How the simulated cloud behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Latency of every call without an entry in `op_latency`.
    pub latency: Duration,
    /// Latency by operation name (`create_network`, `install_components`, ...).
    pub op_latency: BTreeMap<String, Duration>,
    /// Probability (0..=1) that a call fails transiently; half of these fail after the effect
    /// happened (the response was lost), which is what idempotency keys are for.
    pub transient_failure_rate: f64,
    /// Probability (0..=1) that a create fails with access denied.
    pub permanent_failure_rate: f64,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::from_millis(5),
            op_latency: BTreeMap::new(),
            transient_failure_rate: 0.0,
            permanent_failure_rate: 0.0,
            seed: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Network,
    Cluster,
    NodePool,
    Components,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EffectOp {
    Create,
    Upgrade,
    Delete,
}

/// One effect the simulated cloud applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    pub op: EffectOp,
    pub kind: ResourceKind,
    pub cell: String,
    /// The resource's name within its cell: `network`, `cluster`, `pool/NAME`, `components`.
    pub name: String,
    pub id: String,
    pub key: String,
    pub version: Option<String>,
}

#[derive(Clone, Debug)]
struct Live {
    kind: ResourceKind,
    cell: String,
    name: String,
    version: Option<String>,
}

struct State {
    rng: StdRng,
    next_id: u64,
    /// Result of each create, by idempotency key.
    done: HashMap<String, (String, Option<String>)>,
    /// Keys of the cluster and node pool upgrades applied.
    upgraded: BTreeSet<String>,
    live: BTreeMap<String, Live>,
    ledger: Vec<Effect>,
    failing_versions: BTreeSet<String>,
    calls: u64,
}

/// The simulated cloud. Cheap to share behind an `Arc`; tests keep a handle to read the ledger.
///
/// It lives in the operator's process, where a real cloud outlives it: the ids it issues name the
/// instance that issued them, and an id of another instance (an earlier process of the operator,
/// or of an earlier release) is taken to exist, as a real cloud's would after a restart.
pub struct SimCloud {
    config: SimConfig,
    instance: String,
    state: Mutex<State>,
}

impl SimCloud {
    pub fn new(config: SimConfig) -> Self {
        let state = State {
            rng: StdRng::seed_from_u64(config.seed),
            next_id: 1,
            done: HashMap::new(),
            upgraded: BTreeSet::new(),
            live: BTreeMap::new(),
            ledger: Vec::new(),
            failing_versions: BTreeSet::new(),
            calls: 0,
        };
        SimCloud { config, instance: format!("{:08x}", rand::random::<u32>()), state: Mutex::new(state) }
    }

    /// Makes every install of `version` fail terminally (a bad release), for rollout tests.
    pub fn fail_version(&self, version: &str) {
        self.lock().failing_versions.insert(version.to_string());
    }

    /// Every effect applied so far, in order.
    pub fn ledger(&self) -> Vec<Effect> {
        self.lock().ledger.clone()
    }

    /// API calls made so far (including failed ones).
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Resources that exist now, as `cell/name`.
    pub fn live(&self) -> Vec<String> {
        self.lock().live.values().map(|l| format!("{}/{}", l.cell, l.name)).collect()
    }

    /// Resources that exist now in one cell, as names within the cell.
    pub fn live_in(&self, cell: &str) -> Vec<String> {
        self.lock().live.values().filter(|l| l.cell == cell).map(|l| l.name.clone()).collect()
    }

    /// The version the components of `cell` run, if installed.
    pub fn components_version(&self, cell: &str) -> Option<String> {
        let state = self.lock();
        state.live.values().find(|l| l.cell == cell && l.kind == ResourceKind::Components)?.version.clone()
    }

    /// The Kubernetes version the cluster of `cell` runs, if it exists.
    pub fn cluster_version(&self, cell: &str) -> Option<String> {
        let state = self.lock();
        state.live.values().find(|l| l.cell == cell && l.kind == ResourceKind::Cluster)?.version.clone()
    }

    /// The Kubernetes versions of the node pools of `cell`, by pool name.
    pub fn node_pool_versions(&self, cell: &str) -> BTreeMap<String, Option<String>> {
        let state = self.lock();
        let pools = state.live.values().filter(|l| l.cell == cell && l.kind == ResourceKind::NodePool);
        pools.map(|l| (l.name.trim_start_matches("pool/").to_string(), l.version.clone())).collect()
    }

    /// Effects applied a second time under another idempotency key (a retried call that lost its
    /// key): a logical resource created again while the first still existed, as `cell/name`, or
    /// upgraded again to the version it already ran, as `cell/name@version`. Empty when effects
    /// were exactly-once.
    pub fn duplicates(&self) -> Vec<String> {
        let mut versions: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut duplicates = Vec::new();
        for effect in &self.lock().ledger {
            let name = format!("{}/{}", effect.cell, effect.name);
            match effect.op {
                EffectOp::Create if versions.contains_key(&name) => duplicates.push(name.clone()),
                EffectOp::Upgrade if versions.get(&name) == Some(&effect.version) => {
                    duplicates.push(format!("{name}@{}", effect.version.clone().unwrap_or_default()))
                }
                EffectOp::Delete => {
                    versions.remove(&name);
                    continue;
                }
                _ => {}
            }
            versions.insert(name, effect.version.clone());
        }
        duplicates
    }

    /// Resources of `cells` still alive: after their teardown, anything here leaked.
    pub fn leaks<'a>(&self, cells: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let cells: BTreeSet<&str> = cells.into_iter().collect();
        self.lock()
            .live
            .values()
            .filter(|l| cells.contains(l.cell.as_str()))
            .map(|l| format!("{}/{}", l.cell, l.name))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn call(&self, op: &str) -> Result<bool, CloudError> {
        let latency = self.config.op_latency.get(op).copied().unwrap_or(self.config.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut state = self.lock();
        state.calls += 1;
        let roll: f64 = state.rng.random();
        let lose_response = roll < self.config.transient_failure_rate / 2.0;
        if roll >= self.config.transient_failure_rate / 2.0 && roll < self.config.transient_failure_rate {
            return Err(CloudError::Transient(format!("{op}: simulated throttling (retry later)")));
        }
        let denied: f64 = state.rng.random();
        if op.starts_with("create") && denied < self.config.permanent_failure_rate {
            return Err(CloudError::AccessDenied(format!("{op}: simulated missing permission")));
        }
        Ok(lose_response)
    }

    /// Applies a create once per key; returns the id (and version) of the resource.
    fn create(&self, key: &str, kind: ResourceKind, scope: &CellScope, name: &str, version: Option<&str>) -> String {
        let mut state = self.lock();
        if let Some((id, _)) = state.done.get(key) {
            return id.clone();
        }
        let prefix = match kind {
            ResourceKind::Network => "net",
            ResourceKind::Cluster => "cls",
            ResourceKind::NodePool => "np",
            ResourceKind::Components => "cmp",
        };
        let id = format!("sim-{prefix}-{}-{:06}", self.instance, state.next_id);
        state.next_id += 1;
        let version = version.map(str::to_string);
        state.done.insert(key.to_string(), (id.clone(), version.clone()));
        state.live.insert(
            id.clone(),
            Live { kind, cell: scope.cell.clone(), name: name.to_string(), version: version.clone() },
        );
        state.ledger.push(Effect {
            op: EffectOp::Create,
            kind,
            cell: scope.cell.clone(),
            name: name.to_string(),
            id: id.clone(),
            key: key.to_string(),
            version,
        });
        id
    }

    fn delete(&self, key: &str, id: &str) {
        let mut state = self.lock();
        // Already gone counts as deleted.
        if let Some(live) = state.live.remove(id) {
            state.ledger.push(Effect {
                op: EffectOp::Delete,
                kind: live.kind,
                cell: live.cell,
                name: live.name,
                id: id.to_string(),
                key: key.to_string(),
                version: live.version,
            });
        }
    }

    /// Moves a live cluster or node pool to `version`, in place, once per key. Every upgrade
    /// applied is recorded, also one to the version the resource runs already: a cloud carries
    /// out (and bills) each request it accepts.
    fn upgrade(&self, key: &str, id: &str, earlier: Live, version: &str) -> Result<(), CloudError> {
        let mut state = self.lock();
        let Some(live) = self.find_live(&mut state, id, earlier) else {
            return Err(CloudError::Invalid(format!("{id} does not exist")));
        };
        live.version = Some(version.to_string());
        let effect = Effect {
            op: EffectOp::Upgrade,
            kind: live.kind,
            cell: live.cell.clone(),
            name: live.name.clone(),
            id: id.to_string(),
            key: key.to_string(),
            version: live.version.clone(),
        };
        if state.upgraded.insert(key.to_string()) {
            state.ledger.push(effect);
        }
        Ok(())
    }

    /// The live resource `id`; one issued by another instance is taken to exist as `earlier`
    /// describes (see [`SimCloud`]), one this instance issued and holds no more was deleted.
    fn find_live<'s>(&self, state: &'s mut State, id: &str, earlier: Live) -> Option<&'s mut Live> {
        let issued_here = id.split('-').nth(2) == Some(self.instance.as_str());
        if !issued_here && id.starts_with("sim-") {
            state.live.entry(id.to_string()).or_insert(earlier);
        }
        state.live.get_mut(id)
    }

    fn earlier_cluster(request: &ClusterRequest) -> Live {
        let version = Some(request.kubernetes_version.clone());
        Live { kind: ResourceKind::Cluster, cell: request.scope.cell.clone(), name: "cluster".into(), version }
    }

    fn earlier_node_pool(request: &NodePoolRequest) -> Live {
        let (cell, name) = (request.scope.cell.clone(), format!("pool/{}", request.name));
        let version = Some(request.kubernetes_version.clone()).filter(|v| !v.is_empty());
        Live { kind: ResourceKind::NodePool, cell, name, version }
    }

    fn cluster(request: &ClusterRequest, id: String) -> Cluster {
        let scope = &request.scope;
        let endpoint = format!("https://{}.{}.sim.cellplane.invalid", scope.cell, scope.region);
        Cluster { id, endpoint, kubernetes_version: request.kubernetes_version.clone() }
    }

    fn finish<T>(lose_response: bool, op: &str, value: T) -> Result<T, CloudError> {
        if lose_response {
            return Err(CloudError::Transient(format!("{op}: simulated timeout after the request was applied")));
        }
        Ok(value)
    }
}

impl Default for SimCloud {
    fn default() -> Self {
        SimCloud::new(SimConfig::default())
    }
}

#[async_trait]
impl CloudProvider for SimCloud {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn create_network(&self, key: &str, request: &NetworkRequest) -> Result<Network, CloudError> {
        let lose = self.call("create_network").await?;
        let id = self.create(key, ResourceKind::Network, &request.scope, "network", None);
        let subnets = |kind: &str| (1..=3).map(|zone| format!("{id}-{kind}-{zone}")).collect::<Vec<_>>();
        let network = match request.nat_gateway {
            true => Network {
                subnet_ids: subnets("private"),
                public_subnet_ids: subnets("public"),
                nat_gateway_id: Some(format!("{id}-nat")),
                id,
            },
            false => Network { subnet_ids: subnets("subnet"), public_subnet_ids: Vec::new(), nat_gateway_id: None, id },
        };
        Self::finish(lose, "create_network", network)
    }

    async fn delete_network(&self, key: &str, _scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let lose = self.call("delete_network").await?;
        self.delete(key, id);
        Self::finish(lose, "delete_network", Progress::Ready(()))
    }

    async fn create_cluster(&self, key: &str, request: &ClusterRequest) -> Result<Cluster, CloudError> {
        let lose = self.call("create_cluster").await?;
        let version = Some(request.kubernetes_version.as_str());
        let id = self.create(key, ResourceKind::Cluster, &request.scope, "cluster", version);
        Self::finish(lose, "create_cluster", Self::cluster(request, id))
    }

    async fn cluster_progress(&self, request: &ClusterRequest, id: &str) -> Result<Progress<Cluster>, CloudError> {
        self.call("cluster_progress").await?;
        match self.find_live(&mut self.lock(), id, Self::earlier_cluster(request)) {
            Some(_) => Ok(Progress::Ready(Self::cluster(request, id.to_string()))),
            None => Err(CloudError::Invalid(format!("cluster {id} does not exist"))),
        }
    }

    async fn upgrade_cluster(&self, key: &str, request: &ClusterRequest, id: &str) -> Result<(), CloudError> {
        let lose = self.call("upgrade_cluster").await?;
        self.upgrade(key, id, Self::earlier_cluster(request), &request.kubernetes_version)?;
        Self::finish(lose, "upgrade_cluster", ())
    }

    async fn delete_cluster(&self, key: &str, _scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let lose = self.call("delete_cluster").await?;
        self.delete(key, id);
        Self::finish(lose, "delete_cluster", Progress::Ready(()))
    }

    async fn create_node_pool(&self, key: &str, request: &NodePoolRequest) -> Result<NodePool, CloudError> {
        if request.min_nodes > request.max_nodes {
            return Err(CloudError::Invalid(format!(
                "node pool {}: minNodes {} is greater than maxNodes {}",
                request.name, request.min_nodes, request.max_nodes
            )));
        }
        let lose = self.call("create_node_pool").await?;
        let name = format!("pool/{}", request.name);
        let version = Some(request.kubernetes_version.as_str()).filter(|v| !v.is_empty());
        let id = self.create(key, ResourceKind::NodePool, &request.scope, &name, version);
        Self::finish(lose, "create_node_pool", NodePool { id })
    }

    async fn node_pool_progress(&self, request: &NodePoolRequest, id: &str) -> Result<Progress<NodePool>, CloudError> {
        self.call("node_pool_progress").await?;
        match self.find_live(&mut self.lock(), id, Self::earlier_node_pool(request)) {
            Some(_) => Ok(Progress::Ready(NodePool { id: id.to_string() })),
            None => Err(CloudError::Invalid(format!("node pool {id} does not exist"))),
        }
    }

    async fn upgrade_node_pool(&self, key: &str, request: &NodePoolRequest, id: &str) -> Result<(), CloudError> {
        let lose = self.call("upgrade_node_pool").await?;
        self.upgrade(key, id, Self::earlier_node_pool(request), &request.kubernetes_version)?;
        Self::finish(lose, "upgrade_node_pool", ())
    }

    async fn delete_node_pool(&self, key: &str, _scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
        let lose = self.call("delete_node_pool").await?;
        self.delete(key, id);
        Self::finish(lose, "delete_node_pool", Progress::Ready(()))
    }

    async fn install_components(&self, key: &str, request: &ComponentsRequest) -> Result<Components, CloudError> {
        if self.lock().failing_versions.contains(&request.version) {
            return Err(CloudError::Invalid(format!(
                "components {} failed their health checks in cell {}",
                request.version, request.scope.cell
            )));
        }
        let lose = self.call("install_components").await?;
        let mut state = self.lock();
        if let Some((id, version)) = state.done.get(key) {
            let components = Components { id: id.clone(), version: version.clone().unwrap_or_default() };
            drop(state);
            return Self::finish(lose, "install_components", components);
        }
        let existing =
            state.live.iter_mut().find(|(_, l)| l.cell == request.scope.cell && l.kind == ResourceKind::Components);
        if let Some((id, live)) = existing {
            // An upgrade in place: same resource, new version.
            let id = id.clone();
            live.version = Some(request.version.clone());
            state.done.insert(key.to_string(), (id.clone(), Some(request.version.clone())));
            state.ledger.push(Effect {
                op: EffectOp::Upgrade,
                kind: ResourceKind::Components,
                cell: request.scope.cell.clone(),
                name: "components".into(),
                id: id.clone(),
                key: key.to_string(),
                version: Some(request.version.clone()),
            });
            drop(state);
            return Self::finish(lose, "install_components", Components { id, version: request.version.clone() });
        }
        drop(state);
        let id = self.create(key, ResourceKind::Components, &request.scope, "components", Some(&request.version));
        Self::finish(lose, "install_components", Components { id, version: request.version.clone() })
    }

    async fn delete_components(&self, key: &str, _scope: &CellScope, id: &str) -> Result<(), CloudError> {
        let lose = self.call("delete_components").await?;
        self.delete(key, id);
        Self::finish(lose, "delete_components", ())
    }

    async fn cluster_access(&self, _scope: &CellScope) -> Result<Option<ClusterAccess>, CloudError> {
        Ok(None)
    }

    async fn leftovers(&self, scope: &CellScope) -> Result<Vec<String>, CloudError> {
        self.call("leftovers").await?;
        Ok(self.live_in(&scope.cell))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> CellScope {
        CellScope { cell: "cell-a".into(), region: "eu-west-1".into(), ..CellScope::default() }
    }

    fn network() -> NetworkRequest {
        NetworkRequest { scope: scope(), cidr: "10.0.0.0/16".into(), nat_gateway: false }
    }

    fn quick() -> SimConfig {
        SimConfig { latency: Duration::ZERO, ..SimConfig::default() }
    }

    #[tokio::test]
    async fn a_create_retried_with_its_key_has_one_effect() {
        let cloud = SimCloud::new(quick());
        let first = cloud.create_network("k1", &network()).await.unwrap();
        let again = cloud.create_network("k1", &network()).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(cloud.ledger().len(), 1);
        assert!(cloud.duplicates().is_empty());
    }

    #[tokio::test]
    async fn a_create_under_a_new_key_while_the_first_lives_is_a_duplicate() {
        let cloud = SimCloud::new(quick());
        cloud.create_network("k1", &network()).await.unwrap();
        cloud.create_network("k2", &network()).await.unwrap();
        assert_eq!(cloud.duplicates(), vec!["cell-a/network".to_string()]);
    }

    #[tokio::test]
    async fn deleting_twice_is_fine_and_leaves_no_leak() {
        let cloud = SimCloud::new(quick());
        let net = cloud.create_network("k1", &network()).await.unwrap();
        assert_eq!(cloud.leaks(["cell-a"]), vec!["cell-a/network".to_string()]);
        cloud.delete_network("d1", &scope(), &net.id).await.unwrap();
        cloud.delete_network("d1", &scope(), &net.id).await.unwrap();
        assert!(cloud.leaks(["cell-a"]).is_empty());
    }

    #[tokio::test]
    async fn lost_responses_still_apply_the_effect_exactly_once() {
        let cloud = SimCloud::new(SimConfig { transient_failure_rate: 0.9, seed: 7, ..quick() });
        let mut attempts = 0;
        let net = loop {
            attempts += 1;
            match cloud.create_network("k1", &network()).await {
                Ok(net) => break net,
                Err(e) => assert!(e.is_transient()),
            }
            assert!(attempts < 200, "never succeeded");
        };
        assert_eq!(cloud.live(), vec!["cell-a/network".to_string()]);
        assert_eq!(cloud.ledger().len(), 1);
        assert!(net.id.starts_with("sim-net-"));
    }

    #[tokio::test]
    async fn resources_of_an_earlier_process_outlive_it_and_deleted_ones_do_not() {
        let (earlier, now) = (SimCloud::new(quick()), SimCloud::new(quick()));
        let network = earlier.create_network("n1", &network()).await.unwrap();
        let cluster = ClusterRequest { scope: scope(), network, kubernetes_version: "1.34".into() };
        let created = earlier.create_cluster("c1", &cluster).await.unwrap();

        let upgraded = ClusterRequest { kubernetes_version: "1.35".into(), ..cluster.clone() };
        now.upgrade_cluster("u1", &upgraded, &created.id).await.unwrap();
        assert!(matches!(now.cluster_progress(&upgraded, &created.id).await, Ok(Progress::Ready(_))));
        assert_eq!(now.live(), vec!["cell-a/cluster".to_string()]);

        let own = now.create_cluster("c2", &cluster).await.unwrap();
        assert_ne!(own.id, created.id, "ids of two processes never collide");
        now.delete_cluster("d2", &scope(), &own.id).await.unwrap();
        let gone = now.cluster_progress(&cluster, &own.id).await;
        assert!(matches!(gone, Err(CloudError::Invalid(_))), "{gone:?}");
    }

    #[tokio::test]
    async fn a_failing_version_is_a_terminal_error_and_upgrades_happen_in_place() {
        let cloud = SimCloud::new(quick());
        let request = |v: &str| ComponentsRequest { scope: scope(), cluster_id: "c".into(), version: v.into() };
        let first = cloud.install_components("i1", &request("1.0.0")).await.unwrap();
        let second = cloud.install_components("i2", &request("1.1.0")).await.unwrap();
        assert_eq!(first.id, second.id);
        assert_eq!(cloud.components_version("cell-a").as_deref(), Some("1.1.0"));
        cloud.fail_version("2.0.0");
        let error = cloud.install_components("i3", &request("2.0.0")).await.unwrap_err();
        assert!(!error.is_transient());
        assert!(cloud.duplicates().is_empty());
    }

    #[tokio::test]
    async fn every_upgrade_request_is_recorded_once_and_one_to_the_running_version_is_a_duplicate() {
        let cloud = SimCloud::new(quick());
        let request =
            |v: &str| ClusterRequest { scope: scope(), network: Network::default(), kubernetes_version: v.into() };
        let cluster = cloud.create_cluster("c1", &request("1.33")).await.unwrap();
        cloud.upgrade_cluster("u1", &request("1.34"), &cluster.id).await.unwrap();
        cloud.upgrade_cluster("u1", &request("1.34"), &cluster.id).await.unwrap();
        let upgrades = || cloud.ledger().into_iter().filter(|e| e.op == EffectOp::Upgrade).count();
        assert_eq!(upgrades(), 1, "a retry under its key is the same request");
        assert!(cloud.duplicates().is_empty());
        cloud.upgrade_cluster("u2", &request("1.34"), &cluster.id).await.unwrap();
        assert_eq!(upgrades(), 2, "another request is another upgrade, whatever it changes");
        assert_eq!(cloud.duplicates(), vec!["cell-a/cluster@1.34".to_string()]);
    }
}
