//! What every reconcile works with: the clients, the engine, the fleet, and what this process
//! remembers between reconciles (workflows started, signals sent, failures for the backoff).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cellplane_workflows::Engine;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde::Serialize;

use super::driver::World;
use super::error::ReconcileError;
use super::metrics::ControllerMetrics;
use crate::flows::Fleet;

pub struct Context {
    pub client: Client,
    pub engine: Arc<Engine>,
    /// The Cells and DeploymentRings, as this replica watches them.
    pub fleet: Arc<Fleet>,
    pub metrics: ControllerMetrics,
    /// Only objects with these labels are reconciled (see [`Context::watch_config`]).
    pub selector: Option<String>,
    /// The operator's namespace (synthetic tenants live there).
    pub namespace: String,
    /// Workflow ids known to exist, so a reconcile storm does not hit the journal.
    started: Mutex<HashSet<String>>,
    /// Signals already sent by this process, as `workflow id + signal`.
    signalled: Mutex<HashSet<String>>,
    /// Consecutive failures per object, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Context {
    pub fn new(
        client: Client,
        engine: Arc<Engine>,
        fleet: Arc<Fleet>,
        metrics: ControllerMetrics,
        selector: Option<String>,
        namespace: String,
    ) -> Arc<Self> {
        Arc::new(Context {
            client,
            engine,
            fleet,
            metrics,
            selector,
            namespace,
            started: Mutex::default(),
            signalled: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// What the controllers watch: every cellplane object, or those the label selector picks
    /// (one operator among several in a cluster, such as a test run's).
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match &self.selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// The same as [`Context::watch_config`], for a list.
    pub fn list_params(&self) -> kube::api::ListParams {
        let params = kube::api::ListParams::default();
        match &self.selector {
            Some(selector) => params.labels(selector),
            None => params,
        }
    }

    /// The labels that put an object under this operator (the equality terms of its selector).
    pub fn own_labels(&self) -> BTreeMap<String, String> {
        self.selector
            .iter()
            .flat_map(|s| s.split(','))
            .filter_map(|term| term.split_once('='))
            .filter(|(key, _)| !key.ends_with('!'))
            .map(|(key, value)| (key.trim().to_string(), value.trim_start_matches('=').trim().to_string()))
            .collect()
    }

    /// What a reconcile decides with, besides the object: the fleet as watched now.
    pub fn world(&self) -> World {
        World {
            namespace: self.namespace.clone(),
            own_labels: self.own_labels(),
            cells: self.fleet.cell_objects(),
            rings: self.fleet.rings(),
            releases: self.fleet.releases(),
            now: Timestamp::now(),
        }
    }

    /// Starts a workflow unless it is known to exist; idempotent either way.
    pub async fn ensure<W: cellplane_workflows::Workflow>(
        &self,
        id: &str,
        input: &W::Input,
    ) -> Result<(), ReconcileError> {
        if lock(&self.started).contains(id) {
            return Ok(());
        }
        self.engine.start::<W>(id, input).await?;
        lock(&self.started).insert(id.to_string());
        Ok(())
    }

    /// Whether work that is idempotent but worth doing once per change was done (see
    /// [`Context::remember`]).
    pub fn done(&self, key: &str) -> bool {
        lock(&self.signalled).contains(key)
    }

    /// Records that the work named `key` succeeded, so [`Context::done`] skips it from now on.
    pub fn remember(&self, key: String) {
        lock(&self.signalled).insert(key);
    }

    /// Sends a signal at most once per process (workflows tolerate a repeat after a restart).
    pub async fn signal_once<T: Serialize>(
        &self,
        id: &str,
        name: &str,
        key: &str,
        payload: &T,
    ) -> Result<(), ReconcileError> {
        let once = format!("{id}#{name}#{key}");
        if self.done(&once) {
            return Ok(());
        }
        match self.engine.signal(id, name, payload).await {
            Ok(()) | Err(cellplane_workflows::Error::WrongState { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.remember(once);
        Ok(())
    }

    /// Cancels a workflow; one that has finished or does not exist is fine.
    pub async fn cancel(&self, id: &str) -> Result<(), ReconcileError> {
        match self.engine.cancel(id).await {
            Ok(()) | Err(cellplane_workflows::Error::WrongState { .. } | cellplane_workflows::Error::NotFound(_)) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets an object's failures: its next failure backs off from the start again.
    pub(super) fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// The next retry delay for an object that failed: exponential with jitter, 1s to 5m.
    pub(super) fn backoff(&self, key: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let count = failures.entry(key.to_string()).or_default();
        *count = count.saturating_add(1);
        let base = Duration::from_secs(1).saturating_mul(1 << (*count - 1).min(8)).min(Duration::from_secs(300));
        base.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }
}
