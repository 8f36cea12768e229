//! Discovery as kubectl and kube read it (checked against Kubernetes 1.37).

use serde_json::{Value, json};

use crate::reference::*;

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    let resources = list["resources"].as_array().expect("resources");
    resources.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no {name} in {list}"))
}

#[tokio::test]
async fn custom_resources_are_listed_with_the_names_their_crd_declares() {
    for s in servers().await {
        let n = s.name;
        let list = s.raw("GET", "/apis/test.cellplane.io/v1", None).await.json();
        let gizmos = entry(&list, "gizmos");
        assert_eq!(gizmos["singularName"], "gizmo", "{n}");
        assert_eq!(gizmos["namespaced"], true, "{n}");
        assert_eq!(gizmos["kind"], "Gizmo", "{n}");
        assert_eq!(
            gizmos["verbs"],
            json!(["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]),
            "{n}"
        );
        assert_eq!(gizmos["shortNames"], json!(["gz"]), "{n}");
        assert_eq!(gizmos["categories"], json!(["testing"]), "{n}");
        assert_eq!(gizmos["storageVersionHash"], "1g4xpuJC+/E=", "{n}");
        let status = entry(&list, "gizmos/status");
        assert_eq!(
            (&status["verbs"], &status["singularName"]),
            (&json!(["get", "patch", "update"]), &json!("")),
            "{n}"
        );
        let gadgets = entry(&list, "gadgets");
        assert!(gadgets.get("shortNames").is_none() && gadgets.get("categories").is_none(), "{n}: omitted when empty");

        let group = s.raw("GET", "/apis/test.cellplane.io", None).await.json();
        assert_eq!(group["kind"], "APIGroup", "{n}");
        assert_eq!(group["preferredVersion"], json!({"groupVersion": "test.cellplane.io/v1", "version": "v1"}), "{n}");
    }
}

#[tokio::test]
async fn builtin_resources_carry_their_short_names_and_verbs() {
    for s in servers().await {
        let n = s.name;
        let core = s.raw("GET", "/api/v1", None).await.json();
        let namespaces = entry(&core, "namespaces");
        assert_eq!(namespaces["shortNames"], json!(["ns"]), "{n}");
        assert_eq!(namespaces["verbs"], json!(["create", "delete", "get", "list", "patch", "update", "watch"]), "{n}");
        assert_eq!(namespaces["namespaced"], false, "{n}");
        assert_eq!(namespaces["singularName"], "namespace", "{n}");
        entry(&core, "namespaces/status");
        let config_maps = entry(&core, "configmaps");
        assert_eq!(
            (&config_maps["shortNames"], &config_maps["storageVersionHash"]),
            (&json!(["cm"]), &json!("qFsyl6wFWjQ=")),
            "{n}"
        );
        assert_eq!(entry(&core, "events")["shortNames"], json!(["ev"]), "{n}");
        let events = s.raw("GET", "/apis/events.k8s.io/v1", None).await.json();
        assert_eq!(entry(&events, "events")["storageVersionHash"], "r2yiGXH7wu8=", "{n}: stored as core Events");
        let crds = s.raw("GET", "/apis/apiextensions.k8s.io/v1", None).await.json();
        let crds = entry(&crds, "customresourcedefinitions");
        assert_eq!(
            (&crds["shortNames"], &crds["categories"]),
            (&json!(["crd", "crds"]), &json!(["api-extensions"])),
            "{n}"
        );
    }
}

/// kubectl asks for the aggregated form first (v2, then v2beta1, which 1.37 no longer serves),
/// then for the per-group documents.
#[tokio::test]
async fn aggregated_discovery_is_served_when_asked_for() {
    for s in servers().await {
        let n = s.name;
        let apis = s.raw_accepting("GET", "/apis", None, AGGREGATED).await;
        assert_eq!(apis.content_type, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "{n}");
        let doc = apis.json();
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2", "{n}");
        let group =
            doc["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == "test.cellplane.io").unwrap();
        let gizmos =
            group["versions"][0]["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "gizmos").unwrap();
        assert_eq!(gizmos["scope"], "Namespaced", "{n}");
        assert_eq!(gizmos["singularResource"], "gizmo", "{n}");
        assert_eq!(gizmos["shortNames"], json!(["gz"]), "{n}");
        assert_eq!(gizmos["categories"], json!(["testing"]), "{n}");
        assert_eq!(
            gizmos["responseKind"],
            json!({"group": "test.cellplane.io", "version": "v1", "kind": "Gizmo"}),
            "{n}"
        );
        assert_eq!(gizmos["subresources"][0]["subresource"], "status", "{n}");
        assert_eq!(group["versions"][0]["freshness"], "Current", "{n}");

        let core = s.raw_accepting("GET", "/api", None, AGGREGATED).await.json();
        let core_resources = core["items"][0]["versions"][0]["resources"].as_array().unwrap();
        assert!(core_resources.iter().any(|r| r["resource"] == "namespaces" && r["scope"] == "Cluster"), "{n}");
        assert!(
            doc["items"].as_array().unwrap().iter().all(|g| g["metadata"]["name"] != ""),
            "{n}: /apis has no core group"
        );

        let v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let refused = s.raw_accepting("GET", "/apis", None, v2beta1).await;
        assert!(refused.is_status(406, "NotAcceptable"), "{n}: {refused:?}");
        let fallback = s.raw_accepting("GET", "/apis", None, &format!("{v2beta1},application/json")).await;
        assert_eq!(fallback.json()["kind"], "APIGroupList", "{n}");
    }
}

#[tokio::test]
async fn the_version_is_kubernetes_1_37() {
    for s in servers().await {
        let version = s.client.apiserver_version().await.unwrap();
        assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "37"), "{}", s.name);
    }
}
