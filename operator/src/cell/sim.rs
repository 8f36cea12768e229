//! Simulated in-cell services: they keep what they created in memory (a few bytes per tenant)
//! so tests can check that teardown leaves nothing behind. The fleet benchmark uses them, and
//! [`super::cluster::ClusterCellServices`] uses them for the database of a cell that names none.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::ledger::{Effect, Ledger, target};
use serde_json::Value;

use super::{
    CellCa, CellContext, CellError, CellServices, Certificates, DatabaseGrant, Pruned, ReleaseCheck, ReleaseRequest,
    RenderedRelease, Route, Tenant, names,
};

/// Versions whose name ends so serve errors in a simulated cell: a release that upgrades fine
/// and then fails its synthetic probes, for rollbacks in the sandbox and the tests.
pub const BROKEN_SUFFIX: &str = "-broken";

/// Why a simulated cell's front door refuses a probe, if it does: its version is a broken one.
pub fn front_door_fault(cell: &CellContext) -> Option<CellError> {
    let version = cell.version.as_deref().filter(|v| v.ends_with(BROKEN_SUFFIX))?;
    Some(CellError::Transient(format!("cell {} resets connections: it runs {version}", cell.name)))
}

#[derive(Default)]
pub struct SimCellServices {
    latency: Duration,
    /// How long a release takes to become healthy.
    release_latency: Duration,
    /// Live objects as `cell/kind/tenant`.
    live: Mutex<BTreeSet<String>>,
    /// Cells whose front door is down (an outage a test switches on and off).
    outages: Mutex<BTreeSet<String>>,
    /// Versions whose release never becomes healthy, and the version each cell installs.
    failing: Mutex<BTreeSet<String>>,
    installing: Mutex<BTreeMap<String, String>>,
    /// Every create and removal asked for, with its key.
    ledger: Ledger,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SimCellServices {
    pub fn new(latency: Duration) -> Self {
        SimCellServices { latency, ..SimCellServices::default() }
    }

    /// Releases take `latency` to render (a slow upgrade).
    pub fn with_release_latency(self, latency: Duration) -> Self {
        SimCellServices { release_latency: latency, ..self }
    }

    /// The release of `version` fails its health check in every cell from now on.
    pub fn fail_version(&self, version: &str) {
        locked(&self.failing).insert(version.to_string());
    }

    /// Takes a cell's front door down (`true`) or brings it back.
    pub fn outage(&self, cell: &str, down: bool) {
        let mut outages = locked(&self.outages);
        if down {
            outages.insert(cell.to_string());
        } else {
            outages.remove(cell);
        }
    }

    fn is_down(&self, cell: &str) -> bool {
        locked(&self.outages).contains(cell)
    }

    /// What was executed, in order: the creates with their keys, and the removals.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Objects that exist now, as `cell/kind/tenant` (kinds: database, certificates, route).
    pub fn live(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeSet<String>> {
        locked(&self.live)
    }

    async fn put(&self, key: &str, cell: &CellContext, effect: Effect, tenant: &Tenant) {
        self.ledger.created(effect, target(cell, tenant), key);
        tokio::time::sleep(self.latency).await;
        self.lock().insert(format!("{}/{}/{}", cell.name, kind(effect), tenant.id));
    }

    async fn remove(&self, cell: &CellContext, effect: Effect, tenant: &Tenant) {
        self.ledger.removed(effect, target(cell, tenant));
        tokio::time::sleep(self.latency).await;
        self.lock().remove(&format!("{}/{}/{}", cell.name, kind(effect), tenant.id));
    }
}

/// The kind of a live object, as [`SimCellServices::live`] names it.
fn kind(effect: Effect) -> &'static str {
    match effect {
        Effect::Database => "database",
        Effect::Certificates => "certificates",
        Effect::Route => "route",
        Effect::CellCa => "cell-ca",
        Effect::Release => "release",
    }
}

#[async_trait]
impl CellServices for SimCellServices {
    async fn ensure_cell_ca(&self, cell: &CellContext) -> Result<CellCa, CellError> {
        Ok(CellCa { secret: format!("{}.cell-ca", cell.name), not_after_ms: None, renew_at_ms: None })
    }

    async fn rotate_cell_ca(&self, key: &str, cell: &CellContext) -> Result<CellCa, CellError> {
        self.ledger.created(Effect::CellCa, cell.name.clone(), key);
        self.ensure_cell_ca(cell).await
    }

    async fn remove_cell_ca(&self, cell: &CellContext) -> Result<(), CellError> {
        self.ledger.removed(Effect::CellCa, cell.name.clone());
        Ok(())
    }

    async fn create_database(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<DatabaseGrant, CellError> {
        self.put(key, cell, Effect::Database, tenant).await;
        let name = tenant.id.unique_name("tenant_", '_', 63);
        Ok(DatabaseGrant {
            role: name.clone(),
            database: name,
            secret: names::database(&tenant.id),
            server: String::new(),
            privileges: String::new(),
            simulated: true,
        })
    }

    async fn drop_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.remove(cell, Effect::Database, tenant).await;
        Ok(())
    }

    async fn issue_certificates(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<Certificates, CellError> {
        self.put(key, cell, Effect::Certificates, tenant).await;
        let issue_client = tenant.mtls.issue_client_certificate.unwrap_or(false);
        Ok(Certificates {
            server_secret: names::server(&tenant.id),
            client_ca_secret: names::client_ca(&tenant.id),
            client_secret: issue_client.then(|| names::client(&tenant.id)),
            not_after_ms: None,
            renew_at_ms: None,
        })
    }

    async fn remove_certificates(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.remove(cell, Effect::Certificates, tenant).await;
        Ok(())
    }

    async fn create_route(&self, key: &str, cell: &CellContext, tenant: &Tenant) -> Result<Route, CellError> {
        self.put(key, cell, Effect::Route, tenant).await;
        Ok(Route { name: names::route(&tenant.id), kind: String::new(), namespace: String::new() })
    }

    async fn delete_route(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.remove(cell, Effect::Route, tenant).await;
        Ok(())
    }

    async fn probe_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        let database = format!("{}/database/{}", cell.name, tenant.id);
        if self.lock().contains(&database) { Ok(()) } else { Err(CellError::Transient("no database".into())) }
    }

    async fn probe(&self, cell: &CellContext, tenant: &Tenant) -> Result<String, CellError> {
        tokio::time::sleep(self.latency).await;
        if let Some(fault) = front_door_fault(cell) {
            return Err(fault);
        }
        if self.is_down(&cell.name) {
            return Err(CellError::Transient(format!("cell {} is down", cell.name)));
        }
        let route = format!("{}/route/{}", cell.name, tenant.id);
        if self.lock().contains(&route) {
            Ok(format!("simulated connection to {}", tenant.endpoint))
        } else {
            Err(CellError::Transient(format!("no route answers for {}", tenant.endpoint)))
        }
    }

    /// A release renders to nothing here: the simulated cell records that it runs it.
    async fn render_release(&self, cell: &CellContext, release: &ReleaseRequest) -> Result<RenderedRelease, CellError> {
        let spec = &release.spec;
        tokio::time::sleep(self.release_latency).await;
        self.ledger.created(Effect::Release, format!("{}@{}", cell.name, spec.version), &spec.version);
        locked(&self.installing).insert(cell.name.clone(), spec.version.clone());
        let ms = |value: &str| crate::api::common::parse_duration(value).map_or(0, |d| d.as_millis() as u64);
        Ok(RenderedRelease {
            name: release.name.clone(),
            version: spec.version.clone(),
            namespace: super::software::namespace_of(spec, &cell.name, true),
            objects: Vec::new(),
            front_door: None,
            health_timeout_ms: ms(&spec.health_timeout),
            drift_interval_ms: ms(&spec.drift_interval),
            force: spec.force,
        })
    }

    async fn apply_release_object(&self, _: &CellContext, object: &Value, _: bool) -> Result<String, CellError> {
        Ok(object["metadata"]["name"].as_str().unwrap_or_default().to_string())
    }

    /// A release is healthy in a simulated cell unless its version was made to fail (a broken
    /// one is healthy, and fails at its front door).
    async fn check_release(&self, cell: &CellContext, _: &[String]) -> Result<ReleaseCheck, CellError> {
        let version = locked(&self.installing).get(&cell.name).cloned().unwrap_or_default();
        if locked(&self.failing).contains(&version) {
            let report = format!("Deployment service/frontend: 0/2 available (simulated failure of {version})");
            return Ok(ReleaseCheck { healthy: false, failed: true, report });
        }
        Ok(ReleaseCheck { healthy: true, failed: false, report: String::new() })
    }

    async fn prune_release(&self, _: &CellContext, _: &[String]) -> Result<Pruned, CellError> {
        Ok(Pruned { done: true, kept: Vec::new() })
    }

    async fn release_drift(&self, _: &CellContext, _: &[Value]) -> Result<Vec<(usize, String)>, CellError> {
        Ok(Vec::new())
    }
}
