//! What the operator knows about the fleet, the same on every replica: the Cell, DeploymentRing
//! and Release objects, watched by every replica whether or not it leads (placement, ring
//! rollouts and release installs run wherever their workflows run); and the views the workflows
//! publish to the journal with `Ctx::publish` (read back from a checkpoint, on any replica).

use std::collections::BTreeMap;
use std::sync::Arc;

use cellplane_workflows::Checkpoint;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::cell::{CapacityUsage, Cell, CellPhase, CloudResources, DatabaseSpec, IngressSpec};
use crate::api::conditions;
use crate::api::namespace::{CertificatesStatus, DatabaseStatus, NamespacePhase, NamespaceSecrets, RouteStatus};
use crate::api::release::Release;
use crate::api::ring::{Admission, ApprovalStatus, DeploymentRing, GateStatus, RingPhase, RollbackStatus};
use crate::flows::ids;
use crate::flows::placement::selector_matches;

/// A cell as placement sees it: its spec and labels, and what its status says it holds.
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
    /// Capacity in use (the cell's workflow, which reserves it, is the authority).
    pub used: CapacityUsage,
    /// Provisioned: it can take tenants.
    pub provisioned: bool,
    /// The ring that selects the cell, if one does.
    pub ring: Option<RingEntry>,
}

impl CellEntry {
    /// The entry of a Cell object in `ring` (None before the API server gave it a uid).
    pub fn of(cell: &Cell, ring: Option<RingEntry>) -> Option<CellEntry> {
        let status = cell.status.clone().unwrap_or_default();
        Some(CellEntry {
            name: cell.name_any(),
            workflow_id: ids::cell(&cell.name_any(), &cell.uid()?),
            region: cell.spec.region.clone(),
            labels: cell.labels().clone(),
            cordoned: cell.spec.cordoned,
            max_namespaces: cell.spec.capacity.max_namespaces,
            max_units: cell.spec.capacity.max_units,
            ingress: cell.spec.ingress.clone(),
            database: cell.spec.database.clone(),
            used: status.capacity_used.unwrap_or_default(),
            provisioned: conditions::is_true(&status.conditions, crate::api::cell::COMPONENTS_READY),
            ring,
        })
    }
}

/// What a cell's entity workflow has done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CellView {
    pub phase: Option<CellPhase>,
    /// Step conditions that are True.
    pub done: Vec<String>,
    pub provisioned: bool,
    pub resources: CloudResources,
    pub endpoint: Option<String>,
    pub running_version: Option<String>,
    pub used: CapacityUsage,
    pub applied_generation: i64,
    /// What keeps a requested teardown from starting.
    pub blocked: Option<String>,
    /// Cloud resources of the cell still found (by tag or label) after its teardown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
    /// The last command that failed (an upgrade), for status.
    pub last_failure: Option<String>,
    /// The release the cell runs, and its health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<crate::api::cell::CellRelease>,
}

/// What a namespace's workflow has done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    pub phase: Option<NamespacePhase>,
    pub done: Vec<String>,
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingView {
    pub phase: Option<RingPhase>,
    pub version: String,
    pub cells: Vec<String>,
    pub current_batch: i32,
    pub total_batches: i32,
    pub started_at: Option<i64>,
    pub baked_until: Option<i64>,
    /// Why the rollout halted (a failed gate or upgrade, or it was cancelled).
    pub halted: Option<Halt>,
    /// Waiting for the `resume` signal.
    pub paused: bool,
    /// The batch in flight has not finished within the progress deadline: which cells not.
    pub overdue: Option<String>,
    pub gates: Vec<GateStatus>,
    pub approval: Option<ApprovalStatus>,
    pub rollback: Option<RollbackStatus>,
}

/// Why a rollout stopped short of baking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Halt {
    /// GateFailed, UpgradeFailed or Cancelled.
    pub reason: String,
    pub message: String,
}

/// The view a workflow published, if it published one of this type.
pub fn view<V: DeserializeOwned>(checkpoint: Option<&Checkpoint>) -> Option<V> {
    let published = checkpoint?.published.clone()?;
    serde_json::from_value(published)
        .inspect_err(|e| tracing::warn!(error = %e, "a workflow's published view does not parse"))
        .ok()
}

/// The one Release of `version` among `releases`, or why there is none to use.
pub fn release_of(releases: &[Arc<Release>], version: &str) -> Result<Arc<Release>, String> {
    let mut found = releases.iter().filter(|r| r.spec.version == version);
    match (found.next(), found.next()) {
        (Some(release), None) => Ok(release.clone()),
        (None, _) => Err(format!("{NO_RELEASE}{version}")),
        (Some(one), Some(other)) => {
            Err(format!("releases {} and {} both have version {version}: delete one", one.name_any(), other.name_any()))
        }
    }
}

/// How a refusal for a version that no Release has begins.
pub const NO_RELEASE: &str = "no Release has version ";

/// A DeploymentRing as placement needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RingEntry {
    pub name: String,
    pub admits: Admission,
}

/// The Cells, DeploymentRings and Releases of this operator, as watched on this replica.
#[derive(Clone)]
pub struct Fleet {
    cells: Store<Cell>,
    rings: Store<DeploymentRing>,
    releases: Store<Release>,
}

impl Fleet {
    /// Watches the Cells and DeploymentRings (those `selector` picks) until `shutdown`.
    pub fn watch(client: &Client, selector: Option<&str>, shutdown: CancellationToken) -> Arc<Fleet> {
        let config = match selector {
            Some(selector) => watcher::Config::default().labels(selector),
            None => watcher::Config::default(),
        };
        let cells = reflect(Api::<Cell>::all(client.clone()), config.clone(), shutdown.clone());
        let rings = reflect(Api::<DeploymentRing>::all(client.clone()), config.clone(), shutdown.clone());
        let releases = reflect(Api::<Release>::all(client.clone()), config, shutdown);
        Arc::new(Fleet { cells, rings, releases })
    }

    /// A fleet of no cells and no rings, where nothing watches: for replaying workflow
    /// histories, which run no step and so never ask.
    pub fn empty() -> Arc<Fleet> {
        let ((cells, _), (rings, _)) = (kube::runtime::reflector::store(), kube::runtime::reflector::store());
        let (releases, _) = kube::runtime::reflector::store();
        Arc::new(Fleet { cells, rings, releases })
    }

    /// Every Cell object.
    pub fn cell_objects(&self) -> Vec<Arc<Cell>> {
        self.cells.state()
    }

    /// Every DeploymentRing object.
    pub fn rings(&self) -> Vec<Arc<DeploymentRing>> {
        self.rings.state()
    }

    /// Every Release object.
    pub fn releases(&self) -> Vec<Arc<Release>> {
        self.releases.state()
    }

    /// The one Release of `version`: a refusal naming what is wrong when there is none, or more
    /// than one.
    pub fn release(&self, version: &str) -> Result<Arc<Release>, String> {
        release_of(&self.releases(), version)
    }

    /// A cell by name.
    pub fn cell(&self, name: &str) -> Option<Arc<Cell>> {
        self.cells.state().into_iter().find(|c| c.name_any() == name)
    }

    /// Every cell, as placement sees it.
    pub fn cells(&self) -> Vec<CellEntry> {
        let rings = self.rings.state();
        self.cells
            .state()
            .iter()
            .filter_map(|cell| {
                let ring = rings.iter().find(|r| selector_matches(&r.spec.cell_selector, cell.labels()));
                let entry = ring.map(|r| RingEntry { name: r.name_any(), admits: r.spec.admits.clone() });
                CellEntry::of(cell, entry)
            })
            .collect()
    }

    /// The ring that selects a cell with these labels, if any (see [`ring_selecting`]).
    pub fn ring_of(&self, labels: &BTreeMap<String, String>) -> Option<Arc<DeploymentRing>> {
        ring_selecting(&self.rings.state(), labels).cloned()
    }

    /// Whether a person paused the ring (spec.paused).
    pub fn ring_paused(&self, ring: &str) -> bool {
        self.rings.state().iter().any(|r| r.name_any() == ring && r.spec.paused)
    }
}

/// The ring of `rings` that selects a cell with these labels, if any (the first, when several
/// do: their controller stalls them).
pub fn ring_selecting<'a>(
    rings: &'a [Arc<DeploymentRing>],
    labels: &BTreeMap<String, String>,
) -> Option<&'a Arc<DeploymentRing>> {
    rings.iter().find(|r| selector_matches(&r.spec.cell_selector, labels))
}

/// A store of `api`'s objects kept current by a watch until `shutdown` (managedFields dropped:
/// most of an object's bytes, never read here).
fn reflect<K>(api: Api<K>, config: watcher::Config, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream =
        watcher(api, config).default_backoff().modify(|obj| obj.managed_fields_mut().clear()).reflect(writer).for_each(
            |event| {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching the fleet failed; retrying");
                }
                futures::future::ready(())
            },
        );
    tokio::spawn(async move {
        tokio::select! {
            _ = stream => {}
            _ = shutdown.cancelled() => {}
        }
    });
    reader
}
