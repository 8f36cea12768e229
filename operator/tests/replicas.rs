//! Several replicas, as the chart deploys them: two `cellplane run --leader-election` processes
//! on one PostgreSQL journal and one API server (the real one named by `E2E_KUBECONFIG`, else
//! the in-memory one served over HTTP). Only the leader runs the controllers; both run
//! workflows. What a workflow on the other replica publishes reaches the leader's status
//! writes, without a failover; and after one, the survivor carries on.

mod binary;

use std::str::FromStr;
use std::time::Duration;

use binary::{cellplane_run, kubeconfig, signal};
use cellplane::api::namespace::Tier;
use cellplane::api::{Cell, Namespace};
use cellplane::fixtures::{self, is_ready};
use cellplane::testing::TestCluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::process::Child;

const WITHIN: Duration = Duration::from_secs(120);

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin() -> PgConnection {
    PgConnection::connect_with(&PgConnectOptions::from_str(&database_url()).unwrap()).await.unwrap()
}

/// The engines that committed steps of each workflow kind, from the journal's history.
async fn step_owners(schema: &str) -> Vec<(String, String)> {
    let sql = format!(
        "SELECT DISTINCT split_part(e.workflow_id, '/', 1), e.owner FROM \"{schema}\".events e \
         WHERE e.kind = 'step' AND e.owner IS NOT NULL ORDER BY 1, 2"
    );
    sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&mut admin().await).await.unwrap()
}

async fn ready<K>(api: &Api<K>, name: &str, conditions: fn(&K) -> Vec<cellplane::api::Condition>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let check = move |o: Option<&K>| o.is_some_and(|o| is_ready(o, &conditions(o)));
    if let Err(e) = fixtures::wait_for(api, name, "Ready", WITHIN, check).await {
        panic!("{name}: {e}: {:?}", api.get(name).await.map(|o| conditions(&o)));
    }
}

async fn holder(cluster: &TestCluster) -> Option<(String, i32)> {
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let spec = leases.get_opt("cellplane-leader").await.unwrap()?.spec?;
    Some((spec.holder_identity.unwrap_or_default(), spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_converge_without_a_failover_and_after_one() {
    TestCluster::start()
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let schema = format!("replicas_{}", cluster.run);
            let journal = database_url();
            let (path, _file) = kubeconfig(&cluster).await;
            // Two workflows at a time each: eight workflows cannot all run on one replica.
            let start = |pod: &str| -> Child {
                cellplane_run(
                    &cluster,
                    &path,
                    &journal,
                    &cluster.namespace,
                    &[
                        "--leader-election",
                        "--journal-schema",
                        &schema,
                        "--max-workflows",
                        "2",
                        "--metrics-addr",
                        "127.0.0.1:0",
                    ],
                    &[("POD_NAME", pod)],
                )
            };
            let mut a = start("replica-a");
            let mut b = start("replica-b");
            let leader = loop {
                if let Some((holder, _)) = holder(&cluster).await
                    && !holder.is_empty()
                {
                    break holder;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };

            let cells: Vec<String> = (0..3).map(|i| cluster.name(&format!("cell-{i}"))).collect();
            for name in &cells {
                cluster.create(&cluster.cells(), fixtures::cell(name, "eu-west-1", &[], 10, "1.0.0")).await.unwrap();
            }
            let tenants: Vec<String> = (0..5).map(|i| cluster.name(&format!("tenant-{i}"))).collect();
            for name in &tenants {
                let tenant = fixtures::namespace(name, &cluster.account, "eu-west-1", Tier::Standard);
                cluster.create(&cluster.namespaces(), tenant).await.unwrap();
            }
            for name in &cells {
                ready::<Cell>(&cluster.cells(), name, |c| c.status.clone().unwrap_or_default().conditions).await;
            }
            for name in &tenants {
                ready::<Namespace>(&cluster.namespaces(), name, |n| n.status.clone().unwrap_or_default().conditions)
                    .await;
            }
            // No failover happened, and the replica that does not lead ran workflows too.
            let (still, transitions) = holder(&cluster).await.unwrap();
            assert_eq!((still.as_str(), transitions), (leader.as_str(), 0), "the leader never changed");
            let owners = step_owners(&schema).await;
            let replicas: std::collections::BTreeSet<&str> = owners
                .iter()
                .filter_map(|(_, owner)| ["replica-a", "replica-b"].into_iter().find(|r| owner.starts_with(r)))
                .collect();
            assert_eq!(replicas.len(), 2, "both replicas ran workflow steps: {owners:?}");

            // The leader dies; the other replica takes the lease and serves a new tenant.
            let (dead, survivor) = if leader.starts_with("replica-a") { (&mut a, &mut b) } else { (&mut b, &mut a) };
            dead.kill().await.unwrap();
            let late = cluster.name("late");
            let tenant = fixtures::namespace(&late, &cluster.account, "eu-west-1", Tier::Standard);
            cluster.create(&cluster.namespaces(), tenant).await.unwrap();
            ready::<Namespace>(&cluster.namespaces(), &late, |n| n.status.clone().unwrap_or_default().conditions).await;
            let (new_leader, transitions) = holder(&cluster).await.unwrap();
            assert_ne!(new_leader, leader, "the survivor leads");
            assert_eq!(transitions, 1);

            cluster.cleanup().await.unwrap();
            signal(survivor, libc::SIGTERM);
            let exited = tokio::time::timeout(WITHIN, survivor.wait()).await.expect("the survivor stops").unwrap();
            assert!(exited.success(), "the survivor exits cleanly after SIGTERM: {exited}");
            let mut conn = admin().await;
            sqlx::raw_sql(AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(&mut conn).await.unwrap();
        })
        .await;
}
