//! The DeploymentRing controller: resolves the ring's target version (its own, or what its
//! upstream ring baked), runs one rollout workflow per target version and mirrors it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cellplane_workflows::State;
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Context, ReconcileError, apply_status, conditions_for, counted, ensure_finalizer, error_policy, progress_message,
    remove_finalizer, stall_of, time_ms, triggers, workflow_status,
};
use crate::api::cell::Cell;
use crate::api::common::parse_duration;
use crate::api::conditions::{self, Stall};
use crate::api::ring::{
    BAKED, DeploymentRing, DeploymentRingStatus, HALTED, MAX_LISTED_CELLS, MAX_VERSION_GROUPS, PROGRESSING,
    RING_CONDITIONS, RING_STEPS, ROLLED_OUT, RingPhase, VersionCells,
};
use crate::flows::fleet::{RingView, view};
use crate::flows::placement::{Candidate, selector_matches};
use crate::flows::ring::{RESUME, RingInput, RingOutput, RingRollout};
use crate::flows::{Owner, ids};

const KIND: &str = "DeploymentRing";

pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let api: Api<DeploymentRing> = Api::all(ctx.client.clone());
    let controller = super::controller_for(api.clone(), ctx.watch_config());
    let store = controller.store();
    ctx.metrics.objects.track(store.clone());
    let rings = store.clone();
    let every_ring = move || rings.state().iter().map(|r| ObjectRef::from(r.as_ref())).collect::<Vec<_>>();
    // What a ring waits for can change elsewhere (an upstream ring's bake, a cell becoming
    // Ready): any ring's or cell's progress, any ring's status and any change to a Cell object
    // (its Ready condition is written after the progress that led to it) reconcile every ring.
    let all = every_ring.clone();
    let progress = triggers::<DeploymentRing>(&ctx.engine, &[Owner::Ring, Owner::Cell], store.clone())
        .flat_map(move |_| futures::stream::iter(all()));
    let on_cells = every_ring.clone();
    controller
        .watches(Api::<Cell>::all(ctx.client.clone()), ctx.watch_config(), move |_| on_cells())
        .watches(api, ctx.watch_config(), move |_| every_ring())
        .reconcile_on(progress)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(ring: Arc<DeploymentRing>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let span = tracing::info_span!("reconcile", kind = KIND, name = %ring.name_any());
    let result = reconcile_inner(&ring, &ctx).instrument(span).await;
    counted(KIND, ring.as_ref(), &ctx, result).await
}

struct Timing {
    pause: Duration,
    bake: Duration,
}

fn validate(ring: &DeploymentRing) -> Result<Timing, String> {
    let spec = &ring.spec;
    let pause = parse_duration(&spec.pause_between_batches).map_err(|e| format!("spec.pauseBetweenBatches: {e}"))?;
    let bake = parse_duration(&spec.min_bake_time).map_err(|e| format!("spec.minBakeTime: {e}"))?;
    if spec.version.is_some() == spec.follow_upstream.unwrap_or(false) {
        return Err("set exactly one of spec.version or spec.followUpstream: true".into());
    }
    if spec.follow_upstream.unwrap_or(false) && spec.upstream.is_none() && spec.order.unwrap_or(0) == 0 {
        return Err("followUpstream needs an upstream ring: set upstream, or an order above 0".into());
    }
    Ok(Timing { pause, bake })
}

/// The ring a ring follows: named by spec.upstream, or the one with the next lower order.
fn upstream<'a>(ring: &DeploymentRing, rings: &'a [DeploymentRing]) -> Option<&'a DeploymentRing> {
    if let Some(name) = &ring.spec.upstream {
        return rings.iter().find(|r| &r.name_any() == name);
    }
    let order = ring.spec.order.unwrap_or(0);
    rings
        .iter()
        .filter(|r| r.spec.upstream.is_none() && r.spec.order.unwrap_or(0) < order)
        .max_by_key(|r| r.spec.order.unwrap_or(0))
}

async fn reconcile_inner(ring: &DeploymentRing, ctx: &Context) -> Result<Action, ReconcileError> {
    let api: Api<DeploymentRing> = Api::all(ctx.client.clone());
    let name = ring.name_any();
    if ring.metadata.deletion_timestamp.is_some() {
        if let Some(id) = ring.status.as_ref().and_then(|s| s.workflow.as_ref()).map(|w| w.id.clone()) {
            cancel_if_active(ctx, &id).await?;
        }
        remove_finalizer(&api, ring).await?;
        return Ok(Action::await_change());
    }
    if ensure_finalizer(&api, ring).await? {
        return Ok(Action::await_change());
    }
    let mut status = ring.status.clone().unwrap_or_default();
    let timing = match validate(ring) {
        Ok(timing) => timing,
        Err(problem) => {
            let stall = Stall { reason: "InvalidSpec".into(), message: problem };
            status.phase = Some(RingPhase::Halted);
            status.conditions = conditions_for(
                &status.conditions,
                RING_CONDITIONS,
                RING_STEPS,
                &[],
                None,
                ring.metadata.generation,
                Some(&stall),
            );
            status.observed_generation = ring.metadata.generation;
            apply_status(&api, ring, ring.status.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
    };
    let cells: Vec<Cell> = Api::<Cell>::all(ctx.client.clone()).list(&ctx.list_params()).await?.items;
    let selected: Vec<&Cell> =
        cells.iter().filter(|c| selector_matches(&ring.spec.cell_selector, c.labels())).collect();
    status.cells_by_version = cells_by_version(&selected);
    let target = match &ring.spec.version {
        Some(version) => Some(version.clone()),
        None => {
            let rings: Vec<DeploymentRing> =
                Api::<DeploymentRing>::all(ctx.client.clone()).list(&ctx.list_params()).await?.items;
            upstream(ring, &rings).and_then(|u| u.status.as_ref()).and_then(|s| s.baked_version.clone())
        }
    };
    let Some(target) = target else {
        let waiting = "waiting for the upstream ring to bake a version".to_string();
        status.phase = Some(RingPhase::WaitingForUpstream);
        finish_status(ring, ctx, &api, status, &[], Some(waiting), None).await?;
        return Ok(Action::await_change());
    };
    status.target_version = Some(target.clone());
    let uid = ring.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
    let id = ids::ring(&name, &uid, &target);
    let previous = status.workflow.as_ref().map(|w| w.id.clone()).filter(|p| p != &id);
    let mut checkpoint = ctx.engine.checkpoint(&id).await?;
    if checkpoint.is_none() {
        if let Some(previous) = previous {
            // A newer version supersedes the one rolling out.
            cancel_if_active(ctx, &previous).await?;
        }
        let not_ready: Vec<String> = selected
            .iter()
            .filter(|c| {
                !c.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::types::READY))
            })
            .map(|c| c.name_any())
            .collect();
        if selected.is_empty() || !not_ready.is_empty() {
            let waiting = if selected.is_empty() {
                "no cell matches spec.cellSelector".to_string()
            } else {
                format!("waiting for cells to be Ready before rolling out {target}: {}", not_ready.join(", "))
            };
            status.phase = Some(RingPhase::Pending);
            finish_status(ring, ctx, &api, status, &[], Some(waiting), None).await?;
            return Ok(Action::await_change());
        }
        let mut plan: Vec<Candidate> = Vec::new();
        for cell in &selected {
            let uid = cell.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
            plan.push(Candidate { cell: cell.name_any(), workflow_id: ids::cell(&cell.name_any(), &uid) });
        }
        plan.sort_by(|a, b| a.cell.cmp(&b.cell));
        let input = RingInput {
            ring: name.clone(),
            version: target.clone(),
            cells: plan,
            max_batch: ring.spec.max_batch.clone(),
            pause_between_batches_ms: timing.pause.as_millis() as u64,
            min_bake_time_ms: timing.bake.as_millis() as u64,
        };
        ctx.ensure::<RingRollout>(&id, &input).await?;
        ctx.event(ring, false, "RolloutStarted", format!("rolling out {target}")).await;
        checkpoint = ctx.engine.checkpoint(&id).await?;
    }
    let view = view::<RingView>(checkpoint.as_ref());
    if let Some(view) = &view
        && view.paused
        && !ring.spec.paused
    {
        ctx.signal_once(&id, RESUME, &view.current_batch.to_string(), &()).await?;
    }
    let Some(checkpoint) = checkpoint else { return Ok(Action::await_change()) };
    let mut done: Vec<&str> = Vec::new();
    let mut stall = stall_of(&checkpoint);
    if let Some(view) = &view {
        status.phase = view.phase;
        status.current_batch = Some(view.current_batch);
        status.total_batches = Some(view.total_batches);
        status.started_at = view.started_at.and_then(time_ms);
        status.baked_until = view.baked_until.and_then(time_ms);
        if matches!(view.phase, Some(RingPhase::Baking | RingPhase::Baked)) {
            done.push(ROLLED_OUT);
        }
    }
    match checkpoint.state {
        State::Completed => {
            let output: Option<RingOutput> = ctx.engine.result::<RingRollout>(&id).await.ok();
            status.phase = Some(RingPhase::Baked);
            status.current_version = Some(target.clone());
            if status.baked_version.as_deref() != Some(target.as_str()) {
                ctx.event(ring, false, "Baked", format!("{target} finished baking")).await;
            }
            status.baked_version = Some(target.clone());
            if let Some(output) = output {
                status.baked_until = time_ms(output.baked_at);
            }
            done = vec![ROLLED_OUT, BAKED];
        }
        State::Failed | State::NonDeterministic => {
            status.phase = Some(RingPhase::Halted);
            stall = stall.map(|s| Stall { reason: "RolloutHalted".into(), message: s.message });
        }
        _ => {}
    }
    if ring.spec.paused && !matches!(status.phase, Some(RingPhase::Baked | RingPhase::Halted)) {
        status.phase = Some(RingPhase::Paused);
    }
    status.workflow = Some(workflow_status(&checkpoint));
    finish_status(ring, ctx, &api, status, &done, Some(progress_message(&checkpoint)), stall).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

async fn cancel_if_active(ctx: &Context, id: &str) -> Result<(), ReconcileError> {
    match ctx.engine.cancel(id).await {
        Ok(()) | Err(cellplane_workflows::Error::WrongState { .. } | cellplane_workflows::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn cells_by_version(cells: &[&Cell]) -> Vec<VersionCells> {
    let mut by_version: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cell in cells {
        let version = cell.status.as_ref().and_then(|s| s.running_version.clone()).unwrap_or_else(|| "none".into());
        by_version.entry(version).or_default().push(cell.name_any());
    }
    by_version
        .into_iter()
        .rev()
        .take(MAX_VERSION_GROUPS)
        .map(|(version, mut cells)| {
            cells.sort();
            let count = cells.len() as i32;
            cells.truncate(MAX_LISTED_CELLS);
            VersionCells { version, count, cells }
        })
        .collect()
}

async fn finish_status(
    ring: &DeploymentRing,
    ctx: &Context,
    api: &Api<DeploymentRing>,
    mut status: DeploymentRingStatus,
    done: &[&str],
    waiting: Option<String>,
    stall: Option<Stall>,
) -> Result<(), ReconcileError> {
    let generation = ring.metadata.generation;
    let mut conditions = conditions_for(
        &status.conditions,
        RING_CONDITIONS,
        RING_STEPS,
        done,
        waiting.clone(),
        generation,
        stall.as_ref(),
    );
    let now = super::now();
    let progressing = matches!(status.phase, Some(RingPhase::Progressing | RingPhase::Baking));
    let (status_of, reason) = if progressing {
        (conditions::ConditionStatus::True, "RollingOut")
    } else {
        (conditions::ConditionStatus::False, status.phase.map_or("Pending", phase_reason))
    };
    let message = waiting.unwrap_or_default();
    conditions::set_condition(
        &mut conditions,
        conditions::Condition::new(PROGRESSING, status_of, reason, message, generation, now.clone()),
    );
    let halted = match &stall {
        Some(stall) => conditions::Condition::new(
            HALTED,
            conditions::ConditionStatus::True,
            stall.reason.clone(),
            stall.message.clone(),
            generation,
            now,
        ),
        None => {
            conditions::Condition::new(HALTED, conditions::ConditionStatus::False, "NotHalted", "", generation, now)
        }
    };
    conditions::set_condition(&mut conditions, halted);
    if let Some(stall) = &stall
        && status.phase != ring.status.as_ref().and_then(|s| s.phase)
    {
        ctx.event(ring, true, &stall.reason, stall.message.clone()).await;
    }
    status.conditions = conditions;
    status.observed_generation = generation;
    apply_status(api, ring, ring.status.as_ref(), &status).await
}

fn phase_reason(phase: RingPhase) -> &'static str {
    match phase {
        RingPhase::Pending => "Pending",
        RingPhase::WaitingForUpstream => "WaitingForUpstream",
        RingPhase::WaitingForApproval => "WaitingForApproval",
        RingPhase::Progressing => "Progressing",
        RingPhase::Paused => "Paused",
        RingPhase::Baking => "Baking",
        RingPhase::Baked => "Baked",
        RingPhase::Halted => "Halted",
        RingPhase::RollingBack => "RollingBack",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cell::CellStatus;

    fn running(name: &str, version: &str) -> Cell {
        let mut cell = crate::fixtures::cell(name, "eu-west-1", &[], 10, version);
        cell.status = Some(CellStatus { running_version: Some(version.into()), ..CellStatus::default() });
        cell
    }

    /// The status lists no more than the schema allows, or the API server refuses the patch.
    #[test]
    fn cells_by_version_stays_within_the_schema_bounds() {
        let mut cells: Vec<Cell> =
            (0..MAX_VERSION_GROUPS + 8).map(|v| running(&format!("c{v}"), &format!("1.{v:03}.0"))).collect();
        cells.extend((0..MAX_LISTED_CELLS + 5).map(|i| running(&format!("same-{i}"), "1.999.0")));
        let groups = cells_by_version(&cells.iter().collect::<Vec<_>>());
        assert_eq!(groups.len(), MAX_VERSION_GROUPS);
        assert_eq!(groups[0].version, "1.999.0", "newest version first");
        assert_eq!(groups[0].count as usize, MAX_LISTED_CELLS + 5);
        assert_eq!(groups[0].cells.len(), MAX_LISTED_CELLS);
    }
}
