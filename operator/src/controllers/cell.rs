//! The Cell controller: keeps one entity workflow per cell and mirrors it into status.

use std::sync::Arc;

use cellplane_workflows::Checkpoint;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Context, ReconcileError, apply_status, blocked_on, conditions_for, counted, ensure_finalizer, is_dns_label,
    progress_message, remove_finalizer, set_deleting, stall_of, workflow_status,
};
use crate::api::cell::{CELL_CONDITIONS, CELL_STEPS, CapacityUsage, Cell, CellPhase, CellStatus};
use crate::api::conditions::{self, Stall};
use crate::flows::cell::{COMMAND, CellCommand, CellInput, CellWorkflow};
use crate::flows::fleet::{CellView, view};
use crate::flows::{Owner, ids};

const KIND: &str = "Cell";

pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    super::run_controller::<Cell, _>(ctx, shutdown, &[Owner::Cell], reconcile).await
}

async fn reconcile(cell: Arc<Cell>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let span = tracing::info_span!("reconcile", kind = KIND, name = %cell.name_any());
    let result = reconcile_inner(&cell, &ctx).instrument(span).await;
    counted(KIND, cell.as_ref(), &ctx, result).await
}

async fn reconcile_inner(cell: &Cell, ctx: &Context) -> Result<Action, ReconcileError> {
    let api: Api<Cell> = Api::all(ctx.client.clone());
    if cell.metadata.deletion_timestamp.is_some() {
        return cleanup(cell, ctx, &api).await;
    }
    if ensure_finalizer(&api, cell).await? {
        return Ok(Action::await_change());
    }
    let name = cell.name_any();
    if let Err(problem) = validate(cell) {
        let stall = Stall { reason: "InvalidSpec".into(), message: problem };
        write_status(cell, ctx, &api, None, Some(&stall), None).await?;
        return Ok(Action::await_change());
    }
    let uid = cell.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
    let id = ids::cell(&name, &uid);
    let generation = cell.metadata.generation.unwrap_or(1);
    let input = CellInput { cell: name.clone(), spec: cell.spec.clone(), generation, state: None };
    ctx.ensure::<CellWorkflow>(&id, &input).await?;
    let checkpoint = ctx.engine.checkpoint(&id).await?;
    // Before its first view the workflow decides: it ignores generations it has applied.
    let applied = view::<CellView>(checkpoint.as_ref()).map_or(1, |v| v.applied_generation);
    if generation > applied {
        let ring = ctx.fleet.ring_of(cell.labels()).map(|r| r.name_any());
        let command = CellCommand::ApplySpec { generation, spec: Box::new(cell.spec.clone()), ring };
        ctx.signal_once(&id, COMMAND, &generation.to_string(), &command).await?;
    }
    write_status(cell, ctx, &api, checkpoint.as_ref(), None, None).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(600)))
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
async fn write_status(
    cell: &Cell,
    ctx: &Context,
    api: &Api<Cell>,
    checkpoint: Option<&Checkpoint>,
    stall: Option<&Stall>,
    deleting: Option<(&str, String)>,
) -> Result<(), ReconcileError> {
    // status.synthetic is the prober's (another field manager): neither compared nor written.
    let current = cell.status.clone().map(|s| CellStatus { synthetic: None, ..s });
    let mut status = current.clone().unwrap_or_default();
    let generation = cell.metadata.generation;
    let view = view::<CellView>(checkpoint);
    let failed = stall.cloned().or(checkpoint.and_then(stall_of));
    let stall = failed.clone().or_else(|| checkpoint.and_then(blocked_on));
    let done: Vec<&str> = match &view {
        Some(view) => CELL_STEPS.iter().copied().filter(|s| view.done.iter().any(|d| d == s)).collect(),
        None => CELL_STEPS.iter().copied().filter(|s| conditions::is_true(&status.conditions, s)).collect(),
    };
    let waiting = checkpoint.map(progress_message);
    let before = status.phase;
    if let Some(view) = &view {
        status.phase = view.phase;
        status.resources = Some(view.resources.clone());
        status.endpoint = view.endpoint.clone();
        status.running_version = view.running_version.clone();
        status.capacity_used = Some(view.used.clone());
    }
    if failed.is_some() {
        status.phase = Some(CellPhase::Failed);
    }
    status.phase = status.phase.or(Some(CellPhase::Pending));
    status.capacity_used.get_or_insert_with(CapacityUsage::default);
    // The steps hold for the spec the workflow has applied; until it applies a newer one (a new
    // Kubernetes version, node pools), they are stale and the cell is not Ready at it.
    let applied = view.as_ref().map(|v| v.applied_generation).filter(|g| *g > 0).or(generation);
    let mut conditions =
        conditions_for(&status.conditions, CELL_CONDITIONS, CELL_STEPS, &done, waiting, applied, stall.as_ref());
    if applied < generation {
        conditions::set_summary(&mut conditions, CELL_STEPS, generation, stall.as_ref(), &super::now());
    }
    set_deleting(&mut conditions, deleting, generation);
    status.conditions = conditions;
    status.observed_generation = generation;
    status.workflow = checkpoint.map(workflow_status);
    apply_status(api, cell, current.as_ref(), &status).await?;
    announce(cell, ctx, before, status.phase, stall.as_ref(), view.and_then(|v| v.last_failure)).await;
    Ok(())
}

async fn announce(
    cell: &Cell,
    ctx: &Context,
    before: Option<CellPhase>,
    after: Option<CellPhase>,
    stall: Option<&Stall>,
    failure: Option<String>,
) {
    if before == after {
        return;
    }
    match (after, stall) {
        (_, Some(stall)) => ctx.event(cell, true, &stall.reason, stall.message.clone()).await,
        (Some(CellPhase::Ready), _) => {
            let version = cell.status.as_ref().and_then(|s| s.running_version.clone()).unwrap_or_default();
            let note = match failure {
                Some(failure) => format!("cell is ready; {failure}"),
                None => format!("cell is ready {version}"),
            };
            ctx.event(cell, false, "Ready", note).await
        }
        (Some(phase), _) => ctx.event(cell, false, &format!("{phase:?}"), format!("cell is {phase:?}")).await,
        (None, _) => {}
    }
}

/// Teardown through the entity workflow, which refuses while namespaces are placed.
async fn cleanup(cell: &Cell, ctx: &Context, api: &Api<Cell>) -> Result<Action, ReconcileError> {
    let name = cell.name_any();
    let Some(uid) = cell.uid() else { return Ok(Action::await_change()) };
    let id = ids::cell(&name, &uid);
    let checkpoint = ctx.engine.checkpoint(&id).await?;
    let Some(checkpoint) = checkpoint else {
        remove_finalizer(api, cell).await?;
        return Ok(Action::await_change());
    };
    match checkpoint.state {
        cellplane_workflows::State::Completed | cellplane_workflows::State::Cancelled => {
            ctx.event(cell, false, "Deleted", "cloud resources deleted".into()).await;
            remove_finalizer(api, cell).await?;
            return Ok(Action::await_change());
        }
        cellplane_workflows::State::Failed | cellplane_workflows::State::NonDeterministic => {
            let message = format!(
                "the cell's workflow ended {}: {}; its cloud resources may remain",
                checkpoint.state,
                checkpoint.reason.clone().unwrap_or_default()
            );
            let left = view::<CellView>(Some(&checkpoint)).is_some_and(|v| !v.left.is_empty());
            let reason = if left { "ResourcesLeft" } else { "WorkflowFailed" };
            write_status(cell, ctx, api, Some(&checkpoint), None, Some((reason, message))).await?;
            return Ok(Action::await_change());
        }
        _ => {}
    }
    ctx.signal_once(&id, COMMAND, "delete", &CellCommand::Delete).await?;
    let view = view::<CellView>(Some(&checkpoint)).unwrap_or_default();
    let blocker = match view.blocked {
        Some(blocked) => ("NamespacesRemain", blocked),
        None if !view.left.is_empty() => {
            ("ResourcesLeft", format!("still found after teardown: {}", view.left.join(", ")))
        }
        None => ("TearingDown", progress_message(&checkpoint)),
    };
    write_status(cell, ctx, api, Some(&checkpoint), None, Some(blocker)).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(300)))
}
