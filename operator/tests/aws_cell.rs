//! A Cell on AWS as a platform team runs one: the `cellplane run` binary (with its aws provider)
//! on the test cluster, its AWS calls sent to moto by `AWS_ENDPOINT_URL` (through the proxy
//! that adds CREATING, UPDATING and DELETING states and throttling), the cell's role assumed
//! with STS, and given an EKS access entry with cluster-admin. `cellplane workflows show` then lists the real resource ids, a raised Kubernetes
//! version upgrades the control plane and then the node group, and deleting the Cell leaves
//! nothing tagged with it.

mod binary;

use std::path::Path;
use std::time::Duration;

use binary::{cellplane_run, kubeconfig, sqlite_journal};
use cellplane::api::Cell;
use cellplane::cloud::{Account, AwsAccount, CellScope, CloudProvider};
use cellplane::fixtures::{is_ready, wait_for};
use cellplane::testing::{RUN_LABEL, TestCluster};
use cellplane_cloud_aws::{AwsCloud, Endpoint};
use cellplane_cloud_testkit::moto::{Behaviour, MotoProxy};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

const WITHIN: Duration = Duration::from_secs(240);

fn ready(cell: Option<&Cell>, generation: i64) -> bool {
    cell.is_some_and(|c| {
        let status = c.status.clone().unwrap_or_default();
        status.observed_generation == Some(generation) && is_ready(c, &status.conditions)
    })
}

/// The README's AWS example cell, named for this run and labelled for its operator.
fn example_cell(cluster: &TestCluster) -> Cell {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/aws/cell.yaml");
    let mut cell: Cell = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cell.metadata.name = Some(cluster.name("eu-aws"));
    cell.labels_mut().insert(RUN_LABEL.into(), cluster.run.clone());
    cell
}

async fn show(journal: &str, id: &str) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cellplane"))
        .args(["workflows", "show", "--journal", journal, id])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "workflows show: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_cell_is_provisioned_upgraded_and_torn_down_by_cellplane_run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy =
        MotoProxy::start(Behaviour { pending_polls: 1, ..Behaviour::default() }).await.expect("moto and its proxy");
    TestCluster::start()
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let (path, _file) = kubeconfig(&cluster).await;
            let (_dir, journal) = sqlite_journal();
            // moto's EKS endpoint is no Kubernetes API: the cell's software goes to the test
            // cluster, named by a kubeconfig Secret, as a cell's own cluster would be.
            let secret = cluster.name("eu-aws-kubeconfig");
            let data = [("kubeconfig".to_string(), std::fs::read_to_string(&path).unwrap())];
            let kubeconfig_secret = k8s_openapi::api::core::v1::Secret {
                metadata: kube::api::ObjectMeta { name: Some(secret.clone()), ..Default::default() },
                string_data: Some(data.into()),
                ..Default::default()
            };
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(cluster.client.clone(), &cluster.namespace);
            secrets.create(&PostParams::default(), &kubeconfig_secret).await.unwrap();
            let aws = [
                ("AWS_ENDPOINT_URL", proxy.url.as_str()),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ];
            let args = ["--metrics-addr", "127.0.0.1:0"];
            let _operator = cellplane_run(&cluster, &path, &journal, &cluster.namespace, &args, &aws);
            let cells: Api<Cell> = Api::all(cluster.client.clone());
            let mut cell = example_cell(&cluster);
            cell.spec.ingress.kubeconfig_secret_ref = Some(cellplane::api::SecretReference {
                name: secret.clone(),
                namespace: Some(cluster.namespace.clone()),
            });
            let cell = cells.create(&PostParams::default(), &cell).await.unwrap();
            let name = cell.name_any();
            wait_for(&cells, &name, "Ready", WITHIN, |c| ready(c, 1)).await.unwrap();

            let id = cellplane::flows::ids::cell(&name, &cell.uid().unwrap());
            let shown = show(&journal, &id).await;
            for id in ["vpc-", "subnet-", "nat-", "arn:aws:eks:eu-west-1:"] {
                assert!(shown.contains(id), "workflows show lists {id}...:\n{shown}");
            }
            assert!(shown.contains(&format!("nodegroup/{name}/general/")), "the node group's ARN:\n{shown}");
            // The role the operator assumes for the cell may administer the cluster it made.
            let role = cell.spec.aws.as_ref().and_then(|a| a.role_arn.clone()).expect("the example's role");
            let granted = proxy.stats().access_entries.get(&(name.clone(), role)).cloned();
            let admin = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy".to_string();
            assert_eq!(granted, Some(vec![admin]), "the operator's access entry");

            let raise = serde_json::json!({ "spec": { "cluster": { "kubernetesVersion": "1.34" } } });
            cells.patch(&name, &PatchParams::default(), &Patch::Merge(&raise)).await.unwrap();
            wait_for(&cells, &name, "Ready at 1.34", WITHIN, |c| ready(c, 2)).await.unwrap();
            let shown = show(&journal, &id).await;
            let steps: Vec<&str> = ["upgrade-cluster-1.34", "wait-cluster-1.34", "upgrade-node-pool-general-1.34"]
                .into_iter()
                .filter(|step| !shown.contains(step))
                .collect();
            assert!(steps.is_empty(), "steps missing from the history: {steps:?}\n{shown}");

            cells.delete(&name, &DeleteParams::default()).await.unwrap();
            wait_for(&cells, &name, "deleted", WITHIN, |c: Option<&Cell>| c.is_none()).await.unwrap();
            let cloud = AwsCloud::with_endpoint(Endpoint::local(&proxy.url), None);
            let account = Account::Aws(AwsAccount::default());
            let scope = CellScope { cell: name.clone(), region: "eu-west-1".into(), provider: "aws".into(), account };
            let left = cloud.leftovers(&scope).await.unwrap();
            assert!(left.is_empty(), "tagged with the cell after its deletion: {left:?}");
        })
        .await;
}
