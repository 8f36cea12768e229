//! A record of the in-cell effects executed, with the idempotency key each create came with:
//! the crash tests' proof that a step run again after a crash had no second effect (a second
//! role, a second certificate). [`super::sim::SimCellServices`] keeps one; [`Recorded`] keeps
//! one for any other services, across the services' restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use serde_json::Value;

use super::{
    CellCa, CellContext, CellError, CellServices, Certificates, DatabaseGrant, Pruned, ReleaseCheck, ReleaseRequest,
    RenderedRelease, Route, Tenant,
};

/// What an execution did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    Database,
    Certificates,
    Route,
    /// A rotation of the cell's CA.
    CellCa,
    /// An install of a release: the target is `cell@version`, the key the version.
    Release,
}

/// One call of the services that changes a cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub effect: Effect,
    /// `cell/tenant`, or the cell alone for its CA.
    pub target: String,
    /// The idempotency key of a create; None for a removal.
    pub key: Option<String>,
}

#[derive(Debug, Default)]
pub struct Ledger(Mutex<Vec<Execution>>);

impl Ledger {
    pub fn created(&self, effect: Effect, target: String, key: &str) {
        self.lock().push(Execution { effect, target, key: Some(key.to_string()) });
    }

    pub fn removed(&self, effect: Effect, target: String) {
        self.lock().push(Execution { effect, target, key: None });
    }

    /// Every execution so far, in order.
    pub fn executions(&self) -> Vec<Execution> {
        self.lock().clone()
    }

    /// Effects made again under another key while the first was still in place, as
    /// `Effect target: first key, then second key`. Empty when every create ran under one key
    /// (repeats with the same key are retries, and have no second effect). Renewals issue
    /// certificates again under new keys on purpose: a test that renews cannot ask this.
    pub fn duplicates(&self) -> Vec<String> {
        let mut in_place: BTreeMap<(Effect, String), String> = BTreeMap::new();
        let mut duplicates = Vec::new();
        for Execution { effect, target, key } in self.executions() {
            let Some(key) = key else {
                in_place.remove(&(effect, target));
                continue;
            };
            if let Some(first) = in_place.insert((effect, target.clone()), key.clone())
                && first != key
            {
                duplicates.push(format!("{effect:?} {target}: {first}, then {key}"));
            }
        }
        duplicates
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Execution>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `cell/tenant`: where a tenant's effect is.
pub fn target(cell: &CellContext, tenant: &Tenant) -> String {
    format!("{}/{}", cell.name, tenant.id)
}

/// Cell services that record in a ledger every change they are asked to make, then make it.
pub struct Recorded {
    inner: Arc<dyn CellServices>,
    ledger: Arc<Ledger>,
}

impl Recorded {
    pub fn new(inner: Arc<dyn CellServices>, ledger: Arc<Ledger>) -> Self {
        Recorded { inner, ledger }
    }
}

#[async_trait]
impl CellServices for Recorded {
    async fn ensure_cell_ca(&self, cell: &CellContext) -> Result<CellCa, CellError> {
        self.inner.ensure_cell_ca(cell).await
    }

    async fn rotate_cell_ca(&self, key: &str, cell: &CellContext) -> Result<CellCa, CellError> {
        self.ledger.created(Effect::CellCa, cell.name.clone(), key);
        self.inner.rotate_cell_ca(key, cell).await
    }

    async fn remove_cell_ca(&self, cell: &CellContext) -> Result<(), CellError> {
        self.ledger.removed(Effect::CellCa, cell.name.clone());
        self.inner.remove_cell_ca(cell).await
    }

    async fn create_database(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<DatabaseGrant, CellError> {
        self.ledger.created(Effect::Database, target(cell, tenant), key);
        self.inner.create_database(key, cell, tenant).await
    }

    async fn drop_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.ledger.removed(Effect::Database, target(cell, tenant));
        self.inner.drop_database(cell, tenant).await
    }

    async fn issue_certificates(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<Certificates, CellError> {
        self.ledger.created(Effect::Certificates, target(cell, tenant), key);
        self.inner.issue_certificates(key, cell, tenant).await
    }

    async fn remove_certificates(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.ledger.removed(Effect::Certificates, target(cell, tenant));
        self.inner.remove_certificates(cell, tenant).await
    }

    async fn create_route(&self, key: &str, cell: &CellContext, tenant: &Tenant) -> Result<Route, CellError> {
        self.ledger.created(Effect::Route, target(cell, tenant), key);
        self.inner.create_route(key, cell, tenant).await
    }

    async fn delete_route(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.ledger.removed(Effect::Route, target(cell, tenant));
        self.inner.delete_route(cell, tenant).await
    }

    async fn probe(&self, cell: &CellContext, tenant: &Tenant) -> Result<String, CellError> {
        self.inner.probe(cell, tenant).await
    }

    async fn probe_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.inner.probe_database(cell, tenant).await
    }

    async fn render_release(&self, cell: &CellContext, release: &ReleaseRequest) -> Result<RenderedRelease, CellError> {
        self.inner.render_release(cell, release).await
    }

    async fn apply_release_object(&self, cell: &CellContext, object: &Value, force: bool) -> Result<String, CellError> {
        self.inner.apply_release_object(cell, object, force).await
    }

    async fn check_release(&self, cell: &CellContext, inventory: &[String]) -> Result<ReleaseCheck, CellError> {
        self.inner.check_release(cell, inventory).await
    }

    async fn prune_release(&self, cell: &CellContext, stale: &[String]) -> Result<Pruned, CellError> {
        self.inner.prune_release(cell, stale).await
    }

    async fn release_drift(&self, cell: &CellContext, objects: &[Value]) -> Result<Vec<(usize, String)>, CellError> {
        self.inner.release_drift(cell, objects).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_repeated_under_its_key_is_a_retry_and_under_another_a_duplicate() {
        let ledger = Ledger::default();
        ledger.created(Effect::Database, "eu-1/orders.acme".into(), "k1");
        ledger.created(Effect::Database, "eu-1/orders.acme".into(), "k1");
        ledger.created(Effect::Route, "eu-1/orders.acme".into(), "k2");
        assert!(ledger.duplicates().is_empty());
        ledger.created(Effect::Database, "eu-1/orders.acme".into(), "k3");
        assert_eq!(ledger.duplicates(), ["Database eu-1/orders.acme: k1, then k3"]);
    }

    #[test]
    fn a_create_after_a_removal_is_a_new_effect() {
        let ledger = Ledger::default();
        ledger.created(Effect::Certificates, "eu-1/orders.acme".into(), "k1");
        ledger.removed(Effect::Certificates, "eu-1/orders.acme".into());
        ledger.created(Effect::Certificates, "eu-1/orders.acme".into(), "k2");
        assert!(ledger.duplicates().is_empty());
        assert_eq!(ledger.executions().len(), 3);
    }
}
