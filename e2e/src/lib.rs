//! End-to-end suite: the operator's scenarios against a real cluster.
//!
//! Set `E2E_KUBECONFIG` to a kubeconfig whose user may install CRDs, create namespaces and
//! manage cellplane objects, then `make e2e` (or `cargo test -p cellplane-e2e`); `make test`
//! starts a real kube-apiserver and sets it. Without it every scenario prints that it did not
//! run, and passes. The operator runs inside the test process with the sim cloud and the real
//! in-cell services (Secrets, routes, a Lease and mutual TLS against loopback front doors), and
//! reconciles only the objects of its own test run, so the suite can share a cluster with other
//! runs and with an installed operator; everything a scenario created is removed, also when it
//! fails.

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::namespace::Tier;
use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::cell::cluster::{ClusterCellServices, ServicesConfig};
use cellplane::cell::tls::SimDataPlane;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::fixtures::{self, cell, is_ready, ring};
use cellplane::testing::{KUBECONFIG_ENV, OperatorSetup, TestCluster, TestOperator, WITHIN};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::ListParams;

/// The cluster named by `E2E_KUBECONFIG`, or None (after saying so) when it is unset.
pub async fn cluster(scenario: &str) -> Option<TestCluster> {
    let Some(path) = std::env::var_os(KUBECONFIG_ENV) else {
        println!("e2e scenario {scenario:?} DID NOT RUN: set {KUBECONFIG_ENV} to run it against a cluster");
        return None;
    };
    Some(TestCluster::real(std::path::Path::new(&path)).await.expect("the e2e cluster"))
}

/// The real in-cell services and the sim cloud, with leader election, as `cellplane run`.
fn setup(cluster: &TestCluster, cloud: &Arc<SimCloud>) -> OperatorSetup {
    let config = ServicesConfig { namespace: cluster.namespace.clone(), ..ServicesConfig::default() };
    let services = Arc::new(ClusterCellServices::new(cluster.client.clone(), config, SimDataPlane::new()));
    OperatorSetup { leader_election: true, ..OperatorSetup::new(cloud.clone(), services) }
}

/// Scenario: cells, namespaces of two accounts and a ring converge to Ready, through an
/// operator crash; then everything is deleted, and nothing is left in the sim cloud, in
/// Secrets or in routes.
pub async fn converge_then_tear_down(cluster: TestCluster) {
    cluster
        .scenario(|cluster| async move {
            let cloud =
                Arc::new(SimCloud::new(SimConfig { latency: Duration::from_millis(20), ..SimConfig::default() }));
            let mut operator = TestOperator::start(&cluster, setup(&cluster, &cloud)).await;
            let (canary, prod) = (cluster.name("canary"), cluster.name("prod"));
            let ring_name = cluster.name("ring-0");
            let cells = cluster.cells();
            for name in [&canary, &prod] {
                cluster
                    .create(&cells, cell(name, "eu-west-1", &[("cellplane.io/ring", name)], 10, "1.0.0"))
                    .await
                    .unwrap();
            }
            let other_account = cluster.new_account("globex").await.unwrap();
            let tenants: Vec<(String, String)> = (0..4)
                .map(|i| {
                    let account = if i % 2 == 0 { &cluster.account } else { &other_account };
                    // The same name in two accounts: two tenants.
                    (cluster.name(&format!("ns-{}", i / 2)), account.clone())
                })
                .collect();
            for (name, account) in &tenants {
                let api: Api<Namespace> = Api::namespaced(cluster.client.clone(), account);
                cluster.create(&api, fixtures::namespace(name, account, "eu-west-1", Tier::Standard)).await.unwrap();
            }
            cluster.create(&cluster.rings(), ring(&ring_name, 0, &canary, Some("1.0.0"), "0s")).await.unwrap();

            // Crash once the first cell has its network, mid-provisioning.
            let network_ready = |c: Option<&Cell>| {
                let conditions = c.and_then(|c| c.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
                cellplane::api::conditions::is_true(&conditions, "NetworkReady")
            };
            fixtures::wait_for(&cells, &canary, "network created", WITHIN, network_ready).await.unwrap();
            operator.crash_and_restart(&cluster, setup(&cluster, &cloud)).await;

            for name in [&canary, &prod] {
                fixtures::wait_for(&cells, name, "Ready", WITHIN, |c: Option<&Cell>| {
                    c.is_some_and(|c| is_ready(c, &c.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
                })
                .await
                .unwrap();
            }
            let mut endpoints = Vec::new();
            for (name, account) in &tenants {
                let api: Api<Namespace> = Api::namespaced(cluster.client.clone(), account);
                let ns = fixtures::wait_for(&api, name, "Ready", WITHIN, |n: Option<&Namespace>| {
                    n.is_some_and(|n| is_ready(n, &n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
                })
                .await
                .unwrap()
                .unwrap();
                endpoints.push(ns.status.and_then(|s| s.endpoint).unwrap());
            }
            endpoints.sort();
            endpoints.dedup();
            assert_eq!(endpoints.len(), tenants.len(), "every tenant has an endpoint of its own: {endpoints:?}");
            fixtures::wait_for(&cluster.rings(), &ring_name, "baked", WITHIN, |r: Option<&DeploymentRing>| {
                r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.baked_version.as_deref() == Some("1.0.0"))
            })
            .await
            .unwrap();

            for (name, account) in &tenants {
                let api: Api<Namespace> = Api::namespaced(cluster.client.clone(), account);
                api.delete(name, &Default::default()).await.unwrap();
            }
            cluster.rings().delete(&ring_name, &Default::default()).await.unwrap();
            for name in [&canary, &prod] {
                cells.delete(name, &Default::default()).await.unwrap();
            }
            for name in [&canary, &prod] {
                fixtures::wait_for(&cells, name, "deleted", WITHIN, |c: Option<&Cell>| c.is_none()).await.unwrap();
            }
            assert!(cloud.duplicates().is_empty(), "created twice: {:?}", cloud.duplicates());
            let leaks = cloud.leaks([canary.as_str(), prod.as_str()]);
            assert!(leaks.is_empty(), "leaked: {leaks:?}");
            for namespace in [&cluster.namespace, &cluster.account, &other_account] {
                let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
                let left: Vec<String> = secrets
                    .list(&ListParams::default().labels("app.kubernetes.io/managed-by=cellplane"))
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .collect();
                assert!(left.is_empty(), "Secrets left in {namespace}: {left:?}");
            }
            let routes: Api<Ingress> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
            let left = routes.list(&ListParams::default()).await.unwrap().items;
            assert!(left.is_empty(), "routes left: {left:?}");
            operator.stop().await;
        })
        .await;
}
