//! The data the engine journals and shows: states, checkpoints, history records, policies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a workflow is in its life. Every state but `Running` carries a reason in its checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Created (or restarted) and waiting for a worker to claim it.
    Pending,
    /// A worker is executing it.
    Running,
    /// Held by a durable timer (a sleep, or the backoff before a retry).
    Sleeping,
    /// Waiting for a signal (or a child workflow's result).
    WaitingSignal,
    Completed,
    Failed,
    Cancelled,
    /// Its code no longer matches its recorded history; the reason names the mismatch.
    NonDeterministic,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Running,
        State::Sleeping,
        State::WaitingSignal,
        State::Completed,
        State::Failed,
        State::Cancelled,
        State::NonDeterministic,
    ];
    /// States from which the workflow still makes progress (a worker may claim it).
    pub const ACTIVE: [State; 4] = [State::Pending, State::Running, State::Sleeping, State::WaitingSignal];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "Pending",
            State::Running => "Running",
            State::Sleeping => "Sleeping",
            State::WaitingSignal => "WaitingSignal",
            State::Completed => "Completed",
            State::Failed => "Failed",
            State::Cancelled => "Cancelled",
            State::NonDeterministic => "NonDeterministic",
        }
    }

    /// Finished for good unless someone retries or restarts it.
    pub fn is_finished(self) -> bool {
        !Self::ACTIVE.contains(&self)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown workflow state {0:?} (expected one of Pending, Running, Sleeping, WaitingSignal, Completed, Failed, Cancelled, NonDeterministic)"
)]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// The visible progress of one workflow: mirrored into the owning object's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub id: String,
    pub workflow: String,
    pub version: i32,
    /// Incremented by continue-as-new and by restarts of a finished id.
    pub run: i64,
    pub state: State,
    /// Why the workflow is not running (what it waits for, why it failed).
    pub reason: Option<String>,
    /// The step being executed or last executed.
    pub step: Option<String>,
    pub step_seq: Option<i64>,
    /// Attempt of the current step (1 for the first try).
    pub attempt: i32,
    /// When the workflow next runs on its own (timer, retry backoff, signal timeout), epoch ms.
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub parent: Option<String>,
    pub owner: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// What the workflow last published with `Ctx::publish` (None until it does): replaced by each
    /// publish, kept across continue-as-new and after the workflow ends.
    pub published: Option<Value>,
    /// The application version of the engine that started the workflow (None for workflows
    /// started before engines recorded versions).
    #[serde(default)]
    pub app_version: Option<String>,
    /// The highest application version that started or ran the workflow: engines of older
    /// versions never claim it (see [`crate::EngineConfig::app_version`]).
    #[serde(default)]
    pub max_app_version: Option<String>,
}

/// The output or error of a finished workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub state: State,
    pub output: Option<Value>,
    pub reason: Option<String>,
}

/// What kind of durable operation a history record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Step,
    Timer,
    Signal,
    Child,
    Marker,
    /// The end of a run: completed, failed, cancelled or continued as new.
    Finish,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Step => "step",
            Op::Timer => "timer",
            Op::Signal => "signal",
            Op::Child => "child",
            Op::Marker => "marker",
            Op::Finish => "finish",
        }
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Op::Step, Op::Timer, Op::Signal, Op::Child, Op::Marker, Op::Finish]
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| format!("unknown history record kind {s:?}"))
    }
}

/// One journaled record. A durable operation (sequence number `seq` in its run) owns one or more
/// records: attempts that failed and will be retried, the start of a wait, and its final outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub run: i64,
    pub seq: i64,
    pub idx: i32,
    pub op: Op,
    pub name: String,
    pub record: Record,
    pub epoch: i64,
    pub owner: Option<String>,
    pub at: i64,
}

/// The content of a history record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A step finished: its result, or the terminal error it gave up with.
    StepDone {
        result: Result<Value, crate::StepError>,
        attempts: i32,
        duration_ms: i64,
    },
    /// A step attempt failed and will be retried at `next_at`.
    StepRetry {
        attempt: i32,
        error: crate::StepError,
        next_at: i64,
        duration_ms: i64,
    },
    TimerStarted {
        until: i64,
    },
    SignalWait {
        deadline: Option<i64>,
    },
    SignalReceived {
        payload: Value,
    },
    SignalTimedOut,
    ChildStarted {
        workflow: String,
    },
    Marker {
        value: Value,
    },
    /// Cancellation was observed at this operation, which returned `Cancelled`.
    Cancelled,
    Completed {
        output: Value,
    },
    Failed {
        reason: String,
    },
    WorkflowCancelled,
    ContinuedAsNew,
}

impl Record {
    /// Whether this record ends its operation (others are progress within it).
    pub fn is_final(&self) -> bool {
        !matches!(self, Record::StepRetry { .. } | Record::TimerStarted { .. } | Record::SignalWait { .. })
    }

    /// The change id of a patch marker (see [`crate::Ctx::patched`]).
    pub fn patch_change(&self) -> Option<&str> {
        match self {
            Record::Marker { value } => value.get(PATCH_KEY).and_then(Value::as_str),
            _ => None,
        }
    }

    pub(crate) fn patch(change: &str) -> Record {
        let value = serde_json::Map::from_iter([(PATCH_KEY.to_string(), Value::from(change))]);
        Record::Marker { value: Value::Object(value) }
    }
}

/// The key of a patch marker's value, `{"patch": "change-id"}`: no other marker records an object.
const PATCH_KEY: &str = "patch";

/// Patch markers are named `patch:CHANGE-ID`, apart from the `now`, `random` and `uuid` markers.
pub(crate) const PATCH_PREFIX: &str = "patch:";

/// How a step is retried. Attempt counts and next-attempt times are journaled.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_interval: Duration,
    /// 0 means unlimited.
    pub max_attempts: u32,
    /// Fraction (0..=1) of each delay that is randomised.
    pub jitter: f64,
    /// Error kinds (see [`crate::StepError::kind`]) that are never retried.
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(300),
            max_attempts: 10,
            jitter: 0.2,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Never retry: the first error is terminal.
    pub fn no_retry() -> Self {
        RetryPolicy { max_attempts: 1, ..Self::default() }
    }

    /// The delay before attempt `attempt + 1`, without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = self.backoff_coefficient.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = self.initial_interval.as_secs_f64() * exp;
        Duration::from_secs_f64(secs.min(self.max_interval.as_secs_f64()))
    }

    /// The delay before attempt `attempt + 1`, with jitter drawn from `unit` (0..1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64(base * (1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0)))
    }

    pub fn gives_up_after(&self, attempt: u32) -> bool {
        self.max_attempts != 0 && attempt >= self.max_attempts
    }
}

/// What `start` does when a workflow with the same id already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdReuse {
    /// Always return the existing workflow, whatever its state.
    #[default]
    ReturnExisting,
    /// Start a new run if the existing one failed, was cancelled or became non-deterministic.
    RestartIfFailed,
    /// Start a new run if the existing one finished in any way.
    RestartIfFinished,
}

impl IdReuse {
    pub(crate) fn restartable(self) -> &'static [State] {
        match self {
            IdReuse::ReturnExisting => &[],
            IdReuse::RestartIfFailed => &[State::Failed, State::Cancelled, State::NonDeterministic],
            IdReuse::RestartIfFinished => &[State::Completed, State::Failed, State::Cancelled, State::NonDeterministic],
        }
    }
}

/// What `start` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    Created,
    Restarted,
    Existing(State),
}

/// A stable key for the outside effect of one step: the same on every attempt and every replay.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    pub workflow_id: String,
    pub run: i64,
    pub seq: i64,
}

impl IdempotencyKey {
    /// A 32-character hex digest of the key, for APIs that limit token length (AWS client tokens).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(self.to_string().as_bytes());
        hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.workflow_id, self.run, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_coefficient_and_stops_at_the_maximum() {
        let policy = RetryPolicy {
            initial_interval: Duration::from_millis(100),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        let delays: Vec<u128> = (1..=5).map(|a| policy.base_delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = RetryPolicy { jitter: 0.5, initial_interval: Duration::from_secs(1), ..RetryPolicy::default() };
        assert_eq!(policy.delay(1, 0.0).as_millis(), 500);
        assert_eq!(policy.delay(1, 1.0).as_millis(), 1500);
    }

    #[test]
    fn max_attempts_zero_retries_forever() {
        let policy = RetryPolicy { max_attempts: 0, ..RetryPolicy::default() };
        assert!(!policy.gives_up_after(1_000_000));
        assert!(RetryPolicy::no_retry().gives_up_after(1));
    }

    #[test]
    fn states_parse_case_insensitively_and_reject_unknown_names() {
        assert_eq!("waitingsignal".parse::<State>().ok(), Some(State::WaitingSignal));
        assert!("Done".parse::<State>().is_err());
    }

    #[test]
    fn idempotency_key_is_stable_and_short() {
        let key = IdempotencyKey { workflow_id: "cell-a".into(), run: 1, seq: 4 };
        assert_eq!(key.to_string(), "cell-a:1:4");
        assert_eq!(key.digest(), key.clone().digest());
        assert_eq!(key.digest().len(), 32);
        assert_ne!(key.digest(), IdempotencyKey { seq: 5, ..key }.digest());
    }
}
