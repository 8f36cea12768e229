//! End-to-end suite: the operator's tier-3 scenarios against a real cluster.
//!
//! Set `E2E_KUBECONFIG` to a kubeconfig whose user may install CRDs and manage cellplane
//! objects, then `make e2e` (or `cargo test -p cellplane-e2e`). Without it every scenario
//! prints that it did not run, and passes. The operator runs inside the test process with the
//! sim cloud, so the cluster needs nothing but the CRDs, which the suite applies.

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::cell::sim::SimCellServices;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::operator::{Operator, OperatorError, OperatorOptions};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WITHIN: Duration = Duration::from_secs(180);

/// The cluster named by `E2E_KUBECONFIG`, or None (after saying so) when it is unset.
pub async fn cluster(scenario: &str) -> Option<Client> {
    let Some(path) = std::env::var_os("E2E_KUBECONFIG") else {
        println!("e2e scenario {scenario:?} DID NOT RUN: set E2E_KUBECONFIG to run it against a cluster");
        return None;
    };
    Some(connect(std::path::Path::new(&path)).await)
}

/// A client for the cluster a kubeconfig names, with the cellplane CRDs installed.
pub async fn connect(kubeconfig: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig is readable");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig");
    let client = Client::try_from(config).expect("client");
    install_crds(&client).await;
    client
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in cellplane::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("cellplane-e2e").force(), &Patch::Apply(&crd)).await.expect("apply CRD");
    }
    // Established before objects are created.
    for (_, crd) in cellplane::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = kube::runtime::wait::conditions::is_crd_established();
        tokio::time::timeout(WITHIN, kube::runtime::wait::await_condition(api.clone(), &name, established))
            .await
            .expect("CRD established in time")
            .expect("watch");
    }
}

/// A unique prefix for this run's object names (cluster-scoped objects share one namespace).
pub fn prefix() -> String {
    format!("e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// The operator running in this process against the cluster.
pub struct Running {
    pub operator: Arc<Operator>,
    pub cloud: Arc<SimCloud>,
    token: CancellationToken,
    task: JoinHandle<Result<(), OperatorError>>,
    _dir: tempfile::TempDir,
}

pub async fn start_operator(client: &Client) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = cellplane_workflows::journal::open(&url, "cellplane").await.expect("journal");
    let cloud = Arc::new(SimCloud::new(SimConfig::default()));
    let services = Arc::new(SimCellServices::new(Duration::from_millis(5)));
    let operator = Arc::new(
        Operator::new(client.clone(), journal, cloud.clone(), services, OperatorOptions::default()).expect("operator"),
    );
    let (token, task) = operator.spawn();
    Running { operator, cloud, token, task, _dir: dir }
}

impl Running {
    pub async fn stop(self) {
        self.token.cancel();
        if let Ok(Err(e)) = self.task.await {
            panic!("operator stopped: {e}");
        }
    }
}

/// Scenario: cells, namespaces and a ring converge to Ready; then everything is deleted and
/// the sim cloud shows no duplicate and no leak.
pub async fn converge_then_tear_down(client: &Client) {
    use cellplane::api::namespace::Tier;
    use cellplane::fixtures::{self, cell, is_ready, namespace, ring};
    let running = start_operator(client).await;
    let (cells, namespaces, rings) = apis(client);
    let p = prefix();
    let canary = format!("{p}-canary");
    let prod = format!("{p}-prod");
    let ring_name = format!("{p}-ring-0");
    fixtures::create(&cells, &cell(&canary, "eu-west-1", &[("cellplane.io/ring", &canary)], 10, "1.0.0"))
        .await
        .unwrap();
    fixtures::create(&cells, &cell(&prod, "eu-west-1", &[("cellplane.io/ring", &prod)], 10, "1.0.0")).await.unwrap();
    let ns_names: Vec<String> = (0..5).map(|i| format!("{p}-ns-{i}")).collect();
    for name in &ns_names {
        fixtures::create(&namespaces, &namespace(name, "eu-west-1", Tier::Standard)).await.unwrap();
    }
    fixtures::create(&rings, &ring(&ring_name, 0, &canary, Some("1.0.0"), "0s")).await.unwrap();

    for name in [&canary, &prod] {
        fixtures::wait_for(&cells, name, "Ready", WITHIN, |c: Option<&Cell>| {
            c.is_some_and(|c| is_ready(c, &c.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        })
        .await
        .unwrap();
    }
    for name in &ns_names {
        fixtures::wait_for(&namespaces, name, "Ready", WITHIN, |n: Option<&Namespace>| {
            n.is_some_and(|n| is_ready(n, &n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        })
        .await
        .unwrap();
    }
    fixtures::wait_for(&rings, &ring_name, "baked", WITHIN, |r: Option<&DeploymentRing>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.baked_version.as_deref() == Some("1.0.0"))
    })
    .await
    .unwrap();
    for name in &ns_names {
        namespaces.delete(name, &Default::default()).await.unwrap();
    }
    rings.delete(&ring_name, &Default::default()).await.unwrap();
    for name in [&canary, &prod] {
        cells.delete(name, &Default::default()).await.unwrap();
    }
    for name in [&canary, &prod] {
        fixtures::wait_for(&cells, name, "deleted", WITHIN, |c: Option<&Cell>| c.is_none()).await.unwrap();
    }
    assert!(running.cloud.duplicates().is_empty(), "created twice: {:?}", running.cloud.duplicates());
    let leaks = running.cloud.leaks([canary.as_str(), prod.as_str()]);
    assert!(leaks.is_empty(), "leaked: {leaks:?}");
    running.stop().await;
}

pub fn apis(client: &Client) -> (Api<Cell>, Api<Namespace>, Api<DeploymentRing>) {
    (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()))
}
