//! A whole operator (real controllers and engine, sim cloud, recording in-cell services) on an
//! in-memory API server of its own.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::namespace::Tier;
use cellplane::api::{Cell, DeploymentRing, DeploymentRingStatus, Namespace};
use cellplane::cell::ledger::Effect;
use cellplane::cell::sim::SimCellServices;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::fixtures::{self, is_ready};
use cellplane::testing::{OperatorSetup, TestCluster, TestOperator};
use cellplane_memapi::ApiServer;
use cellplane_workflows::Clock;
use kube::Api;

pub const WITHIN: Duration = Duration::from_secs(60);

pub struct Fleet {
    pub cluster: TestCluster,
    pub cloud: Arc<SimCloud>,
    pub services: Arc<SimCellServices>,
    setup: OperatorSetup,
    operator: TestOperator,
}

impl Fleet {
    /// On an in-memory API server of its own.
    pub async fn start(cloud: SimConfig, clock: Option<Arc<dyn Clock>>) -> Fleet {
        let cluster = TestCluster::in_memory(|_| {}).await.expect("an in-memory cluster");
        Self::on(cluster, cloud, |setup| setup.clock = clock).await
    }

    /// On the real API server `E2E_KUBECONFIG` names, else an in-memory one; name cluster-scoped
    /// objects with [`Fleet::name`] so that runs side by side do not meet.
    pub async fn anywhere(cloud: SimConfig, configure: impl FnOnce(&mut OperatorSetup)) -> Fleet {
        let cluster = TestCluster::start().await.expect("a test cluster");
        Self::on(cluster, cloud, configure).await
    }

    async fn on(cluster: TestCluster, cloud: SimConfig, configure: impl FnOnce(&mut OperatorSetup)) -> Fleet {
        let cloud = Arc::new(SimCloud::new(cloud));
        let services = Arc::new(SimCellServices::new(Duration::from_millis(1)));
        let mut setup = OperatorSetup::new(cloud.clone(), services.clone());
        configure(&mut setup);
        let operator = TestOperator::start(&cluster, setup.clone()).await;
        Fleet { cluster, cloud, services, setup, operator }
    }

    /// `base` made unique to this run.
    pub fn name(&self, base: &str) -> String {
        self.cluster.name(base)
    }

    /// Kills the operator as a crash would (no graceful shutdown), then starts a new one on
    /// the same journal.
    pub async fn crash_and_restart(&mut self) {
        self.operator.crash_and_restart(&self.cluster, self.setup.clone()).await;
    }

    /// The versions of the releases `cell` installed, in order.
    pub fn installs(&self, cell: &str) -> Vec<String> {
        let installs = self.services.ledger().executions().into_iter().filter(|e| e.effect == Effect::Release);
        installs.filter_map(|e| e.target.strip_prefix(&format!("{cell}@")).map(str::to_string)).collect()
    }

    /// The version of the release `cell` installed last.
    pub fn running_release(&self, cell: &str) -> Option<String> {
        self.installs(cell).pop()
    }

    /// The operator's workflow engine.
    pub fn engine(&self) -> &Arc<cellplane_workflows::Engine> {
        self.operator.operator.engine()
    }

    pub fn server(&self) -> &ApiServer {
        self.cluster.memory.as_ref().expect("in memory")
    }

    pub fn cells(&self) -> Api<Cell> {
        self.cluster.cells()
    }

    pub fn namespaces(&self) -> Api<Namespace> {
        self.cluster.namespaces()
    }

    pub fn rings(&self) -> Api<DeploymentRing> {
        self.cluster.rings()
    }

    /// A tenant of the test's account.
    pub fn tenant(&self, name: &str, region: &str, tier: Tier) -> Namespace {
        fixtures::namespace(name, &self.cluster.account, region, tier)
    }

    /// Creates an object of this test (labelled so that its operator reconciles it).
    pub async fn create<K>(&self, api: &Api<K>, obj: &K) -> Result<(), kube::Error>
    where
        K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.cluster.create(api, obj.clone()).await
    }

    pub async fn cell_ready(&self, name: &str) -> Cell {
        let ready = |c: Option<&Cell>| {
            c.is_some_and(|c| is_ready(c, &c.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        };
        fixtures::wait_for(&self.cells(), name, "Ready", WITHIN, ready).await.expect("cell Ready").expect("cell exists")
    }

    pub async fn namespace_ready(&self, name: &str) -> Namespace {
        let ready = |n: Option<&Namespace>| {
            n.is_some_and(|n| is_ready(n, &n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        };
        match fixtures::wait_for(&self.namespaces(), name, "Ready", WITHIN, ready).await {
            Ok(Some(ns)) => ns,
            other => {
                let now = self.namespaces().get(name).await.ok().and_then(|n| n.status);
                panic!("{name} not Ready ({other:?}): {now:#?}");
            }
        }
    }

    /// Waits until ring `name`'s status passes `check`; panics showing the status otherwise.
    pub async fn ring_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&DeploymentRingStatus) -> bool + Send + 'static,
    ) {
        let status = |r: Option<&DeploymentRing>| r.and_then(|r| r.status.clone()).unwrap_or_default();
        if let Err(e) = fixtures::wait_for(&self.rings(), name, what, WITHIN, move |r| check(&status(r))).await {
            let ring = self.rings().get(name).await.ok();
            panic!("ring {name}: {e}: {:#?}", ring.and_then(|r| r.status));
        }
    }

    /// Waits until cell `name` passes `check`.
    pub async fn cell_until(&self, name: &str, what: &str, check: impl Fn(&Cell) -> bool + Send + 'static) -> Cell {
        match fixtures::wait_for(&self.cells(), name, what, WITHIN, move |c| c.is_some_and(&check)).await {
            Ok(Some(cell)) => cell,
            other => panic!("cell {name}: {other:?}: {:#?}", self.cells().get(name).await.ok().and_then(|c| c.status)),
        }
    }

    pub async fn gone<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        fixtures::wait_for(api, name, "deleted", WITHIN, |o: Option<&K>| o.is_none()).await.expect("deleted");
    }

    /// On a real API server, removes what the run created (its operator tears it down); then
    /// stops the operator.
    pub async fn stop(self) {
        if self.cluster.is_real() {
            self.cluster.cleanup().await.expect("the test run's objects are removed");
        }
        self.operator.stop().await;
    }
}
