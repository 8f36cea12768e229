//! The engine's behaviour, each test run against PostgreSQL and against SQLite.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellplane_workflows::journal::{ClaimRequest, Commit, MAX_ID_BYTES, RowUpdate};
use cellplane_workflows::{
    AppVersion, Checkpoint, Ctx, Engine, EngineConfig, Error, Event, IdReuse, Op, Record, RetryPolicy, Started, State,
    StepError, TestClock, WfError, Workflow,
};
use common::*;
use serde_json::json;
use tokio::sync::Notify;
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Counts executions of each step body.
#[derive(Default)]
struct Calls(Mutex<HashMap<String, usize>>);

impl Calls {
    fn hit(&self, step: &str) -> usize {
        let mut calls = self.0.lock().unwrap();
        let count = calls.entry(step.to_string()).or_default();
        *count += 1;
        *count
    }
    fn get(&self, step: &str) -> usize {
        self.0.lock().unwrap().get(step).copied().unwrap_or(0)
    }
}

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        max_attempts,
        jitter: 0.0,
        ..RetryPolicy::default()
    }
}

// ---------------------------------------------------------------------------------------------

/// Three steps; the middle one waits for a gate so tests can crash the engine inside it.
struct ThreeSteps {
    calls: Arc<Calls>,
    gate: Arc<Notify>,
    gate_open: Arc<AtomicBool>,
}

impl Workflow for ThreeSteps {
    const NAME: &'static str = "three-steps";
    type Input = u32;
    type Output = u32;
    async fn run(self: Arc<Self>, ctx: Ctx, input: u32) -> Result<u32, WfError> {
        let calls = self.calls.clone();
        let a: u32 = ctx
            .step("a")
            .run(|_| {
                let calls = calls.clone();
                async move {
                    calls.hit("a");
                    Ok(input + 1)
                }
            })
            .await?;
        let this = self.clone();
        let b: u32 = ctx
            .step("b")
            .run(|_| {
                let this = this.clone();
                async move {
                    this.calls.hit("b");
                    while !this.gate_open.load(Ordering::SeqCst) {
                        let opened = this.gate.notified();
                        if this.gate_open.load(Ordering::SeqCst) {
                            break;
                        }
                        opened.await;
                    }
                    Ok(a * 10)
                }
            })
            .await?;
        let c: u32 = ctx
            .step("c")
            .run(|_| {
                let calls = calls.clone();
                async move {
                    calls.hit("c");
                    Ok(b + 1)
                }
            })
            .await?;
        Ok(c)
    }
}

fn three_steps(open: bool) -> (ThreeSteps, Arc<Calls>, Arc<Notify>, Arc<AtomicBool>) {
    let calls = Arc::new(Calls::default());
    let gate = Arc::new(Notify::new());
    let gate_open = Arc::new(AtomicBool::new(open));
    (ThreeSteps { calls: calls.clone(), gate: gate.clone(), gate_open: gate_open.clone() }, calls, gate, gate_open)
}

async fn steps_run_in_order_and_are_journaled(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let (workflow, calls, ..) = three_steps(true);
    let engine = engine(journal.clone(), "solo").register(workflow).start().unwrap();
    let mut progress = engine.subscribe();

    assert_eq!(engine.start::<ThreeSteps>("w1", &4).await.unwrap(), Started::Created);
    assert_eq!(within(engine.result::<ThreeSteps>("w1")).await.unwrap(), 51);

    let history = journal.history("w1").await.unwrap();
    let steps: Vec<(&str, &Record)> =
        history.iter().filter(|e| e.op == Op::Step).map(|e| (e.name.as_str(), &e.record)).collect();
    assert_eq!(steps.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(matches!(steps[1].1, Record::StepDone { result: Ok(v), attempts: 1, .. } if v == 50));
    assert!(matches!(history.last().map(|e| &e.record), Some(Record::Completed { .. })));
    assert_eq!((calls.get("a"), calls.get("b"), calls.get("c")), (1, 1, 1));

    // Progress events name each step as it starts, then the end.
    let mut seen = Vec::new();
    while let Ok(cp) = progress.try_recv() {
        if cp.id == "w1" {
            seen.push((cp.state, cp.step.clone()));
        }
    }
    assert!(seen.contains(&(State::Running, Some("b".into()))), "{seen:?}");
    assert_eq!(seen.last().map(|(s, _)| *s), Some(State::Completed));
    engine.shutdown().await;
}
both_journals!(steps_run_in_order_and_are_journaled, steps_run_in_order_and_are_journaled);

async fn a_restarted_engine_replays_completed_steps_without_rerunning_them(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let (workflow, calls, gate, gate_open) = three_steps(false);
    let first = engine(journal.clone(), "first").register(workflow).start().unwrap();
    first.start::<ThreeSteps>("w", &1).await.unwrap();
    eventually("step b to start", || async { (calls.get("b") == 1).then_some(()) }).await;
    first.abort().await; // as if the process died inside step b

    let (workflow, ..) = three_steps(true);
    let workflow = ThreeSteps { calls: calls.clone(), ..workflow };
    let second = engine(journal.clone(), "second").register(workflow).start().unwrap();
    gate_open.store(true, Ordering::SeqCst);
    gate.notify_waiters();
    assert_eq!(within(second.result::<ThreeSteps>("w")).await.unwrap(), 21);
    // a completed before the crash and is replayed; b was interrupted and runs again.
    assert_eq!((calls.get("a"), calls.get("b"), calls.get("c")), (1, 2, 1));
    let row = journal.get("w").await.unwrap().unwrap();
    assert_eq!(row.takeovers, 1, "the second engine took over an expired lease");
    second.shutdown().await;
}
both_journals!(
    a_restarted_engine_replays_completed_steps_without_rerunning_them,
    a_restarted_engine_replays_completed_steps_without_rerunning_them
);

// ---------------------------------------------------------------------------------------------

struct WaitsForGo;
impl Workflow for WaitsForGo {
    const NAME: &'static str = "waits-for-go";
    type Input = ();
    type Output = i64;
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<i64, WfError> {
        ctx.step("one").run(|_| async { Ok(1) }).await?;
        let go: Option<i64> = ctx.wait_signal("go", None).await?;
        Ok(go.unwrap_or_default())
    }
}

/// The same name and version with a different first step: a change that breaks replay.
struct WaitsForGoChanged;
impl Workflow for WaitsForGoChanged {
    const NAME: &'static str = "waits-for-go";
    type Input = ();
    type Output = i64;
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<i64, WfError> {
        ctx.step("uno").run(|_| async { Ok(1) }).await?;
        Ok(ctx.wait_signal::<i64>("go", None).await?.unwrap_or_default())
    }
}

async fn changed_code_stops_as_non_deterministic(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let old = engine(journal.clone(), "old").register(WaitsForGo).start().unwrap();
    old.start::<WaitsForGo>("w", &()).await.unwrap();
    let waiting = checkpoint_in(&old, "w", State::WaitingSignal).await;
    assert_eq!(waiting.reason.as_deref(), Some("waiting for signal \"go\""));
    old.shutdown().await;

    let new = engine(journal.clone(), "new").register(WaitsForGoChanged).start().unwrap();
    new.signal("w", "go", &7).await.unwrap();
    let cp = await_finished(&journal, "w").await;
    assert_eq!(cp.state, State::NonDeterministic);
    let reason = cp.reason.unwrap();
    assert!(reason.contains("\"uno\"") && reason.contains("\"one\""), "{reason}");
    new.shutdown().await;
}
both_journals!(changed_code_stops_as_non_deterministic, changed_code_stops_as_non_deterministic);

async fn signals_sent_while_no_engine_runs_are_kept(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    // An engine with no workflows registered runs nothing: it only starts and signals.
    let client = engine(journal.clone(), "client").start().unwrap();
    client.start::<WaitsForGo>("w", &()).await.unwrap();
    client.signal("w", "go", &42).await.unwrap();
    assert!(matches!(client.signal("missing", "go", &1).await, Err(Error::NotFound(_))));
    assert!(matches!(client.signal("w", "__child:x", &1).await, Err(Error::ReservedSignal(_))));

    let worker = engine(journal.clone(), "worker").register(WaitsForGo).start().unwrap();
    assert_eq!(within(worker.result::<WaitsForGo>("w")).await.unwrap(), 42);
    worker.shutdown().await;
}
both_journals!(signals_sent_while_no_engine_runs_are_kept, signals_sent_while_no_engine_runs_are_kept);

async fn a_signal_wakes_a_waiting_workflow(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let engine = engine(journal.clone(), "solo").register(WaitsForGo).start().unwrap();
    engine.start::<WaitsForGo>("w", &()).await.unwrap();
    checkpoint_in(&engine, "w", State::WaitingSignal).await;
    // The wait is journaled before the workflow's task lets go of it.
    eventually("a workflow waiting for a signal to leave memory", || async { (engine.running() == 0).then_some(()) })
        .await;
    engine.signal("w", "go", &5).await.unwrap();
    assert_eq!(within(engine.result::<WaitsForGo>("w")).await.unwrap(), 5);
    engine.shutdown().await;
}
both_journals!(a_signal_wakes_a_waiting_workflow, a_signal_wakes_a_waiting_workflow);

/// Counts its runs (replays included) and waits for "go".
struct CountsRuns(Arc<AtomicUsize>);
impl Workflow for CountsRuns {
    const NAME: &'static str = "counts-runs";
    type Input = ();
    type Output = i64;
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<i64, WfError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        ctx.step("one").run(|_| async { Ok(1) }).await?;
        Ok(ctx.wait_signal::<i64>("go", None).await?.unwrap_or_default())
    }
}

async fn a_woken_workflow_replays_and_returns_to_its_wait(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let engine = engine(journal.clone(), "solo").register(CountsRuns(runs.clone())).start().unwrap();
    engine.start::<CountsRuns>("w", &()).await.unwrap();
    let parked = checkpoint_in(&engine, "w", State::WaitingSignal).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    engine.wake("w").await.unwrap();
    eventually("the woken workflow ran again", || {
        let runs = runs.clone();
        async move { (runs.load(Ordering::SeqCst) == 2).then_some(()) }
    })
    .await;
    let again = checkpoint_in(&engine, "w", State::WaitingSignal).await;
    assert_eq!((again.step, again.step_seq), (parked.step, parked.step_seq), "no new operation was recorded");
    engine.signal("w", "go", &3).await.unwrap();
    assert_eq!(within(engine.result::<CountsRuns>("w")).await.unwrap(), 3, "only the real signal was received");
    assert!(matches!(engine.wake("w").await, Err(Error::WrongState { .. })), "a finished workflow cannot wake");
    engine.shutdown().await;
}
both_journals!(a_woken_workflow_replays_and_returns_to_its_wait, a_woken_workflow_replays_and_returns_to_its_wait);

// ---------------------------------------------------------------------------------------------

struct SleepsAnHour;
impl Workflow for SleepsAnHour {
    const NAME: &'static str = "sleeps-an-hour";
    type Input = ();
    type Output = String;
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<String, WfError> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        let timed_out: Option<String> = ctx.wait_signal("never", Some(Duration::from_secs(60))).await?;
        Ok(timed_out.unwrap_or_else(|| "woke".into()))
    }
}

async fn late_timers_fire_at_once_after_a_restart(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let clock = TestClock::default();
    let first = engine(journal.clone(), "first").clock(clock.clone()).register(SleepsAnHour).start().unwrap();
    first.start::<SleepsAnHour>("w", &()).await.unwrap();
    let sleeping = checkpoint_in(&first, "w", State::Sleeping).await;
    assert!(sleeping.reason.unwrap().starts_with("sleeping until "));
    assert_eq!(sleeping.next_attempt_at, Some(clock.now_ms() + 3_600_000));
    first.shutdown().await;

    // Two hours pass while no engine runs: the timer is late, and fires as soon as one starts.
    clock.advance(Duration::from_secs(7200));
    let second = engine(journal.clone(), "second").clock(clock.clone()).register(SleepsAnHour).start().unwrap();
    let waiting = checkpoint_in(&second, "w", State::WaitingSignal).await;
    assert!(waiting.reason.unwrap().contains("until"), "a wait with a timeout names its deadline");
    clock.advance(Duration::from_secs(61));
    assert_eq!(within(second.result::<SleepsAnHour>("w")).await.unwrap(), "woke");
    second.shutdown().await;
}
both_journals!(late_timers_fire_at_once_after_a_restart, late_timers_fire_at_once_after_a_restart);

use cellplane_workflows::Clock;

// ---------------------------------------------------------------------------------------------

/// Fails its step `failures` times with a transient error before succeeding.
struct Flaky {
    failures: usize,
    calls: Arc<Calls>,
    policy: RetryPolicy,
    keys: Arc<Mutex<Vec<String>>>,
}

impl Workflow for Flaky {
    const NAME: &'static str = "flaky";
    type Input = ();
    type Output = usize;
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<usize, WfError> {
        let this = self.clone();
        ctx.step("call-cloud")
            .retry(self.policy.clone())
            .run(|key| {
                let this = this.clone();
                async move {
                    this.keys.lock().unwrap().push(key.to_string());
                    let n = this.calls.hit("call-cloud");
                    if n <= this.failures { Err(StepError::transient(format!("throttled ({n})"))) } else { Ok(n) }
                }
            })
            .await
    }
}

fn flaky(failures: usize, policy: RetryPolicy) -> (Flaky, Arc<Calls>, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Calls::default());
    let keys = Arc::new(Mutex::new(Vec::new()));
    (Flaky { failures, calls: calls.clone(), policy, keys: keys.clone() }, calls, keys)
}

async fn retry_state_survives_a_restart_during_backoff(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let clock = TestClock::default();
    // Ten-minute backoff: longer than the resident wait, so the workflow leaves memory.
    let policy = RetryPolicy {
        initial_interval: Duration::from_secs(600),
        max_interval: Duration::from_secs(3600),
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    let (workflow, calls, keys) = flaky(2, policy.clone());
    let first = engine(journal.clone(), "first").clock(clock.clone()).register(workflow).start().unwrap();
    first.start::<Flaky>("w", &()).await.unwrap();
    let backing_off = checkpoint_in(&first, "w", State::Sleeping).await;
    assert_eq!(backing_off.attempt, 1);
    assert_eq!(backing_off.last_error.as_deref(), Some("throttled (1)"));
    assert_eq!(backing_off.next_attempt_at, Some(clock.now_ms() + 600_000));
    first.shutdown().await;

    let second = engine(journal.clone(), "second")
        .clock(clock.clone())
        .register(Flaky { failures: 2, calls: calls.clone(), policy, keys: keys.clone() })
        .start()
        .unwrap();
    clock.advance(Duration::from_secs(600));
    let again = eventually("attempt 2 to fail", || async {
        second.checkpoint("w").await.unwrap().filter(|cp| cp.attempt == 2 && cp.state == State::Sleeping)
    })
    .await;
    assert_eq!(again.next_attempt_at, Some(clock.now_ms() + 1_200_000), "backoff doubled: attempt 2 kept its place");
    clock.advance(Duration::from_secs(1200));
    assert_eq!(within(second.result::<Flaky>("w")).await.unwrap(), 3);
    assert_eq!(calls.get("call-cloud"), 3);
    let keys = keys.lock().unwrap().clone();
    assert!(keys.iter().all(|k| *k == keys[0]), "every attempt sees the same idempotency key: {keys:?}");
    let retries: Vec<i32> = journal
        .history("w")
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match &e.record {
            Record::StepRetry { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [1, 2]);
    second.shutdown().await;
}
both_journals!(retry_state_survives_a_restart_during_backoff, retry_state_survives_a_restart_during_backoff);

async fn terminal_errors_and_exhausted_attempts_fail_the_workflow(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let (workflow, calls, _) = flaky(10, quick_retries(3));
    let engine = engine(journal.clone(), "solo").register(workflow).start().unwrap();
    engine.start::<Flaky>("w", &()).await.unwrap();
    match within(engine.result::<Flaky>("w")).await {
        Err(Error::Unsuccessful { state: State::Failed, reason, .. }) => {
            assert!(reason.contains("call-cloud") && reason.contains("throttled (3)"), "{reason}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(calls.get("call-cloud"), 3, "max_attempts bounds the attempts");
    engine.shutdown().await;

    struct Denied(Arc<Calls>);
    impl Workflow for Denied {
        const NAME: &'static str = "denied";
        type Input = bool;
        type Output = ();
        async fn run(self: Arc<Self>, ctx: Ctx, listed_kind: bool) -> Result<(), WfError> {
            let policy = RetryPolicy { non_retryable: vec!["AccessDenied".into()], ..quick_retries(10) };
            let calls = self.0.clone();
            ctx.step("create")
                .retry(policy)
                .run(|_| {
                    let calls = calls.clone();
                    async move {
                        calls.hit("create");
                        Err::<(), _>(if listed_kind {
                            StepError::of_kind("AccessDenied", "not authorized")
                        } else {
                            StepError::terminal("invalid CIDR")
                        })
                    }
                })
                .await
        }
    }
    let calls = Arc::new(Calls::default());
    let engine = common::engine(journal.clone(), "solo2").register(Denied(calls.clone())).start().unwrap();
    engine.start::<Denied>("listed", &true).await.unwrap();
    engine.start::<Denied>("terminal", &false).await.unwrap();
    for id in ["listed", "terminal"] {
        assert_eq!(await_finished(&journal, id).await.state, State::Failed);
    }
    assert_eq!(calls.get("create"), 2, "neither error is retried");
    engine.shutdown().await;
}
both_journals!(
    terminal_errors_and_exhausted_attempts_fail_the_workflow,
    terminal_errors_and_exhausted_attempts_fail_the_workflow
);

/// A blocked step (a missing permission) outlasts its policy's attempts and goes on once
/// someone outside acts.
async fn a_blocked_step_retries_until_it_is_unblocked(postgres: bool) {
    struct Gated(Arc<Calls>, Arc<AtomicBool>);
    impl Workflow for Gated {
        const NAME: &'static str = "gated";
        type Input = ();
        type Output = usize;
        async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<usize, WfError> {
            let (calls, granted) = (self.0.clone(), self.1.clone());
            ctx.step("write-secret")
                .retry(quick_retries(2))
                .run(|_| {
                    let (calls, granted) = (calls.clone(), granted.clone());
                    async move {
                        let attempt = calls.hit("write-secret");
                        match granted.load(Ordering::SeqCst) {
                            true => Ok(attempt),
                            false => Err(StepError::blocked("secrets is forbidden")),
                        }
                    }
                })
                .await
        }
    }
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let (calls, granted) = (Arc::new(Calls::default()), Arc::new(AtomicBool::new(false)));
    let engine = engine(journal.clone(), "solo").register(Gated(calls.clone(), granted.clone())).start().unwrap();
    engine.start::<Gated>("w", &()).await.unwrap();
    let blocked = eventually("attempts past the policy's limit", || async {
        let cp = engine.checkpoint("w").await.unwrap()?;
        (calls.get("write-secret") > 4).then_some(cp)
    })
    .await;
    assert!(!blocked.state.is_finished(), "a blocked step never gives up: {blocked:?}");
    assert!(blocked.last_error.as_deref().is_some_and(|e| e.contains("forbidden")), "{blocked:?}");
    granted.store(true, Ordering::SeqCst);
    assert!(within(engine.result::<Gated>("w")).await.unwrap() > 4);
    engine.shutdown().await;
}
both_journals!(a_blocked_step_retries_until_it_is_unblocked, a_blocked_step_retries_until_it_is_unblocked);

async fn a_step_timeout_is_a_retryable_failure(postgres: bool) {
    struct Slow(Arc<Calls>);
    impl Workflow for Slow {
        const NAME: &'static str = "slow";
        type Input = ();
        type Output = usize;
        async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<usize, WfError> {
            let calls = self.0.clone();
            ctx.step("probe")
                .retry(quick_retries(5))
                .timeout(Duration::from_millis(50))
                .run(|_| {
                    let calls = calls.clone();
                    async move {
                        let n = calls.hit("probe");
                        if n == 1 {
                            futures::future::pending::<()>().await;
                        }
                        Ok(n)
                    }
                })
                .await
        }
    }
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let calls = Arc::new(Calls::default());
    let engine = engine(journal.clone(), "solo").register(Slow(calls.clone())).start().unwrap();
    engine.start::<Slow>("w", &()).await.unwrap();
    assert_eq!(within(engine.result::<Slow>("w")).await.unwrap(), 2);
    let history = journal.history("w").await.unwrap();
    assert!(history.iter().any(|e| matches!(&e.record, Record::StepRetry { error, .. } if error.kind == "timeout")));
    engine.shutdown().await;
}
both_journals!(a_step_timeout_is_a_retryable_failure, a_step_timeout_is_a_retryable_failure);

// ---------------------------------------------------------------------------------------------

/// Step "b" fails terminally while `broken` is set.
struct Fragile {
    broken: Arc<AtomicBool>,
    calls: Arc<Calls>,
}
impl Workflow for Fragile {
    const NAME: &'static str = "fragile";
    type Input = ();
    type Output = String;
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<String, WfError> {
        let calls = self.calls.clone();
        ctx.step("a")
            .run(|_| {
                let calls = calls.clone();
                async move {
                    calls.hit("a");
                    Ok(())
                }
            })
            .await?;
        let this = self.clone();
        ctx.step("b")
            .run(|_| {
                let this = this.clone();
                async move {
                    this.calls.hit("b");
                    if this.broken.load(Ordering::SeqCst) {
                        Err(StepError::terminal("quota exceeded"))
                    } else {
                        Ok("ok".to_string())
                    }
                }
            })
            .await
    }
}

async fn retry_reruns_a_failed_workflow_from_the_failed_step(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let broken = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(Calls::default());
    let engine = engine(journal.clone(), "solo")
        .register(Fragile { broken: broken.clone(), calls: calls.clone() })
        .start()
        .unwrap();
    engine.start::<Fragile>("w", &()).await.unwrap();
    let failed = await_finished(&journal, "w").await;
    assert_eq!(failed.state, State::Failed);
    assert!(failed.reason.unwrap().contains("quota exceeded"));
    assert!(matches!(journal.retry("nope", 0).await, Err(Error::NotFound(_))));

    broken.store(false, Ordering::SeqCst);
    journal.retry("w", 0).await.unwrap();
    assert!(matches!(journal.retry("w", 0).await, Err(Error::WrongState { .. })), "only a failed workflow is retried");
    assert_eq!(within(engine.result::<Fragile>("w")).await.unwrap(), "ok");
    assert_eq!((calls.get("a"), calls.get("b")), (1, 2), "a is replayed, b runs again");
    engine.shutdown().await;
}
both_journals!(
    retry_reruns_a_failed_workflow_from_the_failed_step,
    retry_reruns_a_failed_workflow_from_the_failed_step
);

async fn an_existing_id_is_returned_and_reuse_policy_restarts_finished_ones(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let (workflow, calls, ..) = three_steps(true);
    let engine = engine(journal.clone(), "solo").register(workflow).start().unwrap();
    assert_eq!(engine.start::<ThreeSteps>("w", &1).await.unwrap(), Started::Created);
    assert!(matches!(engine.start::<ThreeSteps>("w", &2).await.unwrap(), Started::Existing(_)));
    assert_eq!(within(engine.result::<ThreeSteps>("w")).await.unwrap(), 21, "the first input is kept");
    assert_eq!(engine.start::<ThreeSteps>("w", &2).await.unwrap(), Started::Existing(State::Completed));
    assert_eq!(
        engine.start_with::<ThreeSteps>("w", &2, IdReuse::RestartIfFailed).await.unwrap(),
        Started::Existing(State::Completed)
    );
    assert_eq!(engine.start_with::<ThreeSteps>("w", &2, IdReuse::RestartIfFinished).await.unwrap(), Started::Restarted);
    assert_eq!(within(engine.result::<ThreeSteps>("w")).await.unwrap(), 31);
    assert_eq!(engine.checkpoint("w").await.unwrap().unwrap().run, 2);
    assert_eq!(calls.get("a"), 2);
    engine.shutdown().await;
}
both_journals!(
    an_existing_id_is_returned_and_reuse_policy_restarts_finished_ones,
    an_existing_id_is_returned_and_reuse_policy_restarts_finished_ones
);

// ---------------------------------------------------------------------------------------------

struct Child;
impl Workflow for Child {
    const NAME: &'static str = "child";
    type Input = i64;
    type Output = i64;
    async fn run(self: Arc<Self>, ctx: Ctx, n: i64) -> Result<i64, WfError> {
        ctx.step("double")
            .retry(RetryPolicy::no_retry())
            .run(|_| async move { if n < 0 { Err(StepError::terminal("negative")) } else { Ok(n * 2) } })
            .await
    }
}

struct Parent;
impl Workflow for Parent {
    const NAME: &'static str = "parent";
    type Input = i64;
    type Output = String;
    async fn run(self: Arc<Self>, ctx: Ctx, n: i64) -> Result<String, WfError> {
        let child_id = format!("{}-child", ctx.id());
        match ctx.child::<Child>(&child_id, &n).await {
            Ok(v) => Ok(format!("child said {v}")),
            Err(WfError::Child { state, reason, .. }) => Ok(format!("child {state}: {reason}")),
            Err(e) => Err(e),
        }
    }
}

async fn child_workflows_report_to_their_parent(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let engine = engine(journal.clone(), "solo").register(Parent).register(Child).start().unwrap();
    engine.start::<Parent>("ok", &21).await.unwrap();
    engine.start::<Parent>("bad", &-1).await.unwrap();
    assert_eq!(within(engine.result::<Parent>("ok")).await.unwrap(), "child said 42");
    let bad = within(engine.result::<Parent>("bad")).await.unwrap();
    assert!(bad.starts_with("child Failed:") && bad.contains("negative"), "{bad}");
    assert_eq!(engine.checkpoint("ok-child").await.unwrap().unwrap().parent.as_deref(), Some("ok"));
    engine.shutdown().await;
}
both_journals!(child_workflows_report_to_their_parent, child_workflows_report_to_their_parent);

struct CountsUp;
impl Workflow for CountsUp {
    const NAME: &'static str = "counts-up";
    type Input = u32;
    type Output = u32;
    async fn run(self: Arc<Self>, ctx: Ctx, n: u32) -> Result<u32, WfError> {
        let next = ctx.step("increment").run(|_| async move { Ok(n + 1) }).await?;
        if next < 4 { ctx.continue_as_new(&next).await } else { Ok(next) }
    }
}

async fn continue_as_new_starts_a_fresh_run(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let engine = engine(journal.clone(), "solo").register(CountsUp).start().unwrap();
    engine.start::<CountsUp>("w", &0).await.unwrap();
    assert_eq!(within(engine.result::<CountsUp>("w")).await.unwrap(), 4);
    let cp = engine.checkpoint("w").await.unwrap().unwrap();
    assert_eq!(cp.run, 4);
    let history = journal.history("w").await.unwrap();
    let last_run: Vec<&Record> = history.iter().filter(|e| e.run == 4).map(|e| &e.record).collect();
    assert_eq!(last_run.len(), 2, "the last run's history holds only its own step and end: {last_run:?}");
    let keys: std::collections::HashSet<String> = history
        .iter()
        .filter(|e| e.op == Op::Step)
        .map(|e| cellplane_workflows::IdempotencyKey { workflow_id: "w".into(), run: e.run, seq: e.seq }.to_string())
        .collect();
    assert_eq!(keys.len(), 4, "each run's steps get their own idempotency keys");
    engine.shutdown().await;
}
both_journals!(continue_as_new_starts_a_fresh_run, continue_as_new_starts_a_fresh_run);

// ---------------------------------------------------------------------------------------------

struct Cleans(Arc<Calls>);
impl Workflow for Cleans {
    const NAME: &'static str = "cleans";
    type Input = ();
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
        let calls = self.0.clone();
        ctx.step("create")
            .run(|_| {
                let calls = calls.clone();
                async move {
                    calls.hit("create");
                    Ok(())
                }
            })
            .await?;
        match ctx.sleep(Duration::from_secs(86_400)).await {
            Err(WfError::Cancelled) => {
                ctx.step("delete")
                    .run(|_| {
                        let calls = calls.clone();
                        async move {
                            calls.hit("delete");
                            Ok(())
                        }
                    })
                    .await?;
                Err(WfError::Cancelled)
            }
            other => other,
        }
    }
}

async fn cancellation_runs_cleanup_steps(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let calls = Arc::new(Calls::default());
    let engine = engine(journal.clone(), "solo").register(Cleans(calls.clone())).start().unwrap();
    engine.start::<Cleans>("w", &()).await.unwrap();
    checkpoint_in(&engine, "w", State::Sleeping).await;
    engine.cancel("w").await.unwrap();
    let cp = await_finished(&journal, "w").await;
    assert_eq!(cp.state, State::Cancelled);
    assert_eq!((calls.get("create"), calls.get("delete")), (1, 1));
    assert!(matches!(engine.cancel("w").await, Err(Error::WrongState { .. })));
    engine.shutdown().await;
}
both_journals!(cancellation_runs_cleanup_steps, cancellation_runs_cleanup_steps);

/// A workflow asleep out of memory (a long sleep) and then cancelled is replayed to where it
/// was: the cancellation is recorded at that sleep, not at an earlier sleep the replay passes,
/// and the history replays as it ran.
async fn a_cancellation_is_recorded_where_the_run_was(postgres: bool) {
    struct Naps(Arc<Calls>);
    impl Workflow for Naps {
        const NAME: &'static str = "naps";
        type Input = ();
        type Output = ();
        async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
            ctx.sleep(Duration::from_millis(1)).await?;
            match ctx.sleep(Duration::from_secs(86_400)).await {
                Err(WfError::Cancelled) => {
                    let calls = self.0.clone();
                    ctx.step("clean-up")
                        .run(|_| {
                            let calls = calls.clone();
                            async move { Ok(calls.hit("clean-up")) }
                        })
                        .await?;
                    Err(WfError::Cancelled)
                }
                other => other,
            }
        }
    }
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let calls = Arc::new(Calls::default());
    let engine = engine(journal.clone(), "solo").register(Naps(calls.clone())).start().unwrap();
    engine.start::<Naps>("w", &()).await.unwrap();
    let in_an_hour = cellplane_workflows::clock::wall_ms() + 3_600_000;
    eventually("the long sleep", || async {
        let cp = engine.checkpoint("w").await.unwrap()?;
        (cp.state == State::Sleeping && cp.next_attempt_at.is_some_and(|at| at > in_an_hour)).then_some(cp)
    })
    .await;
    engine.cancel("w").await.unwrap();
    assert_eq!(await_finished(&journal, "w").await.state, State::Cancelled);
    assert_eq!(calls.get("clean-up"), 1);
    let history = journal.history("w").await.unwrap();
    let cancelled: Vec<i64> = history.iter().filter(|e| e.record == Record::Cancelled).map(|e| e.seq).collect();
    assert_eq!(cancelled, [1], "cancelled at the long sleep (operation #1): {history:#?}");
    let exported = engine.export("w").await.unwrap();
    let code = Arc::new(Naps(Arc::new(Calls::default())));
    cellplane_workflows::Replayer::new().unwrap().replay("naps", &exported, &code).await.unwrap();
    engine.shutdown().await;
}
both_journals!(a_cancellation_is_recorded_where_the_run_was, a_cancellation_is_recorded_where_the_run_was);

// ---------------------------------------------------------------------------------------------

type Seen = Arc<Mutex<Vec<(String, u64, u128)>>>;
struct Remembers(Seen);
impl Workflow for Remembers {
    const NAME: &'static str = "remembers";
    type Input = ();
    type Output = (String, u64, u128);
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(String, u64, u128), WfError> {
        let id = ctx.uuid().await?;
        let n = ctx.random_u64().await?;
        let at = ctx.now().await?.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        self.0.lock().unwrap().push((id.clone(), n, at));
        ctx.wait_signal::<()>("continue", None).await?;
        Ok((id, n, at))
    }
}

async fn ids_random_values_and_time_replay_identically(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let seen: Seen = Arc::default();
    let engine = engine(journal.clone(), "solo").register(Remembers(seen.clone())).start().unwrap();
    engine.start::<Remembers>("w", &()).await.unwrap();
    checkpoint_in(&engine, "w", State::WaitingSignal).await;
    engine.signal("w", "continue", &()).await.unwrap();
    let output = within(engine.result::<Remembers>("w")).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "ran once, then replayed once after the signal");
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], output);
    engine.shutdown().await;
}
both_journals!(ids_random_values_and_time_replay_identically, ids_random_values_and_time_replay_identically);

// ---------------------------------------------------------------------------------------------

async fn writes_of_an_owner_whose_lease_was_taken_over_are_refused(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let client = engine(journal.clone(), "client").start().unwrap();
    client.start::<WaitsForGo>("w", &()).await.unwrap();
    let now = cellplane_workflows::clock::wall_ms();
    let claim = |owner: &str, wall_now: i64| ClaimRequest {
        owner: owner.into(),
        app_version: AppVersion::default(),
        types: vec![(WaitsForGo::NAME.into(), 1)],
        limit: 10,
        clock_now: now,
        wall_now,
        lease_until: wall_now + 1_000,
    };
    let a = journal.claim(&claim("a", now)).await.unwrap();
    assert_eq!(a.len(), 1);
    assert!(journal.claim(&claim("b", now)).await.unwrap().is_empty(), "a live lease is not taken");
    let b = journal.claim(&claim("b", now + 5_000)).await.unwrap();
    assert_eq!((b.len(), b[0].taken_from.as_deref()), (1, Some("a")));
    assert!(b[0].epoch > a[0].epoch);

    let commit = |owner: &str, epoch: i64| Commit {
        id: "w".into(),
        owner: owner.into(),
        epoch,
        wall_now: now,
        events: Vec::new(),
        row: RowUpdate { step: Some(format!("by {owner}")), ..RowUpdate::new(State::Running) },
        consume_signal: None,
        send_signals: Vec::new(),
        append_only: false,
    };
    assert_eq!(journal.commit(&[commit("a", a[0].epoch), commit("b", b[0].epoch)]).await.unwrap(), [false, true]);
    assert_eq!(journal.get("w").await.unwrap().unwrap().checkpoint.step.as_deref(), Some("by b"));
    client.shutdown().await;
}
both_journals!(
    writes_of_an_owner_whose_lease_was_taken_over_are_refused,
    writes_of_an_owner_whose_lease_was_taken_over_are_refused
);

/// A completed step committed by a workflow whose row holds a plain running checkpoint.
fn appended_step(owner: &str, epoch: i64, seq: i64, now: i64) -> Commit {
    let event = Event {
        run: 1,
        seq,
        idx: 0,
        op: Op::Step,
        name: format!("step-{seq}"),
        record: Record::StepDone { result: Ok(serde_json::json!(seq)), attempts: 1, duration_ms: 0 },
        epoch,
        owner: Some(owner.into()),
        at: now,
    };
    Commit {
        id: "w".into(),
        owner: owner.into(),
        epoch,
        wall_now: now,
        events: vec![event],
        row: RowUpdate {
            step: Some(format!("step-{seq}")),
            step_seq: Some(seq),
            attempt: 1,
            ..RowUpdate::new(State::Running)
        },
        consume_signal: None,
        send_signals: Vec::new(),
        append_only: true,
    }
}

fn claim_of(owner: &str, now: i64) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        app_version: AppVersion::default(),
        types: vec![(WaitsForGo::NAME.into(), 1)],
        limit: 10,
        clock_now: now,
        wall_now: now,
        lease_until: now + 1_000,
    }
}

async fn appended_steps_are_fenced_and_show_in_the_checkpoint(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let client = engine(journal.clone(), "client").start().unwrap();
    client.start::<WaitsForGo>("w", &()).await.unwrap();
    let now = cellplane_workflows::clock::wall_ms();
    let a = journal.claim(&claim_of("a", now)).await.unwrap();
    let running = Commit { events: Vec::new(), append_only: false, ..appended_step("a", a[0].epoch, 0, now) };
    assert_eq!(journal.commit(&[running]).await.unwrap(), [true]);
    assert_eq!(journal.commit(&[appended_step("a", a[0].epoch, 1, now + 1)]).await.unwrap(), [true]);
    let checkpoint = journal.get("w").await.unwrap().unwrap().checkpoint;
    assert_eq!(
        (checkpoint.state, checkpoint.step.as_deref(), checkpoint.step_seq, checkpoint.attempt),
        (State::Running, Some("step-1"), Some(1), 1)
    );
    assert!(checkpoint.updated_at > now);

    let b = journal.claim(&claim_of("b", now + 5_000)).await.unwrap();
    assert_eq!(b.len(), 1, "a's lease expired and b took over");
    assert_eq!(journal.commit(&[appended_step("a", a[0].epoch, 2, now + 2)]).await.unwrap(), [false]);
    assert!(journal.history("w").await.unwrap().iter().all(|e| e.seq < 2), "the old owner appended nothing");
    client.shutdown().await;
}
both_journals!(
    appended_steps_are_fenced_and_show_in_the_checkpoint,
    appended_steps_are_fenced_and_show_in_the_checkpoint
);

/// The READ COMMITTED race of an append-only commit: a takeover has bumped the epoch but not yet
/// committed when the old owner appends. The append must wait for the takeover and then refuse,
/// even when the takeover is a plain UPDATE (which a key-share lock would not wait for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_racing_an_uncommitted_takeover_waits_for_it_and_is_refused() {
    let db = TestJournal::postgres();
    let journal = db.open().await;
    let EffectDb::Postgres(pool) = db.pool().await else { unreachable!("a PostgreSQL journal") };
    let client = engine(journal.clone(), "client").start().unwrap();
    client.start::<WaitsForGo>("w", &()).await.unwrap();
    let now = cellplane_workflows::clock::wall_ms();
    let a = journal.claim(&claim_of("a", now)).await.unwrap();

    let mut takeover = pool.begin().await.unwrap();
    let takeover_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *takeover).await.unwrap();
    sqlx::query("UPDATE workflows SET epoch = epoch + 1, lease_owner = 'b' WHERE id = 'w'")
        .execute(&mut *takeover)
        .await
        .unwrap();
    let append = tokio::spawn({
        let journal = journal.clone();
        let commit = appended_step("a", a[0].epoch, 0, now);
        async move { journal.commit(&[commit]).await }
    });
    eventually("the append to wait for the takeover's row lock", || async {
        let blocked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))")
                .bind(takeover_pid)
                .fetch_one(&pool)
                .await
                .unwrap();
        (blocked > 0).then_some(())
    })
    .await;
    assert!(!append.is_finished(), "the append waits for the takeover's row lock");
    takeover.commit().await.unwrap();
    assert_eq!(within(append).await.unwrap().unwrap(), [false]);
    assert!(journal.history("w").await.unwrap().is_empty(), "nothing was appended after the takeover");
    client.shutdown().await;
}

async fn listing_filters_by_state(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let engine = engine(journal.clone(), "solo").register(WaitsForGo).register(CountsUp).start().unwrap();
    engine.start::<WaitsForGo>("waiting", &()).await.unwrap();
    engine.start::<CountsUp>("done", &3).await.unwrap();
    within(engine.result::<CountsUp>("done")).await.unwrap();
    checkpoint_in(&engine, "waiting", State::WaitingSignal).await;
    let ids = |rows: Vec<cellplane_workflows::journal::WorkflowRow>| {
        rows.into_iter().map(|r| r.checkpoint.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(journal.list(Some(State::Completed), 10).await.unwrap()), ["done"]);
    assert_eq!(ids(journal.list(Some(State::WaitingSignal), 10).await.unwrap()), ["waiting"]);
    assert_eq!(journal.list(None, 1).await.unwrap().len(), 1);
    engine.shutdown().await;
}
both_journals!(listing_filters_by_state, listing_filters_by_state);

// ---------------------------------------------------------------------------------------------

/// Publishes its phase as it goes: "creating", then "created" with the step's result; after
/// "next" it continues as new, and the next run publishes "finished" after "finish".
struct Reports(Arc<AtomicUsize>);
impl Workflow for Reports {
    const NAME: &'static str = "reports";
    type Input = bool;
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, continued: bool) -> Result<(), WfError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if continued {
            ctx.wait_signal::<()>("finish", None).await?;
            return ctx.publish(&json!({"phase": "finished"})).await;
        }
        ctx.publish(&json!({"phase": "creating"})).await?;
        let vpc: String = ctx.step("create").run(|_| async { Ok("vpc-1".to_string()) }).await?;
        ctx.publish(&json!({"phase": "created", "vpc": vpc})).await?;
        ctx.wait_signal::<()>("next", None).await?;
        ctx.continue_as_new(&true).await
    }
}

async fn published_state_is_durable_and_never_goes_back(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let runs = Arc::new(AtomicUsize::new(0));
    let created = json!({"phase": "created", "vpc": "vpc-1"});
    let first = engine(db.open().await, "first").register(Reports(runs.clone())).start().unwrap();
    first.start::<Reports>("w", &false).await.unwrap();
    assert_eq!(checkpoint_in(&first, "w", State::WaitingSignal).await.published.as_ref(), Some(&created));
    first.shutdown().await;
    drop(first);

    // Another process reads it from the journal, before anything runs there.
    let journal = db.open().await;
    let second = engine(journal.clone(), "second").register(Reports(runs.clone())).start().unwrap();
    assert_eq!(second.checkpoint("w").await.unwrap().unwrap().published.as_ref(), Some(&created));
    assert_eq!(journal.list(None, 10).await.unwrap()[0].checkpoint.published.as_ref(), Some(&created));

    // A replay publishes "creating" again on its way back to the wait; it is never shown.
    let mut progress = second.subscribe();
    second.wake("w").await.unwrap();
    eventually("the woken workflow to replay and wait again", || async {
        (runs.load(Ordering::SeqCst) == 2 && second.running() == 0).then_some(())
    })
    .await;
    let mut shown = Vec::new();
    while let Ok(cp) = progress.try_recv() {
        shown.push(cp.published);
    }
    assert!(!shown.is_empty() && shown.iter().all(|p| p.as_ref() == Some(&created)), "{shown:?}");

    // It stays through continue-as-new, until the next run publishes, and after the end.
    second.signal("w", "next", &()).await.unwrap();
    let next_run = eventually("the next run to wait", || async {
        second.checkpoint("w").await.unwrap().filter(|cp| cp.run == 2 && cp.state == State::WaitingSignal)
    })
    .await;
    assert_eq!(next_run.published.as_ref(), Some(&created));
    second.signal("w", "finish", &()).await.unwrap();
    within(second.result::<Reports>("w")).await.unwrap();
    assert_eq!(second.checkpoint("w").await.unwrap().unwrap().published, Some(json!({"phase": "finished"})));
    second.shutdown().await;
}
both_journals!(published_state_is_durable_and_never_goes_back, published_state_is_durable_and_never_goes_back);

/// Publishes the same state `n` times, then waits.
struct Repeats;
impl Workflow for Repeats {
    const NAME: &'static str = "repeats";
    type Input = u32;
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, n: u32) -> Result<(), WfError> {
        for _ in 0..n {
            ctx.publish(&"steady").await?;
        }
        ctx.wait_signal::<()>("never", None).await?;
        Ok(())
    }
}

async fn publishing_an_unchanged_state_writes_nothing(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let engine = engine(db.open().await, "solo").register(Repeats).start().unwrap();
    let mut changes = engine.changes();
    engine.start::<Repeats>("once", &1).await.unwrap();
    engine.start::<Repeats>("thrice", &3).await.unwrap();
    for id in ["once", "thrice"] {
        assert_eq!(checkpoint_in(&engine, id, State::WaitingSignal).await.published, Some(json!("steady")));
    }
    eventually("both to leave memory", || async { (engine.running() == 0).then_some(()) }).await;
    // Every write is announced once.
    let mut writes: HashMap<String, usize> = HashMap::new();
    while let Ok(id) = changes.try_recv() {
        *writes.entry(id).or_default() += 1;
    }
    assert_eq!(writes.get("once"), writes.get("thrice"), "{writes:?}");
    engine.shutdown().await;
}
both_journals!(publishing_an_unchanged_state_writes_nothing, publishing_an_unchanged_state_writes_nothing);

/// Publishes once its gate opens, outside any step: the publish is its first write after that.
struct PublishesAfterGate(Arc<Notify>);
impl Workflow for PublishesAfterGate {
    const NAME: &'static str = "publishes-after-gate";
    type Input = ();
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
        self.0.notified().await;
        ctx.publish(&"from the old owner").await
    }
}

async fn a_publish_by_an_owner_whose_lease_was_taken_over_is_refused(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let gate = Arc::new(Notify::new());
    let registry = prometheus::Registry::new();
    // A lease longer than the test: the old owner does not find out by renewing; only the fence stops it.
    let config = EngineConfig { lease: Duration::from_secs(600), ..fast_config("old") };
    let old = Engine::builder(journal.clone())
        .config(config)
        .metrics(&registry)
        .register(PublishesAfterGate(gate.clone()))
        .start()
        .unwrap();
    old.start::<PublishesAfterGate>("w", &()).await.unwrap();
    eventually("the old owner to run w", || async { (old.running() == 1).then_some(()) }).await;

    let now = cellplane_workflows::clock::wall_ms();
    let later = now + 1_200_000;
    let claim = ClaimRequest { wall_now: later, lease_until: later + 60_000, ..claim_of("new", now) };
    let claim = ClaimRequest { types: vec![(PublishesAfterGate::NAME.into(), 1)], ..claim };
    let taken = journal.claim(&claim).await.unwrap();
    assert_eq!(taken.len(), 1, "the new owner took w over");
    let publish = Commit {
        id: "w".into(),
        owner: "new".into(),
        epoch: taken[0].epoch,
        wall_now: now,
        events: Vec::new(),
        row: RowUpdate { published: Some(json!("from the new owner")), ..RowUpdate::new(State::Running) },
        consume_signal: None,
        send_signals: Vec::new(),
        append_only: false,
    };
    assert_eq!(journal.commit(&[publish]).await.unwrap(), [true]);

    gate.notify_one();
    eventually("the old owner to let go of w", || async { (old.running() == 0).then_some(()) }).await;
    let fenced = counter(&registry, "cellplane_workflow_fenced_writes_total");
    assert_eq!(fenced, 1.0, "the old owner's publish reached the journal and was refused");
    let published = journal.get("w").await.unwrap().unwrap().checkpoint.published;
    assert_eq!(published, Some(json!("from the new owner")));
    old.shutdown().await;
}
both_journals!(
    a_publish_by_an_owner_whose_lease_was_taken_over_is_refused,
    a_publish_by_an_owner_whose_lease_was_taken_over_is_refused
);

/// Waits for "publish", publishes "halfway", waits for "finish".
struct Announces;
impl Workflow for Announces {
    const NAME: &'static str = "announces";
    type Input = ();
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
        ctx.wait_signal::<()>("publish", None).await?;
        ctx.publish(&"halfway").await?;
        ctx.wait_signal::<()>("finish", None).await?;
        Ok(())
    }
}

/// Receives announced ids until `id`'s checkpoint, read again each time it is announced, is `done`.
async fn announced_until(
    watcher: &Engine,
    changes: &mut broadcast::Receiver<String>,
    id: &str,
    done: impl Fn(&Checkpoint) -> bool,
) -> Checkpoint {
    within(async {
        loop {
            if changes.recv().await.expect("no announcement missed") == id
                && let Some(cp) = watcher.checkpoint(id).await.unwrap().filter(&done)
            {
                return cp;
            }
        }
    })
    .await
}

async fn changes_are_announced_to_every_engine_on_the_journal(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let runner = engine(db.open().await, "runner").register(Announces).start().unwrap();
    // On PostgreSQL the watcher is another engine on connections of its own, as on another
    // replica. SQLite serves one process: there the runner's engine watches its own changes.
    let other;
    let watcher = if postgres {
        other = engine(db.open().await, "watcher").start().unwrap();
        &other
    } else {
        &runner
    };
    let mut changes = watcher.changes();
    runner.start::<Announces>("w", &()).await.unwrap();
    announced_until(watcher, &mut changes, "w", |_| true).await;
    runner.signal("w", "publish", &()).await.unwrap();
    announced_until(watcher, &mut changes, "w", |cp| cp.published == Some(json!("halfway"))).await;
    runner.signal("w", "finish", &()).await.unwrap();
    announced_until(watcher, &mut changes, "w", |cp| cp.state == State::Completed).await;
    runner.shutdown().await;
}
both_journals!(
    changes_are_announced_to_every_engine_on_the_journal,
    changes_are_announced_to_every_engine_on_the_journal
);

async fn a_receiver_that_falls_behind_is_told_it_lagged(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let client = engine(db.open().await, "client").start().unwrap();
    let mut changes = client.changes();
    let items: Vec<(String, serde_json::Value)> = (0..5_000).map(|i| (format!("w-{i}"), json!(null))).collect();
    client.start_many::<WaitsForGo>(&items, IdReuse::ReturnExisting).await.unwrap();
    assert!(matches!(changes.try_recv(), Err(TryRecvError::Lagged(missed)) if missed > 0));
    let mut last = None;
    while let Ok(id) = changes.try_recv() {
        last = Some(id);
    }
    assert_eq!(last.as_deref(), Some("w-4999"), "after the lag, the newest announcements are kept");
    client.shutdown().await;
}
both_journals!(a_receiver_that_falls_behind_is_told_it_lagged, a_receiver_that_falls_behind_is_told_it_lagged);

/// A failover cuts every listening connection; notifications sent meanwhile are gone, so a
/// listener that reconnects announces again what changed since it last heard from the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_lost_its_connection_announces_recent_changes_again() {
    let db = TestJournal::postgres();
    let runner = engine(db.open().await, "runner").register(Announces).start().unwrap();
    let watcher = engine(db.open().await, "watcher").start().unwrap();
    let mut changes = watcher.changes();
    runner.start::<Announces>("w", &()).await.unwrap();
    announced_until(&watcher, &mut changes, "w", |cp| cp.state == State::WaitingSignal).await;
    eventually("w to leave memory", || async { (runner.running() == 0).then_some(()) }).await;
    while changes.try_recv().is_ok() {}

    let EffectDb::Postgres(pool) = db.pool().await else { unreachable!("a PostgreSQL journal") };
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN%' AND position($1 in query) > 0",
    )
    .bind(&db.schema)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(cut, 2, "both journals' listening connections were cut");
    announced_until(&watcher, &mut changes, "w", |cp| cp.state == State::WaitingSignal).await;
    runner.shutdown().await;
}

async fn ids_longer_than_the_limit_are_refused(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let client = engine(db.open().await, "client").start().unwrap();
    let too_long = "x".repeat(MAX_ID_BYTES + 1);
    let refused = client.start::<WaitsForGo>(&too_long, &()).await;
    assert!(matches!(refused, Err(Error::IdTooLong { bytes, .. }) if bytes == MAX_ID_BYTES + 1), "{refused:?}");
    // The longest id is announced like any other.
    let longest = "\"".repeat(MAX_ID_BYTES);
    let mut changes = client.changes();
    assert_eq!(client.start::<WaitsForGo>(&longest, &()).await.unwrap(), Started::Created);
    assert_eq!(changes.try_recv().unwrap(), longest);
    client.shutdown().await;
}
both_journals!(ids_longer_than_the_limit_are_refused, ids_longer_than_the_limit_are_refused);

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let err = cellplane_workflows::journal::open("postgres://postgres@127.0.0.1:1/none?connect_timeout=2", "x")
        .await
        .err()
        .expect("no server listens on port 1");
    assert!(matches!(err, Error::Database(_)), "{err}");
    assert!(matches!(cellplane_workflows::journal::open("mysql://x", "x").await, Err(Error::BadUrl(_))));
    assert!(matches!(
        cellplane_workflows::journal::open(&postgres_url(), "Bad-Schema").await,
        Err(Error::BadSchema(_))
    ));
}

async fn a_refused_journal_write_is_retried_after_a_pause_and_the_workflow_goes_on(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let database = db.pool().await;
    database.refuse_events_named("b").await;
    let registry = prometheus::Registry::new();
    let pause = Duration::from_millis(400);
    let config = EngineConfig { journal_retry: pause, ..fast_config("solo") };
    let (workflow, ..) = three_steps(true);
    let engine = engine(journal.clone(), "solo").config(config).metrics(&registry).register(workflow).start().unwrap();
    let started = tokio::time::Instant::now();
    engine.start::<ThreeSteps>("w", &1).await.unwrap();
    let failures = || counter(&registry, "cellplane_journal_write_failures_total");
    eventually("a second refused write", || async { (failures() >= 2.0).then_some(()) }).await;
    assert!(started.elapsed() >= pause, "the workflow paused before it ran again: {:?}", started.elapsed());

    database.accept_events().await;
    within(engine.result::<ThreeSteps>("w")).await.unwrap();
    let steps: Vec<String> = journal.history("w").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(steps.iter().filter(|name| *name == "b").count(), 1, "{steps:?}");
    engine.shutdown().await;
}
both_journals!(
    a_refused_journal_write_is_retried_after_a_pause_and_the_workflow_goes_on,
    a_refused_journal_write_is_retried_after_a_pause_and_the_workflow_goes_on
);
