//! Deployment rings as a fleet runs them: week-long bakes across operator restarts, supersession,
//! approval, gates that flap or fail on real scraped metrics, rollback, and rings that may not
//! start. On the real API server `E2E_KUBECONFIG` names when set (as `make test` does), else on
//! an in-memory one; bakes of days pass on a test clock.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cellplane::api::ConditionStatus;
use cellplane::api::DeploymentRingStatus;
use cellplane::api::common::WorkflowState;
use cellplane::api::conditions;
use cellplane::api::ring::{
    Admission, Approval, Comparison, Gate, GateKind, GateVerdict, HALTED, PrometheusGate, RingPhase, RollbackPolicy,
    SyntheticGate, SyntheticProbes,
};
use cellplane::cell::sim::SimCellServices;
use cellplane::cli::rings::{ClusterArgs, RingsCommand, describe, steer};
use cellplane::cloud::sim::SimConfig;
use cellplane::fixtures::{cell, ring};
use cellplane_workflows::{Clock, TestClock};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use support::Fleet;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn quick() -> SimConfig {
    SimConfig { latency: Duration::ZERO, ..SimConfig::default() }
}

async fn on_test_clock() -> (Fleet, TestClock) {
    let clock = TestClock::default();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (Fleet::anywhere(quick(), |setup| setup.clock = Some(shared)).await, clock)
}

/// Creates Ready cells labelled `cellplane.io/ring: <group>`, running 1.0.0; returns their names.
async fn cells(fleet: &Fleet, group: &str, bases: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for base in bases {
        let name = fleet.name(base);
        fleet
            .create(&fleet.cells(), &cell(&name, "eu-west-1", &[("cellplane.io/ring", group)], 10, "1.0.0"))
            .await
            .unwrap();
        names.push(name);
    }
    for name in &names {
        fleet.cell_ready(name).await;
    }
    names
}

async fn patch_ring(fleet: &Fleet, name: &str, patch: serde_json::Value) {
    fleet.rings().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn phase(s: &DeploymentRingStatus) -> Option<RingPhase> {
    s.phase
}

fn sleeping(s: &DeploymentRingStatus) -> bool {
    s.workflow.as_ref().and_then(|w| w.waiting_for.as_deref()).is_some_and(|w| w.starts_with("sleeping until"))
}

/// Whether the rollout has run since the clock last moved past the time it slept until: it
/// sleeps until a time after `now`, or it has finished. Right after an advance the status still
/// shows the old wake-up time, which is no later than `now`, so only a rollout that looked at
/// the new time (and decided what it means) reads so.
fn ran_at(s: &DeploymentRingStatus, clock: &TestClock) -> bool {
    let now = k8s_openapi::jiff::Timestamp::from_millisecond(clock.now_ms()).expect("a test clock time");
    s.workflow.as_ref().is_some_and(|w| {
        let finished = matches!(w.state, WorkflowState::Completed | WorkflowState::Failed | WorkflowState::Cancelled);
        finished || w.next_attempt_at.as_ref().is_some_and(|at| at.0 > now)
    })
}

fn gate_verdict(s: &DeploymentRingStatus) -> Option<GateVerdict> {
    s.gates.first().map(|g| g.verdict)
}

fn condition(s: &DeploymentRingStatus, type_: &str) -> Option<(ConditionStatus, String, String)> {
    conditions::find(&s.conditions, type_).map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

/// The versions the cloud upgraded `cell` to, in order.
/// The versions `cell` installed after its first, in order.
fn upgrades(fleet: &Fleet, cell: &str) -> Vec<String> {
    fleet.installs(cell).into_iter().skip(1).collect()
}

fn gate(name: &str, kind: GateKind) -> Gate {
    Gate {
        name: name.into(),
        kind,
        conditions: None,
        synthetic: None,
        prometheus: None,
        wait: "0s".into(),
        window: "10m".into(),
        stable_for: "5m".into(),
        interval: "1m".into(),
    }
}

/// Sets ring `name` (one cell per batch, an hour's pause) to `version` and takes it through its
/// batches on the test clock until it bakes.
async fn roll_into_bake(fleet: &Fleet, clock: &TestClock, name: &str, version: &'static str) {
    patch_ring(fleet, name, serde_json::json!({"spec": {"version": version}})).await;
    fleet
        .ring_until(name, &format!("{version} in its first batch"), move |s| {
            s.target_version.as_deref() == Some(version) && s.current_batch == Some(1) && sleeping(s)
        })
        .await;
    clock.advance(HOUR + Duration::from_secs(1));
    fleet
        .ring_until(name, &format!("baking {version}"), move |s| {
            s.target_version.as_deref() == Some(version) && phase(s) == Some(RingPhase::Baking)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_long_bake_survives_restarts_and_a_newer_version_supersedes_it_before_downstream_sees_it() {
    let (mut fleet, clock) = on_test_clock().await;
    let main_cells = cells(&fleet, "main", &["main-a", "main-b"]).await;
    let next_cells = cells(&fleet, "next", &["next-a"]).await;
    let (main, next) = (fleet.name("main"), fleet.name("next"));
    let mut first = ring(&main, 0, "main", Some("1.1.0"), "7d");
    first.spec.pause_between_batches = "1h".into();
    // Checked once a day through the bake: the moments the rollout looks at the clock.
    let daily = Gate { stable_for: "0s".into(), interval: "1d".into(), ..gate("ready", GateKind::CellConditions) };
    first.spec.gates = vec![daily];
    fleet.create(&fleet.rings(), &first).await.unwrap();
    let mut follower = ring(&next, 1, "next", None, "0s");
    follower.spec.order = None;
    follower.spec.upstream = Some(main.clone());
    fleet.create(&fleet.rings(), &follower).await.unwrap();

    // Mid-batch: the first cell runs 1.1.0, the second waits out the pause; a crash loses nothing.
    fleet.ring_until(&main, "pausing after batch 1", |s| s.current_batch == Some(1) && sleeping(s)).await;
    fleet.crash_and_restart().await;
    clock.advance(HOUR + Duration::from_secs(1));
    fleet.ring_until(&main, "baking 1.1.0", |s| phase(s) == Some(RingPhase::Baking)).await;
    let status = fleet.rings().get(&main).await.unwrap().status.unwrap();
    let (started, until) = (status.started_at.unwrap().0, status.baked_until.unwrap().0);
    assert!(until.duration_since(started).as_secs() >= 7 * 24 * 3600, "bakes 7 days: {started} .. {until}");
    for cell in &main_cells {
        assert_eq!(upgrades(&fleet, cell), ["1.1.0"], "{cell} upgraded once, whatever the crash");
    }

    // Mid-bake: three days in, a crash; the bake goes on where it was.
    clock.advance(3 * DAY);
    fleet.crash_and_restart().await;
    clock.advance(4 * DAY + Duration::from_secs(1));
    fleet.ring_until(&main, "1.1.0 baked", |s| s.baked_version.as_deref() == Some("1.1.0")).await;
    fleet.ring_until(&next, "1.1.0 baked downstream", |s| s.baked_version.as_deref() == Some("1.1.0")).await;

    // 1.2.0 starts baking; two days in, 1.3.0 supersedes it. Downstream never sees 1.2.0.
    roll_into_bake(&fleet, &clock, &main, "1.2.0").await;
    clock.advance(2 * DAY);
    roll_into_bake(&fleet, &clock, &main, "1.3.0").await;
    clock.advance(6 * DAY);
    let (day_six, at) = (clock.clone(), clock.now_ms());
    fleet.ring_until(&main, "1.3.0's rollout checked on day six", move |s| ran_at(s, &day_six)).await;
    let status = fleet.rings().get(&main).await.unwrap().status.unwrap();
    assert_eq!(status.baked_version.as_deref(), Some("1.1.0"), "1.3.0's bake started over: six days are not seven");
    assert!(status.baked_until.as_ref().is_some_and(|until| until.0.as_millisecond() > at), "{:?}", status.baked_until);
    clock.advance(DAY + Duration::from_secs(1));
    fleet.ring_until(&next, "1.3.0 baked downstream", |s| s.baked_version.as_deref() == Some("1.3.0")).await;
    assert_eq!(upgrades(&fleet, &next_cells[0]), ["1.1.0", "1.3.0"], "downstream skipped the superseded 1.2.0");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_comes_from_the_spec_or_the_cli_names_one_version_and_is_recorded() {
    let (fleet, _clock) = on_test_clock().await;
    let [gated] = <[String; 1]>::try_from(cells(&fleet, "gated", &["gated-a"]).await).unwrap();
    let name = fleet.name("gated");
    let mut manual = ring(&name, 0, "gated", Some("1.1.0"), "0s");
    manual.spec.manual_approval = true;
    fleet.create(&fleet.rings(), &manual).await.unwrap();
    fleet.ring_until(&name, "waiting for approval", |s| phase(s) == Some(RingPhase::WaitingForApproval)).await;
    assert!(upgrades(&fleet, &gated).is_empty(), "nothing rolls before the approval");
    let shown = describe(&fleet.rings().get(&name).await.unwrap(), &[]);
    assert!(shown.contains(&format!("approval: waiting (cellplane rings approve {name})")), "{shown}");

    // An approval of another version does not count.
    let approval = |version: &str, by: &str| serde_json::json!({"spec": {"approval": Approval { version: version.into(), approved_by: Some(by.into()) }}});
    patch_ring(&fleet, &name, approval("1.0.9", "mallory")).await;
    patch_ring(&fleet, &name, approval("1.1.0", "alice@example.com")).await;
    fleet.ring_until(&name, "1.1.0 baked", |s| s.baked_version.as_deref() == Some("1.1.0")).await;
    let status = fleet.rings().get(&name).await.unwrap().status.unwrap();
    let recorded = status.approval.unwrap();
    assert_eq!((recorded.version.as_str(), recorded.approved_by.as_deref()), ("1.1.0", Some("alice@example.com")));
    assert!(recorded.approved_at.is_some());

    // A new version needs a new approval: the CLI's.
    patch_ring(&fleet, &name, serde_json::json!({"spec": {"version": "1.2.0"}})).await;
    fleet
        .ring_until(&name, "waiting for approval of 1.2.0", |s| {
            s.target_version.as_deref() == Some("1.2.0") && phase(s) == Some(RingPhase::WaitingForApproval)
        })
        .await;
    assert_eq!(upgrades(&fleet, &gated), ["1.1.0"]);
    let approve = RingsCommand::Approve {
        ring: name.clone(),
        version: None,
        by: Some("bob".into()),
        cluster: ClusterArgs { kubeconfig: None },
    };
    let said = steer(&fleet.rings(), &name, approve).await.unwrap();
    assert_eq!(said, format!("approved 1.2.0 in ring {name} as bob"));
    fleet.ring_until(&name, "1.2.0 baked", |s| s.baked_version.as_deref() == Some("1.2.0")).await;
    let shown = describe(&fleet.rings().get(&name).await.unwrap(), &[]);
    assert!(shown.contains("approval: 1.2.0 by bob"), "{shown}");
    assert_eq!(upgrades(&fleet, &gated), ["1.1.0", "1.2.0"]);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_flaps_inside_stable_for_starts_its_stable_period_over() {
    let (fleet, clock) = on_test_clock().await;
    let [canary] = <[String; 1]>::try_from(cells(&fleet, "flappy", &["flappy-a"]).await).unwrap();
    let name = fleet.name("flappy");
    let mut flappy = ring(&name, 0, "flappy", Some("1.0.0"), "1h");
    flappy.spec.admits = Admission { synthetic_only: true, ..Admission::default() };
    flappy.spec.synthetic = SyntheticProbes { enabled: Some(true), interval: "1s".into() };
    let mut synthetic = gate("probes", GateKind::Synthetic);
    synthetic.synthetic = Some(SyntheticGate { min_success_ratio: 0.9, max_p99_millis: 60_000 });
    synthetic.window = "1h".into();
    synthetic.stable_for = "10m".into();
    flappy.spec.gates = vec![synthetic];
    fleet.create(&fleet.rings(), &flappy).await.unwrap();
    let ratio =
        |c: &cellplane::api::Cell| c.status.as_ref().and_then(|s| s.synthetic.as_ref()).map(|s| s.success_ratio());
    fleet.cell_until(&canary, "probed healthy", move |c| ratio(c) == Some(1.0)).await;

    // Healthy: the stable period starts.
    let since = |s: &DeploymentRingStatus| s.gates.first().and_then(|g| g.since.clone()).map(|t| t.0);
    clock.advance(Duration::from_secs(60));
    fleet.ring_until(&name, "stabilizing", |s| gate_verdict(s) == Some(GateVerdict::Stabilizing)).await;
    let first = since(&fleet.rings().get(&name).await.unwrap().status.unwrap());
    // Unhealthy inside stableFor: back to waiting.
    fleet.services.outage(&canary, true);
    fleet.cell_until(&canary, "probes failing", move |c| ratio(c).is_some_and(|r| r < 0.9)).await;
    clock.advance(Duration::from_secs(60));
    fleet.ring_until(&name, "waiting again", |s| gate_verdict(s) == Some(GateVerdict::Waiting)).await;
    // Healthy again: a new stable period, which must run in full.
    fleet.services.outage(&canary, false);
    fleet.cell_until(&canary, "probes recovered", move |c| ratio(c).is_some_and(|r| r >= 0.9)).await;
    clock.advance(Duration::from_secs(60));
    fleet.ring_until(&name, "stabilizing again", |s| gate_verdict(s) == Some(GateVerdict::Stabilizing)).await;
    let second = since(&fleet.rings().get(&name).await.unwrap().status.unwrap());
    assert!(second > first, "the stable period started over: {first:?} then {second:?}");
    // Ten minutes after the first healthy check the gate has not passed: it needs ten from the second.
    clock.advance(Duration::from_secs(8 * 60));
    let eight_minutes = clock.clone();
    fleet.ring_until(&name, "the gate checked eight minutes on", move |s| ran_at(s, &eight_minutes)).await;
    let status = fleet.rings().get(&name).await.unwrap().status.unwrap();
    assert_eq!((gate_verdict(&status), phase(&status)), (Some(GateVerdict::Stabilizing), Some(RingPhase::Progressing)));
    clock.advance(Duration::from_secs(2 * 60 + 1));
    fleet.ring_until(&name, "passed, baking", |s| phase(s) == Some(RingPhase::Baking)).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rings_that_select_one_cell_both_stall_naming_the_other_and_nothing_rolls() {
    let (fleet, _clock) = on_test_clock().await;
    let [shared] = <[String; 1]>::try_from(cells(&fleet, "shared", &["shared-a"]).await).unwrap();
    let (first, second) = (fleet.name("first"), fleet.name("second"));
    fleet.create(&fleet.rings(), &ring(&first, 0, "shared", Some("1.1.0"), "0s")).await.unwrap();
    fleet.create(&fleet.rings(), &ring(&second, 1, "shared", Some("1.1.0"), "0s")).await.unwrap();
    for (ring, other) in [(&first, &second), (&second, &first)] {
        let other = format!("ring {other}");
        fleet
            .ring_until(ring, "stalled by the conflict", move |s| {
                condition(s, "Stalled").is_some_and(|(status, reason, message)| {
                    status == ConditionStatus::True && reason == "RingConflict" && message.contains(&other)
                })
            })
            .await;
    }
    assert!(upgrades(&fleet, &shared).is_empty(), "neither ring rolled");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_synthetic_probe_halts_ring_zero_and_ring_one_does_not_start() {
    let fleet = Fleet::anywhere(quick(), |_| {}).await;
    let [canary] = <[String; 1]>::try_from(cells(&fleet, "zero", &["zero-a"]).await).unwrap();
    let [prod] = <[String; 1]>::try_from(cells(&fleet, "one", &["one-a"]).await).unwrap();
    let (zero, one) = (fleet.name("ring-0"), fleet.name("ring-1"));
    let mut ring0 = ring(&zero, 0, "zero", Some("1.0.0"), "1s");
    ring0.spec.admits = Admission { synthetic_only: true, ..Admission::default() };
    ring0.spec.synthetic.interval = "1s".into();
    let mut probes = gate("probes", GateKind::Synthetic);
    (probes.window, probes.stable_for, probes.interval) = ("30s".into(), "5s".into(), "1s".into());
    ring0.spec.gates = vec![probes];
    fleet.create(&fleet.rings(), &ring0).await.unwrap();
    let mut ring1 = ring(&one, 1, "one", None, "0s");
    ring1.spec.order = None;
    ring1.spec.upstream = Some(zero.clone());
    fleet.create(&fleet.rings(), &ring1).await.unwrap();
    fleet.ring_until(&one, "1.0.0 baked after ring 0", |s| s.baked_version.as_deref() == Some("1.0.0")).await;

    patch_ring(&fleet, &zero, serde_json::json!({"spec": {"version": "1.1.0-broken"}})).await;
    fleet
        .ring_until(&zero, "halted by the gate", |s| {
            phase(s) == Some(RingPhase::Halted)
                && condition(s, HALTED).is_some_and(|(status, reason, message)| {
                    status == ConditionStatus::True && reason == "GateFailed" && message.contains("gate probes failed")
                })
        })
        .await;
    let halted = format!("upstream ring {zero} is halted");
    fleet
        .ring_until(&one, "waiting on the halted upstream", move |s| {
            phase(s) == Some(RingPhase::WaitingForUpstream)
                && condition(s, "Ready").is_some_and(|(_, _, message)| message.contains(&halted))
        })
        .await;
    assert_eq!(upgrades(&fleet, &canary), ["1.1.0-broken"], "rollbackPolicy none leaves the canary as it is");
    assert!(upgrades(&fleet, &prod).is_empty(), "ring 1 never started 1.1.0-broken");
    let probed = fleet.cells().get(&canary).await.unwrap().status.unwrap().synthetic.unwrap();
    assert!(probed.last_error.as_deref().is_some_and(|e| e.contains("resets connections")), "{probed:?}");
    fleet.stop().await;
}

/// The real Prometheus (Debian's package), scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Option<Prometheus> {
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let scrape = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cellplane\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(&config, scrape).unwrap();
        let port = free_port();
        let spawned = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => Some(Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }),
            Err(e) if std::env::var_os("CONSOLE_REQUIRE_BROWSER").is_some() => {
                panic!("{binary}: {e} (scripts/with-browser.sh installs Debian's prometheus package)")
            }
            Err(e) => {
                eprintln!("SKIPPED: {binary}: {e}; run `make test`, which installs it");
                None
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_gate_fails_on_real_scraped_metrics_and_the_batch_rolls_back() {
    let registry = prometheus::Registry::new();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = metrics.local_addr().unwrap().to_string();
    let Some(prometheus) = Prometheus::start(&target) else { return };
    let token = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cellplane::http::serve(metrics, registry.clone(), Arc::new(|| true), token.clone()));
    let url = prometheus.url.clone();
    let fleet = Fleet::anywhere(quick(), |setup| {
        setup.registry = registry;
        setup.prometheus = Some(url);
    })
    .await;
    let canaries = cells(&fleet, "scraped", &["scraped-a", "scraped-b"]).await;
    let name = fleet.name("scraped");
    let mut scraped = ring(&name, 0, "scraped", Some("1.0.0"), "2s");
    scraped.spec.synthetic = SyntheticProbes { enabled: Some(true), interval: "1s".into() };
    scraped.spec.max_batch = IntOrString::String("100%".into());
    scraped.spec.rollback_policy = RollbackPolicy::Automatic;
    let mut errors = gate("success-ratio", GateKind::Prometheus);
    errors.prometheus = Some(PrometheusGate {
        address: None,
        query: "min_over_time(cellplane_synthetic_success_ratio{cell=\"{cell}\"}[5s])".into(),
        comparison: Comparison::Ge,
        threshold: 0.9,
    });
    (errors.wait, errors.window, errors.stable_for, errors.interval) =
        ("3s".into(), "30s".into(), "10s".into(), "1s".into());
    scraped.spec.gates = vec![errors];
    fleet.create(&fleet.rings(), &scraped).await.unwrap();
    // 1.0.0 passes on what Prometheus scraped: no data would have failed it.
    fleet.ring_until(&name, "1.0.0 baked", |s| s.baked_version.as_deref() == Some("1.0.0")).await;
    let passed = fleet.rings().get(&name).await.unwrap().status.unwrap();
    assert!(passed.gates.iter().all(|g| g.value.contains("ge 0.9")), "{:?}", passed.gates);

    patch_ring(&fleet, &name, serde_json::json!({"spec": {"version": "1.1.0-broken"}})).await;
    fleet
        .ring_until(&name, "halted and rolled back", |s| {
            phase(s) == Some(RingPhase::Halted) && s.rollback.as_ref().is_some_and(|r| r.cells.len() == 2)
        })
        .await;
    let status = fleet.rings().get(&name).await.unwrap().status.unwrap();
    let rollback = status.rollback.unwrap();
    assert_eq!(rollback.from, "1.1.0-broken");
    assert!(rollback.reason.contains("gate success-ratio failed"), "{}", rollback.reason);
    for cell in &canaries {
        assert_eq!(upgrades(&fleet, cell), ["1.1.0-broken", "1.0.0"], "{cell} is back on 1.0.0");
        assert!(rollback.cells.iter().any(|c| &c.cell == cell && c.version == "1.0.0"));
    }
    token.cancel();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_its_progress_deadline_stalls_naming_the_cell_and_an_abort_halts_the_ring() {
    let clock = TestClock::default();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let slow = Arc::new(SimCellServices::new(Duration::from_millis(1)).with_release_latency(Duration::from_secs(8)));
    let fleet = Fleet::anywhere(quick(), |setup| {
        setup.clock = Some(shared);
        setup.services = slow;
    })
    .await;
    let [slow_cell] = <[String; 1]>::try_from(cells(&fleet, "slow", &["slow-a"]).await).unwrap();
    let name = fleet.name("slow");
    let mut late = ring(&name, 0, "slow", Some("1.1.0"), "1h");
    late.spec.progress_deadline = "1m".into();
    fleet.create(&fleet.rings(), &late).await.unwrap();
    fleet
        .ring_until(&name, "upgrading batch 1", |s| {
            s.current_batch == Some(1) && s.workflow.as_ref().is_some_and(|w| w.waiting_for.is_some())
        })
        .await;
    clock.advance(Duration::from_secs(61));
    let named = slow_cell.clone();
    fleet
        .ring_until(&name, "stalled past the deadline", move |s| {
            condition(s, "Stalled").is_some_and(|(status, reason, message)| {
                status == ConditionStatus::True && reason == "ProgressDeadlineExceeded" && message.contains(&named)
            })
        })
        .await;

    let abort = RingsCommand::Abort { ring: name.clone(), cluster: ClusterArgs { kubeconfig: None } };
    let said = steer(&fleet.rings(), &name, abort).await.unwrap();
    assert!(said.starts_with("aborted the rollout of 1.1.0"), "{said}");
    fleet
        .ring_until(&name, "halted by the abort", |s| {
            phase(s) == Some(RingPhase::Halted)
                && condition(s, HALTED)
                    .is_some_and(|(status, reason, _)| status == ConditionStatus::True && reason == "Aborted")
        })
        .await;
    fleet.stop().await;
}
