//! Application versions in a rolling update: two engines of different versions share a journal;
//! the newer runs what the older wrote, the older never claims what the newer ran. Each test
//! runs against PostgreSQL and against SQLite.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cellplane_workflows::clock::wall_ms;
use cellplane_workflows::journal::{ClaimRequest, Journal};
use cellplane_workflows::{AppVersion, Ctx, Engine, EngineBuilder, EngineConfig, Error, State, WfError, Workflow};
use common::provision::{Code, Provision};
use common::*;

fn at_version(journal: &Arc<dyn Journal>, owner: &str, version: &str) -> EngineBuilder {
    Engine::builder(journal.clone()).config(EngineConfig { app_version: version.into(), ..fast_config(owner) })
}

fn version(text: &str) -> AppVersion {
    AppVersion::parse(text).unwrap()
}

/// Waits until `engine` has run `canary` (started after the caller's setup) to its wait: a claim
/// that saw everything runnable before it has been made.
async fn claimed_since(engine: &Engine, canary: &str) {
    engine.start::<Provision>(canary, &0).await.unwrap();
    checkpoint_in(engine, canary, State::WaitingSignal).await;
}

const HELD: &str = "held for an engine of version ≥ 0.3.0 (this replica runs 0.2.0)";

async fn an_older_engine_leaves_a_waiting_workflow_that_a_newer_one_ran(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let newer = at_version(&journal, "newer", "0.3.0").register(Provision::new(Code::Patched)).start().unwrap();
    newer.start::<Provision>("w", &0).await.unwrap();
    checkpoint_in(&newer, "w", State::WaitingSignal).await;
    newer.shutdown().await;
    let epoch = journal.get("w").await.unwrap().unwrap().epoch;

    let older = at_version(&journal, "older", "0.2.0").register(Provision::new(Code::Original)).start().unwrap();
    older.signal("w", "go", &()).await.unwrap();
    claimed_since(&older, "canary").await;
    let row = journal.get("w").await.unwrap().unwrap();
    assert_eq!((row.checkpoint.state, row.checkpoint.owner.as_deref(), row.epoch), (State::WaitingSignal, None, epoch));
    let checkpoint = older.checkpoint("w").await.unwrap().unwrap();
    let reason = checkpoint.reason.unwrap_or_default();
    assert!(reason.starts_with(HELD), "{reason}");
    assert_eq!(
        (checkpoint.app_version.as_deref(), checkpoint.max_app_version.as_deref()),
        (Some("0.3.0"), Some("0.3.0"))
    );
    let canary = older.checkpoint("canary").await.unwrap().unwrap();
    assert!(!canary.reason.unwrap_or_default().contains("held"), "what the older engine runs is not held");

    let newer = at_version(&journal, "newer-again", "0.3.0").register(Provision::new(Code::Patched)).start().unwrap();
    assert_eq!(within(newer.result::<Provision>("w")).await.unwrap(), ["a", "b", "c"]);
    assert!(newer.checkpoint("w").await.unwrap().unwrap().reason.is_none());
    older.shutdown().await;
    newer.shutdown().await;
}
both_journals!(
    an_older_engine_leaves_a_waiting_workflow_that_a_newer_one_ran,
    an_older_engine_leaves_a_waiting_workflow_that_a_newer_one_ran
);

/// One step that never ends unless `open`.
struct Holds {
    open: bool,
    started: Arc<AtomicBool>,
}

impl Workflow for Holds {
    const NAME: &'static str = "holds";
    type Input = ();
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
        let this = self.clone();
        ctx.step("hold")
            .run(|_| {
                let this = this.clone();
                async move {
                    this.started.store(true, Ordering::SeqCst);
                    if !this.open {
                        futures::future::pending::<()>().await;
                    }
                    Ok(())
                }
            })
            .await
    }
}

fn holds(open: bool) -> (Holds, Arc<AtomicBool>) {
    let started = Arc::new(AtomicBool::new(false));
    (Holds { open, started: started.clone() }, started)
}

async fn an_older_engine_does_not_take_over_an_expired_lease_of_a_newer_one(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let (workflow, started) = holds(false);
    let newer = at_version(&journal, "newer", "0.3.0").register(workflow).start().unwrap();
    newer.start::<Holds>("w", &()).await.unwrap();
    eventually("the step to start", || async { started.load(Ordering::SeqCst).then_some(()) }).await;
    newer.abort().await; // dies holding the lease
    let held = journal.get("w").await.unwrap().unwrap();
    let expiry = held.lease_expires_at.expect("a lease");
    eventually("the lease to expire", || async { (wall_ms() > expiry).then_some(()) }).await;

    let (workflow, _) = holds(true);
    let older = at_version(&journal, "older", "0.2.0")
        .register(workflow)
        .register(Provision::new(Code::Original))
        .start()
        .unwrap();
    claimed_since(&older, "canary").await;
    let row = journal.get("w").await.unwrap().unwrap();
    assert_eq!((row.checkpoint.owner.as_deref(), row.epoch), (Some("newer"), held.epoch), "not taken over");
    let reason = older.checkpoint("w").await.unwrap().unwrap().reason.unwrap_or_default();
    assert_eq!(reason, HELD);

    let (workflow, _) = holds(true);
    let successor = at_version(&journal, "successor", "0.3.0").register(workflow).start().unwrap();
    within(successor.result::<Holds>("w")).await.unwrap();
    assert_eq!(successor.checkpoint("w").await.unwrap().unwrap().max_app_version.as_deref(), Some("0.3.0"));
    older.shutdown().await;
    successor.shutdown().await;
}
both_journals!(
    an_older_engine_does_not_take_over_an_expired_lease_of_a_newer_one,
    an_older_engine_does_not_take_over_an_expired_lease_of_a_newer_one
);

async fn a_newer_engine_completes_what_an_older_one_started(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let older = at_version(&journal, "older", "0.2.0").register(Provision::new(Code::Original)).start().unwrap();
    older.start::<Provision>("w", &0).await.unwrap();
    let waiting = checkpoint_in(&older, "w", State::WaitingSignal).await;
    assert_eq!((waiting.app_version.as_deref(), waiting.max_app_version.as_deref()), (Some("0.2.0"), Some("0.2.0")));
    older.abort().await;

    let newer = at_version(&journal, "newer", "0.3.0").register(Provision::new(Code::Patched)).start().unwrap();
    newer.signal("w", "go", &()).await.unwrap();
    assert_eq!(within(newer.result::<Provision>("w")).await.unwrap(), ["a", "c"], "the old path, replayed");
    let done = newer.checkpoint("w").await.unwrap().unwrap();
    assert_eq!((done.app_version.as_deref(), done.max_app_version.as_deref()), (Some("0.2.0"), Some("0.3.0")));
    newer.shutdown().await;
}
both_journals!(a_newer_engine_completes_what_an_older_one_started, a_newer_engine_completes_what_an_older_one_started);

fn claim(owner: &str, app_version: &str, wall_now: i64) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        app_version: version(app_version),
        types: vec![(Provision::NAME.into(), 1)],
        limit: 10,
        clock_now: wall_now,
        wall_now,
        lease_until: wall_now + 1_000,
    }
}

async fn claims_record_the_highest_version_and_skip_older_claimers(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let client = at_version(&journal, "client", "0.3.0").start().unwrap();
    client.start::<Provision>("w", &0).await.unwrap();
    let now = wall_ms();
    assert!(journal.claim(&claim("old", "0.2.9", now)).await.unwrap().is_empty(), "started by a newer version");
    let claimed = journal.claim(&claim("new", "0.10.0", now)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].app_version.as_deref(), claimed[0].max_app_version.as_deref()),
        (Some("0.3.0"), Some("0.10.0"))
    );
    let later = now + 5_000; // the lease has expired
    assert!(journal.claim(&claim("mid", "0.3.0", later)).await.unwrap().is_empty(), "ran by a newer version");
    let taken = journal.claim(&claim("same", "0.10.0", later)).await.unwrap();
    assert_eq!(taken.iter().map(|c| c.taken_from.as_deref()).collect::<Vec<_>>(), [Some("new")]);
    let checkpoint = journal.get("w").await.unwrap().unwrap().checkpoint;
    assert_eq!(checkpoint.max_app_version.as_deref(), Some("0.10.0"), "never lowered");
    client.shutdown().await;
}
both_journals!(
    claims_record_the_highest_version_and_skip_older_claimers,
    claims_record_the_highest_version_and_skip_older_claimers
);

#[tokio::test]
async fn an_engine_refuses_a_malformed_version() {
    let db = TestJournal::sqlite();
    let journal = db.open().await;
    let started = at_version(&journal, "bad", "0.3").start();
    assert!(matches!(started, Err(Error::BadAppVersion(v)) if v == "0.3"));
}
