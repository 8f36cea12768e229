//! Sample objects for the CRDs' CEL rules: a valid object of each kind, and for every rule an
//! object it refuses. The offline tier (`cel_rules.rs`) and the real API server
//! (`cel_on_server.rs`) judge the same samples.

use serde_json::{Value, json};

pub const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

pub fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    object.pointer_mut(parent).unwrap()[key] = value;
    object
}

pub fn without(mut object: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    object.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
    object
}

pub fn cell() -> Value {
    json!({
        "apiVersion": "cellplane.io/v1alpha1",
        "kind": "Cell",
        "metadata": {"name": "cell-eu-1"},
        "spec": {
            "provider": "aws",
            "region": "eu-west-1",
            "network": {"cidr": "10.20.0.0/16"},
            "cluster": {
                "kubernetesVersion": "1.31",
                "nodePools": [{"name": "system", "instanceType": "m6i.large", "minNodes": 2, "maxNodes": 4}]
            },
            "capacity": {"maxNamespaces": 200},
            "version": "1.4.2",
            "credentialsSecretRef": {"name": "cell-eu-1-aws"},
            "aws": {
                "roleArn": "arn:aws:iam::111122223333:role/cellplane-cell",
                "clusterRoleArn": "arn:aws:iam::111122223333:role/eks-cluster",
                "nodeRoleArn": "arn:aws:iam::111122223333:role/eks-nodes"
            },
            "ingress": {"domain": "cell-eu-1.example.com"}
        }
    })
}

pub fn namespace() -> Value {
    json!({
        "apiVersion": "cellplane.io/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": "acme-prod"},
        "spec": {
            "region": "eu-west-1",
            "mtls": {"issueClientCertificate": true}
        }
    })
}

pub fn ring() -> Value {
    json!({
        "apiVersion": "cellplane.io/v1alpha1",
        "kind": "DeploymentRing",
        "metadata": {"name": "canary"},
        "spec": {
            "order": 0,
            "cellSelector": {"matchLabels": {"cellplane.io/ring": "canary"}},
            "version": "1.5.0"
        }
    })
}

pub fn release() -> Value {
    json!({
        "apiVersion": "cellplane.io/v1alpha1",
        "kind": "Release",
        "metadata": {"name": "service-1.1.0"},
        "spec": {
            "version": "1.1.0",
            "manifests": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  cell: ${cell}\n"
        }
    })
}

/// An object a CEL rule refuses: created as `object`, or, for a rule on transitions, changed
/// from `old` into `object`. `message` is the rule's message.
pub struct Refusal {
    pub kind: &'static str,
    pub message: &'static str,
    pub object: Value,
    pub old: Option<Value>,
}

fn refused(kind: &'static str, message: &'static str, object: Value) -> Refusal {
    Refusal { kind, message, object, old: None }
}

fn changed(kind: &'static str, message: &'static str, old: Value, pointer: &str, value: Value) -> Refusal {
    Refusal { kind, message, object: with(old.clone(), pointer, value), old: Some(old) }
}

/// One refused sample per CEL rule of every CRD (`every_rule_has_a_refusal` keeps it complete).
pub fn refusals() -> Vec<Refusal> {
    let dns = "metadata.name must be a DNS label: at most 63 characters and no dots";
    let prometheus = json!({"query": "up", "comparison": "gt", "threshold": 0});
    let gate = |extra: Value| {
        let mut gate = json!({"name": "g"});
        gate.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        with(ring(), "/spec/gates", json!([gate]))
    };
    let follower = with(without(ring(), "/spec/version"), "/spec/followUpstream", json!(true));
    let nat = with(cell(), "/spec/network/natGateway", json!(false));
    vec![
        refused("Cell", dns, with(cell(), "/metadata/name", json!("cell.eu"))),
        refused("Cell", "spec.aws is required for the aws provider", without(cell(), "/spec/aws")),
        refused(
            "Cell",
            "spec.gcp is required for the gcp provider",
            with(without(cell(), "/spec/aws"), "/spec/provider", json!("gcp")),
        ),
        refused(
            "Cell",
            "minNodes must not be greater than maxNodes",
            with(cell(), "/spec/cluster/nodePools/0/minNodes", json!(5)),
        ),
        changed("Cell", "provider is immutable", cell(), "/spec/provider", json!("sim")),
        changed("Cell", "region is immutable", cell(), "/spec/region", json!("eu-central-1")),
        changed("Cell", "network.cidr is immutable", cell(), "/spec/network/cidr", json!("10.30.0.0/16")),
        changed("Cell", "network.natGateway is immutable", nat, "/spec/network/natGateway", json!(true)),
        refused("Namespace", dns, with(namespace(), "/metadata/name", json!("a.b"))),
        refused(
            "Namespace",
            "set exactly one of acceptedClientCA or issueClientCertificate: true",
            with(namespace(), "/spec/mtls", json!({"acceptedClientCA": PEM, "issueClientCertificate": true})),
        ),
        refused(
            "Namespace",
            "hostnameTemplate must contain {namespace} and {account}",
            with(namespace(), "/spec/endpoint", json!({"hostnameTemplate": "{cell}.{domain}"})),
        ),
        changed("Namespace", "region is immutable", namespace(), "/spec/region", json!("us-east-1")),
        refused("DeploymentRing", "set at most one of order and upstream", with(ring(), "/spec/upstream", json!("a"))),
        refused(
            "DeploymentRing",
            "set exactly one of version or followUpstream: true",
            with(ring(), "/spec/followUpstream", json!(true)),
        ),
        refused("DeploymentRing", "followUpstream needs an upstream ring: set upstream, or an order above 0", follower),
        refused(
            "DeploymentRing",
            "maxBatch must be at least 1 or a percentage from 1% to 100%",
            with(ring(), "/spec/maxBatch", json!(0)),
        ),
        refused(
            "DeploymentRing",
            "synthetic settings are only allowed on a synthetic gate",
            gate(json!({"kind": "cellConditions", "synthetic": {"minSuccessRatio": 0.9}})),
        ),
        refused(
            "DeploymentRing",
            "prometheus settings are only allowed on a prometheus gate",
            gate(json!({"kind": "cellConditions", "prometheus": prometheus})),
        ),
        refused(
            "DeploymentRing",
            "conditions are only allowed on a cellConditions gate",
            gate(json!({"kind": "prometheus", "conditions": ["Ready"], "prometheus": prometheus})),
        ),
        refused(
            "DeploymentRing",
            "a prometheus gate needs the prometheus settings",
            gate(json!({"kind": "prometheus"})),
        ),
        changed(
            "Release",
            "a Release is immutable: publish a new version as a new Release",
            release(),
            "/spec/version",
            json!("1.1.1"),
        ),
        refused(
            "Release",
            "set exactly one of helm or manifests",
            with(
                release(),
                "/spec/helm",
                json!({"repository": "https://charts.example.com", "chart": "svc", "chartVersion": "1.1.0"}),
            ),
        ),
    ]
}

/// Every CEL rule of the CRDs, as (kind, message).
pub fn rules() -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for (_, crd) in cellplane::api::crds() {
        let kind = crd.spec.names.kind.clone();
        super::walk("", &super::schema(&crd), &mut |_, node| {
            for rule in node.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
                let message = rule.get("message").and_then(Value::as_str).unwrap_or_default();
                rules.push((kind.clone(), message.to_string()));
            }
        });
    }
    rules
}
