//! The journal: where workflows, their history and their signals are stored. One trait, two
//! implementations (PostgreSQL for production and several replicas, SQLite for one replica and
//! first runs), one behaviour test suite.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::broadcast;

pub use postgres::PgJournal;
pub use sqlite::SqliteJournal;

use crate::{AppVersion, Event, History, IdReuse, Result, RunHistory, State};

/// Where a workflow nobody waits on time for sorts: `wake_at` of a signal wait without timeout.
pub const NEVER: i64 = i64::MAX;

/// The longest workflow id, in bytes: ids are announced to other engines in PostgreSQL
/// notifications, whose payload must stay under 8000 bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// Changed ids a slow [`Journal::changes`] receiver may fall behind by before it lags.
const CHANGES_CAPACITY: usize = 4096;

/// A claimed Pending run is running from now on. Its step comes from its events: the row's step
/// fields (from a run that continued as new, or a retried step) would hide steps appended later.
const START_RUN: &str = "state = CASE WHEN state = 'Pending' THEN 'Running' ELSE state END, \
    reason = CASE WHEN state = 'Pending' THEN NULL ELSE reason END, \
    step_name = CASE WHEN state = 'Pending' THEN NULL ELSE step_name END, \
    step_seq = CASE WHEN state = 'Pending' THEN NULL ELSE step_seq END, \
    attempt = CASE WHEN state = 'Pending' THEN 0 ELSE attempt END";

/// Whether a claimed row (as updated) holds a plain running checkpoint.
const CLAIMED_PLAIN: &str =
    "(state = 'Running' AND reason IS NULL AND last_error IS NULL AND wake_at = 0 AND output IS NULL)";

/// Opens the journal a URL names (`postgres://…` or `sqlite://PATH`), applying migrations.
/// `schema` is the PostgreSQL schema for the tables (ignored by SQLite).
pub async fn open(url: &str, schema: &str) -> Result<Arc<dyn Journal>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgJournal::connect(url, schema).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteJournal::open(url).await?))
    } else {
        Err(crate::Error::BadUrl(url.to_string()))
    }
}

/// A workflow to create.
#[derive(Clone, Debug)]
pub struct NewWorkflow {
    pub id: String,
    pub name: String,
    pub version: i32,
    pub input: Value,
    pub parent: Option<String>,
    /// The version of the application that starts it.
    pub app_version: AppVersion,
}

/// A workflow a worker claimed: it owns it until `lease` expires, and writes with `epoch`.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: String,
    pub name: String,
    pub version: i32,
    pub run: i64,
    pub state: State,
    pub input: Value,
    pub parent: Option<String>,
    pub epoch: i64,
    pub cancel_requested: bool,
    /// The previous owner whose lease expired, when this claim is a takeover.
    pub taken_from: Option<String>,
    pub created_at: i64,
    /// Whether the claimed run has history to replay (saves a query for fresh workflows).
    pub has_history: bool,
    /// The row holds a plain running checkpoint (Running; no reason, error or wake-up), so the
    /// run's completed steps may be appended without rewriting it (see [`Commit::append_only`]).
    pub plain: bool,
    /// The workflow's published state as stored when claimed.
    pub published: Option<Value>,
    /// The application version that started the workflow, and the highest that ran it
    /// (this claim's included).
    pub app_version: Option<String>,
    pub max_app_version: Option<String>,
}

/// Which workflows a worker may claim and until when.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub owner: String,
    /// The claimer's application version: workflows that a newer one started or ran are left
    /// alone, and each claimed workflow records it as the highest that ran it if it is.
    pub app_version: AppVersion,
    pub types: Vec<(String, i32)>,
    pub limit: i64,
    /// Workflow clock: timers due at or before this are runnable.
    pub clock_now: i64,
    /// Wall clock: leases that expired before this may be taken over.
    pub wall_now: i64,
    pub lease_until: i64,
}

/// The row fields a commit sets (the workflow's checkpoint).
#[derive(Clone, Debug)]
pub struct RowUpdate {
    pub state: State,
    pub reason: Option<String>,
    pub step: Option<String>,
    pub step_seq: Option<i64>,
    pub attempt: i32,
    pub last_error: Option<String>,
    /// When the workflow should run again if released (workflow clock); 0 means now.
    pub wake_at: i64,
    /// Give up the lease: the workflow leaves memory until `wake_at` or a signal.
    pub release: bool,
    /// For a signal wait: the signal version seen when looking for signals. If it changed by
    /// the time of the commit, a signal arrived meanwhile and the workflow wakes at once.
    pub seen_signal_version: Option<i64>,
    pub output: Option<Value>,
    /// Continue-as-new: the next run's input (the run number is incremented).
    pub next_run_input: Option<Value>,
    /// Replaces the workflow's published state; None leaves it as it is.
    pub published: Option<Value>,
}

impl RowUpdate {
    /// A checkpoint in `state` with nothing else set: runnable now, lease kept.
    pub fn new(state: State) -> Self {
        RowUpdate {
            state,
            reason: None,
            step: None,
            step_seq: None,
            attempt: 0,
            last_error: None,
            wake_at: 0,
            release: false,
            seen_signal_version: None,
            output: None,
            next_run_input: None,
            published: None,
        }
    }

    /// A running checkpoint with nothing to report (no reason, error or wake-up) that keeps its
    /// lease: a commit of it changes nothing but the step and, perhaps, the published state.
    pub fn is_plain(&self) -> bool {
        self.state == State::Running
            && self.reason.is_none()
            && self.last_error.is_none()
            && self.wake_at == 0
            && !self.release
            && self.seen_signal_version.is_none()
            && self.output.is_none()
            && self.next_run_input.is_none()
    }
}

/// A signal sent as part of a commit (a child's result to its parent).
#[derive(Clone, Debug)]
pub struct OutgoingSignal {
    pub target: String,
    pub name: String,
    pub payload: Value,
}

/// One workflow's durable progress: applied only if the writer still holds the lease epoch.
#[derive(Clone, Debug)]
pub struct Commit {
    pub id: String,
    pub owner: String,
    pub epoch: i64,
    pub wall_now: i64,
    pub events: Vec<Event>,
    pub row: RowUpdate,
    pub consume_signal: Option<i64>,
    pub send_signals: Vec<OutgoingSignal>,
    /// The writer's promise that the journal row already holds this checkpoint except for the
    /// step, its sequence, attempt and update time, which the single event (a completed step)
    /// carries. A journal may then append the event, fenced, without rewriting the row; readers
    /// derive the checkpoint from the latest step event. Journals may ignore it.
    pub append_only: bool,
}

impl Commit {
    /// The completed step this commit appends without rewriting the row, when it may: the writer
    /// promised the row holds the rest of the checkpoint, and the commit changes nothing else.
    /// Such a commit is not announced to other engines (see [`Journal::changes`]).
    pub fn appended_step(&self) -> Option<&Event> {
        match self.events.as_slice() {
            [event]
                if self.append_only
                    && self.row.is_plain()
                    && self.row.published.is_none()
                    && self.consume_signal.is_none()
                    && self.send_signals.is_empty()
                    && event.op == crate::Op::Step
                    && matches!(event.record, crate::Record::StepDone { result: Ok(_), .. }) =>
            {
                Some(event)
            }
            _ => None,
        }
    }
}

/// The oldest unconsumed signal of a name, and the workflow's signal version when looked up.
#[derive(Clone, Debug)]
pub struct SignalLookup {
    pub signal: Option<(i64, Value)>,
    pub version: i64,
}

/// A lease renewal's view of one owned workflow.
#[derive(Clone, Debug)]
pub struct Renewed {
    pub id: String,
    pub cancel_requested: bool,
}

/// A journal row as administrative tools show it.
#[derive(Clone, Debug)]
pub struct WorkflowRow {
    pub checkpoint: crate::Checkpoint,
    pub input: Value,
    pub output: Option<Value>,
    pub epoch: i64,
    pub takeovers: i32,
    pub cancel_requested: bool,
    /// When the owner's lease runs out (wall clock, epoch ms); None when nobody holds one.
    pub lease_expires_at: Option<i64>,
}

/// The input a run of a workflow started with.
#[derive(Clone, Debug, PartialEq)]
pub struct RunInput {
    pub run: i64,
    pub input: Value,
    pub started_at: i64,
}

#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Inserts workflows; an id that exists is returned as it is, or restarted as a new run
    /// when `reuse` allows.
    async fn create(&self, workflows: &[NewWorkflow], reuse: IdReuse, now: i64) -> Result<Vec<crate::Started>>;
    /// Claims runnable workflows and expired leases for `req.owner`, bumping each epoch.
    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>>;
    /// Loads the history of the given runs, ordered.
    async fn histories(&self, runs: &[(String, i64)]) -> Result<Vec<(String, Vec<Event>)>>;
    /// Applies commits atomically, in one transaction; returns per commit whether its fence held.
    async fn commit(&self, batch: &[Commit]) -> Result<Vec<bool>>;
    /// Applies commits like `commit`, then claims like `claim`, in one round trip where the
    /// journal can: a workflow's end and the claim of the next share a commit. A failed claim
    /// does not fail the commits (it returns no claims).
    async fn commit_and_claim(&self, batch: &[Commit], claim: &ClaimRequest) -> Result<(Vec<bool>, Vec<Claimed>)> {
        let applied = self.commit(batch).await?;
        let claimed = self.claim(claim).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "claiming after a commit failed; the claim loop will retry");
            Vec::new()
        });
        Ok((applied, claimed))
    }
    /// Extends every lease `owner` still holds; returns them.
    async fn renew(&self, owner: &str, until: i64) -> Result<Vec<Renewed>>;
    /// Gives up one lease (or all of `owner`'s when `id` is None); they become runnable at once.
    async fn release(&self, owner: &str, id: Option<&str>) -> Result<()>;
    async fn find_signal(&self, id: &str, name: &str) -> Result<SignalLookup>;
    /// Stores a signal for a workflow and wakes it if it waits for one.
    async fn send_signal(&self, id: &str, name: &str, payload: &Value, now: i64) -> Result<()>;
    /// Makes an active workflow that sleeps or waits run now: it replays and, unless `cancel`
    /// (which also requests cooperative cancellation), returns to its wait.
    async fn wake(&self, id: &str, cancel: bool, now: i64) -> Result<()>;
    /// Makes a Failed or NonDeterministic workflow runnable again, dropping its terminal failure
    /// record so the failed step runs anew.
    async fn retry(&self, id: &str, now: i64) -> Result<()>;
    async fn get(&self, id: &str) -> Result<Option<WorkflowRow>>;
    async fn list(&self, state: Option<State>, limit: i64) -> Result<Vec<WorkflowRow>>;
    /// All records of every run of a workflow, ordered.
    async fn history(&self, id: &str) -> Result<Vec<Event>>;
    /// The recorded input of each run of a workflow, by run. Runs that began before journals
    /// recorded inputs are missing, except the one that was current then.
    async fn runs(&self, id: &str) -> Result<Vec<RunInput>>;
    /// Resolves when another process may have made work runnable (best effort; the engine also
    /// polls). The default never resolves.
    async fn wait_for_wakeup(&self) {
        futures::future::pending::<()>().await
    }
    /// Ids of workflows whose checkpoint or published state changed from now on: those this
    /// journal wrote (creations and restarts, commits, administrative retries) as they commit
    /// and, where several processes share the journal, those the others wrote except their
    /// completed steps' appends. A receiver that falls behind gets `RecvError::Lagged` and
    /// should then re-read everything it follows.
    fn changes(&self) -> broadcast::Receiver<String>;
}

/// A workflow's complete recorded history: each run with its input and its records.
pub async fn export(journal: &dyn Journal, id: &str) -> Result<History> {
    let row = journal.get(id).await?.ok_or_else(|| crate::Error::NotFound(id.to_string()))?;
    let mut runs: std::collections::BTreeMap<i64, RunHistory> = journal
        .runs(id)
        .await?
        .into_iter()
        .map(|r| (r.run, RunHistory { run: r.run, input: Some(r.input), events: Vec::new() }))
        .collect();
    for event in journal.history(id).await? {
        let run =
            runs.entry(event.run).or_insert_with(|| RunHistory { run: event.run, input: None, events: Vec::new() });
        run.events.push(event);
    }
    let checkpoint = row.checkpoint;
    Ok(History {
        format: History::FORMAT,
        id: checkpoint.id,
        workflow: checkpoint.workflow,
        version: checkpoint.version,
        app_version: checkpoint.app_version,
        max_app_version: checkpoint.max_app_version,
        runs: runs.into_values().collect(),
    })
}

/// Where a journal announces the ids of workflows it changed.
#[derive(Clone)]
pub(crate) struct ChangeFeed(broadcast::Sender<String>);

impl ChangeFeed {
    pub(crate) fn new() -> Self {
        ChangeFeed(broadcast::channel(CHANGES_CAPACITY).0)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.0.subscribe()
    }

    pub(crate) fn announce<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        if self.0.receiver_count() == 0 {
            return;
        }
        for id in ids {
            // Receivers may all have gone meanwhile: nobody to tell is not an error.
            let _ = self.0.send(id.to_string());
        }
    }

    /// Announces the workflows of the commits that were applied.
    pub(crate) fn announce_applied(&self, batch: &[Commit], applied: &[bool]) {
        self.announce(batch.iter().zip(applied).filter(|(_, ok)| **ok).map(|(c, _)| c.id.as_str()));
    }
}

/// Refuses ids longer than [`MAX_ID_BYTES`].
pub(crate) fn check_ids(workflows: &[NewWorkflow]) -> Result<()> {
    match workflows.iter().find(|w| w.id.len() > MAX_ID_BYTES) {
        Some(w) => Err(crate::Error::IdTooLong { bytes: w.id.len(), max: MAX_ID_BYTES }),
        None => Ok(()),
    }
}

/// Checks a SQL identifier for the journal's schema; it is also quoted where used.
pub(crate) fn validate_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 { Ok(()) } else { Err(crate::Error::BadSchema(schema.to_string())) }
}

fn corrupt(message: impl std::fmt::Display) -> crate::Error {
    crate::Error::Json(serde::de::Error::custom(message))
}

fn parse_json(text: Option<&str>) -> Result<Option<Value>> {
    Ok(text.map(serde_json::from_str).transpose()?)
}

fn parse_state(state: &str) -> Result<State> {
    state.parse().map_err(corrupt)
}

/// Workflow types as the journals filter on them: `name@version`.
fn type_keys(types: &[(String, i32)]) -> Vec<String> {
    types.iter().map(|(name, version)| format!("{name}@{version}")).collect()
}

/// The columns every journal selects for a [`WorkflowRow`] (JSON as text).
#[derive(sqlx::FromRow)]
struct RawRow {
    id: String,
    name: String,
    version: i32,
    run: i64,
    state: String,
    reason: Option<String>,
    input: String,
    output: Option<String>,
    parent_id: Option<String>,
    step_name: Option<String>,
    step_seq: Option<i64>,
    attempt: i32,
    last_error: Option<String>,
    wake_at: i64,
    lease_owner: Option<String>,
    epoch: i64,
    takeovers: i32,
    cancel_requested: bool,
    created_at: i64,
    updated_at: i64,
    published: Option<String>,
    lease_expires_at: Option<i64>,
    app_version: Option<String>,
    max_app_version: Option<String>,
}

impl TryFrom<RawRow> for WorkflowRow {
    type Error = crate::Error;
    fn try_from(raw: RawRow) -> Result<Self> {
        let state = parse_state(&raw.state)?;
        let waits = matches!(state, State::Sleeping | State::WaitingSignal) || raw.attempt > 1;
        let next_attempt_at = (waits && raw.wake_at > 0 && raw.wake_at != NEVER).then_some(raw.wake_at);
        Ok(WorkflowRow {
            checkpoint: crate::Checkpoint {
                id: raw.id,
                workflow: raw.name,
                version: raw.version,
                run: raw.run,
                state,
                reason: raw.reason,
                step: raw.step_name,
                step_seq: raw.step_seq,
                attempt: raw.attempt,
                next_attempt_at,
                last_error: raw.last_error,
                parent: raw.parent_id,
                owner: raw.lease_owner,
                created_at: raw.created_at,
                updated_at: raw.updated_at,
                published: parse_json(raw.published.as_deref())?,
                app_version: raw.app_version,
                max_app_version: raw.max_app_version,
            },
            input: serde_json::from_str(&raw.input)?,
            output: parse_json(raw.output.as_deref())?,
            epoch: raw.epoch,
            takeovers: raw.takeovers,
            cancel_requested: raw.cancel_requested,
            lease_expires_at: raw.lease_expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct RawRunInput {
    run: i64,
    input: String,
    started_at: i64,
}

impl TryFrom<RawRunInput> for RunInput {
    type Error = crate::Error;
    fn try_from(raw: RawRunInput) -> Result<Self> {
        Ok(RunInput { run: raw.run, input: serde_json::from_str(&raw.input)?, started_at: raw.started_at })
    }
}

#[derive(sqlx::FromRow)]
struct RawEvent {
    workflow_id: String,
    run: i64,
    seq: i64,
    idx: i32,
    kind: String,
    name: String,
    payload: String,
    epoch: i64,
    owner: Option<String>,
    at: i64,
}

impl RawEvent {
    fn parse(self) -> Result<(String, Event)> {
        let event = Event {
            run: self.run,
            seq: self.seq,
            idx: self.idx,
            op: self.kind.parse().map_err(corrupt)?,
            name: self.name,
            record: serde_json::from_str(&self.payload)?,
            epoch: self.epoch,
            owner: self.owner,
            at: self.at,
        };
        Ok((self.workflow_id, event))
    }
}

/// Groups ordered event rows by workflow, in the order the runs were asked for.
fn group_events(runs: &[(String, i64)], rows: Vec<RawEvent>) -> Result<Vec<(String, Vec<Event>)>> {
    let mut by_id: std::collections::HashMap<String, Vec<Event>> = std::collections::HashMap::new();
    for row in rows {
        let (id, event) = row.parse()?;
        by_id.entry(id).or_default().push(event);
    }
    Ok(runs.iter().map(|(id, _)| (id.clone(), by_id.remove(id).unwrap_or_default())).collect())
}

#[derive(sqlx::FromRow)]
struct RawClaim {
    id: String,
    name: String,
    version: i32,
    run: i64,
    state: String,
    input: String,
    parent_id: Option<String>,
    epoch: i64,
    cancel_requested: bool,
    taken_from: Option<String>,
    created_at: i64,
    has_history: bool,
    plain: bool,
    published: Option<String>,
    app_version: Option<String>,
    max_app_version: Option<String>,
}

impl TryFrom<RawClaim> for Claimed {
    type Error = crate::Error;
    fn try_from(raw: RawClaim) -> Result<Self> {
        Ok(Claimed {
            state: parse_state(&raw.state)?,
            input: serde_json::from_str(&raw.input)?,
            id: raw.id,
            name: raw.name,
            version: raw.version,
            run: raw.run,
            parent: raw.parent_id,
            epoch: raw.epoch,
            cancel_requested: raw.cancel_requested,
            taken_from: raw.taken_from,
            created_at: raw.created_at,
            has_history: raw.has_history,
            plain: raw.plain,
            published: parse_json(raw.published.as_deref())?,
            app_version: raw.app_version,
            max_app_version: raw.max_app_version,
        })
    }
}

/// What `retry` does to a workflow, decided the same way for every journal.
struct RetryPlan {
    state: State,
    run: i64,
    /// The first sequence number of the run to forget, so the failed step (or, when no step
    /// failed, the failing end of the run) executes again. None for a non-deterministic workflow,
    /// whose fixed code replays its whole history.
    forget_from: Option<i64>,
}

async fn plan_retry(journal: &dyn Journal, id: &str) -> Result<RetryPlan> {
    let row = journal.get(id).await?.ok_or_else(|| crate::Error::NotFound(id.to_string()))?;
    let (state, run) = (row.checkpoint.state, row.checkpoint.run);
    let forget_from = match state {
        State::Failed => {
            let history = journal.history(id).await?;
            let run_events = history.iter().filter(|e| e.run == run);
            let failed_step = run_events
                .clone()
                .filter(|e| matches!(&e.record, crate::Record::StepDone { result: Err(_), .. }))
                .map(|e| e.seq)
                .next_back();
            failed_step.or_else(|| run_events.filter(|e| e.op == crate::Op::Finish).map(|e| e.seq).min())
        }
        State::NonDeterministic => None,
        _ => {
            let needed = "Failed or NonDeterministic";
            return Err(crate::Error::WrongState { id: id.into(), state, action: "retry", needed });
        }
    };
    Ok(RetryPlan { state, run, forget_from })
}

/// The signal a child's end sends to its parent.
pub(crate) fn child_signal_name(child: &str) -> String {
    format!("__child:{child}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(validate_schema("cellplane").is_ok());
        assert!(validate_schema("_t1").is_ok());
        for bad in ["", "1abc", "Cell", "a-b", "a\"; drop table x; --", &"a".repeat(64)] {
            assert!(validate_schema(bad).is_err(), "{bad:?} accepted");
        }
    }
}
