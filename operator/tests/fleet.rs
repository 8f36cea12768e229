//! Tier 3: the real controllers and engine with the sim cloud, on the in-memory API server.

mod support;

use std::time::Duration;

use cellplane::api::namespace::Tier;
use cellplane::cloud::sim::SimConfig;
use cellplane::fixtures::{self, cell, namespace, ring};
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
        fixtures::create(&fleet.cells(), c).await.unwrap();
    }
    for i in 0..20 {
        let (region, tier) = if i % 2 == 0 { ("eu-west-1", Tier::Standard) } else { ("us-east-1", Tier::Standard) };
        let tier = if i % 5 == 0 { Tier::Critical } else { tier };
        let region = if tier == Tier::Critical { "eu-west-1" } else { region };
        fixtures::create(&fleet.namespaces(), &namespace(&format!("tenant-{i}"), region, tier)).await.unwrap();
    }
    fixtures::create(&fleet.rings(), &ring("ring-0", 0, "canary", Some("1.0.0"), "0s")).await.unwrap();
    fixtures::create(&fleet.rings(), &ring("ring-1", 1, "prod", None, "0s")).await.unwrap();

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
