//! A whole operator (real controllers and engine, sim cloud, recording in-cell services) on an
//! in-memory API server of its own.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::namespace::Tier;
use cellplane::api::{Cell, DeploymentRing, Namespace};
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
    pub async fn start(cloud: SimConfig, clock: Option<Arc<dyn Clock>>) -> Fleet {
        let cluster = TestCluster::in_memory(|_| {}).await.expect("an in-memory cluster");
        let cloud = Arc::new(SimCloud::new(cloud));
        let services = Arc::new(SimCellServices::new(Duration::from_millis(1)));
        let setup = OperatorSetup { clock, ..OperatorSetup::new(cloud.clone(), services.clone()) };
        let operator = TestOperator::start(&cluster, setup.clone()).await;
        Fleet { cluster, cloud, services, setup, operator }
    }

    /// Kills the operator as a crash would (no graceful shutdown), then starts a new one on
    /// the same journal.
    pub async fn crash_and_restart(&mut self) {
        self.operator.crash_and_restart(&self.cluster, self.setup.clone()).await;
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

    pub async fn gone<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        fixtures::wait_for(api, name, "deleted", WITHIN, |o: Option<&K>| o.is_none()).await.expect("deleted");
    }

    pub async fn stop(self) {
        self.operator.stop().await;
    }
}
