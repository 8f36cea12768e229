use std::sync::Arc;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::*;

#[tokio::test]
async fn delete_waits_for_finalizers_then_removes() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let mut w = widget("w", 1);
    w.metadata.finalizers = Some(vec!["a.test/x".into(), "b.test/y".into()]);
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    let mut events =
        widgets.watch(&WatchParams::default(), &created.resource_version().unwrap()).await.unwrap().boxed();

    let pending = widgets.delete("w", &DeleteParams::default()).await.unwrap();
    let pending = pending.left().expect("the object lingers while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(pending.metadata.generation, Some(2), "deletion bumps generation");
    // Deleting again changes nothing.
    let again = widgets.delete("w", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(again.resource_version(), pending.resource_version());

    let add = json!({"metadata": {"finalizers": ["a.test/x", "b.test/y", "c.test/new"]}});
    let err = api_error(widgets.patch("w", &PatchParams::default(), &Patch::Merge(add)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));

    let one_left = json!({"metadata": {"finalizers": ["b.test/y"]}});
    let still = widgets.patch("w", &PatchParams::default(), &Patch::Merge(one_left)).await.unwrap();
    assert_eq!(still.finalizers(), ["b.test/y"]);
    let none_left = json!({"metadata": {"finalizers": null}});
    let last = widgets.patch("w", &PatchParams::default(), &Patch::Merge(none_left)).await.unwrap();
    assert!(last.finalizers().is_empty());
    assert_eq!(api_error(widgets.get("w").await.unwrap_err()).code, 404);

    let deleted = next_matching(&mut events, "DELETED", |e| matches!(e, Ok(WatchEvent::Deleted(_)))).await;
    let Ok(WatchEvent::Deleted(obj)) = deleted else { unreachable!() };
    let rv = |o: &Widget| o.resource_version().unwrap().parse::<u64>().unwrap();
    assert!(rv(&obj) > rv(&still), "DELETED carries the deletion's resourceVersion");
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct ReconcileError;

/// kube's finalizer helper inside a real Controller: the finalizer is added on
/// first sight, cleanup runs on delete, and the object then disappears.
#[tokio::test]
async fn controller_with_finalizer_helper_cleans_up() {
    const FINALIZER: &str = "widgets.test.cellplane.io/cleanup";
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let (tx, mut cleaned) = mpsc::unbounded_channel::<String>();

    struct Ctx {
        api: Api<Widget>,
        cleaned: mpsc::UnboundedSender<String>,
    }
    let ctx = Arc::new(Ctx { api: widgets.clone(), cleaned: tx });
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(
            |obj: Arc<Widget>, ctx: Arc<Ctx>| async move {
                finalizer(&ctx.api, FINALIZER, obj, |event| async {
                    match event {
                        Finalizer::Apply(w) => {
                            let status =
                                json!({"status": {"phase": "Ready", "observedGeneration": w.metadata.generation}});
                            ctx.api
                                .patch_status(&w.name_any(), &PatchParams::default(), &Patch::Merge(status))
                                .await
                                .map_err(|_| ReconcileError)?;
                            Ok(Action::await_change())
                        }
                        Finalizer::Cleanup(w) => {
                            let _ = ctx.cleaned.send(w.name_any());
                            Ok::<_, ReconcileError>(Action::await_change())
                        }
                    }
                })
                .await
                .map_err(|_| ReconcileError)
            },
            |_, _, _| Action::requeue(std::time::Duration::from_millis(50)),
            ctx,
        )
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    widgets.create(&PostParams::default(), &widget("w", 3)).await.unwrap();
    let ready = eventually("finalizer and Ready status", || async {
        let w = widgets.get("w").await.ok()?;
        let ready = w.status.as_ref().is_some_and(|s| s.phase == "Ready");
        (ready && w.finalizers() == [FINALIZER]).then_some(w)
    })
    .await;
    assert_eq!(ready.status.unwrap().observed_generation, Some(1));

    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    let name = tokio::time::timeout(DEADLINE, cleaned.recv()).await.unwrap().unwrap();
    assert_eq!(name, "w");
    eventually("object gone", || async { widgets.get_opt("w").await.unwrap().is_none().then_some(()) }).await;
    controller.abort();
}

/// Dependents go once their last owner is gone (background propagation), and not
/// while the owner still waits on its finalizers.
#[tokio::test]
async fn owner_references_are_garbage_collected() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::Resource;

    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut w = widget("owner", 1);
    w.metadata.finalizers = Some(vec!["test/hold".into()]);
    let owner = widgets.create(&PostParams::default(), &w).await.unwrap();
    let keeper = widgets.create(&PostParams::default(), &widget("keeper", 1)).await.unwrap();
    let oref = |o: &Widget| o.controller_owner_ref(&()).unwrap();

    let mut child = Secret::default();
    child.metadata.name = Some("child".into());
    child.metadata.owner_references = Some(vec![oref(&owner)]);
    let child = secrets.create(&PostParams::default(), &child).await.unwrap();
    let grandchild_ref = OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: "child".into(),
        uid: child.uid().unwrap(),
        ..Default::default()
    };
    let mut grandchild = ConfigMap::default();
    grandchild.metadata.name = Some("grandchild".into());
    grandchild.metadata.owner_references = Some(vec![grandchild_ref]);
    cms.create(&PostParams::default(), &grandchild).await.unwrap();
    let mut shared = ConfigMap::default();
    shared.metadata.name = Some("shared".into());
    let mut keeper_ref = oref(&keeper);
    keeper_ref.controller = None;
    let mut owner_ref = oref(&owner);
    owner_ref.controller = None;
    shared.metadata.owner_references = Some(vec![owner_ref, keeper_ref]);
    cms.create(&PostParams::default(), &shared).await.unwrap();

    widgets.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(secrets.get_opt("child").await.unwrap().is_some(), "owner still finalizing");
    let release = json!({"metadata": {"finalizers": null}});
    widgets.patch("owner", &PatchParams::default(), &Patch::Merge(release)).await.unwrap();

    assert!(secrets.get_opt("child").await.unwrap().is_none());
    assert!(cms.get_opt("grandchild").await.unwrap().is_none(), "chains are followed");
    assert!(cms.get_opt("shared").await.unwrap().is_some(), "another owner remains");
}
