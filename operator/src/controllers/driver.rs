//! The one reconcile of every kind, the same fixed pipeline each time:
//!
//! 1. deleting? follow [`Reconciled::teardown`] (orders to the workflow, the Deleting condition,
//!    the finalizer removed when it is done);
//! 2. the finalizer, added on first sight;
//! 3. [`Reconciled::desire`]: validation and what the object asks for, decided from the object
//!    and the [`World`] alone: an invalid spec, a wait, or a workflow to run;
//! 4. the object's dependents kept (the ring's synthetic tenants);
//! 5. its workflow started unless it runs (cancelling the one it supersedes), then
//!    [`Reconciled::commands`] sent to it (signals, cancellation, a rerun);
//! 6. [`Reconciled::report`]: status from where that leaves it, written, then its Events.
//!
//! A kind states only what is its own, as pure functions over the object, the world and the
//! workflow's checkpoint; this module does every effect. Reconciles return in milliseconds and
//! never wait: they are triggered again by watches and by workflow progress.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cellplane_workflows::{Checkpoint, IdReuse, State, Workflow};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::context::Context;
use super::dependents::{self, Dependents};
use super::error::ReconcileError;
use super::events::Note;
use super::finalizers;
use super::status::{self, Blocker, blocked_on, stall_of};
use crate::api::conditions::Stall;
use crate::api::{Cell, DeploymentRing, object_key};
use crate::flows::fleet::ring_selecting;

/// How long a reconciled object waits before it is looked at again without a trigger.
const RESYNC: Duration = Duration::from_secs(600);
/// The same, while a teardown goes on.
const TEARDOWN_RESYNC: Duration = Duration::from_secs(300);

/// A kind the driver reconciles: the pure pieces that are its own.
pub trait Reconciled: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    /// The kind's name in logs and metrics.
    const KIND: &'static str;
    /// The workflow that does the object's long-running work.
    type Flow: Workflow<Input: Sync, Output: Sync>;
    type Status: Serialize + Send + Sync;

    /// Where the object is read and written.
    fn api(&self, client: Client) -> Result<Api<Self>, ReconcileError>;

    /// The status as this operator writes it (fields of other field managers left out).
    fn owned_status(&self) -> Option<Self::Status>;

    /// Validation and what the object asks for.
    fn desire(&self, world: &World) -> Result<Desired<Input<Self>>, ReconcileError>;

    /// Orders to the object's workflow, given where it stands (None: not started yet).
    fn commands(
        &self,
        _run: &Run<Input<Self>>,
        _checkpoint: Option<&Checkpoint>,
        _world: &World,
    ) -> Result<Vec<Command<Input<Self>>>, ReconcileError> {
        Ok(Vec::new())
    }

    /// The status for `stage`, and the Events that announce what changed from the current one.
    fn report(&self, stage: &Stage<'_, Input<Self>, Output<Self>>, world: &World) -> Report<Self::Status>;

    /// The workflow a teardown follows (None: there is none to follow).
    fn teardown_workflow(&self) -> Option<String>;

    /// What deleting the object does, given where that workflow stands.
    fn teardown(&self, checkpoint: Option<&Checkpoint>, world: &World)
    -> Result<Teardown<Input<Self>>, ReconcileError>;
}

pub type Input<K> = <<K as Reconciled>::Flow as Workflow>::Input;
pub type Output<K> = <<K as Reconciled>::Flow as Workflow>::Output;

/// What a reconcile decides with, besides the object: a snapshot of what this replica knows.
pub struct World {
    /// The operator's namespace (synthetic tenants live there).
    pub namespace: String,
    /// The labels that put an object under this operator.
    pub own_labels: BTreeMap<String, String>,
    pub cells: Vec<Arc<Cell>>,
    pub rings: Vec<Arc<DeploymentRing>>,
    pub releases: Vec<Arc<crate::api::Release>>,
    pub now: Timestamp,
}

impl World {
    /// The time of the snapshot, as statuses carry it.
    pub fn time(&self) -> Time {
        Time(self.now)
    }

    pub fn system_time(&self) -> SystemTime {
        SystemTime::from(self.now)
    }

    /// The ring that selects a cell with these labels (see [`ring_selecting`]).
    pub fn ring_of(&self, labels: &BTreeMap<String, String>) -> Option<&Arc<DeploymentRing>> {
        ring_selecting(&self.rings, labels)
    }
}

/// What an object asks for.
pub struct Desired<I> {
    pub work: Work<I>,
    /// Objects it keeps besides its workflow.
    pub dependents: Option<Dependents>,
}

impl<I> From<Work<I>> for Desired<I> {
    fn from(work: Work<I>) -> Self {
        Desired { work, dependents: None }
    }
}

pub enum Work<I> {
    /// The spec cannot be acted on; nothing runs until it changes.
    Invalid(Stall),
    /// Nothing to run until something outside the object happens (named here).
    Waiting(String),
    Run(Run<I>),
}

/// The object's workflow.
pub struct Run<I> {
    pub id: String,
    pub input: I,
    /// Why it may not start yet (once started, it runs on whatever this says).
    pub hold: Option<String>,
    /// A workflow this one replaces: cancelled before this one starts.
    pub supersedes: Option<String>,
    /// The Event that announces its start.
    pub announce: Option<Note>,
}

impl<I> Run<I> {
    pub fn new(id: String, input: I) -> Self {
        Run { id, input, hold: None, supersedes: None, announce: None }
    }
}

/// An order to a workflow.
pub enum Command<I> {
    /// A signal, sent at most once per process for each `once`.
    Signal { name: &'static str, once: String, payload: serde_json::Value },
    /// Cancellation (a workflow that has finished or does not exist is fine).
    Cancel,
    /// The finished workflow run again on its recorded input as `amend` changes it (None: it
    /// has run on that input already), announced by `note`.
    Rerun { amend: Box<dyn FnOnce(I) -> Option<I> + Send>, note: Note },
}

impl<I> Command<I> {
    pub fn signal(
        name: &'static str,
        once: impl Into<String>,
        payload: &impl Serialize,
    ) -> Result<Self, ReconcileError> {
        Ok(Command::Signal { name, once: once.into(), payload: serde_json::to_value(payload)? })
    }
}

/// What deleting an object does next.
pub enum Teardown<I> {
    /// Nothing is left to wait for: after `commands`, the release of the dependents and `note`,
    /// the finalizer goes.
    Finished { commands: Vec<Command<I>>, release: Option<Dependents>, note: Option<Note> },
    /// It cannot go on by itself: the Deleting condition says why.
    Blocked(Blocker),
    /// It goes on, kept going by `commands`; the Deleting condition says what it waits for.
    Continuing { commands: Vec<Command<I>>, blocker: Blocker },
}

/// Where an object's work stands, for its status.
pub enum Stage<'a, I, O> {
    /// Its spec cannot be acted on.
    Invalid(&'a Stall),
    /// Waiting for something outside it.
    Waiting(&'a str),
    /// Its workflow may not start yet.
    Held { run: &'a Run<I>, waiting: &'a str },
    /// Its workflow runs, or has finished (with `output` when it completed).
    Running { run: &'a Run<I>, checkpoint: Option<&'a Checkpoint>, output: Option<&'a O> },
    /// It is being deleted and its teardown waits for `blocker`.
    Deleting { checkpoint: Option<&'a Checkpoint>, blocker: &'a Blocker },
}

impl<'a, I, O> Stage<'a, I, O> {
    pub fn checkpoint(&self) -> Option<&'a Checkpoint> {
        match self {
            Stage::Running { checkpoint, .. } | Stage::Deleting { checkpoint, .. } => *checkpoint,
            _ => None,
        }
    }

    pub fn run(&self) -> Option<&'a Run<I>> {
        match self {
            Stage::Held { run, .. } | Stage::Running { run, .. } => Some(run),
            _ => None,
        }
    }

    pub fn blocker(&self) -> Option<&'a Blocker> {
        match self {
            Stage::Deleting { blocker, .. } => Some(blocker),
            _ => None,
        }
    }

    /// A stop that needs a person: an invalid spec, or a workflow that failed.
    pub fn failure(&self) -> Option<Stall> {
        match self {
            Stage::Invalid(stall) => Some((*stall).clone()),
            _ => self.checkpoint().and_then(stall_of),
        }
    }

    /// A step that waits for a permission the operator lacks.
    pub fn blocked(&self) -> Option<Stall> {
        self.checkpoint().and_then(blocked_on)
    }
}

/// A status and the Events that announce how it changed.
pub struct Report<S> {
    pub status: S,
    pub events: Vec<Note>,
}

/// Reconciles one object of kind `K`, in a span of its own, counted by kind and result.
pub async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = object_key(obj.as_ref());
    let span = tracing::info_span!("reconcile", kind = K::KIND, name = %key);
    let result = drive(obj.as_ref(), &ctx).instrument(span).await;
    ctx.metrics.count(K::KIND, result.is_ok());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

async fn drive<K: Reconciled>(obj: &K, ctx: &Context) -> Result<Action, ReconcileError> {
    let api = obj.api(ctx.client.clone())?;
    let world = ctx.world();
    if obj.meta().deletion_timestamp.is_some() {
        return tear_down(obj, ctx, &api, &world).await;
    }
    if finalizers::ensure(&api, obj).await? {
        return Ok(Action::await_change());
    }
    let Desired { work, dependents } = obj.desire(&world)?;
    if let Some(dependents) = &dependents {
        dependents::keep(ctx, dependents).await?;
    }
    match work {
        Work::Invalid(stall) => settle(obj, ctx, &api, &world, &Stage::Invalid(&stall)).await,
        Work::Waiting(waiting) => settle(obj, ctx, &api, &world, &Stage::Waiting(&waiting)).await,
        Work::Run(run) => run_workflow(obj, ctx, &api, &world, run).await,
    }
}

/// Starts the workflow unless it runs, sends it the kind's orders and reports where it stands.
async fn run_workflow<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    world: &World,
    run: Run<Input<K>>,
) -> Result<Action, ReconcileError> {
    let mut checkpoint = ctx.engine.checkpoint(&run.id).await?;
    if checkpoint.is_none() {
        if let Some(superseded) = &run.supersedes {
            ctx.cancel(superseded).await?;
        }
        if let Some(waiting) = &run.hold {
            return settle(obj, ctx, api, world, &Stage::Held { run: &run, waiting }).await;
        }
        ctx.ensure::<K::Flow>(&run.id, &run.input).await?;
        if let Some(note) = &run.announce {
            ctx.publish(obj, note).await;
        }
        checkpoint = ctx.engine.checkpoint(&run.id).await?;
    }
    for command in obj.commands(&run, checkpoint.as_ref(), world)? {
        execute(obj, ctx, &run.id, command).await?;
    }
    let output = output_of::<K>(ctx, checkpoint.as_ref()).await;
    let stage = Stage::Running { run: &run, checkpoint: checkpoint.as_ref(), output: output.as_ref() };
    report(obj, ctx, api, world, &stage).await?;
    Ok(Action::requeue(RESYNC))
}

/// Follows the teardown of a deleted object until its finalizer can go.
async fn tear_down<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    world: &World,
) -> Result<Action, ReconcileError> {
    let id = obj.teardown_workflow();
    let checkpoint = match &id {
        Some(id) => ctx.engine.checkpoint(id).await?,
        None => None,
    };
    match obj.teardown(checkpoint.as_ref(), world)? {
        Teardown::Finished { commands, release, note } => {
            execute_all(obj, ctx, id.as_deref(), commands).await?;
            if let Some(release) = &release {
                dependents::keep(ctx, release).await?;
            }
            if let Some(note) = &note {
                ctx.publish(obj, note).await;
            }
            finalizers::remove(api, obj).await?;
            Ok(Action::await_change())
        }
        Teardown::Blocked(blocker) => {
            let stage = Stage::Deleting { checkpoint: checkpoint.as_ref(), blocker: &blocker };
            settle(obj, ctx, api, world, &stage).await
        }
        Teardown::Continuing { commands, blocker } => {
            execute_all(obj, ctx, id.as_deref(), commands).await?;
            report(obj, ctx, api, world, &Stage::Deleting { checkpoint: checkpoint.as_ref(), blocker: &blocker })
                .await?;
            Ok(Action::requeue(TEARDOWN_RESYNC))
        }
    }
}

/// Reports `stage`, then waits for a change (a new spec, or the progress it waits for).
async fn settle<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    world: &World,
    stage: &Stage<'_, Input<K>, Output<K>>,
) -> Result<Action, ReconcileError> {
    report(obj, ctx, api, world, stage).await?;
    Ok(Action::await_change())
}

/// Writes the status for `stage`, then publishes the Events that follow from it.
async fn report<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    world: &World,
    stage: &Stage<'_, Input<K>, Output<K>>,
) -> Result<(), ReconcileError> {
    let Report { status, events } = obj.report(stage, world);
    status::apply(api, obj, obj.owned_status().as_ref(), &status).await?;
    for note in &events {
        ctx.publish(obj, note).await;
    }
    Ok(())
}

async fn execute_all<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    id: Option<&str>,
    commands: Vec<Command<Input<K>>>,
) -> Result<(), ReconcileError> {
    let Some(id) = id else { return Ok(()) };
    for command in commands {
        execute(obj, ctx, id, command).await?;
    }
    Ok(())
}

async fn execute<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    id: &str,
    command: Command<Input<K>>,
) -> Result<(), ReconcileError> {
    match command {
        Command::Signal { name, once, payload } => ctx.signal_once(id, name, &once, &payload).await,
        Command::Cancel => ctx.cancel(id).await,
        Command::Rerun { amend, note } => {
            let recorded = ctx.engine.journal().get(id).await?.map(|row| row.input);
            let input = recorded.and_then(|input| serde_json::from_value::<Input<K>>(input).ok()).and_then(amend);
            if let Some(input) = input {
                ctx.engine.start_with::<K::Flow>(id, &input, IdReuse::RestartIfFinished).await?;
                ctx.publish(obj, &note).await;
            }
            Ok(())
        }
    }
}

/// The output of a workflow that completed.
async fn output_of<K: Reconciled>(ctx: &Context, checkpoint: Option<&Checkpoint>) -> Option<Output<K>> {
    let completed = checkpoint.filter(|cp| cp.state == State::Completed)?;
    ctx.engine.result::<K::Flow>(&completed.id).await.ok()
}

#[cfg(test)]
pub(crate) mod tests {
    //! What the kinds' tests share: objects and checkpoints written as YAML, and a world.

    use super::*;

    /// An object or a checkpoint from its YAML.
    pub fn from_yaml<T: DeserializeOwned>(yaml: &str) -> T {
        serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{yaml}"))
    }

    /// A Release of `version`, of one ConfigMap.
    pub fn release(version: &str) -> crate::api::Release {
        from_yaml(&format!(
            "apiVersion: cellplane.io/v1alpha1\nkind: Release\nmetadata: {{name: service-{version}}}\n\
             spec: {{version: '{version}', manifests: 'kind: ConfigMap'}}\n"
        ))
    }

    /// The operator in namespace `cellplane-system`, with `cells` and `rings` in its fleet, and
    /// Releases of 1.0.0, 1.1.0 and 1.2.0.
    pub fn world(cells: &[&str], rings: &[&str]) -> World {
        World {
            namespace: "cellplane-system".into(),
            own_labels: BTreeMap::new(),
            cells: cells.iter().map(|yaml| Arc::new(from_yaml(yaml))).collect(),
            rings: rings.iter().map(|yaml| Arc::new(from_yaml(yaml))).collect(),
            releases: ["1.0.0", "1.1.0", "1.2.0"].iter().map(|v| Arc::new(release(v))).collect(),
            now: Timestamp::from_second(1_750_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }
}
