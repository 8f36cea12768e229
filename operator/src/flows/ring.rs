//! A ring rollout: upgrade the ring's cells to one version batch by batch (by commanding each
//! cell's entity workflow and awaiting its answer), pause between batches, then hold the bake
//! time on a durable timer. A failed cell upgrade stops the rollout; its output is the baked
//! version, which downstream rings follow.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cellplane_workflows::{Ctx, WfError, Workflow};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::cell::{CellCommand, UpgradeReply};
use super::fleet::RingView;
use super::placement::Candidate;
use super::{FlowDeps, ids, request};
use crate::api::ring::RingPhase;

/// The signal that resumes a paused rollout.
pub const RESUME: &str = "resume";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingInput {
    pub ring: String,
    pub version: String,
    /// The ring's cells, sorted, as the controller saw them when the rollout started.
    pub cells: Vec<Candidate>,
    pub max_batch: IntOrString,
    pub pause_between_batches_ms: u64,
    pub min_bake_time_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingOutput {
    pub version: String,
    /// When the bake ended, epoch ms.
    pub baked_at: i64,
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

impl Workflow for RingRollout {
    const NAME: &'static str = "ring-rollout";
    type Input = RingInput;
    type Output = RingOutput;

    async fn run(self: Arc<Self>, ctx: Ctx, input: RingInput) -> Result<RingOutput, WfError> {
        let deps = &self.deps;
        let started = ms(ctx.now().await?);
        let fleet = &deps.fleet;
        let cells = &input.cells;
        let batches = plan_batches(cells, &input.max_batch);
        let mut view = RingView {
            phase: Some(RingPhase::Progressing),
            version: input.version.clone(),
            cells: cells.iter().map(|c| c.cell.clone()).collect(),
            total_batches: batches.len() as i32,
            started_at: Some(started),
            ..RingView::default()
        };
        ctx.publish(&view).await?;
        for (index, batch) in batches.iter().enumerate() {
            let ring = &input.ring;
            let paused = ctx.step("check-paused").run(|_| async move { Ok(fleet.ring_paused(ring)) }).await?;
            if paused {
                view.phase = Some(RingPhase::Paused);
                view.paused = true;
                ctx.publish(&view).await?;
                ctx.wait_signal::<()>(RESUME, None).await?;
            }
            view.phase = Some(RingPhase::Progressing);
            view.paused = false;
            view.current_batch = index as i32 + 1;
            ctx.publish(&view).await?;
            if let Err(e) = upgrade_batch(&ctx, deps, &input.version, batch).await {
                view.phase = Some(RingPhase::Halted);
                view.halted = Some(e.to_string());
                ctx.publish(&view).await?;
                return Err(e);
            }
            if index + 1 < batches.len() && input.pause_between_batches_ms > 0 {
                ctx.sleep(Duration::from_millis(input.pause_between_batches_ms)).await?;
            }
        }
        let until = ms(ctx.now().await?) + input.min_bake_time_ms as i64;
        view.phase = Some(RingPhase::Baking);
        view.baked_until = Some(until);
        ctx.publish(&view).await?;
        ctx.sleep_until(UNIX_EPOCH + Duration::from_millis(until.max(0) as u64)).await?;
        view.phase = Some(RingPhase::Baked);
        ctx.publish(&view).await?;
        Ok(RingOutput { version: input.version, baked_at: until })
    }
}

/// Commands every cell of the batch to upgrade, then awaits every answer.
async fn upgrade_batch(ctx: &Ctx, deps: &FlowDeps, version: &str, batch: &[Candidate]) -> Result<(), WfError> {
    let mut pending = Vec::new();
    for cell in batch {
        let upgrade = |request_id| CellCommand::Upgrade {
            version: version.to_string(),
            reply_to: ctx.id().to_string(),
            request_id,
        };
        match request(ctx, deps, "request-upgrade", &cell.workflow_id, upgrade).await? {
            Some(request_id) => pending.push((cell, request_id)),
            None => return Err(WfError::failed(format!("cell {} is being deleted", cell.cell))),
        }
    }
    for (cell, request_id) in pending {
        let reply: Option<UpgradeReply> = ctx.wait_signal(&ids::reply(&request_id), None).await?;
        if let Some(error) = reply.and_then(|r| r.error) {
            return Err(WfError::failed(format!("cell {}: {error}", cell.cell)));
        }
    }
    Ok(())
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
