//! What the operator knows about the fleet in memory: the cells the controllers have seen
//! (for placement and ring planning) and what each workflow has done (for status). Every
//! change is announced by workflow id so the owning object is reconciled again at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::api::cell::{CapacityUsage, CellPhase, CloudResources, DatabaseSpec, IngressSpec};
use crate::api::namespace::{CertificatesStatus, DatabaseStatus, NamespacePhase, NamespaceSecrets, RouteStatus};
use crate::api::ring::RingPhase;

/// A cell as its controller last saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct CellEntry {
    pub name: String,
    pub workflow_id: String,
    pub region: String,
    pub labels: BTreeMap<String, String>,
    pub cordoned: bool,
    pub max_namespaces: i32,
    pub max_units: Option<i32>,
    pub ingress: IngressSpec,
    pub database: Option<DatabaseSpec>,
    /// Capacity in use according to the object's status (the workflow's view is fresher).
    pub used: CapacityUsage,
    pub running_version: Option<String>,
}

/// What a cell's entity workflow has done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellView {
    pub phase: Option<CellPhase>,
    /// Step conditions that are True.
    pub done: Vec<&'static str>,
    pub provisioned: bool,
    pub resources: CloudResources,
    pub endpoint: Option<String>,
    pub running_version: Option<String>,
    pub used: CapacityUsage,
    pub tenants: Vec<String>,
    pub applied_generation: i64,
    /// What keeps a requested teardown from starting.
    pub blocked: Option<String>,
    /// The last command that failed (an upgrade), for status.
    pub last_failure: Option<String>,
}

/// What a namespace's workflow has done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceView {
    pub phase: Option<NamespacePhase>,
    pub done: Vec<&'static str>,
    pub assigned_cell: Option<String>,
    pub endpoint: Option<String>,
    pub secrets: Option<NamespaceSecrets>,
    /// Why placement waits (every cell's refusal).
    pub waiting: Option<String>,
    pub database: Option<DatabaseStatus>,
    pub certificates: Option<CertificatesStatus>,
    pub route: Option<RouteStatus>,
    /// What the connectivity check verified.
    pub connected: Option<String>,
}

/// What a ring rollout has done.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RingView {
    pub phase: Option<RingPhase>,
    pub version: String,
    pub cells: Vec<String>,
    pub current_batch: i32,
    pub total_batches: i32,
    pub started_at: Option<i64>,
    pub baked_until: Option<i64>,
    pub halted: Option<String>,
    /// Waiting for the `resume` signal.
    pub paused: bool,
    pub resume_sent: bool,
}

/// A DeploymentRing as placement needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RingEntry {
    pub name: String,
    /// spec.order; None for a ring that follows an upstream ring.
    pub order: Option<i32>,
    pub selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
}

#[derive(Default)]
struct State {
    cells: BTreeMap<String, CellEntry>,
    rings: BTreeMap<String, RingEntry>,
    cell_views: HashMap<String, CellView>,
    namespace_views: HashMap<String, NamespaceView>,
    ring_views: HashMap<String, RingView>,
    ring_paused: HashMap<String, bool>,
}

pub struct Fleet {
    state: Mutex<State>,
    changes: broadcast::Sender<String>,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet { state: Mutex::default(), changes: broadcast::channel(4096).0 }
    }
}

impl Fleet {
    /// Workflow ids whose view changed.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn announce(&self, id: &str) {
        // Nobody listening is fine.
        let _ = self.changes.send(id.to_string());
    }

    pub fn upsert_cell(&self, entry: CellEntry) {
        self.lock().cells.insert(entry.name.clone(), entry);
    }

    pub fn remove_cell(&self, name: &str) {
        let mut state = self.lock();
        if let Some(entry) = state.cells.remove(name) {
            state.cell_views.remove(&entry.workflow_id);
        }
    }

    /// Every known cell with its workflow's view (default when the workflow has not run here).
    pub fn cells(&self) -> Vec<(CellEntry, CellView)> {
        let state = self.lock();
        state
            .cells
            .values()
            .map(|entry| (entry.clone(), state.cell_views.get(&entry.workflow_id).cloned().unwrap_or_default()))
            .collect()
    }

    pub fn cell_view(&self, id: &str) -> Option<CellView> {
        self.lock().cell_views.get(id).cloned()
    }

    pub fn update_cell(&self, id: &str, update: impl FnOnce(&mut CellView)) {
        update(self.lock().cell_views.entry(id.to_string()).or_default());
        self.announce(id);
    }

    pub fn namespace_view(&self, id: &str) -> Option<NamespaceView> {
        self.lock().namespace_views.get(id).cloned()
    }

    pub fn update_namespace(&self, id: &str, update: impl FnOnce(&mut NamespaceView)) {
        update(self.lock().namespace_views.entry(id.to_string()).or_default());
        self.announce(id);
    }

    pub fn forget_namespace(&self, id: &str) {
        self.lock().namespace_views.remove(id);
    }

    pub fn ring_view(&self, id: &str) -> Option<RingView> {
        self.lock().ring_views.get(id).cloned()
    }

    pub fn update_ring(&self, id: &str, update: impl FnOnce(&mut RingView)) {
        update(self.lock().ring_views.entry(id.to_string()).or_default());
        self.announce(id);
    }

    pub fn upsert_ring(&self, entry: RingEntry) {
        self.lock().rings.insert(entry.name.clone(), entry);
    }

    pub fn remove_ring(&self, name: &str) {
        self.lock().rings.remove(name);
    }

    /// The rings with the lowest order: ring 0, the first to receive every version.
    pub fn first_rings(&self) -> Vec<RingEntry> {
        let state = self.lock();
        let lowest = state.rings.values().filter_map(|r| r.order).min();
        state.rings.values().filter(|r| lowest.is_some() && r.order == lowest).cloned().collect()
    }

    pub fn set_ring_paused(&self, ring: &str, paused: bool) {
        self.lock().ring_paused.insert(ring.to_string(), paused);
    }

    pub fn ring_paused(&self, ring: &str) -> bool {
        self.lock().ring_paused.get(ring).copied().unwrap_or(false)
    }
}
