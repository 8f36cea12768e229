use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::*;

fn managers(obj: &impl kube::Resource) -> Vec<(String, String, String)> {
    obj.meta()
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
                m.subresource.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn merge_strategic_and_json_patches() {
    let (_server, client) = setup();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some("c".into()), ..Default::default() },
        data: Some([("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let merged =
        cms.patch("c", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": null, "c": "3"}}))).await.unwrap();
    assert_eq!(merged.data.unwrap(), [("b".to_string(), "2".to_string()), ("c".to_string(), "3".to_string())].into());

    let strategic = cms
        .patch("c", &PatchParams::default(), &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(strategic.labels().get("x").map(String::as_str), Some("y"));

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "20"}
    ]))
    .unwrap();
    let patched = cms.patch("c", &PatchParams::default(), &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(patched.data.unwrap()["b"], "20");

    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "2"}])).unwrap();
    let err = api_error(cms.patch("c", &PatchParams::default(), &Patch::Json::<()>(failing)).await.unwrap_err());
    assert_eq!(err.code, 422);

    let missing = api_error(cms.patch("nope", &PatchParams::default(), &Patch::Merge(json!({}))).await.unwrap_err());
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn apply_creates_merges_and_records_managers() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let pp = PatchParams::apply("cellplane");
    let applied = json!({
        "apiVersion": "test.cellplane.io/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"owner": "cellplane"}},
        "spec": {"size": 1, "color": "red"},
    });
    let created = widgets.patch("w", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.color.as_deref(), Some("red"));
    assert_eq!(managers(&created), [("cellplane".into(), "Apply".into(), String::new())]);

    // Another client changes the size with a merge patch; it now owns spec.size.
    let edited =
        widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 7}}))).await.unwrap();
    assert_eq!(edited.spec.size, 7);
    assert!(managers(&edited).iter().any(|(_, op, _)| op == "Update"));

    // Re-applying without color drops color (applied before, no longer) and
    // conflicts on size, which the other manager now owns with another value.
    let reapply = json!({
        "apiVersion": "test.cellplane.io/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1},
    });
    let err = api_error(widgets.patch("w", &pp, &Patch::Apply(&reapply)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains(".spec.size"), "{}", err.message);

    let forced = widgets.patch("w", &pp.clone().force(), &Patch::Apply(&reapply)).await.unwrap();
    assert_eq!(forced.spec.size, 1);
    assert_eq!(forced.spec.color, None);
    assert!(forced.labels().is_empty(), "label applied before and no longer is removed");
    assert_eq!(forced.metadata.generation, Some(3));
}

#[tokio::test]
async fn apply_requires_a_field_manager_and_matching_name() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let applied = json!({"apiVersion": "test.cellplane.io/v1", "kind": "Widget", "spec": {"size": 1}});
    let err = api_error(widgets.patch("w", &PatchParams::default(), &Patch::Apply(&applied)).await.unwrap_err());
    assert_eq!(err.code, 422);
    let renamed =
        json!({"apiVersion": "test.cellplane.io/v1", "kind": "Widget", "metadata": {"name": "x"}, "spec": {"size": 1}});
    let err = api_error(widgets.patch("w", &PatchParams::apply("m"), &Patch::Apply(&renamed)).await.unwrap_err());
    assert_eq!(err.code, 400);
    assert!(widgets.get_opt("w").await.unwrap().is_none());
    assert!(widgets.get_opt("x").await.unwrap().is_none());
}

#[tokio::test]
async fn apply_to_status_changes_only_status() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let status = json!({
        "apiVersion": "test.cellplane.io/v1", "kind": "Widget",
        "spec": {"size": 100},
        "status": {"phase": "Ready", "observedGeneration": 1},
    });
    let pp = PatchParams::apply("cellplane-status").force();
    let out = widgets.patch_status("w", &pp, &Patch::Apply(&status)).await.unwrap();
    assert_eq!(out.status.as_ref().unwrap().phase, "Ready");
    assert_eq!(out.spec.size, 1);
    assert_eq!(out.metadata.generation, Some(1));
    assert!(managers(&out).contains(&("cellplane-status".into(), "Apply".into(), "status".into())));

    // Re-applying the same status writes nothing.
    let again = widgets.patch_status("w", &pp, &Patch::Apply(&status)).await.unwrap();
    assert_eq!(again.resource_version(), out.resource_version());

    let missing = api_error(widgets.patch_status("nope", &pp, &Patch::Apply(&status)).await.unwrap_err());
    assert_eq!(missing.code, 404);
}
