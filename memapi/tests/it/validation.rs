//! What the apiserver refuses before storing, with its wording (checked against
//! Kubernetes 1.37).

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::Status;
use serde_json::{Value, json};

use crate::common::*;
use crate::reference::*;

const EVENTS: Gvk = ("events.k8s.io", "v1", "Event");
const INGRESSES: Gvk = ("networking.k8s.io", "v1", "Ingress");

/// (field, message) of each cause.
fn causes(status: &Status) -> Vec<(String, String)> {
    let details = status.details.as_ref().expect("details");
    details.causes.iter().map(|c| (c.field.clone(), c.message.clone())).collect()
}

async fn create(api: &Api<DynamicObject>, gvk: Gvk, plural: &str, name: &str, fields: Value) -> Result<(), Status> {
    let obj = object(gvk, plural, name, fields);
    api.create(&PostParams::default(), &obj).await.map(drop).map_err(api_error)
}

fn invalid(result: Result<(), Status>, server: &str) -> Status {
    let status = result.expect_err("refused");
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{server}: {}", status.message);
    status
}

/// A complete events.k8s.io/v1 Event, with some fields replaced.
fn event(overrides: Value) -> Value {
    let mut e = json!({
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "cellplane.io/operator",
        "reportingInstance": "cellplane-0",
        "action": "Reconcile",
        "reason": "Provisioned",
        "type": "Normal",
        "note": "done",
        "regarding": {"apiVersion": "test.cellplane.io/v1", "kind": "Widget", "namespace": "default", "name": "w"},
    });
    json_patch::merge(&mut e, &overrides);
    e
}

#[tokio::test]
async fn object_names_follow_each_kinds_rule() {
    for s in servers().await {
        let n = &s.name;
        let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
        let too_long: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c".repeat(254)}})).unwrap();
        let status = invalid(cms.create(&PostParams::default(), &too_long).await.map(drop).map_err(api_error), n);
        assert!(causes(&status)[0].1.ends_with("must be no more than 253 characters"), "{n}: {status:?}");

        let widgets = s.dynamic(("test.cellplane.io", "v1", "Widget"), "widgets", Some("default"));
        let status = invalid(
            create(
                &widgets,
                ("test.cellplane.io", "v1", "Widget"),
                "widgets",
                "Bad_Name",
                json!({"spec": {"size": 1}}),
            )
            .await,
            n,
        );
        assert_eq!(causes(&status)[0].0, "metadata.name", "{n}");
        assert!(status.message.starts_with("Widget.test.cellplane.io \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{n}: {}", status.message);

        // Core/v1 Events only need a name that is a path segment.
        let core_events = s.dynamic(("", "v1", "Event"), "events", Some("default"));
        let name = format!("{}_Core_Event", s.run);
        let involved = json!({"involvedObject": {"kind": "Widget", "namespace": "default", "name": "w"}});
        create(&core_events, ("", "v1", "Event"), "events", &name, involved.clone()).await.unwrap();
        let status = invalid(create(&core_events, ("", "v1", "Event"), "events", "a%b", involved).await, n);
        assert_eq!(
            causes(&status),
            [("metadata.name".into(), "Invalid value: \"a%b\": may not contain '%'".into())],
            "{n}"
        );
        core_events.delete(&name, &Default::default()).await.unwrap();
    }
}

#[tokio::test]
async fn labels_and_finalizers_are_validated() {
    for s in servers().await {
        let n = &s.name;
        let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
        let bad_label: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "l", "labels": {"ok": "-x"}}})).unwrap();
        let status = invalid(cms.create(&PostParams::default(), &bad_label).await.map(drop).map_err(api_error), n);
        assert_eq!(causes(&status)[0].0, "metadata.labels", "{n}");
        assert!(
            causes(&status)[0].1.starts_with("Invalid value: \"-x\": a valid label must be an empty string"),
            "{n}"
        );

        let held: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "f", "finalizers": ["hold"]}})).unwrap();
        let status = invalid(cms.create(&PostParams::default(), &held).await.map(drop).map_err(api_error), n);
        let expected = "Invalid value: \"hold\": name is neither a standard finalizer name nor is it fully qualified";
        assert_eq!(causes(&status), [("metadata.finalizers[0]".into(), expected.into())], "{n}");
        // Custom kinds only check the format.
        let widgets: Api<Widget> = Api::namespaced(s.client.clone(), "default");
        let mut w = widget(&format!("{}-held", s.run), 1);
        w.metadata.finalizers = Some(vec!["hold".into(), "x/".into()]);
        let status = invalid(widgets.create(&PostParams::default(), &w).await.map(drop).map_err(api_error), n);
        let only_malformed =
            causes(&status).iter().all(|(f, m)| f == "metadata.finalizers" && m.starts_with("Invalid value: \"x/\""));
        assert!(only_malformed, "{n}: only x/ is refused: {}", status.message);
    }
}

#[tokio::test]
async fn new_events_need_what_the_events_api_requires() {
    for s in servers().await {
        let n = &s.name;
        let ns = s.namespace("events").await;
        let events = s.dynamic(EVENTS, "events", Some(&ns));
        let status = invalid(create(&events, EVENTS, "events", "empty", json!({})).await, n);
        let expected = "Event \"empty\" is invalid: [involvedObject.namespace: Invalid value: \"\": does not match event.namespace, eventTime: Required value, type: Invalid value: \"\": has invalid value: ]";
        assert_eq!(status.message, expected, "{n}");
        let details = status.details.unwrap();
        assert_eq!((details.kind.as_str(), details.group.as_str()), ("Event", ""), "{n}: one kind to the apiserver");

        let long = |n: usize| "x".repeat(n);
        let overflowing = event(json!({
            "regarding": {"namespace": ns}, "reportingInstance": long(129), "action": long(129), "reason": "",
            "note": long(1025), "series": {"count": 1},
        }));
        let status = invalid(create(&events, EVENTS, "events", "limits", overflowing).await, n);
        let fields: Vec<String> = causes(&status).into_iter().map(|(f, _)| f).collect();
        let expected = ["reportingInstance", "action", "reason", "message", "series.count", "series.lastObservedTime"];
        assert_eq!(fields, expected, "{n}: {}", status.message);
        assert_eq!(causes(&status)[3].1, "Invalid value: \"\": can have at most 1024 characters", "{n}");

        let controller = event(json!({"regarding": {"namespace": ns}, "reportingController": "bad controller!"}));
        let status = invalid(create(&events, EVENTS, "events", "controller", controller).await, n);
        assert_eq!(causes(&status)[0].0, "reportingController", "{n}");
        assert!(causes(&status)[0].1.contains("name part must consist of alphanumeric characters"), "{n}");

        // The namespace of the regarding object is not compared for new-style events.
        create(&events, EVENTS, "events", "elsewhere", event(json!({"regarding": {"namespace": "other"}})))
            .await
            .unwrap();
        s.drop_namespace(&ns).await;
    }
}

/// Events about cluster-scoped objects belong in `default` (or `kube-system`): kubectl
/// describe looks for them there.
#[tokio::test]
async fn events_of_cluster_scoped_objects_go_to_default() {
    for s in servers().await {
        let n = &s.name;
        let cluster_scoped = || event(json!({"regarding": {"kind": "Gadget", "namespace": null, "name": "g"}}));
        let name = format!("{}-cluster", s.run);
        let in_system = s.dynamic(EVENTS, "events", Some("kube-system"));
        create(&in_system, EVENTS, "events", &name, cluster_scoped()).await.unwrap();
        in_system.delete(&name, &Default::default()).await.unwrap();

        let in_default = s.dynamic(EVENTS, "events", Some("default"));
        create(&in_default, EVENTS, "events", &name, cluster_scoped()).await.unwrap();
        in_default.delete(&name, &Default::default()).await.unwrap();

        let in_public = s.dynamic(EVENTS, "events", Some("kube-public"));
        let status = invalid(create(&in_public, EVENTS, "events", &name, cluster_scoped()).await, n);
        let expected =
            ("involvedObject.namespace".into(), "Invalid value: \"\": does not match event.namespace".into());
        assert_eq!(causes(&status), [expected], "{n}");
    }
}

#[tokio::test]
async fn ingresses_need_valid_hosts_paths_and_backends() {
    for s in servers().await {
        let n = &s.name;
        let ingresses = s.dynamic(INGRESSES, "ingresses", Some("default"));
        let status = invalid(create(&ingresses, INGRESSES, "ingresses", "empty", json!({"spec": {}})).await, n);
        let expected = "Invalid value: null: either `defaultBackend` or `rules` must be specified";
        assert_eq!(causes(&status), [("spec".into(), expected.into())], "{n}");
        let no_rules = json!({"spec": {"rules": []}});
        let status = invalid(create(&ingresses, INGRESSES, "ingresses", "empty", no_rules).await, n);
        let expected = "Invalid value: []: either `defaultBackend` or `rules` must be specified";
        assert_eq!(causes(&status), [("spec".into(), expected.into())], "{n}");

        let backend = |name: &str, port: Value| json!({"service": {"name": name, "port": port}});
        let spec = json!({
            "ingressClassName": "Bad Class",
            "rules": [
                {"host": "10.0.0.1", "http": {"paths": [{"path": "/", "backend": backend("web", json!({"number": 80}))}]}},
                {"host": "a.*.com", "http": {"paths": [{"path": "x", "pathType": "Exact", "backend": backend("Web_x", json!({"number": 70000}))}]}},
                {"host": "Web.example.com", "http": {"paths": []}},
                {"http": {"paths": [
                    {"path": "/", "pathType": "Other", "backend": {}},
                    {"pathType": "ImplementationSpecific", "backend": backend("web", json!({"name": "HTTP--x"}))},
                    {"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"name": "http", "number": 80}))},
                ]}},
            ],
            "tls": [{"hosts": ["*.example.com", "bad_host"], "secretName": "Bad"}],
        });
        let status = invalid(create(&ingresses, INGRESSES, "ingresses", "bad", json!({"spec": spec})).await, n);
        let fields: Vec<String> = causes(&status).into_iter().map(|(f, _)| f).collect();
        let expected = [
            "spec.rules[0].host",
            "spec.rules[0].http.paths[0].pathType",
            "spec.rules[1].host",
            "spec.rules[1].http.paths[0].path",
            "spec.rules[1].http.paths[0].backend.service.name",
            "spec.rules[1].http.paths[0].backend.service.port.number",
            "spec.rules[2].host",
            "spec.rules[2].http.paths",
            "spec.rules[3].http.paths[0].pathType",
            "spec.rules[3].http.paths[0].backend",
            "spec.rules[3].http.paths[1].backend.service.port.name",
            "spec.rules[3].http.paths[1].backend.service.port.name",
            "spec.rules[3].http.paths[2].backend",
            "spec.tls[0].hosts[1]",
            "spec.tls[0].secretName",
            "spec.ingressClassName",
        ];
        assert_eq!(fields, expected, "{n}: {}", status.message);
        let messages: Vec<String> = causes(&status).into_iter().map(|(_, m)| m).collect();
        assert_eq!(messages[0], "Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address", "{n}");
        assert_eq!(messages[1], "Required value: pathType must be specified", "{n}");
        let label = "Invalid value: \"Web_x\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
        assert_eq!(messages[4], label, "{n}");
        assert_eq!(messages[5], "Invalid value: 70000: must be between 1 and 65535, inclusive", "{n}");
        let unsupported =
            "Unsupported value: \"Other\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\"";
        assert_eq!(messages[8], unsupported, "{n}");
        assert_eq!(messages[12], "Invalid value: \"\": cannot set both port name & port number", "{n}");

        let good = json!({"spec": {
            "rules": [{"host": "*.cells.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"name": "https"}))}]}}],
            "tls": [{"hosts": ["*.cells.example.com"], "secretName": "acme.server-tls"}],
        }});
        let name = format!("{}-good", s.run);
        create(&ingresses, INGRESSES, "ingresses", &name, good).await.unwrap();
        ingresses.delete(&name, &Default::default()).await.unwrap();
    }
}

#[tokio::test]
async fn secrets_need_valid_keys_their_types_keys_and_fit_in_a_mebibyte() {
    for s in servers().await {
        let n = &s.name;
        let secrets: Api<Secret> = Api::namespaced(s.client.clone(), "default");
        let refused = |body: Value| {
            let secrets = secrets.clone();
            async move {
                let secret: Secret = serde_json::from_value(body).unwrap();
                secrets.create(&PostParams::default(), &secret).await.map(drop).map_err(api_error)
            }
        };
        let tls = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "c", "bad key!": "x"}});
        let status = invalid(refused(tls).await, n);
        let fields: Vec<String> = causes(&status).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["data[bad key!]", "data[tls.key]"], "{n}: {}", status.message);

        let big = "x".repeat(1024 * 1024);
        let status =
            invalid(refused(json!({"metadata": {"name": "big"}, "stringData": {"a": big, "b": "y"}})).await, n);
        assert_eq!(causes(&status), [("data".into(), "Too long: may not be more than 1048576 bytes".into())], "{n}");

        // stringData is stored as data, and the type defaults to Opaque.
        let name = format!("{}-plain", s.run);
        let plain: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})).unwrap();
        let created = secrets.create(&PostParams::default(), &plain).await.unwrap();
        assert_eq!(created.type_.as_deref(), Some("Opaque"), "{n}");
        assert!(created.string_data.is_none(), "{n}");
        assert_eq!(created.data.unwrap()["k"].0, b"v", "{n}");
        let mut retyped = secrets.get(&name).await.unwrap();
        retyped.type_ = Some("kubernetes.io/ssh-auth".into());
        let status = api_error(secrets.replace(&name, &PostParams::default(), &retyped).await.unwrap_err());
        let (field, message) = causes(&status).remove(0);
        assert_eq!(
            (field.as_str(), message.as_str()),
            ("type", "Invalid value: \"kubernetes.io/ssh-auth\": field is immutable"),
            "{n}"
        );
        secrets.delete(&name, &Default::default()).await.unwrap();
    }
}
