//! Server-side printing (`as=Table`), as kubectl get asks for it (checked against
//! Kubernetes 1.37).

use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::reference::*;

const TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn column_names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"].as_array().expect("columns").iter().map(|c| c["name"].as_str().unwrap()).collect()
}

fn is_age(cell: &Value) -> bool {
    cell.as_str().is_some_and(|s| s.ends_with('s') && s[..s.len() - 1].parse::<u32>().is_ok())
}

#[tokio::test]
async fn custom_resources_print_their_crd_columns() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("tables").await;
        let gizmos = s.dynamic(GIZMOS, "gizmos", Some(&ns));
        let shiny = object(GIZMOS, "gizmos", "shiny", json!({"spec": {"size": 3, "color": "blue", "shiny": true}}));
        gizmos.create(&PostParams::default(), &shiny).await.unwrap();
        let ready = json!({"status": {"conditions": [{"type": "Stalled", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        gizmos.patch_status("shiny", &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap();
        let plain = object(GIZMOS, "gizmos", "plain", json!({"spec": {"size": 1}}));
        gizmos.create(&PostParams::default(), &plain).await.unwrap();

        let path = format!("/apis/test.cellplane.io/v1/namespaces/{ns}/gizmos");
        let table = s.raw_accepting("GET", &path, None, TABLE).await.json();
        assert_eq!((&table["kind"], &table["apiVersion"]), (&json!("Table"), &json!("meta.k8s.io/v1")), "{n}");
        assert_eq!(column_names(&table), ["Name", "Size", "Color", "Ready", "Shiny", "Age"], "{n}");
        let columns = &table["columnDefinitions"];
        assert_eq!(
            (&columns[0]["format"], &columns[2]["priority"], &columns[1]["type"]),
            (&json!("name"), &json!(1), &json!("integer")),
            "{n}"
        );
        assert_eq!(
            columns[1]["description"], "Custom resource definition column (in JSONPath format): .spec.size",
            "{n}"
        );
        let rows = table["rows"].as_array().unwrap();
        let cells = |i: usize| rows[i]["cells"].as_array().unwrap().clone();
        assert_eq!(cells(0)[..5], [json!("plain"), json!(1), Value::Null, Value::Null, Value::Null], "{n}");
        assert_eq!(cells(1)[..5], [json!("shiny"), json!(3), json!("blue"), json!("True"), json!(true)], "{n}");
        assert!(is_age(&cells(1)[5]), "{n}: {:?}", cells(1)[5]);
        assert_eq!(rows[1]["object"]["kind"], "PartialObjectMetadata", "{n}");
        assert_eq!(rows[1]["object"]["metadata"]["namespace"], ns.as_str(), "{n}");
        assert!(table["metadata"]["resourceVersion"].is_string(), "{n}");

        let one = s.raw_accepting("GET", &format!("{path}/shiny?includeObject=Object"), None, TABLE).await.json();
        assert_eq!(one["rows"].as_array().unwrap().len(), 1, "{n}");
        assert_eq!(one["rows"][0]["object"]["kind"], "Gizmo", "{n}");
        assert_eq!(one["metadata"]["resourceVersion"], one["rows"][0]["object"]["metadata"]["resourceVersion"], "{n}");
        let bare = s.raw_accepting("GET", &format!("{path}?includeObject=None"), None, TABLE).await.json();
        assert_eq!(bare["rows"][0]["object"], Value::Null, "{n}");
        // Without the Table media type, the list is a list.
        assert_eq!(s.raw("GET", &path, None).await.json()["kind"], "GizmoList", "{n}");
        // A CRD without printer columns gets an Age column.
        let widgets =
            s.raw_accepting("GET", &format!("/apis/test.cellplane.io/v1/namespaces/{ns}/widgets"), None, TABLE).await;
        let widgets = widgets.json();
        assert_eq!(column_names(&widgets), ["Name", "Age"], "{n}");
        let age = &widgets["columnDefinitions"][1];
        assert_eq!(age["type"], "date", "{n}");
        let described =
            age["description"].as_str().unwrap().starts_with("CreationTimestamp is a timestamp representing");
        assert!(described, "{n}: {age}");
        s.drop_namespace(&ns).await;
    }
}

#[tokio::test]
async fn builtin_kinds_print_their_own_columns() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("printers").await;
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}});
        s.raw("POST", &format!("/api/v1/namespaces/{ns}/configmaps"), Some(&cm)).await;
        let cms = s.raw_accepting("GET", &format!("/api/v1/namespaces/{ns}/configmaps"), None, TABLE).await.json();
        assert_eq!(column_names(&cms), ["Name", "Data", "Age"], "{n}");
        let settings = cms["rows"].as_array().unwrap().iter().find(|r| r["cells"][0] == "settings").unwrap();
        assert_eq!(settings["cells"][1], 2, "{n}");

        let namespace = s.raw_accepting("GET", &format!("/api/v1/namespaces/{ns}"), None, TABLE).await.json();
        assert_eq!(column_names(&namespace), ["Name", "Status", "Age"], "{n}");
        assert_eq!(namespace["rows"][0]["cells"].as_array().unwrap()[..2], [json!(ns), json!("Active")], "{n}");

        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "provisioned"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "cellplane", "reportingInstance": "cellplane-0",
            "action": "Reconcile", "reason": "Provisioned", "type": "Normal", "note": " done ",
            "regarding": {"kind": "Widget", "namespace": ns, "name": "w"},
        });
        s.raw("POST", &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"), Some(&event)).await;
        let events = s.raw_accepting("GET", &format!("/api/v1/namespaces/{ns}/events"), None, TABLE).await.json();
        let expected =
            ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source", "Message", "First Seen", "Count", "Name"];
        assert_eq!(column_names(&events), expected, "{n}");
        let cells = events["rows"][0]["cells"].as_array().unwrap();
        let shown = [&cells[1], &cells[2], &cells[3], &cells[5], &cells[6], &cells[8], &cells[9]];
        let expected = [
            json!("Normal"),
            json!("Provisioned"),
            json!("widget/w"),
            json!("cellplane, cellplane-0"),
            json!("done"),
            json!(1),
            json!("provisioned"),
        ];
        assert_eq!(shown, expected.each_ref(), "{n}");

        let crds =
            s.raw_accepting("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", None, TABLE).await.json();
        let expected = ["Name", "Scope", "Versions", "Created At", "Group", "Kind", "ShortNames", "Established"];
        assert_eq!(column_names(&crds), expected, "{n}");
        let columns = &crds["columnDefinitions"];
        let types: Vec<&Value> = columns.as_array().unwrap().iter().map(|c| &c["type"]).collect();
        assert_eq!((types[3], types[7]), (&json!("date"), &json!("boolean")), "{n}");
        let priorities: Vec<&Value> = columns.as_array().unwrap().iter().map(|c| &c["priority"]).collect();
        assert_eq!(priorities, [0, 0, 0, 0, 1, 1, 1, 1].map(|p| json!(p)).each_ref(), "{n}");
        let row = |name: &str| {
            let rows = crds["rows"].as_array().unwrap();
            rows.iter().find(|r| r["cells"][0] == name).unwrap_or_else(|| panic!("{n}: no row {name}"))["cells"].clone()
        };
        let gizmos = row("gizmos.test.cellplane.io");
        let shown = [&gizmos[1], &gizmos[2], &gizmos[4], &gizmos[5], &gizmos[6], &gizmos[7]];
        let expected = [
            json!("Namespaced"),
            json!("v1(storage)"),
            json!("test.cellplane.io"),
            json!("Gizmo"),
            json!("gz"),
            json!(true),
        ];
        assert_eq!(shown, expected.each_ref(), "{n}");
        assert!(gizmos[3].as_str().is_some_and(|t| t.ends_with('Z')), "{n}: a timestamp, not an age: {}", gizmos[3]);
        // Only served versions, sorted as strings; every short name.
        let multis = row(MULTIS_CRD);
        assert_eq!((&multis[1], &multis[2]), (&json!("Cluster"), &json!("v1(storage),v1alpha1,v2")), "{n}");
        assert_eq!(multis[6], "mu,mlt", "{n}");
        s.drop_namespace(&ns).await;
    }
}

/// Watching as a Table: each event is a one-row Table, and only the first defines columns.
/// The watch selects the test's own ConfigMaps: a real cluster's controller manager puts a
/// `kube-root-ca.crt` ConfigMap into every new namespace as well.
#[tokio::test]
async fn watched_tables_define_columns_once() {
    for s in servers().await {
        let n = s.name;
        let ns = s.namespace("watch").await;
        for name in ["one", "two"] {
            let labels = json!({"cellplane.io/test": "watched-tables"});
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}});
            s.raw("POST", &format!("/api/v1/namespaces/{ns}/configmaps"), Some(&cm)).await;
        }
        let selector = "labelSelector=cellplane.io%2Ftest%3Dwatched-tables";
        let path = format!("/api/v1/namespaces/{ns}/configmaps?watch=true&timeoutSeconds=1&{selector}");
        let body = s.raw_accepting("GET", &path, None, TABLE).await.body;
        let events: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events.len(), 2, "{n}: {body}");
        for (i, event) in events.iter().enumerate() {
            assert_eq!((&event["type"], &event["object"]["kind"]), (&json!("ADDED"), &json!("Table")), "{n}");
            assert_eq!(event["object"]["rows"].as_array().unwrap().len(), 1, "{n}");
            let defines = event["object"]["columnDefinitions"].as_array().is_some_and(|c| !c.is_empty());
            assert_eq!(defines, i == 0, "{n}: event {i}");
        }
        s.drop_namespace(&ns).await;
    }
}
