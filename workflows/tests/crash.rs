//! Crash tests: an engine in a child process is SIGKILLed at random points, at least 50 times,
//! against PostgreSQL and SQLite. At the end every workflow completed, each step's result is
//! journaled once and its effect stored once, and a step was executed again only by a killed
//! engine that had it in flight.

mod common;

use cellplane_workflows::{Record, State};
use common::child::{ChildSpec, check_effects, run_child};
use common::*;
use rand::Rng;

const WORKFLOWS: u32 = 30;
const STEPS: u32 = 10;
const KILLS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child engine of the crash tests; runs only with CHILD_* set"]
async fn crash_child() {
    run_child().await
}

async fn survives_repeated_sigkill(postgres: bool) {
    let db = TestJournal::of_kind(postgres);
    let journal = db.open().await;
    let effects = db.pool().await;
    effects.create_effects_table().await;
    let mut rng = rand::rng();
    let mut killed = Vec::new();
    let mut finished = false;
    let mut generation = 0;
    while !finished {
        generation += 1;
        let kills = killed.len();
        let spec = ChildSpec {
            postgres,
            url: db.url.clone(),
            schema: db.schema.clone(),
            owner: format!("crashy-{generation}"),
            workflows: WORKFLOWS,
            steps: STEPS,
            step_ms: 0,
            lease_ms: 300,
        };
        let (mut child, mut lines) = spec.spawn("crash_child");
        // Kill after a random number of step effects, until enough kills happened; then let it finish.
        let kill_after = if kills < KILLS { Some(rng.random_range(1..=4)) } else { None };
        let mut effects_seen = 0;
        let outcome = within(async {
            while let Some(line) = lines.next_line().await.expect("child stdout") {
                if line == "done" {
                    return true;
                }
                if line.starts_with("effect ") {
                    effects_seen += 1;
                    if Some(effects_seen) == kill_after {
                        return false;
                    }
                }
            }
            false
        })
        .await;
        if outcome {
            finished = true;
            child.wait().await.expect("child exits");
        } else {
            child.kill().await.expect("SIGKILL");
            killed.push(spec.owner);
        }
        assert!(generation < 500, "no convergence after {generation} children");
    }
    assert!(killed.len() >= KILLS, "only {} kills happened", killed.len());

    for i in 0..WORKFLOWS {
        let id = format!("wf-{i:03}");
        let row = journal.get(&id).await.unwrap().unwrap();
        assert_eq!(row.checkpoint.state, State::Completed, "{id}: {:?}", row.checkpoint.reason);
        let done: Vec<(i64, String)> = journal
            .history(&id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.record {
                Record::StepDone { result: Ok(v), .. } => Some((e.seq, v.as_str().unwrap_or_default().to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), STEPS as usize, "{id} journaled each step once");
        for (seq, value) in done {
            assert_eq!(value, format!("{id}/{seq}"), "the journaled result is the effect's");
        }
    }
    let re_executions = check_effects(&journal, &effects, WORKFLOWS, STEPS, &killed).await;
    println!("{} kills, {generation} engines, {re_executions} steps executed again", killed.len());
}
both_journals!(survives_repeated_sigkill, survives_repeated_sigkill);
