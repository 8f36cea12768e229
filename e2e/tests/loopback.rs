//! The e2e scenarios themselves, checked against the in-memory API server served over HTTP
//! and reached through a kubeconfig file, as a real cluster would be.

use std::io::Write;

use cellplane_e2e::{connect, converge_then_tear_down};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_e2e_scenario_passes_against_a_served_api() {
    let server = cellplane_memapi::ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    let mut kubeconfig = tempfile::NamedTempFile::new().unwrap();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mem", "cluster": {"server": format!("http://{addr}")}}],
        "users": [{"name": "mem", "user": {}}],
        "contexts": [{"name": "mem", "context": {"cluster": "mem", "user": "mem"}}],
        "current-context": "mem",
    });
    // JSON is YAML, which is what a kubeconfig is.
    write!(kubeconfig, "{config}").unwrap();
    let client = connect(kubeconfig.path()).await;
    converge_then_tear_down(&client).await;
}
