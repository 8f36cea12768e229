//! The e2e scenario against the in-memory API server served over HTTP and reached through a
//! kubeconfig file, as a real cluster would be: quick, and always run.

use std::io::Write;

use cellplane::testing::TestCluster;
use cellplane_e2e::{Identity, converge_then_tear_down};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_e2e_scenario_passes_against_a_served_api() {
    let server = cellplane_memapi::ApiServer::new();
    // Nothing runs pods in memory: the cells' workloads are played.
    let playing = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cellplane::cloud::workloads::run(server.client(), playing.clone()));
    let _stop_playing = playing.drop_guard();
    let config = server.serve_on_loopback().await.unwrap();
    let mut kubeconfig = tempfile::NamedTempFile::new().unwrap();
    write!(kubeconfig, "{config}").unwrap();
    let cluster = TestCluster::real(kubeconfig.path()).await.unwrap();
    converge_then_tear_down(cluster, Identity::Admin).await;
}
