//! A cell's cluster as a release sees it (a client and what discovery told it), and
//! server-side apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::error::conflicts_of;
use super::{MANAGER, ObjectRef, ReleaseError};

/// A kind as the cluster serves it.
#[derive(Clone, Debug)]
struct Served {
    resource: ApiResource,
    namespaced: bool,
}

/// Group, version and kind.
type KindKey = (String, String, String);

fn key(reference: &ObjectRef) -> KindKey {
    (reference.group.clone(), reference.version.clone(), reference.kind.clone())
}

/// A client of one cell's cluster with a cache of the kinds discovery found there. Clones
/// share the cache; make one per client.
#[derive(Clone)]
pub struct CellCluster {
    client: Client,
    served: Arc<Mutex<HashMap<KindKey, Served>>>,
}

impl CellCluster {
    pub fn new(client: Client) -> Self {
        CellCluster { client, served: Arc::default() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How the cluster serves the kind of `reference`. Only what exists is cached: a kind a CRD
    /// is about to define is looked up again next time.
    async fn served(&self, reference: &ObjectRef) -> Result<Served, ReleaseError> {
        let key = key(reference);
        if let Some(served) = self.served.lock().ok().and_then(|cache| cache.get(&key).cloned()) {
            return Ok(served);
        }
        let gvk = GroupVersionKind::gvk(&reference.group, &reference.version, &reference.kind);
        let (resource, capabilities) = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok(found) => found,
            Err(kube::Error::Discovery(_)) => return Err(not_served(reference)),
            Err(e) if crate::kube_error::code(&e) == Some(404) => return Err(not_served(reference)),
            Err(e) => {
                return Err(ReleaseError::kube(
                    format!("discovering {} {}", reference.api_version(), reference.kind),
                    e,
                ));
            }
        };
        let served = Served { resource, namespaced: capabilities.scope == Scope::Namespaced };
        if let Ok(mut cache) = self.served.lock() {
            cache.insert(key, served.clone());
        }
        Ok(served)
    }

    /// Drops what discovery said of a kind that turned out to be gone.
    fn forget(&self, reference: &ObjectRef) {
        let key = key(reference);
        if let Ok(mut cache) = self.served.lock() {
            cache.remove(&key);
        }
    }

    /// A failed request: when the kind itself is gone (its CRD was deleted since discovery),
    /// it is forgotten and reported as not served.
    pub(super) fn request_error(&self, reference: &ObjectRef, what: &str, e: kube::Error) -> ReleaseError {
        if kind_gone(&e) {
            self.forget(reference);
            return not_served(reference);
        }
        ReleaseError::kube(format!("{what} {}", reference.display()), e)
    }

    /// The API of the object `reference` names, and the reference with its namespace as the
    /// kind's scope has it.
    pub(super) async fn api(&self, reference: &ObjectRef) -> Result<(Api<DynamicObject>, ObjectRef), ReleaseError> {
        let served = self.served(reference).await?;
        let mut reference = reference.clone();
        if !served.namespaced {
            reference.namespace.clear();
            return Ok((Api::all_with(self.client.clone(), &served.resource), reference));
        }
        if reference.namespace.is_empty() {
            return Err(ReleaseError::InvalidObject {
                what: reference.display(),
                message: "is namespaced but names no namespace".into(),
            });
        }
        Ok((Api::namespaced_with(self.client.clone(), &reference.namespace, &served.resource), reference))
    }

    /// The live object, None when it or its kind is not there.
    pub(super) async fn get(&self, reference: &ObjectRef) -> Result<Option<(Value, ObjectRef)>, ReleaseError> {
        let (api, reference) = match self.api(reference).await {
            Ok(found) => found,
            Err(ReleaseError::KindNotServed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match api.get_opt(&reference.name).await {
            Ok(live) => live.map(|object| to_value(&object).map(|value| (value, reference))).transpose(),
            Err(e) => match self.request_error(&reference, "reading", e) {
                ReleaseError::KindNotServed { .. } => Ok(None),
                other => Err(other),
            },
        }
    }
}

/// A 404 that is not an object's NotFound: the URL of the kind itself is not served.
fn kind_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404 && !status.is_not_found())
}

fn not_served(reference: &ObjectRef) -> ReleaseError {
    ReleaseError::KindNotServed {
        object: reference.display(),
        api_version: reference.api_version(),
        kind: reference.kind.clone(),
    }
}

pub(super) fn to_value(object: &DynamicObject) -> Result<Value, ReleaseError> {
    serde_json::to_value(object)
        .map_err(|e| ReleaseError::InvalidObject { what: "a live object".into(), message: e.to_string() })
}

/// What an apply did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Created,
    Configured,
    /// Nothing was written: the object already was as applied.
    Unchanged,
}

/// One applied object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// Its identity as the cluster has it (what an inventory stores).
    pub object: ObjectRef,
    pub action: Action,
    pub resource_version: String,
}

pub(super) fn apply_params(force: bool, dry_run: bool) -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.into()),
        force,
        dry_run,
        // A misspelt field is refused, not silently dropped.
        field_validation: Some(ValidationDirective::Strict),
    }
}

/// `object` with the namespace its kind's scope wants.
pub(super) fn scoped(object: &Value, reference: &ObjectRef) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if reference.namespace.is_empty() {
            metadata.remove("namespace");
        } else {
            metadata.insert("namespace".into(), reference.namespace.clone().into());
        }
    }
    object
}

/// A failed apply: a refused conflict names the fields and their managers.
pub(super) fn apply_error(cluster: &CellCluster, reference: &ObjectRef, e: kube::Error) -> ReleaseError {
    match conflicts_of(&e) {
        Some(conflicts) => ReleaseError::Conflict { object: reference.display(), conflicts },
        None => cluster.request_error(reference, "applying", e),
    }
}

/// Server-side applies one rendered object as field manager `cellplane`. Without `force` a
/// field another manager owns with another value refuses the apply
/// ([`ReleaseError::Conflict`]); with it, cellplane takes the field over. Applying what is
/// already there writes nothing ([`Action::Unchanged`]).
#[tracing::instrument(skip_all, fields(object = tracing::field::Empty, force = force))]
pub async fn apply(cluster: &CellCluster, object: &Value, force: bool) -> Result<Applied, ReleaseError> {
    let (api, reference) = cluster.api(&ObjectRef::of(object)?).await?;
    tracing::Span::current().record("object", reference.to_string());
    let read = |e| cluster.request_error(&reference, "reading", e);
    let before = api.get_opt(&reference.name).await.map_err(read)?.and_then(|o| o.metadata.resource_version);
    let body = scoped(object, &reference);
    let after = api
        .patch(&reference.name, &apply_params(force, false), &Patch::Apply(&body))
        .await
        .map_err(|e| apply_error(cluster, &reference, e))?;
    let resource_version = after.metadata.resource_version.unwrap_or_default();
    let action = match before {
        None => Action::Created,
        Some(before) if before == resource_version => Action::Unchanged,
        Some(_) => Action::Configured,
    };
    tracing::debug!(?action, "applied");
    Ok(Applied { object: reference, action, resource_version })
}

/// Applies rendered objects in their order. An object whose kind the cluster does not serve
/// yet (a CRD applied just before is not established) is tried again until `kinds_within`
/// has passed since the call began.
#[tracing::instrument(skip_all, fields(objects = objects.len(), force = force))]
pub async fn apply_all(
    cluster: &CellCluster,
    objects: &[Value],
    force: bool,
    kinds_within: Duration,
) -> Result<Vec<Applied>, ReleaseError> {
    let deadline = Instant::now() + kinds_within;
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        applied.push(apply_once_served(cluster, object, force, deadline).await?);
    }
    Ok(applied)
}

async fn apply_once_served(
    cluster: &CellCluster,
    object: &Value,
    force: bool,
    deadline: Instant,
) -> Result<Applied, ReleaseError> {
    let mut pause = Duration::from_millis(50);
    loop {
        match apply(cluster, object, force).await {
            Err(ReleaseError::KindNotServed { .. }) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}
