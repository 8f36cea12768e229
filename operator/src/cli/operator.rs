//! `cellplane run` and `cellplane sandbox [DIR]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::conditions::{self, Condition};
use crate::api::{Cell, DeploymentRing, Namespace};
use crate::cell::cluster::{ClusterCellServices, ServicesConfig};
use crate::cell::tls::SimDataPlane;
use crate::cloud::sim::{SimCloud, SimConfig};
use crate::fixtures;
use crate::operator::{DEFAULT_NAMESPACE, LeaderOptions, Operator, OperatorError, OperatorOptions};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("Kubernetes API: {}", crate::kube_error::describe(.0))]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Connect(#[from] crate::client::ConnectError),
    #[error("workflow journal: {0}")]
    Journal(#[from] cellplane_workflows::Error),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{path}: {message}")]
    Manifest { path: String, message: String },
    #[error(transparent)]
    Crd(#[from] crate::api::CrdError),
    #[error("in-memory API: {0}")]
    MemApi(String),
    #[error(transparent)]
    Wait(#[from] fixtures::WaitError),
    #[error(
        "the operator's namespace {0:?} does not exist: create it (`kubectl create namespace {0}`) or name another \
         with --namespace or POD_NAMESPACE"
    )]
    NoNamespace(String),
    #[error("cannot serve /metrics on {addr}: {source} (is another cellplane running? choose another --metrics-addr)")]
    MetricsAddr { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Console(#[from] crate::console::StartError),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kubeconfig to use; unset: in-cluster configuration, then ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub journal: super::JournalArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Run the controllers only while holding a Lease (for several replicas); workflow workers
    /// run in every replica.
    #[arg(long, env = "CELLPLANE_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// The operator's namespace: its leader Lease, the cell CA and endpoint certificate
    /// Secrets, and the routes of cells this cluster serves. Unset: the kubeconfig context's
    /// namespace (as kubectl does), else cellplane-system. In a pod the chart sets POD_NAMESPACE.
    #[arg(long, alias = "leader-election-namespace", env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long, default_value = "cellplane-leader")]
    pub lease_name: String,
    /// The Prometheus that prometheus gates without an address query, e.g.
    /// http://prometheus.monitoring:9090.
    #[arg(long, env = "CELLPLANE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Workflows this replica holds in memory and runs at once; the others wait in the journal
    /// for a replica with room.
    #[arg(long, env = "CELLPLANE_MAX_WORKFLOWS", default_value_t = crate::operator::MAX_WORKFLOWS)]
    pub max_workflows: usize,
    /// Reconcile only the cellplane objects with these labels (e.g. `cellplane.io/shard=a`):
    /// for several operators in one cluster. Unset: all of them.
    #[arg(long, env = "CELLPLANE_SELECTOR")]
    pub selector: Option<String>,
    #[command(flatten)]
    pub console: crate::console::ConsoleArgs,
}

pub async fn client_from(kubeconfig: Option<&Path>) -> Result<Client, CliError> {
    Ok(crate::client::connect(kubeconfig, None).await?.0)
}

/// Refuses to start in a namespace that does not exist, rather than retrying forever.
async fn check_namespace(client: &Client, namespace: &str) -> Result<(), CliError> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(CliError::NoNamespace(namespace.to_string())),
        // Allowed to work in it but not to read it: the first write will tell.
        Err(e) if crate::kube_error::code(&e) == Some(403) => {
            tracing::warn!(%namespace, "cannot check that the operator's namespace exists (forbidden)");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Cancels the token on SIGTERM or Ctrl-C.
pub(crate) fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => futures::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = futures::future::pending::<()>();
        tokio::select! {
            _ = term => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
        token.cancel();
    });
}

/// `cellplane run`: the operator against a real cluster.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    // First what can be wrong with this machine or cluster, so a mistake ends the command at once.
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| CliError::MetricsAddr { addr: args.metrics_addr, source })?;
    let registry = prometheus::Registry::new();
    let (client, context_namespace) = crate::client::connect(args.kubeconfig.as_deref(), Some(&registry)).await?;
    let namespace = args.namespace.or(context_namespace).unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    check_namespace(&client, &namespace).await?;
    let journal = cellplane_workflows::journal::open(&args.journal.journal, &args.journal.journal_schema).await?;
    let leader = args.leader_election.then(|| LeaderOptions {
        namespace: namespace.clone(),
        name: args.lease_name.clone(),
        lease_duration: Duration::from_secs(15),
    });
    let mut options =
        OperatorOptions { leader, registry: registry.clone(), selector: args.selector, ..Default::default() };
    options.engine.max_concurrent = args.max_workflows;
    options.namespace = namespace.clone();
    options.prometheus = args.prometheus_url.clone();
    let sim = Arc::new(SimCloud::new(SimConfig::default()));
    let cloud = Arc::new(crate::cloud::providers::clouds(sim, client.clone(), &namespace));
    let config = ServicesConfig { namespace: namespace.clone(), ..ServicesConfig::default() };
    let services =
        Arc::new(ClusterCellServices::new(client.clone(), config, SimDataPlane::new()).with_cloud(cloud.clone()));
    let operator = Arc::new(Operator::new(client, journal.clone(), cloud, services, options)?);
    let token = CancellationToken::new();
    cancel_on_signals(token.clone());
    // The console never lends the operator's credentials: its users sign in with their own.
    let (base, _) = crate::client::config(args.kubeconfig.as_deref()).await?;
    let access = crate::console::Access::tokens(base);
    if let Some(url) = args.console.start(access, Some(journal), token.clone()).await? {
        println!("console: {url}");
    }
    tracing::info!(addr = %args.metrics_addr, %namespace, "serving /metrics, /healthz and /readyz");
    let ready_operator = operator.clone();
    let ready: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || ready_operator.is_ready());
    tokio::spawn(crate::http::serve(listener, registry, ready, token.clone()));
    operator.run(token).await?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// Directory of manifests (YAML, several documents per file) to apply.
    #[arg(default_value = "examples")]
    pub dir: PathBuf,
    /// Give up waiting for every resource to be Ready after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Also serve the in-memory API over HTTP here, for kubectl (`--server http://ADDR`).
    #[arg(long)]
    pub serve: Option<SocketAddr>,
    /// Keep running after everything is Ready (until Ctrl-C).
    #[arg(long, default_value_t = false)]
    pub keep: bool,
    /// Only serve the in-memory API (needs --serve): no operator, nothing applied. For running
    /// `bench fleet --kubeconfig` against it, so the benchmark measures the operator alone.
    #[arg(long, default_value_t = false, requires = "serve")]
    pub api_only: bool,
    // With --console-addr the sandbox keeps running (as with --keep) for the console.
    #[command(flatten)]
    pub console: crate::console::ConsoleArgs,
}

/// The sandbox's console user: the in-memory API has no users, so everyone acts as this one.
pub const SANDBOX_USER: &str = "sandbox";

/// How `sandbox --serve` announces its address (read by `bench fleet`).
pub const API_BANNER: &str = "in-memory API at http://";

/// `cellplane sandbox`: the whole operator on an in-memory API server and a simulated cloud.
pub async fn sandbox(args: SandboxArgs) -> Result<(), CliError> {
    let server = cellplane_memapi::ApiServer::new();
    register_kinds(&server)?;
    if let Some(addr) = args.serve {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        println!("{API_BANNER}{addr}  (kubectl --server http://{addr} get cellplane)");
        if args.api_only {
            return Ok(server.serve(listener).await?);
        }
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener).await });
    }
    let client = server.client();
    fixtures::ensure_namespace(&client, DEFAULT_NAMESPACE).await?;
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = cellplane_workflows::journal::open(&url, "cellplane").await?;
    let cloud_config =
        SimConfig { latency: Duration::from_millis(150), transient_failure_rate: 0.05, ..SimConfig::default() };
    let cloud = Arc::new(SimCloud::new(cloud_config));
    // Real certificates, routes and mTLS checks against the sim cells' loopback front doors;
    // a cell that names a PostgreSQL server gets real tenant databases there.
    let services = Arc::new(ClusterCellServices::new(client.clone(), ServicesConfig::default(), SimDataPlane::new()));
    let operator =
        Arc::new(Operator::new(client.clone(), journal.clone(), cloud, services, OperatorOptions::default())?);
    let (token, running) = operator.spawn();
    cancel_on_signals(token.clone());
    // Nothing runs pods here: the sim cells' workloads are played (see cloud::workloads).
    tokio::spawn(crate::cloud::workloads::run(client.clone(), token.clone()));
    let access = crate::console::Access::Trusted { client: client.clone(), user: SANDBOX_USER.into() };
    let console = args.console.start(access, Some(journal), token.clone()).await?;
    if let Some(url) = &console {
        println!("console: {url}  (open it to create a namespace and watch it provision; Ctrl-C stops)");
    }
    let keep = args.keep || console.is_some();
    let applied = apply_dir(&client, &args.dir, &[]).await?.len();
    println!("applied {applied} resources from {}; watching them converge\n", args.dir.display());
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let rows = rows(&client).await?;
        for row in &rows {
            let line = format!("{:<18} {:<8} {:<26} {}", row.phase, row.ready, row.step, row.message);
            if shown.get(&row.id) != Some(&line) {
                println!("{:<28} {line}", row.id);
                shown.insert(row.id.clone(), line);
            }
        }
        let settled = settled(&rows);
        if !keep && (settled || Instant::now() > deadline) {
            if !settled {
                println!("\nnot everything became Ready within {}s", args.timeout);
            }
            break;
        }
    }
    println!();
    print_table(&rows(&client).await?);
    token.cancel();
    if let Ok(Err(e)) = running.await {
        return Err(e.into());
    }
    Ok(())
}

/// Teaches the in-memory API server the cellplane kinds.
pub fn register_kinds(server: &cellplane_memapi::ApiServer) -> Result<(), CliError> {
    for register in [
        cellplane_memapi::ApiServer::register::<Cell>,
        cellplane_memapi::ApiServer::register::<Namespace>,
        cellplane_memapi::ApiServer::register::<DeploymentRing>,
        cellplane_memapi::ApiServer::register::<crate::api::Release>,
    ] {
        register(server).map_err(|e| CliError::MemApi(e.to_string()))?;
    }
    Ok(())
}

/// An object applied from a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// Applies every YAML document under `dir` (files in name order; the cellplane kinds, core
/// Namespaces and Secrets), with `labels` added; returns what it applied.
pub async fn apply_dir(client: &Client, dir: &Path, labels: &[(&str, &str)]) -> Result<Vec<Applied>, CliError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let bad = |message: String| CliError::Manifest { path: path.display().to_string(), message };
        for document in serde_norway::Deserializer::from_str(&text) {
            let mut value: Value = serde::Deserialize::deserialize(document).map_err(|e| bad(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            for (key, label) in labels {
                value["metadata"]["labels"][*key] = Value::from(*label);
            }
            let field = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).map(str::to_string);
            let object = Applied {
                api_version: field("/apiVersion").unwrap_or_default(),
                kind: field("/kind").unwrap_or_default(),
                namespace: field("/metadata/namespace"),
                name: field("/metadata/name").unwrap_or_default(),
            };
            match (object.api_version.as_str(), object.kind.as_str()) {
                ("cellplane.io/v1alpha1", "Cell") => create_from::<Cell>(client, value).await,
                ("cellplane.io/v1alpha1", "Namespace") => create_from::<Namespace>(client, value).await,
                ("cellplane.io/v1alpha1", "DeploymentRing") => create_from::<DeploymentRing>(client, value).await,
                ("cellplane.io/v1alpha1", "Release") => create_from::<crate::api::Release>(client, value).await,
                ("v1", "Namespace") => create_from::<k8s_openapi::api::core::v1::Namespace>(client, value).await,
                ("v1", "Secret") => create_from::<k8s_openapi::api::core::v1::Secret>(client, value).await,
                (api_version, kind) => Err(format!("{api_version} {kind} is not a kind the sandbox applies")),
            }
            .map_err(bad)?;
            applied.push(object);
        }
    }
    Ok(applied)
}

/// Creates an object in the namespace its manifest names (cluster-scoped kinds ignore it).
async fn create_from<K>(client: &Client, value: Value) -> Result<(), String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // Typed first, for a clear message about a malformed manifest.
    let typed: K = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let resource = kube::api::ApiResource::erase::<K>(&());
    let obj: kube::api::DynamicObject = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let api: Api<kube::api::DynamicObject> = match typed.meta().namespace.as_deref() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    fixtures::create(&api, &obj).await.map_err(|e| crate::kube_error::describe(&e))
}

struct Row {
    id: String,
    phase: String,
    ready: String,
    step: String,
    message: String,
    conditions: String,
}

fn row<K: kube::Resource<DynamicType = ()> + kube::ResourceExt>(
    obj: &K,
    phase: Option<String>,
    conditions: &[Condition],
    step: Option<String>,
) -> Row {
    let ready = conditions::find(conditions, conditions::types::READY);
    Row {
        id: format!("{}/{}", K::kind(&()), crate::api::object_key(obj)),
        phase: phase.unwrap_or_else(|| "-".into()),
        ready: ready.map_or("-".into(), |c| c.status.as_str().to_string()),
        step: step.unwrap_or_else(|| "-".into()),
        message: ready.map(|c| c.message.chars().take(90).collect()).unwrap_or_default(),
        conditions: conditions
            .iter()
            .filter(|c| !matches!(c.type_.as_str(), "Ready" | "Reconciling" | "Stalled"))
            .map(|c| format!("{}={}", c.type_, c.status.as_str()))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

async fn rows(client: &Client) -> Result<Vec<Row>, CliError> {
    let lp = ListParams::default();
    let mut rows = Vec::new();
    for c in Api::<Cell>::all(client.clone()).list(&lp).await?.items {
        let s = c.status.clone().unwrap_or_default();
        let step = s.workflow.as_ref().and_then(|w| w.step.clone());
        let mut row = row(&c, s.phase.map(|p| format!("{p:?}")), &s.conditions, step);
        // What the cell runs, and whether it is healthy there.
        if let Some(release) = &s.release {
            row.conditions = format!("{} release={} {:?}", row.conditions, release.version, release.health);
        }
        rows.push(row);
    }
    for r in Api::<DeploymentRing>::all(client.clone()).list(&lp).await?.items {
        let s = r.status.clone().unwrap_or_default();
        let step = s.workflow.as_ref().and_then(|w| w.step.clone());
        rows.push(row(&r, s.phase.map(|p| format!("{p:?}")), &s.conditions, step));
    }
    for n in Api::<Namespace>::all(client.clone()).list(&lp).await?.items {
        let s = n.status.clone().unwrap_or_default();
        let step = s.workflow.as_ref().and_then(|w| w.step.clone());
        rows.push(row(&n, s.phase.map(|p| format!("{p:?}")), &s.conditions, step));
    }
    Ok(rows)
}

/// Everything Ready, or waiting for a person: a halted ring and the rings downstream of it
/// (examples/rollback ends so).
fn settled(rows: &[Row]) -> bool {
    let halted = rows.iter().any(|r| r.phase == "Halted");
    let waits_for_a_person = |r: &Row| r.phase == "Halted" || (halted && r.phase == "WaitingForUpstream");
    !rows.is_empty() && rows.iter().all(|r| r.ready == "True" || waits_for_a_person(r))
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:<18}  {:<7}  CONDITIONS", "NAME", "PHASE", "READY");
    for r in rows {
        println!("{:<width$}  {:<18}  {:<7}  {}", r.id, r.phase, r.ready, r.conditions);
    }
}
