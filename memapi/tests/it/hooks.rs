use std::sync::Arc;
use std::time::Duration;

use cellplane_memapi::{Fault, Verb};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn injected_failures_hit_matching_requests_only() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    server.fail_next(Verb::Patch, "widgets", 2, 500);
    server.inject(Fault::new(409).verb(Verb::Get).name("other"));

    let patch = Patch::Merge(json!({"spec": {"size": 2}}));
    for _ in 0..2 {
        let err = api_error(widgets.patch("w", &PatchParams::default(), &patch).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    assert_eq!(widgets.get("w").await.unwrap().spec.size, 1, "failed requests change nothing");
    widgets.patch("w", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(api_error(widgets.get("other").await.unwrap_err()).code, 409);
    assert_eq!(api_error(widgets.get("other").await.unwrap_err()).code, 404);

    assert_eq!(server.request_count_for(Verb::Patch, "widgets"), 3);
    assert_eq!(server.request_count(Verb::Create), 1);
    assert_eq!(server.request_count(Verb::Get), 3);
    server.reset_request_counts();
    assert_eq!(server.total_requests(), 0);
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed")]
struct ReconcileError;

/// A controller that writes the same status on every reconcile must settle: its
/// idempotent write stores nothing, so it triggers no new watch event and no
/// further reconcile.
#[tokio::test]
async fn idempotent_status_writes_do_not_hot_loop() {
    let (server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let api = widgets.clone();
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(
            move |w: Arc<Widget>, api: Arc<Api<Widget>>| async move {
                let status = json!({
                    "apiVersion": "test.cellplane.io/v1", "kind": "Widget",
                    "status": {"phase": "Ready", "observedGeneration": w.metadata.generation},
                });
                let pp = PatchParams::apply("widget-controller").force();
                api.patch_status(&w.name_any(), &pp, &Patch::Apply(&status)).await.map_err(|_| ReconcileError)?;
                Ok::<_, ReconcileError>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(60)),
            Arc::new(api),
        )
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let settled = eventually("Ready", || async {
        let w = widgets.get("w").await.ok()?;
        w.status.as_ref().is_some_and(|s| s.phase == "Ready").then_some(w)
    })
    .await;
    // After the status landed, nothing else may be written: a watch from that
    // version sees no event within a generous window.
    let mut stream = widgets
        .watch(&WatchParams::default().disable_bookmarks(), &settled.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(
        quiet.is_err(),
        "unexpected write after settling: {:?}",
        quiet.map(|e| e.map(|e| e.map(|e| matches!(e, WatchEvent::Modified(_)))))
    );
    let patches = server.request_count_for(Verb::Patch, "widgets");
    assert!((1..=2).contains(&patches), "{patches} status patches");
    controller.abort();
}
