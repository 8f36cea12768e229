//! Upgrading cellplane in place, on the real API server named by `E2E_KUBECONFIG` (what `make
//! test` starts): the previous release, its binary built from its commit by
//! `scripts/previous-release.sh`, runs a ring mid-bake, a cell mid-upgrade of its Kubernetes
//! version and tenants mid-provisioning, and dies; this build, as the chart installs it (its
//! ServiceAccount and RBAC), takes over its journal and finishes all of it, with no workflow
//! `NonDeterministic`.

mod binary;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use binary::{chart_args, chart_run, kubeconfig, run_command, spawn_logged, sqlite_journal};
use cellplane::api::cell::{CellPhase, ReleaseHealth};
use cellplane::api::namespace::Tier;
use cellplane::api::ring::RingPhase;
use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::fixtures::{self, is_ready, wait_for};
use cellplane::testing::{TestCluster, real_kubeconfig};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

const WITHIN: Duration = Duration::from_secs(120);

/// The previous release's binary (built once, then cached) and the version it says it is.
fn previous_release() -> (PathBuf, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/previous-release.sh");
    let built = std::process::Command::new(script).stderr(Stdio::inherit()).output().expect("runs");
    assert!(built.status.success(), "building the previous release failed");
    let binary = PathBuf::from(String::from_utf8(built.stdout).expect("a path").trim());
    let said = std::process::Command::new(&binary).arg("--version").output().expect("runs");
    let version = String::from_utf8(said.stdout).expect("text").trim().trim_start_matches("cellplane ").to_string();
    (binary, version)
}

/// The SQLite journal both binaries share, as the test reads and holds it.
struct Journal(SqlitePool);

impl Journal {
    async fn open(url: &str) -> Journal {
        let options = SqliteConnectOptions::from_str(url).unwrap().busy_timeout(Duration::from_secs(10));
        Journal(SqlitePool::connect_with(options).await.unwrap())
    }

    async fn count(&self, sql: &str, like: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(like).fetch_one(&self.0).await.unwrap()
    }

    /// Waits until `sql` (one `?`, bound to `like`) counts at least `n`.
    async fn until(&self, what: &str, sql: &str, like: &str, n: i64) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        while self.count(sql, like).await < n {
            assert!(tokio::time::Instant::now() < deadline, "the journal never showed {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses to record the steps whose names start with `prefix`, as a journal outage would:
    /// the workflow that reaches one stops there, and retries.
    async fn refuse(&self, prefix: &str) {
        let trigger = format!(
            "CREATE TRIGGER refused BEFORE INSERT ON events WHEN NEW.name LIKE '{prefix}%' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        );
        sqlx::query(sqlx::AssertSqlSafe(trigger)).execute(&self.0).await.unwrap();
    }

    async fn accept_again(&self) {
        sqlx::query("DROP TRIGGER refused").execute(&self.0).await.unwrap();
    }

    /// `(id, state, app_version, max_app_version)` of every workflow.
    async fn workflows(&self) -> Vec<(String, String, Option<String>, Option<String>)> {
        let sql = "SELECT id, state, app_version, max_app_version FROM workflows ORDER BY id";
        sqlx::query_as(sql).fetch_all(&self.0).await.unwrap()
    }
}

fn cell_ready(cell: Option<&Cell>) -> bool {
    cell.is_some_and(|c| is_ready(c, &c.status.clone().unwrap_or_default().conditions))
}

fn tenant_ready(tenant: Option<&Namespace>) -> bool {
    tenant.is_some_and(|n| is_ready(n, &n.status.clone().unwrap_or_default().conditions))
}

const STEPS_OF: &str = "SELECT count(*) FROM events WHERE workflow_id LIKE ?";
const STEP_NAMED: &str = "SELECT count(*) FROM events WHERE name = ?";
const TENANTS_WITH_STEPS: &str = "SELECT count(DISTINCT workflow_id) FROM events WHERE workflow_id LIKE ?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_release_finishes_what_the_previous_one_left_mid_flight() {
    if real_kubeconfig("upgrading in place").is_none() {
        return;
    }
    let (previous, previous_version) = previous_release();
    assert_ne!(previous_version, cellplane::VERSION, "scripts/previous-release.sh names an earlier release");
    TestCluster::start()
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let (path, _file) = kubeconfig(&cluster).await;
            let (dir, url) = sqlite_journal();
            let previous_log = dir.path().join("previous.log");
            let mut run_previous = run_command(&previous, &cluster, &path, &url, &cluster.namespace);
            let mut old = spawn_logged(run_previous.args(["--metrics-addr", "127.0.0.1:0"]), &previous_log);

            // The previous release provisions two cells and rolls 1.1.0 out to the canary.
            let (canary, main, ring) = (cluster.name("canary"), cluster.name("main"), cluster.name("ring-0"));
            let in_ring = [("cellplane.io/ring", cluster.name("r0"))];
            let in_ring: Vec<(&str, &str)> = in_ring.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let cells = cluster.cells();
            cluster.create(&cells, fixtures::cell(&canary, "us-east-1", &in_ring, 5, "1.0.0")).await.unwrap();
            cluster.create(&cells, fixtures::cell(&main, "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
            for name in [&canary, &main] {
                wait_for(&cells, name, "Ready under the previous release", WITHIN, cell_ready).await.unwrap();
            }
            let rings = cluster.rings();
            let rollout = fixtures::ring(&ring, 0, &cluster.name("r0"), Some("1.1.0"), "75s");
            cluster.create(&rings, rollout).await.unwrap();
            let baking = |r: Option<&DeploymentRing>| {
                r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(RingPhase::Baking))
            };
            let baked_until = wait_for(&rings, &ring, "baking", WITHIN, baking).await.unwrap();
            let baked_until = baked_until.and_then(|r| r.status).and_then(|s| s.baked_until);

            // The main cell's Kubernetes upgrade stops after the control plane, before the node
            // pool: the journal refuses the step and the previous release retries it.
            let journal = Journal::open(&url).await;
            journal.refuse("upgrade-node-pool-").await;
            let upgrade = json!({"spec": {"cluster": {"kubernetesVersion": "1.34"}}});
            cells.patch(&main, &PatchParams::default(), &Patch::Merge(&upgrade)).await.unwrap();
            journal.until("the control plane upgraded", STEP_NAMED, "wait-cluster-1.34", 1).await;

            // Tenants the main cell must answer wait for it, mid-placement.
            let tenants = cluster.namespaces();
            for name in ["alpha", "beta"] {
                let tenant = fixtures::namespace(name, &cluster.account, "eu-west-1", Tier::Standard);
                cluster.create(&tenants, tenant).await.unwrap();
            }
            let tenant_workflows = format!("ns/{}/%", cluster.account);
            journal.until("both tenants' first steps", TENANTS_WITH_STEPS, &tenant_workflows, 2).await;
            let main_steps = journal.count(STEPS_OF, &format!("cell/{main}/%")).await;

            // Mid-flight: the previous release dies, and this one takes over its journal.
            old.kill().await.unwrap();
            let ring_now = rings.get(&ring).await.unwrap().status.unwrap_or_default();
            assert_eq!(ring_now.phase, Some(RingPhase::Baking), "killed mid-bake");
            let main_now = cells.get(&main).await.unwrap().status.unwrap_or_default();
            assert_eq!(main_now.phase, Some(CellPhase::Updating), "killed mid-upgrade");
            for tenant in tenants.list(&Default::default()).await.unwrap() {
                let status = tenant.status.unwrap_or_default();
                assert_eq!(status.assigned_cell, None, "killed before {:?} was placed", tenant.metadata.name);
            }
            // `helm upgrade`: this release's RBAC, and its binary under the chart's ServiceAccount.
            journal.accept_again().await;
            let chart = cluster.install_chart(&["rbac.simCells=true".into()]).await.expect("the chart's RBAC");
            let current_log = dir.path().join("current.log");
            let _new = chart_run(&cluster, &chart, &chart_args(&chart, &url, &[]), &current_log);

            wait_for(&cells, &main, "Ready at 1.34", WITHIN, cell_ready).await.unwrap();
            assert!(journal.count(STEPS_OF, &format!("cell/{main}/%")).await > main_steps);
            assert_eq!(
                journal.count(STEP_NAMED, "upgrade-node-pool-general-1.34").await,
                1,
                "the node pool upgraded once"
            );
            for name in ["alpha", "beta"] {
                let tenant = wait_for(&tenants, name, "Ready", WITHIN, tenant_ready).await.unwrap().unwrap();
                assert_eq!(tenant.status.unwrap_or_default().assigned_cell.as_deref(), Some(main.as_str()));
            }
            let baked = |r: Option<&DeploymentRing>| {
                r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.baked_version.as_deref() == Some("1.1.0"))
            };
            let done = wait_for(&rings, &ring, "baked 1.1.0", WITHIN, baked).await.unwrap().unwrap();
            let status = done.status.unwrap_or_default();
            assert_eq!(status.baked_until, baked_until, "the bake went on where it was, not from the start");

            // What the previous release started, this one ran to the end; nothing diverged.
            let workflows = journal.workflows().await;
            let diverged: Vec<_> = workflows.iter().filter(|w| w.1 == "NonDeterministic").collect();
            assert!(diverged.is_empty(), "NonDeterministic: {diverged:#?}");
            let idle = format!("cell/{canary}/");
            let mid_flight: Vec<_> = workflows
                .iter()
                .filter(|w| w.2.as_deref() == Some(previous_version.as_str()) && !w.0.starts_with(&idle))
                .collect();
            assert_eq!(mid_flight.len(), 4, "the cell, ring and tenants {previous_version} started: {workflows:#?}");
            for (id, _, _, max) in &mid_flight {
                assert_eq!(max.as_deref(), Some(cellplane::VERSION), "{id} is run by this release now");
            }

            // The canary, provisioned before cells ran releases, takes the next version as one.
            let next = json!({"spec": {"version": "1.2.0", "minBakeTime": "0s"}});
            rings.patch(&ring, &PatchParams::default(), &Patch::Merge(&next)).await.unwrap();
            let on_release = |c: Option<&Cell>| {
                c.and_then(|c| c.status.as_ref()?.release.as_ref())
                    .is_some_and(|r| r.version == "1.2.0" && r.health == ReleaseHealth::Healthy)
            };
            if let Err(e) = wait_for(&cells, &canary, "running Release 1.2.0", WITHIN, on_release).await {
                let (ring, cell) = (rings.get(&ring).await.unwrap().status, cells.get(&canary).await.unwrap().status);
                panic!("{e}: ring {ring:#?}, canary {cell:#?}");
            }
            let workflows = journal.workflows().await;
            assert!(workflows.iter().all(|w| w.1 != "NonDeterministic"), "{workflows:#?}");
            let log = std::fs::read_to_string(&current_log).unwrap();
            let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
            assert!(refused.is_empty(), "requests the chart's RBAC refused: {refused:#?}");
            let canary_workflow = workflows.iter().find(|w| w.0.starts_with(&idle)).expect("the canary's workflow");
            assert_eq!(canary_workflow.3.as_deref(), Some(cellplane::VERSION), "{canary_workflow:?}");
        })
        .await;
}
