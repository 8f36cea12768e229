//! Objects' identities, the order they are applied in, and which kinds are cluster-scoped.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ReleaseError;

/// An object's identity in a cluster. Its text form, what an inventory stores, is
/// `group/version/Kind/namespace/name`: the group is empty for the core group and the namespace
/// for cluster-scoped objects, e.g. `apps/v1/Deployment/svc/frontend`, `/v1/Namespace//svc`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ObjectRef {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The identity of a manifest or live object; refuses one without apiVersion, kind or name.
    pub fn of(object: &Value) -> Result<ObjectRef, ReleaseError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let missing: Vec<&str> = [("apiVersion", api_version), ("kind", kind), ("metadata.name", name)]
            .into_iter()
            .filter(|(_, value)| value.is_empty())
            .map(|(field, _)| field)
            .collect();
        if !missing.is_empty() {
            let what = describe_unnamed(object);
            return Err(ReleaseError::InvalidObject { what, message: format!("has no {}", missing.join(", ")) });
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        Ok(ObjectRef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            namespace: text("/metadata/namespace").into(),
            name: name.into(),
        })
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Whether both name the same object, whatever API version each was read at.
    pub fn same_object(&self, other: &ObjectRef) -> bool {
        (&self.group, &self.kind, &self.namespace, &self.name)
            == (&other.group, &other.kind, &other.namespace, &other.name)
    }

    /// How a person reads it: `Deployment svc/frontend`, `Namespace svc`.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    pub fn is_crd(&self) -> bool {
        is_crd(&self.group, &self.kind)
    }

    /// The API group a CustomResourceDefinition defines (its name is `plural.group`).
    fn defined_group(&self) -> Option<&str> {
        self.is_crd().then(|| self.name.split_once('.').map(|(_, group)| group)).flatten()
    }
}

fn describe_unnamed(object: &Value) -> String {
    match object.get("kind").and_then(Value::as_str) {
        Some(kind) => format!("a {kind}"),
        None => "an object".to_string(),
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}/{}", self.group, self.version, self.kind, self.namespace, self.name)
    }
}

impl FromStr for ObjectRef {
    type Err = ReleaseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ReleaseError::BadReference { text: text.to_string(), why: why.to_string() };
        let parts: Vec<&str> = text.split('/').collect();
        let [group, version, kind, namespace, name] = parts[..] else {
            return Err(bad("expected group/version/Kind/namespace/name"));
        };
        if version.is_empty() || kind.is_empty() || name.is_empty() {
            return Err(bad("version, kind and name must not be empty"));
        }
        Ok(ObjectRef {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl From<ObjectRef> for String {
    fn from(reference: ObjectRef) -> String {
        reference.to_string()
    }
}

impl TryFrom<String> for ObjectRef {
    type Error = ReleaseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// What `previous` had and `current` lacks: what a prune deletes. An object that moved to
/// another API version is the same object, not a stale one.
pub fn stale(previous: &[ObjectRef], current: &[ObjectRef]) -> Vec<ObjectRef> {
    previous.iter().filter(|old| !current.iter().any(|new| new.same_object(old))).cloned().collect()
}

fn is_crd(group: &str, kind: &str) -> bool {
    group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition"
}

/// Cluster-scoped kinds of Kubernetes itself (and Gateway API's GatewayClass), by group and
/// kind. Other kinds are taken as namespaced unless the release's own CRDs say otherwise;
/// applying corrects the rare miss from discovery.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Whether objects of a kind live in a namespace, as far as the table and `crds` tell.
pub(super) fn is_namespaced(group: &str, kind: &str, crds: &[Value]) -> bool {
    if let Some(crd) = crds.iter().find(|crd| defines(crd, group, kind)) {
        return crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
    }
    !CLUSTER_SCOPED.contains(&(group, kind))
}

fn defines(crd: &Value, group: &str, kind: &str) -> bool {
    crd.pointer("/spec/group").and_then(Value::as_str) == Some(group)
        && crd.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind)
}

/// Built-in kinds in the order they can depend on each other: classes and identities, then
/// configuration and storage, Services, workloads, and what points at workloads. Kinds not
/// listed follow them, and custom resources of the release's own CRDs come last.
const KIND_ORDER: &[&str] = &[
    "PriorityClass",
    "StorageClass",
    "IngressClass",
    "RuntimeClass",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "NetworkPolicy",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "ReplicaSet",
    "Pod",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Ingress",
    "APIService",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];

/// The stage of a kind when applying: CRDs, then Namespaces, then built-in kinds in
/// [`KIND_ORDER`], then other kinds, then custom resources of `defined` groups.
fn apply_rank(group: &str, kind: &str, defined: &BTreeSet<&str>) -> usize {
    if is_crd(group, kind) {
        return 0;
    }
    if group.is_empty() && kind == "Namespace" {
        return 1;
    }
    if defined.contains(group) {
        return KIND_ORDER.len() + 3;
    }
    KIND_ORDER.iter().position(|k| *k == kind).map_or(KIND_ORDER.len() + 2, |at| at + 2)
}

/// Rendered objects in apply order (stable: objects of one stage keep the order they came in).
pub(super) fn sort_for_apply(objects: &mut [Value]) {
    let defined: BTreeSet<String> = objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .filter_map(|crd| crd.pointer("/spec/group").and_then(Value::as_str).map(String::from))
        .collect();
    let defined: BTreeSet<&str> = defined.iter().map(String::as_str).collect();
    let group_of = |o: &Value| {
        let api_version = o.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        api_version.rsplit_once('/').map_or("", |(group, _)| group).to_string()
    };
    objects.sort_by_cached_key(|o| {
        apply_rank(&group_of(o), o.get("kind").and_then(Value::as_str).unwrap_or_default(), &defined)
    });
}

/// Deletion stages of an inventory, in the order they are deleted: custom resources of the
/// inventory's own CRDs, then the rest in reverse apply order, then Namespaces and CRDs last.
pub(super) fn deletion_stages(inventory: &[ObjectRef]) -> Vec<Vec<ObjectRef>> {
    let defined: BTreeSet<&str> = inventory.iter().filter_map(ObjectRef::defined_group).collect();
    let rank = |r: &ObjectRef| apply_rank(&r.group, &r.kind, &defined);
    let mut ordered = inventory.to_vec();
    ordered.sort_by_key(|r| std::cmp::Reverse(rank(r)));
    let stage_of = |r: &ObjectRef| match rank(r) {
        0 | 1 => 2,
        rank if rank == KIND_ORDER.len() + 3 => 0,
        _ => 1,
    };
    let mut stages = vec![Vec::new(), Vec::new(), Vec::new()];
    for reference in ordered {
        stages[stage_of(&reference)].push(reference);
    }
    stages.retain(|stage| !stage.is_empty());
    stages
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_text_form_round_trips() {
        for text in ["apps/v1/Deployment/svc/frontend", "/v1/Namespace//svc", "example.com/v1alpha1/Widget/ns/w-1"] {
            let reference: ObjectRef = text.parse().unwrap();
            assert_eq!(reference.to_string(), text);
            let json = serde_json::to_string(&reference).unwrap();
            assert_eq!(json, format!("\"{text}\""), "an inventory stores the text form");
            assert_eq!(serde_json::from_str::<ObjectRef>(&json).unwrap(), reference);
        }
        let core: ObjectRef = "/v1/ConfigMap/svc/settings".parse().unwrap();
        assert_eq!((core.group.as_str(), core.api_version().as_str()), ("", "v1"));
        assert_eq!(core.display(), "ConfigMap svc/settings");
    }

    #[test]
    fn malformed_references_are_refused() {
        for text in ["apps/v1/Deployment/frontend", "apps/v1/Deployment/ns/a/b", "apps//Deployment/ns/x", "a/v1/K/ns/"]
        {
            assert!(text.parse::<ObjectRef>().is_err(), "{text}");
        }
    }

    #[test]
    fn an_identity_needs_api_version_kind_and_name() {
        let error = ObjectRef::of(&json!({ "kind": "ConfigMap", "metadata": {} })).unwrap_err();
        assert_eq!(error.to_string(), "a ConfigMap: has no apiVersion, metadata.name");
        let reference = ObjectRef::of(&json!({ "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": "svc" } }))
        .unwrap();
        assert_eq!(reference.to_string(), "apps/v1/Deployment/svc/web");
    }

    #[test]
    fn stale_objects_are_matched_across_api_versions() {
        let refs = |texts: &[&str]| texts.iter().map(|t| t.parse().unwrap()).collect::<Vec<ObjectRef>>();
        let previous = refs(&["/v1/ConfigMap/svc/a", "autoscaling/v1/HorizontalPodAutoscaler/svc/web"]);
        let current = refs(&["autoscaling/v2/HorizontalPodAutoscaler/svc/web"]);
        assert_eq!(stale(&previous, &current), refs(&["/v1/ConfigMap/svc/a"]));
    }

    fn object(api_version: &str, kind: &str, name: &str) -> Value {
        json!({ "apiVersion": api_version, "kind": kind, "metadata": { "name": name } })
    }

    #[test]
    fn crds_and_namespaces_go_first_and_the_releases_custom_resources_last() {
        let mut crd = object("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com");
        crd["spec"] = json!({ "group": "example.com", "names": { "kind": "Widget" }, "scope": "Namespaced" });
        let mut objects = vec![
            object("example.com/v1", "Widget", "w"),
            object("apps/v1", "Deployment", "web"),
            object("cert-manager.io/v1", "Certificate", "tls"),
            object("v1", "ConfigMap", "settings"),
            object("v1", "Service", "web"),
            object("v1", "Namespace", "svc"),
            object("v1", "ConfigMap", "more"),
            crd,
        ];
        sort_for_apply(&mut objects);
        let order: Vec<String> = objects
            .iter()
            .map(|o| format!("{} {}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                "CustomResourceDefinition widgets.example.com",
                "Namespace svc",
                "ConfigMap settings",
                "ConfigMap more",
                "Service web",
                "Deployment web",
                "Certificate tls",
                "Widget w",
            ]
        );
    }

    #[test]
    fn deletion_goes_in_reverse_with_custom_resources_first_and_crds_last() {
        let inventory: Vec<ObjectRef> = [
            "apiextensions.k8s.io/v1/CustomResourceDefinition//widgets.example.com",
            "/v1/Namespace//svc",
            "/v1/ConfigMap/svc/settings",
            "apps/v1/Deployment/svc/web",
            "example.com/v1/Widget/svc/w",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        let stages: Vec<Vec<String>> =
            deletion_stages(&inventory).iter().map(|s| s.iter().map(ObjectRef::display).collect()).collect();
        assert_eq!(
            stages,
            [
                vec!["Widget svc/w"],
                vec!["Deployment svc/web", "ConfigMap svc/settings"],
                vec!["Namespace svc", "CustomResourceDefinition widgets.example.com"],
            ]
        );
    }

    #[test]
    fn scope_comes_from_the_releases_crds_then_the_table() {
        let crd = json!({ "spec": { "group": "example.com", "names": { "kind": "Fleet" }, "scope": "Cluster" } });
        assert!(!is_namespaced("example.com", "Fleet", std::slice::from_ref(&crd)));
        assert!(is_namespaced("example.com", "Widget", &[crd]));
        assert!(!is_namespaced("rbac.authorization.k8s.io", "ClusterRole", &[]));
        assert!(is_namespaced("", "ConfigMap", &[]));
    }
}
