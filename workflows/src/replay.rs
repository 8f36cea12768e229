//! Replaying recorded histories against workflow code, for a replay suite: [`History`] is what
//! [`crate::Engine::export`] writes, [`Replayer`] runs a workflow function against one without
//! executing anything or touching a database.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use crate::context::{Ctx, Divergence, Halt, ended_state};
use crate::engine::{Shared, Workflow, erase};
use crate::journal::{
    ClaimRequest, Claimed, Commit, Journal, NewWorkflow, Renewed, RunInput, SignalLookup, WorkflowRow,
};
use crate::{EngineConfig, Error, Event, IdReuse, Metrics, Result, Started, State, SystemClock};

/// A workflow's complete recorded history, self-contained: what it is, and each run's input and
/// records. Serialised as JSON by `cellplane workflows export`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The layout of this document ([`History::FORMAT`]).
    pub format: u32,
    pub id: String,
    pub workflow: String,
    pub version: i32,
    /// The application version that started the workflow, and the highest that ran it.
    #[serde(default)]
    pub app_version: Option<String>,
    #[serde(default)]
    pub max_app_version: Option<String>,
    pub runs: Vec<RunHistory>,
}

impl History {
    pub const FORMAT: u32 = 1;
}

/// One run of a workflow: the input it started with and its records, ordered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunHistory {
    pub run: i64,
    /// None for a run that began before journals recorded run inputs: it cannot be replayed.
    pub input: Option<Value>,
    pub events: Vec<Event>,
}

/// Why a recorded history does not replay on the code given.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("history {label:?} is of workflow {recorded}, not {code}")]
    OtherWorkflow { label: String, recorded: String, code: String },
    #[error("history {label:?}, run {run}: the run's input was not recorded, so it cannot be replayed")]
    NoInput { label: String, run: i64 },
    #[error("history {label:?}, run {run}: operation #{seq} is now {code}, but the history recorded {recorded} there")]
    Diverged { label: String, run: i64, seq: i64, code: String, recorded: String },
    #[error("history {label:?}, run {run}: the replay could not go on: {reason}")]
    Stopped { label: String, run: i64, reason: String },
}

/// Runs workflow code against recorded histories. Each durable operation returns what the history
/// recorded; no step body, timer, signal wait or side effect executes, and nothing is written.
/// Where the history ends (the workflow was still running, or waiting) the replay ends
/// successfully; where the code's operation differs from the recorded one it fails, naming both.
/// Cheap to keep and share: one replayer replays any number of histories.
pub struct Replayer {
    shared: Arc<Shared>,
}

impl Replayer {
    pub fn new() -> Result<Self> {
        let config = EngineConfig { owner: "replayer".to_string(), ..EngineConfig::default() };
        let metrics = Metrics::new(&prometheus::Registry::new())?;
        let journal: Arc<dyn Journal> = Arc::new(NoJournal);
        let (shared, _commits) = Shared::new(journal, Arc::new(SystemClock), config, metrics, HashMap::new())?;
        Ok(Replayer { shared })
    }

    /// Replays every run of `history` (labelled `label` in errors) on `workflow`'s code, each
    /// from the input it recorded.
    pub async fn replay<W: Workflow>(
        &self,
        label: &str,
        history: &History,
        workflow: &Arc<W>,
    ) -> Result<(), ReplayError> {
        if history.workflow != W::NAME || history.version != W::VERSION {
            return Err(ReplayError::OtherWorkflow {
                label: label.to_string(),
                recorded: format!("{}@{}", history.workflow, history.version),
                code: format!("{}@{}", W::NAME, W::VERSION),
            });
        }
        for run in &history.runs {
            self.replay_run(label, history, run, workflow).await?;
        }
        Ok(())
    }

    async fn replay_run<W: Workflow>(
        &self,
        label: &str,
        history: &History,
        run: &RunHistory,
        workflow: &Arc<W>,
    ) -> Result<(), ReplayError> {
        let stopped = |reason: String| ReplayError::Stopped { label: label.to_string(), run: run.run, reason };
        let diverged = |d: Divergence| ReplayError::Diverged {
            label: label.to_string(),
            run: run.run,
            seq: d.seq,
            code: d.code,
            recorded: d.recorded,
        };
        let input = run.input.clone().ok_or_else(|| ReplayError::NoInput { label: label.to_string(), run: run.run })?;
        let claimed = claimed_for_replay(history, run, input.clone());
        let (halt_tx, halt_rx) = oneshot::channel();
        let ctx = Ctx::replaying(self.shared.clone(), &claimed, run.events.clone(), halt_tx);
        let function = erase(workflow.clone());
        tokio::select! {
            result = function(ctx.clone(), input) => match ctx.end_divergence(ended_state(&result)) {
                None => Ok(()),
                Some(divergence) => Err(diverged(divergence)),
            },
            halt = halt_rx => match halt {
                Ok(Halt::ReplayEnded) => Ok(()),
                Ok(Halt::NonDeterministic(divergence)) => Err(diverged(divergence)),
                Ok(Halt::Journal(reason)) => Err(stopped(reason)),
                Ok(other) => Err(stopped(format!("{other:?}"))),
                Err(_) => Err(stopped("the workflow's context was dropped".to_string())),
            },
        }
    }
}

fn claimed_for_replay(history: &History, run: &RunHistory, input: Value) -> Claimed {
    Claimed {
        id: history.id.clone(),
        name: history.workflow.clone(),
        version: history.version,
        run: run.run,
        state: State::Running,
        input,
        parent: None,
        epoch: 0,
        cancel_requested: false,
        taken_from: None,
        created_at: 0,
        has_history: !run.events.is_empty(),
        plain: false,
        published: None,
        app_version: history.app_version.clone(),
        max_app_version: history.max_app_version.clone(),
    }
}

/// The journal of a replay: there is none, and a replay never asks it for anything.
struct NoJournal;

#[async_trait]
impl Journal for NoJournal {
    async fn create(&self, _: &[NewWorkflow], _: IdReuse, _: i64) -> Result<Vec<Started>> {
        Err(Error::Replaying("creating workflows"))
    }
    async fn claim(&self, _: &ClaimRequest) -> Result<Vec<Claimed>> {
        Err(Error::Replaying("claiming"))
    }
    async fn histories(&self, _: &[(String, i64)]) -> Result<Vec<(String, Vec<Event>)>> {
        Err(Error::Replaying("loading histories"))
    }
    async fn commit(&self, _: &[Commit]) -> Result<Vec<bool>> {
        Err(Error::Replaying("committing"))
    }
    async fn renew(&self, _: &str, _: i64) -> Result<Vec<Renewed>> {
        Err(Error::Replaying("renewing leases"))
    }
    async fn release(&self, _: &str, _: Option<&str>) -> Result<()> {
        Err(Error::Replaying("releasing leases"))
    }
    async fn find_signal(&self, _: &str, _: &str) -> Result<SignalLookup> {
        Err(Error::Replaying("looking for signals"))
    }
    async fn send_signal(&self, _: &str, _: &str, _: &Value, _: i64) -> Result<()> {
        Err(Error::Replaying("sending signals"))
    }
    async fn wake(&self, _: &str, _: bool, _: i64) -> Result<()> {
        Err(Error::Replaying("waking workflows"))
    }
    async fn retry(&self, _: &str, _: i64) -> Result<()> {
        Err(Error::Replaying("retrying workflows"))
    }
    async fn get(&self, _: &str) -> Result<Option<WorkflowRow>> {
        Err(Error::Replaying("reading workflows"))
    }
    async fn list(&self, _: Option<State>, _: i64) -> Result<Vec<WorkflowRow>> {
        Err(Error::Replaying("listing workflows"))
    }
    async fn history(&self, _: &str) -> Result<Vec<Event>> {
        Err(Error::Replaying("reading history"))
    }
    async fn runs(&self, _: &str) -> Result<Vec<RunInput>> {
        Err(Error::Replaying("reading run inputs"))
    }
    fn changes(&self) -> broadcast::Receiver<String> {
        broadcast::channel(1).1
    }
}
