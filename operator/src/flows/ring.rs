//! A ring rollout: wait for approval when the ring asks for it, upgrade the ring's cells to one
//! version batch by batch (by commanding each cell's entity workflow and awaiting its answer),
//! check the gates after each batch and pause, then hold the bake time on a durable timer while
//! the gates keep being checked. A failed gate or cell upgrade halts the rollout and, with the
//! automatic rollback policy, puts the changed cells back on their previous version, newest batch
//! first. Its output is the baked version (which downstream rings follow) or why it halted.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cellplane_workflows::{Ctx, WfError, Workflow};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::cell::{CellCommand, UpgradeReply};
use super::fleet::{Halt, RingView};
use super::gates::{Check, GatePlan, Tracker};
use super::placement::Candidate;
use super::{FlowDeps, ids, request};
use crate::api::common::time_ms;
use crate::api::ring::{
    ApprovalStatus, CellVersion, GateStatus, GateVerdict, RingPhase, RollbackPolicy, RollbackStatus,
};

/// The signal that resumes a paused rollout.
pub const RESUME: &str = "resume";
/// The signal that approves a rollout (payload: [`ApprovalSignal`]).
pub const APPROVE: &str = "approve";
/// Gate checks in one run of the bake before it continues as new (keeps a week's history short).
pub const CHECKS_PER_RUN: u32 = 200;

/// A cell of the ring and the version it ran when the rollout started (for a rollback).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingCell {
    pub cell: Candidate,
    pub previous: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingInput {
    pub ring: String,
    pub version: String,
    /// The ring's cells, sorted, as the controller saw them when the rollout started.
    pub cells: Vec<RingCell>,
    pub max_batch: IntOrString,
    pub pause_between_batches_ms: u64,
    pub min_bake_time_ms: u64,
    pub progress_deadline_ms: u64,
    pub gates: Vec<GatePlan>,
    pub manual_approval: bool,
    pub rollback: RollbackPolicy,
    /// Where the bake stood, when it continued as new.
    #[serde(default)]
    pub baking: Option<Baking>,
    /// The retry this run answers (the value of the ring's retry annotation).
    #[serde(default)]
    pub retry: Option<String>,
}

/// A bake in progress, carried over by continue-as-new.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baking {
    pub view: RingView,
    pub until: i64,
    pub trackers: Vec<Tracker>,
    pub changed: Vec<Vec<RingCell>>,
}

/// A person's go-ahead, as the controller signals it from spec.approval.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalSignal {
    pub version: String,
    pub approved_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingOutput {
    pub version: String,
    /// When the bake ended, epoch ms.
    pub baked_at: i64,
    /// Why the rollout stopped short of baking.
    #[serde(default)]
    pub halted: Option<Halt>,
}

pub struct RingRollout {
    pub deps: Arc<FlowDeps>,
}

/// Splits cells into batches of at most `max_batch` (a count, or a percentage rounded up;
/// at least one cell per batch).
pub fn plan_batches<T: Clone>(cells: &[T], max_batch: &IntOrString) -> Vec<Vec<T>> {
    let size = match max_batch {
        IntOrString::Int(n) => (*n).max(1) as usize,
        IntOrString::String(s) => {
            let percent: usize = s.trim_end_matches('%').parse().unwrap_or(100).clamp(1, 100);
            (cells.len() * percent).div_ceil(100).max(1)
        }
    };
    cells.chunks(size).map(<[T]>::to_vec).collect()
}

fn ms(at: std::time::SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The changes to this workflow's steps that histories of earlier releases do not have (see
/// `Ctx::patched`).
pub mod patches {
    /// A rollback also puts back the cells whose upgrade failed or was still going (0.2.0).
    pub const ROLL_BACK_FAILED_UPGRADES: &str = "roll-back-failed-upgrades";
}

impl Workflow for RingRollout {
    const NAME: &'static str = "ring-rollout";
    type Input = RingInput;
    type Output = RingOutput;

    async fn run(self: Arc<Self>, ctx: Ctx, input: RingInput) -> Result<RingOutput, WfError> {
        let mut rollout = Rollout {
            ctx: &ctx,
            deps: &self.deps,
            input: &input,
            view: RingView::default(),
            changed: Vec::new(),
            checks: 0,
        };
        match rollout.run().await {
            Err(WfError::Cancelled) => {
                let halt = Halt { reason: "Cancelled".into(), message: "the rollout was cancelled".into() };
                rollout.view.phase = Some(RingPhase::Halted);
                rollout.view.halted = Some(halt);
                // Best effort: the cancellation is what the caller must see.
                let _ = ctx.publish(&rollout.view).await;
                Err(WfError::Cancelled)
            }
            other => other,
        }
    }
}

struct Rollout<'a> {
    ctx: &'a Ctx,
    deps: &'a FlowDeps,
    input: &'a RingInput,
    view: RingView,
    /// The batches upgraded so far, in order.
    changed: Vec<Vec<RingCell>>,
    /// Gate checks made in this run (names their steps).
    checks: u32,
}

impl Rollout<'_> {
    async fn now(&self) -> Result<i64, WfError> {
        Ok(ms(self.ctx.now().await?))
    }

    async fn publish(&self) -> Result<(), WfError> {
        self.ctx.publish(&self.view).await
    }

    async fn run(&mut self) -> Result<RingOutput, WfError> {
        let input = self.input;
        if let Some(baking) = input.baking.clone() {
            self.view = baking.view;
            self.changed = baking.changed;
            return self.bake(baking.until, baking.trackers).await;
        }
        let batches = plan_batches(&input.cells, &input.max_batch);
        self.view = RingView {
            phase: Some(RingPhase::Progressing),
            version: input.version.clone(),
            cells: input.cells.iter().map(|c| c.cell.cell.clone()).collect(),
            total_batches: batches.len() as i32,
            started_at: Some(self.now().await?),
            ..RingView::default()
        };
        if input.manual_approval {
            self.await_approval().await?;
        }
        for (index, batch) in batches.iter().enumerate() {
            self.hold_if_paused().await?;
            self.view.phase = Some(RingPhase::Progressing);
            self.view.current_batch = index as i32 + 1;
            self.publish().await?;
            if let Err(halt) = self.upgrade(batch).await? {
                return self.halt(halt).await;
            }
            if let Err(halt) = self.gates_after_batch(batch, index as i32 + 1).await? {
                return self.halt(halt).await;
            }
            if index + 1 < batches.len() && input.pause_between_batches_ms > 0 {
                self.ctx.sleep(Duration::from_millis(input.pause_between_batches_ms)).await?;
            }
        }
        let now = self.now().await?;
        let trackers = input.gates.iter().map(|_| Tracker::during_bake(now)).collect();
        self.bake(now + input.min_bake_time_ms as i64, trackers).await
    }

    async fn await_approval(&mut self) -> Result<(), WfError> {
        self.view.phase = Some(RingPhase::WaitingForApproval);
        self.publish().await?;
        loop {
            let approval: Option<ApprovalSignal> = self.ctx.wait_signal(APPROVE, None).await?;
            if let Some(approval) = approval.filter(|a| a.version == self.input.version) {
                let at = self.now().await?;
                self.view.approval = Some(ApprovalStatus {
                    version: approval.version,
                    approved_by: approval.approved_by,
                    approved_at: time_ms(at),
                });
                return Ok(());
            }
        }
    }

    async fn hold_if_paused(&mut self) -> Result<(), WfError> {
        let (fleet, ring) = (&self.deps.fleet, &self.input.ring);
        let paused = self.ctx.step("check-paused").run(|_| async move { Ok(fleet.ring_paused(ring)) }).await?;
        if paused {
            self.view.phase = Some(RingPhase::Paused);
            self.view.paused = true;
            self.publish().await?;
            self.ctx.wait_signal::<()>(RESUME, None).await?;
            self.view.paused = false;
        }
        Ok(())
    }

    /// Commands every cell of the batch to upgrade, then awaits every answer; past the progress
    /// deadline the view names the cells that have not finished, and the wait goes on.
    async fn upgrade(&mut self, batch: &[RingCell]) -> Result<Result<(), Halt>, WfError> {
        let version = self.input.version.clone();
        let mut pending = Vec::new();
        for cell in batch {
            match self.request_upgrade(&cell.cell, &version).await? {
                Some(request_id) => pending.push((cell, request_id)),
                None => return Ok(Err(upgrade_failed(&cell.cell.cell, "the cell is being deleted"))),
            }
        }
        let deadline = self.now().await? + self.input.progress_deadline_ms as i64;
        let mut upgraded = Vec::new();
        for (index, (cell, request_id)) in pending.iter().enumerate() {
            let reply = loop {
                let now = self.now().await?;
                let timeout =
                    (self.view.overdue.is_none()).then(|| Duration::from_millis((deadline - now).max(0) as u64));
                match self.ctx.wait_signal::<UpgradeReply>(&ids::reply(request_id), timeout).await? {
                    Some(reply) => break reply,
                    None => {
                        let late: Vec<&str> = pending[index..].iter().map(|(c, _)| c.cell.cell.as_str()).collect();
                        self.view.overdue = Some(format!(
                            "batch {} has not finished within its progress deadline: {} still upgrading",
                            self.view.current_batch,
                            late.join(", ")
                        ));
                        self.publish().await?;
                    }
                }
            };
            if let Some(error) = reply.error {
                // The failed cell and those still upgrading were changed too: a rollback puts
                // them back (before 0.2.0 only the cells that had finished went back).
                if self.ctx.patched(patches::ROLL_BACK_FAILED_UPGRADES).await? {
                    upgraded = pending.iter().map(|(cell, _)| (*cell).clone()).collect();
                }
                self.changed.push(upgraded);
                return Ok(Err(upgrade_failed(&cell.cell.cell, &error)));
            }
            upgraded.push((*cell).clone());
        }
        self.changed.push(upgraded);
        if self.view.overdue.take().is_some() {
            self.publish().await?;
        }
        Ok(Ok(()))
    }

    async fn request_upgrade(&self, cell: &Candidate, version: &str) -> Result<Option<String>, WfError> {
        let id = self.ctx.id().to_string();
        let upgrade =
            |request_id| CellCommand::Upgrade { version: version.to_string(), reply_to: id.clone(), request_id };
        request(self.ctx, self.deps, "request-upgrade", &cell.workflow_id, upgrade).await
    }

    /// Checks the gates over the batch's cells until all passed or one failed.
    async fn gates_after_batch(&mut self, batch: &[RingCell], number: i32) -> Result<Result<(), Halt>, WfError> {
        let now = self.now().await?;
        let mut trackers: Vec<Tracker> = self.input.gates.iter().map(|plan| Tracker::after_batch(plan, now)).collect();
        let cells: Vec<String> = batch.iter().map(|c| c.cell.cell.clone()).collect();
        loop {
            self.show_gates(&trackers, number);
            self.publish().await?;
            if let Some(halt) = self.failed_gate(&trackers) {
                return Ok(Err(halt));
            }
            let Some(next) = trackers.iter().filter(|t| !t.is_settled()).map(|t| t.next_check).min() else {
                return Ok(Ok(()));
            };
            self.ctx.sleep_until(UNIX_EPOCH + Duration::from_millis(next.max(0) as u64)).await?;
            self.check_due(&mut trackers, &cells).await?;
        }
    }

    /// Holds the bake until `until`, the gates checked over every cell of the ring meanwhile.
    async fn bake(&mut self, until: i64, mut trackers: Vec<Tracker>) -> Result<RingOutput, WfError> {
        self.view.phase = Some(RingPhase::Baking);
        self.view.baked_until = Some(until);
        let cells: Vec<String> = self.input.cells.iter().map(|c| c.cell.cell.clone()).collect();
        loop {
            self.show_gates(&trackers, 0);
            self.publish().await?;
            if let Some(halt) = self.failed_gate(&trackers) {
                return self.halt(halt).await;
            }
            if self.now().await? >= until {
                break;
            }
            if self.checks >= CHECKS_PER_RUN {
                let baking = Baking { view: self.view.clone(), until, trackers, changed: self.changed.clone() };
                let next = RingInput { baking: Some(baking), ..self.input.clone() };
                return self.ctx.continue_as_new(&next).await;
            }
            let next = trackers.iter().map(|t| t.next_check).min().unwrap_or(until).min(until);
            self.ctx.sleep_until(UNIX_EPOCH + Duration::from_millis(next.max(0) as u64)).await?;
            self.check_due(&mut trackers, &cells).await?;
        }
        self.view.phase = Some(RingPhase::Baked);
        self.publish().await?;
        Ok(RingOutput { version: self.input.version.clone(), baked_at: until, halted: None })
    }

    /// Checks every gate whose time has come, each check a step of its own.
    async fn check_due(&mut self, trackers: &mut [Tracker], cells: &[String]) -> Result<(), WfError> {
        let now = self.now().await?;
        for (plan, tracker) in self.input.gates.iter().zip(trackers.iter_mut()) {
            if tracker.is_settled() || tracker.next_check > now {
                continue;
            }
            self.checks += 1;
            let gates = &self.deps.gates;
            let check: Check = self
                .ctx
                .step(format!("gate-{}-{}", plan.name, self.checks))
                .run(|_| async move { Ok(gates.check(plan, cells).await) })
                .await?;
            tracker.observe(plan, now, check);
        }
        Ok(())
    }

    fn show_gates(&mut self, trackers: &[Tracker], batch: i32) {
        self.view.gates = self
            .input
            .gates
            .iter()
            .zip(trackers)
            .map(|(plan, tracker)| GateStatus {
                name: plan.name.clone(),
                verdict: tracker.verdict,
                value: tracker.value.clone(),
                batch,
                since: time_ms(tracker.since),
            })
            .collect();
    }

    fn failed_gate(&self, trackers: &[Tracker]) -> Option<Halt> {
        let (plan, tracker) = self.input.gates.iter().zip(trackers).find(|(_, t)| t.verdict == GateVerdict::Failed)?;
        Some(Halt { reason: "GateFailed".into(), message: format!("gate {} failed: {}", plan.name, tracker.value) })
    }

    /// Stops the rollout: with the automatic policy, first puts the changed cells back on the
    /// version they ran, newest batch first.
    async fn halt(&mut self, halt: Halt) -> Result<RingOutput, WfError> {
        if self.input.rollback == RollbackPolicy::Automatic && self.changed.iter().any(|b| !b.is_empty()) {
            self.view.phase = Some(RingPhase::RollingBack);
            self.publish().await?;
            let mut restored = Vec::new();
            for batch in std::mem::take(&mut self.changed).into_iter().rev() {
                restored.extend(self.roll_back(&batch).await?);
            }
            self.view.rollback = Some(RollbackStatus {
                from: self.input.version.clone(),
                reason: halt.message.clone(),
                cells: restored,
            });
        }
        self.view.phase = Some(RingPhase::Halted);
        self.view.halted = Some(halt.clone());
        self.publish().await?;
        Ok(RingOutput { version: self.input.version.clone(), baked_at: 0, halted: Some(halt) })
    }

    /// Upgrades a batch's cells back to their previous versions; returns those put back.
    async fn roll_back(&mut self, batch: &[RingCell]) -> Result<Vec<CellVersion>, WfError> {
        let mut pending = Vec::new();
        for cell in batch {
            let Some(previous) = &cell.previous else { continue };
            if let Some(request_id) = self.request_upgrade(&cell.cell, previous).await? {
                pending.push((cell, previous, request_id));
            }
        }
        let mut restored = Vec::new();
        for (cell, previous, request_id) in pending {
            let reply: Option<UpgradeReply> = self.ctx.wait_signal(&ids::reply(&request_id), None).await?;
            if reply.is_some_and(|r| r.error.is_none()) {
                restored.push(CellVersion { cell: cell.cell.cell.clone(), version: previous.clone() });
            }
        }
        Ok(restored)
    }
}

fn upgrade_failed(cell: &str, error: &str) -> Halt {
    Halt { reason: "UpgradeFailed".into(), message: format!("cell {cell}: {error}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_by_count_and_by_percentage() {
        let cells: Vec<i32> = (1..=10).collect();
        assert_eq!(plan_batches(&cells, &IntOrString::Int(4)).len(), 3);
        assert_eq!(
            plan_batches(&cells, &IntOrString::String("25%".into())).iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert_eq!(plan_batches(&cells[..1], &IntOrString::String("10%".into())), vec![vec![1]]);
        assert!(plan_batches::<i32>(&[], &IntOrString::Int(1)).is_empty());
    }
}
