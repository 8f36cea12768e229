//! Tier 3: the real controllers and engine with the sim cloud, on the in-memory API server.

mod support;

use std::time::Duration;

use cellplane::api::namespace::Tier;
use cellplane::cell::ledger::Effect;
use cellplane::cloud::sim::SimConfig;
use cellplane::fixtures::{self, cell, ring};
use support::Fleet;

fn quick_cloud() -> SimConfig {
    SimConfig { latency: Duration::from_millis(2), transient_failure_rate: 0.1, seed: 42, ..SimConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cells_twenty_namespaces_and_two_rings_converge_to_ready() {
    let fleet = Fleet::start(quick_cloud(), None).await;
    let cells = [
        cell("canary-1", "eu-west-1", &[("cellplane.io/ring", "canary")], 10, "1.0.0"),
        cell("prod-1", "eu-west-1", &[("cellplane.io/ring", "prod"), ("cellplane.io/tier", "critical")], 10, "1.0.0"),
        cell("prod-2", "us-east-1", &[("cellplane.io/ring", "prod")], 10, "1.0.0"),
    ];
    for c in &cells {
        fleet.create(&fleet.cells(), c).await.unwrap();
    }
    for i in 0..20 {
        let (region, tier) = if i % 2 == 0 { ("eu-west-1", Tier::Standard) } else { ("us-east-1", Tier::Standard) };
        let tier = if i % 5 == 0 { Tier::Critical } else { tier };
        let region = if tier == Tier::Critical { "eu-west-1" } else { region };
        fleet.create(&fleet.namespaces(), &fleet.tenant(&format!("tenant-{i}"), region, tier)).await.unwrap();
    }
    fleet.create(&fleet.rings(), &ring("ring-0", 0, "canary", Some("1.0.0"), "0s")).await.unwrap();
    fleet.create(&fleet.rings(), &ring("ring-1", 1, "prod", None, "0s")).await.unwrap();

    for c in &cells {
        let ready = fleet.cell_ready(c.metadata.name.as_deref().unwrap()).await;
        assert_eq!(ready.status.unwrap().running_version.as_deref(), Some("1.0.0"));
    }
    for i in 0..20 {
        let ns = fleet.namespace_ready(&format!("tenant-{i}")).await;
        let status = ns.status.unwrap();
        let cell = status.assigned_cell.expect("placed");
        assert!(status.endpoint.unwrap().starts_with(&format!("tenant-{i}.")));
        if i % 5 == 0 {
            assert_eq!(cell, "prod-1", "critical tenants go to the critical cell");
        }
    }
    for name in ["ring-0", "ring-1"] {
        let baked = |r: Option<&cellplane::api::DeploymentRing>| {
            r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.baked_version.as_deref() == Some("1.0.0"))
        };
        fixtures::wait_for(&fleet.rings(), name, "baked 1.0.0", support::WITHIN, baked).await.unwrap();
    }
    assert!(fleet.cloud.duplicates().is_empty(), "duplicates: {:?}", fleet.cloud.duplicates());
    fleet.stop().await;
}

fn ready_status<K: kube::Resource>(obj: &K, conditions: &[cellplane::api::Condition]) -> bool {
    fixtures::is_ready(obj, conditions)
}

fn condition(conditions: &[cellplane::api::Condition], type_: &str) -> Option<cellplane::api::Condition> {
    cellplane::api::conditions::find(conditions, type_).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_releases_its_capacity_and_removes_its_finalizer() {
    let fleet = Fleet::start(quick_cloud(), None).await;
    fleet.create(&fleet.cells(), &cell("solo", "eu-west-1", &[], 1, "1.0.0")).await.unwrap();
    fleet.create(&fleet.namespaces(), &fleet.tenant("first", "eu-west-1", Tier::Standard)).await.unwrap();
    let first = fleet.namespace_ready("first").await;
    assert!(first.metadata.finalizers.unwrap_or_default().contains(&"cellplane.io/teardown".to_string()));
    assert_eq!(fleet.services.live().len(), 3, "database, certificates and route exist");

    fleet.create(&fleet.namespaces(), &fleet.tenant("second", "eu-west-1", Tier::Standard)).await.unwrap();
    let waits_for_room = |n: Option<&cellplane::api::Namespace>| {
        let conditions = n.and_then(|n| n.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
        condition(&conditions, "Ready").is_some_and(|c| c.message.contains("full (1/1 namespaces)"))
    };
    fixtures::wait_for(&fleet.namespaces(), "second", "waits for room", support::WITHIN, waits_for_room).await.unwrap();

    fleet.namespaces().delete("first", &Default::default()).await.unwrap();
    fleet.gone(&fleet.namespaces(), "first").await;
    assert!(fleet.services.live().iter().all(|o| !o.ends_with("/first")), "{:?}", fleet.services.live());
    let second = fleet.namespace_ready("second").await;
    assert_eq!(second.status.unwrap().assigned_cell.as_deref(), Some("solo"));
    let one_used = |c: Option<&cellplane::api::Cell>| {
        c.and_then(|c| c.status.as_ref()).and_then(|s| s.capacity_used.clone()).is_some_and(|u| u.namespaces == 1)
    };
    fixtures::wait_for(&fleet.cells(), "solo", "1 namespace used", support::WITHIN, one_used).await.unwrap();
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_namespaces_at_once_never_overcommit_a_cell() {
    let fleet = Fleet::start(SimConfig { latency: Duration::ZERO, ..SimConfig::default() }, None).await;
    for name in ["cell-a", "cell-b"] {
        fleet.create(&fleet.cells(), &cell(name, "eu-west-1", &[], 30, "1.0.0")).await.unwrap();
    }
    fleet.cell_ready("cell-a").await;
    fleet.cell_ready("cell-b").await;
    let api = fleet.namespaces();
    let creates = (0..100).map(|i| {
        let (api, tenant) = (api.clone(), fleet.tenant(&format!("ns-{i}"), "eu-west-1", Tier::Standard));
        let fleet = &fleet;
        async move { fleet.create(&api, &tenant).await }
    });
    for result in futures::future::join_all(creates).await {
        result.unwrap();
    }
    let settled = |n: Option<&cellplane::api::Namespace>| {
        let Some(n) = n else { return false };
        let conditions = n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        ready_status(n, &conditions)
            || condition(&conditions, "Ready").is_some_and(|c| c.message.contains("full (30/30 namespaces)"))
    };
    let mut per_cell = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..100 {
        let name = format!("ns-{i}");
        let Ok(Some(ns)) = fixtures::wait_for(&api, &name, "Ready or refused", Duration::from_secs(120), settled).await
        else {
            let ns = api.get(&name).await.unwrap();
            panic!("{name} did not settle: {:#?}", ns.status);
        };
        let conditions = ns.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        if ready_status(&ns, &conditions) {
            *per_cell.entry(ns.status.unwrap().assigned_cell.unwrap()).or_default() += 1;
        }
    }
    assert_eq!(per_cell.values().sum::<usize>(), 60, "{per_cell:?}");
    assert!(per_cell.values().all(|n| *n == 30), "{per_cell:?}");
    for name in ["cell-a", "cell-b"] {
        let used = |c: Option<&cellplane::api::Cell>| {
            c.and_then(|c| c.status.as_ref()).and_then(|s| s.capacity_used.clone()).is_some_and(|u| u.namespaces == 30)
        };
        fixtures::wait_for(&fleet.cells(), name, "30 used", support::WITHIN, used).await.unwrap();
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_flight_converges_with_no_duplicate_and_no_leak() {
    let config =
        SimConfig { latency: Duration::from_millis(20), transient_failure_rate: 0.2, seed: 9, ..SimConfig::default() };
    let mut fleet = Fleet::start(config, None).await;
    let cells = ["crash-a", "crash-b", "crash-c"];
    for name in cells {
        fleet.create(&fleet.cells(), &cell(name, "eu-west-1", &[], 10, "1.0.0")).await.unwrap();
    }
    for i in 0..8 {
        fleet
            .create(&fleet.namespaces(), &fleet.tenant(&format!("crash-ns-{i}"), "eu-west-1", Tier::Standard))
            .await
            .unwrap();
    }
    let network_ready = |c: Option<&cellplane::api::Cell>| {
        let conditions = c.and_then(|c| c.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
        condition(&conditions, "NetworkReady").is_some_and(|c| c.status == cellplane::api::ConditionStatus::True)
    };
    fixtures::wait_for(&fleet.cells(), "crash-a", "network created", support::WITHIN, network_ready).await.unwrap();
    fleet.crash_and_restart().await;

    for name in cells {
        fleet.cell_ready(name).await;
    }
    for i in 0..8 {
        fleet.namespace_ready(&format!("crash-ns-{i}")).await;
    }
    for i in 0..8 {
        fleet.namespaces().delete(&format!("crash-ns-{i}"), &Default::default()).await.unwrap();
    }
    for i in 0..8 {
        fleet.gone(&fleet.namespaces(), &format!("crash-ns-{i}")).await;
    }
    for name in cells {
        fleet.cells().delete(name, &Default::default()).await.unwrap();
    }
    for name in cells {
        fleet.gone(&fleet.cells(), name).await;
    }
    assert!(fleet.cloud.duplicates().is_empty(), "created twice: {:?}", fleet.cloud.duplicates());
    assert!(fleet.cloud.leaks(cells).is_empty(), "leaked: {:?}", fleet.cloud.leaks(cells));
    assert!(fleet.services.live().is_empty(), "left in cells: {:?}", fleet.services.live());
    let in_cells = fleet.services.ledger();
    let databases = in_cells.executions().into_iter().filter(|e| e.effect == Effect::Database && e.key.is_some());
    assert!(databases.count() >= 8, "every tenant's database was made: {:?}", in_cells.executions());
    assert!(in_cells.duplicates().is_empty(), "made twice in cells: {:?}", in_cells.duplicates());
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_is_stalled_without_a_hot_loop() {
    let fleet = Fleet::start(quick_cloud(), None).await;
    let mut bad = fleet.tenant("bad-template", "eu-west-1", Tier::Standard);
    // What the schema cannot refuse: the template names both, but renders no hostname.
    bad.spec.endpoint.hostname_template = "{namespace}..{account}.{cell}.{domain}".into();
    fleet.create(&fleet.namespaces(), &bad).await.unwrap();
    let mut bad_ring = ring("bad-ring", 0, "canary", Some("1.0.0"), "0s");
    bad_ring.spec.min_bake_time = "5 weeks".into();
    fleet.create(&fleet.rings(), &bad_ring).await.unwrap();

    let stalled = |conditions: &[cellplane::api::Condition]| {
        condition(conditions, "Stalled")
            .is_some_and(|c| c.status == cellplane::api::ConditionStatus::True && c.reason == "InvalidSpec")
    };
    fixtures::wait_for(&fleet.namespaces(), "bad-template", "Stalled", support::WITHIN, move |n| {
        stalled(&n.and_then(|n| n.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default())
    })
    .await
    .unwrap();
    let ring = fixtures::wait_for(&fleet.rings(), "bad-ring", "Stalled", support::WITHIN, move |r| {
        stalled(&r.and_then(|r| r.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default())
    })
    .await
    .unwrap()
    .unwrap();
    let message = condition(&ring.status.unwrap().conditions, "Stalled").unwrap().message;
    assert!(message.contains("minBakeTime"), "{message}");

    // A hot loop would read or write the stalled objects again and again. While the operator
    // places and provisions a good namespace (steps, reconciles, status writes: real work whose
    // end the test observes), they are left alone.
    let touches_bad = |server: &cellplane_memapi::ApiServer| {
        let bad = |r: &cellplane_memapi::RequestRecord| matches!(r.name.as_deref(), Some("bad-template" | "bad-ring"));
        server.requests().iter().filter(|r| bad(r)).count()
    };
    let before = touches_bad(fleet.server());
    fleet.create(&fleet.cells(), &cell("good-cell", "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
    fleet.create(&fleet.namespaces(), &fleet.tenant("good", "eu-west-1", Tier::Standard)).await.unwrap();
    fleet.namespace_ready("good").await;
    let during = touches_bad(fleet.server()) - before;
    assert!(during <= 2, "{during} requests about the stalled objects while another namespace was provisioned");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cell_waits_for_its_namespaces_and_names_them() {
    let fleet = Fleet::start(quick_cloud(), None).await;
    fleet.create(&fleet.cells(), &cell("busy", "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
    fleet.create(&fleet.namespaces(), &fleet.tenant("tenant-x", "eu-west-1", Tier::Standard)).await.unwrap();
    fleet.namespace_ready("tenant-x").await;

    fleet.cells().delete("busy", &Default::default()).await.unwrap();
    let blocked = |c: Option<&cellplane::api::Cell>| {
        let conditions = c.and_then(|c| c.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
        condition(&conditions, "Deleting")
            .is_some_and(|d| d.reason == "NamespacesRemain" && d.message.contains("tenant-x"))
    };
    fixtures::wait_for(&fleet.cells(), "busy", "Deleting names tenant-x", support::WITHIN, blocked).await.unwrap();
    assert!(!fleet.cloud.live_in("busy").is_empty(), "nothing is torn down while a tenant lives there");

    fleet.namespaces().delete("tenant-x", &Default::default()).await.unwrap();
    fleet.gone(&fleet.namespaces(), "tenant-x").await;
    fleet.gone(&fleet.cells(), "busy").await;
    assert!(fleet.cloud.leaks(["busy"]).is_empty(), "leaked: {:?}", fleet.cloud.leaks(["busy"]));
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_is_applied_by_the_cell_workflow() {
    let fleet = Fleet::start(quick_cloud(), None).await;
    fleet.create(&fleet.cells(), &cell("growing", "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
    fleet.cell_ready("growing").await;
    let patch = serde_json::json!({"spec": {"cluster": {"nodePools": [
        {"name": "general", "instanceType": "sim.large", "minNodes": 1, "maxNodes": 3},
        {"name": "gpu", "instanceType": "sim.gpu", "minNodes": 0, "maxNodes": 2}
    ]}, "version": "1.2.0"}});
    let params = kube::api::PatchParams::default();
    fleet.cells().patch("growing", &params, &kube::api::Patch::Merge(&patch)).await.unwrap();
    let applied = |c: Option<&cellplane::api::Cell>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
            s.running_version.as_deref() == Some("1.2.0")
                && s.resources.as_ref().is_some_and(|r| r.node_pool_ids.contains_key("gpu"))
        })
    };
    fixtures::wait_for(&fleet.cells(), "growing", "gpu pool and 1.2.0", support::WITHIN, applied).await.unwrap();
    let ready = fleet.cell_ready("growing").await;
    assert_eq!(ready.status.unwrap().observed_generation, Some(2));
    assert!(fleet.cloud.live_in("growing").contains(&"pool/gpu".to_string()));
    assert!(fleet.cloud.duplicates().is_empty());
    fleet.stop().await;
}

/// Teardown proves itself by listing the cell's resources by tag: a resource the workflow never
/// made (created by hand, or by a lost earlier attempt) keeps the finalizer and is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_left_after_teardown_keeps_the_cell_and_is_named() {
    use cellplane::cloud::{CellScope, CloudProvider, NetworkRequest};
    let fleet = Fleet::start(quick_cloud(), None).await;
    fleet.create(&fleet.cells(), &cell("leaky", "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
    fleet.cell_ready("leaky").await;
    let scope = CellScope { cell: "leaky".into(), region: "eu-west-1".into(), ..CellScope::default() };
    let stray = NetworkRequest { scope, cidr: "10.99.0.0/16".into(), nat_gateway: false };
    let mut attempts = 0;
    while let Err(e) = fleet.cloud.create_network("made-by-hand", &stray).await {
        attempts += 1;
        assert!(e.is_transient() && attempts < 50, "{e}");
    }

    fleet.cells().delete("leaky", &Default::default()).await.unwrap();
    let named = |c: Option<&cellplane::api::Cell>| {
        let conditions = c.and_then(|c| c.status.as_ref()).map(|s| s.conditions.clone()).unwrap_or_default();
        condition(&conditions, "Deleting")
            .is_some_and(|d| d.reason == "ResourcesLeft" && d.message.contains("left after teardown: network"))
    };
    fixtures::wait_for(&fleet.cells(), "leaky", "Deleting names the network left", support::WITHIN, named)
        .await
        .unwrap();
    assert_eq!(fleet.cloud.live_in("leaky"), vec!["network".to_string()], "only the stray network remains");
    fleet.stop().await;
}

/// A new spec.cluster.kubernetesVersion upgrades the control plane in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kubernetes_version_upgrades_the_cluster() {
    let fleet = Fleet::start(quick_cloud(), None).await;
    fleet.create(&fleet.cells(), &cell("upgrading", "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
    fleet.cell_ready("upgrading").await;
    assert_eq!(fleet.cloud.cluster_version("upgrading").as_deref(), Some("1.33"));
    let patch = serde_json::json!({"spec": {"cluster": {"kubernetesVersion": "1.34"}}});
    fleet
        .cells()
        .patch("upgrading", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    // Ready again at generation 2: the workflow has applied the new version.
    fleet.cell_ready("upgrading").await;
    assert_eq!(fleet.cloud.cluster_version("upgrading").as_deref(), Some("1.34"));
    // The sim records every upgrade request it accepts, once per idempotency key.
    let upgrades: Vec<_> = fleet
        .cloud
        .ledger()
        .into_iter()
        .filter(|e| e.op == cellplane::cloud::sim::EffectOp::Upgrade && e.name == "cluster")
        .map(|e| e.key)
        .collect();
    assert_eq!(upgrades.len(), 1, "one upgrade, in place: {upgrades:?}");
    assert!(fleet.cloud.duplicates().is_empty(), "{:?}", fleet.cloud.duplicates());
    fleet.stop().await;
}

/// The API keeps times to the second. A status computed again from the same state (its times in
/// milliseconds) is the status already stored and must not be written again: otherwise every
/// requeue of every Ready object is a request (10,200 objects made 1,000 a minute at rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_computed_again_is_not_written_again() {
    use cellplane::api::common::time_ms;
    use cellplane::api::{Cell, CellStatus, Condition, ConditionStatus, WorkflowState, WorkflowStatus};
    use cellplane::controllers::status::apply as apply_status;

    let cluster = cellplane::testing::TestCluster::in_memory(|_| {}).await.unwrap();
    let server = cluster.memory.clone().unwrap();
    let cells: kube::Api<Cell> = kube::Api::all(cluster.client.clone());
    let name = cluster.name("steady");
    let created = cells.create(&Default::default(), &cell(&name, "eu-west-1", &[], 5, "1.0.0")).await.unwrap();
    let at = time_ms(1_700_000_000_123).unwrap();
    let workflow = WorkflowStatus {
        id: format!("cell/{name}/1"),
        state: WorkflowState::Waiting,
        step: None,
        attempt: None,
        last_error: None,
        waiting_for: None,
        next_attempt_at: None,
        updated_at: Some(at.clone()),
    };
    let status = CellStatus {
        workflow: Some(workflow),
        conditions: vec![Condition::new("Ready", ConditionStatus::True, "Reconciled", "ready", Some(1), at)],
        ..CellStatus::default()
    };
    apply_status(&cells, &created, None, &status).await.unwrap();
    let stored = cells.get(&name).await.unwrap();
    let writes = || server.requests().iter().filter(|r| r.subresource.as_deref() == Some("status")).count();
    let before = writes();
    apply_status(&cells, &stored, stored.status.as_ref(), &status).await.unwrap();
    assert_eq!(writes(), before, "the same status, to the second, is not written again");
    let changed = CellStatus { observed_generation: Some(2), ..status };
    apply_status(&cells, &stored, stored.status.as_ref(), &changed).await.unwrap();
    assert_eq!(writes(), before + 1, "a status that changed is written");
}
