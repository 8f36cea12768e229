//! Fleet gauges for dashboards and alerts, computed when /metrics is scraped from the caches
//! the controllers already keep (no watch of their own): Cells and Namespaces by phase, objects
//! by the state of their workflow, and each ring's rollout progress. Only a replica whose
//! controllers run reports them (a standby has no caches), so queries take `max` across
//! replicas.

use std::sync::{Arc, Mutex};

use kube::runtime::reflector::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use crate::api::cell::CellPhase;
use crate::api::common::WorkflowStatus;
use crate::api::namespace::NamespacePhase;
use crate::api::{Cell, DeploymentRing, Namespace};

const CELL_PHASES: &[CellPhase] = &[
    CellPhase::Pending,
    CellPhase::Provisioning,
    CellPhase::Ready,
    CellPhase::Updating,
    CellPhase::Upgrading,
    CellPhase::Degraded,
    CellPhase::Deleting,
    CellPhase::Failed,
];
const NAMESPACE_PHASES: &[NamespacePhase] = &[
    NamespacePhase::Pending,
    NamespacePhase::Provisioning,
    NamespacePhase::Ready,
    NamespacePhase::Degraded,
    NamespacePhase::Deleting,
    NamespacePhase::Failed,
];
const WORKFLOW_STATES: &[&str] = &["Pending", "Running", "Waiting", "Retrying", "Completed", "Failed", "Cancelled"];
const KINDS: &[&str] = &["Cell", "Namespace", "DeploymentRing"];

/// The controllers' caches, once they run.
#[derive(Default)]
pub struct Caches {
    cells: Option<Store<Cell>>,
    namespaces: Option<Store<Namespace>>,
    rings: Option<Store<DeploymentRing>>,
}

/// A kind whose cache feeds the gauges.
pub trait Tracked: kube::Resource<DynamicType = ()> + Sized {
    fn keep(store: Store<Self>, caches: &mut Caches);
}

impl Tracked for Cell {
    fn keep(store: Store<Self>, caches: &mut Caches) {
        caches.cells = Some(store);
    }
}

impl Tracked for Namespace {
    fn keep(store: Store<Self>, caches: &mut Caches) {
        caches.namespaces = Some(store);
    }
}

impl Tracked for DeploymentRing {
    fn keep(store: Store<Self>, caches: &mut Caches) {
        caches.rings = Some(store);
    }
}

/// The gauge families, fresh for each scrape.
struct Families {
    cells: IntGaugeVec,
    namespaces: IntGaugeVec,
    workflows: IntGaugeVec,
    ring_phase: IntGaugeVec,
    ring_batch: IntGaugeVec,
    ring_batches: IntGaugeVec,
    ring_cells: IntGaugeVec,
    ring_at_target: IntGaugeVec,
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge definition")
}

impl Families {
    fn new() -> Self {
        Families {
            cells: gauge("cellplane_cells", "Cells by status.phase", &["phase"]),
            namespaces: gauge("cellplane_namespaces", "Namespaces (tenants) by status.phase", &["phase"]),
            workflows: gauge(
                "cellplane_object_workflows",
                "cellplane objects by the state of their workflow (status.workflow.state)",
                &["kind", "state"],
            ),
            ring_phase: gauge("cellplane_ring_phase", "1 for each ring's current status.phase", &["ring", "phase"]),
            ring_batch: gauge(
                "cellplane_ring_current_batch",
                "Batch the ring's rollout is at (status.currentBatch)",
                &["ring"],
            ),
            ring_batches: gauge(
                "cellplane_ring_total_batches",
                "Batches of the ring's rollout (status.totalBatches)",
                &["ring"],
            ),
            ring_cells: gauge("cellplane_ring_cells", "Cells the ring selects", &["ring"]),
            ring_at_target: gauge(
                "cellplane_ring_cells_at_target",
                "Cells of the ring that run its target version",
                &["ring"],
            ),
        }
    }

    fn all(&self) -> [&IntGaugeVec; 8] {
        [
            &self.cells,
            &self.namespaces,
            &self.workflows,
            &self.ring_phase,
            &self.ring_batch,
            &self.ring_batches,
            &self.ring_cells,
            &self.ring_at_target,
        ]
    }

    fn count_workflow(&self, kind: &str, workflow: Option<&WorkflowStatus>) {
        if let Some(workflow) = workflow {
            self.workflows.with_label_values(&[kind, &format!("{:?}", workflow.state)]).inc();
        }
    }

    fn fill(&self, caches: &Caches) {
        for kind in KINDS {
            for state in WORKFLOW_STATES {
                self.workflows.with_label_values(&[kind, state]).set(0);
            }
        }
        if let Some(store) = &caches.cells {
            CELL_PHASES.iter().for_each(|p| self.cells.with_label_values(&[&format!("{p:?}")]).set(0));
            for cell in store.state() {
                let status = cell.status.clone().unwrap_or_default();
                self.cells.with_label_values(&[&phase(status.phase)]).inc();
                self.count_workflow("Cell", status.workflow.as_ref());
            }
        }
        if let Some(store) = &caches.namespaces {
            NAMESPACE_PHASES.iter().for_each(|p| self.namespaces.with_label_values(&[&format!("{p:?}")]).set(0));
            for ns in store.state() {
                let status = ns.status.clone().unwrap_or_default();
                self.namespaces.with_label_values(&[&phase(status.phase)]).inc();
                self.count_workflow("Namespace", status.workflow.as_ref());
            }
        }
        if let Some(store) = &caches.rings {
            for ring in store.state() {
                self.ring(&ring);
            }
        }
    }

    fn ring(&self, ring: &DeploymentRing) {
        let name = ring.metadata.name.clone().unwrap_or_default();
        let status = ring.status.clone().unwrap_or_default();
        self.ring_phase.with_label_values(&[&name, &phase(status.phase)]).set(1);
        self.ring_batch.with_label_values(&[&name]).set(i64::from(status.current_batch.unwrap_or(0)));
        self.ring_batches.with_label_values(&[&name]).set(i64::from(status.total_batches.unwrap_or(0)));
        let cells: i64 = status.cells_by_version.iter().map(|v| i64::from(v.count)).sum();
        let at_target: i64 = status
            .cells_by_version
            .iter()
            .filter(|v| Some(&v.version) == status.target_version.as_ref())
            .map(|v| i64::from(v.count))
            .sum();
        self.ring_cells.with_label_values(&[&name]).set(cells);
        self.ring_at_target.with_label_values(&[&name]).set(at_target);
        self.count_workflow("DeploymentRing", status.workflow.as_ref());
    }
}

fn phase<P: std::fmt::Debug>(phase: Option<P>) -> String {
    phase.map_or_else(|| "Unknown".into(), |p| format!("{p:?}"))
}

/// A Prometheus collector of the fleet gauges; register it once, then [`ObjectGauges::track`]
/// each controller's cache.
#[derive(Clone)]
pub struct ObjectGauges {
    caches: Arc<Mutex<Caches>>,
    descs: Arc<Vec<Desc>>,
}

impl Default for ObjectGauges {
    fn default() -> Self {
        let families = Families::new();
        let descs = families.all().iter().flat_map(|f| f.desc()).cloned().collect();
        ObjectGauges { caches: Arc::default(), descs: Arc::new(descs) }
    }
}

impl ObjectGauges {
    pub fn track<K: Tracked>(&self, store: Store<K>) {
        K::keep(store, &mut self.caches.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Collector for ObjectGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let families = Families::new();
        families.fill(&self.caches.lock().unwrap_or_else(|p| p.into_inner()));
        families.all().iter().flat_map(|f| f.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gauge_family_is_described_once() {
        let gauges = ObjectGauges::default();
        let registry = prometheus::Registry::new();
        registry.register(Box::new(gauges.clone())).unwrap();
        assert_eq!(gauges.desc().len(), 8);
        // Without caches only the workflow states are known (all zero).
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(names, ["cellplane_object_workflows"]);
    }
}
