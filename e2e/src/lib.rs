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

use cellplane::api::conditions::{self, ConditionStatus};
use cellplane::api::namespace::{NamespacePhase, Tier};
use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::cell::cluster::{ClusterCellServices, ServicesConfig};
use cellplane::cell::ledger::{Ledger, Recorded};
use cellplane::cell::tls::SimDataPlane;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::fixtures::{self, cell, is_ready, ring};
use cellplane::testing::{OperatorSetup, TestCluster, TestOperator, WITHIN, real_kubeconfig};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::ListParams;

/// The cluster named by `E2E_KUBECONFIG`, or None (after saying so) when it is unset; under
/// `make test` a missing cluster fails instead.
pub async fn cluster(scenario: &str) -> Option<TestCluster> {
    let path = real_kubeconfig(&format!("e2e scenario {scenario:?}"))?;
    Some(TestCluster::real(&path).await.expect("the e2e cluster"))
}

/// Who the operator is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The ServiceAccount and RBAC of the Helm chart, as installed (a real cluster).
    Chart,
    /// The test's own admin credentials (an API without RBAC).
    Admin,
}

/// The real in-cell services (what they are asked to do recorded in `ledger`) and the sim cloud,
/// with leader election, as `cellplane run`, acting with `client`.
fn setup(cluster: &TestCluster, client: &kube::Client, cloud: &Arc<SimCloud>, ledger: &Arc<Ledger>) -> OperatorSetup {
    let config = ServicesConfig { namespace: cluster.namespace.clone(), ..ServicesConfig::default() };
    let services = Arc::new(ClusterCellServices::new(client.clone(), config, SimDataPlane::new()));
    let services = Arc::new(Recorded::new(services, ledger.clone()));
    OperatorSetup { leader_election: true, client: Some(client.clone()), ..OperatorSetup::new(cloud.clone(), services) }
}

/// Scenario: cells, namespaces of two accounts and a ring converge to Ready, through an
/// operator crash; then everything is deleted, and nothing is left in the sim cloud, in
/// Secrets or in routes.
pub async fn converge_then_tear_down(cluster: TestCluster, identity: Identity) {
    cluster
        .scenario(|cluster| async move {
            let client = match identity {
                Identity::Chart => {
                    let values = ["leaderElection.enabled=true".to_string(), "rbac.simCells=true".into()];
                    cluster.install_chart(&values).await.expect("the chart's RBAC").client
                }
                Identity::Admin => cluster.client.clone(),
            };
            let cloud =
                Arc::new(SimCloud::new(SimConfig { latency: Duration::from_millis(20), ..SimConfig::default() }));
            let ledger = Arc::new(Ledger::default());
            let setup = |cluster: &TestCluster| setup(cluster, &client, &cloud, &ledger);
            let mut operator = TestOperator::start(&cluster, setup(&cluster)).await;
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
            operator.crash_and_restart(&cluster, setup(&cluster)).await;

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
            let in_cells = ledger.duplicates();
            assert!(in_cells.is_empty(), "made twice in cells: {in_cells:?}");
            assert!(ledger.executions().len() >= 3 * tenants.len(), "{:?}", ledger.executions());
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

/// Scenario: the chart without the permission to write Secrets in the tenant's account: the
/// tenant stalls naming the verb, resource and namespace it lacks, and is not failed; once the
/// account is listed in the chart's values it goes on where it stopped, in the same workflow.
pub async fn a_missing_permission_is_waited_out(cluster: TestCluster) {
    cluster
        .scenario(|cluster| async move {
            let limited = |accounts: &[&str]| {
                let mut values =
                    vec!["leaderElection.enabled=true".to_string(), "rbac.accounts.clusterWide=false".into()];
                values.extend(accounts.iter().enumerate().map(|(i, a)| format!("rbac.accounts.namespaces[{i}]={a}")));
                values
            };
            let chart = cluster.install_chart(&limited(&[])).await.expect("the chart's RBAC");
            // The sim cell's release runs beside the operator: granted for its namespace alone
            // (rbac.simCells would let the operator write Secrets everywhere).
            let cell_name = cluster.name("cell");
            cluster.grant_release_namespace(&chart, &format!("service-{cell_name}")).await.expect("the release's RBAC");
            let client = chart.client.clone();
            let (cloud, ledger) = (Arc::new(SimCloud::new(SimConfig::default())), Arc::new(Ledger::default()));
            let operator = TestOperator::start(&cluster, setup(&cluster, &client, &cloud, &ledger)).await;
            cluster.create(&cluster.cells(), cell(&cell_name, "eu-west-1", &[], 10, "1.0.0")).await.unwrap();
            let tenant = cluster.name("web");
            let account = cluster.account.clone();
            let namespaces = cluster.namespaces();
            cluster
                .create(&namespaces, fixtures::namespace(&tenant, &account, "eu-west-1", Tier::Standard))
                .await
                .unwrap();

            let stalled = |n: Option<&Namespace>| {
                let conditions = n.and_then(|n| n.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
                conditions::find(&conditions, conditions::types::STALLED)
                    .is_some_and(|c| c.status == ConditionStatus::True && c.reason == "MissingPermission")
            };
            let ns = fixtures::wait_for(&namespaces, &tenant, "stalled on a permission", WITHIN, stalled)
                .await
                .unwrap()
                .unwrap();
            let status = ns.status.clone().unwrap();
            let message = conditions::find(&status.conditions, conditions::types::STALLED).unwrap().message.clone();
            for part in ["cannot patch resource \"secrets\"", &format!("in the namespace \"{account}\"")] {
                assert!(message.contains(part), "the Stalled message names {part}: {message}");
            }
            assert_ne!(status.phase, Some(NamespacePhase::Failed), "a missing permission is not a failure");
            let workflow = status.workflow.map(|w| w.id).expect("the tenant's workflow");

            cluster.install_chart(&limited(&[&account])).await.expect("the chart's RBAC, account listed");
            let ns = fixtures::wait_for(&namespaces, &tenant, "Ready", WITHIN, |n: Option<&Namespace>| {
                n.is_some_and(|n| is_ready(n, &n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
            })
            .await
            .unwrap()
            .unwrap();
            let status = ns.status.unwrap();
            assert_eq!(status.workflow.map(|w| w.id), Some(workflow), "the same workflow went on");
            assert_eq!(status.assigned_cell.as_deref(), Some(cell_name.as_str()));
            assert!(ledger.duplicates().is_empty(), "retried under one key each: {:?}", ledger.duplicates());
            operator.stop().await;
        })
        .await;
}
