//! The resource types the server knows: built-in kinds and kinds described by
//! CustomResourceDefinitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ApiError, Cause};
use crate::validation::Rules;

/// Storage key of a resource type: all served versions of one group/resource share it,
/// as they do for a CRD with conversion strategy `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

/// How a kind is served: by the built-in handlers (exact routes, `Status` 404s) or by the
/// custom-resource handler (CRD semantics: plain-text 404s for unknown paths and scopes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    Custom,
}

/// What an object's name must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS subdomain, at most 253 characters (most kinds).
    Subdomain,
    /// DNS label, at most 63 characters (Namespace).
    Label,
    /// DNS-1035 label: a label starting with a letter (Service).
    Dns1035,
    /// Anything usable as one URL path segment (core/v1 Events).
    PathSegment,
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One served version of a resource type and the API semantics it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    pub group: String,
    pub version: String,
    /// Lower-case plural used in paths, e.g. `secrets`.
    pub plural: String,
    pub kind: String,
    /// Lower-case singular, as discovery reports it.
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
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
    pub origin: Origin,
    /// The group whose storage holds the objects: the kind's own, unless it shares another
    /// API's storage (events.k8s.io Events are core Events).
    pub storage_group: String,
    pub names: NameRule,
    /// Verbs of the main resource, in the order discovery lists them.
    pub verbs: Vec<String>,
    /// Server-side printing columns (custom kinds; none means the default Age column).
    pub columns: Vec<PrinterColumn>,
    /// `storageVersionHash` in discovery: a hash of the storage group/version/kind.
    pub storage_version_hash: String,
    /// The CEL rules of a CRD version's schema.
    pub(crate) rules: Option<Arc<Rules>>,
}

const CUSTOM_VERBS: [&str; 8] = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"];
const BUILTIN_VERBS: [&str; 8] = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// What the apiserver publishes as `storageVersionHash`: the first 8 bytes of the SHA-256
/// of `group/version/kind`, base64.
fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{group}/{version}/{kind}"));
    // ByteString serialises as standard base64, which saves a dependency.
    let encoded = serde_json::to_value(k8s_openapi::ByteString(digest[..8].to_vec()));
    encoded.ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ResourceKind {
    /// A custom namespaced kind (generation maintained, no status subresource yet).
    pub fn namespaced(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            singular: kind.to_lowercase(),
            short_names: Vec::new(),
            categories: Vec::new(),
            namespaced: true,
            status_subresource: false,
            generation: true,
            unconditional_update: false,
            selectable_fields: Vec::new(),
            origin: Origin::Custom,
            storage_group: group.into(),
            names: NameRule::Subdomain,
            verbs: strings(&CUSTOM_VERBS),
            columns: Vec::new(),
            storage_version_hash: storage_version_hash(group, version, kind),
            rules: None,
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
            origin: Origin::BuiltIn,
            verbs: strings(&BUILTIN_VERBS),
            ..Self::namespaced(group, version, plural, kind)
        }
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = strings(names);
        self
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Storage key of the kind's objects.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource { group: self.storage_group.clone(), resource: self.plural.clone() }
    }

    /// Whether the main resource serves this verb (e.g. `deletecollection`).
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    pub fn is_core(&self, plural: &str) -> bool {
        self.group.is_empty() && self.plural == plural
    }

    /// The kinds every server starts with.
    pub fn builtins() -> Vec<Self> {
        let mut secret = Self::builtin("", "v1", "secrets", "Secret", true);
        secret.selectable_fields = vec!["type".into()];
        let mut namespace = Self::builtin("", "v1", "namespaces", "Namespace", false).short(&["ns"]);
        namespace.status_subresource = true;
        namespace.selectable_fields = vec!["status.phase".into()];
        namespace.names = NameRule::Label;
        namespace.verbs.retain(|v| v != "deletecollection");
        let mut event = Self::builtin("", "v1", "events", "Event", true).short(&["ev"]);
        event.names = NameRule::PathSegment;
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
        // Both Event APIs are stored as core/v1 Events.
        let mut new_event = Self::builtin("events.k8s.io", "v1", "events", "Event", true).short(&["ev"]);
        new_event.storage_version_hash = storage_version_hash("", "v1", "Event");
        new_event.storage_group = String::new();
        // Ingress keeps metadata.generation and has a status subresource, as in the apiserver.
        let mut ingress = Self::builtin("networking.k8s.io", "v1", "ingresses", "Ingress", true).short(&["ing"]);
        ingress.status_subresource = true;
        ingress.generation = true;
        let mut crd =
            Self::builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false)
                .short(&["crd", "crds"]);
        crd.categories = vec!["api-extensions".into()];
        crd.status_subresource = true;
        crd.generation = true;
        crd.unconditional_update = false;
        // Workloads keep metadata.generation and have a status subresource, written by their
        // controllers (in a sandbox, by what plays them).
        let workload = |group: &str, plural: &str, kind: &str, short: &[&str]| {
            let mut kind = Self::builtin(group, "v1", plural, kind, true).short(short);
            kind.status_subresource = true;
            kind.generation = true;
            kind
        };
        let mut service = Self::builtin("", "v1", "services", "Service", true).short(&["svc"]);
        service.status_subresource = true;
        vec![
            secret,
            Self::builtin("", "v1", "configmaps", "ConfigMap", true).short(&["cm"]),
            service,
            Self::builtin("", "v1", "serviceaccounts", "ServiceAccount", true).short(&["sa"]),
            workload("apps", "deployments", "Deployment", &["deploy"]),
            workload("apps", "statefulsets", "StatefulSet", &["sts"]),
            workload("apps", "daemonsets", "DaemonSet", &["ds"]),
            workload("batch", "jobs", "Job", &[]),
            namespace,
            event,
            new_event,
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
        let storage = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .and_then(|v| v.get("name").and_then(Value::as_str))
            .unwrap_or_default();
        let names = |key: &str| -> Vec<String> {
            crd.pointer(&format!("/spec/names/{key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        };
        let rules = version_rules(versions)
            .map_err(|causes| ApiError::invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes))?;
        let mut kinds = Vec::new();
        for (v, rules) in versions.iter().zip(rules) {
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
            if let Some(singular) =
                crd.pointer("/spec/names/singular").and_then(Value::as_str).filter(|s| !s.is_empty())
            {
                rk.singular = singular.into();
            }
            rk.short_names = names("shortNames");
            rk.categories = names("categories");
            rk.storage_version_hash = storage_version_hash(group, storage, kind);
            rk.status_subresource = v.pointer("/subresources/status").is_some();
            rk.selectable_fields = v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| p.trim_start_matches('.').to_string())
                .collect();
            rk.columns = printer_columns(v);
            rk.rules = rules;
            kinds.push(rk);
        }
        Ok(kinds)
    }
}

/// The CEL rules of each version's schema, or the causes of those that do not compile (on
/// the path the apiserver names: `spec.validation` when all versions share one schema).
fn version_rules(versions: &[Value]) -> Result<Vec<Option<Arc<Rules>>>, Vec<Cause>> {
    let schema = |v: &Value| v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or(Value::Null);
    let shared = versions.windows(2).all(|pair| schema(&pair[0]) == schema(&pair[1]));
    let mut refused = Vec::new();
    let mut rules = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let at = if shared {
            "spec.validation.openAPIV3Schema".to_string()
        } else {
            format!("spec.versions[{i}].schema.openAPIV3Schema")
        };
        match Rules::of_schema(&schema(v), &at) {
            Ok(found) => rules.push(found.map(Arc::new)),
            Err(_) if shared && i > 0 => {}
            Err(causes) => refused.extend(causes),
        }
    }
    if refused.is_empty() { Ok(rules) } else { Err(refused) }
}

fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let text = |c: &Value, key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| PrinterColumn {
            name: text(c, "name"),
            type_: text(c, "type"),
            format: text(c, "format"),
            description: text(c, "description"),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: text(c, "jsonPath"),
        })
        .collect()
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

    /// Whether built-in handlers serve this group version (then its unknown paths are
    /// `Status` 404s rather than plain-text ones).
    pub fn serves_builtin(&self, group: &str, version: &str) -> bool {
        self.kinds.values().any(|k| k.origin == Origin::BuiltIn && k.group == group && k.version == version)
    }
}
