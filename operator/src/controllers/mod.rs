//! The controllers, one file per kind. A reconcile returns in milliseconds and never waits:
//! finalizer first, then validation, then an idempotent `ensure` of the object's workflow, then
//! status mirrored from the workflow (through server-side apply on the status subresource).
//! Reconciles are triggered by watches and by workflow progress, never by polling.

pub mod cell;
pub mod gauges;
pub mod leader;
pub mod namespace;
pub mod ring;
pub mod synthetic;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cellplane_workflows::{Checkpoint, Engine, State};
use futures::{Stream, StreamExt};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use crate::api::common::{WorkflowState, WorkflowStatus};
use crate::api::conditions::{self, Condition, ConditionStatus, MAX_MESSAGE_LENGTH, Stall, truncated};
use crate::flows::{Fleet, Owner, ids};

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "cellplane";
/// Finalizer on every cellplane object: teardown runs before the object goes.
pub const FINALIZER: &str = "cellplane.io/teardown";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {}", crate::kube_error::describe(.0))]
    Kube(#[from] kube::Error),
    #[error("workflow engine error: {0}")]
    Engine(#[from] cellplane_workflows::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error("could not encode status: {0}")]
    Json(#[from] serde_json::Error),
}

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

/// What every reconcile works with.
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

    /// The labels that put an object under this operator (the equality terms of its selector).
    pub fn own_labels(&self) -> std::collections::BTreeMap<String, String> {
        self.selector
            .iter()
            .flat_map(|s| s.split(','))
            .filter_map(|term| term.split_once('='))
            .filter(|(key, _)| !key.ends_with('!'))
            .map(|(key, value)| (key.trim().to_string(), value.trim_start_matches('=').trim().to_string()))
            .collect()
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
        if lock(&self.signalled).contains(&once) {
            return Ok(());
        }
        match self.engine.signal(id, name, payload).await {
            Ok(()) | Err(cellplane_workflows::Error::WrongState { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        lock(&self.signalled).insert(once);
        Ok(())
    }

    fn succeeded(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// The next retry delay for an object that failed: exponential with jitter, 1s to 5m.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let count = failures.entry(key.to_string()).or_default();
        *count = count.saturating_add(1);
        let base = Duration::from_secs(1).saturating_mul(1 << (*count - 1).min(8)).min(Duration::from_secs(300));
        base.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }

    /// Publishes a Kubernetes Event (events.k8s.io/v1) about `obj`; failing to record one never
    /// fails a reconcile. Written directly rather than through kube's `Recorder`, which keeps
    /// every event for six minutes and scans them all on each publish: at fleet scale that was
    /// tens of MiB and quadratic time, for series counting that milestone events do not need.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, note: String) {
        let regarding = obj.object_ref(&());
        let now = Timestamp::now();
        let event = K8sEvent {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{}.{:x}", regarding.name.as_deref().unwrap_or(MANAGER), now.as_nanosecond())),
                ..Default::default()
            },
            action: Some("Reconcile".into()),
            reason: Some(reason.into()),
            note: Some(truncate_bytes(note, EVENT_NOTE_LIMIT)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            event_time: Some(MicroTime(now)),
            reporting_controller: Some(MANAGER.into()),
            reporting_instance: Some(self.engine.owner().to_string()),
            regarding: Some(regarding.clone()),
            ..Default::default()
        };
        // Events of cluster-scoped objects go to kube-system: every API server accepts them
        // there (1.20 refuses `default`), and kubectl describe finds them in any namespace.
        let namespace = regarding.namespace.as_deref().unwrap_or("kube-system");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %crate::kube_error::describe(&e), %reason, "could not publish an event");
        }
    }
}

/// The longest Event note an API server accepts, in bytes.
const EVENT_NOTE_LIMIT: usize = 1024;

/// `text` cut to at most `limit` bytes (not characters, as for conditions) at a character
/// boundary, marked with an ellipsis.
fn truncate_bytes(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The error policy shared by the controllers: back off with jitter, per object.
pub fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&object_key(obj.as_ref()));
    tracing::warn!(object = %object_key(obj.as_ref()), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// `namespace/name`, or `name` for cluster-scoped objects: what identifies an object of a kind.
pub fn object_key<K: ResourceExt>(obj: &K) -> String {
    match obj.namespace() {
        Some(namespace) => format!("{namespace}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Wraps a reconcile: counts it and resets the object's backoff on success.
pub async fn counted<K: ResourceExt>(
    kind: &str,
    obj: &K,
    ctx: &Context,
    result: Result<Action, ReconcileError>,
) -> Result<Action, ReconcileError> {
    ctx.metrics.count(kind, result.is_ok());
    if result.is_ok() {
        ctx.succeeded(&object_key(obj));
    }
    result
}

/// Whether a name can be a DNS label (names reach hostnames, cloud tags and SQL identifiers).
pub fn is_dns_label(name: &str) -> bool {
    // The same rule as DNS_LABEL_PATTERN, without a regex engine.
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Adds the finalizer if missing. Returns true when it was added (the write re-triggers us).
pub async fn ensure_finalizer<K>(api: &Api<K>, obj: &K) -> Result<bool, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(false);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    patch_finalizers(api, obj, finalizers).await?;
    Ok(true)
}

/// Removes the finalizer; an object that is already gone is fine.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K) -> Result<(), ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let finalizers: Vec<String> = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match patch_finalizers(api, obj, finalizers).await {
        Err(ReconcileError::Kube(kube::Error::Api(status))) if status.code == 404 => Ok(()),
        other => other,
    }
}

async fn patch_finalizers<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<(), ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.meta().name.as_deref().ok_or(ReconcileError::MissingField("metadata.name"))?;
    // The resourceVersion makes a concurrent change to the list a conflict, not an overwrite.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": obj.meta().resource_version }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Writes `status` through server-side apply on the status subresource, unless it is unchanged.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, current: Option<&S>, status: &S) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize + PartialEq,
{
    // Compared as the API stores them: it keeps times to the second, so a status whose times
    // were computed again in milliseconds is still the same status (comparing the structs, every
    // requeue of every object rewrote it: 10,200 objects made 1,000 requests a minute at rest).
    if current.is_some_and(|current| serde_json::to_value(current).ok() == serde_json::to_value(status).ok()) {
        return Ok(());
    }
    let name = obj.meta().name.as_deref().ok_or(ReconcileError::MissingField("metadata.name"))?;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing left to report on.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn now() -> Time {
    Time(Timestamp::now())
}

pub fn time_ms(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The `workflow` block of a status, from the engine's checkpoint.
pub fn workflow_status(cp: &Checkpoint) -> WorkflowStatus {
    let state = match cp.state {
        State::Pending => WorkflowState::Pending,
        State::Running => WorkflowState::Running,
        State::Sleeping if cp.last_error.is_some() => WorkflowState::Retrying,
        State::Sleeping | State::WaitingSignal => WorkflowState::Waiting,
        State::Completed => WorkflowState::Completed,
        State::Failed | State::NonDeterministic => WorkflowState::Failed,
        State::Cancelled => WorkflowState::Cancelled,
    };
    WorkflowStatus {
        id: cp.id.clone(),
        state,
        step: cp.step.clone(),
        attempt: (cp.attempt > 0).then_some(cp.attempt),
        last_error: cp.last_error.clone().map(|e| truncated(e, MAX_MESSAGE_LENGTH)),
        waiting_for: cp.reason.clone().map(|r| truncated(r, MAX_MESSAGE_LENGTH)),
        next_attempt_at: cp.next_attempt_at.and_then(time_ms),
        updated_at: time_ms(cp.updated_at),
    }
}

/// What a person should read about the step in progress: step, attempt, last error, wait.
pub fn progress_message(cp: &Checkpoint) -> String {
    let mut parts = Vec::new();
    match &cp.step {
        Some(step) if cp.attempt > 1 => parts.push(format!("step {step} (attempt {})", cp.attempt)),
        Some(step) => parts.push(format!("step {step}")),
        None => {}
    }
    if let Some(error) = &cp.last_error {
        parts.push(format!("last error: {error}"));
    }
    if let Some(reason) = &cp.reason {
        parts.push(reason.clone());
    }
    if parts.is_empty() {
        parts.push(format!("workflow {}", cp.state));
    }
    parts.join("; ")
}

/// Why a finished workflow stopped, as a Stall (None while it is active or completed).
pub fn stall_of(cp: &Checkpoint) -> Option<Stall> {
    match cp.state {
        State::Failed => Some(Stall {
            reason: "WorkflowFailed".into(),
            message: format!(
                "workflow {} failed: {}",
                cp.id,
                cp.reason.clone().or(cp.last_error.clone()).unwrap_or_default()
            ),
        }),
        State::NonDeterministic => {
            Some(Stall { reason: "NonDeterministic".into(), message: cp.reason.clone().unwrap_or_default() })
        }
        _ => None,
    }
}

/// A step that waits for a permission the operator lacks, as a Stall naming it (the workflow
/// retries until an administrator grants it, then goes on where it stopped).
pub fn blocked_on(cp: &Checkpoint) -> Option<Stall> {
    let error = cp.last_error.as_deref().filter(|e| e.starts_with(crate::cell::MISSING_PERMISSION))?;
    let step = cp.step.as_deref().unwrap_or("?");
    Some(Stall {
        reason: "MissingPermission".into(),
        message: format!("step {step} waits for a permission (retrying until it is granted): {error}"),
    })
}

/// The conditions of an object: every type Unknown on first sight, the steps in `done` True,
/// the first pending step Unknown with what it waits for, then Ready/Reconciling/Stalled.
pub fn conditions_for(
    existing: &[Condition],
    all: &[&str],
    steps: &[&str],
    done: &[&str],
    waiting: Option<String>,
    generation: Option<i64>,
    stall: Option<&Stall>,
) -> Vec<Condition> {
    let now = now();
    let mut conditions = existing.to_vec();
    conditions::init_conditions(&mut conditions, all, generation, &now);
    let mut first_pending = true;
    for step in steps {
        let update = if done.contains(step) {
            Condition::new(*step, ConditionStatus::True, "Succeeded", "", generation, now.clone())
        } else if first_pending {
            first_pending = false;
            let (status, reason) = match stall {
                Some(stall) => (ConditionStatus::False, stall.reason.as_str()),
                None => (ConditionStatus::Unknown, "InProgress"),
            };
            let message = stall.map(|s| s.message.clone()).or(waiting.clone()).unwrap_or_default();
            Condition::new(*step, status, reason, message, generation, now.clone())
        } else {
            continue;
        };
        conditions::set_condition(&mut conditions, update);
    }
    conditions::set_summary(&mut conditions, steps, generation, stall, &now);
    conditions
}

/// Sets (or, with None, removes) the Deleting condition.
pub fn set_deleting(conditions: &mut Vec<Condition>, blocker: Option<(&str, String)>, generation: Option<i64>) {
    match blocker {
        Some((reason, message)) => {
            let c =
                Condition::new(conditions::types::DELETING, ConditionStatus::False, reason, message, generation, now());
            conditions::set_condition(conditions, c);
        }
        None => conditions.retain(|c| c.type_ != conditions::types::DELETING),
    }
}

/// Reconcile triggers for objects of one kind: every change of a workflow it owns (its checkpoint
/// or the view it published, on any replica), as an ObjectRef. When changes were missed (a burst
/// larger than the channel), every object in `store` is reconciled, so no final progress goes
/// unseen.
pub fn triggers<K>(
    engine: &Engine,
    owners: &'static [Owner],
    store: Store<K>,
) -> impl Stream<Item = ObjectRef<K>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    receiver_stream(engine.changes()).flat_map(move |id| {
        let refs: Vec<ObjectRef<K>> = match id {
            Some(id) => ids::owner(&id)
                .filter(|(owner, ..)| owners.contains(owner))
                .map(|(_, namespace, name)| match namespace {
                    Some(namespace) => ObjectRef::new(name).within(namespace),
                    None => ObjectRef::new(name),
                })
                .into_iter()
                .collect(),
            None => store.state().iter().map(|obj| ObjectRef::from(obj.as_ref())).collect(),
        };
        futures::stream::iter(refs)
    })
}

/// Items of a broadcast channel; None where some were missed.
fn receiver_stream<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> impl Stream<Item = Option<T>> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(item) => Some((Some(item), rx)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

/// Runs a controller for `K` that reconciles on changes to its objects and on the progress of
/// the workflows of `owners`, until `shutdown`.
pub async fn run_controller<K, Fut>(
    ctx: Arc<Context>,
    shutdown: tokio_util::sync::CancellationToken,
    owners: &'static [Owner],
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static + gauges::Tracked,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let controller = controller_for(Api::<K>::all(ctx.client.clone()), ctx.watch_config());
    ctx.metrics.objects.track(controller.store());
    let progress = triggers(&ctx.engine, owners, controller.store());
    controller
        .reconcile_on(progress)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// A controller whose cache drops managedFields (most of an object's bytes, never read here).
pub fn controller_for<K>(api: Api<K>, config: kube::runtime::watcher::Config) -> kube::runtime::Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store();
    let objects = watcher(api, config)
        .default_backoff()
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    kube::runtime::Controller::for_stream(objects, reader).with_config(controller_config())
}

/// Bursts of workflow progress (several checkpoints per step) collapse into one reconcile, and
/// at most [`RECONCILE_CONCURRENCY`] reconciles of a kind run at once.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().debounce(Duration::from_millis(250)).concurrency(RECONCILE_CONCURRENCY)
}

/// Reconciles of one kind in flight at once. Each holds an HTTP/1 connection to the API server
/// while it writes, and idle connections keep their buffers: unbounded, a burst of ten thousand
/// namespaces meant ten thousand connections and hundreds of MiB.
pub const RECONCILE_CONCURRENCY: u16 = 8;

/// Runs the three controllers and the synthetic prober until `shutdown`.
pub async fn run_all(ctx: Arc<Context>, prober: &synthetic::Prober, shutdown: tokio_util::sync::CancellationToken) {
    tokio::join!(
        cell::run(ctx.clone(), shutdown.clone()),
        namespace::run(ctx.clone(), shutdown.clone()),
        ring::run(ctx.clone(), shutdown.clone()),
        prober.run(ctx, shutdown),
    );
}
