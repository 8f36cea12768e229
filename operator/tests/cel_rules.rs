//! The CEL rules of the CRDs, evaluated offline with kube-cel the way the API server would:
//! defaults applied first, transition rules given the old object.

mod common;

use cellplane::api::{Cell, DeploymentRing, Namespace};
use common::samples::{PEM, cell, namespace, refusals, ring, rules, with, without};
use common::{crd, schema};
use kube::core::cel::{Validator, apply_defaults};
use serde_json::{Value, json};

fn errors(kind: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema(&crd(kind));
    match Validator::new().validate(&schema, object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[track_caller]
fn assert_valid(kind: &str, object: &Value) {
    let errs = errors(kind, object, None);
    assert!(errs.is_empty(), "expected valid, got {errs:?}");
}

#[track_caller]
fn assert_rejected(kind: &str, object: &Value, old: Option<&Value>, message: &str) {
    let errs = errors(kind, object, old);
    assert!(errs.iter().any(|e| e.contains(message)), "expected an error containing {message:?}, got {errs:?}");
}

#[test]
fn cell_accepts_a_complete_spec() {
    assert_valid("Cell", &cell());
    let sim = without(with(cell(), "/spec/provider", json!("sim")), "/spec/credentialsSecretRef");
    assert_valid("Cell", &sim);
}

#[test]
fn cell_needs_its_account_on_a_real_cloud() {
    // The operator's own identity (IRSA, Workload Identity) may stand in for a Secret.
    assert_valid("Cell", &without(cell(), "/spec/credentialsSecretRef"));
    assert_rejected("Cell", &without(cell(), "/spec/aws"), None, "spec.aws is required for the aws provider");
    let gcp = with(without(cell(), "/spec/aws"), "/spec/provider", json!("gcp"));
    assert_rejected("Cell", &gcp, None, "spec.gcp is required for the gcp provider");
    assert_valid("Cell", &with(gcp, "/spec/gcp", json!({"project": "acme-cell-eu-1"})));
}

#[test]
fn cell_node_pool_bounds() {
    let object = with(cell(), "/spec/cluster/nodePools/0/minNodes", json!(5));
    assert_rejected("Cell", &object, None, "minNodes must not be greater than maxNodes");
}

#[test]
fn cell_name_is_a_dns_label() {
    let dotted = with(cell(), "/metadata/name", json!("cell.eu"));
    assert_rejected("Cell", &dotted, None, "must be a DNS label");
    let long = with(cell(), "/metadata/name", json!("c".repeat(64)));
    assert_rejected("Cell", &long, None, "must be a DNS label");
}

#[test]
fn cell_provider_region_and_cidr_are_immutable() {
    let old = cell();
    assert!(errors("Cell", &old, Some(&old)).is_empty());
    let changes = [
        ("/spec/provider", json!("gcp"), "provider is immutable"),
        ("/spec/region", json!("eu-central-1"), "region is immutable"),
        ("/spec/network/cidr", json!("10.30.0.0/16"), "network.cidr is immutable"),
    ];
    for (pointer, value, message) in changes {
        assert_rejected("Cell", &with(cell(), pointer, value), Some(&old), message);
    }
    // Mutable fields stay mutable.
    let upgraded = with(cell(), "/spec/version", json!("1.5.0"));
    assert!(errors("Cell", &upgraded, Some(&old)).is_empty());
}

#[test]
fn namespace_accepts_either_mtls_mode() {
    assert_valid("Namespace", &namespace());
    assert_valid("Namespace", &with(namespace(), "/spec/mtls", json!({"acceptedClientCA": PEM})));
    assert_valid(
        "Namespace",
        &with(namespace(), "/spec/mtls", json!({"acceptedClientCA": PEM, "issueClientCertificate": false})),
    );
}

#[test]
fn namespace_mtls_needs_exactly_one_mode() {
    let message = "set exactly one of acceptedClientCA or issueClientCertificate";
    let both = json!({"acceptedClientCA": PEM, "issueClientCertificate": true});
    assert_rejected("Namespace", &with(namespace(), "/spec/mtls", both), None, message);
    assert_rejected("Namespace", &with(namespace(), "/spec/mtls", json!({})), None, message);
    let off = json!({"issueClientCertificate": false});
    assert_rejected("Namespace", &with(namespace(), "/spec/mtls", off), None, message);
}

#[test]
fn namespace_endpoint_template_names_the_namespace_and_its_account() {
    let message = "must contain {namespace} and {account}";
    for template in ["{cell}.{domain}", "{namespace}.{cell}.{domain}", "{account}.{cell}.{domain}"] {
        let object = with(namespace(), "/spec/endpoint", json!({ "hostnameTemplate": template }));
        assert_rejected("Namespace", &object, None, message);
    }
    let both = with(namespace(), "/spec/endpoint", json!({"hostnameTemplate": "{namespace}-{account}.{domain}"}));
    assert_valid("Namespace", &both);
}

#[test]
fn namespace_name_is_a_dns_label_and_region_immutable() {
    assert_rejected("Namespace", &with(namespace(), "/metadata/name", json!("a.b")), None, "DNS label");
    let old = namespace();
    let moved = with(namespace(), "/spec/region", json!("us-east-1"));
    assert_rejected("Namespace", &moved, Some(&old), "region is immutable");
}

#[test]
fn ring_accepts_version_or_follow_upstream() {
    assert_valid("DeploymentRing", &ring());
    let follower = json!({
        "upstream": "canary",
        "cellSelector": {},
        "followUpstream": true,
        "maxBatch": "25%",
        "pauseBetweenBatches": "1h30m",
        "minBakeTime": "7d",
        "gates": [
            {"name": "cells-ready", "kind": "cellConditions", "conditions": ["Ready"]},
            {"name": "errors", "kind": "prometheus", "prometheus": {
                "query": "sum(rate(errors{cell=\"{cell}\"}[5m]))", "comparison": "lt", "threshold": 0.01
            }}
        ],
        "manualApproval": true,
        "approval": {"version": "1.5.0", "approvedBy": "sre@example.com"},
        "rollbackPolicy": "automatic"
    });
    assert_valid("DeploymentRing", &with(ring(), "/spec", follower));
}

#[test]
fn ring_order_and_upstream_are_exclusive() {
    let object = with(ring(), "/spec/upstream", json!("canary"));
    assert_rejected("DeploymentRing", &object, None, "set at most one of order and upstream");
}

#[test]
fn ring_version_and_follow_upstream_are_exclusive() {
    let message = "set exactly one of version or followUpstream";
    let both = with(ring(), "/spec/followUpstream", json!(true));
    assert_rejected("DeploymentRing", &both, None, message);
    let neither = without(ring(), "/spec/version");
    assert_rejected("DeploymentRing", &neither, None, message);
    // followUpstream: false counts as not following.
    assert_valid("DeploymentRing", &with(ring(), "/spec/followUpstream", json!(false)));
    let off = with(neither, "/spec/followUpstream", json!(false));
    assert_rejected("DeploymentRing", &off, None, message);
}

#[test]
fn ring_follow_upstream_needs_an_upstream() {
    let first = with(without(ring(), "/spec/version"), "/spec/followUpstream", json!(true));
    assert_rejected("DeploymentRing", &first, None, "followUpstream needs an upstream ring");
    assert_valid("DeploymentRing", &with(first, "/spec/order", json!(1)));
}

#[test]
fn ring_max_batch_is_a_positive_count_or_percentage() {
    assert_valid("DeploymentRing", &with(ring(), "/spec/maxBatch", json!(3)));
    assert_valid("DeploymentRing", &with(ring(), "/spec/maxBatch", json!("100%")));
    let zero = with(ring(), "/spec/maxBatch", json!(0));
    assert_rejected("DeploymentRing", &zero, None, "maxBatch must be at least 1");
}

#[test]
fn ring_gate_settings_match_its_kind() {
    let no_query = json!([{"name": "errors", "kind": "prometheus"}]);
    let object = with(ring(), "/spec/gates", no_query);
    assert_rejected("DeploymentRing", &object, None, "a prometheus gate needs the prometheus settings");

    let stray = json!([{"name": "ready", "kind": "cellConditions",
        "prometheus": {"query": "up", "comparison": "gt", "threshold": 0}}]);
    let object = with(ring(), "/spec/gates", stray);
    assert_rejected("DeploymentRing", &object, None, "only allowed on a prometheus gate");

    let conditions = json!([{"name": "errors", "kind": "prometheus", "conditions": ["Ready"],
        "prometheus": {"query": "up", "comparison": "gt", "threshold": 0}}]);
    let object = with(ring(), "/spec/gates", conditions);
    assert_rejected("DeploymentRing", &object, None, "only allowed on a cellConditions gate");
}

/// A minimal manifest, defaulted by the schema as the API server would, reads back into the
/// Rust types with the documented defaults.
#[test]
fn defaulted_minimal_manifests_deserialize() {
    let defaulted = |kind: &str, object: Value| apply_defaults(&schema(&crd(kind)), &object);

    let cell: Cell = serde_json::from_value(defaulted("Cell", cell())).unwrap();
    assert!(!cell.spec.cordoned);
    assert_eq!(cell.spec.cluster.node_pools[0].min_nodes, 2);

    let ns: Namespace = serde_json::from_value(defaulted("Namespace", namespace())).unwrap();
    assert_eq!(ns.spec.retention.days, 30);
    assert_eq!(ns.spec.endpoint.hostname_template, "{namespace}.{account}.{cell}.{domain}");
    assert_eq!(ns.spec.placement.tier, cellplane::api::namespace::Tier::Standard);

    let ring: DeploymentRing = serde_json::from_value(defaulted("DeploymentRing", ring())).unwrap();
    assert_eq!(ring.spec.pause_between_batches, "5m");
    assert_eq!(ring.spec.min_bake_time, "1h");
    assert_eq!(ring.spec.max_batch, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1));
    assert_eq!(ring.spec.rollback_policy, cellplane::api::ring::RollbackPolicy::None);
}

/// Every rule has a sample it refuses (so the real API server's test covers every rule), and
/// each sample is refused here with that rule's message.
#[test]
fn every_rule_has_a_refusal() {
    let samples = refusals();
    for (kind, message) in rules() {
        assert!(
            samples.iter().any(|r| r.kind == kind && r.message == message),
            "no sample in tests/common/samples.rs refuses the {kind} rule {message:?}"
        );
    }
    for refusal in &samples {
        assert_rejected(refusal.kind, &refusal.object, refusal.old.as_ref(), refusal.message);
    }
}
