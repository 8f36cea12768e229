//! Objects and waits shared by the tests, the e2e suite and the fleet benchmark.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::cell::{CapacitySpec, Cell, CellSpec, ClusterSpec, IngressSpec, NetworkSpec, NodePool, Provider};
use crate::api::conditions::{self, types};
use crate::api::namespace::{MtlsSpec, Namespace, NamespaceSpec, Placement, Tier};
use crate::api::release::{Release, ReleaseSpec};
use crate::api::ring::{DeploymentRing, DeploymentRingSpec, RollbackPolicy};

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ObjectMeta { name: Some(name.into()), labels: (!labels.is_empty()).then_some(labels), ..ObjectMeta::default() }
}

/// A sim cell holding up to `max_namespaces`, running `version`.
pub fn cell(name: &str, region: &str, labels: &[(&str, &str)], max_namespaces: i32, version: &str) -> Cell {
    let spec = CellSpec {
        provider: Provider::Sim,
        region: region.into(),
        network: NetworkSpec { cidr: "10.20.0.0/16".into(), nat_gateway: false },
        cluster: ClusterSpec {
            kubernetes_version: "1.33".into(),
            node_pools: vec![NodePool {
                name: "general".into(),
                instance_type: "sim.large".into(),
                min_nodes: 1,
                max_nodes: 3,
                labels: BTreeMap::new(),
            }],
        },
        capacity: CapacitySpec { max_namespaces, max_units: None },
        version: version.into(),
        credentials_secret_ref: None,
        aws: None,
        gcp: None,
        database: None,
        ingress: IngressSpec { domain: "example.com".into(), ..IngressSpec::default() },
        cordoned: false,
    };
    Cell { metadata: meta(name, labels), spec, status: None }
}

/// A Release `name` of `version`: one ConfigMap with the cell's values, in `service` (so a cell
/// that shares the operator's cluster runs it in `service-<cell>`).
pub fn release(name: &str, version: &str) -> Release {
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: service-settings\n\
                     data:\n  cell: ${cell}\n  version: ${version}\n";
    let spec = ReleaseSpec {
        version: version.into(),
        helm: None,
        manifests: Some(manifests.into()),
        substitute: BTreeMap::new(),
        namespace: "service".into(),
        front_door: None,
        health_timeout: "2m".into(),
        force: false,
        drift_interval: "10m".into(),
    };
    Release { metadata: meta(name, &[]), spec, status: None }
}

/// The versions the tests' cells and rings run; every test cluster has a Release of each.
pub const TEST_VERSIONS: &[&str] =
    &["1.0.0", "1.0.9", "1.1.0", "1.2.0", "1.3.0", "1.5.0", "2.0.0", "9.9.9", "1.1.0-broken", "1.2.0-broken"];

/// A tenant `name` of `account` (the Kubernetes namespace it lives in) with an issued client
/// certificate.
pub fn namespace(name: &str, account: &str, region: &str, tier: Tier) -> Namespace {
    let spec = NamespaceSpec {
        region: region.into(),
        placement: Placement { tier, ..Placement::default() },
        retention: Default::default(),
        mtls: MtlsSpec { accepted_client_ca: None, issue_client_certificate: Some(true) },
        endpoint: Default::default(),
        synthetic: false,
    };
    let metadata = ObjectMeta { namespace: Some(account.into()), ..meta(name, &[]) };
    Namespace { metadata, spec, status: None }
}

/// A ring selecting cells labelled `cellplane.io/ring=<selector>`; `version` None follows upstream.
pub fn ring(name: &str, order: i32, selector: &str, version: Option<&str>, bake: &str) -> DeploymentRing {
    let spec = DeploymentRingSpec {
        order: Some(order),
        upstream: None,
        cell_selector: LabelSelector {
            match_labels: Some([("cellplane.io/ring".to_string(), selector.to_string())].into()),
            match_expressions: None,
        },
        follow_upstream: version.is_none().then_some(true),
        version: version.map(str::to_string),
        max_batch: IntOrString::Int(1),
        pause_between_batches: "0s".into(),
        min_bake_time: bake.into(),
        gates: Vec::new(),
        manual_approval: false,
        approval: None,
        paused: false,
        progress_deadline: "30m".into(),
        rollback_policy: RollbackPolicy::None,
        admits: Default::default(),
        synthetic: Default::default(),
    };
    DeploymentRing { metadata: meta(name, &[]), spec, status: None }
}

/// Creates the Kubernetes namespace `name` unless it exists (an account's, or the operator's).
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let namespace = k8s_openapi::api::core::v1::Namespace { metadata: meta(name, &[]), ..Default::default() };
    create(&Api::all(client.clone()), &namespace).await
}

/// Creates an object (an existing one is left as it is).
pub async fn create<K>(api: &Api<K>, obj: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A Ready condition that is True for the object's current generation.
pub fn is_ready<K: Resource>(obj: &K, conditions: &[conditions::Condition]) -> bool {
    conditions::find(conditions, types::READY).is_some_and(|c| c.is_true_for(obj.meta().generation))
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{what} did not happen within {within:?}")]
    Timeout { what: String, within: Duration },
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::wait::Error),
}

/// Waits (on a watch, not by polling) until `condition` holds for the named object.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    within: Duration,
    condition: impl Fn(Option<&K>) -> bool + Send + 'static,
) -> Result<Option<K>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(within, await_condition(api.clone(), name, condition)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(WaitError::Timeout { what: format!("{name}: {what}"), within }),
    }
}
