//! The DeploymentRing controller: checks what the ring's spec cannot say alone (its upstream, the
//! cells it shares with another ring), keeps its synthetic tenants, resolves its target version
//! (its own, or what its upstream ring baked), runs one rollout workflow per target version, and
//! mirrors it. Approval, resume, abort and retry reach the rollout as signals or cancellation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cellplane_workflows::{Checkpoint, IdReuse, State};
use futures::StreamExt;
use kube::api::{DeleteParams, ListParams};
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
use crate::api::namespace::{MtlsSpec, Namespace, NamespaceSpec, Placement};
use crate::api::ring::{
    BAKED, DeploymentRing, DeploymentRingStatus, GateKind, GateStatus, GateVerdict, HALTED, MAX_LISTED_CELLS,
    MAX_VERSION_GROUPS, PROGRESSING, RING_CONDITIONS, RING_STEPS, ROLLED_OUT, RingPhase, VersionCells,
};
use crate::flows::fleet::{RingView, view};
use crate::flows::gates::GatePlan;
use crate::flows::placement::{Candidate, selector_matches};
use crate::flows::ring::{APPROVE, ApprovalSignal, RESUME, RingCell, RingInput, RingOutput, RingRollout};
use crate::flows::{Owner, ids};

const KIND: &str = "DeploymentRing";

/// Annotation that aborts the rollout of the version it names, leaving the cells where they are.
pub const ABORT: &str = "cellplane.io/abort";
/// Annotation whose every new value runs a halted rollout of the target version again.
pub const RETRY: &str = "cellplane.io/retry";
/// Labels of the synthetic tenants the operator keeps for a ring.
pub const SYNTHETIC_LABEL: &str = "cellplane.io/synthetic";
pub const RING_LABEL: &str = "cellplane.io/ring-name";

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

/// What a ring's spec and its neighbours resolve to, when they are consistent.
struct Plan {
    pause_ms: u64,
    bake_ms: u64,
    progress_deadline_ms: u64,
    gates: Vec<GatePlan>,
    /// The ring's cells, sorted by name.
    cells: Vec<Arc<Cell>>,
    /// The chain of rings upstream of this one, nearest first.
    upstream: Vec<Arc<DeploymentRing>>,
}

fn duration_ms(value: &str, field: &str) -> Result<u64, String> {
    parse_duration(value).map(|d| d.as_millis() as u64).map_err(|e| format!("{field}: {e}"))
}

/// Checks the spec against itself and its neighbours: durations, the upstream chain (it must
/// exist and not loop) and cells shared with another ring (a cell has one ring at most).
fn plan(ring: &DeploymentRing, rings: &[Arc<DeploymentRing>], cells: &[Arc<Cell>]) -> Result<Plan, Stall> {
    let invalid = |message: String| Stall { reason: "InvalidSpec".into(), message };
    let spec = &ring.spec;
    let pause_ms = duration_ms(&spec.pause_between_batches, "spec.pauseBetweenBatches").map_err(invalid)?;
    let bake_ms = duration_ms(&spec.min_bake_time, "spec.minBakeTime").map_err(invalid)?;
    let progress_deadline_ms = duration_ms(&spec.progress_deadline, "spec.progressDeadline").map_err(invalid)?;
    duration_ms(&spec.synthetic.interval, "spec.synthetic.interval").map_err(invalid)?;
    if spec.version.is_some() == spec.follow_upstream.unwrap_or(false) {
        return Err(invalid("set exactly one of spec.version or spec.followUpstream: true".into()));
    }
    if spec.follow_upstream.unwrap_or(false) && spec.upstream.is_none() && spec.order.unwrap_or(0) == 0 {
        return Err(invalid("followUpstream needs an upstream ring: set upstream, or an order above 0".into()));
    }
    let gates = spec.gates.iter().map(gate_plan).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    let upstream = upstream_chain(ring, rings)?;
    let mut selected: Vec<Arc<Cell>> =
        cells.iter().filter(|c| selector_matches(&spec.cell_selector, c.labels())).cloned().collect();
    selected.sort_by_key(|c| c.name_any());
    if let Some((cell, other)) = shared_cell(ring, &selected, rings) {
        return Err(Stall {
            reason: "RingConflict".into(),
            message: format!(
                "cell {cell} is also selected by ring {other}; a cell belongs to one ring, so neither rolls"
            ),
        });
    }
    Ok(Plan { pause_ms, bake_ms, progress_deadline_ms, gates, cells: selected, upstream })
}

fn gate_plan(gate: &crate::api::ring::Gate) -> Result<GatePlan, String> {
    let field = |name: &str| format!("spec.gates[{}].{name}", gate.name);
    let ms = |value: &str, name: &str| duration_ms(value, &field(name)).map(|v| v as i64);
    if gate.kind == GateKind::Prometheus && gate.prometheus.is_none() {
        return Err(format!("{}: a prometheus gate needs the prometheus settings", field("prometheus")));
    }
    Ok(GatePlan {
        name: gate.name.clone(),
        kind: gate.kind,
        conditions: gate.conditions.clone().unwrap_or_else(|| vec![conditions::types::READY.into()]),
        synthetic: gate.synthetic.clone().unwrap_or_default(),
        prometheus: gate.prometheus.clone(),
        wait_ms: ms(&gate.wait, "wait")?,
        window_ms: ms(&gate.window, "window")?,
        stable_for_ms: ms(&gate.stable_for, "stableFor")?,
        interval_ms: ms(&gate.interval, "interval")?.max(1),
    })
}

/// The ring a ring follows: named by spec.upstream, or the one with the next lower order.
fn upstream_of(ring: &DeploymentRing, rings: &[Arc<DeploymentRing>]) -> Result<Option<Arc<DeploymentRing>>, String> {
    if let Some(name) = &ring.spec.upstream {
        return rings
            .iter()
            .find(|r| &r.name_any() == name)
            .cloned()
            .map(Some)
            .ok_or_else(|| format!("upstream ring {name} does not exist"));
    }
    let order = ring.spec.order.unwrap_or(0);
    Ok(rings
        .iter()
        .filter(|r| r.spec.upstream.is_none() && r.spec.order.unwrap_or(0) < order)
        .max_by_key(|r| r.spec.order.unwrap_or(0))
        .cloned())
}

/// Every ring upstream of `ring`, nearest first; a missing one or a loop is a stall naming it.
fn upstream_chain(ring: &DeploymentRing, rings: &[Arc<DeploymentRing>]) -> Result<Vec<Arc<DeploymentRing>>, Stall> {
    let mut chain: Vec<Arc<DeploymentRing>> = Vec::new();
    let mut names = vec![ring.name_any()];
    let mut current =
        upstream_of(ring, rings).map_err(|message| Stall { reason: "UpstreamMissing".into(), message })?;
    while let Some(next) = current {
        let name = next.name_any();
        if names.contains(&name) {
            names.push(name);
            return Err(Stall {
                reason: "UpstreamCycle".into(),
                message: format!("upstream rings loop: {}", names.join(" -> ")),
            });
        }
        names.push(name);
        current = upstream_of(&next, rings).map_err(|message| Stall { reason: "UpstreamMissing".into(), message })?;
        chain.push(next);
    }
    Ok(chain)
}

/// A cell of this ring that another ring selects too, with that ring's name.
fn shared_cell(ring: &DeploymentRing, cells: &[Arc<Cell>], rings: &[Arc<DeploymentRing>]) -> Option<(String, String)> {
    cells.iter().find_map(|cell| {
        rings
            .iter()
            .filter(|other| other.name_any() != ring.name_any())
            .find(|other| selector_matches(&other.spec.cell_selector, cell.labels()))
            .map(|other| (cell.name_any(), other.name_any()))
    })
}

async fn reconcile_inner(ring: &DeploymentRing, ctx: &Context) -> Result<Action, ReconcileError> {
    let api: Api<DeploymentRing> = Api::all(ctx.client.clone());
    let name = ring.name_any();
    if ring.metadata.deletion_timestamp.is_some() {
        if let Some(id) = ring.status.as_ref().and_then(|s| s.workflow.as_ref()).map(|w| w.id.clone()) {
            cancel_if_active(ctx, &id).await?;
        }
        keep_synthetic_tenants(ring, ctx, &[]).await?;
        remove_finalizer(&api, ring).await?;
        return Ok(Action::await_change());
    }
    if ensure_finalizer(&api, ring).await? {
        return Ok(Action::await_change());
    }
    let mut status = ring.status.clone().unwrap_or_default();
    status.cells_by_version = cells_by_version(&cells_of(ring, &ctx.fleet.cell_objects()));
    let plan = match plan(ring, &ctx.fleet.rings(), &ctx.fleet.cell_objects()) {
        Ok(plan) => plan,
        Err(stall) => {
            status.phase = Some(RingPhase::Halted);
            finish_status(ring, ctx, &api, status, &[], None, Some(stall)).await?;
            return Ok(Action::await_change());
        }
    };
    let synthetic = ring.spec.synthetic.is_enabled(&ring.spec.admits);
    keep_synthetic_tenants(ring, ctx, if synthetic { &plan.cells } else { &[] }).await?;
    if let Some(halted) =
        plan.upstream.iter().find(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RingPhase::Halted))
    {
        let waiting = format!("waiting: upstream ring {} is halted", halted.name_any());
        status.phase = Some(RingPhase::WaitingForUpstream);
        finish_status(ring, ctx, &api, status, &[], Some(waiting), None).await?;
        return Ok(Action::await_change());
    }
    let target = match &ring.spec.version {
        Some(version) => Some(version.clone()),
        None => plan.upstream.first().and_then(|u| u.status.as_ref()).and_then(|s| s.baked_version.clone()),
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
    let mut checkpoint = ctx.engine.checkpoint(&id).await?;
    if checkpoint.is_none() {
        let previous = status.workflow.as_ref().map(|w| w.id.clone()).filter(|p| p != &id);
        if let Some(previous) = previous {
            // A newer version supersedes the one rolling out.
            cancel_if_active(ctx, &previous).await?;
        }
        if let Some(waiting) = not_ready(&plan.cells, &target) {
            status.phase = Some(RingPhase::Pending);
            finish_status(ring, ctx, &api, status, &[], Some(waiting), None).await?;
            return Ok(Action::await_change());
        }
        ctx.ensure::<RingRollout>(&id, &rollout_input(ring, &plan, &target)).await?;
        ctx.event(ring, false, "RolloutStarted", format!("rolling out {target} to {} cells", plan.cells.len())).await;
        checkpoint = ctx.engine.checkpoint(&id).await?;
    }
    steer(ring, ctx, &id, &target, checkpoint.as_ref()).await?;
    let Some(checkpoint) = checkpoint else { return Ok(Action::await_change()) };
    mirror(ring, ctx, &api, status, &checkpoint, &target).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// What keeps a rollout of `target` from starting: cells that are not Ready.
fn not_ready(cells: &[Arc<Cell>], target: &str) -> Option<String> {
    if cells.is_empty() {
        return Some("no cell matches spec.cellSelector".into());
    }
    let not_ready: Vec<String> = cells
        .iter()
        .filter(|c| !c.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::types::READY)))
        .map(|c| c.name_any())
        .collect();
    (!not_ready.is_empty())
        .then(|| format!("waiting for cells to be Ready before rolling out {target}: {}", not_ready.join(", ")))
}

fn rollout_input(ring: &DeploymentRing, plan: &Plan, target: &str) -> RingInput {
    let cells = plan
        .cells
        .iter()
        .filter_map(|cell| {
            let candidate = Candidate { cell: cell.name_any(), workflow_id: ids::cell(&cell.name_any(), &cell.uid()?) };
            let previous = cell.status.as_ref().and_then(|s| s.running_version.clone());
            Some(RingCell { cell: candidate, previous })
        })
        .collect();
    RingInput {
        ring: ring.name_any(),
        version: target.to_string(),
        cells,
        max_batch: ring.spec.max_batch.clone(),
        pause_between_batches_ms: plan.pause_ms,
        min_bake_time_ms: plan.bake_ms,
        progress_deadline_ms: plan.progress_deadline_ms,
        gates: plan.gates.clone(),
        manual_approval: ring.spec.manual_approval,
        rollback: ring.spec.rollback_policy,
        baking: None,
        retry: None,
    }
}

/// A person's steering of the rollout: approval, resume, abort and retry.
async fn steer(
    ring: &DeploymentRing,
    ctx: &Context,
    id: &str,
    target: &str,
    checkpoint: Option<&Checkpoint>,
) -> Result<(), ReconcileError> {
    let annotations = ring.annotations();
    if let Some(approval) = ring.spec.approval.as_ref().filter(|a| ring.spec.manual_approval && a.version == target) {
        let signal = ApprovalSignal { version: approval.version.clone(), approved_by: approval.approved_by.clone() };
        ctx.signal_once(id, APPROVE, target, &signal).await?;
    }
    let view = view::<RingView>(checkpoint);
    if let Some(view) = &view
        && view.paused
        && !ring.spec.paused
    {
        ctx.signal_once(id, RESUME, &view.current_batch.to_string(), &()).await?;
    }
    if annotations.get(ABORT).map(String::as_str) == Some(target) {
        cancel_if_active(ctx, id).await?;
    }
    // A halted rollout runs again, once per new value of the annotation (kept in its input, so
    // that a restart does not retry twice).
    let halted = checkpoint.is_some_and(|cp| cp.state.is_finished()) && view.is_some_and(|v| v.halted.is_some());
    if let Some(token) = annotations.get(RETRY).filter(|_| halted) {
        let input = ctx.engine.journal().get(id).await?.map(|row| row.input);
        if let Some(input) = input.and_then(|i| serde_json::from_value::<RingInput>(i).ok())
            && input.retry.as_ref() != Some(token)
        {
            let input = RingInput { retry: Some(token.clone()), baking: None, ..input };
            ctx.engine.start_with::<RingRollout>(id, &input, IdReuse::RestartIfFinished).await?;
            ctx.event(ring, false, "RolloutRetried", format!("rolling out {target} again")).await;
        }
    }
    Ok(())
}

/// Status from the rollout's checkpoint and view.
async fn mirror(
    ring: &DeploymentRing,
    ctx: &Context,
    api: &Api<DeploymentRing>,
    mut status: DeploymentRingStatus,
    checkpoint: &Checkpoint,
    target: &str,
) -> Result<(), ReconcileError> {
    let previous = ring.status.clone().unwrap_or_default();
    let view = view::<RingView>(Some(checkpoint)).unwrap_or_default();
    let mut done: Vec<&str> = Vec::new();
    let mut stall = stall_of(checkpoint);
    status.phase = view.phase.or(status.phase);
    status.current_batch = Some(view.current_batch);
    status.total_batches = Some(view.total_batches);
    status.started_at = view.started_at.and_then(time_ms);
    status.baked_until = view.baked_until.and_then(time_ms);
    status.gates = view.gates.clone();
    status.approval = view.approval.clone().or(status.approval);
    status.rollback = view.rollback.clone().or(status.rollback);
    if matches!(view.phase, Some(RingPhase::Baking | RingPhase::Baked)) {
        done.push(ROLLED_OUT);
    }
    if let Some(overdue) = &view.overdue {
        stall = Some(Stall { reason: "ProgressDeadlineExceeded".into(), message: overdue.clone() });
    }
    let output: Option<RingOutput> = match checkpoint.state {
        State::Completed => ctx.engine.result::<RingRollout>(&checkpoint.id).await.ok(),
        _ => None,
    };
    match (checkpoint.state, &output, &view.halted) {
        (State::Completed, Some(output), None) if output.halted.is_none() => {
            status.phase = Some(RingPhase::Baked);
            status.current_version = Some(target.to_string());
            status.baked_version = Some(target.to_string());
            status.baked_until = time_ms(output.baked_at);
            done = vec![ROLLED_OUT, BAKED];
        }
        (State::Completed | State::Cancelled, _, Some(halt)) => {
            let aborted = ring.annotations().get(ABORT).map(String::as_str) == Some(target);
            let (reason, message) = match (halt.reason.as_str(), aborted) {
                ("Cancelled", true) => {
                    ("Aborted".to_string(), format!("the rollout of {target} was aborted; cells stay where they are"))
                }
                _ => (halt.reason.clone(), halt.message.clone()),
            };
            status.phase = Some(RingPhase::Halted);
            stall = Some(Stall { reason, message });
        }
        (State::Failed | State::NonDeterministic, ..) => {
            status.phase = Some(RingPhase::Halted);
            stall = stall.map(|s| Stall { reason: "RolloutHalted".into(), message: s.message });
        }
        _ => {}
    }
    if ring.spec.paused && !matches!(status.phase, Some(RingPhase::Baked | RingPhase::Halted)) {
        status.phase = Some(RingPhase::Paused);
    }
    announce_progress(ring, ctx, &previous, &status).await;
    status.workflow = Some(workflow_status(checkpoint));
    let message = match gate_summary(&status.gates) {
        Some(gates) if !checkpoint.state.is_finished() => format!("{gates}; {}", progress_message(checkpoint)),
        _ => progress_message(checkpoint),
    };
    finish_status(ring, ctx, api, status, &done, Some(message), stall).await
}

/// The gates' verdicts and values, the way a person follows a rollout (`make run` prints it).
fn gate_summary(gates: &[GateStatus]) -> Option<String> {
    let shown: Vec<String> = gates.iter().map(|g| format!("gate {} {:?}: {}", g.name, g.verdict, g.value)).collect();
    (!shown.is_empty()).then(|| shown.join("; "))
}

/// Events for what a person follows: gate verdicts, the approval, a rollback.
async fn announce_progress(
    ring: &DeploymentRing,
    ctx: &Context,
    before: &DeploymentRingStatus,
    after: &DeploymentRingStatus,
) {
    for gate in &after.gates {
        let changed = before.gates.iter().find(|g| g.name == gate.name).is_none_or(|g| g.verdict != gate.verdict);
        if changed && gate.verdict != GateVerdict::Settling {
            let warning = matches!(gate.verdict, GateVerdict::Failed | GateVerdict::Waiting);
            let note = format!("gate {} {:?} (batch {}): {}", gate.name, gate.verdict, gate.batch, gate.value);
            ctx.event(ring, warning, &format!("Gate{:?}", gate.verdict), note).await;
        }
    }
    if let Some(approval) = after.approval.as_ref().filter(|a| before.approval.as_ref() != Some(a)) {
        let by = approval.approved_by.clone().unwrap_or_else(|| "someone".into());
        ctx.event(ring, false, "Approved", format!("{} approved by {by}", approval.version)).await;
    }
    if let Some(rollback) = after.rollback.as_ref().filter(|r| before.rollback.as_ref() != Some(r)) {
        let cells: Vec<String> = rollback.cells.iter().map(|c| format!("{} to {}", c.cell, c.version)).collect();
        let note = format!("rolled back {} ({}): {}", rollback.from, rollback.reason, cells.join(", "));
        ctx.event(ring, true, "RolledBack", note).await;
    }
}

/// Keeps one synthetic tenant in the operator's namespace per cell in `cells`, and removes this
/// ring's others. Done once per change of the ring or its cells.
async fn keep_synthetic_tenants(
    ring: &DeploymentRing,
    ctx: &Context,
    cells: &[Arc<Cell>],
) -> Result<(), ReconcileError> {
    let names: Vec<String> = cells.iter().map(|c| c.name_any()).collect();
    let key = format!("{}#synthetic#{}#{}", ring.name_any(), ring.metadata.generation.unwrap_or(0), names.join(","));
    if ctx.done(&key) {
        return Ok(());
    }
    let api: Api<Namespace> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for cell in cells {
        crate::fixtures::create(&api, &synthetic_tenant(ring, ctx, cell)).await?;
    }
    let selector = format!("{SYNTHETIC_LABEL}=true,{RING_LABEL}={}", ring.name_any());
    for tenant in api.list(&ListParams::default().labels(&selector)).await?.items {
        let cell = tenant.spec.placement.cell.clone().unwrap_or_default();
        if !names.contains(&cell) {
            match api.delete(&tenant.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if crate::kube_error::code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ctx.remember(key);
    Ok(())
}

/// The synthetic tenant of `cell`: the operator's own, pinned to the cell.
fn synthetic_tenant(ring: &DeploymentRing, ctx: &Context, cell: &Cell) -> Namespace {
    let mut labels = ctx.own_labels();
    labels.insert(SYNTHETIC_LABEL.into(), "true".into());
    labels.insert(RING_LABEL.into(), ring.name_any());
    labels.insert(crate::cell::routes::CELL_LABEL.into(), cell.name_any());
    let spec = NamespaceSpec {
        region: cell.spec.region.clone(),
        placement: Placement { cell: Some(cell.name_any()), ..Placement::default() },
        retention: Default::default(),
        mtls: MtlsSpec { accepted_client_ca: None, issue_client_certificate: Some(true) },
        endpoint: Default::default(),
        synthetic: true,
    };
    let mut tenant = Namespace::new(&format!("synthetic-{}", cell.name_any()), spec);
    tenant.metadata.namespace = Some(ctx.namespace.clone());
    tenant.metadata.labels = Some(labels);
    tenant
}

async fn cancel_if_active(ctx: &Context, id: &str) -> Result<(), ReconcileError> {
    match ctx.engine.cancel(id).await {
        Ok(()) | Err(cellplane_workflows::Error::WrongState { .. } | cellplane_workflows::Error::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The cells a ring's selector picks.
fn cells_of(ring: &DeploymentRing, cells: &[Arc<Cell>]) -> Vec<Arc<Cell>> {
    cells.iter().filter(|c| selector_matches(&ring.spec.cell_selector, c.labels())).cloned().collect()
}

fn cells_by_version(cells: &[Arc<Cell>]) -> Vec<VersionCells> {
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
    let progressing = matches!(status.phase, Some(RingPhase::Progressing | RingPhase::Baking | RingPhase::RollingBack));
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
    // A stall that only waits (a progress deadline passed) is not a halt.
    let halted = match stall.as_ref().filter(|_| status.phase == Some(RingPhase::Halted)) {
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
    use crate::fixtures::{cell, ring};

    fn rings(list: Vec<DeploymentRing>) -> Vec<Arc<DeploymentRing>> {
        list.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn versions_are_grouped_newest_first_and_bounded() {
        let cells: Vec<Arc<Cell>> = (0..40)
            .map(|i| {
                let mut c = cell(&format!("c{i:02}"), "eu", &[], 1, "1.0.0");
                c.status = Some(crate::api::cell::CellStatus {
                    running_version: Some(format!("1.{i:02}.0")),
                    ..Default::default()
                });
                Arc::new(c)
            })
            .collect();
        let groups = cells_by_version(&cells);
        assert_eq!(groups.len(), MAX_VERSION_GROUPS);
        assert_eq!(groups[0].version, "1.39.0");
    }

    #[test]
    fn a_missing_upstream_or_a_loop_stalls_naming_it() {
        let mut lost = ring("lost", 1, "x", None, "0s");
        lost.spec.order = None;
        lost.spec.upstream = Some("nowhere".into());
        let stall = upstream_chain(&lost, &rings(vec![lost.clone()])).unwrap_err();
        assert_eq!(
            (stall.reason.as_str(), stall.message.as_str()),
            ("UpstreamMissing", "upstream ring nowhere does not exist")
        );

        let mut a = ring("a", 1, "x", None, "0s");
        a.spec.order = None;
        a.spec.upstream = Some("b".into());
        let mut b = a.clone();
        b.metadata.name = Some("b".into());
        b.spec.upstream = Some("a".into());
        let stall = upstream_chain(&a, &rings(vec![a.clone(), b])).unwrap_err();
        assert_eq!(
            (stall.reason.as_str(), stall.message.as_str()),
            ("UpstreamCycle", "upstream rings loop: a -> b -> a")
        );
    }

    #[test]
    fn a_cell_selected_by_two_rings_stalls_both() {
        let both = Arc::new(cell("shared", "eu", &[("cellplane.io/ring", "canary")], 1, "1.0.0"));
        let first = ring("first", 0, "canary", Some("1.0.0"), "0s");
        let second = ring("second", 1, "canary", Some("1.0.0"), "0s");
        let all = rings(vec![first.clone(), second.clone()]);
        let stall = plan(&first, &all, std::slice::from_ref(&both)).err().unwrap();
        assert_eq!(stall.reason, "RingConflict", "{}", stall.message);
        assert!(stall.message.contains("cell shared is also selected by ring second"), "{}", stall.message);
        let stall = plan(&second, &all, &[both]).err().unwrap();
        assert!(stall.message.contains("ring first"), "{}", stall.message);
    }
}
