//! The resource types the server knows: built-in kinds and kinds described by
//! CustomResourceDefinitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ApiError, Cause};

/// Storage key of a resource type: all served versions of one group/resource share it,
/// as they do for a CRD with conversion strategy `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

/// One served version of a resource type and the API semantics it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    pub group: String,
    pub version: String,
    /// Lower-case plural used in paths, e.g. `secrets`.
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `/status` is a subresource: main-resource writes then ignore `.status`
    /// and status writes change nothing else.
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained (custom resources and CRDs do;
    /// Secrets, ConfigMaps, Leases, Events and Namespaces do not).
    pub generation: bool,
    /// Whether PUT without `metadata.resourceVersion` is accepted (built-ins: yes;
    /// custom resources: no, the apiserver answers 422).
    pub unconditional_update: bool,
    /// Field selector paths beyond `metadata.name` and `metadata.namespace`.
    pub selectable_fields: Vec<String>,
}

impl ResourceKind {
    /// A custom namespaced kind (generation maintained, no status subresource yet).
    pub fn namespaced(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced: true,
            status_subresource: false,
            generation: true,
            unconditional_update: false,
            selectable_fields: Vec::new(),
        }
    }

    /// A custom cluster-scoped kind.
    pub fn cluster(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self { namespaced: false, ..Self::namespaced(group, version, plural, kind) }
    }

    /// Enables the `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            generation: false,
            unconditional_update: true,
            namespaced,
            ..Self::namespaced(group, version, plural, kind)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn group_resource(&self) -> GroupResource {
        GroupResource { group: self.group.clone(), resource: self.plural.clone() }
    }

    /// The kinds every server starts with.
    pub fn builtins() -> Vec<Self> {
        let mut secret = Self::builtin("", "v1", "secrets", "Secret", true);
        secret.selectable_fields = vec!["type".into()];
        let mut namespace = Self::builtin("", "v1", "namespaces", "Namespace", false);
        namespace.status_subresource = true;
        namespace.selectable_fields = vec!["status.phase".into()];
        let mut event = Self::builtin("", "v1", "events", "Event", true);
        event.selectable_fields = [
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
        .map(String::from)
        .to_vec();
        // Ingress keeps metadata.generation and has a status subresource, as in the apiserver.
        let mut ingress = Self::builtin("networking.k8s.io", "v1", "ingresses", "Ingress", true);
        ingress.status_subresource = true;
        ingress.generation = true;
        let mut crd =
            Self::builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false);
        crd.status_subresource = true;
        crd.generation = true;
        crd.unconditional_update = false;
        vec![
            secret,
            Self::builtin("", "v1", "configmaps", "ConfigMap", true),
            namespace,
            event,
            Self::builtin("events.k8s.io", "v1", "events", "Event", true),
            Self::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            ingress,
            crd,
        ]
    }

    /// The kinds (one per served version) a CustomResourceDefinition describes.
    pub fn from_crd(crd: &Value) -> Result<Vec<Self>, ApiError> {
        let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let invalid = |field: &str, msg: &str| {
            ApiError::invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                name,
                vec![Cause::new("FieldValueRequired", field, msg)],
            )
        };
        let text = |ptr: &str| {
            crd.pointer(ptr)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(&ptr[1..].replace('/', "."), "Required value"))
        };
        let group = text("/spec/group")?;
        let plural = text("/spec/names/plural")?;
        let kind = text("/spec/names/kind")?;
        let namespaced = match text("/spec/scope")? {
            "Namespaced" => true,
            "Cluster" => false,
            _ => return Err(invalid("spec.scope", "must be Namespaced or Cluster")),
        };
        if name != format!("{plural}.{group}") {
            return Err(invalid("metadata.name", "must be spec.names.plural+\".\"+spec.group"));
        }
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid("spec.versions", "must have at least one version"))?;
        let mut kinds = Vec::new();
        for v in versions {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let version =
                v.get("name").and_then(Value::as_str).ok_or_else(|| invalid("spec.versions.name", "Required value"))?;
            let mut rk = if namespaced {
                Self::namespaced(group, version, plural, kind)
            } else {
                Self::cluster(group, version, plural, kind)
            };
            rk.status_subresource = v.pointer("/subresources/status").is_some();
            rk.selectable_fields = v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| p.trim_start_matches('.').to_string())
                .collect();
            kinds.push(rk);
        }
        Ok(kinds)
    }
}

/// Served versions by (group, version, plural).
#[derive(Default, Debug)]
pub struct Registry {
    kinds: BTreeMap<(String, String, String), Arc<ResourceKind>>,
}

impl Registry {
    pub fn insert(&mut self, kind: ResourceKind) {
        let key = (kind.group.clone(), kind.version.clone(), kind.plural.clone());
        self.kinds.insert(key, Arc::new(kind));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceKind>> {
        self.kinds.get(&(group.to_string(), version.to_string(), plural.to_string())).cloned()
    }

    /// Some served version of a group/resource.
    pub fn any_version(&self, gr: &GroupResource) -> Option<Arc<ResourceKind>> {
        self.kinds.values().find(|k| k.group == gr.group && k.plural == gr.resource).cloned()
    }

    /// Removes every version of a group/resource.
    pub fn remove(&mut self, gr: &GroupResource) {
        self.kinds.retain(|(g, _, p), _| !(g == &gr.group && p == &gr.resource));
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceKind>> {
        self.kinds.values()
    }
}
