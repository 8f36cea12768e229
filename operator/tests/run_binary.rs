//! `cellplane run` as a user starts it: the binary, a kubeconfig, a journal file. The cluster is
//! the in-memory API served over HTTP (no real cluster runs here; `make e2e` takes one).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cellplane::api::{Cell, DeploymentRing, Namespace};
use cellplane::cli::operator::{apply_dir, register_kinds};
use cellplane::fixtures::{is_ready, wait_for};
use kube::api::ListParams;
use kube::{Api, Client, Resource};

const WITHIN: Duration = Duration::from_secs(120);

/// Waits until every object of kind `K` is Ready for its generation; returns how many there are.
async fn all_ready<K>(client: &Client, conditions: fn(&K) -> Vec<cellplane::api::conditions::Condition>) -> usize
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let names: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().filter_map(|o| o.meta().name.clone()).collect();
    for name in &names {
        wait_for(&api, name, "Ready", WITHIN, move |obj: Option<&K>| obj.is_some_and(|o| is_ready(o, &conditions(o))))
            .await
            .unwrap();
    }
    names.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellplane_run_with_a_kubeconfig_converges_the_examples_and_stops_cleanly_on_sigterm() {
    let server = cellplane_memapi::ApiServer::new();
    register_kinds(&server).unwrap();
    let mut kubeconfig = tempfile::NamedTempFile::new().unwrap();
    write!(kubeconfig, "{}", server.serve_on_loopback().await.unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = format!("sqlite://{}", dir.path().join("journal.db").display());
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_cellplane"))
        .args(["--log-level", "warn", "run", "--metrics-addr", "127.0.0.1:0", "--journal", &journal])
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let client = server.client();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let applied = apply_dir(&client, &examples).await.unwrap();
    let ready = all_ready::<Cell>(&client, |c| c.status.clone().unwrap_or_default().conditions).await
        + all_ready::<DeploymentRing>(&client, |r| r.status.clone().unwrap_or_default().conditions).await
        + all_ready::<Namespace>(&client, |n| n.status.clone().unwrap_or_default().conditions).await;
    assert_eq!(ready, applied, "every applied example is Ready");

    let pid = operator.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(40), operator.wait()).await.expect("exits after SIGTERM");
    assert!(status.unwrap().success(), "a graceful shutdown exits 0");
}
