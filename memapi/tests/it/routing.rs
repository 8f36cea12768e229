//! URL routing as the apiserver does it (checked against Kubernetes 1.37): custom
//! resources go through the custom-resource handler, which reads
//! `/apis/G/V/namespaces/X/...` as "in namespace X" and answers paths it cannot serve with a
//! plain-text `404 page not found`; built-in kinds have exact routes, a `Status` 404 for
//! other paths and 405 for methods a route lacks.

use kube::api::PostParams;
use serde_json::json;

use crate::common::*;
use crate::reference::*;

/// The trap a cluster-scoped custom kind named `namespaces` sets: it can be created and
/// listed, but `/apis/G/V/namespaces/NAME` means "namespace NAME", so it can never be read,
/// replaced or deleted by name (kube reports a 404 whose reason it could not parse).
#[tokio::test]
async fn cluster_scoped_custom_namespaces_cannot_be_read_by_name() {
    for s in servers().await {
        let api = s.dynamic(CLUSTER_NAMESPACES, "namespaces", None);
        let name = format!("{}-acme", s.run);
        api.create(&PostParams::default(), &object(CLUSTER_NAMESPACES, "namespaces", &name, json!({}))).await.unwrap();
        let listed = api.list(&Default::default()).await.unwrap();
        assert!(listed.items.iter().any(|o| o.metadata.name.as_deref() == Some(&name)), "{}", s.name);

        let path = format!("/apis/cluster.test.cellplane.io/v1/namespaces/{name}");
        for method in ["GET", "DELETE", "PUT"] {
            let raw = s.raw(method, &path, Some(&json!({}))).await;
            assert!(raw.is_page_not_found(), "{}: {method} {path}: {raw:?}", s.name);
        }
        let err = api_error(api.get_opt(&name).await.unwrap_err());
        assert_eq!((err.code, err.message.as_str()), (404, "404 page not found"), "{}", s.name);
        // Only a delete of the collection reaches it.
        let selector = kube::api::ListParams::default().fields(&format!("metadata.name={name}"));
        api.delete_collection(&Default::default(), &selector).await.unwrap();
    }
}

/// The same plural, namespaced: everything works, in one namespace and across all.
#[tokio::test]
async fn namespaced_custom_namespaces_route_like_any_namespaced_kind() {
    for s in servers().await {
        let ns = s.namespace("tenants").await;
        let api = s.dynamic(SCOPED_NAMESPACES, "namespaces", Some(&ns));
        api.create(&PostParams::default(), &object(SCOPED_NAMESPACES, "namespaces", "acme", json!({}))).await.unwrap();
        assert_eq!(api.get("acme").await.unwrap().metadata.namespace.as_deref(), Some(ns.as_str()), "{}", s.name);
        let across = s.raw("GET", "/apis/scoped.test.cellplane.io/v1/namespaces", None).await.json();
        let names: Vec<&str> =
            across["items"].as_array().unwrap().iter().filter_map(|o| o["metadata"]["namespace"].as_str()).collect();
        assert!(names.contains(&ns.as_str()), "{}: listed across namespaces: {names:?}", s.name);
        // `/apis/G/V/namespaces/X/status` is the object X in namespace X (a namespace subresource).
        let status = s.raw("GET", &format!("/apis/scoped.test.cellplane.io/v1/namespaces/{ns}/status"), None).await;
        assert!(status.is_status(404, "NotFound"), "{}: {status:?}", s.name);
        s.drop_namespace(&ns).await;
    }
}

/// A scope that does not match the kind's is a plain 404 for custom kinds; reading a
/// namespaced kind across namespaces is the one unscoped request that works.
#[tokio::test]
async fn custom_kinds_refuse_the_other_scope_with_page_not_found() {
    for s in servers().await {
        let ns = s.namespace("scope").await;
        let widgets = "/apis/test.cellplane.io/v1/widgets";
        let body = json!({"apiVersion": "test.cellplane.io/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": ns}, "spec": {"size": 1}});
        assert!(s.raw("POST", widgets, Some(&body)).await.is_page_not_found(), "{}: create without namespace", s.name);
        assert!(s.raw("GET", &format!("{widgets}/w"), None).await.is_page_not_found(), "{}", s.name);
        assert!(s.raw("DELETE", widgets, None).await.is_page_not_found(), "{}", s.name);
        assert_eq!(s.raw("GET", widgets, None).await.status, 200, "{}: list across namespaces", s.name);
        let gadgets = format!("/apis/test.cellplane.io/v1/namespaces/{ns}/gadgets");
        assert!(s.raw("GET", &gadgets, None).await.is_page_not_found(), "{}: cluster kind in a namespace", s.name);
        assert!(s.raw("GET", "/apis/test.cellplane.io/v1/nothings", None).await.is_page_not_found(), "{}", s.name);
        assert!(s.raw("GET", "/apis/nothing.example.com/v1", None).await.is_page_not_found(), "{}", s.name);
        s.drop_namespace(&ns).await;
    }
}

/// An unknown subresource of a custom kind names the object as not found, even when it exists.
#[tokio::test]
async fn unknown_custom_subresources_are_not_found() {
    for s in servers().await {
        let api = s.dynamic(("test.cellplane.io", "v1", "Gadget"), "gadgets", None);
        let name = format!("{}-g", s.run);
        let gadget = object(("test.cellplane.io", "v1", "Gadget"), "gadgets", &name, json!({"spec": {"size": 1}}));
        api.create(&PostParams::default(), &gadget).await.unwrap();
        let scale = s.raw("GET", &format!("/apis/test.cellplane.io/v1/gadgets/{name}/scale"), None).await;
        assert!(scale.is_status(404, "NotFound"), "{}: {scale:?}", s.name);
        assert_eq!(scale.json()["message"], format!("gadgets.test.cellplane.io \"{name}\" not found"), "{}", s.name);
        api.delete(&name, &Default::default()).await.unwrap();
    }
}

/// Built-in kinds: a `Status` 404 for paths without a route, 405 for a method the route lacks.
#[tokio::test]
async fn builtin_routes_are_exact() {
    for s in servers().await {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}});
        let post = s.raw("POST", "/api/v1/secrets", Some(&secret)).await;
        assert!(post.is_status(405, "MethodNotAllowed"), "{}: create without namespace: {post:?}", s.name);
        assert!(s.raw("GET", "/api/v1/secrets/s", None).await.is_status(404, "NotFound"), "{}", s.name);
        assert!(s.raw("GET", "/api/v1/namespaces/default/secrets/s/x/y", None).await.is_status(404, "NotFound"));
        assert!(s.raw("GET", "/apis/networking.k8s.io/v1/nothings", None).await.is_status(404, "NotFound"));
        assert!(
            s.raw("POST", "/api/v1/namespaces/default/secrets/s", Some(&secret))
                .await
                .is_status(405, "MethodNotAllowed")
        );
        assert!(s.raw("GET", "/api/v2", None).await.is_status(404, "NotFound"), "{}", s.name);
        assert_eq!(s.raw("GET", "/api/v1/secrets", None).await.status, 200, "{}: list across namespaces", s.name);
        let missing = s.raw("GET", "/api/v1/namespaces/nope", None).await;
        assert_eq!(missing.json()["message"], "namespaces \"nope\" not found", "{}", s.name);
    }
}
