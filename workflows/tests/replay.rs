//! The replay suite's machinery: histories exported from real runs replay on the code that made
//! them, a change that breaks them fails naming the operation, and patches keep them replaying.
//! Histories are recorded against PostgreSQL and against SQLite.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cellplane_workflows::{
    Ctx, Engine, History, Op, ReplayError, Replayer, RetryPolicy, State, StepError, TestClock, WfError, Workflow,
};
use common::provision::{Code, Provision};
use common::*;
use serde_json::json;

/// Doubles its input in a step.
struct Doubles;

impl Workflow for Doubles {
    const NAME: &'static str = "doubles";
    type Input = u64;
    type Output = u64;
    async fn run(self: Arc<Self>, ctx: Ctx, n: u64) -> Result<u64, WfError> {
        ctx.step("double").run(|_| async move { Ok(n * 2) }).await
    }
}

/// Every kind of durable operation: a step that fails once, recorded values, a timer, a child,
/// a publish, a signal with a timeout, and continue-as-new.
struct Everything {
    bodies: Arc<AtomicUsize>,
}

impl Everything {
    fn new() -> Self {
        Everything { bodies: Arc::default() }
    }
}

impl Workflow for Everything {
    const NAME: &'static str = "everything";
    type Input = u32;
    type Output = String;
    async fn run(self: Arc<Self>, ctx: Ctx, rollovers: u32) -> Result<String, WfError> {
        let bodies = self.bodies.clone();
        let quick = RetryPolicy { initial_interval: Duration::from_millis(5), jitter: 0.0, ..RetryPolicy::default() };
        let attempts: u32 = ctx
            .step("flaky")
            .retry(quick)
            .run(|key| {
                let attempt = bodies.fetch_add(1, Ordering::SeqCst);
                async move {
                    match attempt % 2 {
                        0 => Err(StepError::transient(format!("first try of {key}"))),
                        _ => Ok(2),
                    }
                }
            })
            .await?;
        let id = ctx.uuid().await?;
        let random = ctx.random_u64().await?;
        ctx.now().await?;
        ctx.sleep(Duration::from_secs(3600)).await?;
        let doubled = ctx.child::<Doubles>(&format!("{}-child-{}", ctx.id(), ctx.run_number()), &21).await?;
        ctx.publish(&json!({ "phase": "waiting" })).await?;
        let go: Option<String> = ctx.wait_signal("go", Some(Duration::from_secs(30 * 86_400))).await?;
        if rollovers > 0 {
            return ctx.continue_as_new(&(rollovers - 1)).await;
        }
        Ok(format!("{attempts} {id} {random} {doubled} {}", go.unwrap_or_default()))
    }
}

/// Moves the workflow clock on by an hour whenever `id` sleeps, until it waits for a signal in
/// run `run`.
async fn wait_in_run(engine: &Engine, clock: &TestClock, id: &str, run: i64) {
    eventually(&format!("{id} to wait in run {run}"), || async {
        let checkpoint = engine.checkpoint(id).await.unwrap()?;
        if checkpoint.state == State::Sleeping {
            clock.advance(Duration::from_secs(3600));
        }
        (checkpoint.run == run && checkpoint.state == State::WaitingSignal).then_some(())
    })
    .await;
}

async fn a_recorded_history_replays_without_executing_anything(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let everything = Everything::new();
    let bodies = everything.bodies.clone();
    // The replays run on the system clock, when the recorded hour-long timers have not come due.
    let clock = TestClock::default();
    let engine =
        engine(journal.clone(), "solo").clock(clock.clone()).register(everything).register(Doubles).start().unwrap();
    engine.start::<Everything>("e", &1).await.unwrap();
    wait_in_run(&engine, &clock, "e", 1).await;
    let waiting = engine.export("e").await.unwrap();
    engine.signal("e", "go", &"first").await.unwrap();
    wait_in_run(&engine, &clock, "e", 2).await;
    engine.signal("e", "go", &"second").await.unwrap();
    within(engine.result::<Everything>("e")).await.unwrap();
    let finished = engine.export("e").await.unwrap();
    let child = engine.export("e-child-1").await.unwrap();
    engine.shutdown().await;

    assert_eq!((finished.workflow.as_str(), finished.version, finished.runs.len()), ("everything", 1, 2));
    assert_eq!(finished.runs.iter().map(|r| r.input.clone()).collect::<Vec<_>>(), [Some(json!(1)), Some(json!(0))]);
    assert_eq!(finished.app_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let document = serde_json::to_string_pretty(&finished).unwrap();
    let finished: History = serde_json::from_str(&document).unwrap();
    let executed = bodies.load(Ordering::SeqCst);
    let replayer = Replayer::new().unwrap();
    let code = Arc::new(Everything { bodies: bodies.clone() });
    replayer.replay("e/finished", &finished, &code).await.unwrap();
    replayer.replay("e/waiting", &waiting, &code).await.unwrap();
    replayer.replay("e/child", &child, &Arc::new(Doubles)).await.unwrap();
    assert_eq!(bodies.load(Ordering::SeqCst), executed, "no step body ran during the replays");
}
both_journals!(
    a_recorded_history_replays_without_executing_anything,
    a_recorded_history_replays_without_executing_anything
);

/// Runs "provision" to completion under `id` on `engine`, and exports its history.
async fn recorded(engine: &Engine, id: &str) -> History {
    engine.start::<Provision>(id, &0).await.unwrap();
    checkpoint_in(engine, id, State::WaitingSignal).await;
    engine.signal(id, "go", &()).await.unwrap();
    within(engine.result::<Provision>(id)).await.unwrap();
    engine.export(id).await.unwrap()
}

async fn record_with(journal: &TestJournal, code: Code, id: &str) -> History {
    let engine = engine(journal.open().await, "recorder").register(Provision::new(code)).start().unwrap();
    let history = recorded(&engine, id).await;
    engine.shutdown().await;
    history
}

async fn replay_on(code: Code, label: &str, history: &History) -> (Result<(), ReplayError>, Vec<bool>) {
    let workflow = Arc::new(Provision::new(code));
    let result = Replayer::new().unwrap().replay(label, history, &workflow).await;
    assert_eq!(workflow.bodies(), 0, "a replay executes no step body");
    (result, workflow.answers())
}

async fn a_step_inserted_without_a_patch_fails_naming_the_operation(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let original = record_with(&db, Code::Original, "w").await;
    assert!(replay_on(Code::Original, "provision/original", &original).await.0.is_ok());

    let error = replay_on(Code::PatchRemoved, "provision/original", &original).await.0.unwrap_err();
    let ReplayError::Diverged { label, run, seq, code, recorded } = &error else { panic!("{error}") };
    assert_eq!(
        (label.as_str(), *run, *seq, code.as_str(), recorded.as_str()),
        ("provision/original", 1, 1, "step \"b\"", "signal \"go\"")
    );
    assert_eq!(
        error.to_string(),
        "history \"provision/original\", run 1: operation #1 is now step \"b\", but the history recorded \
         signal \"go\" there"
    );
}
both_journals!(
    a_step_inserted_without_a_patch_fails_naming_the_operation,
    a_step_inserted_without_a_patch_fails_naming_the_operation
);

async fn a_patch_replays_old_histories_on_the_old_path_and_new_ones_on_the_new(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let original = record_with(&db, Code::Original, "old").await;
    let patched = record_with(&db, Code::Patched, "new").await;
    let new_path: Vec<(Op, String)> =
        patched.runs[0].events.iter().filter(|e| e.record.is_final()).map(|e| (e.op, e.name.clone())).collect();
    let expected = [(Op::Step, "a"), (Op::Marker, "patch:add-b"), (Op::Step, "b"), (Op::Signal, "go"), (Op::Step, "c")];
    assert_eq!(new_path[..5], expected.map(|(op, name)| (op, name.to_string())));

    assert_eq!(replay_on(Code::Patched, "old", &original).await, (Ok(()), vec![false]));
    assert_eq!(replay_on(Code::Patched, "new", &patched).await, (Ok(()), vec![true]));
    let (rolled_back, _) = replay_on(Code::Original, "new", &patched).await;
    assert!(
        matches!(&rolled_back, Err(ReplayError::Diverged { seq: 1, code, recorded, .. })
            if code == "signal \"go\"" && recorded == "patch \"add-b\""),
        "{rolled_back:?}"
    );
}
both_journals!(
    a_patch_replays_old_histories_on_the_old_path_and_new_ones_on_the_new,
    a_patch_replays_old_histories_on_the_old_path_and_new_ones_on_the_new
);

async fn a_deprecated_patch_replays_histories_with_and_without_its_marker(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let with_marker = record_with(&db, Code::Patched, "patched").await;
    let from_deprecated = record_with(&db, Code::Deprecated, "deprecated").await;
    let without_marker = record_with(&db, Code::PatchRemoved, "removed").await;
    for (label, history) in [("patched", &with_marker), ("deprecated", &from_deprecated), ("removed", &without_marker)]
    {
        assert!(replay_on(Code::Deprecated, label, history).await.0.is_ok(), "{label}");
    }
    assert_eq!(replay_on(Code::Patched, "deprecated", &from_deprecated).await, (Ok(()), vec![true]));
    let original = record_with(&db, Code::Original, "original").await;
    assert!(replay_on(Code::Deprecated, "original", &original).await.0.is_err(), "old-path runs must be gone");
}
both_journals!(
    a_deprecated_patch_replays_histories_with_and_without_its_marker,
    a_deprecated_patch_replays_histories_with_and_without_its_marker
);

fn document(workflow: &str, input: serde_json::Value) -> History {
    serde_json::from_value(json!({
        "format": 1, "id": "w", "workflow": workflow, "version": 1,
        "runs": [{ "run": 1, "input": input, "events": [] }],
    }))
    .unwrap()
}

#[tokio::test]
async fn a_history_of_another_workflow_or_without_inputs_is_refused() {
    let replayer = Replayer::new().unwrap();
    let code = Arc::new(Provision::new(Code::Original));
    let other = replayer.replay("other", &document("doubles", json!(1)), &code).await.unwrap_err();
    assert_eq!(other.to_string(), "history \"other\" is of workflow doubles@1, not provision@1");
    let no_input = replayer.replay("legacy", &document("provision", json!(null)), &code).await.unwrap_err();
    assert!(matches!(no_input, ReplayError::NoInput { run: 1, .. }), "{no_input}");
    let empty = replayer.replay("empty", &document("provision", json!(0)), &code).await;
    assert!(empty.is_ok(), "a run that recorded nothing stopped before its first operation");
}
