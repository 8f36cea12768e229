//! The DeploymentRing controller: checks what the ring's spec cannot say alone (its upstream, the
//! cells it shares with another ring), keeps its synthetic tenants, resolves its target version
//! (its own, or what its upstream ring baked), runs one rollout workflow per target version, and
//! mirrors it. Approval, resume, abort and retry reach the rollout as signals or cancellation.
//! All of it is decided here from the ring and the fleet; the driver does it.

use std::collections::BTreeMap;
use std::sync::Arc;

use cellplane_workflows::{Checkpoint, State};
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::dependents::Dependents;
use super::driver::{self, Command, Desired, Reconciled, Report, Run, Stage, Teardown, Work, World};
use super::error::ReconcileError;
use super::events::Note;
use super::runner::{controller_for, drain_until_shutdown, error_policy, triggers};
use super::status::{Steps, conditions_for, progress_message, stall_of, workflow_status};
use crate::api::cell::Cell;
use crate::api::common::{parse_duration, time_ms};
use crate::api::conditions::{self, Condition, ConditionStatus, Stall};
use crate::api::namespace::{MtlsSpec, Namespace, NamespaceSpec, Placement};
use crate::api::ring::{
    BAKED, DeploymentRing, DeploymentRingStatus, GateKind, GateStatus, GateVerdict, HALTED, MAX_LISTED_CELLS,
    MAX_VERSION_GROUPS, PROGRESSING, RING_CONDITIONS, RING_STEPS, ROLLED_OUT, RingPhase, VersionCells,
};
use crate::flows::fleet::{RingView, release_of, view};
use crate::flows::gates::GatePlan;
use crate::flows::placement::{Candidate, selector_matches};
use crate::flows::ring::{APPROVE, ApprovalSignal, RESUME, RingCell, RingInput, RingOutput, RingRollout};
use crate::flows::{Owner, ids};

/// Annotation that aborts the rollout of the version it names, leaving the cells where they are.
pub const ABORT: &str = "cellplane.io/abort";
/// Annotation whose every new value runs a halted rollout of the target version again.
pub const RETRY: &str = "cellplane.io/retry";
/// Labels of the synthetic tenants the operator keeps for a ring.
pub const SYNTHETIC_LABEL: &str = "cellplane.io/synthetic";
pub const RING_LABEL: &str = "cellplane.io/ring-name";

pub async fn run(ctx: Arc<super::Context>, shutdown: CancellationToken) {
    let api: Api<DeploymentRing> = Api::all(ctx.client.clone());
    let controller = controller_for(api.clone(), ctx.watch_config());
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
    let (on_cells, on_releases) = (every_ring.clone(), every_ring.clone());
    let results = controller
        .watches(Api::<Cell>::all(ctx.client.clone()), ctx.watch_config(), move |_| on_cells())
        .watches(Api::<crate::api::Release>::all(ctx.client.clone()), ctx.watch_config(), move |_| on_releases())
        .watches(api, ctx.watch_config(), move |_| every_ring())
        .reconcile_on(progress)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(driver::reconcile::<DeploymentRing>, error_policy, ctx);
    drain_until_shutdown(store, results, shutdown).await;
}

type RingStage<'a> = Stage<'a, RingInput, RingOutput>;

impl Reconciled for DeploymentRing {
    const KIND: &'static str = "DeploymentRing";
    type Flow = RingRollout;
    type Status = DeploymentRingStatus;

    fn api(&self, client: Client) -> Result<Api<Self>, ReconcileError> {
        Ok(Api::all(client))
    }

    fn owned_status(&self) -> Option<DeploymentRingStatus> {
        self.status.clone()
    }

    /// The ring checked against the fleet, its synthetic tenants, and the rollout of its target.
    fn desire(&self, world: &World) -> Result<Desired<RingInput>, ReconcileError> {
        let plan = match plan(self, &world.rings, &world.cells) {
            Ok(plan) => plan,
            Err(stall) => return Ok(Work::Invalid(stall).into()),
        };
        let work = match target(self, &plan) {
            Ok(target) => match release_of(&world.releases, &target) {
                Ok(_) => Work::Run(rollout(self, &plan, target)?),
                Err(missing) => Work::Invalid(Stall { reason: "NoRelease".into(), message: missing }),
            },
            Err(waiting) => Work::Waiting(waiting),
        };
        Ok(Desired { work, dependents: Some(synthetic_tenants(self, &plan, world)) })
    }

    fn commands(
        &self,
        run: &Run<RingInput>,
        checkpoint: Option<&Checkpoint>,
        _world: &World,
    ) -> Result<Vec<Command<RingInput>>, ReconcileError> {
        steer(self, &run.input.version, checkpoint)
    }

    fn report(&self, stage: &RingStage<'_>, world: &World) -> Report<DeploymentRingStatus> {
        report(self, stage, world)
    }

    /// The rollout the status names, whatever its version.
    fn teardown_workflow(&self) -> Option<String> {
        self.status.as_ref().and_then(|s| s.workflow.as_ref()).map(|w| w.id.clone())
    }

    /// The rollout is cancelled and the synthetic tenants go; nothing is waited for.
    fn teardown(&self, _checkpoint: Option<&Checkpoint>, world: &World) -> Result<Teardown<RingInput>, ReconcileError> {
        let release = kept_tenants(self, &[], world);
        Ok(Teardown::Finished { commands: vec![Command::Cancel], release: Some(release), note: None })
    }
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

/// The version the ring rolls out: its own, or the one its upstream ring baked; else what it
/// waits for.
fn target(ring: &DeploymentRing, plan: &Plan) -> Result<String, String> {
    let phase = |r: &DeploymentRing| r.status.as_ref().and_then(|s| s.phase);
    if let Some(halted) = plan.upstream.iter().find(|r| phase(r) == Some(RingPhase::Halted)) {
        return Err(format!("waiting: upstream ring {} is halted", halted.name_any()));
    }
    let baked = || plan.upstream.first().and_then(|u| u.status.as_ref()).and_then(|s| s.baked_version.clone());
    ring.spec.version.clone().or_else(baked).ok_or_else(|| "waiting for the upstream ring to bake a version".into())
}

/// The rollout of `target`: held while cells are not Ready, superseding the previous version's.
fn rollout(ring: &DeploymentRing, plan: &Plan, target: String) -> Result<Run<RingInput>, ReconcileError> {
    let uid = ring.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
    let id = ids::ring(&ring.name_any(), &uid, &target);
    let previous = ring.status.as_ref().and_then(|s| s.workflow.as_ref()).map(|w| w.id.clone());
    let announce = Note::normal("RolloutStarted", format!("rolling out {target} to {} cells", plan.cells.len()));
    Ok(Run {
        hold: not_ready(&plan.cells, &target),
        supersedes: previous.filter(|p| p != &id),
        announce: Some(announce),
        input: rollout_input(ring, plan, &target),
        id,
    })
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
fn steer(
    ring: &DeploymentRing,
    target: &str,
    checkpoint: Option<&Checkpoint>,
) -> Result<Vec<Command<RingInput>>, ReconcileError> {
    let mut commands = Vec::new();
    let annotations = ring.annotations();
    if let Some(approval) = ring.spec.approval.as_ref().filter(|a| ring.spec.manual_approval && a.version == target) {
        let signal = ApprovalSignal { version: approval.version.clone(), approved_by: approval.approved_by.clone() };
        commands.push(Command::signal(APPROVE, target, &signal)?);
    }
    let view = view::<RingView>(checkpoint);
    if let Some(view) = &view
        && view.paused
        && !ring.spec.paused
    {
        commands.push(Command::signal(RESUME, view.current_batch.to_string(), &())?);
    }
    if annotations.get(ABORT).map(String::as_str) == Some(target) {
        commands.push(Command::Cancel);
    }
    // A halted rollout runs again, once per new value of the annotation (kept in its input, so
    // that a restart does not retry twice).
    let halted = checkpoint.is_some_and(|cp| cp.state.is_finished()) && view.is_some_and(|v| v.halted.is_some());
    if let Some(token) = annotations.get(RETRY).filter(|_| halted).cloned() {
        let amend = move |input: RingInput| {
            let answered = input.retry.as_ref() == Some(&token);
            (!answered).then_some(RingInput { retry: Some(token), baking: None, ..input })
        };
        let note = Note::normal("RolloutRetried", format!("rolling out {target} again"));
        commands.push(Command::Rerun { amend: Box::new(amend), note });
    }
    Ok(commands)
}

/// What the conditions say beyond the status fields: the steps done, what the ring waits for,
/// and why it stopped.
#[derive(Default)]
struct Outcome {
    done: Vec<&'static str>,
    waiting: Option<String>,
    stall: Option<Stall>,
}

/// The status for `stage` and the Events that announce what changed.
fn report(ring: &DeploymentRing, stage: &RingStage<'_>, world: &World) -> Report<DeploymentRingStatus> {
    let before = ring.status.clone().unwrap_or_default();
    let mut status = before.clone();
    status.cells_by_version = cells_by_version(&cells_of(ring, &world.cells));
    if let Some(run) = stage.run() {
        status.target_version = Some(run.input.version.clone());
    }
    let outcome = match stage {
        Stage::Invalid(stall) => {
            status.phase = Some(RingPhase::Halted);
            Outcome { stall: Some((*stall).clone()), ..Outcome::default() }
        }
        Stage::Waiting(waiting) => {
            status.phase = Some(RingPhase::WaitingForUpstream);
            Outcome { waiting: Some(waiting.to_string()), ..Outcome::default() }
        }
        Stage::Held { waiting, .. } => {
            status.phase = Some(RingPhase::Pending);
            Outcome { waiting: Some(waiting.to_string()), ..Outcome::default() }
        }
        Stage::Running { run, checkpoint: Some(checkpoint), output } => {
            mirror(ring, &mut status, checkpoint, *output, &run.input.version)
        }
        // Nothing to report: no rollout to mirror, and a ring's teardown writes no status.
        Stage::Running { checkpoint: None, .. } | Stage::Deleting { .. } => {
            return Report { status: before, events: Vec::new() };
        }
    };
    let mut events = progress_events(&before, &status);
    events.extend(conclude(ring, &mut status, outcome, world));
    Report { status, events }
}

/// Status from the rollout's checkpoint and view.
fn mirror(
    ring: &DeploymentRing,
    status: &mut DeploymentRingStatus,
    checkpoint: &Checkpoint,
    output: Option<&RingOutput>,
    target: &str,
) -> Outcome {
    let view = view::<RingView>(Some(checkpoint)).unwrap_or_default();
    let mut done: Vec<&str> = Vec::new();
    let mut stall = stall_of(checkpoint);
    status.phase = view.phase.or(status.phase);
    status.current_batch = Some(view.current_batch);
    status.total_batches = Some(view.total_batches);
    status.started_at = view.started_at.and_then(time_ms);
    status.baked_until = view.baked_until.and_then(time_ms);
    status.gates = view.gates.clone();
    status.approval = view.approval.clone().or(status.approval.take());
    status.rollback = view.rollback.clone().or(status.rollback.take());
    if matches!(view.phase, Some(RingPhase::Baking | RingPhase::Baked)) {
        done.push(ROLLED_OUT);
    }
    if let Some(overdue) = &view.overdue {
        stall = Some(Stall { reason: "ProgressDeadlineExceeded".into(), message: overdue.clone() });
    }
    match (checkpoint.state, output, &view.halted) {
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
    status.workflow = Some(workflow_status(checkpoint));
    let waiting = match gate_summary(&status.gates) {
        Some(gates) if !checkpoint.state.is_finished() => format!("{gates}; {}", progress_message(checkpoint)),
        _ => progress_message(checkpoint),
    };
    Outcome { done, waiting: Some(waiting), stall }
}

/// The gates' verdicts and values, the way a person follows a rollout (`make run` prints it).
fn gate_summary(gates: &[GateStatus]) -> Option<String> {
    let shown: Vec<String> = gates.iter().map(|g| format!("gate {} {:?}: {}", g.name, g.verdict, g.value)).collect();
    (!shown.is_empty()).then(|| shown.join("; "))
}

/// Events for what a person follows: gate verdicts, the approval, a rollback.
fn progress_events(before: &DeploymentRingStatus, after: &DeploymentRingStatus) -> Vec<Note> {
    let mut notes = Vec::new();
    for gate in &after.gates {
        let changed = before.gates.iter().find(|g| g.name == gate.name).is_none_or(|g| g.verdict != gate.verdict);
        if changed && gate.verdict != GateVerdict::Settling {
            let note = format!("gate {} {:?} (batch {}): {}", gate.name, gate.verdict, gate.batch, gate.value);
            let reason = format!("Gate{:?}", gate.verdict);
            match gate.verdict {
                GateVerdict::Failed | GateVerdict::Waiting => notes.push(Note::warning(reason, note)),
                _ => notes.push(Note::normal(reason, note)),
            }
        }
    }
    if let Some(approval) = after.approval.as_ref().filter(|a| before.approval.as_ref() != Some(a)) {
        let by = approval.approved_by.clone().unwrap_or_else(|| "someone".into());
        notes.push(Note::normal("Approved", format!("{} approved by {by}", approval.version)));
    }
    if let Some(rollback) = after.rollback.as_ref().filter(|r| before.rollback.as_ref() != Some(r)) {
        let cells: Vec<String> = rollback.cells.iter().map(|c| format!("{} to {}", c.cell, c.version)).collect();
        let note = format!("rolled back {} ({}): {}", rollback.from, rollback.reason, cells.join(", "));
        notes.push(Note::warning("RolledBack", note));
    }
    notes
}

/// Synthetic tenants in the operator's namespace, one per cell of the ring when it asks for
/// synthetic probes; the ring's others are removed. Kept once per change of the ring or its cells.
fn synthetic_tenants(ring: &DeploymentRing, plan: &Plan, world: &World) -> Dependents {
    let cells = if ring.spec.synthetic.is_enabled(&ring.spec.admits) { plan.cells.as_slice() } else { &[] };
    kept_tenants(ring, cells, world)
}

fn kept_tenants(ring: &DeploymentRing, cells: &[Arc<Cell>], world: &World) -> Dependents {
    let names: Vec<String> = cells.iter().map(|c| c.name_any()).collect();
    Dependents {
        selector: format!("{SYNTHETIC_LABEL}=true,{RING_LABEL}={}", ring.name_any()),
        wanted: cells.iter().map(|cell| synthetic_tenant(ring, world, cell)).collect(),
        key: format!("{}#synthetic#{}#{}", ring.name_any(), ring.metadata.generation.unwrap_or(0), names.join(",")),
    }
}

/// The synthetic tenant of `cell`: the operator's own, pinned to the cell.
fn synthetic_tenant(ring: &DeploymentRing, world: &World, cell: &Cell) -> Namespace {
    let mut labels = world.own_labels.clone();
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
    tenant.metadata.namespace = Some(world.namespace.clone());
    tenant.metadata.labels = Some(labels);
    tenant
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

/// The conditions from `outcome`: the steps, Progressing and Halted; and the Event of a stall
/// that changed the phase.
fn conclude(ring: &DeploymentRing, status: &mut DeploymentRingStatus, outcome: Outcome, world: &World) -> Option<Note> {
    let Outcome { done, waiting, stall } = outcome;
    let generation = ring.metadata.generation;
    let now = world.time();
    let steps = Steps {
        all: RING_CONDITIONS,
        steps: RING_STEPS,
        done: &done,
        waiting: waiting.clone(),
        generation,
        stall: stall.as_ref(),
    };
    let mut conditions = conditions_for(&status.conditions, steps, &now);
    let progressing = matches!(status.phase, Some(RingPhase::Progressing | RingPhase::Baking | RingPhase::RollingBack));
    let (status_of, reason) = if progressing {
        (ConditionStatus::True, "RollingOut")
    } else {
        (ConditionStatus::False, status.phase.map_or("Pending", phase_reason))
    };
    let message = waiting.unwrap_or_default();
    conditions::set_condition(
        &mut conditions,
        Condition::new(PROGRESSING, status_of, reason, message, generation, now.clone()),
    );
    // A stall that only waits (a progress deadline passed) is not a halt.
    let halted = match stall.as_ref().filter(|_| status.phase == Some(RingPhase::Halted)) {
        Some(stall) => {
            Condition::new(HALTED, ConditionStatus::True, stall.reason.clone(), stall.message.clone(), generation, now)
        }
        None => Condition::new(HALTED, ConditionStatus::False, "NotHalted", "", generation, now),
    };
    conditions::set_condition(&mut conditions, halted);
    status.conditions = conditions;
    status.observed_generation = generation;
    let phase_changed = status.phase != ring.status.as_ref().and_then(|s| s.phase);
    stall.filter(|_| phase_changed).map(|stall| Note::warning(stall.reason, stall.message))
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
    use crate::controllers::driver::tests::{from_yaml, world};
    use crate::fixtures::{cell, ring};

    /// Ring 0 of the canary cells, its 1.1.0 baked.
    const ZERO: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: DeploymentRing
metadata: {name: zero, uid: 51aa, generation: 1}
spec:
  order: 0
  cellSelector: {matchLabels: {cellplane.io/ring: canary}}
  version: 1.1.0
  synthetic: {enabled: true, interval: 30s}
status:
  phase: Baked
  targetVersion: 1.1.0
  bakedVersion: 1.1.0
  workflow: {id: ring/zero/51aa/1.1.0, state: Completed}
"#;

    /// Ring 1 of the prod cells, following ring 0.
    const ONE: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: DeploymentRing
metadata: {name: one, uid: 62bb, generation: 1}
spec:
  order: 1
  cellSelector: {matchLabels: {cellplane.io/ring: prod}}
  followUpstream: true
"#;

    const CANARY_CELL: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: Cell
metadata: {name: canary-1, uid: c1, generation: 1, labels: {cellplane.io/ring: canary}}
spec:
  provider: sim
  region: eu-west-1
  network: {cidr: 10.20.0.0/16}
  cluster: {kubernetesVersion: "1.33", nodePools: []}
  capacity: {maxNamespaces: 10}
  version: 1.0.0
  ingress: {domain: example.com}
status:
  runningVersion: 1.1.0
  conditions:
  - {type: Ready, status: "True", reason: Reconciled, lastTransitionTime: "2025-06-15T00:00:00Z"}
"#;

    /// A prod cell still being provisioned.
    const PROD_CELL: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: Cell
metadata: {name: prod-1, uid: p1, generation: 1, labels: {cellplane.io/ring: prod}}
spec:
  provider: sim
  region: eu-west-1
  network: {cidr: 10.30.0.0/16}
  cluster: {kubernetesVersion: "1.33", nodePools: []}
  capacity: {maxNamespaces: 10}
  version: 1.0.0
  ingress: {domain: example.com}
status:
  runningVersion: 1.0.0
  conditions:
  - {type: Ready, status: Unknown, reason: Progressing, lastTransitionTime: "2025-06-15T00:00:00Z"}
"#;

    /// Ring 0's rollout of 1.2.0, halted by its synthetic gate after the first batch.
    const HALTED_BY_A_GATE: &str = r#"
id: ring/zero/51aa/1.2.0
workflow: ring-rollout
version: 1
run: 1
state: Completed
attempt: 0
createdAt: 1750000000000
updatedAt: 1750000600000
published:
  phase: Halted
  version: 1.2.0
  cells: [canary-1]
  currentBatch: 1
  totalBatches: 1
  paused: false
  halted: {reason: GateFailed, message: "gate probes failed: canary-1: 0.40 of 20 probes ok"}
  gates:
  - {name: probes, verdict: Failed, value: "canary-1: 0.40 of 20 probes ok", batch: 1}
"#;

    fn desire(ring: &str, world: &World) -> Desired<RingInput> {
        from_yaml::<DeploymentRing>(ring).desire(world).unwrap_or_else(|e| panic!("{e}"))
    }

    fn condition(status: &DeploymentRingStatus, type_: &str) -> (ConditionStatus, String, String) {
        let c = conditions::find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status, c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_ring_that_follows_upstream_waits_for_its_bake_then_rolls_what_it_baked() {
        let zero_unbaked = ZERO.replace("  bakedVersion: 1.1.0\n", "");
        let Work::Waiting(waiting) = desire(ONE, &world(&[PROD_CELL], &[&zero_unbaked, ONE])).work else {
            panic!("ring one does not wait")
        };
        assert_eq!(waiting, "waiting for the upstream ring to bake a version");
        let one: DeploymentRing = from_yaml(ONE);
        let status = one.report(&Stage::Waiting(&waiting), &world(&[PROD_CELL], &[])).status;
        assert_eq!(status.phase, Some(RingPhase::WaitingForUpstream));
        assert_eq!(condition(&status, PROGRESSING).1, "WaitingForUpstream");

        let zero_halted = ZERO.replace("phase: Baked", "phase: Halted");
        let Work::Waiting(waiting) = desire(ONE, &world(&[], &[&zero_halted, ONE])).work else { panic!("no wait") };
        assert_eq!(waiting, "waiting: upstream ring zero is halted");

        let Work::Run(run) = desire(ONE, &world(&[PROD_CELL], &[ZERO, ONE])).work else { panic!("no rollout") };
        assert_eq!((run.id.as_str(), run.input.version.as_str()), ("ring/one/62bb/1.1.0", "1.1.0"));
    }

    #[test]
    fn a_new_version_supersedes_the_rollout_in_progress_and_waits_for_ready_cells() {
        let one_rolling = format!("{ONE}status: {{workflow: {{id: ring/one/62bb/1.0.0, state: Waiting}}}}\n");
        let Work::Run(run) = desire(&one_rolling, &world(&[PROD_CELL], &[ZERO, &one_rolling])).work else {
            panic!("no rollout")
        };
        assert_eq!(run.supersedes.as_deref(), Some("ring/one/62bb/1.0.0"));
        assert_eq!(run.hold.as_deref(), Some("waiting for cells to be Ready before rolling out 1.1.0: prod-1"));
        assert_eq!(run.announce, Some(Note::normal("RolloutStarted", "rolling out 1.1.0 to 1 cells")));
        let one: DeploymentRing = from_yaml(&one_rolling);
        let waiting = run.hold.as_deref().unwrap_or_default();
        let status = one.report(&Stage::Held { run: &run, waiting }, &world(&[PROD_CELL], &[])).status;
        assert_eq!((status.phase, status.target_version.as_deref()), (Some(RingPhase::Pending), Some("1.1.0")));
        assert_eq!(status.cells_by_version[0].cells, ["prod-1"]);
    }

    #[test]
    fn approval_resume_abort_and_retry_reach_the_rollout_once_each() {
        let ring = |annotations: &str, spec: &str| {
            let yaml = ONE
                .replace("metadata: {", &format!("metadata: {{annotations: {{{annotations}}}, "))
                .replace("  followUpstream: true\n", &format!("  version: 1.2.0\n{spec}"));
            from_yaml::<DeploymentRing>(&yaml)
        };
        let run = Run::new("ring/one/62bb/1.2.0".to_string(), rollout_input(&ring("", ""), &plan_of(ONE), "1.2.0"));
        let halted: Checkpoint = from_yaml(HALTED_BY_A_GATE);
        let names = |ring: &DeploymentRing, checkpoint: Option<&Checkpoint>| -> Vec<String> {
            let commands = steer(ring, &run.input.version, checkpoint).unwrap_or_default();
            commands
                .iter()
                .map(|c| match c {
                    Command::Signal { name, once, .. } => format!("{name} {once}"),
                    Command::Cancel => "cancel".into(),
                    Command::Rerun { note, .. } => note.reason.clone(),
                })
                .collect()
        };
        let approved = "  manualApproval: true\n  approval: {version: 1.2.0, approvedBy: alice}\n";
        assert_eq!(names(&ring("", approved), None), ["approve 1.2.0"]);
        let elsewhere = "  manualApproval: true\n  approval: {version: 1.1.9, approvedBy: mallory}\n";
        assert!(names(&ring("", elsewhere), None).is_empty(), "an approval of another version counts for nothing");
        assert_eq!(names(&ring("cellplane.io/abort: 1.2.0", ""), None), ["cancel"]);
        assert!(names(&ring("cellplane.io/abort: 1.1.0", ""), None).is_empty());
        assert!(names(&ring("cellplane.io/retry: t1", ""), None).is_empty(), "nothing halted to retry");
        let paused_view = serde_json::json!({
            "phase": "Paused", "version": "1.2.0", "cells": ["prod-1"], "currentBatch": 1, "totalBatches": 2,
            "paused": true, "gates": []
        });
        let paused = Checkpoint { state: State::WaitingSignal, published: Some(paused_view), ..halted.clone() };
        assert_eq!(names(&ring("", ""), Some(&paused)), ["resume 1"], "spec.paused is false: it resumes");
        assert!(names(&ring("", "  paused: true\n"), Some(&paused)).is_empty(), "still paused");
        assert_eq!(names(&ring("cellplane.io/retry: t1", ""), Some(&halted)), ["RolloutRetried"]);

        let retried = ring("cellplane.io/retry: t1", "");
        let mut commands = steer(&retried, "1.2.0", Some(&halted)).unwrap_or_default();
        let Some(Command::Rerun { amend, .. }) = commands.pop() else { panic!("no rerun") };
        let input = amend(run.input.clone()).map(|input| input.retry);
        assert_eq!(input, Some(Some("t1".to_string())), "the first time, it runs again");
        let Some(Command::Rerun { amend, .. }) = steer(&retried, "1.2.0", Some(&halted)).unwrap_or_default().pop()
        else {
            panic!("no rerun")
        };
        let answered = RingInput { retry: Some("t1".into()), ..run.input.clone() };
        assert!(amend(answered).is_none(), "a token already answered runs nothing");
    }

    #[test]
    fn a_rollout_halted_by_a_gate_halts_the_ring_naming_the_gate_once() {
        let zero: DeploymentRing = from_yaml(ZERO);
        let run = Run::new("ring/zero/51aa/1.2.0".to_string(), rollout_input(&zero, &plan_of(ZERO), "1.2.0"));
        let checkpoint: Checkpoint = from_yaml(HALTED_BY_A_GATE);
        let output = RingOutput { version: "1.2.0".into(), baked_at: 0, halted: None };
        let stage = Stage::Running { run: &run, checkpoint: Some(&checkpoint), output: Some(&output) };
        let Report { status, events } = zero.report(&stage, &world(&[CANARY_CELL], &[]));
        assert_eq!(status.phase, Some(RingPhase::Halted));
        assert_eq!(status.baked_version.as_deref(), Some("1.1.0"), "what it baked before stays");
        let (halted, reason, message) = condition(&status, HALTED);
        assert_eq!((halted, reason.as_str()), (ConditionStatus::True, "GateFailed"));
        assert!(message.starts_with("gate probes failed"), "{message}");
        let reasons: Vec<(bool, &str)> = events.iter().map(|e| (e.warning, e.reason.as_str())).collect();
        assert_eq!(reasons, [(true, "GateFailed"), (true, "GateFailed")], "the gate's verdict, then the halt");

        let reported = DeploymentRing { status: Some(status), ..zero };
        assert!(reported.report(&stage, &world(&[CANARY_CELL], &[])).events.is_empty(), "announced once");
    }

    #[test]
    fn a_ring_that_probes_keeps_one_synthetic_tenant_per_cell_in_the_operators_namespace() {
        let desired = desire(ZERO, &world(&[CANARY_CELL, PROD_CELL], &[ZERO, ONE]));
        let Some(dependents) = desired.dependents else { panic!("no synthetic tenants") };
        assert_eq!(dependents.selector, "cellplane.io/synthetic=true,cellplane.io/ring-name=zero");
        let [tenant] = dependents.wanted.as_slice() else { panic!("one tenant per cell") };
        assert_eq!(tenant.metadata.name.as_deref(), Some("synthetic-canary-1"));
        assert_eq!(tenant.metadata.namespace.as_deref(), Some("cellplane-system"));
        assert_eq!(tenant.spec.placement.cell.as_deref(), Some("canary-1"));
        assert!(tenant.spec.synthetic);

        let one = desire(ONE, &world(&[CANARY_CELL, PROD_CELL], &[ZERO, ONE]));
        assert!(one.dependents.is_some_and(|d| d.wanted.is_empty()), "ring one does not probe: it keeps none");
        let released = match from_yaml::<DeploymentRing>(ZERO).teardown(None, &world(&[CANARY_CELL], &[])) {
            Ok(Teardown::Finished { release: Some(release), .. }) => release,
            _ => panic!("a ring's teardown does not wait"),
        };
        assert!(released.wanted.is_empty() && released.selector == dependents.selector);
    }

    fn plan_of(ring: &str) -> Plan {
        let ring: DeploymentRing = from_yaml(ring);
        plan(&ring, &[], &[]).unwrap_or_else(|stall| panic!("{}", stall.message))
    }

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
