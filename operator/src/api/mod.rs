//! Custom resource types of cellplane (group `cellplane.io`, version `v1alpha1`).
//!
//! - [`Cell`]: one cell, a self-contained slice of infrastructure.
//! - [`Namespace`] (`namespaces.cellplane.io`, short names `cns`, `cellns`): one tenant.
//! - [`DeploymentRing`] (short name `ring`): one ring of a software rollout.
//! - [`Release`] (short name `rel`): the service's software at one version.
//!
//! Cells, rings and releases are cluster-scoped, Namespaces live in their accounts' namespaces;
//! all are in the `cellplane` category (`kubectl get cellplane`).
//! The CRD YAML in `crds/` is generated from these types by [`crds_yaml`] (`make crds`).

pub mod cell;
pub mod common;
pub mod conditions;
pub mod namespace;
pub mod release;
pub mod ring;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use cell::{Cell, CellSpec, CellStatus};
pub use common::{SecretReference, WorkflowState, WorkflowStatus};
pub use conditions::{Condition, ConditionStatus};
pub use namespace::{Namespace, NamespaceSpec, NamespaceStatus};
pub use release::{Release, ReleaseSpec, ReleaseStatus};
pub use ring::{DeploymentRing, DeploymentRingSpec, DeploymentRingStatus};

/// API group of every cellplane resource.
pub const GROUP: &str = "cellplane.io";
/// API version of every cellplane resource.
pub const VERSION: &str = "v1alpha1";

/// Field manager of every write the operator makes.
pub const MANAGER: &str = "cellplane";

/// `namespace/name`, or `name` for cluster-scoped objects: what identifies an object of a kind.
pub fn object_key<K: kube::ResourceExt>(obj: &K) -> String {
    match obj.namespace() {
        Some(namespace) => format!("{namespace}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Header written at the top of every generated CRD file.
pub const GENERATED_HEADER: &str =
    "# Generated from operator/src/api by `make crds` (or `cellplane crds`). Do not edit.\n";

/// Failure to render the CRDs as YAML.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be serialized.
    #[error("cannot serialize CRD {name} to YAML: {source}")]
    Yaml {
        /// metadata.name of the CRD.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_norway::Error,
    },
}

/// Every cellplane CRD with the file name it is stored under in `crds/`.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    let mut crds = vec![
        ("cell.yaml", Cell::crd()),
        ("namespace.yaml", Namespace::crd()),
        ("deploymentring.yaml", DeploymentRing::crd()),
        ("release.yaml", Release::crd()),
    ];
    for (_, crd) in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
                visit_schemas(schema, &mut |node| {
                    unwrap_description(node);
                    bound_foreign_types(node);
                });
            }
        }
    }
    crds
}

/// Call `visit` on `schema` and on every schema nested in it.
fn visit_schemas(schema: &mut JSONSchemaProps, visit: &mut dyn FnMut(&mut JSONSchemaProps)) {
    visit(schema);
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in children {
        visit_schemas(child, visit);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => visit_schemas(item, visit),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(|item| visit_schemas(item, visit)),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(additional)) = schema.additional_properties.as_mut() {
        visit_schemas(additional, visit);
    }
}

/// Doc comments are wrapped for the source file; `kubectl explain` wraps for the terminal.
/// Join wrapped lines, keeping blank-line paragraph breaks.
fn unwrap_description(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = description
            .split("\n\n")
            .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
}

/// Longest RFC 3339 timestamp (`9999-12-31T23:59:59.999999999+00:00` is 35 characters).
const MAX_TIMESTAMP_LENGTH: i64 = 64;

/// Bounds for the k8s-openapi types the CRDs embed, whose schemas carry none: every
/// `date-time` string (`Time`) and every `LabelSelector`. Kubernetes' CEL cost estimator
/// assumes a whole request's worth of data for anything unbounded.
fn bound_foreign_types(schema: &mut JSONSchemaProps) {
    if schema.format.as_deref() == Some("date-time") {
        schema.max_length.get_or_insert(MAX_TIMESTAMP_LENGTH);
    }
    if let Some(properties) = schema.properties.as_mut()
        && properties.keys().eq(["matchExpressions", "matchLabels"])
    {
        bound_label_selector(properties);
    }
}

/// At most 64 labels and 32 expressions of 64 values; label values 63 characters, keys 317.
fn bound_label_selector(properties: &mut BTreeMap<String, JSONSchemaProps>) {
    if let Some(labels) = properties.get_mut("matchLabels") {
        labels.max_properties = Some(64);
        if let Some(JSONSchemaPropsOrBool::Schema(value)) = labels.additional_properties.as_mut() {
            value.max_length = Some(63);
        }
    }
    let Some(expressions) = properties.get_mut("matchExpressions") else { return };
    expressions.max_items = Some(32);
    let Some(JSONSchemaPropsOrArray::Schema(requirement)) = expressions.items.as_mut() else { return };
    let Some(fields) = requirement.properties.as_mut() else { return };
    if let Some(key) = fields.get_mut("key") {
        // A qualified name: a DNS subdomain prefix (253), '/', and a name (63).
        key.max_length = Some(317);
    }
    if let Some(operator) = fields.get_mut("operator") {
        operator.enum_ = Some(["In", "NotIn", "Exists", "DoesNotExist"].map(|op| JSON(op.into())).to_vec());
    }
    if let Some(values) = fields.get_mut("values") {
        values.max_items = Some(64);
        if let Some(JSONSchemaPropsOrArray::Schema(value)) = values.items.as_mut() {
            value.max_length = Some(63);
        }
    }
}

/// Every cellplane CRD as `(file name, YAML document)`, exactly as checked in under `crds/`.
pub fn crds_yaml() -> Result<Vec<(&'static str, String)>, CrdError> {
    to_yaml(crds())
}

/// The CRDs as YAML documents.
fn to_yaml(crds: Vec<(&'static str, CustomResourceDefinition)>) -> Result<Vec<(&'static str, String)>, CrdError> {
    crds.into_iter()
        .map(|(file, crd)| {
            let yaml = serde_norway::to_string(&crd)
                .map_err(|source| CrdError::Yaml { name: crd.metadata.name.clone().unwrap_or_default(), source })?;
            Ok((file, format!("{GENERATED_HEADER}{yaml}")))
        })
        .collect()
}

/// Every cellplane CRD in one multi-document YAML stream, for `cellplane crds | kubectl apply -f -`.
pub fn crds_yaml_stream() -> Result<String, CrdError> {
    Ok(to_yaml(crds())?.into_iter().map(|(_, yaml)| yaml).collect::<Vec<_>>().join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn stream_holds_every_crd_once() {
        let stream = crds_yaml_stream().unwrap();
        let names: Vec<String> = serde_norway::Deserializer::from_str(&stream)
            .map(|doc| {
                let crd = CustomResourceDefinition::deserialize(doc).unwrap();
                crd.metadata.name.unwrap()
            })
            .collect();
        assert_eq!(
            names,
            ["cells.cellplane.io", "namespaces.cellplane.io", "deploymentrings.cellplane.io", "releases.cellplane.io"]
        );
    }
}
