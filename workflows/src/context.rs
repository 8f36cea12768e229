//! What a workflow function works with: [`Ctx`] and its durable operations. Each operation gets
//! the next sequence number of the run; on replay it returns what the history recorded for that
//! number, and a record of another kind or name stops the workflow as non-deterministic.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clock::wall_ms;
use crate::engine::{CommitOutcome, Shared, Workflow};
use crate::journal::{Claimed, Commit, NEVER, NewWorkflow, OutgoingSignal, RowUpdate, child_signal_name};
use crate::types::PATCH_PREFIX;
use crate::{Checkpoint, Event, IdReuse, IdempotencyKey, Op, Outcome, Record, RetryPolicy, State, StepError, WfError};

/// Why a workflow task stopped without finishing.
#[derive(Debug)]
pub(crate) enum Halt {
    /// It waits durably (a long timer, a signal) and left memory until due.
    Evicted,
    /// Another engine owns it now; nothing more may be written.
    LeaseLost,
    NonDeterministic(Divergence),
    Journal(String),
    /// Replay only: the code asked for an operation the history does not hold (it stopped there).
    ReplayEnded,
}

/// Where the code of a run and its recorded history part.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Divergence {
    pub(crate) seq: i64,
    /// The operation the code performs, as [`operation`] names it.
    pub(crate) code: String,
    /// What the history recorded there.
    pub(crate) recorded: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation #{} is now {}, but the history recorded {} there", self.seq, self.code, self.recorded)
    }
}

/// An operation as divergences name it: `step "create-vpc"`, `patch "new-dns"`, `continue-as-new`.
pub(crate) fn operation(op: Op, name: &str) -> String {
    match (op, name.strip_prefix(PATCH_PREFIX)) {
        (Op::Marker, Some(change)) => format!("patch {change:?}"),
        (Op::Finish, _) if name == CONTINUE_AS_NEW => "continue-as-new".to_string(),
        (Op::Finish, _) => format!("the end of the run ({name})"),
        _ => format!("{} {name:?}", op.as_str()),
    }
}

const CONTINUE_AS_NEW: &str = "continue_as_new";

/// The context of one workflow run: the only door to time, randomness and the outside world.
/// Await one durable operation at a time.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    id: String,
    workflow: String,
    run: i64,
    epoch: i64,
    parent: Option<String>,
    history: Mutex<HashMap<i64, Vec<Event>>>,
    recorded_ops: i64,
    next_seq: AtomicI64,
    cancel: CancellationToken,
    cancel_observed: AtomicBool,
    lost: CancellationToken,
    halt: Mutex<Option<oneshot::Sender<Halt>>>,
    checkpoint: Mutex<Checkpoint>,
    /// The journal row holds a plain running checkpoint (see [`RowUpdate::is_plain`]) written by
    /// this run, so a completed step may be appended without rewriting the row.
    row_plain: AtomicBool,
    /// A published state not yet written: the last one published while replaying, or a live one
    /// on its way. The stored one is the checkpoint's.
    unwritten: Mutex<Option<Value>>,
    /// What `patched` answered for each change id in this run: a change takes one path per run.
    patches: Mutex<HashMap<String, bool>>,
    /// Replaying a recorded history for a [`crate::Replayer`]: nothing is executed or written.
    replay_only: bool,
}

/// One durable operation being executed: its sequence number and what history holds for it.
struct Slot {
    seq: i64,
    op: Op,
    name: String,
    records: Vec<Event>,
    next_idx: i32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ctx {
    pub(crate) fn new(
        shared: Arc<Shared>,
        claimed: &Claimed,
        history: Vec<Event>,
        cancel: CancellationToken,
        lost: CancellationToken,
        halt: oneshot::Sender<Halt>,
    ) -> Self {
        Self::build(shared, claimed, history, (cancel, lost), halt, false)
    }

    /// A context that only replays `history`: the run ends (halting with [`Halt::ReplayEnded`])
    /// where the history does.
    pub(crate) fn replaying(
        shared: Arc<Shared>,
        claimed: &Claimed,
        history: Vec<Event>,
        halt: oneshot::Sender<Halt>,
    ) -> Self {
        let tokens = (CancellationToken::new(), CancellationToken::new());
        Self::build(shared, claimed, history, tokens, halt, true)
    }

    fn build(
        shared: Arc<Shared>,
        claimed: &Claimed,
        history: Vec<Event>,
        (cancel, lost): (CancellationToken, CancellationToken),
        halt: oneshot::Sender<Halt>,
        replay_only: bool,
    ) -> Self {
        let recorded_ops = history.iter().map(|e| e.seq + 1).max().unwrap_or(0);
        // A replay shows the last recorded step until a live operation moves on.
        let last_step = history.iter().filter(|e| e.op == Op::Step).max_by_key(|e| e.seq);
        let (step, step_seq) = last_step.map_or((None, None), |e| (Some(e.name.clone()), Some(e.seq)));
        let mut by_seq: HashMap<i64, Vec<Event>> = HashMap::new();
        for event in history {
            by_seq.entry(event.seq).or_default().push(event);
        }
        let checkpoint = Checkpoint {
            id: claimed.id.clone(),
            workflow: claimed.name.clone(),
            version: claimed.version,
            run: claimed.run,
            state: State::Running,
            reason: None,
            step,
            step_seq,
            attempt: 0,
            next_attempt_at: None,
            last_error: None,
            parent: claimed.parent.clone(),
            owner: Some(shared.config.owner.clone()),
            created_at: claimed.created_at,
            updated_at: wall_ms(),
            published: claimed.published.clone(),
            app_version: claimed.app_version.clone(),
            max_app_version: claimed.max_app_version.clone(),
        };
        Ctx {
            inner: Arc::new(Inner {
                shared,
                id: claimed.id.clone(),
                workflow: claimed.name.clone(),
                run: claimed.run,
                epoch: claimed.epoch,
                parent: claimed.parent.clone(),
                history: Mutex::new(by_seq),
                recorded_ops,
                next_seq: AtomicI64::new(0),
                cancel,
                cancel_observed: AtomicBool::new(false),
                lost,
                halt: Mutex::new(Some(halt)),
                checkpoint: Mutex::new(checkpoint),
                row_plain: AtomicBool::new(claimed.plain),
                unwritten: Mutex::new(None),
                patches: Mutex::new(HashMap::new()),
                replay_only,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn run_number(&self) -> i64 {
        self.inner.run
    }

    /// True while the next operation will return a recorded result instead of executing.
    pub fn is_replaying(&self) -> bool {
        self.inner.next_seq.load(Ordering::SeqCst) < self.inner.recorded_ops
    }

    /// A step: `ctx.step("create-vpc").retry(policy).timeout(d).run(|key| async { ... }).await`.
    pub fn step(&self, name: impl Into<String>) -> Step<'_> {
        Step { ctx: self, name: name.into(), policy: RetryPolicy::default(), timeout: None }
    }

    /// Sleeps durably: survives restarts; a timer that came due while no engine ran fires at once.
    pub async fn sleep(&self, duration: Duration) -> Result<(), WfError> {
        self.timer(|now| now.saturating_add(duration.as_millis() as i64)).await
    }

    /// Sleeps durably until a point in time.
    pub async fn sleep_until(&self, at: SystemTime) -> Result<(), WfError> {
        let at_ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.timer(|_| at_ms).await
    }

    /// Waits for a signal sent with `Engine::signal` (kept if sent earlier). With a timeout,
    /// returns None once it passes.
    pub async fn wait_signal<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<T>, WfError> {
        if name.starts_with("__") {
            return Err(WfError::failed(format!("signal names starting with \"__\" are reserved: {name:?}")));
        }
        let value = self.wait_signal_value(name, timeout).await?;
        Ok(value.map(serde_json::from_value).transpose()?)
    }

    /// Starts a child workflow (or finds it, if the id exists); its result reaches this workflow
    /// whenever it finishes.
    pub async fn start_child<W: Workflow>(&self, id: &str, input: &W::Input) -> Result<(), WfError> {
        let mut slot = self.begin(Op::Child, id).await;
        match slot.records.last().map(|e| &e.record) {
            Some(Record::ChildStarted { .. }) => return Ok(()),
            Some(Record::Cancelled) => return Err(WfError::Cancelled),
            Some(other) => return self.unexpected(&slot, other).await,
            None => {}
        }
        if self.cancel_pending() {
            return Err(self.observe_cancel(&mut slot, Vec::new()).await);
        }
        self.ensure_live().await;
        let child = NewWorkflow {
            id: id.to_string(),
            name: W::NAME.to_string(),
            version: W::VERSION,
            input: serde_json::to_value(input)?,
            parent: Some(self.inner.id.clone()),
            app_version: self.inner.shared.app_version.clone(),
        };
        let shared = &self.inner.shared;
        if let Err(e) = shared.journal.create(&[child], IdReuse::ReturnExisting, shared.clock.now_ms()).await {
            return self.halt(Halt::Journal(e.to_string())).await;
        }
        let events = self.events(&mut slot, vec![Record::ChildStarted { workflow: W::NAME.to_string() }]);
        self.commit(events, self.row(State::Running, None), None).await;
        shared.wake.notify_one();
        Ok(())
    }

    /// Waits for a child workflow started with [`Ctx::start_child`] and returns its output.
    pub async fn child_result<W: Workflow>(&self, id: &str) -> Result<W::Output, WfError> {
        let payload = self.wait_signal_value(&child_signal_name(id), None).await?.unwrap_or(Value::Null);
        let outcome: Outcome = serde_json::from_value(payload)?;
        match outcome.state {
            State::Completed => Ok(serde_json::from_value(outcome.output.unwrap_or(Value::Null))?),
            state => Err(WfError::Child { id: id.to_string(), state, reason: outcome.reason.unwrap_or_default() }),
        }
    }

    /// Starts a child workflow and waits for its output.
    pub async fn child<W: Workflow>(&self, id: &str, input: &W::Input) -> Result<W::Output, WfError> {
        self.start_child::<W>(id, input).await?;
        self.child_result::<W>(id).await
    }

    /// The current time, recorded so that replay sees the same value.
    pub async fn now(&self) -> Result<SystemTime, WfError> {
        let ms: i64 = self.marker("now", || self.inner.shared.clock.now_ms()).await?;
        Ok(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
    }

    /// A random number, recorded so that replay sees the same value.
    pub async fn random_u64(&self) -> Result<u64, WfError> {
        self.marker("random", rand::random::<u64>).await
    }

    /// A random UUID, recorded so that replay sees the same value.
    pub async fn uuid(&self) -> Result<String, WfError> {
        self.marker("uuid", || uuid::Uuid::new_v4().to_string()).await
    }

    /// Whether this run takes the new path of a change to the workflow's code. A run that is
    /// executing live records a patch marker here and takes it (true); so does a run whose history
    /// recorded this patch's marker at this point. A run replaying a history that reached this
    /// point without the marker takes the old path (false): nothing is recorded, and the
    /// operation that follows keeps this sequence number, so the old path's operations line up
    /// with the old history. A change id answers once per run: later calls repeat the answer.
    ///
    /// ```no_run
    /// # async fn provision(ctx: cellplane_workflows::Ctx) -> Result<(), cellplane_workflows::WfError> {
    /// if ctx.patched("dns-before-certs").await? {
    ///     ctx.step("dns").run(|_| async { Ok(()) }).await?;
    /// }
    /// ctx.step("certs").run(|_| async { Ok(()) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn patched(&self, change: &str) -> Result<bool, WfError> {
        if let Some(known) = lock(&self.inner.patches).get(change) {
            return Ok(*known);
        }
        let applies = self.patch_marker(change).await?;
        lock(&self.inner.patches).insert(change.to_string(), applies);
        Ok(applies)
    }

    /// [`Ctx::patched`] for a change that once shipped without its marker: a history without the
    /// marker took the new path too when the operation it recorded here is the new path's first
    /// step, `first_step`. Runs from now on record the marker, so once no history lacks it the
    /// call can become `patched(change)`.
    pub async fn patched_since_step(&self, change: &str, first_step: &str) -> Result<bool, WfError> {
        if let Some(known) = lock(&self.inner.patches).get(change) {
            return Ok(*known);
        }
        let applies = self.patch_marker(change).await? || self.recorded_next(Op::Step, first_step);
        lock(&self.inner.patches).insert(change.to_string(), applies);
        Ok(applies)
    }

    /// Whether the history recorded an operation `op` named `name` as the next one.
    fn recorded_next(&self, op: Op, name: &str) -> bool {
        let seq = self.inner.next_seq.load(Ordering::SeqCst);
        let history = lock(&self.inner.history);
        history.get(&seq).and_then(|records| records.first()).is_some_and(|e| e.op == op && e.name == name)
    }

    /// Whether ending the run here with [`Ctx::continue_as_new`] is deterministic: true executing
    /// live, and replaying a history that recorded the run's end at this point; false replaying
    /// one that went on. A patch answers the same throughout a run, so a run that replayed a
    /// history from before the patch stays on the old path: ending it here, once live, lets the
    /// next run (same state, new history) take the new one.
    pub fn may_continue_as_new_here(&self) -> bool {
        !self.is_replaying() || self.recorded_next(Op::Finish, CONTINUE_AS_NEW)
    }

    /// Marks where a patch was, once no run that took its old path remains and the old path is
    /// gone from the code: consumes the patch's marker when the history has it here, records it
    /// when executing live (so that histories made now still replay on code that calls
    /// [`Ctx::patched`]), and never fails when an older history lacks it. Remove the call itself
    /// only when no history holds the marker any more: a marker that no code asks for is a
    /// non-deterministic change.
    pub async fn deprecate_patch(&self, change: &str) -> Result<(), WfError> {
        self.patched(change).await.map(|_| ())
    }

    /// Consumes or records the marker of a patch; false when history reached here without it.
    async fn patch_marker(&self, change: &str) -> Result<bool, WfError> {
        let name = format!("{PATCH_PREFIX}{change}");
        let seq = self.inner.next_seq.load(Ordering::SeqCst);
        if seq < self.inner.recorded_ops {
            let history = lock(&self.inner.history);
            let recorded = history.get(&seq).and_then(|records| records.first());
            if !recorded.is_some_and(|e| e.op == Op::Marker && e.name == name) {
                return Ok(false);
            }
        }
        let mut slot = self.begin(Op::Marker, &name).await;
        match slot.records.last().map(|e| &e.record) {
            Some(Record::Marker { .. }) => return Ok(true),
            Some(other) => return self.unexpected(&slot, other).await,
            None => {}
        }
        let events = self.events(&mut slot, vec![Record::patch(change)]);
        self.commit(events, self.row(State::Running, None), None).await;
        Ok(true)
    }

    /// Replaces this workflow's published state: what it wants others to see (a phase, the ids of
    /// what it created). Readable by id from any engine in the checkpoint, and announced on
    /// `Engine::changes`; kept across continue-as-new and after the workflow ends. Returns once
    /// durable. It is not history: a replay publishes again, but only the last value published
    /// while replaying is written, when the replay ends, so others never see the state go back.
    /// A value equal to the stored one is not written.
    pub async fn publish(&self, state: &impl Serialize) -> Result<(), WfError> {
        let value = serde_json::to_value(state)?;
        if self.inner.replay_only {
            return Ok(());
        }
        if self.stage_publish(value) && !self.is_replaying() {
            self.write_published().await;
        }
        Ok(())
    }

    /// Ends this run and starts the next with `input` and an empty history (same id). Never
    /// returns `Ok`; write `return ctx.continue_as_new(&state).await;`.
    pub async fn continue_as_new<I: Serialize, T>(&self, input: &I) -> Result<T, WfError> {
        let input = serde_json::to_value(input)?;
        let mut slot = self.begin(Op::Finish, CONTINUE_AS_NEW).await;
        if self.inner.replay_only {
            // The history recorded this run's end here.
            return self.halt(Halt::ReplayEnded).await;
        }
        let mut row = self.row(State::Pending, Some("continued as new".into()));
        row.release = true;
        row.next_run_input = Some(input);
        let events = self.events(&mut slot, vec![Record::ContinuedAsNew]);
        self.commit(events, row, None).await;
        self.inner.shared.wake.notify_one();
        self.halt(Halt::Evicted).await
    }

    async fn timer(&self, until: impl FnOnce(i64) -> i64) -> Result<(), WfError> {
        let mut slot = self.begin(Op::Timer, "sleep").await;
        let mut records = Vec::new();
        let until = match slot.records.last().map(|e| &e.record) {
            Some(Record::Cancelled) => return Err(WfError::Cancelled),
            // Replayed, a started timer fired: the history goes on past it.
            Some(Record::TimerStarted { .. }) if self.inner.replay_only => return Ok(()),
            Some(Record::TimerStarted { until }) => *until,
            Some(other) => return self.unexpected(&slot, other).await,
            None => {
                let at = until(self.now_ms());
                records.push(Record::TimerStarted { until: at });
                at
            }
        };
        if self.cancel_pending() {
            return Err(self.observe_cancel(&mut slot, records).await);
        }
        if self.now_ms() >= until {
            if !records.is_empty() {
                let events = self.events(&mut slot, records);
                self.commit(events, self.row(State::Running, None), None).await;
            }
            return Ok(());
        }
        let reason = format!("sleeping until {}", format_ms(until));
        match self.pause(&mut slot, records, self.row(State::Sleeping, Some(reason)), until).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.observe_cancel(&mut slot, Vec::new()).await),
        }
    }

    async fn wait_signal_value(&self, name: &str, timeout: Option<Duration>) -> Result<Option<Value>, WfError> {
        let mut slot = self.begin(Op::Signal, name).await;
        let mut records = Vec::new();
        let mut started = None;
        for event in &slot.records {
            match &event.record {
                Record::SignalReceived { payload } => return Ok(Some(payload.clone())),
                Record::SignalTimedOut => return Ok(None),
                Record::Cancelled => return Err(WfError::Cancelled),
                Record::SignalWait { deadline } => started = Some(*deadline),
                other => return self.unexpected(&slot, other).await,
            }
        }
        let deadline = started.unwrap_or_else(|| {
            let deadline = timeout.map(|d| self.now_ms().saturating_add(d.as_millis() as i64));
            records.push(Record::SignalWait { deadline });
            deadline
        });
        if self.cancel_pending() {
            return Err(self.observe_cancel(&mut slot, records).await);
        }
        self.ensure_live().await;
        let lookup = match self.inner.shared.journal.find_signal(&self.inner.id, name).await {
            Ok(lookup) => lookup,
            Err(e) => return self.halt(Halt::Journal(e.to_string())).await,
        };
        if let Some((signal_id, payload)) = lookup.signal {
            records.push(Record::SignalReceived { payload: payload.clone() });
            let events = self.events(&mut slot, records);
            self.commit(events, self.row(State::Running, None), Some(signal_id)).await;
            return Ok(Some(payload));
        }
        if deadline.is_some_and(|d| self.now_ms() >= d) {
            records.push(Record::SignalTimedOut);
            let events = self.events(&mut slot, records);
            self.commit(events, self.row(State::Running, None), None).await;
            return Ok(None);
        }
        let waiting_for = match name.strip_prefix("__child:") {
            Some(child) => format!("waiting for child workflow {child:?}"),
            None => format!("waiting for signal {name:?}"),
        };
        let reason = match deadline {
            Some(d) => format!("{waiting_for} until {}", format_ms(d)),
            None => waiting_for,
        };
        let mut row = self.row(State::WaitingSignal, Some(reason));
        row.wake_at = deadline.unwrap_or(NEVER);
        row.release = true;
        row.seen_signal_version = Some(lookup.version);
        let events = self.events(&mut slot, records);
        self.commit(events, row, None).await;
        self.halt(Halt::Evicted).await
    }

    async fn marker<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        make: impl FnOnce() -> T,
    ) -> Result<T, WfError> {
        let mut slot = self.begin(Op::Marker, name).await;
        match slot.records.last().map(|e| &e.record) {
            Some(Record::Marker { value }) => return Ok(serde_json::from_value(value.clone())?),
            Some(other) => return self.unexpected(&slot, other).await,
            None => {}
        }
        let value = make();
        let events = self.events(&mut slot, vec![Record::Marker { value: serde_json::to_value(&value)? }]);
        self.commit(events, self.row(State::Running, None), None).await;
        Ok(value)
    }

    // ---- plumbing shared by the operations ----

    fn now_ms(&self) -> i64 {
        self.inner.shared.clock.now_ms()
    }

    async fn begin(&self, op: Op, name: &str) -> Slot {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::SeqCst);
        let replay_only = self.inner.replay_only;
        if replay_only && seq >= self.inner.recorded_ops {
            return self.halt(Halt::ReplayEnded).await;
        }
        if seq == self.inner.recorded_ops && lock(&self.inner.unwritten).is_some() {
            // The replay is over: what it published last is the state to show from now on.
            self.write_published().await;
        }
        let records = lock(&self.inner.history).remove(&seq).unwrap_or_default();
        if let Some(first) = records.first()
            && (first.op != op || first.name != name)
        {
            let divergence = Divergence { seq, code: operation(op, name), recorded: operation(first.op, &first.name) };
            return self.halt(Halt::NonDeterministic(divergence)).await;
        }
        if replay_only && seq + 1 == self.inner.recorded_ops && !records.iter().any(|e| e.record.is_final()) {
            // The history stopped inside this operation (a wait, a retry's backoff).
            return self.halt(Halt::ReplayEnded).await;
        }
        let next_idx = records.len() as i32;
        Slot { seq, op, name: name.to_string(), records, next_idx }
    }

    async fn unexpected<T>(&self, slot: &Slot, record: &Record) -> T {
        let code = operation(slot.op, &slot.name);
        let recorded = format!("{code} with a record of another kind ({record:?})");
        self.halt(Halt::NonDeterministic(Divergence { seq: slot.seq, code, recorded })).await
    }

    /// Where the run's code ended `ended` (a state) while its history goes on, or recorded
    /// another end.
    pub(crate) fn end_divergence(&self, ended: State) -> Option<Divergence> {
        let seq = self.inner.next_seq.load(Ordering::SeqCst);
        if seq >= self.inner.recorded_ops {
            return None;
        }
        let history = lock(&self.inner.history);
        let recorded = history.get(&seq).and_then(|records| records.first());
        // A live run never replays its own end; a replayed one must end as recorded.
        if self.inner.replay_only && recorded.is_some_and(|e| e.op == Op::Finish && e.name == ended.as_str()) {
            return None;
        }
        let recorded = recorded
            .map_or_else(|| format!("{} operations in all", self.inner.recorded_ops), |e| operation(e.op, &e.name));
        Some(Divergence { seq, code: operation(Op::Finish, ended.as_str()), recorded })
    }

    /// Stops the workflow task: the engine drops this future, so this never returns.
    pub(crate) async fn halt<T>(&self, halt: Halt) -> T {
        if let Some(tx) = lock(&self.inner.halt).take() {
            let _ = tx.send(halt);
        }
        futures::future::pending().await
    }

    fn events(&self, slot: &mut Slot, records: Vec<Record>) -> Vec<Event> {
        let at = wall_ms();
        records
            .into_iter()
            .map(|record| {
                let idx = slot.next_idx;
                slot.next_idx += 1;
                Event {
                    run: self.inner.run,
                    seq: slot.seq,
                    idx,
                    op: slot.op,
                    name: slot.name.clone(),
                    record,
                    epoch: self.inner.epoch,
                    owner: Some(self.inner.shared.config.owner.clone()),
                    at,
                }
            })
            .collect()
    }

    /// The checkpoint fields for a commit, from the step last started.
    fn row(&self, state: State, reason: Option<String>) -> RowUpdate {
        RowUpdate { reason, ..self.row_of(&lock(&self.inner.checkpoint), state) }
    }

    fn row_of(&self, cp: &Checkpoint, state: State) -> RowUpdate {
        RowUpdate {
            step: cp.step.clone(),
            step_seq: cp.step_seq,
            attempt: cp.attempt,
            last_error: cp.last_error.clone(),
            ..RowUpdate::new(state)
        }
    }

    /// Keeps `value` to be written unless it is the stored state; says whether it is kept.
    fn stage_publish(&self, value: Value) -> bool {
        let stored = lock(&self.inner.checkpoint).published.as_ref() == Some(&value);
        let mut unwritten = lock(&self.inner.unwritten);
        *unwritten = (!stored).then_some(value);
        unwritten.is_some()
    }

    /// Commits the checkpoint as it is, with the unwritten published state.
    async fn write_published(&self) {
        self.ensure_live().await;
        let row = {
            let cp = lock(&self.inner.checkpoint);
            RowUpdate { reason: cp.reason.clone(), ..self.row_of(&cp, cp.state) }
        };
        self.commit(Vec::new(), row, None).await;
    }

    /// A commit of `row`, carrying the unwritten published state if there is one.
    fn commit_request(&self, events: Vec<Event>, mut row: RowUpdate, consume_signal: Option<i64>) -> Commit {
        row.published = lock(&self.inner.unwritten).take();
        Commit {
            id: self.inner.id.clone(),
            owner: self.inner.shared.config.owner.clone(),
            epoch: self.inner.epoch,
            wall_now: wall_ms(),
            events,
            row,
            consume_signal,
            send_signals: Vec::new(),
            append_only: false,
        }
    }

    /// Commits durably before the workflow goes on; halts the task if the lease is gone.
    async fn commit(&self, events: Vec<Event>, row: RowUpdate, consume_signal: Option<i64>) {
        if self.inner.replay_only {
            return self.halt(Halt::Journal("a replay tried to write to the journal".into())).await;
        }
        let mut request = self.commit_request(events, row, consume_signal);
        let plain = request.row.is_plain();
        request.append_only = plain && self.inner.row_plain.load(Ordering::SeqCst);
        let update = request.row.clone();
        match self.inner.shared.commit(request).await {
            CommitOutcome::Applied => {
                self.inner.row_plain.store(plain, Ordering::SeqCst);
                self.show(&update)
            }
            CommitOutcome::Fenced => self.halt(Halt::LeaseLost).await,
            CommitOutcome::Failed(e) => self.halt(Halt::Journal(e)).await,
        }
    }

    fn show(&self, row: &RowUpdate) {
        let mut cp = lock(&self.inner.checkpoint);
        cp.state = row.state;
        cp.reason = row.reason.clone();
        cp.step = row.step.clone();
        cp.step_seq = row.step_seq;
        cp.attempt = row.attempt;
        cp.last_error = row.last_error.clone();
        let waits = matches!(row.state, State::Sleeping | State::WaitingSignal);
        cp.next_attempt_at = (waits && row.wake_at > 0 && row.wake_at != NEVER).then_some(row.wake_at);
        cp.owner = (!row.release).then(|| self.inner.shared.config.owner.clone());
        cp.updated_at = wall_ms();
        if let Some(published) = &row.published {
            cp.published = Some(published.clone());
        }
        self.inner.shared.show(cp.clone());
    }

    pub(crate) fn publish_running(&self) {
        self.show(&self.row(State::Running, None));
    }

    fn start_attempt(&self, step: &str, seq: i64, attempt: i32, last_error: Option<String>) {
        let mut row = self.row(State::Running, None);
        row.step = Some(step.to_string());
        row.step_seq = Some(seq);
        row.attempt = attempt;
        row.last_error = last_error;
        self.show(&row);
    }

    /// A cancellation to observe at this operation: never while replaying operations the history
    /// recorded later ones after (the run went on past them), only at the live frontier.
    fn cancel_pending(&self) -> bool {
        self.inner.cancel.is_cancelled() && !self.inner.cancel_observed.load(Ordering::SeqCst) && !self.is_replaying()
    }

    /// Records that cancellation was observed at this operation (after `records`).
    async fn observe_cancel(&self, slot: &mut Slot, mut records: Vec<Record>) -> WfError {
        self.inner.cancel_observed.store(true, Ordering::SeqCst);
        records.push(Record::Cancelled);
        let events = self.events(slot, records);
        self.commit(events, self.row(State::Running, Some("cancelling".into())), None).await;
        WfError::Cancelled
    }

    /// Before live work: stop if the lease is gone; at shutdown, hand the workflow back.
    async fn ensure_live(&self) {
        if self.inner.lost.is_cancelled() {
            return self.halt(Halt::LeaseLost).await;
        }
        if self.inner.shared.shutdown.is_cancelled() {
            let mut row = self.row(State::Running, Some("released at engine shutdown".into()));
            row.release = true;
            self.commit(Vec::new(), row, None).await;
            return self.halt(Halt::Evicted).await;
        }
    }

    /// Waits until `until` (workflow clock), committing `records` and `row` first. Short waits
    /// stay in memory; long ones release the workflow until due. Err means cancellation.
    async fn pause(&self, slot: &mut Slot, records: Vec<Record>, mut row: RowUpdate, until: i64) -> Result<(), ()> {
        let shared = &self.inner.shared;
        let resident_ms = shared.config.resident_wait.as_millis() as i64;
        let resident = until - self.now_ms() <= resident_ms && !shared.shutdown.is_cancelled();
        row.wake_at = until;
        row.release = !resident;
        if !records.is_empty() || !resident {
            let events = self.events(slot, records);
            self.commit(events, row.clone(), None).await;
        } else {
            self.show(&row);
        }
        if !resident {
            return self.halt(Halt::Evicted).await;
        }
        let cancellable = !self.inner.cancel_observed.load(Ordering::SeqCst);
        tokio::select! {
            _ = shared.clock.sleep_until(until) => {}
            _ = self.inner.cancel.cancelled(), if cancellable => return Err(()),
            _ = shared.shutdown.cancelled() => {
                row.release = true;
                self.commit(Vec::new(), row, None).await;
                return self.halt(Halt::Evicted).await;
            }
        }
        self.show(&self.row(State::Running, None));
        Ok(())
    }

    /// Ends the run with the workflow function's result, telling a parent if there is one.
    pub(crate) async fn finish(&self, result: Result<Value, WfError>) {
        if let Some(divergence) = self.end_divergence(ended_state(&result)) {
            return self.mark_non_deterministic(divergence.to_string()).await;
        }
        let executed = self.inner.next_seq.load(Ordering::SeqCst);
        let (state, record, output, reason) = match result {
            Ok(output) => (State::Completed, Record::Completed { output: output.clone() }, Some(output), None),
            Err(WfError::Cancelled) => {
                (State::Cancelled, Record::WorkflowCancelled, None, Some("cancelled on request".to_string()))
            }
            Err(e) => (State::Failed, Record::Failed { reason: e.to_string() }, None, Some(e.to_string())),
        };
        let metrics = &self.inner.shared.metrics;
        match state {
            State::Completed => metrics.completed.with_label_values(&[&self.inner.workflow]).inc(),
            _ => metrics.failed.with_label_values(&[&self.inner.workflow, state.as_str()]).inc(),
        }
        if let Some(reason) = &reason {
            tracing::warn!(%state, %reason, "workflow ended unsuccessfully");
        }
        let mut slot =
            Slot { seq: executed, op: Op::Finish, name: state.as_str().to_string(), records: Vec::new(), next_idx: 0 };
        let events = self.events(&mut slot, vec![record]);
        let mut row = self.row(state, reason.clone());
        row.release = true;
        row.wake_at = NEVER;
        row.output = output.clone();
        let mut commit = self.commit_request(events, row, None);
        if let Some(parent) = &self.inner.parent {
            commit.send_signals.push(OutgoingSignal {
                target: parent.clone(),
                name: child_signal_name(&self.inner.id),
                payload: serde_json::to_value(Outcome { state, output, reason }).unwrap_or(Value::Null),
            });
        }
        self.final_commit(commit).await;
    }

    pub(crate) async fn mark_non_deterministic(&self, reason: String) {
        tracing::error!(%reason, "workflow stopped: its code no longer matches its history");
        let metrics = &self.inner.shared.metrics;
        metrics.failed.with_label_values(&[&self.inner.workflow, State::NonDeterministic.as_str()]).inc();
        // What a replay that went astray published is not the workflow's state.
        lock(&self.inner.unwritten).take();
        let mut row = self.row(State::NonDeterministic, Some(reason));
        row.release = true;
        row.wake_at = NEVER;
        let commit = self.commit_request(Vec::new(), row, None);
        self.final_commit(commit).await;
    }

    async fn final_commit(&self, commit: Commit) {
        let row = commit.row.clone();
        match self.inner.shared.commit(commit).await {
            CommitOutcome::Applied => self.show(&row),
            CommitOutcome::Fenced => tracing::warn!("lease lost before the workflow's end was recorded"),
            CommitOutcome::Failed(e) => {
                tracing::warn!(error = %e, "could not record the workflow's end; it will replay");
                let shared = &self.inner.shared;
                if !shared.is_killed() {
                    shared.journal.release(&shared.config.owner, Some(&self.inner.id)).await.ok();
                }
            }
        }
    }
}

/// The state a run ends in when its function returns `result`.
pub(crate) fn ended_state(result: &Result<Value, WfError>) -> State {
    match result {
        Ok(_) => State::Completed,
        Err(WfError::Cancelled) => State::Cancelled,
        Err(_) => State::Failed,
    }
}

fn format_ms(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A step being configured; see [`Ctx::step`].
pub struct Step<'a> {
    ctx: &'a Ctx,
    name: String,
    policy: RetryPolicy,
    timeout: Option<Duration>,
}

impl Step<'_> {
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Limits each attempt; an attempt that runs longer fails with kind `timeout` (retryable).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Runs the step body until it succeeds or gives up. The body receives the step's
    /// idempotency key: pass it to the outside world so a re-run has no second effect.
    pub async fn run<T, F, Fut>(self, mut body: F) -> Result<T, WfError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(IdempotencyKey) -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let Step { ctx, name, policy, timeout } = self;
        let mut slot = ctx.begin(Op::Step, &name).await;
        let mut attempt = 0;
        let mut backoff = None;
        for event in &slot.records {
            match &event.record {
                Record::StepDone { result: Ok(value), .. } => return Ok(serde_json::from_value(value.clone())?),
                Record::StepDone { result: Err(error), .. } => {
                    return Err(WfError::Step { step: name, error: error.clone() });
                }
                Record::Cancelled => return Err(WfError::Cancelled),
                Record::StepRetry { attempt: a, next_at, error, .. } => {
                    attempt = *a;
                    backoff = Some((*next_at, error.clone()));
                }
                other => return ctx.unexpected(&slot, other).await,
            }
        }
        let mut last_error = None;
        if let Some((next_at, error)) = backoff {
            // Restarted during backoff: keep the journaled attempt count and next-attempt time.
            ctx.start_attempt(&name, slot.seq, attempt, Some(error.to_string()));
            last_error = Some(error.to_string());
            if ctx.cancel_pending() {
                return Err(ctx.observe_cancel(&mut slot, Vec::new()).await);
            }
            let reason = retry_reason(&name, attempt, &error, next_at);
            if ctx.pause(&mut slot, Vec::new(), ctx.row(State::Sleeping, Some(reason)), next_at).await.is_err() {
                return Err(ctx.observe_cancel(&mut slot, Vec::new()).await);
            }
        }
        let workflow = ctx.inner.workflow.as_str();
        loop {
            if ctx.cancel_pending() {
                return Err(ctx.observe_cancel(&mut slot, Vec::new()).await);
            }
            ctx.ensure_live().await;
            attempt += 1;
            ctx.start_attempt(&name, slot.seq, attempt, last_error.clone());
            let key = IdempotencyKey { workflow_id: ctx.inner.id.clone(), run: ctx.inner.run, seq: slot.seq };
            let span = tracing::info_span!("step", step = %name, seq = slot.seq, attempt);
            let started = Instant::now();
            let body = body(key).instrument(span);
            let outcome = match timeout {
                Some(limit) => {
                    tokio::time::timeout(limit, body).await.unwrap_or_else(|_| Err(StepError::timeout(limit)))
                }
                None => body.await,
            };
            let duration_ms = started.elapsed().as_millis() as i64;
            match outcome {
                Ok(value) => {
                    let result = Ok(serde_json::to_value(&value)?);
                    let events =
                        ctx.events(&mut slot, vec![Record::StepDone { result, attempts: attempt, duration_ms }]);
                    let mut row = ctx.row(State::Running, None);
                    row.last_error = None;
                    ctx.commit(events, row, None).await;
                    ctx.inner
                        .shared
                        .metrics
                        .step_seconds
                        .with_label_values(&[workflow])
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(value);
                }
                Err(error) => {
                    let mut row = ctx.row(State::Running, None);
                    row.last_error = Some(error.to_string());
                    last_error = row.last_error.clone();
                    let gives_up = !error.retryable
                        || policy.non_retryable.contains(&error.kind)
                        || (policy.gives_up_after(attempt as u32) && error.kind != StepError::BLOCKED);
                    if gives_up {
                        let record = Record::StepDone { result: Err(error.clone()), attempts: attempt, duration_ms };
                        let events = ctx.events(&mut slot, vec![record]);
                        ctx.commit(events, row, None).await;
                        return Err(WfError::Step { step: name, error });
                    }
                    let delay = policy.delay(attempt as u32, rand::random::<f64>());
                    let next_at = ctx.now_ms() + delay.as_millis() as i64;
                    ctx.inner.shared.metrics.step_retries.with_label_values(&[workflow]).inc();
                    if error.kind == StepError::WAITING {
                        tracing::debug!(step = %name, attempt, reason = %error, retry_in = ?delay, "step waits");
                    } else {
                        tracing::warn!(step = %name, attempt, error = %error, retry_in = ?delay, "step failed; will retry");
                    }
                    row.state = State::Sleeping;
                    row.reason = Some(retry_reason(&name, attempt, &error, next_at));
                    let record = Record::StepRetry { attempt, error, next_at, duration_ms };
                    if ctx.pause(&mut slot, vec![record], row, next_at).await.is_err() {
                        return Err(ctx.observe_cancel(&mut slot, Vec::new()).await);
                    }
                }
            }
        }
    }
}

fn retry_reason(step: &str, attempt: i32, error: &StepError, next_at: i64) -> String {
    format!("step {step:?} attempt {attempt} failed ({error}); retrying at {}", format_ms(next_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_reasons_read_as_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(1_764_000_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(format_ms(951_825_600_000), "2000-02-29T12:00:00Z");
    }
}
