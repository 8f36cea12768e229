//! Patches: a workflow's code changes without stranding the runs its older code started. Each
//! test runs against PostgreSQL and against SQLite.

mod common;

use std::sync::Arc;

use cellplane_workflows::journal::Journal;
use cellplane_workflows::{Ctx, Engine, Event, Op, Replayer, State, WfError, Workflow};
use common::provision::{Code, PATCH, Provision};
use common::*;

/// (run, operation) of each patch marker of `change` in a history.
fn markers_of(history: &[Event], change: &str) -> Vec<(i64, i64)> {
    let name = format!("patch:{change}");
    history
        .iter()
        .filter(|e| e.op == Op::Marker && e.name == name && e.record.patch_change() == Some(change))
        .map(|e| (e.run, e.seq))
        .collect()
}

/// Starts `id` on `engine` and waits until it waits for "go".
async fn start_and_wait(engine: &Engine, id: &str, rollovers: u32) {
    engine.start::<Provision>(id, &rollovers).await.unwrap();
    checkpoint_in(engine, id, State::WaitingSignal).await;
}

async fn history(journal: &Arc<dyn Journal>, id: &str) -> Vec<Event> {
    journal.history(id).await.unwrap()
}

async fn a_patch_keeps_old_histories_on_the_old_path_and_new_runs_on_the_new_one(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let old = engine(journal.clone(), "old").register(Provision::new(Code::Original)).start().unwrap();
    start_and_wait(&old, "started-before", 0).await;
    old.shutdown().await;

    let new = engine(journal.clone(), "new").register(Provision::new(Code::Patched)).start().unwrap();
    start_and_wait(&new, "started-after", 0).await;
    for id in ["started-before", "started-after"] {
        new.signal(id, "go", &()).await.unwrap();
    }
    assert_eq!(within(new.result::<Provision>("started-before")).await.unwrap(), ["a", "c"]);
    assert_eq!(within(new.result::<Provision>("started-after")).await.unwrap(), ["a", "b", "c"]);
    assert_eq!(markers_of(&history(&journal, "started-before").await, PATCH), []);
    assert_eq!(markers_of(&history(&journal, "started-after").await, PATCH), [(1, 1)]);
    new.shutdown().await;
}
both_journals!(
    a_patch_keeps_old_histories_on_the_old_path_and_new_runs_on_the_new_one,
    a_patch_keeps_old_histories_on_the_old_path_and_new_runs_on_the_new_one
);

async fn a_marker_that_no_code_asks_for_is_a_non_deterministic_change(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let patched = engine(journal.clone(), "patched").register(Provision::new(Code::Patched)).start().unwrap();
    start_and_wait(&patched, "w", 0).await;
    patched.shutdown().await;

    let removed = engine(journal.clone(), "removed").register(Provision::new(Code::PatchRemoved)).start().unwrap();
    removed.signal("w", "go", &()).await.unwrap();
    let checkpoint = await_finished(&journal, "w").await;
    assert_eq!(checkpoint.state, State::NonDeterministic);
    assert_eq!(
        checkpoint.reason.as_deref(),
        Some("operation #1 is now step \"b\", but the history recorded patch \"add-b\" there")
    );
    removed.shutdown().await;
}
both_journals!(
    a_marker_that_no_code_asks_for_is_a_non_deterministic_change,
    a_marker_that_no_code_asks_for_is_a_non_deterministic_change
);

async fn a_deprecated_patch_replays_histories_with_and_without_its_marker(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let patched = engine(journal.clone(), "patched").register(Provision::new(Code::Patched)).start().unwrap();
    start_and_wait(&patched, "with-marker", 0).await;
    patched.shutdown().await;
    let removed = engine(journal.clone(), "removed").register(Provision::new(Code::PatchRemoved)).start().unwrap();
    start_and_wait(&removed, "without-marker", 0).await;
    removed.shutdown().await;

    let deprecated = engine(journal.clone(), "deprecated").register(Provision::new(Code::Deprecated)).start().unwrap();
    start_and_wait(&deprecated, "deprecated-run", 0).await;
    for id in ["with-marker", "without-marker", "deprecated-run"] {
        deprecated.signal(id, "go", &()).await.unwrap();
        assert_eq!(within(deprecated.result::<Provision>(id)).await.unwrap(), ["a", "b", "c"], "{id}");
    }
    assert_eq!(markers_of(&history(&journal, "with-marker").await, PATCH), [(1, 1)]);
    assert_eq!(markers_of(&history(&journal, "without-marker").await, PATCH), []);
    // Recorded live, so that code still calling `patched` replays this run too.
    assert_eq!(markers_of(&history(&journal, "deprecated-run").await, PATCH), [(1, 1)]);
    deprecated.shutdown().await;
}
both_journals!(
    a_deprecated_patch_replays_histories_with_and_without_its_marker,
    a_deprecated_patch_replays_histories_with_and_without_its_marker
);

async fn a_run_that_continues_as_new_from_the_old_path_takes_the_new_one(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let old = engine(journal.clone(), "old").register(Provision::new(Code::Original)).start().unwrap();
    start_and_wait(&old, "w", 1).await;
    old.shutdown().await;

    let code = Provision::new(Code::Patched);
    let answers = code.answers.clone();
    let new = engine(journal.clone(), "new").register(code).start().unwrap();
    new.signal("w", "go", &()).await.unwrap();
    eventually("the second run to wait for \"go\"", || async {
        let checkpoint = new.checkpoint("w").await.unwrap()?;
        (checkpoint.run == 2 && checkpoint.state == State::WaitingSignal).then_some(())
    })
    .await;
    new.signal("w", "go", &()).await.unwrap();
    assert_eq!(within(new.result::<Provision>("w")).await.unwrap(), ["a", "b", "c"]);
    assert_eq!(markers_of(&history(&journal, "w").await, PATCH), [(2, 1)], "only the new run has the marker");
    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers.first(), Some(&false), "the first run replayed its old path: {answers:?}");
    assert!(answers.len() >= 2 && answers[1..].iter().all(|a| *a), "the second run took the new one: {answers:?}");
    new.shutdown().await;
}
both_journals!(
    a_run_that_continues_as_new_from_the_old_path_takes_the_new_one,
    a_run_that_continues_as_new_from_the_old_path_takes_the_new_one
);

/// Asks for the patch "x" before and after waiting for "go", when it knows of it.
struct AsksTwice {
    knows_patch: bool,
}

impl AsksTwice {
    async fn ask(&self, ctx: &Ctx) -> Result<bool, WfError> {
        if self.knows_patch { ctx.patched("x").await } else { Ok(false) }
    }
}

impl Workflow for AsksTwice {
    const NAME: &'static str = "asks-twice";
    type Input = ();
    type Output = (bool, bool);
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(bool, bool), WfError> {
        ctx.step("a").run(|_| async { Ok(()) }).await?;
        let before = self.ask(&ctx).await?;
        ctx.wait_signal::<()>("go", None).await?;
        let after = self.ask(&ctx).await?;
        Ok((before, after))
    }
}

async fn a_patch_answers_the_same_throughout_a_run(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let old = engine(journal.clone(), "old").register(AsksTwice { knows_patch: false }).start().unwrap();
    old.start::<AsksTwice>("old-run", &()).await.unwrap();
    checkpoint_in(&old, "old-run", State::WaitingSignal).await;
    old.shutdown().await;

    let new = engine(journal.clone(), "new").register(AsksTwice { knows_patch: true }).start().unwrap();
    new.start::<AsksTwice>("new-run", &()).await.unwrap();
    checkpoint_in(&new, "new-run", State::WaitingSignal).await;
    for id in ["old-run", "new-run"] {
        new.signal(id, "go", &()).await.unwrap();
    }
    // Past its history, the old run would be live at the second question: it keeps its answer.
    assert_eq!(within(new.result::<AsksTwice>("old-run")).await.unwrap(), (false, false));
    assert_eq!(within(new.result::<AsksTwice>("new-run")).await.unwrap(), (true, true));
    assert_eq!(markers_of(&history(&journal, "old-run").await, "x"), []);
    assert_eq!(markers_of(&history(&journal, "new-run").await, "x"), [(1, 1)], "one marker per run");
    new.shutdown().await;
}
both_journals!(a_patch_answers_the_same_throughout_a_run, a_patch_answers_the_same_throughout_a_run);

/// On the old path of the patch "x" once live, ends its run and leaves the signal it received
/// to the next, which takes the new one.
struct MovesOn {
    knows_patch: bool,
}

impl Workflow for MovesOn {
    const NAME: &'static str = "moves-on";
    /// The run's number, and whether the previous run received "go".
    type Input = (u32, bool);
    type Output = (u32, bool);
    async fn run(self: Arc<Self>, ctx: Ctx, (run, received): (u32, bool)) -> Result<(u32, bool), WfError> {
        ctx.step("a").run(|_| async { Ok(()) }).await?;
        let new_path = self.knows_patch && ctx.patched("x").await?;
        if !received {
            ctx.wait_signal::<()>("go", None).await?;
        }
        if self.knows_patch && !new_path && ctx.may_continue_as_new_here() {
            return ctx.continue_as_new(&(run + 1, true)).await;
        }
        Ok((run, new_path))
    }
}

async fn a_run_on_the_old_path_continues_as_new_once_live_and_still_replays(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let old = engine(journal.clone(), "old").register(MovesOn { knows_patch: false }).start().unwrap();
    old.start::<MovesOn>("w", &(1, false)).await.unwrap();
    checkpoint_in(&old, "w", State::WaitingSignal).await;
    old.shutdown().await;

    let new = engine(journal.clone(), "new").register(MovesOn { knows_patch: true }).start().unwrap();
    new.signal("w", "go", &()).await.unwrap();
    assert_eq!(within(new.result::<MovesOn>("w")).await.unwrap(), (2, true), "the second run took the new path");
    assert_eq!(markers_of(&history(&journal, "w").await, "x"), [(2, 1)]);
    let history = new.export("w").await.unwrap();
    let replayed = Replayer::new().unwrap().replay("w", &history, &Arc::new(MovesOn { knows_patch: true })).await;
    assert_eq!(replayed, Ok(()), "the run that ended replays");
    new.shutdown().await;
}
both_journals!(
    a_run_on_the_old_path_continues_as_new_once_live_and_still_replays,
    a_run_on_the_old_path_continues_as_new_once_live_and_still_replays
);

/// A step that shipped without a patch ("b" in `PatchRemoved`) is put behind one afterwards: the
/// histories of the code before it (no "b") and of the code that shipped it unmarked (a "b") both
/// go on, each on its own path, and new runs record the marker.
async fn a_change_that_shipped_without_a_patch_is_recognised_by_its_first_step(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    for (code, id) in [(Code::Original, "before-b"), (Code::PatchRemoved, "unmarked-b")] {
        let engine = engine(journal.clone(), &format!("{code:?}")).register(Provision::new(code)).start().unwrap();
        start_and_wait(&engine, id, 0).await;
        engine.shutdown().await;
    }
    let late = engine(journal.clone(), "late").register(Provision::new(Code::PatchedLate)).start().unwrap();
    start_and_wait(&late, "after", 0).await;
    for id in ["before-b", "unmarked-b", "after"] {
        late.signal(id, "go", &()).await.unwrap();
    }
    assert_eq!(within(late.result::<Provision>("before-b")).await.unwrap(), ["a", "c"]);
    assert_eq!(within(late.result::<Provision>("unmarked-b")).await.unwrap(), ["a", "b", "c"]);
    assert_eq!(within(late.result::<Provision>("after")).await.unwrap(), ["a", "b", "c"]);
    assert_eq!(markers_of(&history(&journal, "unmarked-b").await, PATCH), []);
    assert_eq!(markers_of(&history(&journal, "after").await, PATCH), [(1, 1)]);
    late.shutdown().await;
}
both_journals!(
    a_change_that_shipped_without_a_patch_is_recognised_by_its_first_step,
    a_change_that_shipped_without_a_patch_is_recognised_by_its_first_step
);
