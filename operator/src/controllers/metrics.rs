//! The controllers' Prometheus metrics.

use prometheus::{IntCounterVec, Opts, Registry};

use super::gauges;

/// Counts reconciles by kind and result; reports the fleet gauges and whether this replica's
/// controllers run.
#[derive(Clone)]
pub struct ControllerMetrics {
    reconciles: IntCounterVec,
    /// Fleet gauges from the controllers' caches (see [`gauges`]).
    pub objects: gauges::ObjectGauges,
    /// 1 while this replica runs the controllers (it holds the leader lease, if any).
    pub active: prometheus::IntGauge,
}

impl ControllerMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let reconciles = IntCounterVec::new(
            Opts::new("cellplane_reconciles_total", "Reconciles by kind and result"),
            &["kind", "result"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        let objects = gauges::ObjectGauges::default();
        registry.register(Box::new(objects.clone()))?;
        let active = prometheus::IntGauge::new(
            "cellplane_controllers_active",
            "1 while this replica runs the controllers (holds the leader lease, with leader election)",
        )?;
        registry.register(Box::new(active.clone()))?;
        Ok(ControllerMetrics { reconciles, objects, active })
    }

    pub fn count(&self, kind: &str, ok: bool) {
        self.reconciles.with_label_values(&[kind, if ok { "ok" } else { "error" }]).inc();
    }

    /// Reconciles so far, all kinds and results.
    pub fn total(&self) -> u64 {
        ["Cell", "Namespace", "DeploymentRing"]
            .iter()
            .flat_map(|kind| ["ok", "error"].map(|result| self.reconciles.with_label_values(&[kind, result]).get()))
            .sum()
    }
}
