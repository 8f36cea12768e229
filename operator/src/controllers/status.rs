//! Status from a workflow's checkpoint: the `workflow` block, what a person reads about the step
//! in progress, stalls (a failed workflow, a missing permission), the conditions, and the write
//! itself (server-side apply on the status subresource, skipped when nothing changed).

use std::fmt::Debug;

use cellplane_workflows::{Checkpoint, State};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ReconcileError;
use crate::api::MANAGER;
use crate::api::common::{WorkflowState, WorkflowStatus, time_ms};
use crate::api::conditions::{self, Condition, ConditionStatus, MAX_MESSAGE_LENGTH, Stall, truncated};

/// What keeps a teardown from finishing, shown by the Deleting condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub reason: String,
    pub message: String,
}

impl Blocker {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Blocker {
        Blocker { reason: reason.into(), message: message.into() }
    }
}

/// Writes `status` through server-side apply on the status subresource, unless it is unchanged.
pub async fn apply<K, S>(api: &Api<K>, obj: &K, current: Option<&S>, status: &S) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    // Compared as the API stores them: it keeps times to the second, so a status whose times
    // were computed again in milliseconds is still the same status (comparing the structs, every
    // requeue of every object rewrote it: 10,200 objects made 1,000 requests a minute at rest).
    if current.is_some_and(|current| serde_json::to_value(current).ok() == serde_json::to_value(status).ok()) {
        return Ok(());
    }
    let name = obj.meta().name.as_deref().ok_or(ReconcileError::MissingField("metadata.name"))?;
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing left to report on.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The `workflow` block of a status, from the engine's checkpoint.
pub fn workflow_status(cp: &Checkpoint) -> WorkflowStatus {
    let state = match cp.state {
        State::Pending => WorkflowState::Pending,
        State::Running => WorkflowState::Running,
        State::Sleeping if cp.last_error.is_some() => WorkflowState::Retrying,
        State::Sleeping | State::WaitingSignal => WorkflowState::Waiting,
        State::Completed => WorkflowState::Completed,
        State::Failed | State::NonDeterministic => WorkflowState::Failed,
        State::Cancelled => WorkflowState::Cancelled,
    };
    WorkflowStatus {
        id: cp.id.clone(),
        state,
        step: cp.step.clone(),
        attempt: (cp.attempt > 0).then_some(cp.attempt),
        last_error: cp.last_error.clone().map(|e| truncated(e, MAX_MESSAGE_LENGTH)),
        waiting_for: cp.reason.clone().map(|r| truncated(r, MAX_MESSAGE_LENGTH)),
        next_attempt_at: cp.next_attempt_at.and_then(time_ms),
        updated_at: time_ms(cp.updated_at),
    }
}

/// What a person should read about the step in progress: step, attempt, last error, wait.
pub fn progress_message(cp: &Checkpoint) -> String {
    let mut parts = Vec::new();
    match &cp.step {
        Some(step) if cp.attempt > 1 => parts.push(format!("step {step} (attempt {})", cp.attempt)),
        Some(step) => parts.push(format!("step {step}")),
        None => {}
    }
    if let Some(error) = &cp.last_error {
        parts.push(format!("last error: {error}"));
    }
    if let Some(reason) = &cp.reason {
        parts.push(reason.clone());
    }
    if parts.is_empty() {
        parts.push(format!("workflow {}", cp.state));
    }
    parts.join("; ")
}

/// Why a finished workflow stopped, as a Stall (None while it is active or completed).
pub fn stall_of(cp: &Checkpoint) -> Option<Stall> {
    match cp.state {
        State::Failed => Some(Stall {
            reason: "WorkflowFailed".into(),
            message: format!(
                "workflow {} failed: {}",
                cp.id,
                cp.reason.clone().or(cp.last_error.clone()).unwrap_or_default()
            ),
        }),
        State::NonDeterministic => {
            Some(Stall { reason: "NonDeterministic".into(), message: cp.reason.clone().unwrap_or_default() })
        }
        _ => None,
    }
}

/// A step that waits for something only a person can provide, as a Stall naming it: a
/// permission the operator lacks, or a Release for the version it installs (the workflow retries
/// until it is there, then goes on where it stopped).
pub fn blocked_on(cp: &Checkpoint) -> Option<Stall> {
    let error = cp.last_error.as_deref()?;
    let step = cp.step.as_deref().unwrap_or("?");
    let (reason, waits_for) = if error.starts_with(crate::cell::MISSING_PERMISSION) {
        ("MissingPermission", "a permission (retrying until it is granted)")
    } else if error.starts_with(crate::flows::fleet::NO_RELEASE) {
        ("NoRelease", "a Release (create one with this version)")
    } else {
        return None;
    };
    Some(Stall { reason: reason.into(), message: format!("step {step} waits for {waits_for}: {error}") })
}

/// The steps that are done: those the workflow's view lists, or before its first view, those
/// the status already shows True.
pub fn steps_done<'a>(steps: &[&'a str], view_done: Option<&[String]>, existing: &[Condition]) -> Vec<&'a str> {
    match view_done {
        Some(done) => steps.iter().copied().filter(|s| done.iter().any(|d| d == s)).collect(),
        None => steps.iter().copied().filter(|s| conditions::is_true(existing, s)).collect(),
    }
}

/// What the conditions of an object are made of, besides the ones it already has.
pub struct Steps<'a> {
    /// Every condition type of the kind.
    pub all: &'a [&'a str],
    /// The step conditions, in the order the work happens.
    pub steps: &'a [&'a str],
    pub done: &'a [&'a str],
    /// What the first pending step waits for.
    pub waiting: Option<String>,
    pub generation: Option<i64>,
    pub stall: Option<&'a Stall>,
}

/// The conditions of an object: every type Unknown on first sight, the steps in `done` True,
/// the first pending step Unknown with what it waits for, then Ready/Reconciling/Stalled.
pub fn conditions_for(existing: &[Condition], steps: Steps<'_>, now: &Time) -> Vec<Condition> {
    let Steps { all, steps, done, waiting, generation, stall } = steps;
    let mut conditions = existing.to_vec();
    conditions::init_conditions(&mut conditions, all, generation, now);
    let mut first_pending = true;
    for step in steps {
        let update = if done.contains(step) {
            Condition::new(*step, ConditionStatus::True, "Succeeded", "", generation, now.clone())
        } else if first_pending {
            first_pending = false;
            let (status, reason) = match stall {
                Some(stall) => (ConditionStatus::False, stall.reason.as_str()),
                None => (ConditionStatus::Unknown, "InProgress"),
            };
            let message = stall.map(|s| s.message.clone()).or(waiting.clone()).unwrap_or_default();
            Condition::new(*step, status, reason, message, generation, now.clone())
        } else {
            continue;
        };
        conditions::set_condition(&mut conditions, update);
    }
    conditions::set_summary(&mut conditions, steps, generation, stall, now);
    conditions
}

/// Sets (or, with None, removes) the Deleting condition.
pub fn set_deleting(conditions: &mut Vec<Condition>, blocker: Option<&Blocker>, generation: Option<i64>, now: &Time) {
    match blocker {
        Some(Blocker { reason, message }) => {
            let deleting = conditions::types::DELETING;
            let c = Condition::new(deleting, ConditionStatus::False, reason, message, generation, now.clone());
            conditions::set_condition(conditions, c);
        }
        None => conditions.retain(|c| c.type_ != conditions::types::DELETING),
    }
}
