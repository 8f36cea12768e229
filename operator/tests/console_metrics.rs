//! The SRE's dashboard and alerts: the alert rules pass `promtool check rules`, and every
//! metric a dashboard panel or an alert uses is one that `cellplane run` really exports on
//! /metrics (scraped from the binary while it converges the examples).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cellplane::api::Namespace;
use cellplane::api::namespace::Tier;
use cellplane::cli::operator::apply_dir;
use cellplane::fixtures::{self, is_ready, wait_for};
use cellplane::testing::TestCluster;
use kube::Api;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

const WITHIN: Duration = Duration::from_secs(120);

fn chart_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/cellplane/files").join(name)
}

/// Every `expr` string in a YAML or JSON document.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

/// The cellplane metric names the dashboard and the alert rules query.
fn used_metrics() -> BTreeSet<String> {
    let rules: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart_file("prometheus-rules.yaml")).unwrap()).unwrap();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_file("grafana-dashboard.json")).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&rules, &mut all);
    let alerts = all.len();
    exprs(&dashboard, &mut all);
    assert!(
        alerts >= 5 && all.len() > alerts + 10,
        "the rules and the dashboard have queries ({alerts}, {})",
        all.len()
    );
    let name = regex::Regex::new(r"\bcellplane_[a-z0-9_]+").unwrap();
    all.iter().flat_map(|expr| name.find_iter(expr).map(|m| m.as_str().to_string())).collect()
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let output = match std::process::Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(chart_file("prometheus-rules.yaml"))
        .output()
    {
        Ok(output) => output,
        Err(e) if std::env::var_os("CONSOLE_REQUIRE_BROWSER").is_some() => {
            panic!("{promtool}: {e} (scripts/with-browser.sh installs Debian's prometheus package, which has it)")
        }
        Err(e) => {
            eprintln!("SKIPPED: {promtool}: {e}; run `make test`, which installs it");
            return;
        }
    };
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool check rules failed:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}

/// The sample names /metrics shows (histograms as their _bucket, _sum and _count series).
async fn scrape(addr: &str) -> BTreeSet<String> {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return BTreeSet::new() };
    let request = "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return BTreeSet::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .lines()
        .filter(|line| line.starts_with("cellplane_"))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let used = used_metrics();
    let cluster = TestCluster::in_memory(|_| {}).await.unwrap();
    cluster.without_test_releases().await.unwrap();
    let server = cluster.memory.clone().expect("in memory");
    // Nothing runs pods in memory: the examples' workloads are played.
    let playing = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cellplane::cloud::workloads::run(cluster.client.clone(), playing.clone()));
    let _stop_playing = playing.drop_guard();
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kubeconfig.path(), server.serve_on_loopback().await.unwrap().to_string()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let journal = format!("sqlite://{}", dir.path().join("journal.db").display());
    let addr =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let binary = env!("CARGO_BIN_EXE_cellplane");
    let _operator = Command::new(binary)
        .args([
            "--log-level",
            "warn",
            "run",
            "--journal",
            &journal,
            "--namespace",
            &cluster.namespace,
            "--metrics-addr",
            &addr,
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    apply_dir(&cluster.client, &examples, &[]).await.unwrap();
    // A tenant no cell can take: its placement step retries.
    let stranded = fixtures::namespace("stranded", "acme", "nowhere-1", Tier::Standard);
    fixtures::create(&Api::<Namespace>::namespaced(cluster.client.clone(), "acme"), &stranded).await.unwrap();

    // A workflow cancelled by a person shows in cellplane_workflows_failed_total{state="Cancelled"}.
    let tenants: Api<Namespace> = Api::namespaced(cluster.client.clone(), "acme");
    let ready =
        |n: Option<&Namespace>| n.is_some_and(|n| is_ready(n, &n.status.clone().unwrap_or_default().conditions));
    let web = wait_for(&tenants, "web", "Ready", WITHIN, ready).await.unwrap().expect("acme/web");
    let id = web.status.and_then(|s| s.workflow).expect("a workflow").id;
    let cancel = Command::new(binary).args(["workflows", "cancel", &id, "--journal", &journal]).output().await.unwrap();
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));

    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let exported = scrape(&addr).await;
        let missing: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "used by the dashboard or the alerts but not exported: {missing:?}\nexported: {exported:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
