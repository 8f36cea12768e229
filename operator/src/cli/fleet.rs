//! `cellplane bench fleet`: C cells and N namespaces on the simulated cloud, until every one is
//! Ready. Without a kubeconfig the in-memory API runs in a child process (`cellplane sandbox
//! --serve --api-only`), so the peak RSS printed is the operator's own, as it would be beside a
//! real API server.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::operator::{API_BANNER, CliError, client_from};
use crate::api::namespace::Tier;
use crate::api::{Cell, Namespace, Release};
use crate::cell::sim::SimCellServices;
use crate::cloud::sim::{SimCloud, SimConfig};
use crate::fixtures;
use crate::operator::{Operator, OperatorError, OperatorOptions};

#[derive(Args, Debug)]
pub struct FleetArgs {
    #[arg(long, default_value_t = 200)]
    pub cells: usize,
    #[arg(long, default_value_t = 10_000)]
    pub namespaces: usize,
    /// A real cluster to run against; unset: the in-memory API server in a child process.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Workflows the engine holds in memory at once.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Seconds to watch the fleet once all is Ready, counting the operator's requests.
    #[arg(long, default_value_t = 30)]
    pub idle_seconds: u64,
}

/// Creates the cells and namespaces, waits until all are Ready, watches the idle fleet, and
/// prints JSON figures.
pub async fn bench_fleet(args: FleetArgs) -> Result<(), CliError> {
    let api = match &args.kubeconfig {
        Some(_) => None,
        None => Some(ChildApi::spawn().await?),
    };
    // The operator's client counts its requests; the benchmark's own (creating, counting) does not.
    let registry = prometheus::Registry::new();
    let (client, operator_client) = match &api {
        Some(api) => (api.client(None)?, api.client(Some(&registry))?),
        None => {
            let path = args.kubeconfig.as_deref();
            (client_from(path).await?, crate::client::connect(path, Some(&registry)).await?.0)
        }
    };
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = cellplane_workflows::journal::open(&url, "cellplane").await?;
    let cloud = Arc::new(SimCloud::new(SimConfig { latency: Duration::from_millis(1), ..SimConfig::default() }));
    let services = Arc::new(SimCellServices::new(Duration::ZERO));
    let mut options = OperatorOptions { registry: registry.clone(), ..OperatorOptions::default() };
    if let Some(max) = args.max_concurrent {
        options.engine.max_concurrent = max;
    }
    let operator = Arc::new(Operator::new(operator_client, journal, cloud, services, options)?);
    let (token, running) = operator.spawn();
    // The API server's own count of writes, on a real one (the in-memory API has no /metrics).
    let writes_before = if api.is_none() { Some(super::api_writes::counted(&client).await?) } else { None };
    let ready_cells = ReadyCount::watch::<Cell>(&client, |c| c.status.as_ref().map(|s| &s.conditions));
    let ready_namespaces = ReadyCount::watch::<Namespace>(&client, |n| n.status.as_ref().map(|s| &s.conditions));
    let started = Instant::now();
    create_fleet(&client, args.cells, args.namespaces).await?;
    let total = args.cells + args.namespaces;
    let deadline = started + Duration::from_secs(args.timeout);
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut ready = 0;
    while ready < total && Instant::now() < deadline {
        ticker.tick().await;
        ready = ready_cells.get() + ready_namespaces.get();
    }
    let seconds = started.elapsed().as_secs_f64();
    let writes_per_tenant = match &writes_before {
        Some(before) => Some(writes_per_tenant(before, &super::api_writes::counted(&client).await?, &args)),
        None => None,
    };
    let reconciles = operator.metrics().total();
    let (requests, _) = crate::client::totals(&registry);
    // What the fleet costs the API server once nothing changes.
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let (after_idle, _) = crate::client::totals(&registry);
    let idle_per_minute = (after_idle - requests) as f64 * 60.0 / args.idle_seconds.max(1) as f64;
    let figures = serde_json::json!({
        "cells": args.cells,
        "namespaces": args.namespaces,
        "ready": ready,
        "seconds_to_all_ready": (ready == total).then_some(seconds),
        "reconciles_per_sec": reconciles as f64 / seconds,
        "requests_to_all_ready": requests,
        "requests_per_sec": requests as f64 / seconds,
        "requests_per_reconcile": requests as f64 / reconciles.max(1) as f64,
        "idle_requests_per_minute": idle_per_minute,
        "api_writes_per_tenant": writes_per_tenant,
        "peak_rss_mib": super::bench::memory_mib("self", "VmHWM"),
        "api": if api.is_some() { "in-memory, child process" } else { "cluster" },
        "api_peak_rss_mib": api.as_ref().map(ChildApi::peak_rss_mib),
    });
    println!("{figures}");
    token.cancel();
    let _ = running.await;
    Ok(())
}

/// Tenants per account in the benchmark.
const TENANTS_PER_ACCOUNT: usize = 100;

/// Cells in two regions with room for twice their share of namespaces, and the namespaces (in
/// accounts of a hundred), created a hundred at a time.
async fn create_fleet(client: &Client, cells: usize, namespaces: usize) -> Result<(), CliError> {
    let per_cell = (namespaces.div_ceil(cells.max(1)) * 2) as i32;
    let regions = ["bench-a", "bench-b"];
    // The cells' software: the sim services render it to nothing, but a cell needs its Release.
    fixtures::create(&Api::<Release>::all(client.clone()), &fixtures::release("bench-1.0.0", "1.0.0")).await?;
    let cell_api: Api<Cell> = Api::all(client.clone());
    for i in 0..cells {
        let cell = fixtures::cell(&format!("bench-cell-{i}"), regions[i % 2], &[], per_cell, "1.0.0");
        fixtures::create(&cell_api, &cell).await?;
    }
    for account in 0..namespaces.div_ceil(TENANTS_PER_ACCOUNT) {
        fixtures::ensure_namespace(client, &format!("bench-account-{account}")).await?;
    }
    let names: Vec<String> = (0..namespaces).map(|i| format!("bench-ns-{i}")).collect();
    for (account, chunk) in names.chunks(TENANTS_PER_ACCOUNT).enumerate() {
        let account = format!("bench-account-{account}");
        let namespace_api: Api<Namespace> = Api::namespaced(client.clone(), &account);
        let creates = chunk.iter().enumerate().map(|(i, name)| {
            let namespace = fixtures::namespace(name, &account, regions[i % 2], Tier::Standard);
            let api = namespace_api.clone();
            async move { fixtures::create(&api, &namespace).await }
        });
        for result in futures::future::join_all(creates).await {
            result?;
        }
    }
    Ok(())
}

/// What the operator wrote to bring the fleet up, per tenant, by verb and resource, and in
/// all: the API server's count less the benchmark's own creates (the cluster's own background
/// writes, such as its controllers' leases, are in it).
fn writes_per_tenant(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    args: &FleetArgs,
) -> serde_json::Value {
    let accounts = args.namespaces.div_ceil(TENANTS_PER_ACCOUNT);
    let own = BTreeMap::from([
        ("POST namespaces.cellplane.io".to_string(), args.namespaces as f64),
        ("POST cells.cellplane.io".to_string(), args.cells as f64),
        ("POST namespaces".to_string(), accounts as f64),
        ("POST releases.cellplane.io".to_string(), 1.0),
    ]);
    let tenants = args.namespaces.max(1) as f64;
    let spent = super::api_writes::since(before, after, &own);
    let per_tenant = |n: f64| (n / tenants * 100.0).round() / 100.0;
    let by_kind: serde_json::Map<String, serde_json::Value> =
        spent.iter().map(|(key, n)| (key.clone(), per_tenant(*n).into())).collect();
    serde_json::json!({ "total": per_tenant(spent.values().sum()), "by_verb_and_resource": by_kind })
}

/// How many objects of a kind are Ready, kept up to date from a watch: listing the fleet to
/// count it would load the API server more than the operator does.
struct ReadyCount {
    ready: Arc<AtomicUsize>,
    watching: tokio::task::JoinHandle<()>,
}

impl ReadyCount {
    fn watch<K>(client: &Client, conditions: fn(&K) -> Option<&Vec<crate::api::conditions::Condition>>) -> ReadyCount
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        let ready = Arc::new(AtomicUsize::new(0));
        let count = ready.clone();
        let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff();
        let watching = tokio::spawn(async move {
            let mut is_ready: HashMap<String, bool> = HashMap::new();
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let (key, now_ready) = match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                        let ready = fixtures::is_ready(&obj, conditions(&obj).map_or(&[][..], Vec::as_slice));
                        (ObjectRef::from_obj(&obj).to_string(), Some(ready))
                    }
                    Ok(watcher::Event::Delete(obj)) => (ObjectRef::from_obj(&obj).to_string(), None),
                    _ => continue,
                };
                let was_ready = match now_ready {
                    Some(ready) => is_ready.insert(key, ready),
                    None => is_ready.remove(&key),
                };
                match (was_ready == Some(true), now_ready == Some(true)) {
                    (false, true) => count.fetch_add(1, Ordering::Relaxed),
                    (true, false) => count.fetch_sub(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
        });
        ReadyCount { ready, watching }
    }

    fn get(&self) -> usize {
        self.ready.load(Ordering::Relaxed)
    }
}

impl Drop for ReadyCount {
    fn drop(&mut self) {
        self.watching.abort();
    }
}

/// `cellplane sandbox --serve 127.0.0.1:0 --api-only`, killed when dropped.
struct ChildApi {
    child: tokio::process::Child,
    addr: String,
}

impl ChildApi {
    async fn spawn() -> Result<Self, CliError> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["sandbox", "--serve", "127.0.0.1:0", "--api-only"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| CliError::MemApi("no stdout from the API process".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix(API_BANNER).and_then(|rest| rest.split_whitespace().next()) {
                return Ok(ChildApi { addr: addr.to_string(), child });
            }
        }
        Err(CliError::MemApi("the API process exited before serving".into()))
    }

    /// A client of the API process, counting its requests in `registry` when given one.
    fn client(&self, registry: Option<&prometheus::Registry>) -> Result<Client, CliError> {
        let url = format!("http://{}", self.addr);
        let uri = url.parse().map_err(|e| CliError::MemApi(format!("{url}: {e}")))?;
        let builder = kube::client::ClientBuilder::try_from(kube::Config::new(uri))?;
        Ok(match registry {
            Some(registry) => builder
                .with_layer(&crate::client::CountRequests::register(registry).map_err(OperatorError::from)?)
                .build(),
            None => builder.build(),
        })
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        self.child.id().map(|pid| super::bench::memory_mib(&pid.to_string(), "VmHWM"))
    }
}
