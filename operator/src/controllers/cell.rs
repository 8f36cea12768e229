//! The Cell controller: keeps one entity workflow per cell and mirrors it into status.

use std::sync::Arc;

use cellplane_workflows::{Checkpoint, State};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::driver::{Command, Desired, Reconciled, Report, Run, Stage, Teardown, Work, World};
use super::error::ReconcileError;
use super::events::Note;
use super::runner;
use super::status::{Blocker, Steps, conditions_for, progress_message, set_deleting, steps_done, workflow_status};
use crate::api::cell::{CELL_CONDITIONS, CELL_STEPS, CapacityUsage, Cell, CellPhase, CellStatus};
use crate::api::common::is_dns_label;
use crate::api::conditions::{self, Stall};
use crate::flows::cell::{COMMAND, CellCommand, CellInput, CellWorkflow};
use crate::flows::fleet::{CellView, view};
use crate::flows::{Owner, ids};

pub async fn run(ctx: Arc<super::Context>, shutdown: CancellationToken) {
    runner::run::<Cell>(ctx, shutdown, &[Owner::Cell]).await
}

type CellStage<'a> = Stage<'a, CellInput, ()>;

impl Reconciled for Cell {
    const KIND: &'static str = "Cell";
    type Flow = CellWorkflow;
    type Status = CellStatus;

    fn api(&self, client: Client) -> Result<Api<Self>, ReconcileError> {
        Ok(Api::all(client))
    }

    /// status.synthetic is the prober's (another field manager): neither compared nor written.
    fn owned_status(&self) -> Option<CellStatus> {
        self.status.clone().map(|s| CellStatus { synthetic: None, ..s })
    }

    fn desire(&self, _world: &World) -> Result<Desired<CellInput>, ReconcileError> {
        if let Err(message) = validate(self) {
            return Ok(Work::Invalid(Stall { reason: "InvalidSpec".into(), message }).into());
        }
        let uid = self.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
        let name = self.name_any();
        let id = ids::cell(&name, &uid);
        let generation = self.metadata.generation.unwrap_or(1);
        let input = CellInput { cell: name, spec: self.spec.clone(), generation, state: None };
        Ok(Work::Run(Run::new(id, input)).into())
    }

    /// A spec generation the workflow has not applied is sent to it.
    fn commands(
        &self,
        run: &Run<CellInput>,
        checkpoint: Option<&Checkpoint>,
        world: &World,
    ) -> Result<Vec<Command<CellInput>>, ReconcileError> {
        // Before its first view the workflow decides: it ignores generations it has applied.
        let applied = view::<CellView>(checkpoint).map_or(1, |v| v.applied_generation);
        let generation = run.input.generation;
        if generation <= applied {
            return Ok(Vec::new());
        }
        let ring = world.ring_of(self.labels()).map(|r| r.name_any());
        let command = CellCommand::ApplySpec { generation, spec: Box::new(self.spec.clone()), ring };
        Ok(vec![Command::signal(COMMAND, generation.to_string(), &command)?])
    }

    fn report(&self, stage: &CellStage<'_>, world: &World) -> Report<CellStatus> {
        let view = view::<CellView>(stage.checkpoint());
        let failed = stage.failure();
        let stall = failed.clone().or_else(|| stage.blocked());
        let status = status(self, stage, view.as_ref(), stall.as_ref(), failed.is_some(), world);
        let before = self.status.as_ref().and_then(|s| s.phase);
        let events = announce(self, before, status.phase, stall.as_ref(), view.and_then(|v| v.last_failure));
        Report { status, events: events.into_iter().collect() }
    }

    fn teardown_workflow(&self) -> Option<String> {
        Some(ids::cell(&self.name_any(), &self.uid()?))
    }

    fn teardown(&self, checkpoint: Option<&Checkpoint>, _world: &World) -> Result<Teardown<CellInput>, ReconcileError> {
        teardown(checkpoint)
    }
}

fn validate(cell: &Cell) -> Result<(), String> {
    let name = cell.name_any();
    if !is_dns_label(&name) {
        return Err(format!("metadata.name {name:?} must be a DNS label (it names cloud resources)"));
    }
    if !is_dns_label(&cell.spec.region) {
        return Err(format!("spec.region {:?} must be a DNS label", cell.spec.region));
    }
    let built = crate::cloud::providers::built_in();
    let provider = crate::cloud::providers::name(cell.spec.provider);
    if !built.contains(&provider) {
        return Err(format!("provider {provider} is not built into this binary (it has: {})", built.join(", ")));
    }
    for pool in &cell.spec.cluster.node_pools {
        if !is_dns_label(&pool.name) {
            return Err(format!("node pool name {:?} must be a DNS label", pool.name));
        }
        if pool.min_nodes > pool.max_nodes {
            return Err(format!("node pool {}: minNodes must not be greater than maxNodes", pool.name));
        }
    }
    if cell.spec.capacity.max_namespaces < 0 {
        return Err("spec.capacity.maxNamespaces must not be negative".into());
    }
    Ok(())
}

/// Status from the workflow's checkpoint and the view it published; before its first view the
/// last written status stays.
fn status(
    cell: &Cell,
    stage: &CellStage<'_>,
    view: Option<&CellView>,
    stall: Option<&Stall>,
    failed: bool,
    world: &World,
) -> CellStatus {
    let checkpoint = stage.checkpoint();
    let mut status = cell.owned_status().unwrap_or_default();
    let generation = cell.metadata.generation;
    let done = steps_done(CELL_STEPS, view.map(|v| v.done.as_slice()), &status.conditions);
    if let Some(view) = view {
        status.phase = view.phase;
        status.resources = Some(view.resources.clone());
        status.endpoint = view.endpoint.clone();
        status.running_version = view.running_version.clone();
        status.capacity_used = Some(view.used.clone());
    }
    if failed {
        status.phase = Some(CellPhase::Failed);
    }
    status.phase = status.phase.or(Some(CellPhase::Pending));
    status.capacity_used.get_or_insert_with(CapacityUsage::default);
    // The steps hold for the spec the workflow has applied; until it applies a newer one (a new
    // Kubernetes version, node pools), they are stale and the cell is not Ready at it.
    let applied = view.map(|v| v.applied_generation).filter(|g| *g > 0).or(generation);
    let now = world.time();
    let steps = Steps {
        all: CELL_CONDITIONS,
        steps: CELL_STEPS,
        done: &done,
        waiting: checkpoint.map(progress_message),
        generation: applied,
        stall,
    };
    let mut conditions = conditions_for(&status.conditions, steps, &now);
    if applied < generation {
        conditions::set_summary(&mut conditions, CELL_STEPS, generation, stall, &now);
    }
    set_deleting(&mut conditions, stage.blocker(), generation, &now);
    status.conditions = conditions;
    status.observed_generation = generation;
    status.workflow = checkpoint.map(workflow_status);
    status
}

/// An Event when the phase changes: the stall, Ready (with a failed upgrade, if any), or the
/// new phase.
fn announce(
    cell: &Cell,
    before: Option<CellPhase>,
    after: Option<CellPhase>,
    stall: Option<&Stall>,
    failure: Option<String>,
) -> Option<Note> {
    if before == after {
        return None;
    }
    match (after, stall) {
        (_, Some(stall)) => Some(Note::warning(stall.reason.clone(), stall.message.clone())),
        (Some(CellPhase::Ready), _) => {
            let version = cell.status.as_ref().and_then(|s| s.running_version.clone()).unwrap_or_default();
            let note = match failure {
                Some(failure) => format!("cell is ready; {failure}"),
                None => format!("cell is ready {version}"),
            };
            Some(Note::normal("Ready", note))
        }
        (Some(phase), _) => Some(Note::normal(format!("{phase:?}"), format!("cell is {phase:?}"))),
        (None, _) => None,
    }
}

/// Teardown through the entity workflow, which refuses while namespaces are placed.
fn teardown(checkpoint: Option<&Checkpoint>) -> Result<Teardown<CellInput>, ReconcileError> {
    let Some(checkpoint) = checkpoint else {
        return Ok(Teardown::Finished { commands: Vec::new(), release: None, note: None });
    };
    let view = view::<CellView>(Some(checkpoint)).unwrap_or_default();
    match checkpoint.state {
        State::Completed | State::Cancelled => {
            let note = Note::normal("Deleted", "cloud resources deleted");
            return Ok(Teardown::Finished { commands: Vec::new(), release: None, note: Some(note) });
        }
        State::Failed | State::NonDeterministic => {
            let message = format!(
                "the cell's workflow ended {}: {}; its cloud resources may remain",
                checkpoint.state,
                checkpoint.reason.clone().unwrap_or_default()
            );
            let reason = if view.left.is_empty() { "WorkflowFailed" } else { "ResourcesLeft" };
            return Ok(Teardown::Blocked(Blocker::new(reason, message)));
        }
        _ => {}
    }
    let blocker = match view.blocked {
        Some(blocked) => Blocker::new("NamespacesRemain", blocked),
        None if !view.left.is_empty() => {
            Blocker::new("ResourcesLeft", format!("still found after teardown: {}", view.left.join(", ")))
        }
        None => Blocker::new("TearingDown", progress_message(checkpoint)),
    };
    let delete = Command::signal(COMMAND, "delete", &CellCommand::Delete)?;
    Ok(Teardown::Continuing { commands: vec![delete], blocker })
}
