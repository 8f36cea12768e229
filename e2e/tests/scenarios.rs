//! The e2e scenarios against a real cluster (see the crate docs), with the operator under the
//! chart's ServiceAccount and RBAC. Without E2E_KUBECONFIG they skip, saying so, unless
//! CELLPLANE_REQUIRE_CLUSTER (set by `make test`) makes that a failure.

use cellplane_e2e::{Identity, a_missing_permission_is_waited_out, cluster, converge_then_tear_down};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_namespaces_and_rings_converge_through_a_crash_then_tear_down() {
    let Some(cluster) = cluster("converge").await else { return };
    converge_then_tear_down(cluster, Identity::Chart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_stalls_on_a_missing_permission_and_heals_once_it_is_granted() {
    let Some(cluster) = cluster("permission").await else { return };
    a_missing_permission_is_waited_out(cluster).await;
}
