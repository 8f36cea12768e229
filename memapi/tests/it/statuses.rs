//! Status codes and the `Status` documents that carry them, where they are easy to get
//! wrong (checked against Kubernetes 1.37).

use serde_json::json;

use crate::reference::*;

/// A custom resource or a CRD replaced without `metadata.resourceVersion`: 422, reported for
/// the resource (`widgets`), not the kind.
#[tokio::test]
async fn updates_of_custom_resources_need_a_resource_version() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("put").await;
        let path = format!("/apis/test.cellplane.io/v1/namespaces/{ns}/widgets");
        let widget = json!({"apiVersion": "test.cellplane.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
        assert_eq!(s.raw("POST", &path, Some(&widget)).await.status, 201, "{n}");
        let raw = s.raw("PUT", &format!("{path}/w"), Some(&widget)).await;
        assert!(raw.is_status(422, "Invalid"), "{n}: {raw:?}");
        let status = raw.json();
        let expected = "widgets.test.cellplane.io \"w\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update";
        assert_eq!(status["message"], expected, "{n}");
        assert_eq!(status["details"]["kind"], "widgets", "{n}");
        s.drop_namespace(&ns).await;
    }
}

/// An `Accept` header that names nothing the server can send: 406 NotAcceptable.
#[tokio::test]
async fn unservable_representations_are_not_acceptable() {
    for s in servers().await {
        let n = s.name;
        let table_v2 = "application/json;as=Table;v=v2;g=meta.k8s.io";
        let raw = s.raw_accepting("GET", "/api/v1/namespaces", None, table_v2).await;
        assert!(raw.is_status(406, "NotAcceptable"), "{n}: {raw:?}");
        let expected = "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf";
        assert_eq!(raw.json()["message"], expected, "{n}");
        let fallback =
            s.raw_accepting("GET", "/api/v1/namespaces", None, &format!("{table_v2}, application/json")).await;
        assert_eq!(fallback.json()["kind"], "NamespaceList", "{n}");
    }
}
