//! The test control plane runs pods (scripts/testcluster.sh: the controller manager, the scheduler
//! and KWOK's fake nodes): a Deployment rolls out with Ready pods on the nodes, and one whose
//! pods crash shows up as an unhealthy rollout, as on any cluster.

use std::time::Duration;

use cellplane::fixtures::wait_for;
use cellplane::testing::{TestCluster, real_kubeconfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);

fn deployment(name: &str, fate: Option<&str>) -> Deployment {
    let mut labels = json!({ "app": name });
    if let Some(fate) = fate {
        labels["cellplane.io/kwok-fate"] = json!(fate);
    }
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": 3,
            "progressDeadlineSeconds": 10,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": labels },
                "spec": { "containers": [{ "name": "app", "image": "registry.example.com/app:1" }] }
            }
        }
    }))
    .unwrap()
}

fn condition(deployment: &Deployment, type_: &str) -> Option<(String, String)> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == type_).map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rolls_out_on_the_nodes_and_a_crashing_one_is_an_unhealthy_rollout() {
    let Some(path) = real_kubeconfig("the test control plane's workloads") else { return };
    TestCluster::real(&path)
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.account);
            let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.account);
            deployments.create(&PostParams::default(), &deployment("web", None)).await.unwrap();
            deployments.create(&PostParams::default(), &deployment("crashing", Some("crash-loop"))).await.unwrap();

            let available = |d: Option<&Deployment>| {
                d.is_some_and(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(3))
            };
            wait_for(&deployments, "web", "3 available replicas", WITHIN, available).await.unwrap();
            let web = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
            assert_eq!(web.len(), 3);
            for pod in &web {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                assert!(node.starts_with("kwok-node-"), "scheduled onto a KWOK node: {node:?}");
                let ready = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten();
                assert!(ready.clone().any(|c| c.type_ == "Ready" && c.status == "True"), "Ready: {pod:?}");
            }

            let stuck = |d: Option<&Deployment>| {
                d.is_some_and(|d| {
                    condition(d, "Progressing") == Some(("False".into(), "ProgressDeadlineExceeded".into()))
                })
            };
            let crashing =
                wait_for(&deployments, "crashing", "past its progress deadline", WITHIN, stuck).await.unwrap().unwrap();
            assert_eq!(crashing.status.as_ref().and_then(|s| s.available_replicas), None, "no pod available");
            let crashed = pods.list(&ListParams::default().labels("app=crashing")).await.unwrap().items;
            let waiting =
                crashed.iter().flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()));
            let reasons: Vec<String> =
                waiting.filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone()).collect();
            assert!(!reasons.is_empty() && reasons.iter().all(|r| r == "CrashLoopBackOff"), "{reasons:?}");
        })
        .await;
}
