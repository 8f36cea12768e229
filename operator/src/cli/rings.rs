//! `cellplane rings ...` steers a DeploymentRing's rollout; `cellplane rollout status` shows every
//! ring in rollout order.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::Cell;
use crate::api::ring::{DeploymentRing, DeploymentRingStatus, RingPhase};
use crate::controllers::ring::{ABORT, RETRY};
use crate::flows::placement::ring_cells;

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Kubeconfig to use; unset: KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum RingsCommand {
    /// Approve the ring's target version (writes spec.approval; in GitOps, commit it instead).
    Approve {
        ring: String,
        /// The version to approve. Unset: the ring's status.targetVersion.
        #[arg(long)]
        version: Option<String>,
        /// Who approves, for the audit trail. Unset: $USER.
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Hold the next batch (spec.paused: true).
    Pause {
        ring: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Let the next batch go (spec.paused: false).
    Resume {
        ring: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Stop the rollout of the target version now, leaving every cell where it is.
    Abort {
        ring: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run a halted rollout of the target version again.
    Retry {
        ring: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Every ring in rollout order: cells per version, batch, gates, bake, approval, and the
    /// release each cell runs with its health.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub async fn run_rings(command: RingsCommand) -> Result<(), String> {
    let (ring, cluster) = match &command {
        RingsCommand::Approve { ring, cluster, .. }
        | RingsCommand::Pause { ring, cluster }
        | RingsCommand::Resume { ring, cluster }
        | RingsCommand::Abort { ring, cluster }
        | RingsCommand::Retry { ring, cluster } => (ring.clone(), cluster),
    };
    println!("{}", steer(&Api::all(client(cluster).await?), &ring, command).await?);
    Ok(())
}

/// Writes what `command` asks of `ring`; returns what was done, for a person.
pub async fn steer(api: &Api<DeploymentRing>, ring: &str, command: RingsCommand) -> Result<String, String> {
    let describe = |e: kube::Error| format!("ring {ring}: {}", crate::kube_error::describe(&e));
    let current = api.get(ring).await.map_err(describe)?;
    let target = current.status.as_ref().and_then(|s| s.target_version.clone());
    let (patch, done) = match command {
        RingsCommand::Approve { version, by, .. } => {
            let version = version.or(target).ok_or(format!("ring {ring} has no target version to approve yet"))?;
            let by = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "cellplane".into());
            let done = format!("approved {version} in ring {ring} as {by}");
            (serde_json::json!({ "spec": { "approval": { "version": version, "approvedBy": by } } }), done)
        }
        RingsCommand::Pause { .. } => {
            (serde_json::json!({ "spec": { "paused": true } }), format!("ring {ring} paused: no new batch starts"))
        }
        RingsCommand::Resume { .. } => {
            (serde_json::json!({ "spec": { "paused": false } }), format!("ring {ring} resumed"))
        }
        RingsCommand::Abort { .. } => {
            let version = target.ok_or(format!("ring {ring} has no rollout to abort"))?;
            let done = format!("aborted the rollout of {version} in ring {ring}; cells stay where they are");
            (serde_json::json!({ "metadata": { "annotations": { ABORT: version } } }), done)
        }
        RingsCommand::Retry { .. } => {
            let token = crate::api::common::now().0.to_string();
            let done = format!("ring {ring} retries its halted rollout");
            (serde_json::json!({ "metadata": { "annotations": { RETRY: token } } }), done)
        }
    };
    api.patch(ring, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(describe)?;
    Ok(done)
}

pub async fn run_rollout(command: RolloutCommand) -> Result<(), String> {
    let RolloutCommand::Status { cluster } = command;
    let client = client(&cluster).await?;
    let listed = |e: kube::Error| crate::kube_error::describe(&e);
    let mut list = Api::<DeploymentRing>::all(client.clone()).list(&Default::default()).await.map_err(listed)?.items;
    let cells = Api::<Cell>::all(client).list(&Default::default()).await.map_err(listed)?.items;
    list.sort_by_key(|r| (r.spec.order.unwrap_or(0), r.name_any()));
    for ring in &list {
        print!("{}", describe(ring, &cells));
    }
    if list.is_empty() {
        println!("no DeploymentRings");
    }
    Ok(())
}

async fn client(cluster: &ClusterArgs) -> Result<Client, String> {
    super::operator::client_from(cluster.kubeconfig.as_deref()).await.map_err(|e| e.to_string())
}

/// A ring as `rollout status` prints it, with the release each of its `cells` runs and its health.
pub fn describe(ring: &DeploymentRing, cells: &[Cell]) -> String {
    let status: DeploymentRingStatus = ring.status.clone().unwrap_or_default();
    let mut out = String::new();
    let phase = status.phase.map_or("-".to_string(), |p| format!("{p:?}"));
    let target = status.target_version.as_deref().unwrap_or("-");
    let baked = status.baked_version.as_deref().unwrap_or("-");
    let _ = writeln!(
        out,
        "ring {} (order {}): {phase}, target {target}, baked {baked}",
        ring.name_any(),
        ring.spec.order.unwrap_or(0)
    );
    let by_version: Vec<String> =
        status.cells_by_version.iter().map(|v| format!("{} on {}", v.count, v.version)).collect();
    let _ = writeln!(out, "  cells: {}", if by_version.is_empty() { "none".into() } else { by_version.join(", ") });
    if let (Some(batch), Some(total)) = (status.current_batch, status.total_batches) {
        let _ = writeln!(out, "  batch: {batch} of {total}");
    }
    for gate in &status.gates {
        let _ = writeln!(out, "  gate {}: {:?} (batch {}) {}", gate.name, gate.verdict, gate.batch, gate.value);
    }
    if status.phase == Some(RingPhase::Baking)
        && let Some(until) = &status.baked_until
    {
        let _ = writeln!(out, "  baking until {}", until.0);
    }
    match (&status.approval, ring.spec.manual_approval) {
        (Some(approval), _) => {
            let by = approval.approved_by.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  approval: {} by {by}", approval.version);
        }
        (None, true) => {
            let _ = writeln!(out, "  approval: waiting (cellplane rings approve {})", ring.name_any());
        }
        (None, false) => {}
    }
    if let Some(rollback) = &status.rollback {
        let went_back: Vec<String> = rollback.cells.iter().map(|c| format!("{} to {}", c.cell, c.version)).collect();
        let _ = writeln!(out, "  rolled back {}: {} ({})", rollback.from, went_back.join(", "), rollback.reason);
    }
    for cell in ring_cells(ring, cells) {
        let status = cell.status.as_ref();
        let release = match status.and_then(|s| s.release.as_ref()) {
            Some(release) => release.summary(),
            None => format!(
                "no release ({} running)",
                status.and_then(|s| s.running_version.as_deref()).unwrap_or("nothing")
            ),
        };
        let _ = writeln!(out, "  cell {}: {release}", cell.name_any());
    }
    let halted = crate::api::conditions::find(&status.conditions, crate::api::ring::HALTED)
        .filter(|c| c.status == crate::api::conditions::ConditionStatus::True);
    if let Some(halted) = halted {
        let _ = writeln!(out, "  halted: {} ({})", halted.reason, halted.message);
    }
    out
}
