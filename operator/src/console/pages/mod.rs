//! The console's pages, one module per area. Each reads the objects with the user's own
//! client and renders them; each action writes with it, so the API server decides.

pub mod cells;
pub mod namespaces;
pub mod rings;
pub mod workflows;

use std::fmt::Write as _;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::ConsoleError;
use super::html::{esc, time_ago};

/// Field manager of the console's writes, so `kubectl get -o yaml --show-managed-fields` tells
/// a person's console edit from the operator's.
pub const MANAGER: &str = "cellplane-console";

/// Lists `api`; a user who may not list gets None (the page says so) rather than an error.
pub async fn list_or_forbidden<K>(api: &Api<K>) -> Result<Option<Vec<K>>, ConsoleError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(Some(list.items)),
        Err(e) if crate::kube_error::code(&e) == Some(403) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A JSON merge patch of one object, as the user, with the console's field manager.
pub async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> Result<(), ConsoleError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The Events about one object in `namespace` (events.k8s.io), newest first, as a table.
pub async fn events_table(client: kube::Client, namespace: &str, kind: &str, name: &str) -> String {
    let api: Api<K8sEvent> = Api::namespaced(client, namespace);
    let events = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return format!(r#"<p class="empty">Events: {}</p>"#, esc(&crate::kube_error::describe(&e))),
    };
    let mut about: Vec<&K8sEvent> = events
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect();
    about.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    if about.is_empty() {
        return r#"<h2>Events</h2><p class="empty">No events yet.</p>"#.into();
    }
    let mut rows = String::new();
    for event in about.iter().take(50) {
        let warning = event.type_.as_deref() == Some("Warning");
        let _ = write!(
            rows,
            r#"<tr><td>{}</td><td>{}</td><td class="msg">{}</td><td>{}</td></tr>"#,
            if warning {
                r#"<span class="badge bad">Warning</span>"#
            } else {
                r#"<span class="badge ok">Normal</span>"#
            },
            esc(event.reason.as_deref().unwrap_or("")),
            esc(event.note.as_deref().unwrap_or("")),
            time_ago(event_time(event).as_ref()),
        );
    }
    format!(
        r#"<table><caption>Events</caption><thead><tr><th scope="col">Type</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">When</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

fn event_time(event: &K8sEvent) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    event
        .event_time
        .as_ref()
        .map(|t| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0))
        .or_else(|| event.deprecated_last_timestamp.clone())
        .or_else(|| event.metadata.creation_timestamp.clone())
}

/// A `<dl>` of label/value pairs; values are HTML already.
pub fn facts(pairs: &[(&str, String)]) -> String {
    let mut out = String::from(r#"<dl class="facts">"#);
    for (label, value) in pairs {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", esc(label));
    }
    out.push_str("</dl>");
    out
}

/// Text escaped, or a dash when there is none.
pub fn or_dash(text: Option<&str>) -> String {
    text.filter(|t| !t.is_empty()).map_or_else(|| "-".into(), esc)
}
