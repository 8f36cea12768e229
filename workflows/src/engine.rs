//! The engine: registers workflows, claims runnable ones under a lease, runs them as tasks,
//! group-commits their progress and publishes their checkpoints.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::{Clock, SystemClock, wall_ms};
use crate::context::{Ctx, Halt};
use crate::journal::{ClaimRequest, Claimed, Commit, Journal, NewWorkflow, WorkflowRow};
use crate::{
    AppVersion, Checkpoint, Error, Event, History, IdReuse, Metrics, Outcome, Result, Started, State, WfError,
};

/// A workflow: an async function over a [`Ctx`], registered by name and version.
pub trait Workflow: Send + Sync + 'static {
    const NAME: &'static str;
    /// Bump when a change to the code would not replay old histories the same way; engines
    /// only claim workflows of the versions they register.
    const VERSION: i32 = 1;
    type Input: Serialize + DeserializeOwned + Send + 'static;
    type Output: Serialize + DeserializeOwned + Send + 'static;

    fn run(
        self: Arc<Self>,
        ctx: Ctx,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, WfError>> + Send + 'static;
}

pub(crate) type ErasedWorkflow = Arc<dyn Fn(Ctx, Value) -> BoxFuture<'static, Result<Value, WfError>> + Send + Sync>;

pub(crate) fn erase<W: Workflow>(workflow: Arc<W>) -> ErasedWorkflow {
    Arc::new(move |ctx, input| {
        let workflow = workflow.clone();
        Box::pin(async move {
            let input: W::Input = serde_json::from_value(input)?;
            let output = workflow.run(ctx, input).await?;
            Ok(serde_json::to_value(output)?)
        })
    })
}

/// How an engine runs. The defaults suit one operator replica.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This engine's identity in leases; unique among live engines. The default is the pod name
    /// plus the process id and a random suffix. An engine releases, when it starts, any lease
    /// still held under its own id (left by an earlier process with the same identity), so a
    /// restarted process with a stable id resumes its workflows at once.
    pub owner: String,
    /// How long a claim lasts without renewal; renewed every third of it.
    pub lease: Duration,
    /// How often to look for runnable workflows when nothing wakes the engine sooner.
    pub poll_interval: Duration,
    /// Workflows held in memory and executing at once.
    pub max_concurrent: usize,
    /// Workflows claimed per journal round trip.
    pub claim_batch: usize,
    /// Waits shorter than this stay in memory; longer ones release the workflow until due.
    pub resident_wait: Duration,
    /// Commits per group commit at most.
    pub commit_batch: usize,
    /// Group commits in flight at once.
    pub committers: usize,
    /// How long `shutdown` waits for running steps to finish.
    pub shutdown_grace: Duration,
    /// How long a workflow whose write the journal refused or failed waits before it runs again
    /// (from its history, so nothing is lost).
    pub journal_retry: Duration,
    /// The version of the application this engine runs in (`MAJOR.MINOR.PATCH`; see
    /// [`crate::AppVersion`]); the default is this crate's version, so pass your own crate's
    /// `env!("CARGO_PKG_VERSION")`. Each workflow records the version that started it and the
    /// highest that ran it; an engine never claims a workflow that a newer version started or
    /// ran, whose history may hold operations its code does not know. A newer engine runs what
    /// older ones wrote (patches, [`crate::Ctx::patched`], keep that safe).
    pub app_version: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            owner: default_owner(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_concurrent: 10_000,
            claim_batch: 500,
            resident_wait: Duration::from_secs(5),
            commit_batch: 1_000,
            committers: 2,
            shutdown_grace: Duration::from_secs(30),
            journal_retry: Duration::from_secs(1),
            app_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

fn default_owner() -> String {
    let host =
        std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "engine".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

pub(crate) enum CommitOutcome {
    Applied,
    Fenced,
    Failed(String),
}

impl From<bool> for CommitOutcome {
    fn from(applied: bool) -> Self {
        if applied { CommitOutcome::Applied } else { CommitOutcome::Fenced }
    }
}

pub(crate) type CommitRequest = (Commit, oneshot::Sender<CommitOutcome>);

/// Counts a commit as pending while it lives.
struct PendingCommit<'a> {
    count: &'a AtomicUsize,
    alone: bool,
}

impl<'a> PendingCommit<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let alone = count.fetch_add(1, Ordering::SeqCst) == 0;
        PendingCommit { count, alone }
    }
}

impl Drop for PendingCommit<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Resident {
    epoch: i64,
    cancel: CancellationToken,
    lost: CancellationToken,
}

pub(crate) struct Shared {
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    /// `config.app_version`, parsed.
    pub(crate) app_version: AppVersion,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: CancellationToken,
    killed: CancellationToken,
    pub(crate) wake: Notify,
    progress: broadcast::Sender<Checkpoint>,
    commits: mpsc::UnboundedSender<CommitRequest>,
    workflows: HashMap<(String, i32), ErasedWorkflow>,
    /// Group commits in flight (plus one held by the committer while it waits for work).
    commit_slots: Arc<Semaphore>,
    /// Commits submitted and not yet answered.
    pending_commits: AtomicUsize,
    /// The registered types, as claims filter on them.
    types: Vec<(String, i32)>,
    /// Held while claiming, from the claim loop or with a commit, so that two claims never count
    /// the same free capacity.
    claiming: tokio::sync::Mutex<()>,
    resident: Mutex<HashMap<String, Resident>>,
    idle: Notify,
}

impl Shared {
    /// The engine's state, and the receiving end of its commit queue.
    pub(crate) fn new(
        journal: Arc<dyn Journal>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        metrics: Metrics,
        workflows: HashMap<(String, i32), ErasedWorkflow>,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<CommitRequest>)> {
        let app_version = AppVersion::parse(&config.app_version)?;
        let (commits, commit_rx) = mpsc::unbounded_channel();
        let committers = config.committers.max(1);
        let shared = Arc::new(Shared {
            journal,
            clock,
            config,
            app_version,
            metrics,
            shutdown: CancellationToken::new(),
            killed: CancellationToken::new(),
            wake: Notify::new(),
            progress: broadcast::channel(4096).0,
            commits,
            commit_slots: Arc::new(Semaphore::new(committers)),
            pending_commits: AtomicUsize::new(0),
            types: workflows.keys().cloned().collect(),
            workflows,
            claiming: tokio::sync::Mutex::new(()),
            resident: Mutex::new(HashMap::new()),
            idle: Notify::new(),
        });
        Ok((shared, commit_rx))
    }

    pub(crate) async fn commit(self: &Arc<Self>, commit: Commit) -> CommitOutcome {
        // Alone, a commit has nothing to wait for in a batch: apply it from this task, sparing
        // the hand-offs to the committer and back. Others arriving meanwhile batch as usual.
        if self.killed.is_cancelled() {
            return CommitOutcome::Failed("the engine was aborted".into());
        }
        let pending = PendingCommit::enter(&self.pending_commits);
        if pending.alone
            && let Ok(slot) = self.commit_slots.try_acquire()
        {
            let (outcomes, claimed) = apply_batch(self, std::slice::from_ref(&commit)).await;
            drop(slot);
            drop(pending);
            start_claimed(self, claimed).await;
            return outcomes.into_iter().next().unwrap_or_else(|| CommitOutcome::Failed("no commit outcome".into()));
        }
        let (tx, rx) = oneshot::channel();
        if self.commits.send((commit, tx)).is_err() {
            return CommitOutcome::Failed("the engine's committer has stopped".into());
        }
        rx.await.unwrap_or_else(|_| CommitOutcome::Failed("the engine's committer has stopped".into()))
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.is_cancelled()
    }

    /// Sends a checkpoint to whoever called [`Engine::subscribe`].
    pub(crate) fn show(&self, checkpoint: Checkpoint) {
        // No subscriber is not an error.
        let _ = self.progress.send(checkpoint);
    }

    fn resident_ids(&self) -> HashSet<String> {
        self.lock_resident().keys().cloned().collect()
    }

    fn lock_resident(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resident>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.resident.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct EngineBuilder {
    journal: Arc<dyn Journal>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    workflows: HashMap<(String, i32), ErasedWorkflow>,
    registry: Option<prometheus::Registry>,
}

impl EngineBuilder {
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Registers the engine's metrics in `registry` (else in a private one).
    pub fn metrics(mut self, registry: &prometheus::Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    pub fn register<W: Workflow>(mut self, workflow: W) -> Self {
        self.workflows.insert((W::NAME.to_string(), W::VERSION), erase(Arc::new(workflow)));
        self
    }

    /// Starts the workers: claiming, lease renewal and group commit. Fails on an
    /// `app_version` that is not `MAJOR.MINOR.PATCH`.
    pub fn start(self) -> Result<Engine> {
        let registry = self.registry.unwrap_or_default();
        let metrics = Metrics::new(&registry)?;
        let (shared, commit_rx) = Shared::new(self.journal, self.clock, self.config, metrics, self.workflows)?;
        let mut tasks = JoinSet::new();
        tasks.spawn(group_commit(shared.clone(), commit_rx));
        tasks.spawn(claim_loop(shared.clone()));
        tasks.spawn(lease_loop(shared.clone()));
        Ok(Engine { shared, tasks: tokio::sync::Mutex::new(tasks) })
    }
}

/// A running engine. Cheap to share behind an `Arc`.
pub struct Engine {
    shared: Arc<Shared>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

impl Engine {
    pub fn builder(journal: Arc<dyn Journal>) -> EngineBuilder {
        EngineBuilder {
            journal,
            config: EngineConfig::default(),
            clock: Arc::new(SystemClock),
            workflows: HashMap::new(),
            registry: None,
        }
    }

    pub fn owner(&self) -> &str {
        &self.shared.config.owner
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.shared.journal
    }

    /// Starts workflow `W` under `id`; an existing id is returned as it is.
    pub async fn start<W: Workflow>(&self, id: &str, input: &W::Input) -> Result<Started> {
        self.start_with::<W>(id, input, IdReuse::ReturnExisting).await
    }

    pub async fn start_with<W: Workflow>(&self, id: &str, input: &W::Input, reuse: IdReuse) -> Result<Started> {
        let started = self.start_many::<W>(&[(id.to_string(), serde_json::to_value(input)?)], reuse).await?;
        started.into_iter().next().ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Starts many workflows of one type in one journal transaction.
    pub async fn start_many<W: Workflow>(&self, items: &[(String, Value)], reuse: IdReuse) -> Result<Vec<Started>> {
        let new: Vec<NewWorkflow> = items
            .iter()
            .map(|(id, input)| NewWorkflow {
                id: id.clone(),
                name: W::NAME.to_string(),
                version: W::VERSION,
                input: input.clone(),
                parent: None,
                app_version: self.shared.app_version.clone(),
            })
            .collect();
        let started = self.shared.journal.create(&new, reuse, self.shared.clock.now_ms()).await?;
        self.shared.wake.notify_one();
        Ok(started)
    }

    /// Sends a signal; it is kept until the workflow waits for it.
    pub async fn signal<T: Serialize>(&self, id: &str, name: &str, payload: &T) -> Result<()> {
        if name.starts_with("__") {
            return Err(Error::ReservedSignal(name.to_string()));
        }
        let payload = serde_json::to_value(payload)?;
        self.shared.journal.send_signal(id, name, &payload, wall_ms()).await?;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Runs a sleeping or waiting workflow now, without a signal: it replays (running again
    /// whatever its code does outside steps, such as publishing in-memory state) and returns to
    /// its wait. For state lost with a restart; nothing is left behind in the journal.
    pub async fn wake(&self, id: &str) -> Result<()> {
        self.shared.journal.wake(id, false, wall_ms()).await?;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Requests cooperative cancellation: the workflow's next durable operation returns
    /// `WfError::Cancelled`, after which it may run cleanup steps.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        self.shared.journal.wake(id, true, wall_ms()).await?;
        if let Some(resident) = self.shared.lock_resident().get(id) {
            resident.cancel.cancel();
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The workflow's checkpoint. When it is active but left for an engine newer than this one
    /// (see [`EngineConfig::app_version`]), its reason says so first.
    pub async fn checkpoint(&self, id: &str) -> Result<Option<Checkpoint>> {
        Ok(self.shared.journal.get(id).await?.map(|row| self.with_hold(row)))
    }

    fn with_hold(&self, row: WorkflowRow) -> Checkpoint {
        let held = held_for_newer(&row, &self.shared.app_version, wall_ms());
        let mut checkpoint = row.checkpoint;
        if let Some(held) = held {
            checkpoint.reason = Some(match checkpoint.reason {
                Some(reason) => format!("{held}; {reason}"),
                None => held,
            });
        }
        checkpoint
    }

    /// A workflow's complete recorded history, as a document for [`crate::Replayer`].
    pub async fn export(&self, id: &str) -> Result<History> {
        crate::journal::export(self.shared.journal.as_ref(), id).await
    }

    /// The outcome of a finished workflow, or None while it is still active.
    pub async fn outcome(&self, id: &str) -> Result<Option<Outcome>> {
        let row = self.shared.journal.get(id).await?.ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(row.checkpoint.state.is_finished().then_some(Outcome {
            state: row.checkpoint.state,
            output: row.output,
            reason: row.checkpoint.reason,
        }))
    }

    /// Waits for a workflow to finish and returns its output.
    pub async fn result<W: Workflow>(&self, id: &str) -> Result<W::Output> {
        let mut progress = self.subscribe();
        loop {
            if let Some(outcome) = self.outcome(id).await? {
                return match (outcome.state, outcome.output) {
                    (State::Completed, Some(output)) => Ok(serde_json::from_value(output)?),
                    (state, _) => Err(Error::Unsuccessful {
                        id: id.to_string(),
                        state,
                        reason: outcome.reason.unwrap_or_default(),
                    }),
                };
            }
            // Re-read on our own progress events; poll for engines elsewhere.
            let _ = tokio::time::timeout(self.shared.config.poll_interval, async {
                loop {
                    match progress.recv().await {
                        Ok(cp) if cp.id == id && cp.state.is_finished() => return,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            futures::future::pending::<()>().await;
                        }
                    }
                }
            })
            .await;
        }
    }

    /// Checkpoints of workflows this engine runs, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<Checkpoint> {
        self.shared.progress.subscribe()
    }

    /// Ids of workflows whose checkpoint or published state changed in the journal from now on,
    /// whichever engine changed them: read them again with [`Engine::checkpoint`]. This engine's
    /// journal announces its own writes as they commit (every step included); on PostgreSQL it
    /// also announces those of other engines on the same schema, except their completed steps'
    /// appends. An id may come more than once for one change. On `RecvError::Lagged`, some ids
    /// were missed: re-read everything you follow.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.shared.journal.changes()
    }

    /// Workflows this engine holds in memory right now.
    pub fn running(&self) -> usize {
        self.shared.lock_resident().len()
    }

    /// Stops claiming, lets running steps finish, releases every lease and stops the workers.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + self.shared.config.shutdown_grace;
        while self.running() > 0 {
            let idle = self.shared.idle.notified();
            if self.running() == 0 || tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        if let Err(e) = self.shared.journal.release(self.owner(), None).await {
            tracing::warn!(error = %e, "could not release leases at shutdown; they expire on their own");
        }
        self.tasks.lock().await.abort_all();
    }

    /// Stops everything at once without writing anything more, as if the process died: leases
    /// stay until they expire. For failure drills and tests; use `shutdown` otherwise.
    pub async fn abort(&self) {
        self.shared.killed.cancel();
        self.tasks.lock().await.abort_all();
    }
}

async fn group_commit(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<CommitRequest>) {
    loop {
        let Ok(slot) = shared.commit_slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < shared.config.commit_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let (commits, replies): (Vec<Commit>, Vec<_>) = batch.into_iter().unzip();
            let (outcomes, claimed) = apply_batch(&shared, &commits).await;
            drop(slot);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
            start_claimed(&shared, claimed).await;
        });
    }
}

/// Applies a batch of commits in one journal transaction. A workflow that lets go of its lease
/// alone in its batch leaves room: its successor is claimed in the same round trip (unless the
/// claim loop is claiming right now; it then sees the room itself) and returned registered as
/// resident. Larger batches leave claims to the claim loop, so that no commit waits for a claim.
async fn apply_batch(shared: &Arc<Shared>, commits: &[Commit]) -> (Vec<CommitOutcome>, Vec<Run>) {
    let releasing = commits.iter().filter(|c| c.row.release).count();
    let claims = commits.len() == 1 && releasing == 1 && !shared.types.is_empty() && !shared.killed.is_cancelled();
    let claim_guard = if claims { shared.claiming.try_lock().ok() } else { None };
    let claim = claim_guard.as_ref().and_then(|_| claim_request(shared, releasing));
    let timer = shared.metrics.commit_seconds.start_timer();
    let (result, claimed) = match &claim {
        Some(req) => match shared.journal.commit_and_claim(commits, req).await {
            Ok((applied, claimed)) => (Ok(applied), claimed),
            Err(e) => {
                tracing::debug!(error = %e, "commit with a claim failed; committing alone");
                (shared.journal.commit(commits).await, Vec::new())
            }
        },
        None => (shared.journal.commit(commits).await, Vec::new()),
    };
    timer.observe_duration();
    let claimed = register_all(shared, claimed);
    drop(claim_guard);
    shared.metrics.commit_batch_size.observe(commits.len() as f64);
    let outcomes: Vec<CommitOutcome> = match result {
        Ok(applied) => applied.into_iter().map(CommitOutcome::from).collect(),
        // One bad commit must not fail the others that shared its transaction.
        Err(e) if commits.len() > 1 => {
            tracing::warn!(error = %e, commits = commits.len(), "group commit failed; committing one by one");
            let mut outcomes = Vec::with_capacity(commits.len());
            for commit in commits {
                outcomes.push(match shared.journal.commit(std::slice::from_ref(commit)).await {
                    Ok(applied) => CommitOutcome::from(applied.first().copied().unwrap_or(false)),
                    Err(e) => CommitOutcome::Failed(e.to_string()),
                });
            }
            outcomes
        }
        Err(e) => vec![CommitOutcome::Failed(e.to_string())],
    };
    for outcome in &outcomes {
        if matches!(outcome, CommitOutcome::Fenced) {
            shared.metrics.fenced_writes.inc();
        }
    }
    (outcomes, claimed)
}

async fn start_claimed(shared: &Arc<Shared>, claimed: Vec<Run>) {
    if !claimed.is_empty()
        && let Err(e) = launch(shared, claimed).await
    {
        tracing::warn!(error = %e, "starting workflows claimed with a commit failed; they were released");
    }
}

async fn claim_loop(shared: Arc<Shared>) {
    if shared.types.is_empty() {
        return;
    }
    if let Err(e) = shared.journal.release(&shared.config.owner, None).await {
        tracing::warn!(error = %e, "could not release leases of an earlier process with this owner id");
    }
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = shared.journal.wait_for_wakeup() => {}
        }
        if let Err(e) = claim_available(&shared).await {
            tracing::warn!(error = %e, "claiming workflows failed; retrying at the next poll");
        }
    }
}

/// A claim for the room this engine has, counting `leaving` workflows about to let go as gone.
fn claim_request(shared: &Shared, leaving: usize) -> Option<ClaimRequest> {
    let room = (shared.config.max_concurrent + leaving).saturating_sub(shared.lock_resident().len());
    let limit = room.min(shared.config.claim_batch);
    if limit == 0 || shared.shutdown.is_cancelled() {
        return None;
    }
    let wall_now = wall_ms();
    Some(ClaimRequest {
        owner: shared.config.owner.clone(),
        app_version: shared.app_version.clone(),
        types: shared.types.clone(),
        limit: limit as i64,
        clock_now: shared.clock.now_ms(),
        wall_now,
        lease_until: wall_now + shared.config.lease.as_millis() as i64,
    })
}

async fn claim_available(shared: &Arc<Shared>) -> Result<()> {
    loop {
        let guard = shared.claiming.lock().await;
        let Some(req) = claim_request(shared, 0) else { return Ok(()) };
        let claimed = shared.journal.claim(&req).await?;
        let (count, limit) = (claimed.len(), req.limit as usize);
        let runs = register_all(shared, claimed);
        drop(guard);
        launch(shared, runs).await?;
        if count < limit {
            return Ok(());
        }
    }
}

type Run = (Claimed, CancellationToken, CancellationToken);

fn register_all(shared: &Shared, claimed: Vec<Claimed>) -> Vec<Run> {
    claimed.into_iter().map(|c| register_resident(shared, c)).collect()
}

/// Loads the histories of registered claims and runs them; on failure lets them all go.
/// Boxed: workflows launch others when their commits claim them, and the cycle needs a named type.
fn launch(shared: &Arc<Shared>, runs: Vec<Run>) -> BoxFuture<'static, Result<()>> {
    let shared = shared.clone();
    Box::pin(async move {
        let shared = &shared;
        let replays: Vec<(String, i64)> =
            runs.iter().filter(|(c, ..)| c.has_history).map(|(c, ..)| (c.id.clone(), c.run)).collect();
        let loaded = if replays.is_empty() { Ok(Vec::new()) } else { shared.journal.histories(&replays).await };
        let mut histories: HashMap<String, Vec<Event>> = match loaded {
            Ok(histories) => histories.into_iter().collect(),
            Err(e) => {
                for (c, ..) in &runs {
                    forget_resident(shared, &c.id, c.epoch);
                    shared.journal.release(&shared.config.owner, Some(&c.id)).await.ok();
                }
                return Err(e);
            }
        };
        for (claimed, cancel, lost) in runs {
            let history = histories.remove(&claimed.id).unwrap_or_default();
            let span = tracing::info_span!("workflow", id = %claimed.id, workflow = %claimed.name, run = claimed.run);
            tokio::spawn(run_workflow(shared.clone(), claimed, history, cancel, lost).instrument(span));
        }
        Ok(())
    })
}

/// Records a claimed workflow as held here before anything else happens, so lease renewal never
/// mistakes it for a stray lease.
fn register_resident(shared: &Shared, claimed: Claimed) -> Run {
    let cancel = CancellationToken::new();
    let lost = CancellationToken::new();
    if claimed.cancel_requested {
        cancel.cancel();
    }
    shared
        .lock_resident()
        .insert(claimed.id.clone(), Resident { epoch: claimed.epoch, cancel: cancel.clone(), lost: lost.clone() });
    shared.metrics.running.inc();
    if let Some(previous) = &claimed.taken_from {
        shared.metrics.lease_takeovers.inc();
        tracing::info!(id = %claimed.id, %previous, "took over a workflow whose lease expired");
    }
    (claimed, cancel, lost)
}

fn forget_resident(shared: &Shared, id: &str, epoch: i64) {
    let mut resident = shared.lock_resident();
    if resident.get(id).is_some_and(|r| r.epoch == epoch) {
        resident.remove(id);
        shared.metrics.running.dec();
    }
    if resident.is_empty() {
        shared.idle.notify_waiters();
    }
}

async fn run_workflow(
    shared: Arc<Shared>,
    claimed: Claimed,
    history: Vec<Event>,
    cancel: CancellationToken,
    lost: CancellationToken,
) {
    let (id, epoch) = (claimed.id.clone(), claimed.epoch);
    let workflow = shared.workflows.get(&(claimed.name.clone(), claimed.version)).cloned();
    let (halt_tx, halt_rx) = oneshot::channel();
    let ctx = Ctx::new(shared.clone(), &claimed, history, cancel, lost.clone(), halt_tx);
    if !claimed.has_history {
        shared.metrics.started.with_label_values(&[&claimed.name]).inc();
    }
    ctx.publish_running();
    let halted = match workflow {
        None => {
            ctx.finish(Err(WfError::failed(format!(
                "no workflow {}@{} is registered with this engine",
                claimed.name, claimed.version
            ))))
            .await;
            None
        }
        Some(workflow) => {
            let run = workflow(ctx.clone(), claimed.input);
            tokio::select! {
                result = run => { ctx.finish(result).await; None }
                halt = halt_rx => halt.ok(),
                _ = lost.cancelled() => Some(Halt::LeaseLost),
                _ = shared.killed.cancelled() => return,
            }
        }
    };
    if shared.killed.is_cancelled() {
        // Aborted while the workflow was halting: write nothing more, as if the process died.
        return;
    }
    match halted {
        None | Some(Halt::Evicted) | Some(Halt::ReplayEnded) => {}
        Some(Halt::LeaseLost) => tracing::warn!("lease lost to another engine; stopped without writing"),
        Some(Halt::NonDeterministic(divergence)) => ctx.mark_non_deterministic(divergence.to_string()).await,
        Some(Halt::Journal(error)) => {
            let after = shared.config.journal_retry;
            tracing::warn!(%error, "journal write failed; the workflow runs again in {after:?}");
            shared.metrics.journal_write_failures.inc();
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = shared.shutdown.cancelled() => {}
            }
            if let Err(e) = shared.journal.release(&shared.config.owner, Some(&id)).await {
                tracing::warn!(error = %e, "release failed; the lease will expire");
            }
        }
    }
    forget_resident(&shared, &id, epoch);
    shared.wake.notify_one();
}

/// Why an active workflow waits for an engine newer than `this` one: a newer version started or
/// ran it, and no live lease holds it.
fn held_for_newer(row: &WorkflowRow, this: &AppVersion, wall_now: i64) -> Option<String> {
    let checkpoint = &row.checkpoint;
    let leased = checkpoint.owner.is_some() && row.lease_expires_at.is_some_and(|until| until >= wall_now);
    if checkpoint.state.is_finished() || leased {
        return None;
    }
    let newest = AppVersion::parse(checkpoint.max_app_version.as_deref()?).ok()?;
    (newest.number() > this.number())
        .then(|| format!("held for an engine of version ≥ {newest} (this replica runs {this})"))
}

async fn lease_loop(shared: Arc<Shared>) {
    let every = shared.config.lease / 3;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let before = shared.resident_ids();
        let until = wall_ms() + shared.config.lease.as_millis() as i64;
        let renewed = match shared.journal.renew(&shared.config.owner, until).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                continue;
            }
        };
        let renewed_ids: HashSet<&str> = renewed.iter().map(|r| r.id.as_str()).collect();
        let after = shared.resident_ids();
        for lost in before.iter().filter(|id| !renewed_ids.contains(id.as_str())) {
            if let Some(resident) = shared.lock_resident().get(lost) {
                resident.lost.cancel();
            }
        }
        for r in &renewed {
            if !after.contains(&r.id) {
                // Owned in the journal but not running here (e.g. a commit failed): hand it back.
                if let Err(e) = shared.journal.release(&shared.config.owner, Some(&r.id)).await {
                    tracing::warn!(error = %e, id = %r.id, "could not release a stray lease");
                }
            } else if r.cancel_requested
                && let Some(resident) = shared.lock_resident().get(&r.id)
            {
                resident.cancel.cancel();
            }
        }
    }
}
