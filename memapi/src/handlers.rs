//! The verbs on resources: get, list, create, update, patch, delete,
//! deletecollection. Each runs synchronously under the store lock, so every
//! read-modify-write is atomic.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause};
use crate::kinds::{GroupResource, ResourceKind};
use crate::managed::{self, ApplyTarget, Scope};
use crate::meta;
use crate::patch::{self, PatchType};
use crate::path::Query;
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::store::{ObjectKey, Store};
use crate::{convert, namespaces, validation};

/// The resource (and maybe object and subresource) a request is about.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: Arc<ResourceKind>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn gr(&self) -> GroupResource {
        self.kind.group_resource()
    }

    fn key(&self, name: &str) -> ObjectKey {
        (self.namespace.clone().unwrap_or_default(), name.to_string())
    }

    fn name(&self) -> Result<&str, ApiError> {
        self.name.as_deref().ok_or_else(|| ApiError::MethodNotAllowed("a resource name is required".into()))
    }

    fn scope(&self) -> Result<Scope, ApiError> {
        match self.subresource.as_deref() {
            None => Ok(Scope::Main { status_subresource: self.kind.status_subresource }),
            Some("status") if self.kind.status_subresource => Ok(Scope::Status),
            Some(_) => Err(ApiError::no_route()),
        }
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.kind.plural, &self.kind.group, name)
    }

    fn invalid(&self, name: &str, cause: Cause) -> ApiError {
        ApiError::invalid(&self.kind.kind, &self.kind.group, name, vec![cause])
    }

    fn load(&self, store: &Store) -> Result<Arc<Value>, ApiError> {
        let name = self.name()?;
        store.get(&self.gr(), &self.key(name)).ok_or_else(|| self.not_found(name))
    }
}

/// An object as served for the requested version.
pub fn present(obj: &Value, kind: &ResourceKind) -> Value {
    let mut v = obj.clone();
    convert::from_storage(kind, &mut v);
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), kind.api_version().into());
        m.insert("kind".into(), kind.kind.clone().into());
    }
    v
}

/// The `meta.k8s.io/v1` PartialObjectMetadata view of an object or list, served when
/// the client asks for it in `Accept` (kube's `metadata_watcher`, `get_metadata`).
pub fn metadata_only(doc: Value) -> Value {
    let kind = meta::str_at(&doc, "/kind").unwrap_or_default();
    if kind == "Status" {
        return doc;
    }
    if kind.ends_with("List")
        && let Some(items) = doc.get("items").and_then(Value::as_array)
    {
        let items: Vec<Value> = items.iter().cloned().map(metadata_only).collect();
        return json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": doc.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "items": items,
        });
    }
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": doc.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn check_type(obj: &Value, kind: &ResourceKind) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::BadRequest("the body of the request must be a JSON object".into()));
    }
    let expected = kind.api_version();
    if let Some(av) = meta::str_at(obj, "/apiVersion")
        && av != expected
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({av}) does not match the expected API version ({expected})"
        )));
    }
    if let Some(k) = meta::str_at(obj, "/kind")
        && k != kind.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            kind.kind
        )));
    }
    Ok(())
}

fn selectors(t: &Target, q: &Query) -> Result<Selectors, ApiError> {
    Ok(Selectors {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or_default(), &t.kind.selectable_fields)?,
    })
}

pub fn get(store: &Store, t: &Target) -> Result<Value, ApiError> {
    t.scope()?;
    Ok(present(&*t.load(store)?, &t.kind))
}

pub fn list(store: &mut Store, t: &Target, q: &Query) -> Result<Value, ApiError> {
    let sel = selectors(t, q)?;
    let (rv, mut items) = match q.get("continue") {
        Some(token) => store.take_pending(token).ok_or_else(|| {
            ApiError::Expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
            )
        })?,
        None => (
            store.resource_version(),
            store
                .list(&t.gr(), t.namespace.as_deref())
                .iter()
                .filter(|o| sel.matches(o))
                .map(|o| present(o, &t.kind))
                .collect(),
        ),
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    let limit = q.number("limit")?.unwrap_or(0) as usize;
    if limit > 0 && items.len() > limit {
        let rest = items.split_off(limit);
        metadata["remainingItemCount"] = rest.len().into();
        metadata["continue"] = store.keep_pending(rv, rest).into();
    }
    Ok(json!({
        "kind": format!("{}List", t.kind.kind),
        "apiVersion": t.kind.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

/// Fixes the namespace of a new or updated object against the request path.
fn place(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    if t.kind.namespaced && t.namespace.is_none() {
        return Err(ApiError::MethodNotAllowed(format!("{} is namespaced: use a namespaced path", t.kind.plural)));
    }
    match (&t.namespace, meta::namespace(obj)) {
        (Some(path), Some(body)) if path != body => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request".into(),
        )),
        (Some(path), _) => {
            meta::meta_mut(obj).insert("namespace".into(), path.clone().into());
            Ok(())
        }
        (None, _) => {
            meta::meta_mut(obj).remove("namespace");
            Ok(())
        }
    }
}

/// How managedFields are maintained for a write.
#[derive(Debug, Clone, Copy)]
pub enum Manager<'a> {
    /// A non-apply write by this manager.
    Update(&'a str),
    /// Already computed by server-side apply.
    Applied,
}

pub fn create(store: &mut Store, t: &Target, q: &Query, body: Value, manager: &str) -> Result<Value, ApiError> {
    if t.subresource.is_some() || t.name.is_some() {
        return Err(ApiError::MethodNotAllowed("POST is only allowed on a collection".into()));
    }
    check_type(&body, &t.kind)?;
    insert_new(store, t, body, Manager::Update(manager), q.dry_run())
}

fn insert_new(
    store: &mut Store,
    t: &Target,
    mut obj: Value,
    manager: Manager<'_>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    place(t, &mut obj)?;
    let name = chosen_name(t, &obj)?;
    namespaces::admit_create(store, t, &name)?;
    let kind = &t.kind;
    obj = present(&obj, kind);
    meta::meta_mut(&mut obj).insert("name".into(), name.clone().into());
    convert_on_write(kind, &mut obj);
    // System metadata first, and a status subresource's status dropped: what is validated
    // is what would be stored.
    stamp_new(kind, &mut obj);
    validation::on_create(kind, &obj)?;
    let key = t.key(&name);
    if store.get(&t.gr(), &key).is_some() {
        return Err(ApiError::already_exists(&t.kind.plural, &t.kind.group, &name));
    }
    convert::to_storage(kind, &mut obj);
    let new_kinds = on_create_defaults(kind, &mut obj)?;
    meta::normalize(&mut obj);
    if let Manager::Update(manager) = manager {
        let scope = Scope::Main { status_subresource: kind.status_subresource };
        managed::track_update(None, &mut obj, manager, &kind.api_version(), scope);
    }
    if dry_run {
        return Ok(present(&obj, kind));
    }
    let stored = store.put(&t.gr(), key, obj);
    for k in new_kinds {
        store.registry.insert(k);
    }
    Ok(present(&stored, kind))
}

/// The name of a new object: its own, or one made from `generateName`.
fn chosen_name(t: &Target, obj: &Value) -> Result<String, ApiError> {
    if let Some(name) = meta::name(obj) {
        return Ok(name.to_string());
    }
    match meta::str_at(obj, "/metadata/generateName").filter(|s| !s.is_empty()) {
        Some(prefix) => Ok(format!("{prefix}{}", meta::random_suffix())),
        None => Err(t.invalid("", Cause::required("metadata.name", "name or generateName is required"))),
    }
}

/// System metadata of a new object; a status subresource starts empty.
fn stamp_new(kind: &ResourceKind, obj: &mut Value) {
    let m = meta::meta_mut(obj);
    m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    m.insert("creationTimestamp".into(), meta::now());
    for system in ["deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink", "generation"] {
        m.remove(system);
    }
    if kind.generation {
        m.insert("generation".into(), 1.into());
    }
    if let Some(o) = obj.as_object_mut()
        && kind.status_subresource
    {
        o.remove("status");
    }
}

fn is_crd(kind: &ResourceKind) -> bool {
    kind.group == "apiextensions.k8s.io" && kind.plural == "customresourcedefinitions"
}

/// What decoding does to a written object before it is validated.
fn convert_on_write(kind: &ResourceKind, obj: &mut Value) {
    if kind.is_core("secrets") {
        validation::decode_secret(obj);
    }
}

/// Whether an object being deleted has nothing left holding it (a Namespace also waits
/// for the namespace controller's `spec.finalizers`).
pub fn is_finalized(kind: &ResourceKind, obj: &Value) -> bool {
    meta::finalizers(obj).is_empty() && (!kind.is_core("namespaces") || namespaces::controller_done(obj))
}

/// Defaults the apiserver fills in on create; returns kinds a CRD introduces.
fn on_create_defaults(kind: &ResourceKind, obj: &mut Value) -> Result<Vec<ResourceKind>, ApiError> {
    if kind.is_core("namespaces") {
        namespaces::on_create(obj);
    }
    if !is_crd(kind) {
        return Ok(Vec::new());
    }
    let kinds = ResourceKind::from_crd(obj)?;
    let now = meta::now();
    let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now});
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    obj["status"] = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": obj.pointer("/spec/names").cloned().unwrap_or(Value::Null),
        "storedVersions": stored,
    });
    Ok(kinds)
}

/// What kind of update is being written.
#[derive(Debug, Clone, Copy)]
pub struct UpdateRequest<'a> {
    pub scope: Scope,
    pub manager: Manager<'a>,
    /// PUT of a kind that refuses unconditional updates.
    pub require_rv: bool,
    pub dry_run: bool,
}

/// Turns a client's new version of an object into the stored one, enforcing the
/// apiserver's update rules, and commits it.
pub fn write_update(
    store: &mut Store,
    t: &Target,
    old: &Value,
    new: Value,
    req: UpdateRequest<'_>,
) -> Result<Value, ApiError> {
    let kind = &t.kind;
    let name = t.name()?;
    check_type(&new, kind)?;
    if let Some(body_name) = meta::name(&new)
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(path), Some(body)) = (&t.namespace, meta::namespace(&new))
        && path != body
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request".into(),
        ));
    }
    match meta::resource_version(&new) {
        Some(rv) if Some(rv) != meta::resource_version(old) => {
            return Err(ApiError::stale(&kind.plural, &kind.group, name));
        }
        None if req.require_rv => {
            // Reported for the resource, not the kind, as the apiserver's update does.
            let cause = Cause::invalid_shown("metadata.resourceVersion", "0", "must be specified for an update");
            return Err(ApiError::invalid(&kind.plural, &kind.group, name, vec![cause]));
        }
        _ => {}
    }

    let applied_fields = new.pointer("/metadata/managedFields").cloned();
    let mut new = match req.scope {
        Scope::Status => {
            let mut merged = old.clone();
            set_or_remove(&mut merged, "status", new.get("status").cloned());
            merged
        }
        Scope::Main { status_subresource: true } => {
            let mut new = new;
            set_or_remove(&mut new, "status", old.get("status").cloned());
            new
        }
        Scope::Main { .. } => new,
    };
    if kind.is_core("namespaces") && req.scope != Scope::Status {
        namespaces::keep_spec_finalizers(old, &mut new);
    }
    new = present(&new, kind);
    {
        let old_meta = old.get("metadata").and_then(Value::as_object);
        let m = meta::meta_mut(&mut new);
        for system in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old_meta.and_then(|o| o.get(system)) {
                Some(v) => m.insert(system.into(), v.clone()),
                None => m.remove(system),
            };
        }
        m.remove("selfLink");
    }
    if meta::is_deleting(old) {
        let before = meta::finalizers(old);
        let added: Vec<String> = meta::finalizers(&new).into_iter().filter(|f| !before.contains(f)).collect();
        if !added.is_empty() {
            return Err(t.invalid(
                name,
                Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                ),
            ));
        }
    }
    if req.scope == Scope::Status {
        validation::on_status_update(kind, old, &new)?;
    } else {
        convert_on_write(kind, &mut new);
        validation::on_update(kind, old, &new)?;
    }
    convert::to_storage(kind, &mut new);
    meta::normalize(&mut new);
    match req.manager {
        Manager::Update(manager) => managed::track_update(Some(old), &mut new, manager, &kind.api_version(), req.scope),
        Manager::Applied => {
            set_or_remove(meta_value(&mut new), "managedFields", applied_fields);
            meta::normalize(&mut new);
        }
    }
    if kind.generation && spec_of(old, kind) != spec_of(&new, kind) {
        meta::meta_mut(&mut new).insert("generation".into(), (meta::generation(old) + 1).into());
    }
    let mut crd_kinds = Vec::new();
    if is_crd(kind) && matches!(req.scope, Scope::Main { .. }) {
        crd_kinds = ResourceKind::from_crd(&new)?;
    }

    if same_object(old, &new) || req.dry_run {
        return Ok(present(if req.dry_run { &new } else { old }, kind));
    }
    let key = t.key(name);
    if meta::is_deleting(&new) && is_finalized(kind, &new) {
        let last = store.remove(&t.gr(), &key, new);
        after_removal(store, kind, &last);
        return Ok(present(&last, kind));
    }
    let stored = store.put(&t.gr(), key, new);
    for k in crd_kinds {
        store.registry.insert(k);
    }
    Ok(present(&stored, kind))
}

fn meta_value(obj: &mut Value) -> &mut Value {
    meta::meta_mut(obj);
    &mut obj["metadata"]
}

fn set_or_remove(obj: &mut Value, key: &str, value: Option<Value>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match value {
        Some(v) => map.insert(key.into(), v),
        None => map.remove(key),
    };
}

/// The part of an object whose change bumps `metadata.generation`.
fn spec_of<'a>(obj: &'a Value, kind: &ResourceKind) -> Vec<(&'a String, &'a Value)> {
    obj.as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| match k.as_str() {
            "metadata" | "apiVersion" | "kind" => false,
            "status" => !kind.status_subresource,
            _ => true,
        })
        .collect()
}

fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("apiVersion");
        m
    };
    strip(a) == strip(b)
}

pub fn replace(store: &mut Store, t: &Target, q: &Query, body: Value, manager: &str) -> Result<Value, ApiError> {
    let scope = t.scope()?;
    check_type(&body, &t.kind)?;
    let old = t.load(store)?;
    write_update(
        store,
        t,
        &old,
        body,
        UpdateRequest {
            scope,
            manager: Manager::Update(manager),
            require_rv: !t.kind.unconditional_update,
            dry_run: q.dry_run(),
        },
    )
}

pub fn patch(
    store: &mut Store,
    t: &Target,
    q: &Query,
    content_type: &str,
    body: &[u8],
    default_manager: &str,
) -> Result<(StatusCode, Value), ApiError> {
    let patch_type = PatchType::from_content_type(content_type)?;
    let scope = t.scope()?;
    let name = t.name()?.to_string();
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body of the request could not be decoded as JSON (YAML apply bodies are not supported): {e}"
        ))
    })?;
    let old = store.get(&t.gr(), &t.key(&name));
    let dry_run = q.dry_run();
    if patch_type != PatchType::Apply {
        let old = old.ok_or_else(|| t.not_found(&name))?;
        let new = patch::apply_patch(&present(&old, &t.kind), patch_type, &body)?;
        let manager = q.get("fieldManager").unwrap_or(default_manager);
        let req = UpdateRequest { scope, manager: Manager::Update(manager), require_rv: false, dry_run };
        return Ok((StatusCode::OK, write_update(store, t, &old, new, req)?));
    }

    let Some(manager) = q.get("fieldManager") else {
        return Err(ApiError::Invalid {
            message:
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
                    .into(),
            kind: "PatchOptions".into(),
            group: "meta.k8s.io".into(),
            name: String::new(),
            causes: vec![Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )],
        });
    };
    check_type(&body, &t.kind)?;
    if let Some(body_name) = meta::name(&body)
        && body_name != name
    {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if meta::str_at(&body, "/apiVersion").is_none() || meta::str_at(&body, "/kind").is_none() {
        return Err(ApiError::BadRequest("apiVersion and kind must be set in an apply configuration".into()));
    }
    let api_version = t.kind.api_version();
    let target = ApplyTarget { resource: &t.kind.plural, group: &t.kind.group, name: &name, api_version: &api_version };
    let force = q.flag("force");
    match old {
        None => {
            if scope == Scope::Status {
                return Err(t.not_found(&name));
            }
            let mut obj = managed::apply(None, &body, manager, force, scope, &target)?;
            meta::meta_mut(&mut obj).insert("name".into(), name.into());
            let created = insert_new(store, t, obj, Manager::Applied, dry_run)?;
            Ok((StatusCode::CREATED, created))
        }
        Some(old) => {
            let live = present(&old, &t.kind);
            let merged = managed::apply(Some(&live), &body, manager, force, scope, &target)?;
            let req = UpdateRequest { scope, manager: Manager::Applied, require_rv: false, dry_run };
            Ok((StatusCode::OK, write_update(store, t, &old, merged, req)?))
        }
    }
}

pub fn delete(store: &mut Store, t: &Target, q: &Query, body: &[u8]) -> Result<Value, ApiError> {
    if t.subresource.is_some() {
        return Err(ApiError::MethodNotAllowed("DELETE is not allowed on a subresource".into()));
    }
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?
    };
    let old = t.load(store)?;
    let name = t.name()?;
    let kind = &t.kind;
    for (field, pointer) in [("UID", "/metadata/uid"), ("ResourceVersion", "/metadata/resourceVersion")] {
        let pre = meta::str_at(&opts, &format!("/preconditions/{}", lower_first(field)));
        let actual = meta::str_at(&old, pointer).unwrap_or_default();
        if let Some(pre) = pre
            && pre != actual
        {
            return Err(ApiError::conflict(
                &kind.plural,
                &kind.group,
                name,
                &format!("Precondition failed: {field} in precondition: {pre}, {field} in object meta: {actual}"),
            ));
        }
    }
    let dry_run =
        q.dry_run() || opts.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"));
    let policy = opts.get("propagationPolicy").and_then(Value::as_str).or(q.get("propagationPolicy"));
    if policy == Some("Orphan") && !dry_run {
        orphan_dependents(store, &old);
    }
    delete_object(store, t, &old, dry_run)
}

/// `propagationPolicy: Orphan`: the dependents lose their reference to the object and outlive
/// it. A real server orphans them once the object's other finalizers are done (through the
/// `orphan` finalizer and the garbage collector); here it happens at once, which no client can
/// tell apart as long as it only looks after the object is gone.
fn orphan_dependents(store: &mut Store, owner: &Value) {
    let Some(uid) = meta::str_at(owner, "/metadata/uid").map(str::to_string) else { return };
    for (gr, dependent) in store.dependents_of(&uid) {
        let mut updated = (*dependent).clone();
        if let Some(refs) = updated.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
            if refs.is_empty() {
                meta::meta_mut(&mut updated).remove("ownerReferences");
            }
        }
        let key = (
            meta::namespace(&updated).unwrap_or_default().to_string(),
            meta::name(&updated).unwrap_or_default().to_string(),
        );
        store.put(&gr, key, updated);
    }
}

fn lower_first(s: &str) -> String {
    match s {
        "UID" => "uid".into(),
        _ => "resourceVersion".into(),
    }
}

pub fn delete_object(store: &mut Store, t: &Target, old: &Value, dry_run: bool) -> Result<Value, ApiError> {
    let kind = &t.kind;
    let name = meta::name(old).unwrap_or_default().to_string();
    if meta::is_deleting(old) {
        return Ok(present(old, kind));
    }
    if kind.is_core("namespaces") {
        return Ok(present(&namespaces::begin_delete(store, old, dry_run)?, kind));
    }
    let key = (meta::namespace(old).unwrap_or_default().to_string(), name.clone());
    if !meta::finalizers(old).is_empty() {
        let mut new = old.clone();
        let generation = meta::generation(old);
        let m = meta::meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), meta::now());
        m.insert("deletionGracePeriodSeconds".into(), 0.into());
        if generation > 0 {
            m.insert("generation".into(), (generation + 1).into());
        }
        if dry_run {
            return Ok(present(&new, kind));
        }
        return Ok(present(&store.put(&t.gr(), key, new), kind));
    }
    if !dry_run {
        let last = store.remove(&t.gr(), &key, old.clone());
        after_removal(store, kind, &last);
    }
    Ok(json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name,
            "group": kind.group,
            "kind": kind.plural,
            "uid": meta::str_at(old, "/metadata/uid").unwrap_or_default(),
        },
    }))
}

/// What follows an object's removal: its dependents are garbage-collected, and a
/// removed CRD takes its kinds and their objects with it.
pub fn after_removal(store: &mut Store, kind: &ResourceKind, last: &Value) {
    if let Some(uid) = meta::str_at(last, "/metadata/uid") {
        collect_garbage(store, uid);
    }
    if let Some(namespace) = meta::namespace(last) {
        namespaces::finish_if_empty(store, namespace);
    }
    if !is_crd(kind) {
        return;
    }
    let (Some(group), Some(plural)) = (meta::str_at(last, "/spec/group"), meta::str_at(last, "/spec/names/plural"))
    else {
        return;
    };
    let gr = GroupResource { group: group.into(), resource: plural.into() };
    store.registry.remove(&gr);
    store.drop_resource(&gr);
}

/// Background-propagation garbage collection, done at once: every object whose
/// owners are all gone is deleted (honouring its own finalizers).
fn collect_garbage(store: &mut Store, owner_uid: &str) {
    for (gr, dependent) in store.dependents_of(owner_uid) {
        let owners =
            dependent.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        let orphaned = owners
            .iter()
            .filter_map(|r| r.get("uid").and_then(Value::as_str))
            .all(|uid| uid == owner_uid || !store.uid_exists(uid));
        let Some(kind) = store.registry.any_version(&gr) else {
            continue;
        };
        if !orphaned {
            continue;
        }
        let target = Target {
            kind,
            namespace: meta::namespace(&dependent).map(String::from),
            name: meta::name(&dependent).map(String::from),
            subresource: None,
        };
        if let Err(e) = delete_object(store, &target, &dependent, false) {
            tracing::warn!(error = %e, "garbage collection of a dependent failed");
        }
    }
}

pub fn delete_collection(store: &mut Store, t: &Target, q: &Query) -> Result<Value, ApiError> {
    let sel = selectors(t, q)?;
    let victims: Vec<Arc<Value>> =
        store.list(&t.gr(), t.namespace.as_deref()).into_iter().filter(|o| sel.matches(o)).collect();
    let mut items = Vec::new();
    for old in victims {
        let out = delete_object(store, t, &old, q.dry_run())?;
        items.push(if out.get("kind") == Some(&json!("Status")) { present(&old, &t.kind) } else { out });
    }
    Ok(json!({
        "kind": format!("{}List", t.kind.kind),
        "apiVersion": t.kind.api_version(),
        "metadata": {"resourceVersion": store.resource_version().to_string()},
        "items": items,
    }))
}
