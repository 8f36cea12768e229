//! Namespaces as the apiserver, its NamespaceLifecycle admission plugin and the namespace
//! controller treat them.
//!
//! - Creating a namespaced object needs its namespace: 404 `namespaces "x" not found` when
//!   it does not exist, 403 when it is being terminated. Other verbs are not checked (a
//!   read or a list in a missing namespace finds nothing, as on a real server).
//! - A new Namespace gets `spec.finalizers: [kubernetes]` and `status.phase: Active`;
//!   updates of the main resource keep `spec.finalizers`.
//! - `default`, `kube-system` and `kube-public` cannot be deleted (403).
//! - Deleting a Namespace is asynchronous, as in a cluster: DELETE answers 200 with the
//!   Namespace in phase `Terminating` (with its `deletionTimestamp`), and the namespace
//!   controller's work runs afterwards, in a task of its own: every object in the namespace
//!   is deleted (objects with finalizers are marked and wait for them), then the
//!   `kubernetes` finalizer is dropped and the Namespace goes once its own
//!   `metadata.finalizers` are gone. While content remains, the Namespace's conditions say
//!   what (`NamespaceContentRemaining`, `NamespaceFinalizersRemaining`). When the last such
//!   object goes later, the Namespace is finished in that same request, where the real
//!   controller would notice within seconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::handlers::{self, Target};
use crate::kinds::GroupResource;
use crate::meta;
use crate::store::Store;

/// Namespaces the apiserver refuses to delete.
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];
/// The finalizer the namespace controller owns (`spec.finalizers`, not metadata).
const CONTROLLER_FINALIZER: &str = "kubernetes";

fn namespaces() -> GroupResource {
    GroupResource { group: String::new(), resource: "namespaces".into() }
}

fn get(store: &Store, name: &str) -> Option<Value> {
    store.get(&namespaces(), &(String::new(), name.to_string())).map(|ns| (*ns).clone())
}

/// NamespaceLifecycle admission of a create of `name` in the target's namespace.
pub fn admit_create(store: &Store, t: &Target, name: &str) -> Result<(), ApiError> {
    let Some(ns) = t.namespace.as_deref() else { return Ok(()) };
    let namespace = get(store, ns).ok_or_else(|| ApiError::not_found("namespaces", "", ns))?;
    if meta::is_deleting(&namespace) {
        return Err(ApiError::namespace_terminating(&t.kind.plural, &t.kind.group, name, ns));
    }
    Ok(())
}

/// Defaults of a new Namespace.
pub fn on_create(obj: &mut Value) {
    obj["spec"] = json!({"finalizers": [CONTROLLER_FINALIZER]});
    obj["status"] = json!({"phase": "Active"});
}

/// Only the namespace controller changes `spec.finalizers` (through `/finalize`).
pub fn keep_spec_finalizers(old: &Value, new: &mut Value) {
    let finalizers = old.pointer("/spec/finalizers").cloned();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("finalizers");
    }
    if let Some(finalizers) = finalizers {
        new["spec"]["finalizers"] = finalizers;
    }
}

/// Whether the namespace controller has finished with a Namespace.
pub fn controller_done(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
}

/// DELETE of a Namespace: it turns Terminating and is queued for the namespace controller.
pub fn begin_delete(store: &mut Store, old: &Value, dry_run: bool) -> Result<Value, ApiError> {
    let name = meta::name(old).unwrap_or_default().to_string();
    if IMMORTAL.contains(&name.as_str()) {
        return Err(ApiError::forbidden("namespaces", "", &name, "this namespace may not be deleted"));
    }
    let mut new = old.clone();
    meta::meta_mut(&mut new).insert("deletionTimestamp".into(), meta::now());
    new["status"]["phase"] = "Terminating".into();
    if dry_run {
        return Ok(new);
    }
    let stored = (*store.put(&namespaces(), (String::new(), name.clone()), new)).clone();
    store.namespaces_to_sweep.push(name);
    Ok(stored)
}

/// The namespace controller's passes over these namespaces, and over any their content's
/// deletion marks for deletion in turn (a Namespace garbage-collected with its owner).
pub fn sweep_all(store: &mut Store, mut names: Vec<String>) {
    while let Some(name) = names.pop() {
        sweep(store, &name);
        names.append(&mut store.namespaces_to_sweep);
    }
}

/// The namespace controller's pass: deletes the namespace's content, then finishes it.
fn sweep(store: &mut Store, name: &str) {
    for (gr, obj) in store.namespace_content(name) {
        if meta::is_deleting(&obj) {
            continue;
        }
        let Some(kind) = store.registry.any_version(&gr) else { continue };
        let target = Target {
            kind,
            namespace: Some(name.to_string()),
            name: meta::name(&obj).map(String::from),
            subresource: None,
        };
        if let Err(e) = handlers::delete_object(store, &target, &obj, false) {
            tracing::warn!(namespace = name, error = %e, "namespace controller could not delete an object");
        }
    }
    settle(store, name, true);
}

/// Called when an object of a namespace went away: a Terminating namespace left empty is
/// finished.
pub fn finish_if_empty(store: &mut Store, name: &str) {
    settle(store, name, false);
}

/// Drops the controller's finalizer from a Terminating namespace with nothing left in it
/// (removing the Namespace when no other finalizer holds it); otherwise says what remains,
/// when asked to or when it said so before.
fn settle(store: &mut Store, name: &str, report: bool) {
    let Some(ns) = get(store, name).filter(meta::is_deleting) else { return };
    let content = store.namespace_content(name);
    let mut new = ns.clone();
    if content.is_empty() {
        new["spec"]["finalizers"] = json!([]);
        if let Some(status) = new.get_mut("status").and_then(Value::as_object_mut) {
            status.remove("conditions");
        }
    } else if report || ns.pointer("/status/conditions").is_some() {
        new["status"]["conditions"] = remaining_conditions(&content, &ns);
    }
    let key = (String::new(), name.to_string());
    let Some(kind) = store.registry.any_version(&namespaces()) else { return };
    if handlers::is_finalized(&kind, &new) {
        let last = store.remove(&namespaces(), &key, new);
        handlers::after_removal(store, &kind, &last);
    } else if new != ns {
        store.put(&namespaces(), key, new);
    }
}

/// How many objects of each resource, and how many holding each finalizer, remain.
fn tally(content: &[(GroupResource, Arc<Value>)]) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut resources: BTreeMap<String, usize> = BTreeMap::new();
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    for (gr, obj) in content {
        *resources.entry(format!("{}.{}", gr.resource, gr.group)).or_default() += 1;
        for f in meta::finalizers(obj) {
            *finalizers.entry(f).or_default() += 1;
        }
    }
    (resources, finalizers)
}

fn listed(counts: &BTreeMap<String, usize>, joiner: &str) -> String {
    let parts: Vec<String> = counts.iter().map(|(what, n)| format!("{what}{joiner}{n} resource instances")).collect();
    parts.join(", ")
}

/// The two conditions the namespace controller sets while content remains.
fn remaining_conditions(content: &[(GroupResource, Arc<Value>)], ns: &Value) -> Value {
    let (resources, finalizers) = tally(content);
    let since = ns.pointer("/status/conditions/0/lastTransitionTime").cloned().unwrap_or_else(meta::now);
    let condition = |type_: &str, status: &str, reason: &str, message: String| json!({"type": type_, "status": status, "lastTransitionTime": since, "reason": reason, "message": message});
    let content = condition(
        "NamespaceContentRemaining",
        "True",
        "SomeResourcesRemain",
        format!("Some resources are remaining: {}", listed(&resources, " has ")),
    );
    let held = if finalizers.is_empty() {
        condition(
            "NamespaceFinalizersRemaining",
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let message =
            format!("Some content in the namespace has finalizers remaining: {}", listed(&finalizers, " in "));
        condition("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain", message)
    };
    json!([content, held])
}
