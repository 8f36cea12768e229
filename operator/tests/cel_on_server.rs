//! The real API server is the judge of the CRDs' CEL rules: with the CRDs installed as generated,
//! it refuses one sample per rule (tests/common/samples.rs), each with that rule's message.

mod common;

use cellplane::testing::{TestCluster, real_kubeconfig};
use common::samples::{Refusal, refusals};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::Value;

/// The API of `kind` for this run: a Namespace in the run's account.
fn api(cluster: &TestCluster, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "Cell" => ApiResource::erase::<cellplane::api::Cell>(&()),
        "Namespace" => ApiResource::erase::<cellplane::api::Namespace>(&()),
        "DeploymentRing" => ApiResource::erase::<cellplane::api::DeploymentRing>(&()),
        "Release" => ApiResource::erase::<cellplane::api::Release>(&()),
        other => panic!("no API for {other}"),
    };
    match kind {
        "Namespace" => Api::namespaced_with(cluster.client.clone(), &cluster.account, &resource),
        _ => Api::all_with(cluster.client.clone(), &resource),
    }
}

/// `object` named for this run (a name the sample breaks on purpose keeps its dot), labelled as
/// the run's so that cleanup finds what was accepted.
fn owned(cluster: &TestCluster, object: &Value, index: usize) -> DynamicObject {
    let mut object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let name = object.metadata.name.clone().unwrap_or_default();
    object.metadata.name = Some(format!("{name}-{index}-{}", cluster.run));
    cluster.own(object)
}

/// The server's answer to the sample: the message of its refusal, or a panic if it took it.
async fn refusal_message(cluster: &TestCluster, refusal: &Refusal, index: usize) -> String {
    let api = api(cluster, refusal.kind);
    let object = owned(cluster, &refusal.object, index);
    let result = match &refusal.old {
        None => api.create(&PostParams::default(), &object).await.map(|_| ()),
        Some(old) => {
            let old = owned(cluster, old, index);
            api.create(&PostParams::default(), &old).await.expect("the valid object is created");
            let name = old.metadata.name.clone().unwrap();
            let patch = serde_json::json!({ "spec": object.data["spec"] });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
        }
    };
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => status.message,
        other => panic!("{} {:?}: the API server did not refuse it ({other:?})", refusal.kind, refusal.message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_each_rule_with_its_message() {
    let Some(path) = real_kubeconfig("the CEL rules on the real API server") else { return };
    let cluster = TestCluster::real(&path).await.expect("the test cluster");
    cluster
        .scenario(|cluster| async move {
            for (index, refusal) in refusals().iter().enumerate() {
                let message = refusal_message(&cluster, refusal, index).await;
                assert!(
                    message.contains(refusal.message),
                    "{} {:?} was refused for another reason: {message}",
                    refusal.kind,
                    refusal.message
                );
            }
        })
        .await;
}
