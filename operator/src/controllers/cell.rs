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
use crate::api::cell::{CELL_CONDITIONS, CELL_STEPS, CapacityUsage, Cell, CellPhase, CellStatus, ReleaseHealth};
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
        let input = CellInput { cell: name, spec: self.spec.clone(), generation, state: None, command: None };
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
        let stall = failed.clone().or_else(|| stage.blocked()).or_else(|| unhealthy(view.as_ref()));
        let status = status(self, stage, view.as_ref(), stall.as_ref(), failed.is_some(), world);
        let before = self.status.as_ref().and_then(|s| s.phase);
        let drift = corrected_drift(self, &status);
        let events = announce(self, before, status.phase, stall.as_ref(), view.and_then(|v| v.last_failure));
        Report { status, events: events.into_iter().chain(drift).collect() }
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
        status.release = view.release.clone();
    }
    if unhealthy(view).is_some() && status.phase == Some(CellPhase::Ready) {
        status.phase = Some(CellPhase::Degraded);
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

/// An Event for hand edits a drift check found and applied again since the last status.
fn corrected_drift(cell: &Cell, status: &CellStatus) -> Option<Note> {
    let drift = status.release.as_ref()?.drift.as_ref().filter(|d| !d.corrected.is_empty())?;
    let before = cell.status.as_ref().and_then(|s| s.release.as_ref()).and_then(|r| r.drift.as_ref());
    (before != Some(drift)).then(|| {
        Note::warning("DriftCorrected", format!("changed by hand, applied again: {}", drift.corrected.join("; ")))
    })
}

/// A release that is not healthy in the cell's cluster, as a Stall naming the objects.
fn unhealthy(view: Option<&CellView>) -> Option<Stall> {
    let release = view?.release.as_ref().filter(|r| r.health == ReleaseHealth::Failed)?;
    let why = release.message.clone().unwrap_or_default();
    Some(Stall {
        reason: "ReleaseUnhealthy".into(),
        message: format!("release {} is not healthy: {why}", release.version),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{from_yaml, world};

    /// Cell `eu-1` at its second generation (a new Kubernetes version), in ring `canary`'s group.
    const EU_1: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: Cell
metadata:
  name: eu-1
  uid: 7d2e
  generation: 2
  labels: {cellplane.io/ring: canary}
spec:
  provider: sim
  region: eu-west-1
  network: {cidr: 10.20.0.0/16}
  cluster:
    kubernetesVersion: "1.34"
    nodePools: [{name: general, instanceType: sim.large, minNodes: 1, maxNodes: 3}]
  capacity: {maxNamespaces: 10}
  version: 1.0.0
  ingress: {domain: example.com}
"#;

    const CANARY: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: DeploymentRing
metadata: {name: canary, uid: 51aa, generation: 1}
spec:
  order: 0
  cellSelector: {matchLabels: {cellplane.io/ring: canary}}
  version: 1.0.0
"#;

    /// The entity workflow, Ready at generation 1 and waiting for commands.
    const READY_AT_1: &str = r#"
id: cell/eu-1/7d2e
workflow: cell-entity
version: 1
run: 1
state: WaitingSignal
attempt: 0
reason: waiting for signal command
createdAt: 1750000000000
updatedAt: 1750000060000
published:
  phase: Ready
  done: [NetworkReady, ClusterReady, NodePoolsReady, ComponentsReady]
  provisioned: true
  resources: {}
  runningVersion: 1.0.0
  used: {namespaces: 0, units: 0}
  appliedGeneration: 1
"#;

    /// Teardown requested; two namespaces are still placed.
    const NAMESPACES_REMAIN: &str = r#"
id: cell/eu-1/7d2e
workflow: cell-entity
version: 1
run: 1
state: WaitingSignal
attempt: 0
createdAt: 1750000000000
updatedAt: 1750000060000
published:
  phase: Deleting
  done: []
  provisioned: true
  resources: {}
  used: {namespaces: 2, units: 0}
  appliedGeneration: 2
  blocked: "namespaces still placed: orders.acme, billing.acme"
"#;

    fn eu_1() -> Cell {
        from_yaml(EU_1)
    }

    fn run_of(cell: &Cell) -> Run<CellInput> {
        match cell.desire(&world(&[], &[])).map(|d| d.work) {
            Ok(Work::Run(run)) => run,
            _ => panic!("{} does not run", cell.name_any()),
        }
    }

    #[test]
    fn node_pools_and_names_the_schema_cannot_check_are_refused_before_anything_runs() {
        let mut cell = eu_1();
        cell.spec.cluster.node_pools[0].min_nodes = 5;
        let work = cell.desire(&world(&[], &[])).map(|d| d.work);
        let Ok(Work::Invalid(stall)) = work else { panic!("not refused") };
        assert_eq!(stall.reason, "InvalidSpec");
        assert_eq!(stall.message, "node pool general: minNodes must not be greater than maxNodes");
        let Report { status, events } = cell.report(&Stage::Invalid(&stall), &world(&[], &[]));
        assert_eq!(status.phase, Some(CellPhase::Failed));
        assert_eq!(events, [Note::warning("InvalidSpec", stall.message.clone())]);
    }

    #[test]
    fn a_generation_the_workflow_has_not_applied_is_sent_to_it_with_the_ring_that_owns_the_cell() {
        let cell = eu_1();
        let (run, checkpoint) = (run_of(&cell), from_yaml::<Checkpoint>(READY_AT_1));
        let commands = cell.commands(&run, Some(&checkpoint), &world(&[], &[CANARY])).unwrap_or_default();
        let [Command::Signal { name, once, payload }] = commands.as_slice() else { panic!("one signal") };
        assert_eq!((*name, once.as_str()), (COMMAND, "2"));
        let sent: Result<CellCommand, _> = serde_json::from_value(payload.clone());
        let Ok(CellCommand::ApplySpec { generation, spec, ring }) = sent else { panic!("not ApplySpec: {payload}") };
        assert_eq!(
            (generation, spec.cluster.kubernetes_version.as_str(), ring.as_deref()),
            (2, "1.34", Some("canary"))
        );

        let applied = Checkpoint { published: None, ..checkpoint };
        let mut current = cell.clone();
        current.metadata.generation = Some(1);
        let commands = current.commands(&run_of(&current), Some(&applied), &world(&[], &[])).unwrap_or_default();
        assert!(commands.is_empty(), "generation 1 is the workflow's own input");
    }

    #[test]
    fn a_cell_is_not_ready_at_a_generation_its_workflow_has_not_applied() {
        let cell = eu_1();
        let (run, checkpoint) = (run_of(&cell), from_yaml::<Checkpoint>(READY_AT_1));
        let stage = Stage::Running { run: &run, checkpoint: Some(&checkpoint), output: None };
        let status = cell.report(&stage, &world(&[], &[])).status;
        assert_eq!(status.phase, Some(CellPhase::Ready), "what the workflow says");
        let ready = conditions::find(&status.conditions, "Ready").map(|c| (c.status, c.reason.clone()));
        assert_eq!(ready, Some((conditions::ConditionStatus::Unknown, "StaleGeneration".to_string())));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(status.running_version.as_deref(), Some("1.0.0"));
    }

    #[test]
    fn teardown_asks_the_workflow_and_names_the_namespaces_that_keep_the_cell() {
        let checkpoint: Checkpoint = from_yaml(NAMESPACES_REMAIN);
        let Ok(Teardown::Continuing { commands, blocker }) = teardown(Some(&checkpoint)) else { panic!("goes on") };
        assert!(matches!(commands.as_slice(), [Command::Signal { name: COMMAND, .. }]));
        assert_eq!(blocker, Blocker::new("NamespacesRemain", "namespaces still placed: orders.acme, billing.acme"));
        let stage = Stage::Deleting { checkpoint: Some(&checkpoint), blocker: &blocker };
        let status = eu_1().report(&stage, &world(&[], &[])).status;
        let deleting = conditions::find(&status.conditions, "Deleting").map(|c| (c.status, c.reason.clone()));
        assert_eq!(deleting, Some((conditions::ConditionStatus::False, "NamespacesRemain".to_string())));
    }
}
