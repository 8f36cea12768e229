//! A cell's software in its own cluster: what the release services of [`super::CellServices`]
//! do for real, on top of [`super::release`]. The cell's cluster is the one its kubeconfig
//! Secret names, a cloud cell's EKS or GKE cluster, or (sim cells) the operator's own, where each
//! cell gets namespaces of its own (`<namespace>-<cell>`).

use std::time::Duration;

use serde_json::{Value, json};

use super::release::{self, CellCluster, CellValues, ObjectRef, Source};
use super::{CellContext, CellError, FrontDoor, Pruned, ReleaseCheck, ReleaseRequest, RenderedRelease};
use crate::api::common::parse_duration;
use crate::api::release::ReleaseSpec;

/// How long an apply waits for the kinds a release's own CRDs define to be served.
const KINDS_WITHIN: Duration = Duration::from_secs(60);

/// Where a release's namespaced objects go in a cell's cluster: the release's namespace, or in
/// a cluster shared by several cells (the operator's), one of the cell's own.
pub fn namespace_of(spec: &ReleaseSpec, cell: &str, shared: bool) -> String {
    match shared {
        true => format!("{}-{cell}", spec.namespace),
        false => spec.namespace.clone(),
    }
}

fn duration_ms(value: &str, field: &str) -> Result<u64, CellError> {
    parse_duration(value)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| CellError::Invalid(format!("the Release's {field}: {e}")))
}

fn source_of(spec: &ReleaseSpec) -> Result<Source, CellError> {
    match (&spec.helm, &spec.manifests) {
        (Some(helm), None) => {
            let values: Value = match &helm.values {
                Some(yaml) => serde_norway::from_str(yaml)
                    .map_err(|e| CellError::Invalid(format!("the Release's helm.values is not YAML: {e}")))?,
                None => json!({}),
            };
            Ok(Source::Helm {
                repository: helm.repository.clone(),
                chart: helm.chart.clone(),
                version: helm.chart_version.clone(),
                values,
            })
        }
        (None, Some(yaml)) => Ok(Source::Manifests { yaml: yaml.clone() }),
        _ => Err(CellError::Invalid("a Release names exactly one of helm or manifests".into())),
    }
}

/// Renders `request` for `cell`, its namespace created first unless the release brings it.
pub async fn render(cell: &CellContext, request: &ReleaseRequest, shared: bool) -> Result<RenderedRelease, CellError> {
    let spec = &request.spec;
    let namespace = namespace_of(spec, &cell.name, shared);
    let values = CellValues {
        cell: cell.name.clone(),
        region: cell.region.clone(),
        domain: cell.ingress.domain.clone(),
        version: spec.version.clone(),
        provider: crate::cloud::providers::name(cell.provider).to_string(),
        namespace: namespace.clone(),
        kubernetes_version: request.kubernetes_version.clone(),
        extra: spec.substitute.clone(),
    };
    let mut objects = release::render(&source_of(spec)?, &values).await?;
    let brings_namespace =
        objects.iter().any(|o| o["kind"] == "Namespace" && o["metadata"]["name"].as_str() == Some(namespace.as_str()));
    if !brings_namespace {
        objects.insert(0, namespace_object(&namespace, &cell.name));
    }
    Ok(RenderedRelease {
        name: request.name.clone(),
        version: spec.version.clone(),
        front_door: spec.front_door.as_ref().map(|door| FrontDoor {
            namespace: namespace.clone(),
            service: door.service.clone(),
            port: door.port,
        }),
        namespace,
        objects,
        health_timeout_ms: duration_ms(&spec.health_timeout, "healthTimeout")?,
        drift_interval_ms: duration_ms(&spec.drift_interval, "driftInterval")?,
        force: spec.force,
    })
}

fn namespace_object(name: &str, cell: &str) -> Value {
    let (managed_by, cell_label) = (release::MANAGED_BY.0, release::CELL_LABEL);
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { managed_by: release::MANAGER, cell_label: cell } },
    })
}

fn refs(inventory: &[String]) -> Result<Vec<ObjectRef>, CellError> {
    inventory.iter().map(|text| text.parse().map_err(|e: release::ReleaseError| e.into_cell_error())).collect()
}

pub async fn apply(cluster: &CellCluster, object: &Value, force: bool) -> Result<String, CellError> {
    let applied = release::apply_all(cluster, std::slice::from_ref(object), force, KINDS_WITHIN).await?;
    let applied = applied.into_iter().next().ok_or_else(|| CellError::Transient("nothing was applied".into()))?;
    Ok(applied.object.to_string())
}

pub async fn check(cluster: &CellCluster, inventory: &[String]) -> Result<ReleaseCheck, CellError> {
    let report = release::assess(cluster, &refs(inventory)?).await?;
    Ok(ReleaseCheck { healthy: report.is_healthy(), failed: report.has_failed(), report: report.to_string() })
}

pub async fn prune(cluster: &CellCluster, cell: &str, stale: &[String]) -> Result<Pruned, CellError> {
    let report = release::prune(cluster, &refs(stale)?, cell).await?;
    Ok(Pruned { done: report.is_done(), kept: report.kept.iter().map(ToString::to_string).collect() })
}

pub async fn drift(cluster: &CellCluster, objects: &[Value]) -> Result<Vec<(usize, String)>, CellError> {
    let drifted = release::drift(cluster, objects).await?;
    let index_of =
        |d: &release::Drifted| objects.iter().position(|o| ObjectRef::of(o).is_ok_and(|r| r.same_object(&d.object)));
    Ok(drifted.iter().filter_map(|d| Some((index_of(d)?, d.to_string()))).collect())
}
