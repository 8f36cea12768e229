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
use cellplane::operator::{Operator, OperatorOptions};
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
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("E2E_KUBECONFIG is readable");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig");
    let client = Client::try_from(config).expect("client");
    install_crds(&client).await;
    Some(client)
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
    task: JoinHandle<()>,
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
    let token = CancellationToken::new();
    let task = {
        let (operator, token) = (operator.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = operator.run(token).await {
                panic!("operator stopped: {e}");
            }
        })
    };
    Running { operator, cloud, token, task, _dir: dir }
}

impl Running {
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

pub fn apis(client: &Client) -> (Api<Cell>, Api<Namespace>, Api<DeploymentRing>) {
    (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()))
}
