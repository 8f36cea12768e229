//! The web console in a real headless Chromium: a namespace created through the form provisions
//! live, a form the API refuses shows the API's message, a ring is approved, and on a real API
//! server a user whose token may only read gets no buttons, while a forged POST is refused.
//! Screenshots of each page go to target/console-screenshots/ (docs/console/ has copies).

mod binary;
#[path = "console/browser.rs"]
mod browser;

use std::sync::Arc;
use std::time::Duration;

use binary::{chart_args, chart_run, sqlite_journal};
use browser::Browser;

use cellplane::api::DeploymentRing;
use cellplane::api::ring::RingPhase;
use cellplane::cell::sim::SimCellServices;
use cellplane::cloud::sim::{SimCloud, SimConfig};
use cellplane::console::{Access, Options, Tls};
use cellplane::fixtures;
use cellplane::operator::{Operator, OperatorError, OperatorOptions};
use cellplane::testing::{TestCluster, expect_clean_stop, real_kubeconfig};
use cellplane_workflows::EngineConfig;
use cellplane_workflows::journal::Journal;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A console on loopback for the test; stopped when the token is cancelled.
async fn console(access: Access, journal: Option<Arc<dyn Journal>>) -> (String, CancellationToken) {
    let token = CancellationToken::new();
    let options = Options { addr: "127.0.0.1:0".parse().unwrap(), access, journal, tls: Tls::Off };
    let url = cellplane::console::start(options, token.clone()).await.expect("the console starts");
    (url, token)
}

/// The sandbox: the in-memory API and a real operator (sim cloud, recording cell services)
/// reconciling everything in it, as the objects a browser creates carry no test label.
struct Sandbox {
    journal: Arc<dyn Journal>,
    stop: CancellationToken,
    operator: JoinHandle<Result<(), OperatorError>>,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    /// Stops the operator; panics if it had failed.
    async fn stop(self) {
        self.stop.cancel();
        expect_clean_stop(self.operator).await;
    }
}

async fn sandbox(cluster: &TestCluster) -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = cellplane_workflows::journal::open(&url, "cellplane").await.unwrap();
    let engine = EngineConfig {
        lease: Duration::from_secs(2),
        poll_interval: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let options = OperatorOptions { engine, ..OperatorOptions::default() };
    let cloud = Arc::new(SimCloud::new(SimConfig::default()));
    let services = Arc::new(SimCellServices::new(Duration::from_millis(1)));
    let operator = Arc::new(Operator::new(cluster.client.clone(), journal.clone(), cloud, services, options).unwrap());
    let (stop, operator) = operator.spawn();
    Sandbox { journal, stop, operator, _dir: dir }
}

fn trusted(client: &Client) -> Access {
    Access::Trusted { client: client.clone(), user: "sandbox".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_created_in_the_form_provisions_live_and_a_refused_form_shows_the_api_message() {
    let Some(browser) = Browser::start().await else { return };
    let cluster = TestCluster::in_memory(|_| {}).await.unwrap();
    let sandbox = sandbox(&cluster).await;
    let cell = fixtures::cell(&cluster.name("eu"), "eu-west-1", &[("cellplane.io/ring", "canary")], 10, "1.0.0");
    cluster.create(&cluster.cells(), cell).await.unwrap();
    let (url, console_stop) = console(trusted(&cluster.client), Some(sandbox.journal.clone())).await;

    // An account that does not exist: the form cannot tell, the API server refuses.
    let missing = cluster.name("no-such-account");
    browser.open(&format!("{url}namespaces/new")).await;
    browser.fill("#f-account", &missing).await;
    browser.fill("#f-name", "web").await;
    browser.fill("#f-region", "eu-west-1").await;
    browser.click("#f-create").await;
    browser.wait_for_text("The API server refused the Namespace").await;
    let error = browser.text().await;
    assert!(error.contains(&format!("namespaces \"{missing}\" not found")), "the API's own message: {error}");
    let typed = browser.client.find(fantoccini::Locator::Css("#f-name")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(typed.as_deref(), Some("web"), "the form keeps what was typed");
    browser.screenshot("namespace-form-refused").await;

    // The right account: created, then the steps turn green without a reload.
    browser.fill("#f-account", &cluster.account).await;
    browser.click("#f-create").await;
    browser.wait_for_text(&format!("Namespace web.{}", cluster.account)).await;
    browser.eval("window.notReloaded = true; return null;").await;
    browser
        .wait_until("every provisioning step done", || async { browser.count(r#"li[data-state="done"]"#).await == 6 })
        .await;
    assert_eq!(
        browser.eval("return window.notReloaded === true;").await,
        serde_json::json!(true),
        "the page updated itself, it was not reloaded"
    );
    browser.wait_for_text("HandshakeVerified").await;
    browser.screenshot("namespace-detail").await;

    browser.open(&format!("{url}namespaces")).await;
    browser.wait_for_text("Ready").await;
    browser.screenshot("namespaces").await;
    browser.open(&format!("{url}cells")).await;
    browser.wait_for_text("eu-west-1").await;
    browser.screenshot("cells").await;
    browser.open(&format!("{url}workflows?kind=ns")).await;
    browser.click(r#"a[href^="/workflows/show"]"#).await;
    browser.wait_for_text("History of run").await;
    browser.screenshot("workflow-history").await;
    browser.open(&format!("{url}workflows")).await;
    browser.wait_for_text("workflows").await;
    browser.screenshot("workflows").await;

    console_stop.cancel();
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_waiting_for_approval_is_approved_and_paused_from_the_pipeline() {
    let Some(browser) = Browser::start().await else { return };
    let cluster = TestCluster::in_memory(|_| {}).await.unwrap();
    for (name, version) in [("canary-1", "1.1.0"), ("canary-2", "1.2.0")] {
        let cell = fixtures::cell(name, "eu-west-1", &[("cellplane.io/ring", "canary")], 10, version);
        cluster.create(&cluster.cells(), cell).await.unwrap();
    }
    let mut ring = fixtures::ring("ring-0", 0, "canary", Some("1.2.0"), "1h");
    ring.spec.manual_approval = true;
    cluster.create(&cluster.rings(), ring).await.unwrap();
    let status = serde_json::json!({ "status": { "phase": "WaitingForApproval", "targetVersion": "1.2.0" } });
    cluster.rings().patch_status("ring-0", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let (url, stop) = console(trusted(&cluster.client), None).await;

    browser.open(&format!("{url}rings")).await;
    browser.wait_for_text("Approve 1.2.0 for ring-0").await;
    browser.screenshot("rings").await;
    browser.click(r#"form[action="/rings/ring-0/approve"] button"#).await;
    browser.wait_for_text("Approved 1.2.0 for ring ring-0").await;
    let approval = cluster.rings().get("ring-0").await.unwrap().spec.approval.expect("approved");
    assert_eq!((approval.version.as_str(), approval.approved_by.as_deref()), ("1.2.0", Some("sandbox")));
    assert_eq!(browser.count(r#"form[action="/rings/ring-0/approve"]"#).await, 0, "no second approval offered");

    browser.click(r#"form[action="/rings/ring-0/pause"] button"#).await;
    browser.wait_for_text("Resume ring-0").await;
    assert!(cluster.rings().get("ring-0").await.unwrap().spec.paused);
    stop.cancel();
}

const WITHIN: Duration = Duration::from_secs(120);

/// A self-signed certificate for localhost, as a Secret mounted from cert-manager would hold.
fn write_certificate(cert: &std::path::Path, key: &std::path::Path) {
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca = cellplane::cell::pki::new_ca("console test CA", now, day).unwrap();
    let server = cellplane::cell::pki::issue_server(&ca.cert_pem, &ca.key_pem, "localhost", now, day).unwrap();
    std::fs::write(cert, format!("{}{}", server.cert_pem, ca.cert_pem)).unwrap();
    std::fs::write(key, server.key_pem).unwrap();
}

/// The console's URL as `cellplane run` prints it, reached on loopback.
async fn console_url(operator: &mut tokio::process::Child) -> String {
    use tokio::io::AsyncBufReadExt;
    let stdout = operator.stdout.take().expect("the operator's stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WITHIN, lines.next_line()).await.expect("the console starts").unwrap();
    let url = line.and_then(|l| l.strip_prefix("console: ").map(str::to_string)).expect("console: URL");
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
    format!("https://localhost:{port}/")
}

/// A ServiceAccount whose token may only read the cellplane kinds (and Events).
async fn read_only_token(cluster: &TestCluster) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
    let name = cluster.name("viewer");
    let meta = |name: &str, namespace: Option<&str>| kube::api::ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    fixtures::create(
        &accounts,
        &ServiceAccount { metadata: meta("viewer", Some(&cluster.namespace)), ..Default::default() },
    )
    .await
    .unwrap();
    let read = vec!["get".to_string(), "list".into(), "watch".into()];
    let role = ClusterRole {
        metadata: meta(&name, None),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["cellplane.io".into()]),
                resources: Some(vec!["cells".into(), "namespaces".into(), "deploymentrings".into()]),
                verbs: read.clone(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec!["events.k8s.io".into()]),
                resources: Some(vec!["events".into()]),
                verbs: read,
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    fixtures::create(&Api::<ClusterRole>::all(cluster.client.clone()), &role).await.unwrap();
    let binding = ClusterRoleBinding {
        metadata: meta(&name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "viewer".into(),
            namespace: Some(cluster.namespace.clone()),
            ..Default::default()
        }]),
    };
    fixtures::create(&Api::<ClusterRoleBinding>::all(cluster.client.clone()), &binding).await.unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let issued = accounts.create_token_request("viewer", &Default::default(), &request).await.unwrap();
    issued.status.expect("a token").token
}

async fn remove_rbac(cluster: &TestCluster) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let name = cluster.name("viewer");
    let _ = Api::<ClusterRoleBinding>::all(cluster.client.clone()).delete(&name, &Default::default()).await;
    let _ = Api::<ClusterRole>::all(cluster.client.clone()).delete(&name, &Default::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_may_only_read_gets_no_buttons_and_a_forged_post_is_refused() {
    let Some(path) = real_kubeconfig("the console's RBAC test") else { return };
    let Some(browser) = Browser::start().await else { return };
    let cluster = TestCluster::real(&path).await.unwrap();
    cluster
        .scenario(|cluster| async move {
            // The operator and its console as the chart installs them: the chart's arguments,
            // ServiceAccount and RBAC, the console's certificate from the Secret it mounts.
            let values =
                ["console.enabled=true".to_string(), "console.tls.secretName=console-tls".into(), "rbac.simCells=true".into()];
            let chart = cluster.install_chart(&values).await.expect("the chart's RBAC");
            let (dir, journal) = sqlite_journal();
            let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            write_certificate(&cert, &key);
            let mounts = [("/etc/cellplane/console-tls/tls.crt", cert.as_path()), ("/etc/cellplane/console-tls/tls.key", key.as_path())];
            let args = chart_args(&chart, &journal, &mounts);
            assert!(args.iter().any(|a| a.starts_with("--console-addr=0.0.0.0:")), "the chart serves the console: {args:?}");
            let mut operator = chart_run(&cluster, &chart, &args, &dir.path().join("operator.log"));
            let url = console_url(&mut operator).await;

            let canary = cluster.name("canary");
            let cell_name = cluster.name("cell");
            cluster.create(&cluster.cells(), fixtures::cell(&cell_name, "eu-west-1", &[("cellplane.io/ring", &canary)], 10, "1.0.0")).await.unwrap();
            let ns = fixtures::namespace("web", &cluster.account, "eu-west-1", cellplane::api::namespace::Tier::Standard);
            cluster.create(&cluster.namespaces(), ns).await.unwrap();
            let ring_name = cluster.name("ring");
            let mut ring = fixtures::ring(&ring_name, 0, &canary, Some("1.1.0"), "1h");
            ring.spec.manual_approval = true;
            cluster.create(&cluster.rings(), ring).await.unwrap();
            let waiting = |r: Option<&DeploymentRing>| {
                r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(RingPhase::WaitingForApproval))
            };
            fixtures::wait_for(&cluster.rings(), &ring_name, "waiting for approval", WITHIN, waiting).await.unwrap();
            let token = read_only_token(&cluster).await;

            browser.open(&url).await;
            browser.wait_for_text("Bearer token").await;
            assert!(!browser.text().await.contains("self-signed"), "the chart's certificate is served");
            browser.open(&format!("{url}namespaces")).await;
            browser.wait_for_text("Bearer token").await;
            browser.open(&format!("{url}namespaces")).await;
            browser.wait_for_text("Bearer token").await;
            browser.screenshot("sign-in").await;
            browser.fill("#token", &token).await;
            browser.click(r#"form[action="/login"] button"#).await;
            browser.wait_for_text(&format!("Signed in as system:serviceaccount:{}:viewer", cluster.namespace)).await;
            browser.open(&format!("{url}namespaces?account={}", cluster.account)).await;
            browser.wait_for_text("web").await;
            assert_eq!(browser.count(r#"a[href^="/namespaces/new"]"#).await, 0, "no Create Namespace for a reader");
            browser.open(&format!("{url}namespaces/{}/web", cluster.account)).await;
            browser.wait_for_text("Provisioning").await;
            assert_eq!(browser.count(r#"a[href$="/delete"]"#).await, 0, "no Delete for a reader");
            browser.open(&format!("{url}cells")).await;
            browser.wait_for_text(&cell_name).await;
            assert_eq!(browser.count(r#"form[action^="/cells/"]"#).await, 0, "no Cordon for a reader");
            browser.open(&format!("{url}rings")).await;
            browser.wait_for_text(&ring_name).await;
            browser.wait_for_text("WaitingForApproval").await;
            assert_eq!(browser.count(r#"form[action^="/rings/"]"#).await, 0, "no Pause or Approve for a reader");
            browser.screenshot("rings-read-only").await;

            // A page script that POSTs without the session's CSRF token is refused by the console.
            let forged = format!(
                "return fetch('/cells/{cell_name}/cordon', {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}}, body: ''}}).then(r => r.status);"
            );
            assert_eq!(browser.eval(&forged).await, serde_json::json!(403));
            // With the token the console passes it on as the user, and Kubernetes refuses: the
            // page it redirects to carries the API's message.
            let with_token = format!(
                "const t = document.querySelector('meta[name=csrf-token]').content; return fetch('/cells/{cell_name}/cordon', {{method: 'POST', headers: {{'Content-Type': 'application/x-www-form-urlencoded', 'X-CSRF-Token': t}}, body: ''}}).then(r => r.text());"
            );
            let answer = browser.eval(&with_token).await;
            assert!(answer.as_str().is_some_and(|page| page.contains("forbidden")), "the API's refusal is shown: {answer}");
            assert!(!cluster.cells().get(&cell_name).await.unwrap().spec.cordoned, "the reader cordoned nothing");
            binary::signal(&operator, libc::SIGTERM);
            let status = tokio::time::timeout(WITHIN, operator.wait()).await.expect("the operator stops").unwrap();
            assert!(status.success(), "the operator exits cleanly after SIGTERM: {status}");
            remove_rbac(&cluster).await;
        })
        .await;
}
