//! A whole operator (real controllers and engine, sim cloud) on the in-memory API server.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::cell::sim::SimCellServices;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::fixtures::{self, is_ready};
use cellplane::operator::{Operator, OperatorError, OperatorOptions};
use cellplane_memapi::ApiServer;
use cellplane_workflows::{Clock, EngineConfig};
use kube::Api;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WITHIN: Duration = Duration::from_secs(60);

pub struct Fleet {
    pub server: ApiServer,
    pub client: kube::Client,
    pub cloud: Arc<SimCloud>,
    pub services: Arc<SimCellServices>,
    pub dir: tempfile::TempDir,
    pub clock: Option<Arc<dyn Clock>>,
    pub operator: Arc<Operator>,
    token: CancellationToken,
    task: Option<JoinHandle<Result<(), OperatorError>>>,
}

fn engine_config() -> EngineConfig {
    EngineConfig { lease: Duration::from_secs(2), poll_interval: Duration::from_millis(200), ..EngineConfig::default() }
}

impl Fleet {
    pub async fn start(cloud: SimConfig, clock: Option<Arc<dyn Clock>>) -> Fleet {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let server = ApiServer::new();
        server.register::<Cell>().expect("register Cell");
        server.register::<Namespace>().expect("register Namespace");
        server.register::<DeploymentRing>().expect("register DeploymentRing");
        let client = server.client();
        let dir = tempfile::tempdir().expect("tempdir");
        let cloud = Arc::new(SimCloud::new(cloud));
        let services = Arc::new(SimCellServices::new(Duration::from_millis(1)));
        let (operator, token, task) = launch(&client, &dir, &cloud, &services, clock.clone()).await;
        Fleet { server, client, cloud, services, dir, clock, operator, token, task: Some(task) }
    }

    /// Kills the operator as a crash would (no graceful shutdown), then starts a new one on
    /// the same journal.
    pub async fn crash_and_restart(&mut self) {
        self.token.cancel();
        self.operator.abort().await;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let (operator, token, task) =
            launch(&self.client, &self.dir, &self.cloud, &self.services, self.clock.clone()).await;
        self.operator = operator;
        self.token = token;
        self.task = Some(task);
    }

    pub fn cells(&self) -> Api<Cell> {
        Api::all(self.client.clone())
    }

    pub fn namespaces(&self) -> Api<Namespace> {
        Api::all(self.client.clone())
    }

    pub fn rings(&self) -> Api<DeploymentRing> {
        Api::all(self.client.clone())
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

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take()
            && let Ok(Err(e)) = task.await
        {
            panic!("operator stopped: {e}");
        }
    }
}

async fn launch(
    client: &kube::Client,
    dir: &tempfile::TempDir,
    cloud: &Arc<SimCloud>,
    services: &Arc<SimCellServices>,
    clock: Option<Arc<dyn Clock>>,
) -> (Arc<Operator>, CancellationToken, JoinHandle<Result<(), OperatorError>>) {
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = cellplane_workflows::journal::open(&url, "cellplane").await.expect("journal");
    let options = OperatorOptions { engine: engine_config(), clock, ..OperatorOptions::default() };
    let operator =
        Arc::new(Operator::new(client.clone(), journal, cloud.clone(), services.clone(), options).expect("operator"));
    let (token, task) = operator.spawn();
    (operator, token, task)
}
