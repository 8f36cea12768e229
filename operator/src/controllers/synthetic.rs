//! The synthetic traffic of the rings: each Ready synthetic tenant (one per cell of a ring with
//! synthetic probes, kept by the ring controller in the operator's namespace) is probed on the
//! ring's interval: a mutual-TLS handshake with its endpoint and a round trip to its database as
//! the tenant. The recent results of each cell are metrics (`cellplane_synthetic_*`) and its
//! `status.synthetic` (server-side apply, field manager cellplane-synthetic), which synthetic
//! gates read on any replica. Runs where the controllers run (the leader).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use super::Context;
use super::ring::SYNTHETIC_LABEL;
use crate::api::cell::{Cell, SyntheticStatus};
use crate::api::common::now;
use crate::api::namespace::{Namespace, TenantId};
use crate::cell::{CellContext, CellServices, Tenant};
use crate::fixtures::is_ready;

/// Probes per cell that status.synthetic and the gates look at.
pub const WINDOW: usize = 20;
/// Field manager of status.synthetic.
pub const MANAGER: &str = "cellplane-synthetic";

#[derive(Clone)]
pub struct ProbeMetrics {
    probes: IntCounterVec,
    seconds: HistogramVec,
    ratio: GaugeVec,
}

impl ProbeMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let probes = IntCounterVec::new(
            Opts::new("cellplane_synthetic_probes_total", "Synthetic probes of a cell, by result"),
            &["cell", "result"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new("cellplane_synthetic_probe_duration_seconds", "Time of a synthetic probe")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["cell"],
        )?;
        let ratio = GaugeVec::new(
            Opts::new("cellplane_synthetic_success_ratio", "Share of a cell's recent synthetic probes that succeeded"),
            &["cell"],
        )?;
        registry.register(Box::new(probes.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(ratio.clone()))?;
        Ok(ProbeMetrics { probes, seconds, ratio })
    }
}

/// One probe's result.
#[derive(Clone, Debug)]
struct Probe {
    ok: bool,
    took: Duration,
    error: Option<String>,
}

pub struct Prober {
    services: Arc<dyn CellServices>,
    metrics: ProbeMetrics,
}

impl Prober {
    pub fn new(services: Arc<dyn CellServices>, metrics: ProbeMetrics) -> Self {
        Prober { services, metrics }
    }

    /// Probes until `shutdown`, each round after the shortest interval of the rings that ask
    /// for synthetic probes (a round finds nothing to do while none does, at no cost).
    pub async fn run(&self, ctx: Arc<Context>, shutdown: CancellationToken) {
        let mut windows: BTreeMap<String, VecDeque<Probe>> = BTreeMap::new();
        loop {
            let interval = probe_interval(&ctx);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval.unwrap_or(Duration::from_secs(5))) => {}
            }
            if interval.is_some()
                && let Err(e) = self.round(&ctx, &mut windows).await
            {
                tracing::warn!(error = %e, "a round of synthetic probes failed");
            }
        }
    }

    async fn round(&self, ctx: &Context, windows: &mut BTreeMap<String, VecDeque<Probe>>) -> Result<(), kube::Error> {
        let api: Api<Namespace> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let tenants = api.list(&ListParams::default().labels(&format!("{SYNTHETIC_LABEL}=true"))).await?.items;
        for tenant in tenants.iter().filter(|t| is_ready(*t, &t.status.clone().unwrap_or_default().conditions)) {
            let Some((cell, context, probed)) = self.subject(ctx, tenant) else { continue };
            let probe = self.probe(&context, &probed).await;
            self.count(&cell, &probe);
            let window = windows.entry(cell.clone()).or_default();
            window.push_back(probe);
            while window.len() > WINDOW {
                window.pop_front();
            }
            let status = summary(&probed.id, window);
            self.metrics.ratio.with_label_values(&[&cell]).set(status.success_ratio());
            write(ctx, &cell, &status).await?;
        }
        Ok(())
    }

    /// The cell of a synthetic tenant, and what the services need to probe it.
    fn subject(&self, ctx: &Context, tenant: &Namespace) -> Option<(String, CellContext, Tenant)> {
        let status = tenant.status.clone()?;
        let cell = ctx.fleet.cell(status.assigned_cell.as_deref()?)?;
        let context = CellContext::of(&cell);
        let probed = Tenant {
            id: TenantId::of(tenant)?,
            uid: tenant.uid()?,
            mtls: tenant.spec.mtls.clone(),
            endpoint: status.endpoint?,
        };
        Some((cell.name_any(), context, probed))
    }

    async fn probe(&self, cell: &CellContext, tenant: &Tenant) -> Probe {
        let started = Instant::now();
        let result = async {
            self.services.probe(cell, tenant).await?;
            self.services.probe_database(cell, tenant).await
        }
        .await;
        Probe { ok: result.is_ok(), took: started.elapsed(), error: result.err().map(|e| e.to_string()) }
    }

    fn count(&self, cell: &str, probe: &Probe) {
        let result = if probe.ok { "success" } else { "failure" };
        self.metrics.probes.with_label_values(&[cell, result]).inc();
        self.metrics.seconds.with_label_values(&[cell]).observe(probe.took.as_secs_f64());
    }
}

/// The shortest probe interval of the rings that keep synthetic tenants, if any does.
fn probe_interval(ctx: &Context) -> Option<Duration> {
    ctx.fleet
        .rings()
        .iter()
        .filter(|r| r.spec.synthetic.is_enabled(&r.spec.admits))
        .filter_map(|r| crate::api::common::parse_duration(&r.spec.synthetic.interval).ok())
        .map(|d| d.max(Duration::from_secs(1)))
        .min()
}

/// What a cell's recent probes say.
fn summary(tenant: &TenantId, window: &VecDeque<Probe>) -> SyntheticStatus {
    let succeeded = window.iter().filter(|p| p.ok).count() as i32;
    let mut latencies: Vec<Duration> = window.iter().map(|p| p.took).collect();
    latencies.sort();
    let p99 = latencies.get((latencies.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default();
    SyntheticStatus {
        tenant: tenant.to_string(),
        succeeded,
        failed: window.len() as i32 - succeeded,
        p99_millis: i32::try_from(p99.as_millis()).unwrap_or(i32::MAX),
        last_error: window.back().and_then(|p| p.error.clone()),
        probed_at: Some(now()),
    }
}

async fn write(ctx: &Context, cell: &str, status: &SyntheticStatus) -> Result<(), kube::Error> {
    let api: Api<Cell> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "apiVersion": "cellplane.io/v1alpha1",
        "kind": "Cell",
        "status": { "synthetic": status },
    });
    api.patch_status(cell, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ok: bool, ms: u64) -> Probe {
        Probe { ok, took: Duration::from_millis(ms), error: (!ok).then(|| "refused".into()) }
    }

    #[test]
    fn a_summary_counts_and_takes_the_99th_percentile() {
        let mut window: VecDeque<Probe> = (1..=19).map(|ms| probe(true, ms)).collect();
        window.push_back(probe(false, 400));
        let status = summary(&TenantId::new("synthetic-a", "cellplane-system"), &window);
        assert_eq!((status.succeeded, status.failed, status.p99_millis), (19, 1, 400));
        assert_eq!(status.last_error.as_deref(), Some("refused"));
        assert!((status.success_ratio() - 0.95).abs() < 1e-9);
    }
}
