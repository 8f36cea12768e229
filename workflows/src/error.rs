//! Errors: of the engine and journal ([`Error`]), of workflow code ([`WfError`]) and of a
//! step body ([`StepError`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::State;

/// An error of the engine, its journal or an administrative call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("journal database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not apply the journal's migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported journal URL {0:?}: expected postgres://USER@HOST:PORT/DB or sqlite://PATH")]
    BadUrl(String),
    #[error(
        "invalid journal schema name {0:?}: use 1 to 63 lowercase letters, digits or underscores, starting with a letter or underscore"
    )]
    BadSchema(String),
    #[error("no workflow with id {0:?}")]
    NotFound(String),
    #[error("a workflow id of {bytes} bytes is too long: ids are at most {max} bytes")]
    IdTooLong { bytes: usize, max: usize },
    #[error("workflow {id:?} is {state}: {action} needs it to be {needed}")]
    WrongState { id: String, state: State, action: &'static str, needed: &'static str },
    #[error("no workflow named {name:?} at version {version} is registered with this engine")]
    NotRegistered { name: String, version: i32 },
    #[error("signal names starting with \"__\" are reserved for the engine: {0:?}")]
    ReservedSignal(String),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("workflow {id:?} ended {state}: {reason}")]
    Unsuccessful { id: String, state: State, reason: String },
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error(
        "invalid application version {0:?}: expected MAJOR.MINOR.PATCH (minor and patch below 1000), optionally with a -pre-release or +build suffix"
    )]
    BadAppVersion(String),
    #[error("a replay has no journal: {0} is not available while replaying a recorded history")]
    Replaying(&'static str),
    #[error("cannot register the engine's metrics (is another engine using this registry?): {0}")]
    Metrics(#[from] prometheus::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a workflow function sees fail. Propagate it with `?` to fail the workflow, or handle it
/// (compensate, clean up) and go on.
#[derive(Debug, thiserror::Error)]
pub enum WfError {
    /// A step gave up: its error was terminal, non-retryable or its attempts ran out.
    #[error("step {step:?} failed: {error}")]
    Step { step: String, error: StepError },
    /// Cancellation was requested. Cleanup steps may still run after this.
    #[error("cancelled")]
    Cancelled,
    /// A child workflow did not complete.
    #[error("child workflow {id:?} ended {state}: {reason}")]
    Child { id: String, state: State, reason: String },
    #[error("could not encode or decode a workflow value: {0}")]
    Json(#[from] serde_json::Error),
    /// An error of the workflow's own logic.
    #[error("{0}")]
    Failed(String),
}

impl WfError {
    pub fn failed(message: impl fmt::Display) -> Self {
        WfError::Failed(message.to_string())
    }
}

/// The error a step body returns. Transient errors are retried per the step's policy; terminal
/// ones end the step at once. Any `std::error::Error` converts into a transient one whose kind is
/// the error's type name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    /// A short classifier, matched against `RetryPolicy::non_retryable`.
    pub kind: String,
    pub message: String,
    /// False when retrying cannot help (access denied, invalid input).
    pub retryable: bool,
}

impl StepError {
    pub fn transient(message: impl fmt::Display) -> Self {
        StepError { kind: "transient".into(), message: message.to_string(), retryable: true }
    }

    pub fn terminal(message: impl fmt::Display) -> Self {
        StepError { kind: "terminal".into(), message: message.to_string(), retryable: false }
    }

    /// Not a failure: the step waits for something outside that is on its way (a cell still
    /// being provisioned). Retried like a transient error, but logged quietly.
    pub fn waiting(message: impl fmt::Display) -> Self {
        StepError { kind: Self::WAITING.into(), message: message.to_string(), retryable: true }
    }

    /// The kind of [`StepError::waiting`].
    pub const WAITING: &'static str = "waiting";

    /// The step cannot go on until someone outside acts (a permission is granted): retried at
    /// the policy's pace without an attempt limit, and logged as a failure each time.
    pub fn blocked(message: impl fmt::Display) -> Self {
        StepError { kind: Self::BLOCKED.into(), message: message.to_string(), retryable: true }
    }

    /// The kind of [`StepError::blocked`].
    pub const BLOCKED: &'static str = "blocked";

    /// A retryable error with a kind that a policy can list as non-retryable.
    pub fn of_kind(kind: impl Into<String>, message: impl fmt::Display) -> Self {
        StepError { kind: kind.into(), message: message.to_string(), retryable: true }
    }

    pub(crate) fn timeout(after: std::time::Duration) -> Self {
        StepError::of_kind("timeout", format!("timed out after {after:?}"))
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.retryable {
            write!(f, " (not retryable)")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(error: E) -> Self {
        let type_name = std::any::type_name::<E>();
        let kind = type_name.rsplit("::").next().unwrap_or(type_name);
        StepError::of_kind(kind, error)
    }
}
