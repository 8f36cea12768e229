//! The tier-3 scenarios against a real cluster (see the crate docs). They skip, saying so,
//! without E2E_KUBECONFIG.

use cellplane::api::namespace::Tier;
use cellplane::fixtures::{self, cell, is_ready, namespace, ring};
use cellplane_e2e::{WITHIN, apis, cluster, prefix, start_operator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_namespaces_and_rings_converge_then_tear_down() {
    let Some(client) = cluster("converge").await else { return };
    let running = start_operator(&client).await;
    let (cells, namespaces, rings) = apis(&client);
    let p = prefix();
    let canary = format!("{p}-canary");
    let prod = format!("{p}-prod");
    fixtures::create(&cells, &cell(&canary, "eu-west-1", &[("cellplane.io/ring", &canary)], 10, "1.0.0"))
        .await
        .unwrap();
    fixtures::create(&cells, &cell(&prod, "eu-west-1", &[("cellplane.io/ring", &prod)], 10, "1.0.0")).await.unwrap();
    let ns_names: Vec<String> = (0..5).map(|i| format!("{p}-ns-{i}")).collect();
    for name in &ns_names {
        fixtures::create(&namespaces, &namespace(name, "eu-west-1", Tier::Standard)).await.unwrap();
    }
    fixtures::create(&rings, &ring(&format!("{p}-ring-0"), 0, &canary, Some("1.0.0"), "0s")).await.unwrap();

    for name in [&canary, &prod] {
        fixtures::wait_for(&cells, name, "Ready", WITHIN, |c: Option<&cellplane::api::Cell>| {
            c.is_some_and(|c| is_ready(c, &c.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        })
        .await
        .unwrap();
    }
    for name in &ns_names {
        fixtures::wait_for(&namespaces, name, "Ready", WITHIN, |n: Option<&cellplane::api::Namespace>| {
            n.is_some_and(|n| is_ready(n, &n.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()))
        })
        .await
        .unwrap();
    }
    for name in &ns_names {
        namespaces.delete(name, &Default::default()).await.unwrap();
    }
    rings.delete(&format!("{p}-ring-0"), &Default::default()).await.unwrap();
    for name in [&canary, &prod] {
        cells.delete(name, &Default::default()).await.unwrap();
    }
    for name in [&canary, &prod] {
        fixtures::wait_for(&cells, name, "deleted", WITHIN, |c: Option<&cellplane::api::Cell>| c.is_none())
            .await
            .unwrap();
    }
    assert!(running.cloud.duplicates().is_empty());
    assert!(running.cloud.leaks([canary.as_str(), prod.as_str()]).is_empty());
    running.stop().await;
}
