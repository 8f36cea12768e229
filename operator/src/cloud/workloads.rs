//! The workload controllers and kubelet of a sim cell's cluster, played just enough for a cluster
//! that has none (the in-memory API of the sandbox and of tests): Deployments, StatefulSets,
//! DaemonSets and Jobs get the status their controllers would write once their pods run, so the
//! same health rules that judge a real cluster see them roll out. As on the test control plane's
//! KWOK nodes, a pod template whose image tag ends in `-broken` (or labelled
//! `cellplane.io/kwok-fate`) never becomes ready.

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The field manager of the statuses written here.
const MANAGER: &str = "cellplane-sim-workloads";

/// The kinds played, with what their controllers write.
const KINDS: [(&str, &str, &str); 4] = [
    ("apps", "Deployment", "deployments"),
    ("apps", "StatefulSet", "statefulsets"),
    ("apps", "DaemonSet", "daemonsets"),
    ("batch", "Job", "jobs"),
];

/// Plays the workloads of every namespace until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let players = KINDS.map(|(group, kind, plural)| {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural);
        play(Api::all_with(client.clone(), &resource), resource)
    });
    tokio::select! {
        _ = futures::future::join_all(players) => {}
        _ = shutdown.cancelled() => {}
    }
}

async fn play(api: Api<DynamicObject>, resource: ApiResource) {
    let mut objects = watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(next) = objects.next().await {
        let Ok(object) = next else { continue };
        let Some(status) = status_of(&resource.kind, &object.data, object.metadata.generation.unwrap_or(1)) else {
            continue;
        };
        if object.data.get("status") == Some(&status) {
            continue;
        }
        let namespaced: Api<DynamicObject> =
            Api::namespaced_with(api.clone().into_client(), &object.namespace().unwrap_or_default(), &resource);
        let patch = json!({ "status": status });
        let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
        if let Err(e) = namespaced.patch_status(&object.name_any(), &params, &Patch::Merge(&patch)).await {
            tracing::debug!(error = %e, kind = %resource.kind, name = %object.name_any(), "could not play a workload's status");
        }
    }
}

/// Whether the pods of a workload ever become ready.
fn broken(object: &Value) -> bool {
    let template = &object["spec"]["template"];
    let labelled = template["metadata"]["labels"]["cellplane.io/kwok-fate"].is_string();
    let images = template["spec"]["containers"].as_array().into_iter().flatten();
    labelled || images.filter_map(|c| c["image"].as_str()).any(|image| image.ends_with("-broken"))
}

/// The status a workload's controller would write once its pods are scheduled (ready unless
/// broken), for `generation`.
pub fn status_of(kind: &str, object: &Value, generation: i64) -> Option<Value> {
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = if broken(object) { 0 } else { replicas };
    let condition = |type_: &str, ok: bool, reason: &str| json!({ "type": type_, "status": if ok { "True" } else { "False" }, "reason": reason });
    Some(match kind {
        "Deployment" => json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": replicas - ready,
            "conditions": [
                condition("Available", ready == replicas, if ready == replicas { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
                condition("Progressing", true, if ready == replicas { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }),
            ],
        }),
        "StatefulSet" => json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "currentReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentRevision": format!("rev-{generation}"),
            "updateRevision": format!("rev-{generation}"),
        }),
        "DaemonSet" => {
            let ready = if broken(object) { 0 } else { 1 };
            json!({
                "observedGeneration": generation,
                "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1,
                "numberReady": ready,
                "numberAvailable": ready,
                "numberMisscheduled": 0,
            })
        }
        "Job" if broken(object) => json!({ "active": 1 }),
        "Job" => json!({ "succeeded": 1, "conditions": [condition("Complete", true, "Completed")] }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str) -> Value {
        json!({ "spec": { "replicas": 3, "template": { "spec": { "containers": [{ "name": "app", "image": image }] } } } })
    }

    #[test]
    fn a_deployment_rolls_out_unless_its_image_is_broken() {
        let ok = status_of("Deployment", &deployment("svc:1.1.0"), 2).unwrap();
        assert_eq!((ok["observedGeneration"].clone(), ok["availableReplicas"].clone()), (json!(2), json!(3)));
        let broken = status_of("Deployment", &deployment("svc:1.2.0-broken"), 2).unwrap();
        assert_eq!((broken["updatedReplicas"].clone(), broken["availableReplicas"].clone()), (json!(3), json!(0)));
        assert_eq!(broken["conditions"][0]["status"], "False");
    }
}
