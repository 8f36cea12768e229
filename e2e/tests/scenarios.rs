//! The e2e scenarios against a real cluster (see the crate docs). They skip, saying so,
//! without E2E_KUBECONFIG.

use cellplane_e2e::{cluster, converge_then_tear_down};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_namespaces_and_rings_converge_through_a_crash_then_tear_down() {
    let Some(cluster) = cluster("converge").await else { return };
    converge_then_tear_down(cluster).await;
}
