//! Whether a release's objects are healthy, by kstatus's rules: workloads rolled out, Jobs
//! complete, custom resources Ready for their current generation, the rest by existence.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CellCluster, ObjectRef, ReleaseError};

/// The health of one live object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason")]
pub enum Health {
    Healthy,
    /// Not there yet; why (e.g. `1/3 available`).
    Progressing(String),
    /// Will not get there without a change (e.g. a Deployment past its progress deadline).
    Failed(String),
}

/// kstatus-style health of one live object.
pub fn health(object: &Value) -> Health {
    if object.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) {
        return Health::Progressing("being deleted".into());
    }
    let api_version = text(object, "/apiVersion");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, text(object, "/kind")) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        _ => by_conditions(object),
    }
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn count(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    let conditions = object.pointer("/status/conditions")?.as_array()?;
    conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn is(condition: Option<&Value>, status: &str) -> bool {
    condition.is_some_and(|c| c.get("status").and_then(Value::as_str) == Some(status))
}

/// `Ready=False (Reason): message`.
fn describe_condition(condition: &Value) -> String {
    let field = |name| condition.get(name).and_then(Value::as_str).unwrap_or_default();
    let mut text = format!("{}={}", field("type"), field("status"));
    if !field("reason").is_empty() {
        text.push_str(&format!(" ({})", field("reason")));
    }
    if !field("message").is_empty() {
        text.push_str(&format!(": {}", field("message")));
    }
    text
}

/// Why the object's status is older than its spec, if it is. Controllers of built-in workloads
/// always write observedGeneration (`required`); others only when they keep it.
fn generation_pending(object: &Value, required: bool) -> Option<String> {
    let generation = count(object, "/metadata/generation");
    match object.pointer("/status/observedGeneration").and_then(Value::as_i64) {
        Some(observed) if observed < generation => {
            Some(format!("generation {generation} not observed yet (status is for {observed})"))
        }
        None if required => Some("not observed by its controller yet".into()),
        _ => None,
    }
}

fn replicas(object: &Value) -> i64 {
    object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// `have/want what` when `have` falls short.
fn short(have: i64, want: i64, what: &str) -> Option<String> {
    (have < want).then(|| format!("{have}/{want} {what}"))
}

fn waiting(reasons: Vec<Option<String>>) -> Health {
    let reasons: Vec<String> = reasons.into_iter().flatten().collect();
    if reasons.is_empty() { Health::Healthy } else { Health::Progressing(reasons.join(", ")) }
}

fn deployment(object: &Value) -> Health {
    if let Some(pending) = generation_pending(object, true) {
        return Health::Progressing(pending);
    }
    let want = replicas(object);
    let updated = count(object, "/status/updatedReplicas");
    let old = count(object, "/status/replicas") - updated;
    let status = waiting(vec![
        short(updated, want, "updated"),
        short(count(object, "/status/availableReplicas"), want, "available"),
        (old > 0).then(|| format!("{old} old replicas terminating")),
    ]);
    let progressing = condition(object, "Progressing");
    let deadline_exceeded =
        progressing.is_some_and(|c| c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded"));
    match status {
        Health::Progressing(reasons) if deadline_exceeded => {
            Health::Failed(format!("{reasons}; ProgressDeadlineExceeded"))
        }
        _ if deadline_exceeded => Health::Failed("ProgressDeadlineExceeded".into()),
        status => status,
    }
}

fn stateful_set(object: &Value) -> Health {
    if let Some(pending) = generation_pending(object, true) {
        return Health::Progressing(pending);
    }
    let want = replicas(object);
    let mut reasons = vec![short(count(object, "/status/readyReplicas"), want, "ready")];
    if object.pointer("/status/availableReplicas").is_some() {
        reasons.push(short(count(object, "/status/availableReplicas"), want, "available"));
    }
    if text(object, "/spec/updateStrategy/type") != "OnDelete" {
        let partition = count(object, "/spec/updateStrategy/rollingUpdate/partition");
        reasons.push(short(count(object, "/status/updatedReplicas"), (want - partition).max(0), "updated"));
        let (current, update) = (text(object, "/status/currentRevision"), text(object, "/status/updateRevision"));
        if partition == 0 && current != update {
            reasons.push(Some(format!("rolling out revision {update}")));
        }
    }
    waiting(reasons)
}

fn daemon_set(object: &Value) -> Health {
    if let Some(pending) = generation_pending(object, true) {
        return Health::Progressing(pending);
    }
    if object.pointer("/status/desiredNumberScheduled").is_none() {
        return Health::Progressing("not scheduled yet".into());
    }
    let want = count(object, "/status/desiredNumberScheduled");
    waiting(vec![
        short(count(object, "/status/updatedNumberScheduled"), want, "updated"),
        short(count(object, "/status/numberAvailable"), want, "available"),
    ])
}

fn job(object: &Value) -> Health {
    if let Some(failed) = condition(object, "Failed").filter(|c| is(Some(c), "True")) {
        return Health::Failed(describe_condition(failed));
    }
    if is(condition(object, "Complete"), "True") {
        return Health::Healthy;
    }
    if is(condition(object, "Suspended"), "True") {
        return Health::Progressing("suspended".into());
    }
    let (active, succeeded) = (count(object, "/status/active"), count(object, "/status/succeeded"));
    Health::Progressing(format!("{active} active, {succeeded} succeeded"))
}

/// Custom resources (and any other kind): their generation observed, not Stalled, and Ready
/// for the current generation when they have a Ready condition; else there is all it takes.
fn by_conditions(object: &Value) -> Health {
    if let Some(pending) = generation_pending(object, false) {
        return Health::Progressing(pending);
    }
    if let Some(stalled) = condition(object, "Stalled").filter(|c| is(Some(c), "True")) {
        return Health::Failed(describe_condition(stalled));
    }
    let Some(ready) = condition(object, "Ready") else {
        return match condition(object, "Reconciling").filter(|c| is(Some(c), "True")) {
            Some(reconciling) => Health::Progressing(describe_condition(reconciling)),
            None => Health::Healthy,
        };
    };
    let generation = count(object, "/metadata/generation");
    if let Some(observed) = ready.get("observedGeneration").and_then(Value::as_i64).filter(|o| *o < generation) {
        return Health::Progressing(format!("Ready is for generation {observed}, not {generation}"));
    }
    if is(Some(ready), "True") { Health::Healthy } else { Health::Progressing(describe_condition(ready)) }
}

/// One object of an inventory and its health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessed {
    pub object: ObjectRef,
    pub health: Health,
}

/// The health of a release's objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub objects: Vec<Assessed>,
}

impl HealthReport {
    pub fn is_healthy(&self) -> bool {
        self.objects.iter().all(|o| o.health == Health::Healthy)
    }

    /// Whether an object has failed (waiting longer will not make the release healthy).
    pub fn has_failed(&self) -> bool {
        self.objects.iter().any(|o| matches!(o.health, Health::Failed(_)))
    }

    pub fn unhealthy(&self) -> impl Iterator<Item = &Assessed> {
        self.objects.iter().filter(|o| o.health != Health::Healthy)
    }
}

/// `healthy (N objects)`, else one line per unhealthy object:
/// `Deployment svc/frontend: 1/3 available; ProgressDeadlineExceeded`.
impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_healthy() {
            return write!(f, "healthy ({} objects)", self.objects.len());
        }
        let lines: Vec<String> = self
            .unhealthy()
            .map(|o| match &o.health {
                Health::Progressing(why) | Health::Failed(why) => format!("{}: {why}", o.object.display()),
                Health::Healthy => String::new(),
            })
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Reads every object of an inventory and assesses it; a missing object is "not found".
#[tracing::instrument(skip_all, fields(objects = inventory.len()))]
pub async fn assess(cluster: &CellCluster, inventory: &[ObjectRef]) -> Result<HealthReport, ReleaseError> {
    let mut objects = Vec::with_capacity(inventory.len());
    for reference in inventory {
        let health = match cluster.get(reference).await? {
            Some((live, _)) => health(&live),
            None => Health::Progressing("not found".into()),
        };
        objects.push(Assessed { object: reference.clone(), health });
    }
    let report = HealthReport { objects };
    tracing::debug!(healthy = report.is_healthy(), "assessed");
    Ok(report)
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
