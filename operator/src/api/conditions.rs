//! Status conditions shared by all cellplane resources, and the pure helpers controllers use
//! to maintain them.
//!
//! The shape is `metav1.Condition`, so kstatus (Flux, kpt, cli-utils) and Argo CD read it.
//! Each kind has a fixed set of per-step conditions (see the `*_CONDITIONS` constants next to
//! each kind) and three summary conditions computed from them by [`summarize`]:
//! - `Ready`: True when every step is True for the current generation;
//! - `Reconciling`: True while work is in progress (kstatus "abnormal-true");
//! - `Stalled`: True when progress stopped and needs a person (kstatus "abnormal-true").
//!
//! On first sight a controller calls [`init_conditions`] (everything Unknown, so nothing looks
//! done before it is) and then [`set_summary`], which turns Reconciling True before the first
//! status patch is written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types used across the kinds.
pub mod types {
    /// Summary: the object is fully reconciled and serving.
    pub const READY: &str = "Ready";
    /// Summary: the controller is working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// Summary: progress stopped on an error that needs a person, or a deadline passed.
    pub const STALLED: &str = "Stalled";
    /// The object is being deleted; False names what blocks teardown.
    pub const DELETING: &str = "Deleting";
}

/// Reasons the summary helpers write.
pub mod reasons {
    /// Set by [`super::init_conditions`] on conditions the controller has not evaluated yet.
    pub const INITIALIZING: &str = "Initializing";
    /// Every step is True for the current generation.
    pub const RECONCILED: &str = "Reconciled";
    /// Work is in progress and not stuck.
    pub const PROGRESSING: &str = "Progressing";
    /// A step condition was written for an older generation of the spec.
    pub const STALE_GENERATION: &str = "StaleGeneration";
}

/// Most conditions a status carries (each kind has at most ten types).
pub const MAX_CONDITIONS: usize = 32;
/// Longest human-readable message in a status, in characters.
pub const MAX_MESSAGE_LENGTH: usize = 32 * 1024;

/// `text` cut to at most `max` characters (the unit of a schema's maxLength), so that a
/// status patch is not refused for one long error message.
pub fn truncated(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
    }
    text
}

/// Status of a condition: True, False or Unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller does not know yet.
    Unknown,
}

impl ConditionStatus {
    /// The string the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// One aspect of the object's current state (the shape of `metav1.Condition`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, e.g. Ready, Reconciling, Stalled, DatabaseReady.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Status of the condition: True, False or Unknown.
    pub status: ConditionStatus,
    /// The metadata.generation the condition was computed from. If it is lower than the
    /// object's metadata.generation, the condition is out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// When the condition last changed from one status to another.
    pub last_transition_time: Time,
    /// Machine-readable reason for the last transition, in CamelCase.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Human-readable details: for a waiting or failing state it names what is waited for,
    /// the failing step, its attempt count and the last error.
    #[serde(default)]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub message: String,
}

impl Condition {
    /// A new condition observed at `now` for `generation`.
    pub fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
        generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            observed_generation: generation,
            last_transition_time: now,
            reason: reason.into(),
            message: truncated(message.into(), MAX_MESSAGE_LENGTH),
        }
    }

    /// True when the status is True and the condition is not older than `generation`.
    pub fn is_true_for(&self, generation: Option<i64>) -> bool {
        self.status == ConditionStatus::True && !self.is_stale(generation)
    }

    /// True when the condition was computed for an older generation than `generation`.
    pub fn is_stale(&self, generation: Option<i64>) -> bool {
        matches!((self.observed_generation, generation), (Some(seen), Some(current)) if seen < current)
    }
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of the given type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Insert or update a condition. When the status did not change, the existing
/// lastTransitionTime is kept and only reason, message and observedGeneration are updated.
/// Returns true when anything changed, so a caller can skip a no-op status patch.
pub fn set_condition(conditions: &mut Vec<Condition>, update: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        None => {
            conditions.push(update);
            true
        }
        Some(existing) if existing.status == update.status => {
            let changed = existing.reason != update.reason
                || existing.message != update.message
                || existing.observed_generation != update.observed_generation;
            existing.reason = update.reason;
            existing.message = update.message;
            existing.observed_generation = update.observed_generation;
            changed
        }
        Some(existing) => {
            *existing = update;
            true
        }
    }
}

/// Add every condition of `types` that is missing, with status Unknown and reason
/// Initializing; existing conditions are left alone. Returns true when any was added.
pub fn init_conditions(conditions: &mut Vec<Condition>, types: &[&str], generation: Option<i64>, now: &Time) -> bool {
    let mut added = false;
    for type_ in types {
        if find(conditions, type_).is_none() {
            conditions.push(Condition::new(
                *type_,
                ConditionStatus::Unknown,
                reasons::INITIALIZING,
                "not yet observed by the controller",
                generation,
                now.clone(),
            ));
            added = true;
        }
    }
    added
}

/// Why progress stopped, as decided by the controller (a terminal workflow error, or a
/// progress deadline that passed without progress).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// CamelCase reason, e.g. `ProgressDeadlineExceeded` or `AccessDenied`.
    pub reason: String,
    /// What a person needs to know to unstick it.
    pub message: String,
}

/// The three summary conditions computed from the per-step conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The `Ready` condition.
    pub ready: Condition,
    /// The `Reconciling` condition.
    pub reconciling: Condition,
    /// The `Stalled` condition.
    pub stalled: Condition,
}

/// Compute Ready, Reconciling and Stalled from the step conditions named in `steps`
/// (in the order the work happens), for the object's current `generation`.
///
/// - `stall` given: Stalled True, Ready False, Reconciling False, all with the stall's reason.
/// - every step True for this generation: Ready True, Reconciling and Stalled False.
/// - otherwise the first step that is not done is the blocker: Ready is False if that step
///   is False and Unknown otherwise, Reconciling True, and both name the step and its message.
pub fn summarize(
    conditions: &[Condition],
    steps: &[&str],
    generation: Option<i64>,
    stall: Option<&Stall>,
    now: &Time,
) -> Summary {
    use ConditionStatus::{False, True, Unknown};
    let cond = |type_: &str, status, reason: &str, message: String| {
        Condition::new(type_, status, reason, message, generation, now.clone())
    };

    if let Some(stall) = stall {
        return Summary {
            ready: cond(types::READY, False, &stall.reason, stall.message.clone()),
            reconciling: cond(types::RECONCILING, False, &stall.reason, stall.message.clone()),
            stalled: cond(types::STALLED, True, &stall.reason, stall.message.clone()),
        };
    }

    // A False step blocks more clearly than an earlier Unknown one: report it first.
    let pending = |c: Option<&Condition>| !c.is_some_and(|c| c.is_true_for(generation));
    let blocker = steps
        .iter()
        .find(|s| find(conditions, s).is_some_and(|c| c.status == False && !c.is_stale(generation)))
        .or_else(|| steps.iter().find(|s| pending(find(conditions, s))));

    let Some(step) = blocker else {
        let message = if steps.is_empty() { "reconciled".to_owned() } else { format!("{} are True", steps.join(", ")) };
        return Summary {
            ready: cond(types::READY, True, reasons::RECONCILED, message.clone()),
            reconciling: cond(types::RECONCILING, False, reasons::RECONCILED, message.clone()),
            stalled: cond(types::STALLED, False, reasons::RECONCILED, message),
        };
    };

    let (ready_status, reason, message) = match find(conditions, step) {
        None => (Unknown, reasons::INITIALIZING.to_owned(), format!("waiting for {step}: not yet observed")),
        Some(c) if c.is_stale(generation) => (
            Unknown,
            reasons::STALE_GENERATION.to_owned(),
            format!("waiting for {step}: not yet evaluated for the current spec"),
        ),
        Some(c) => {
            let status = if c.status == False { False } else { Unknown };
            let message = if c.message.is_empty() {
                format!("waiting for {step} ({})", c.reason)
            } else {
                format!("waiting for {step}: {}", c.message)
            };
            (status, c.reason.clone(), message)
        }
    };
    Summary {
        ready: cond(types::READY, ready_status, &reason, message.clone()),
        reconciling: cond(types::RECONCILING, True, &reason, message.clone()),
        stalled: cond(types::STALLED, False, reasons::PROGRESSING, message),
    }
}

/// [`summarize`] and write the result into `conditions` with [`set_condition`].
/// Returns true when anything changed.
pub fn set_summary(
    conditions: &mut Vec<Condition>,
    steps: &[&str],
    generation: Option<i64>,
    stall: Option<&Stall>,
    now: &Time,
) -> bool {
    let Summary { ready, reconciling, stalled } = summarize(conditions, steps, generation, stall, now);
    // Non-short-circuiting: all three must be written.
    set_condition(conditions, ready) | set_condition(conditions, reconciling) | set_condition(conditions, stalled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConditionStatus::{False, True, Unknown};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn c(type_: &str, status: ConditionStatus, reason: &str, generation: i64) -> Condition {
        Condition::new(type_, status, reason, "", Some(generation), at(0))
    }

    const STEPS: &[&str] = &["CellSelected", "DatabaseReady", "Connected"];

    #[test]
    fn set_condition_inserts_new() {
        let mut conds = vec![];
        assert!(set_condition(&mut conds, c("Ready", Unknown, "Initializing", 1)));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_unchanged() {
        let mut conds = vec![c("DatabaseReady", False, "Connecting", 1)];
        let update = Condition::new("DatabaseReady", False, "AuthFailed", "bad password", Some(2), at(100));
        assert!(set_condition(&mut conds, update));
        assert_eq!(conds[0].last_transition_time, at(0));
        assert_eq!(conds[0].reason, "AuthFailed");
        assert_eq!(conds[0].message, "bad password");
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn set_condition_reports_no_change() {
        let mut conds = vec![c("DatabaseReady", True, "Ready", 1)];
        let same = Condition::new("DatabaseReady", True, "Ready", "", Some(1), at(500));
        assert!(!set_condition(&mut conds, same));
        assert_eq!(conds[0].last_transition_time, at(0));
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_changes() {
        let mut conds = vec![c("DatabaseReady", False, "Connecting", 1)];
        assert!(set_condition(&mut conds, Condition::new("DatabaseReady", True, "Ready", "", Some(1), at(100))));
        assert_eq!(conds[0].status, True);
        assert_eq!(conds[0].last_transition_time, at(100));
    }

    #[test]
    fn init_adds_only_missing_as_unknown() {
        let mut conds = vec![c("CellSelected", True, "Selected", 1)];
        assert!(init_conditions(&mut conds, STEPS, Some(1), &at(5)));
        assert_eq!(conds.len(), 3);
        assert_eq!(find(&conds, "CellSelected").unwrap().status, True);
        let db = find(&conds, "DatabaseReady").unwrap();
        assert_eq!((db.status, db.reason.as_str()), (Unknown, reasons::INITIALIZING));
        assert!(!init_conditions(&mut conds, STEPS, Some(1), &at(6)));
    }

    #[test]
    fn first_sight_is_reconciling_not_ready() {
        let mut conds = vec![];
        init_conditions(&mut conds, STEPS, Some(1), &at(0));
        let s = summarize(&conds, STEPS, Some(1), None, &at(0));
        assert_eq!(s.ready.status, Unknown);
        assert_eq!(s.reconciling.status, True);
        assert_eq!(s.stalled.status, False);
        assert!(s.ready.message.contains("CellSelected"), "{}", s.ready.message);
    }

    #[test]
    fn all_steps_true_is_ready() {
        let conds: Vec<_> = STEPS.iter().map(|s| c(s, True, "Done", 3)).collect();
        let s = summarize(&conds, STEPS, Some(3), None, &at(0));
        assert_eq!(s.ready.status, True);
        assert_eq!(s.ready.observed_generation, Some(3));
        assert_eq!(s.reconciling.status, False);
        assert_eq!(s.stalled.status, False);
    }

    #[test]
    fn stale_step_is_not_ready() {
        let mut conds: Vec<_> = STEPS.iter().map(|s| c(s, True, "Done", 3)).collect();
        conds[1].observed_generation = Some(2);
        let s = summarize(&conds, STEPS, Some(3), None, &at(0));
        assert_eq!(s.ready.status, Unknown);
        assert_eq!(s.ready.reason, reasons::STALE_GENERATION);
        assert!(s.ready.message.contains("DatabaseReady"));
        assert_eq!(s.reconciling.status, True);
    }

    #[test]
    fn false_step_wins_over_earlier_unknown() {
        let conds = vec![
            c("CellSelected", Unknown, "Initializing", 1),
            Condition::new("DatabaseReady", False, "AuthFailed", "attempt 3: bad password", Some(1), at(0)),
        ];
        let s = summarize(&conds, STEPS, Some(1), None, &at(0));
        assert_eq!(s.ready.status, False);
        assert_eq!(s.ready.reason, "AuthFailed");
        assert_eq!(s.ready.message, "waiting for DatabaseReady: attempt 3: bad password");
        assert_eq!(s.reconciling.status, True);
        assert_eq!(s.stalled.status, False);
    }

    #[test]
    fn stall_overrides_everything() {
        let conds: Vec<_> = STEPS.iter().map(|s| c(s, True, "Done", 1)).collect();
        let stall = Stall { reason: "AccessDenied".into(), message: "ec2:CreateVpc denied".into() };
        let s = summarize(&conds, STEPS, Some(1), Some(&stall), &at(0));
        assert_eq!((s.stalled.status, s.stalled.reason.as_str()), (True, "AccessDenied"));
        assert_eq!(s.ready.status, False);
        assert_eq!(s.reconciling.status, False);
    }

    #[test]
    fn set_summary_is_idempotent() {
        let mut conds = vec![];
        init_conditions(&mut conds, STEPS, Some(1), &at(0));
        assert!(set_summary(&mut conds, STEPS, Some(1), None, &at(1)));
        assert!(!set_summary(&mut conds, STEPS, Some(1), None, &at(2)));
        assert_eq!(find(&conds, types::RECONCILING).unwrap().last_transition_time, at(1));
        assert!(is_true(&conds, types::RECONCILING));
    }

    #[test]
    fn condition_serializes_like_metav1() {
        let cond = Condition::new("Ready", True, "Reconciled", "ok", Some(4), at(0));
        let json = serde_json::to_value(&cond).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "Ready",
                "status": "True",
                "observedGeneration": 4,
                "lastTransitionTime": "1970-01-01T00:00:00Z",
                "reason": "Reconciled",
                "message": "ok",
            })
        );
    }

    #[test]
    fn long_messages_are_cut_to_the_schema_bound() {
        let long = "é".repeat(MAX_MESSAGE_LENGTH + 10);
        let cond = Condition::new("Ready", False, "Failed", long, Some(1), at(0));
        assert_eq!(cond.message.chars().count(), MAX_MESSAGE_LENGTH);
        assert_eq!(truncated("short".into(), 10), "short");
    }
}
