//! Tier 3: ring rollouts on a test clock (bakes of an hour pass in milliseconds).

mod support;

use std::sync::Arc;
use std::time::Duration;

use cellplane::api::cell::ReleaseHealth;
use cellplane::api::ring::RingPhase;
use cellplane::cloud::sim::SimConfig;
use cellplane::fixtures::{cell, ring};
use cellplane_workflows::{Clock, TestClock};
use kube::api::{Patch, PatchParams};
use support::Fleet;

/// The rollout waits on its pause timer (a relative timer starts when the workflow reaches it).
fn sleeping(s: &cellplane::api::DeploymentRingStatus) -> bool {
    s.workflow.as_ref().and_then(|w| w.waiting_for.as_deref()).is_some_and(|w| w.starts_with("sleeping until"))
}

async fn set_version(fleet: &Fleet, ring: &str, version: &str) {
    let patch = serde_json::json!({"spec": {"version": version}});
    fleet.rings().patch(ring, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_zero_rolls_batch_by_batch_and_ring_one_follows_only_after_it_baked() {
    let clock = TestClock::default();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let fleet = Fleet::start(SimConfig { latency: Duration::ZERO, ..SimConfig::default() }, Some(shared)).await;
    for (name, ring_label) in [("canary-1", "canary"), ("prod-1", "prod"), ("prod-2", "prod")] {
        fleet
            .create(&fleet.cells(), &cell(name, "eu-west-1", &[("cellplane.io/ring", ring_label)], 10, "1.0.0"))
            .await
            .unwrap();
    }
    for name in ["canary-1", "prod-1", "prod-2"] {
        fleet.cell_ready(name).await;
    }
    fleet.create(&fleet.rings(), &ring("ring-0", 0, "canary", Some("1.0.0"), "1h")).await.unwrap();
    let mut follower = ring("ring-1", 1, "prod", None, "1h");
    follower.spec.pause_between_batches = "10m".into();
    fleet.create(&fleet.rings(), &follower).await.unwrap();

    // The first version bakes in ring 0 before ring 1 sees it.
    fleet.ring_until("ring-0", "baking 1.0.0", |s| s.phase == Some(RingPhase::Baking) && s.baked_until.is_some()).await;
    fleet.ring_until("ring-1", "waiting for upstream", |s| s.phase == Some(RingPhase::WaitingForUpstream)).await;
    clock.advance(Duration::from_secs(3601));
    fleet.ring_until("ring-0", "baked 1.0.0", |s| s.baked_version.as_deref() == Some("1.0.0")).await;
    fleet
        .ring_until("ring-1", "pausing after batch 1", |s| {
            s.target_version.as_deref() == Some("1.0.0")
                && s.current_batch == Some(1)
                && s.total_batches == Some(2)
                && sleeping(s)
        })
        .await;
    clock.advance(Duration::from_secs(601));
    fleet.ring_until("ring-1", "baking", |s| s.phase == Some(RingPhase::Baking)).await;
    clock.advance(Duration::from_secs(3601));
    fleet.ring_until("ring-1", "baked 1.0.0", |s| s.baked_version.as_deref() == Some("1.0.0")).await;

    // A new version: ring 0 upgrades its canary and bakes; ring 1 keeps the old one meanwhile.
    set_version(&fleet, "ring-0", "1.1.0").await;
    fleet
        .ring_until("ring-0", "baking 1.1.0", |s| {
            s.target_version.as_deref() == Some("1.1.0") && s.phase == Some(RingPhase::Baking)
        })
        .await;
    assert_eq!(fleet.running_release("canary-1").as_deref(), Some("1.1.0"));
    assert_eq!(fleet.running_release("prod-1").as_deref(), Some("1.0.0"));
    let ring1 = fleet.rings().get("ring-1").await.unwrap();
    assert_eq!(ring1.status.unwrap().target_version.as_deref(), Some("1.0.0"), "ring 1 must wait for the bake");

    clock.advance(Duration::from_secs(3601));
    fleet
        .ring_until("ring-1", "first batch of 1.1.0", |s| {
            s.target_version.as_deref() == Some("1.1.0") && s.current_batch == Some(1) && sleeping(s)
        })
        .await;
    // Between batches: the first batch runs the new version, the second does not yet.
    assert_eq!(fleet.running_release("prod-1").as_deref(), Some("1.1.0"));
    assert_eq!(fleet.running_release("prod-2").as_deref(), Some("1.0.0"), "second batch waits for the pause");
    clock.advance(Duration::from_secs(601));
    fleet
        .ring_until("ring-1", "baking 1.1.0", |s| {
            s.target_version.as_deref() == Some("1.1.0") && s.phase == Some(RingPhase::Baking)
        })
        .await;
    assert_eq!(fleet.running_release("prod-2").as_deref(), Some("1.1.0"));
    fleet
        .ring_until("ring-1", "cells by version", |s| {
            s.cells_by_version.first().is_some_and(|v| v.version == "1.1.0" && v.count == 2)
        })
        .await;

    // A bad release stops the ring and says why.
    fleet.services.fail_version("2.0.0");
    set_version(&fleet, "ring-0", "2.0.0").await;
    fleet
        .ring_until("ring-0", "halted", |s| {
            s.phase == Some(RingPhase::Halted)
                && cellplane::api::conditions::find(&s.conditions, "Stalled").is_some_and(|c| {
                    c.status == cellplane::api::ConditionStatus::True && c.message.contains("canary-1")
                })
        })
        .await;
    // The canary runs what it applied, unhealthy; with rollbackPolicy none it stays so.
    let canary = fleet.cells().get("canary-1").await.unwrap().status.unwrap_or_default();
    let release = canary.release.expect("the canary's release");
    assert_eq!((release.version.as_str(), release.health), ("2.0.0", ReleaseHealth::Failed), "{release:?}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_ring_holds_its_next_batch_until_resumed() {
    let fleet = Fleet::start(SimConfig { latency: Duration::ZERO, ..SimConfig::default() }, None).await;
    fleet
        .create(&fleet.cells(), &cell("held-1", "eu-west-1", &[("cellplane.io/ring", "held")], 10, "1.0.0"))
        .await
        .unwrap();
    fleet.cell_ready("held-1").await;
    let mut paused = ring("held", 0, "held", Some("1.1.0"), "0s");
    paused.spec.paused = true;
    fleet.create(&fleet.rings(), &paused).await.unwrap();
    fleet
        .ring_until("held", "paused before its first batch", |s| {
            s.phase == Some(RingPhase::Paused) && s.workflow.as_ref().is_some_and(|w| w.waiting_for.is_some())
        })
        .await;
    assert_eq!(fleet.running_release("held-1").as_deref(), Some("1.0.0"));

    let patch = serde_json::json!({"spec": {"paused": false}});
    fleet.rings().patch("held", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    fleet.ring_until("held", "baked after resuming", |s| s.baked_version.as_deref() == Some("1.1.0")).await;
    assert_eq!(fleet.running_release("held-1").as_deref(), Some("1.1.0"));
    fleet.stop().await;
}
