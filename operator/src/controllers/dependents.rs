//! Objects a kind keeps besides its workflow, in the operator's namespace: the ring's synthetic
//! tenants. What should exist is the kind's pure decision; keeping it so is done here.

use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::error::ReconcileError;
use crate::api::Namespace;

/// The dependents an object should have.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependents {
    /// Selects every dependent of the object, wanted or not.
    pub selector: String,
    /// Those that should exist; the others `selector` finds are deleted.
    pub wanted: Vec<Namespace>,
    /// Names this set: it is kept once per process for each key, remembered after success only.
    pub key: String,
}

/// Creates the wanted dependents that are missing and deletes the others.
pub async fn keep(ctx: &Context, dependents: &Dependents) -> Result<(), ReconcileError> {
    if ctx.done(&dependents.key) {
        return Ok(());
    }
    let api: Api<Namespace> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    for wanted in &dependents.wanted {
        crate::fixtures::create(&api, wanted).await?;
    }
    let names: Vec<String> = dependents.wanted.iter().map(|w| w.name_any()).collect();
    for existing in api.list(&ListParams::default().labels(&dependents.selector)).await?.items {
        if names.contains(&existing.name_any()) {
            continue;
        }
        match api.delete(&existing.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if crate::kube_error::code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.remember(dependents.key.clone());
    Ok(())
}
