//! A bake longer than one run of the rollout holds (its gate checks make the history grow)
//! continues as new and goes on where it was, its gates' state carried over, until it bakes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::ring::{Gate, GateKind, GateVerdict, RingPhase};
use cellplane::cloud::sim::SimConfig;
use cellplane::fixtures::{cell, ring};
use cellplane_workflows::{Clock, TestClock};
use support::Fleet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_of_more_checks_than_a_run_holds_continues_as_new_and_bakes() {
    let clock = TestClock::default();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let quick = SimConfig { latency: Duration::ZERO, ..SimConfig::default() };
    let fleet = Fleet::anywhere(quick, |setup| setup.clock = Some(shared)).await;
    let group = fleet.name("long");
    let cell_name = fleet.name("long-a");
    fleet
        .create(&fleet.cells(), &cell(&cell_name, "eu-west-1", &[("cellplane.io/ring", &group)], 10, "1.0.0"))
        .await
        .unwrap();
    fleet.cell_ready(&cell_name).await;
    let name = fleet.name("long");
    let mut long = ring(&name, 0, &group, Some("1.1.0"), "4h");
    // A check a minute for four hours: more than one run of the rollout holds.
    long.spec.gates = vec![Gate {
        name: "ready".into(),
        kind: GateKind::CellConditions,
        conditions: None,
        synthetic: None,
        prometheus: None,
        wait: "0s".into(),
        window: "10m".into(),
        stable_for: "5m".into(),
        interval: "1m".into(),
    }];
    fleet.create(&fleet.rings(), &long).await.unwrap();
    // The batch's gate must hold for five minutes before the bake starts.
    fleet
        .ring_until(&name, "the batch's gate stabilizing", |s| {
            s.gates.first().is_some_and(|g| g.verdict == GateVerdict::Stabilizing)
        })
        .await;
    clock.advance(Duration::from_secs(6 * 60));
    fleet.ring_until(&name, "baking", |s| s.phase == Some(RingPhase::Baking)).await;

    // Four hours pass a minute at a time, each minute's check made before the next.
    let id = fleet.rings().get(&name).await.unwrap().status.unwrap().workflow.expect("the rollout's workflow").id;
    let mut now = checkpoint(&fleet, &id).await;
    while !now.state.is_finished() {
        let due = now.next_attempt_at;
        clock.advance(Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + support::WITHIN;
        now = checkpoint(&fleet, &id).await;
        while now.next_attempt_at == due && !now.state.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "the check due at {due:?} was not made");
            tokio::time::sleep(Duration::from_millis(5)).await;
            now = checkpoint(&fleet, &id).await;
        }
    }
    fleet.ring_until(&name, "1.1.0 baked", |s| s.baked_version.as_deref() == Some("1.1.0")).await;
    let status = fleet.rings().get(&name).await.unwrap().status.unwrap();
    let run = checkpoint(&fleet, &id).await.run;
    assert!(run > 1, "the bake continued as new: run {run}");
    assert_eq!(status.gates.first().map(|g| g.verdict), Some(GateVerdict::Watching), "{:?}", status.gates);
    fleet.stop().await;
}

async fn checkpoint(fleet: &Fleet, id: &str) -> cellplane_workflows::Checkpoint {
    fleet.engine().checkpoint(id).await.unwrap().expect("the rollout's checkpoint")
}
