//! Namespaces as a real cluster has them (checked against Kubernetes 1.37 with its
//! controller manager): content needs an existing namespace, a few namespaces cannot be
//! deleted, and deletion is asynchronous — Terminating first, then the content goes, then
//! the namespace.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::*;
use crate::reference::*;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    for s in servers().await {
        let missing = format!("{}-missing", s.run);
        let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &missing);
        let widgets: Api<Widget> = Api::namespaced(s.client.clone(), &missing);
        for err in [
            api_error(cms.create(&PostParams::default(), &config_map("c")).await.unwrap_err()),
            api_error(widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap_err()),
        ] {
            assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"), "{}", s.name);
            assert_eq!(err.message, format!("namespaces \"{missing}\" not found"), "{}", s.name);
            let details = err.details.unwrap();
            assert_eq!((details.kind.as_str(), details.name.as_str()), ("namespaces", missing.as_str()));
        }
        // Reads and lists in a missing namespace find nothing, without an error.
        assert!(cms.list(&Default::default()).await.unwrap().items.is_empty(), "{}", s.name);
    }
}

#[tokio::test]
async fn system_namespaces_exist_and_cannot_be_deleted() {
    for s in servers().await {
        let namespaces: Api<Namespace> = Api::all(s.client.clone());
        for name in ["default", "kube-system", "kube-public"] {
            let ns = namespaces.get(name).await.unwrap();
            assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"), "{}: {name}", s.name);
            let err = api_error(namespaces.delete(name, &DeleteParams::default()).await.unwrap_err());
            assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"), "{}: {name}", s.name);
            assert_eq!(err.message, format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"));
        }
    }
}

#[tokio::test]
async fn namespace_names_are_dns_labels() {
    for s in servers().await {
        let namespaces: Api<Namespace> = Api::all(s.client.clone());
        for name in ["a.b", "Upper", &"n".repeat(64)] {
            let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            let err = api_error(namespaces.create(&PostParams::default(), &ns).await.unwrap_err());
            assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{}: {name}", s.name);
            let cause = &err.details.unwrap().causes[0];
            assert_eq!(cause.field, "metadata.name", "{}", s.name);
            assert!(
                cause.message.starts_with(&format!("Invalid value: \"{name}\": ")),
                "{}: {}",
                s.name,
                cause.message
            );
        }
    }
}

#[tokio::test]
async fn deleting_a_namespace_terminates_it_then_removes_its_content() {
    for s in servers().await {
        let ns = s.namespace("doomed").await;
        let namespaces: Api<Namespace> = Api::all(s.client.clone());
        let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), &ns);
        let widgets: Api<Widget> = Api::namespaced(s.client.clone(), &ns);
        cms.create(&PostParams::default(), &config_map("free")).await.unwrap();
        let mut held = widget("held", 1);
        held.metadata.finalizers = Some(vec!["test.cellplane.io/hold".into()]);
        widgets.create(&PostParams::default(), &held).await.unwrap();

        let terminating = namespaces.delete(&ns, &DeleteParams::default()).await.unwrap().left().unwrap();
        assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"), "{}", s.name);
        assert!(terminating.metadata.deletion_timestamp.is_some(), "{}", s.name);

        let err = api_error(cms.create(&PostParams::default(), &config_map("late")).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"), "{}", s.name);
        let expected = format!(
            "configmaps \"late\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"
        );
        assert_eq!(err.message, expected, "{}", s.name);
        assert_eq!(err.details.unwrap().causes[0].reason, "NamespaceTerminating", "{}", s.name);

        s.eventually("the content without finalizers gone", || async {
            cms.get_opt("free").await.unwrap().is_none().then_some(())
        })
        .await;
        let waiting = s
            .eventually("the namespace to say what holds it", || async {
                let ns = namespaces.get(&ns).await.unwrap();
                let conditions = ns.status.and_then(|s| s.conditions).unwrap_or_default();
                conditions.into_iter().find(|c| c.type_ == "NamespaceFinalizersRemaining" && c.status == "True")
            })
            .await;
        assert!(waiting.message.unwrap().contains("test.cellplane.io/hold in 1 resource instances"), "{}", s.name);
        assert!(widgets.get("held").await.unwrap().metadata.deletion_timestamp.is_some(), "{}", s.name);

        let release = json!({"metadata": {"finalizers": null}});
        widgets.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
        s.eventually("the namespace gone", || async { namespaces.get_opt(&ns).await.unwrap().is_none().then_some(()) })
            .await;
        assert!(widgets.get_opt("held").await.unwrap().is_none(), "{}", s.name);
    }
}
