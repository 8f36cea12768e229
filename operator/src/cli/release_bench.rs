//! `cellplane bench releases`: C sim cells on a real cluster each install a release of N objects
//! (a Deployment of one pod, a Service, the rest ConfigMaps) into their own namespace of that
//! cluster, as sim cells do, until every cell reports it healthy. Prints the time, the operator's
//! API requests and its peak RSS. Use a throwaway cluster (`scripts/testcluster.sh`): the cells
//! and their objects are left there.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::operator::{CliError, client_from};
use crate::api::cell::ReleaseHealth;
use crate::api::{Cell, Release};
use crate::cell::cluster::{ClusterCellServices, ServicesConfig};
use crate::cell::tls::SimDataPlane;
use crate::cloud::sim::{SimCloud, SimConfig};
use crate::fixtures;
use crate::operator::{Operator, OperatorOptions};

/// The label that keeps one run's objects apart (the operator reconciles only those).
const RUN_LABEL: &str = "cellplane.io/bench-run";

#[derive(Args, Debug)]
pub struct ReleasesArgs {
    /// The cluster to run on (the cells and their objects are left there).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    #[arg(long, default_value_t = 200)]
    pub cells: usize,
    /// Objects in the release: a Deployment, a Service and ConfigMaps.
    #[arg(long, default_value_t = 20)]
    pub objects: usize,
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

pub async fn bench_releases(args: ReleasesArgs) -> Result<(), CliError> {
    let registry = prometheus::Registry::new();
    let client = client_from(Some(&args.kubeconfig)).await?;
    let (operator_client, _) = crate::client::connect(Some(&args.kubeconfig), Some(&registry)).await?;
    let run = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
    );
    let namespace = format!("cellplane-bench-{run}");
    fixtures::ensure_namespace(&client, &namespace).await?;
    let version = format!("1.0.0-bench.{run}");
    let labels = [(RUN_LABEL, run.as_str())];

    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    let journal = cellplane_workflows::journal::open(&url, "cellplane").await?;
    let cloud = Arc::new(SimCloud::new(SimConfig { latency: Duration::from_millis(1), ..SimConfig::default() }));
    let config = ServicesConfig { namespace: namespace.clone(), ..ServicesConfig::default() };
    let services = Arc::new(ClusterCellServices::new(operator_client.clone(), config, SimDataPlane::new()));
    let options = OperatorOptions {
        registry: registry.clone(),
        namespace: namespace.clone(),
        selector: Some(format!("{RUN_LABEL}={run}")),
        ..OperatorOptions::default()
    };
    let operator = Arc::new(Operator::new(operator_client, journal, cloud, services, options)?);
    let (token, running) = operator.spawn();

    let started = Instant::now();
    let mut release = fixtures::release(&format!("bench-{run}"), &version);
    release.labels_mut().insert(RUN_LABEL.into(), run.clone());
    release.spec.manifests = Some(manifests(args.objects));
    release.spec.namespace = namespace.clone();
    fixtures::create(&Api::<Release>::all(client.clone()), &release).await?;
    let cells: Api<Cell> = Api::all(client.clone());
    for i in 0..args.cells {
        let cell = fixtures::cell(&format!("bench-{run}-{i}"), "bench", &labels, 10, &version);
        fixtures::create(&cells, &cell).await?;
    }
    let deadline = started + Duration::from_secs(args.timeout);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut healthy = 0;
    while healthy < args.cells && Instant::now() < deadline {
        ticker.tick().await;
        healthy = count_healthy(&client, &run, &version).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (requests, _) = crate::client::totals(&registry);
    let figures = serde_json::json!({
        "cells": args.cells,
        "objects_per_release": args.objects,
        "healthy": healthy,
        "seconds_to_all_healthy": (healthy == args.cells).then_some(seconds),
        "objects_per_sec": (healthy * args.objects) as f64 / seconds,
        "operator_requests": requests,
        "requests_per_cell": requests as f64 / args.cells.max(1) as f64,
        "peak_rss_mib": super::bench::memory_mib("self", "VmHWM"),
        "namespace": namespace,
    });
    println!("{figures}");
    token.cancel();
    let _ = running.await;
    Ok(())
}

/// The release: a Deployment of one pod, a Service and `objects - 2` ConfigMaps.
fn manifests(objects: usize) -> String {
    let mut yaml = String::from(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bench}\n\
         spec: {replicas: 1, selector: {matchLabels: {app: bench}}, template: {metadata: {labels: {app: bench}}, \
         spec: {containers: [{name: app, image: \"registry.example.com/bench:${version}\"}]}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: bench}\nspec: {selector: {app: bench}, ports: [{port: 443}]}\n",
    );
    for i in 0..objects.saturating_sub(2) {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bench-{i}}}\ndata: {{cell: \"${{cell}}\"}}\n"
        );
    }
    yaml
}

/// Cells of this run whose release is `version` and healthy.
async fn count_healthy(client: &Client, run: &str, version: &str) -> Result<usize, CliError> {
    let cells: Api<Cell> = Api::all(client.clone());
    let listed = cells.list(&ListParams::default().labels(&format!("{RUN_LABEL}={run}"))).await?;
    Ok(listed
        .items
        .iter()
        .filter_map(|c| c.status.as_ref()?.release.as_ref())
        .filter(|r| r.version == version && r.health == ReleaseHealth::Healthy)
        .count())
}

#[cfg(test)]
mod tests {
    use super::manifests;

    #[test]
    fn the_release_has_the_objects_asked_for() {
        let yaml = manifests(20);
        assert_eq!(yaml.matches("\nkind: ").count(), 20);
        assert_eq!(yaml.matches("kind: ConfigMap").count(), 18);
    }
}
