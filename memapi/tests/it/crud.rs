use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{CustomResourceExt, Resource, ResourceExt};
use serde_json::json;

use crate::common::*;

fn secret(name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        string_data: None,
        data: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn create_get_and_typed_errors() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let created = secrets.create(&PostParams::default(), &secret("s1")).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.resource_version().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(created.namespace().as_deref(), Some("default"));

    let fetched = secrets.get("s1").await.unwrap();
    assert_eq!(fetched.metadata.uid, created.metadata.uid);

    let dup = api_error(secrets.create(&PostParams::default(), &secret("s1")).await.unwrap_err());
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));

    let missing = api_error(secrets.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "secrets \"nope\" not found");
    assert!(secrets.get_opt("nope").await.unwrap().is_none());

    let unnamed = api_error(secrets.create(&PostParams::default(), &Secret::default()).await.unwrap_err());
    assert_eq!((unnamed.code, unnamed.reason.as_str()), (422, "Invalid"));
    let bad_name = api_error(secrets.create(&PostParams::default(), &secret("Not_Valid")).await.unwrap_err());
    assert_eq!(bad_name.code, 422);
}

#[tokio::test]
async fn generate_name_gives_distinct_names() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let mut s = Secret::default();
    s.metadata.generate_name = Some("gen-".into());
    let a = secrets.create(&PostParams::default(), &s).await.unwrap();
    let b = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(a.name_any().starts_with("gen-") && a.name_any().len() == 9);
    assert_ne!(a.name_any(), b.name_any());
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let (_server, client) = setup();
    let leases: Api<Lease> = Api::namespaced(client, "default");
    let mut lease = Lease {
        metadata: ObjectMeta { name: Some("leader".into()), ..Default::default() },
        spec: Some(LeaseSpec { holder_identity: Some("a".into()), ..Default::default() }),
    };
    lease = leases.create(&PostParams::default(), &lease).await.unwrap();

    // Two contenders read the same version; only the first write wins.
    let mut first = lease.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let mut second = lease.clone();
    second.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let won = leases.replace("leader", &PostParams::default(), &first).await.unwrap();
    assert_ne!(won.resource_version(), lease.resource_version());
    let lost = api_error(leases.replace("leader", &PostParams::default(), &second).await.unwrap_err());
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    assert!(lost.message.contains("the object has been modified"), "{}", lost.message);

    // A merge patch carrying a stale resourceVersion is refused the same way.
    let stale = json!({"metadata": {"resourceVersion": lease.resource_version()}, "spec": {"holderIdentity": "d"}});
    let err = api_error(leases.patch("leader", &PatchParams::default(), &Patch::Merge(&stale)).await.unwrap_err());
    assert_eq!(err.code, 409);
    let current = leases.get("leader").await.unwrap();
    assert_eq!(current.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn put_without_resource_version_is_refused_only_for_custom_resources() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets.create(&PostParams::default(), &secret("s")).await.unwrap();
    let mut s = secret("s");
    s.string_data = None;
    s.type_ = Some("Opaque".into());
    let replaced = secrets.replace("s", &PostParams::default(), &s).await.unwrap();
    assert_eq!(replaced.type_.as_deref(), Some("Opaque"));

    let widgets: Api<Widget> = Api::namespaced(client, "default");
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let err = api_error(widgets.replace("w", &PostParams::default(), &widget("w", 2)).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let missing = api_error(widgets.replace("other", &PostParams::default(), &widget("other", 2)).await.unwrap_err());
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn resource_versions_increase_across_kinds() {
    let (server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let a = secrets.create(&PostParams::default(), &secret("a")).await.unwrap();
    let w = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let b = secrets.create(&PostParams::default(), &secret("b")).await.unwrap();
    let rv = |s: Option<String>| s.unwrap().parse::<u64>().unwrap();
    let (a, w, b) = (rv(a.resource_version()), rv(w.resource_version()), rv(b.resource_version()));
    assert!(a < w && w < b, "{a} {w} {b}");
    assert_eq!(server.resource_version(), b);
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(rv(list.metadata.resource_version), b);
}

#[tokio::test]
async fn generation_moves_only_with_spec() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let w = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));

    let labelled = widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1), "metadata change");
    assert_ne!(labelled.resource_version(), w.resource_version());

    let status = json!({"status": {"phase": "Ready"}});
    let with_status = widgets.patch_status("w", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    assert_eq!(with_status.metadata.generation, Some(1), "status change");

    let resized =
        widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    assert_eq!(resized.metadata.generation, Some(2), "spec change");

    // Writing the same spec again is a no-op: same generation and resourceVersion.
    let again = widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
    assert_eq!(again.metadata.generation, Some(2));
    assert_eq!(again.resource_version(), resized.resource_version());
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_resource() {
    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus { phase: "Injected".into(), observed_generation: None });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "create drops status");

    let set = json!({"status": {"phase": "Ready"}, "spec": {"size": 99}});
    let after = widgets.patch_status("w", &PatchParams::default(), &Patch::Merge(set)).await.unwrap();
    assert_eq!(after.status.as_ref().unwrap().phase, "Ready");
    assert_eq!(after.spec.size, 1, "status writes cannot change spec");

    let mut main = after.clone();
    main.spec.size = 5;
    main.status.as_mut().unwrap().phase = "Hacked".into();
    let replaced = widgets.replace("w", &PostParams::default(), &main).await.unwrap();
    assert_eq!(replaced.spec.size, 5);
    assert_eq!(replaced.status.unwrap().phase, "Ready", "main writes cannot change status");

    let mut via_put = widgets.get_status("w").await.unwrap();
    via_put.status.as_mut().unwrap().phase = "Done".into();
    let done = widgets.replace_status("w", &PostParams::default(), &via_put).await.unwrap();
    assert_eq!(done.status.unwrap().phase, "Done");
    assert_eq!(done.metadata.generation, Some(2));
}

#[tokio::test]
async fn cluster_scoped_kind_without_status_subresource() {
    let (_server, client) = setup();
    let gadgets: Api<Gadget> = Api::all(client.clone());
    let g = gadgets.create(&PostParams::default(), &Gadget::new("g", GadgetSpec { size: 1 })).await.unwrap();
    assert_eq!(g.namespace(), None);
    // Without a status subresource, everything but metadata is "spec".
    let patched =
        gadgets.patch("g", &PatchParams::default(), &Patch::Merge(json!({"status": {"x": 1}}))).await.unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let status_path = api_error(
        gadgets.patch_status("g", &PatchParams::default(), &Patch::Merge(json!({"status": {}}))).await.unwrap_err(),
    );
    assert_eq!(status_path.code, 404);
    // A cluster-scoped kind has no namespaced path.
    let gvk = GroupVersionKind::gvk("test.cellplane.io", "v1", "Gadget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "gadgets");
    let namespaced: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    assert_eq!(api_error(namespaced.get("g").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn list_in_one_namespace_and_across_all() {
    let (_server, client) = setup();
    for ns in ["a", "b"] {
        create_namespace(&client, ns).await;
        let widgets: Api<Widget> = Api::namespaced(client.clone(), ns);
        for name in ["x", "y"] {
            widgets.create(&PostParams::default(), &widget(name, 1)).await.unwrap();
        }
    }
    let in_a: Api<Widget> = Api::namespaced(client.clone(), "a");
    let names: Vec<_> = in_a.list(&ListParams::default()).await.unwrap().iter().map(|w| w.name_any()).collect();
    assert_eq!(names, ["x", "y"]);
    let all: Api<Widget> = Api::all(client);
    let keys: Vec<_> = all
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|w| format!("{}/{}", w.namespace().unwrap(), w.name_any()))
        .collect();
    assert_eq!(keys, ["a/x", "a/y", "b/x", "b/y"]);
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    for i in 0..5 {
        secrets.create(&PostParams::default(), &secret(&format!("s{i}"))).await.unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = secrets.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|s| s.name_any()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
}

#[tokio::test]
async fn delete_without_finalizers_is_immediate() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let s = secrets.create(&PostParams::default(), &secret("s")).await.unwrap();
    let gone = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    let status = gone.right().expect("a Status for an immediate delete");
    assert_eq!(status.details.unwrap().uid, s.uid().unwrap());
    assert_eq!(api_error(secrets.get("s").await.unwrap_err()).code, 404);
    assert_eq!(api_error(secrets.delete("s", &DeleteParams::default()).await.unwrap_err()).code, 404);

    // Preconditions are checked.
    secrets.create(&PostParams::default(), &secret("t")).await.unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some("not-the-uid".into()), resource_version: None }),
        ..Default::default()
    };
    assert_eq!(api_error(secrets.delete("t", &dp).await.unwrap_err()).code, 409);
}

#[tokio::test]
async fn delete_collection_honours_selectors() {
    let (_server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    for (name, team) in [("a", "red"), ("b", "red"), ("c", "blue")] {
        let mut s = secret(name);
        s.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    secrets.delete_collection(&DeleteParams::default(), &ListParams::default().labels("team=red")).await.unwrap();
    let left: Vec<_> = secrets.list(&ListParams::default()).await.unwrap().iter().map(|s| s.name_any()).collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let (server, client) = setup();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    let before = server.resource_version();
    let pp = PostParams { dry_run: true, ..Default::default() };
    let s = secrets.create(&pp, &secret("dry")).await.unwrap();
    assert_eq!(s.name_any(), "dry");
    assert!(secrets.get_opt("dry").await.unwrap().is_none());
    assert_eq!(server.resource_version(), before);
}

#[tokio::test]
async fn posting_a_crd_serves_its_kind_and_deleting_it_removes_it() {
    let server = cellplane_memapi::ApiServer::new();
    let client = server.client();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    assert_eq!(api_error(widgets.list(&ListParams::default()).await.unwrap_err()).code, 404);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.create(&PostParams::default(), &Widget::crd()).await.unwrap();
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();

    // The same kind, seen dynamically.
    let gvk = GroupVersionKind::gvk("test.cellplane.io", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let obj = dynamic.get("w").await.unwrap();
    assert_eq!(obj.data["spec"]["size"], 1);

    crds.delete("widgets.test.cellplane.io", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(widgets.get("w").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn events_recorder_creates_then_patches_a_series() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let (_server, client) = setup();
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let w = widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
    let reporter = Reporter { controller: "cellplane".into(), instance: None };
    let recorder = Recorder::new(client.clone(), reporter);
    let ev = Event {
        type_: EventType::Normal,
        reason: "Provisioned".into(),
        note: Some("done".into()),
        action: "Provision".into(),
        secondary: None,
    };
    let reference = w.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Provisioned"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(e.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("w"));
}

#[tokio::test]
async fn ingresses_are_served_with_generation_status_and_discovery() {
    use k8s_openapi::api::networking::v1::{Ingress, IngressSpec, IngressStatus};
    let (_server, client) = setup();
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let mut ingress = Ingress {
        metadata: ObjectMeta { name: Some("web".into()), ..Default::default() },
        spec: Some(IngressSpec {
            ingress_class_name: Some("nginx".into()),
            default_backend: Some(
                serde_json::from_value(json!({"service": {"name": "web", "port": {"number": 80}}})).unwrap(),
            ),
            ..Default::default()
        }),
        status: None,
    };
    let created = ingresses.create(&PostParams::default(), &ingress).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // A status write leaves the generation alone; a spec change moves it.
    let status = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.0.0.1" }] } } });
    let written = ingresses.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(written.metadata.generation, Some(1));
    assert!(written.status.as_ref().is_some_and(|s: &IngressStatus| s.load_balancer.is_some()));
    ingress.spec.as_mut().unwrap().ingress_class_name = Some("haproxy".into());
    let spec = json!({ "spec": { "ingressClassName": "haproxy" } });
    let changed = ingresses.patch("web", &PatchParams::default(), &Patch::Merge(&spec)).await.unwrap();
    assert_eq!(changed.metadata.generation, Some(2));
    // Discovery lists it, as a controller deciding between Ingress and Gateway API would ask.
    let resources = client.list_api_group_resources("networking.k8s.io/v1").await.unwrap();
    assert!(resources.resources.iter().any(|r| r.name == "ingresses" && r.namespaced));
    ingresses.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(ingresses.get_opt("web").await.unwrap().is_none());
}

/// A kind registered without a CRD keeps the name rule it is given (here a Service's).
#[tokio::test]
async fn registered_kinds_follow_their_name_rule() {
    use cellplane_memapi::{NameRule, ResourceKind};
    let server = cellplane_memapi::ApiServer::new();
    let mut services = ResourceKind::namespaced("", "v1", "services", "Service");
    services.names = NameRule::Dns1035;
    server.register_kind(services);
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services");
    let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let pp = PostParams::default();
    let err = api_error(api.create(&pp, &DynamicObject::new("1web", &ar)).await.unwrap_err());
    assert_eq!(err.code, 422);
    assert!(err.message.contains("a DNS-1035 label must consist of lower case"), "{}", err.message);
    api.create(&pp, &DynamicObject::new("web-1", &ar)).await.unwrap();
}

/// The two Event APIs share one storage, each showing the other's events under its own
/// field names (checked against Kubernetes 1.37).
#[tokio::test]
async fn both_event_apis_see_the_same_events() {
    use crate::reference::servers;
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event;
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("events").await;
        let new_api: Api<Event> = Api::namespaced(s.client.clone(), &ns);
        let core_api: Api<CoreEvent> = Api::namespaced(s.client.clone(), &ns);
        let event = json!({
            "metadata": {"name": "provisioned"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "cellplane", "reportingInstance": "cellplane-0", "action": "Reconcile",
            "reason": "Provisioned", "type": "Normal", "note": "done",
            "regarding": {"kind": "Widget", "namespace": ns, "name": "w"},
        });
        new_api.create(&PostParams::default(), &serde_json::from_value(event).unwrap()).await.unwrap();
        let core = core_api.get("provisioned").await.unwrap();
        assert_eq!(core.involved_object.name.as_deref(), Some("w"), "{n}");
        assert_eq!(
            (core.message.as_deref(), core.reporting_component.as_deref()),
            (Some("done"), Some("cellplane")),
            "{n}"
        );

        let legacy = json!({
            "metadata": {"name": "legacy"}, "involvedObject": {"kind": "Widget", "namespace": ns, "name": "w"},
            "reason": "Old", "message": "from the core API", "count": 3, "source": {"component": "kubelet"},
        });
        core_api.create(&PostParams::default(), &serde_json::from_value(legacy).unwrap()).await.unwrap();
        let seen = new_api.get("legacy").await.unwrap();
        assert_eq!((seen.note.as_deref(), seen.deprecated_count), (Some("from the core API"), Some(3)), "{n}");
        assert_eq!(seen.regarding.and_then(|r| r.name).as_deref(), Some("w"), "{n}");
        let listed = new_api.list(&Default::default()).await.unwrap();
        assert_eq!(listed.items.len(), 2, "{n}");
        core_api.delete("provisioned", &Default::default()).await.unwrap();
        assert!(new_api.get_opt("provisioned").await.unwrap().is_none(), "{n}");
        s.drop_namespace(&ns).await;
    }
}
