//! `cellplane run` as a user starts it: the binary, a kubeconfig, a journal file; on the real
//! API server named by `E2E_KUBECONFIG` (what `make test` starts) as the Helm chart installs it
//! (its arguments, its ServiceAccount and RBAC), else on the in-memory one served over HTTP.

mod binary;

use std::path::Path;
use std::time::Duration;

use binary::{cellplane_run, chart_args, chart_run, exit_of, kubeconfig, signal, sqlite_journal};
use cellplane::api::conditions::Condition;
use cellplane::api::{Cell, DeploymentRing, Namespace, Release};
use cellplane::cli::operator::{Applied, apply_dir};
use cellplane::fixtures::{is_ready, wait_for};
use cellplane::testing::{RUN_LABEL, TestCluster};
use kube::api::DeleteParams;
use kube::{Api, Client, Resource};

const WITHIN: Duration = Duration::from_secs(120);

/// Waits until the applied object of kind `K` is Ready for its generation.
async fn ready<K>(api: Api<K>, object: &Applied, conditions: fn(&K) -> Vec<Condition>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let check = move |obj: Option<&K>| obj.is_some_and(|o| is_ready(o, &conditions(o)));
    if let Err(e) = wait_for(&api, &object.name, "Ready", WITHIN, check).await {
        panic!("{} {}: {e}: {:?}", object.kind, object.name, api.get(&object.name).await.map(|o| conditions(&o)));
    }
}

async fn all_ready(client: &Client, applied: &[Applied]) -> usize {
    let mut count = 0;
    for object in applied.iter().filter(|o| o.api_version == "cellplane.io/v1alpha1") {
        match (object.kind.as_str(), &object.namespace) {
            ("Cell", _) => {
                let api = Api::<Cell>::all(client.clone());
                ready(api, object, |c| c.status.clone().unwrap_or_default().conditions).await
            }
            ("DeploymentRing", _) => {
                let api = Api::<DeploymentRing>::all(client.clone());
                ready(api, object, |r| r.status.clone().unwrap_or_default().conditions).await
            }
            ("Release", _) => {
                let api = Api::<Release>::all(client.clone());
                ready(api, object, |r| r.status.clone().unwrap_or_default().conditions).await
            }
            (_, namespace) => {
                let api = Api::<Namespace>::namespaced(client.clone(), namespace.as_deref().unwrap_or_default());
                ready(api, object, |n| n.status.clone().unwrap_or_default().conditions).await
            }
        }
        count += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellplane_run_converges_the_examples_through_a_sigkill_and_stops_cleanly_on_sigterm() {
    TestCluster::start()
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let (path, _file) = kubeconfig(&cluster).await;
            let (dir, journal) = sqlite_journal();
            let log = dir.path().join("operator.log");
            // The examples bring their own Releases; in memory, their workloads are played.
            cluster.without_test_releases().await.unwrap();
            let playing = tokio_util::sync::CancellationToken::new();
            if cluster.memory.is_some() {
                tokio::spawn(cellplane::cloud::workloads::run(cluster.client.clone(), playing.clone()));
            }
            let _stop_playing = playing.drop_guard();
            // On a real cluster, as the chart installs it; the in-memory API has no RBAC.
            let chart = match cluster.is_real() {
                true => Some(cluster.install_chart(&["rbac.simCells=true".into()]).await.expect("the chart's RBAC")),
                false => None,
            };
            let start = || match &chart {
                Some(chart) => chart_run(&cluster, chart, &chart_args(chart, &journal, &[]), &log),
                None => cellplane_run(
                    &cluster,
                    &path,
                    &journal,
                    &cluster.namespace,
                    &["--metrics-addr", "127.0.0.1:0"],
                    &[],
                ),
            };
            let mut operator = start();
            let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
            let applied = apply_dir(&cluster.client, &examples, &[(RUN_LABEL, &cluster.run)]).await.unwrap();

            // Killed mid-way (a cell is provisioning), as a node failure would.
            let provisioning = |c: Option<&Cell>| {
                c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                    cellplane::api::conditions::is_true(&s.conditions, cellplane::api::cell::NETWORK_READY)
                })
            };
            wait_for(&cluster.cells(), "eu-canary-1", "network created", WITHIN, provisioning).await.unwrap();
            operator.kill().await.unwrap();
            let mut operator = start();

            let ready = all_ready(&cluster.client, &applied).await;
            let expected = applied.iter().filter(|o| o.api_version == "cellplane.io/v1alpha1").count();
            assert_eq!(ready, expected, "every applied example is Ready");

            // A deleted tenant finishes deleting, with nothing left behind.
            let web: Api<Namespace> = Api::namespaced(cluster.client.clone(), "acme");
            web.delete("web", &DeleteParams::default()).await.unwrap();
            wait_for(&web, "web", "deleted", WITHIN, |n: Option<&Namespace>| n.is_none()).await.unwrap();
            let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cluster.client.clone(), "acme");
            let left: Vec<String> = secrets
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|s| s.metadata.name)
                .collect();
            assert!(left.iter().all(|s| !s.starts_with("web-")), "Secrets of acme/web left: {left:?}");

            // Torn down by the operator while it runs, then a graceful stop.
            cluster.cleanup().await.unwrap();
            signal(&operator, libc::SIGTERM);
            let status =
                tokio::time::timeout(Duration::from_secs(40), operator.wait()).await.expect("exits after SIGTERM");
            assert!(status.unwrap().success(), "a graceful shutdown exits 0");
            if chart.is_some() {
                let log = std::fs::read_to_string(&log).unwrap();
                let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
                assert!(refused.is_empty(), "requests the chart's RBAC refused: {refused:#?}");
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellplane_run_says_what_is_wrong_at_start_and_exits() {
    TestCluster::start()
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let (path, _file) = kubeconfig(&cluster).await;
            let (_dir, journal) = sqlite_journal();

            let missing = cluster.name("missing");
            let child = cellplane_run(&cluster, &path, &journal, &missing, &["--metrics-addr", "127.0.0.1:0"], &[]);
            let (ok, stderr) = exit_of(child).await;
            assert!(!ok, "a missing namespace is an error");
            assert!(stderr.contains(&format!("namespace \"{missing}\" does not exist")), "{stderr}");
            assert!(stderr.contains("kubectl create namespace"), "says how to fix it: {stderr}");

            let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = taken.local_addr().unwrap().to_string();
            let child = cellplane_run(&cluster, &path, &journal, &cluster.namespace, &["--metrics-addr", &addr], &[]);
            let (ok, stderr) = exit_of(child).await;
            assert!(!ok, "a metrics address in use is an error");
            assert!(stderr.contains(&format!("cannot serve /metrics on {addr}")), "{stderr}");
        })
        .await;
}
