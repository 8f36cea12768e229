//! The install path on the oldest Kubernetes the chart promises (`E2E_OLDEST_KUBECONFIG`, 1.34
//! under `make test`): the real Helm installs the chart with its CRDs and their CEL rules, and the
//! e2e scenario converges there under the chart's ServiceAccount and RBAC.

use std::process::Command;

use cellplane::testing::chart::chart_dir;
use cellplane::testing::{TestCluster, oldest_kubeconfig};
use cellplane_e2e::{Identity, converge_then_tear_down};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

fn helm(args: &[&str], kubeconfig: &std::path::Path) -> (bool, String) {
    let helm = std::env::var_os("HELM").unwrap_or_else(|| "helm".into());
    let output = Command::new(&helm).args(args).arg("--kubeconfig").arg(kubeconfig).output().expect("helm runs");
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

async fn client(path: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("its config");
    kube::Client::try_from(config).expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_and_the_scenario_converges_on_the_oldest_kubernetes() {
    let Some(path) = oldest_kubeconfig("the install path on the oldest Kubernetes") else { return };
    let client = client(&path).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The chart installs the CRDs unless an earlier install left them (they are kept on uninstall).
    let absent = crds.get_opt("cells.cellplane.io").await.unwrap().is_none();
    let release = format!("oldest-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let chart = chart_dir();
    let crds_install = format!("crds.install={absent}");
    let install = [
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        &release,
        "--create-namespace",
        "--set",
        &crds_install,
    ];
    let (installed, output) = helm(&install, &path);
    assert!(installed, "helm install on the oldest Kubernetes: {output}");
    for (_, ours) in cellplane::api::crds() {
        let name = ours.metadata.name.clone().unwrap();
        let served = serde_json::to_string(&crds.get(&name).await.unwrap().spec).unwrap();
        let rules = serde_json::to_string(&ours.spec).unwrap().matches("x-kubernetes-validations").count();
        assert_eq!(served.matches("x-kubernetes-validations").count(), rules, "{name} is served with its CEL rules");
    }

    let cluster = TestCluster::real(&path).await.expect("the oldest cluster");
    converge_then_tear_down(cluster, Identity::Chart).await;

    let (uninstalled, output) = helm(&["uninstall", &release, "--namespace", &release], &path);
    assert!(uninstalled, "helm uninstall: {output}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces.delete(&release, &Default::default()).await.unwrap();
}
