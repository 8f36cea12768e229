//! Discovery documents: `/api`, `/apis`, `/apis/{group}`, `/api/v1`, `/apis/{group}/{version}`,
//! and the aggregated `apidiscovery.k8s.io` forms of `/api` and `/apis` that kubectl asks for
//! first. Resources carry what kubectl resolves names with: singular, short names,
//! categories, verbs and scope, as the apiserver publishes them for built-ins and CRDs.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::kinds::{Origin, Registry, ResourceKind};

const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

pub fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = group_versions(registry)
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, versions)| api_group(name, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(registry: &Registry, name: &str) -> Result<Value, ApiError> {
    let (_, versions) =
        group_versions(registry).into_iter().find(|(group, _)| *group == name).ok_or(ApiError::PageNotFound)?;
    let mut doc = api_group(name, &versions);
    doc["kind"] = "APIGroup".into();
    doc["apiVersion"] = "v1".into();
    Ok(doc)
}

pub fn resources(registry: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let kinds = kinds_of(registry, group, version);
    if kinds.is_empty() {
        // Under /api an unknown version is go-restful's 404; under /apis, the plain one.
        return Err(if group.is_empty() { ApiError::no_route() } else { ApiError::PageNotFound });
    }
    let resources: Vec<Value> = kinds.iter().flat_map(|k| legacy_entries(k)).collect();
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// The aggregated form of `/api` (core) or `/apis` (every other group).
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let items: Vec<Value> = group_versions(registry)
        .into_iter()
        .filter(|(group, _)| group.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> =
                        kinds_of(registry, group, v).iter().map(|k| aggregated_entry(k)).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = group.into();
            }
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
}

/// Every group (built-in groups first) with its versions, preferred version first.
fn group_versions(registry: &Registry) -> Vec<(&str, Vec<&str>)> {
    let mut groups: BTreeMap<(bool, &str), Vec<&str>> = BTreeMap::new();
    for k in registry.all() {
        let versions = groups.entry((k.origin == Origin::Custom, &k.group)).or_default();
        if !versions.contains(&k.version.as_str()) {
            versions.push(&k.version);
        }
    }
    groups
        .into_iter()
        .map(|((_, group), mut versions)| {
            versions.sort_by(|a, b| version_priority(a, b));
            (group, versions)
        })
        .collect()
}

fn kinds_of<'a>(registry: &'a Registry, group: &str, version: &str) -> Vec<&'a Arc<ResourceKind>> {
    registry.all().filter(|k| k.group == group && k.version == version).collect()
}

fn legacy_entries(k: &ResourceKind) -> Vec<Value> {
    let mut main = json!({
        "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
        "verbs": k.verbs, "storageVersionHash": k.storage_version_hash,
    });
    set_names(&mut main, k);
    let mut entries = vec![main];
    if k.status_subresource {
        entries.push(json!({
            "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
            "kind": k.kind, "verbs": STATUS_VERBS,
        }));
    }
    entries
}

fn aggregated_entry(k: &ResourceKind) -> Value {
    let response_kind = json!({"group": k.group, "version": k.version, "kind": k.kind});
    let mut entry = json!({
        "resource": k.plural,
        "responseKind": response_kind,
        "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": k.singular,
        "verbs": k.verbs,
    });
    set_names(&mut entry, k);
    if k.status_subresource {
        entry["subresources"] =
            json!([{"subresource": "status", "responseKind": response_kind, "verbs": STATUS_VERBS}]);
    }
    entry
}

/// shortNames and categories are omitted when empty, as Go's `omitempty` does.
fn set_names(entry: &mut Value, k: &ResourceKind) {
    if !k.short_names.is_empty() {
        entry["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        entry["categories"] = json!(k.categories);
    }
}

/// Kubernetes version order: GA before beta before alpha, higher numbers first; versions
/// that do not look like `vN[alpha|betaM]` come last, alphabetically.
pub fn version_priority(a: &str, b: &str) -> Ordering {
    match (parse_version(a), parse_version(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// (stability: 2 GA, 1 beta, 0 alpha; major; minor), ordered so that bigger is preferred.
fn parse_version(v: &str) -> Option<(u8, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let major = rest[..digits].parse().ok().filter(|m| *m > 0)?;
    let (stability, minor) = match &rest[digits..] {
        "" => (2, 0),
        tail => {
            let (stability, number) =
                tail.strip_prefix("beta").map(|n| (1, n)).or_else(|| tail.strip_prefix("alpha").map(|n| (0, n)))?;
            (stability, number.parse().ok()?)
        }
    };
    Some((stability, major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut versions = vec!["v1alpha1", "v2beta1", "v1", "foo", "v1beta2", "v2", "v1beta1"];
        versions.sort_by(|a, b| version_priority(a, b));
        assert_eq!(versions, ["v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }
}
