//! Several engines on one PostgreSQL: they share the work and never run one workflow at once;
//! a killed engine's workflows pass to the other after its lease expires; an owner paused past
//! its lease (SIGSTOP) and resumed (SIGCONT) commits nothing. Either way each step's effect is
//! stored once, and executed again only where the interrupted engine had it in flight.

mod common;

use std::collections::HashMap;

use cellplane_workflows::State;
use common::child::{ChildSpec, check_effects, run_child};
use common::*;
use tokio::io::{BufReader, Lines};
use tokio::process::ChildStdout;

const STEPS: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child engine of the contention tests; runs only with CHILD_* set"]
async fn contention_child() {
    run_child().await
}

fn spec(db: &TestJournal, owner: &str, workflows: u32, step_ms: u64, lease_ms: u64) -> ChildSpec {
    ChildSpec {
        postgres: true,
        url: db.url.clone(),
        schema: db.schema.clone(),
        owner: owner.to_string(),
        workflows,
        steps: STEPS,
        step_ms,
        lease_ms,
    }
}

/// Reads the child's lines until one satisfies `until`.
async fn read_until(lines: &mut Lines<BufReader<ChildStdout>>, until: impl Fn(&str) -> bool) {
    within(async {
        while let Some(line) = lines.next_line().await.expect("child stdout") {
            if until(&line) {
                return;
            }
        }
        panic!("child ended before the expected line");
    })
    .await
}

fn overlaps_between_owners(executions: &[Execution]) -> Vec<String> {
    let mut by_workflow: HashMap<&str, Vec<&Execution>> = HashMap::new();
    for e in executions {
        by_workflow.entry(e.workflow_id.as_str()).or_default().push(e);
    }
    let mut overlaps = Vec::new();
    for (id, runs) in by_workflow {
        for a in &runs {
            for b in &runs {
                if a.owner < b.owner && a.started_ms < b.ended_ms && b.started_ms < a.ended_ms {
                    overlaps.push(format!(
                        "{id}: step {} on {} and step {} on {} ran at once",
                        a.seq, a.owner, b.seq, b.owner
                    ));
                }
            }
        }
    }
    overlaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_work_and_take_over_from_a_killed_one() {
    let db = TestJournal::postgres();
    let journal = db.open().await;
    let effects = db.pool().await;
    effects.create_effects_table().await;
    let (mut a, mut a_lines) = spec(&db, "engine-a", 40, 50, 1_000).spawn("contention_child");
    let (mut b, mut b_lines) = spec(&db, "engine-b", 40, 50, 1_000).spawn("contention_child");
    // Both make progress, then A dies mid-flight.
    read_until(&mut a_lines, |l| l.starts_with("effect ")).await;
    read_until(&mut b_lines, |l| l.starts_with("effect ")).await;
    for _ in 0..20 {
        read_until(&mut a_lines, |l| l.starts_with("effect ")).await;
    }
    a.kill().await.expect("SIGKILL a");
    read_until(&mut b_lines, |l| l == "done").await;
    b.wait().await.expect("b exits");

    let executions = effects.executions().await;
    let owners: std::collections::HashSet<&str> = executions.iter().map(|e| e.owner.as_str()).collect();
    assert!(owners.contains("engine-a") && owners.contains("engine-b"), "both engines worked: {owners:?}");
    assert_eq!(overlaps_between_owners(&executions), Vec::<String>::new());
    let rows = journal.list(None, 100).await.unwrap();
    assert!(rows.iter().all(|r| r.checkpoint.state == State::Completed));
    assert!(rows.iter().any(|r| r.takeovers > 0), "B took over workflows A held when it died");
    check_effects(&journal, &effects, 40, STEPS, &["engine-a".to_string()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_paused_past_its_lease_commits_nothing_after_it_resumes() {
    let db = TestJournal::postgres();
    let journal = db.open().await;
    let effects = db.pool().await;
    effects.create_effects_table().await;
    // Slow steps, so A is inside several steps when it is frozen.
    let (mut a, mut a_lines) = spec(&db, "paused-a", 20, 300, 1_000).spawn("contention_child");
    for _ in 0..10 {
        read_until(&mut a_lines, |l| l.starts_with("effect ")).await;
    }
    let pid = a.id().expect("a runs") as i32;
    signal(pid, "STOP");
    let events_by = |owner: &'static str| {
        let journal = journal.clone();
        async move {
            let mut count = 0;
            for row in journal.list(None, 100).await.unwrap() {
                let history = journal.history(&row.checkpoint.id).await.unwrap();
                count += history.iter().filter(|e| e.owner.as_deref() == Some(owner)).count();
            }
            count
        }
    };
    let (mut b, mut b_lines) = spec(&db, "engine-b", 20, 10, 1_000).spawn("contention_child");
    // Wait until B holds or finished every workflow A had: A's leases expired and were taken.
    eventually("B to take over all of A's workflows", || async {
        let rows = journal.list(None, 100).await.unwrap();
        rows.iter().all(|r| r.checkpoint.owner.as_deref() != Some("paused-a")).then_some(())
    })
    .await;
    // Counted after the takeover: commits A sent just before it froze have landed by now.
    let before = events_by("paused-a").await;
    signal(pid, "CONT");
    // A wakes up, finds its in-flight commits fenced or its leases gone, and lets go of everything.
    read_until(&mut a_lines, |l| l.starts_with("status running=0")).await;
    read_until(&mut b_lines, |l| l == "done").await;
    b.wait().await.expect("b exits");
    a.kill().await.expect("a stops");

    assert_eq!(events_by("paused-a").await, before, "the resumed owner wrote nothing to the journal");
    let re_executions = check_effects(&journal, &effects, 20, STEPS, &["paused-a".to_string()]).await;
    assert!(re_executions > 0, "A was paused inside steps, which B ran again");
}

fn signal(pid: i32, name: &str) {
    let status = std::process::Command::new("kill").args([format!("-{name}"), pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}
