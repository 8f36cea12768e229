//! Fidelity checks run against memapi and, when `MEMAPI_REFERENCE_KUBECONFIG` names one, a
//! real Kubernetes control plane as well (`scripts/testcluster.sh start DIR` prints such a
//! kubeconfig; `scripts/with-testcluster.sh` sets the variable): one set of assertions for
//! both keeps memapi from drifting from the real thing. The reference is Kubernetes 1.37.

use cellplane_memapi::ApiServer;
use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};

use crate::common::{DEADLINE, Gadget, Widget, eventually, eventually_within};

pub const REFERENCE_ENV: &str = "MEMAPI_REFERENCE_KUBECONFIG";
/// Set (by `make test`) when the comparison with a real server must run rather than be skipped.
pub const REQUIRE_ENV: &str = "CELLPLANE_REQUIRE_CLUSTER";

/// A server under test.
pub struct Server {
    pub name: &'static str,
    pub client: Client,
    /// Prefix of every name this run creates, so runs on a shared server do not collide.
    pub run: String,
}

/// memapi, and the reference server when one is configured (saying so when it is not; failing
/// when [`REQUIRE_ENV`] is set).
pub async fn servers() -> Vec<Server> {
    let memapi = ApiServer::new();
    let mut servers = vec![connect("memapi", memapi.client()).await];
    match std::env::var_os(REFERENCE_ENV) {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("reference kubeconfig is readable");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
            servers.push(connect("kube-apiserver", Client::try_from(config).expect("client")).await);
        }
        None if std::env::var_os(REQUIRE_ENV).is_some() => {
            panic!(
                "the fidelity checks need a real kube-apiserver: {REFERENCE_ENV} is unset and {REQUIRE_ENV} forbids comparing with memapi only"
            )
        }
        None => println!("compared with memapi only: set {REFERENCE_ENV} to check a real kube-apiserver too"),
    }
    servers
}

async fn connect(name: &'static str, client: Client) -> Server {
    for crd in test_crds() {
        install(&client, crd).await;
    }
    let run = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    Server { name, client, run }
}

impl Server {
    /// A fresh namespace of this run.
    pub async fn namespace(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.run);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns).await.unwrap();
        name
    }

    /// Starts deleting a namespace of this run (the server finishes it on its own).
    pub async fn drop_namespace(&self, name: &str) {
        let _ = Api::<Namespace>::all(self.client.clone()).delete(name, &DeleteParams::default()).await;
    }

    pub fn dynamic(&self, gvk: Gvk, plural: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = resource(gvk, plural);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Polls `check` until it returns Some. A real cluster's controllers take seconds where
    /// memapi takes none, so the reference server gets more time.
    pub async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let patience = if self.name == "memapi" { DEADLINE } else { DEADLINE * 6 };
        eventually_within(patience, &format!("{}: {what}", self.name), check).await
    }

    /// A raw request: status, content type and body as the server sent them.
    pub async fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Raw {
        self.raw_accepting(method, path, body, "application/json").await
    }

    /// A server-side apply of a JSON body.
    pub async fn apply(&self, path: &str, body: &Value) -> Raw {
        self.send(Request::patch(path).header("content-type", "application/apply-patch+yaml"), body, "application/json")
            .await
    }

    /// A raw request asking for a representation (`Accept`).
    pub async fn raw_accepting(&self, method: &str, path: &str, body: Option<&Value>, accept: &str) -> Raw {
        let request = Request::builder().method(method).uri(path).header("content-type", "application/json");
        self.send(request, body.unwrap_or(&Value::Null), accept).await
    }

    async fn send(&self, request: http::request::Builder, body: &Value, accept: &str) -> Raw {
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
        let request = request.header("accept", accept).body(kube::client::Body::from(body)).unwrap();
        let response = self.client.send(request).await.expect("request sent");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        Raw { status, content_type, body: String::from_utf8_lossy(&bytes).into_owned() }
    }
}

/// (group, version, kind)
pub type Gvk = (&'static str, &'static str, &'static str);

fn resource(gvk: Gvk, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2), plural)
}

/// An object of a kind, its fields beside metadata given as JSON.
pub fn object(gvk: Gvk, plural: &str, name: &str, fields: Value) -> DynamicObject {
    DynamicObject::new(name, &resource(gvk, plural)).data(fields)
}

/// A response read whole.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The plain-text 404 of a path no handler serves (not a Status).
    pub fn is_page_not_found(&self) -> bool {
        self.status == 404 && self.content_type.starts_with("text/plain") && self.body.trim() == "404 page not found"
    }

    /// A `Status` with this code and reason.
    pub fn is_status(&self, code: u16, reason: &str) -> bool {
        let status = self.json();
        self.status == code && status["kind"] == "Status" && status["reason"] == reason
    }
}

/// A namespaced kind with the names and printer columns kubectl uses.
pub const GIZMOS: Gvk = ("test.cellplane.io", "v1", "Gizmo");

fn gizmo_crd() -> CustomResourceDefinition {
    let column = |name: &str, type_: &str, path: &str, priority: i64| json!({"name": name, "type": type_, "jsonPath": path, "priority": priority});
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.test.cellplane.io"},
        "spec": {
            "group": GIZMOS.0,
            "scope": "Namespaced",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "shortNames": ["gz"], "categories": ["testing"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "additionalPrinterColumns": [
                    column("Size", "integer", ".spec.size", 0),
                    column("Color", "string", ".spec.color", 1),
                    column("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status", 0),
                    column("Shiny", "boolean", ".spec.shiny", 0),
                    column("Age", "date", ".metadata.creationTimestamp", 0),
                ],
            }],
        },
    }))
    .unwrap()
}

/// A cluster-scoped kind in several versions, one of them not served, and two short names.
pub const MULTIS_CRD: &str = "multis.versions.test.cellplane.io";

fn multi_crd() -> CustomResourceDefinition {
    let version = |name: &str, served: bool, storage: bool| {
        let schema = json!({"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}});
        json!({"name": name, "served": served, "storage": storage, "schema": schema})
    };
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": MULTIS_CRD},
        "spec": {
            "group": "versions.test.cellplane.io",
            "scope": "Cluster",
            "names": {"plural": "multis", "singular": "multi", "kind": "Multi", "shortNames": ["mu", "mlt"]},
            "versions": [
                version("v1alpha1", true, false),
                version("v1beta1", false, false),
                version("v1", true, true),
                version("v2", true, false),
            ],
        },
    }))
    .unwrap()
}

/// A namespaced kind whose schema has CEL rules of every shape: on the object, on `spec`
/// (with a message, a messageExpression, a reason and fieldPath, neither), on scalars, map
/// values and list-map items, transition rules, and one on `status`.
pub const RULEBOOKS: Gvk = ("cel.test.cellplane.io", "v1", "Rulebook");

fn rulebook_crd() -> CustomResourceDefinition {
    let rule = |rule: &str, message: &str| json!({"rule": rule, "message": message});
    let string = |rules: Value| json!({"type": "string", "x-kubernetes-validations": rules});
    let pool = json!({
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "size": {"type": "integer"}},
        "x-kubernetes-validations": [rule("self.size > 0", "size positive"), rule("self.size == oldSelf.size", "pool size fixed")],
    });
    let spec = json!({
        "type": "object",
        "x-kubernetes-validations": [
            rule("!has(self.a) || self.a >= 0", "a must not be negative"),
            {"rule": "!has(self.b) || self.b != 'bad'", "messageExpression": "'b may not be ' + self.b"},
            {"rule": "!has(self.c) || self.c != 'x'", "reason": "FieldValueForbidden", "fieldPath": ".c", "message": "c may not be x"},
            {"rule": "!has(self.f) || self.f != 'x'"},
        ],
        "properties": {
            "a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "string"}, "f": {"type": "string"},
            "fixed": string(json!([rule("self == oldSelf", "fixed is immutable")])),
            "count": {"type": "integer", "x-kubernetes-validations": [rule("self < 100", "count small")]},
            "labels": {"type": "object", "additionalProperties": string(json!([rule("self != 'no'", "no no")]))},
            "pools": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": pool},
        },
    });
    let status =
        json!({"type": "object", "properties": {"phase": string(json!([rule("self != 'Bad'", "bad phase")]))}});
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "rulebooks.cel.test.cellplane.io"},
        "spec": {
            "group": RULEBOOKS.0,
            "scope": "Namespaced",
            "names": {"plural": "rulebooks", "singular": "rulebook", "kind": "Rulebook"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-validations": [rule("self.metadata.name.size() <= 20", "short names only")],
                    "properties": {"spec": spec, "status": status},
                }},
            }],
        },
    }))
    .unwrap()
}

/// Kinds named `namespaces` outside the core group, in both scopes.
pub const CLUSTER_NAMESPACES: Gvk = ("cluster.test.cellplane.io", "v1", "Namespace");
pub const SCOPED_NAMESPACES: Gvk = ("scoped.test.cellplane.io", "v1", "Namespace");

fn test_crds() -> Vec<CustomResourceDefinition> {
    let namespaces = |group: &str, scope: &str| {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("namespaces.{group}")},
            "spec": {
                "group": group,
                "scope": scope,
                "names": {"plural": "namespaces", "singular": "namespace", "kind": "Namespace", "shortNames": ["tns"]},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                }],
            },
        }))
        .unwrap()
    };
    vec![
        Widget::crd(),
        Gadget::crd(),
        gizmo_crd(),
        multi_crd(),
        rulebook_crd(),
        namespaces(CLUSTER_NAMESPACES.0, "Cluster"),
        namespaces(SCOPED_NAMESPACES.0, "Namespaced"),
    ]
}

/// Creates a CRD unless it exists, then waits until its resource is served.
async fn install(client: &Client, crd: CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    match crds.create(&PostParams::default(), &crd).await {
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        created => {
            created.unwrap();
        }
    }
    let spec = &crd.spec;
    let gvk = GroupVersionKind::gvk(&spec.group, &spec.versions[0].name, &spec.names.kind);
    let served: Api<DynamicObject> =
        Api::all_with(client.clone(), &ApiResource::from_gvk_with_plural(&gvk, &spec.names.plural));
    eventually(&format!("{name} served"), || {
        let served = served.clone();
        async move { served.list(&ListParams::default().limit(1)).await.ok() }
    })
    .await;
}
