//! Running the `cellplane` binary against a test cluster, as a user (or a Deployment) would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cellplane::testing::chart::ChartInstall;
use cellplane::testing::{KUBECONFIG_ENV, TestCluster};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// A kubeconfig file for the test cluster: the real one's, or one for the in-memory API
/// served on loopback (kept while the returned file lives).
pub async fn kubeconfig(cluster: &TestCluster) -> (PathBuf, Option<tempfile::NamedTempFile>) {
    match (&cluster.memory, std::env::var_os(KUBECONFIG_ENV)) {
        (Some(server), _) => {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), server.serve_on_loopback().await.unwrap().to_string()).unwrap();
            (file.path().to_path_buf(), Some(file))
        }
        (None, Some(path)) => (PathBuf::from(path), None),
        (None, None) => unreachable!("a real test cluster comes from {KUBECONFIG_ENV}"),
    }
}

/// A SQLite journal URL in a directory of its own (removed when the directory is dropped).
pub fn sqlite_journal() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    (dir, url)
}

/// `cellplane run` against the test cluster in `namespace`, reconciling the test's objects only,
/// with `extra` arguments and `env`.
pub fn cellplane_run(
    cluster: &TestCluster,
    kubeconfig: &Path,
    journal: &str,
    namespace: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    run_command(Path::new(env!("CARGO_BIN_EXE_cellplane")), cluster, kubeconfig, journal, namespace)
        .args(extra)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `binary run` (this build's or another release's) against the test cluster in `namespace`,
/// reconciling the test's objects only; killed when its `Child` is dropped.
pub fn run_command(binary: &Path, cluster: &TestCluster, kubeconfig: &Path, journal: &str, namespace: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--log-level", "warn", "run", "--journal", journal])
        .args(["--namespace", namespace, "--selector", &cluster.selector()])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .kill_on_drop(true);
    command
}

pub fn signal(child: &Child, signal: i32) {
    let pid = child.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// What the binary printed on stderr before it exited, and whether it succeeded.
pub async fn exit_of(mut child: Child) -> (bool, String) {
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait()).await.expect("exits").unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    (status.success(), stderr)
}

/// The chart's arguments for `cellplane run` with what only a pod has moved to the test's: the
/// journal, the metrics and console ports (free ones) and files the chart mounts (`mounts` maps
/// the chart's path to the test's).
pub fn chart_args(install: &ChartInstall, journal: &str, mounts: &[(&str, &Path)]) -> Vec<String> {
    install
        .args()
        .into_iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--journal", _)) => format!("--journal={journal}"),
            Some(("--metrics-addr", _)) => "--metrics-addr=127.0.0.1:0".into(),
            Some(("--console-addr", addr)) => {
                format!("--console-addr={}:0", addr.rsplit_once(':').map_or(addr, |(host, _)| host))
            }
            Some((flag, value)) => match mounts.iter().find(|(chart, _)| *chart == value) {
                Some((_, path)) => format!("{flag}={}", path.display()),
                None => arg,
            },
            None => arg,
        })
        .collect()
}

/// `cellplane run` as the chart's Deployment runs it (see [`chart_args`]): with a token of the
/// chart's ServiceAccount, POD_NAMESPACE the test's operator namespace, reconciling the test's
/// objects only. Its log (stderr) is appended to `log`.
pub fn chart_run(cluster: &TestCluster, install: &ChartInstall, args: &[String], log: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cellplane"));
    command
        .args(args)
        .env("KUBECONFIG", &install.kubeconfig)
        .env("POD_NAMESPACE", &cluster.namespace)
        .env("CELLPLANE_SELECTOR", cluster.selector())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    spawn_logged(&mut command, log)
}

/// Spawns `command` with its stderr appended to `log` (a pipe nobody reads would block it).
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    command.stderr(Stdio::from(log)).spawn().unwrap()
}
