//! The Namespace controller: one provisioning workflow per namespace, mirrored into status.

use std::sync::Arc;

use cellplane_workflows::{Checkpoint, State};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Context, ReconcileError, apply_status, blocked_on, conditions_for, counted, ensure_finalizer, is_dns_label,
    progress_message, remove_finalizer, set_deleting, stall_of, workflow_status,
};
use crate::api::conditions::{self, Condition, ConditionStatus, Stall};
use crate::api::namespace::{
    CELL_SELECTED, CERTIFICATES_READY, CONNECTED, DATABASE_READY, INGRESS_READY, NAMESPACE_CONDITIONS, NAMESPACE_STEPS,
    Namespace, NamespacePhase, NamespaceStatus, TenantId,
};
use crate::cell::pki;
use crate::flows::fleet::{NamespaceView, view};
use crate::flows::namespace::{DELETE, NamespaceInput, NamespaceWorkflow};
use crate::flows::placement::render_hostname;
use crate::flows::{Owner, ids};

const KIND: &str = "Namespace";

pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    super::run_controller::<Namespace, _>(ctx, shutdown, &[Owner::Namespace], reconcile).await
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let span = tracing::info_span!("reconcile", kind = KIND, name = %super::object_key(ns.as_ref()));
    let result = reconcile_inner(&ns, &ctx).instrument(span).await;
    counted(KIND, ns.as_ref(), &ctx, result).await
}

async fn reconcile_inner(ns: &Namespace, ctx: &Context) -> Result<Action, ReconcileError> {
    let tenant = TenantId::of(ns).ok_or(ReconcileError::MissingField("metadata.namespace"))?;
    let api: Api<Namespace> = Api::namespaced(ctx.client.clone(), &tenant.account);
    if ns.metadata.deletion_timestamp.is_some() {
        return cleanup(ns, &tenant, ctx, &api).await;
    }
    if ensure_finalizer(&api, ns).await? {
        return Ok(Action::await_change());
    }
    if let Err(stall) = validate(ns, &tenant, &ctx.namespace) {
        write_status(ns, ctx, &api, None, Some(&stall), None).await?;
        return Ok(Action::await_change());
    }
    let uid = ns.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
    let id = ids::namespace(&tenant, &uid);
    let input = NamespaceInput { tenant, uid, spec: ns.spec.clone() };
    ctx.ensure::<NamespaceWorkflow>(&id, &input).await?;
    let checkpoint = ctx.engine.checkpoint(&id).await?;
    write_status(ns, ctx, &api, checkpoint.as_ref(), None, None).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(600)))
}

/// What the schema should have refused, checked again (names reach hostnames and SQL), and
/// what it cannot check: a supplied client CA must parse, be a CA and be valid now.
fn validate(ns: &Namespace, tenant: &TenantId, operator_namespace: &str) -> Result<(), Stall> {
    validate_spec(ns, tenant).map_err(|message| Stall { reason: "InvalidSpec".into(), message })?;
    if ns.spec.synthetic && tenant.account != operator_namespace {
        let message = format!(
            "spec.synthetic: only the operator's own tenants (in namespace {operator_namespace}) are synthetic"
        );
        return Err(Stall { reason: "InvalidSpec".into(), message });
    }
    if let Some(pem) = &ns.spec.mtls.accepted_client_ca
        && let Err(problem) = pki::validate_client_ca(pem, std::time::SystemTime::now())
    {
        return Err(Stall {
            reason: "InvalidClientCA".into(),
            message: format!("spec.mtls.acceptedClientCA: {problem}"),
        });
    }
    Ok(())
}

fn validate_spec(ns: &Namespace, tenant: &TenantId) -> Result<(), String> {
    let name = &tenant.name;
    if !is_dns_label(name) {
        return Err(format!("metadata.name {name:?} must be a DNS label: at most 63 of a-z, 0-9 and '-'"));
    }
    if !is_dns_label(&ns.spec.region) {
        return Err(format!("spec.region {:?} must be a DNS label", ns.spec.region));
    }
    let template = &ns.spec.endpoint.hostname_template;
    if !template.contains("{namespace}") || !template.contains("{account}") {
        return Err(format!("spec.endpoint.hostnameTemplate {template:?} must contain {{namespace}} and {{account}}"));
    }
    let sample = render_hostname(template, tenant, "cell", "region", "example.com");
    if sample.len() > 253 || !sample.split('.').all(is_dns_label) {
        return Err(format!("spec.endpoint.hostnameTemplate {template:?} does not render a valid hostname ({sample})"));
    }
    let mtls = &ns.spec.mtls;
    if mtls.accepted_client_ca.is_some() == mtls.issue_client_certificate.unwrap_or(false) {
        return Err("spec.mtls: set exactly one of acceptedClientCA or issueClientCertificate: true".into());
    }
    Ok(())
}

async fn write_status(
    ns: &Namespace,
    ctx: &Context,
    api: &Api<Namespace>,
    checkpoint: Option<&Checkpoint>,
    stall: Option<&Stall>,
    deleting: Option<(&str, String)>,
) -> Result<(), ReconcileError> {
    let current = ns.status.clone();
    let mut status = current.clone().unwrap_or_default();
    let generation = ns.metadata.generation;
    let view = view::<NamespaceView>(checkpoint);
    let failed = stall.cloned().or(checkpoint.and_then(stall_of));
    // A permission the operator lacks, or no cell that can take the namespace (and none on its
    // way to): stalled, but not failed; it goes on once the permission is granted or a cell has
    // room again.
    let waiting = failed
        .is_none()
        .then(|| checkpoint.and_then(blocked_on).or_else(|| no_eligible_cell(view.as_ref(), checkpoint)));
    let stall = failed.clone().or(waiting.flatten());
    let done: Vec<&str> = match &view {
        Some(view) => NAMESPACE_STEPS.iter().copied().filter(|s| view.done.iter().any(|d| d == s)).collect(),
        None => NAMESPACE_STEPS.iter().copied().filter(|s| conditions::is_true(&status.conditions, s)).collect(),
    };
    let waiting = match (&view, checkpoint) {
        (Some(view), _) if view.waiting.is_some() => view.waiting.clone(),
        (_, Some(cp)) => Some(progress_message(cp)),
        _ => None,
    };
    let before = status.phase;
    if let Some(view) = &view {
        status.phase = view.phase.or(status.phase);
        if view.assigned_cell.is_some() {
            status.assigned_cell = view.assigned_cell.clone();
        }
        status.endpoint = view.endpoint.clone().or(status.endpoint);
        status.secrets = view.secrets.clone().or(status.secrets);
        status.database = view.database.clone().or(status.database);
        status.certificates = view.certificates.clone().or(status.certificates);
        status.route = view.route.clone().or(status.route);
    }
    if failed.is_some() {
        status.phase = Some(NamespacePhase::Failed);
    }
    status.phase = status.phase.or(Some(NamespacePhase::Pending));
    let mut conditions = conditions_for(
        &status.conditions,
        NAMESPACE_CONDITIONS,
        NAMESPACE_STEPS,
        &done,
        waiting,
        generation,
        stall.as_ref(),
    );
    if let Some(view) = &view {
        for (step, reason, message) in step_notes(view, &done, &status) {
            if done.contains(&step) {
                let note = Condition::new(step, ConditionStatus::True, reason, message, generation, super::now());
                conditions::set_condition(&mut conditions, note);
            }
        }
    }
    set_deleting(&mut conditions, deleting, generation);
    let previous = current.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    status.conditions = conditions;
    status.observed_generation = generation;
    status.workflow = checkpoint.map(workflow_status);
    apply_status(api, ns, current.as_ref(), &status).await?;
    // An event per step that became True, and when the namespace stalls.
    for type_ in NAMESPACE_STEPS {
        let was = conditions::is_true(&previous, type_);
        if let Some(c) =
            conditions::find(&status.conditions, type_).filter(|c| !was && c.status == ConditionStatus::True)
        {
            ctx.event(ns, false, &c.reason, c.message.clone()).await;
        }
    }
    if let Some(stall) = stall.as_ref().filter(|_| failed.is_none())
        && !conditions::is_true(&previous, conditions::types::STALLED)
    {
        ctx.event(ns, true, &stall.reason, stall.message.clone()).await;
    }
    if before != status.phase {
        match (&failed, status.phase) {
            (Some(stall), _) => ctx.event(ns, true, &stall.reason, stall.message.clone()).await,
            (None, Some(NamespacePhase::Ready)) => {
                let note = format!(
                    "serving at {} in cell {}",
                    status.endpoint.clone().unwrap_or_default(),
                    status.assigned_cell.clone().unwrap_or_default()
                );
                ctx.event(ns, false, "Ready", note).await
            }
            // Intermediate phases are in status; events are kept for milestones and failures.
            _ => {}
        }
    }
    Ok(())
}

/// Reason and message of each step condition that is True, from what the workflow did.
fn step_notes(
    view: &NamespaceView,
    done: &[&str],
    status: &NamespaceStatus,
) -> Vec<(&'static str, &'static str, String)> {
    let mut notes = Vec::new();
    if let Some(cell) = &view.assigned_cell {
        notes.push((CELL_SELECTED, "CellAssigned", format!("placed in cell {cell}; it stays there for life")));
    }
    if let Some(db) = &view.database {
        let secret = status.secrets.as_ref().and_then(|s| s.database_credentials.clone()).unwrap_or_default();
        let note = if db.simulated {
            ("SimulatedDatabase", "the cell names no database server; the database is simulated".to_string())
        } else {
            (
                "DatabaseCreated",
                format!(
                    "role {} owns database {} on {} ({}); credentials in Secret {secret}",
                    db.role, db.database, db.server, db.grants
                ),
            )
        };
        notes.push((DATABASE_READY, note.0, note.1));
    }
    if let Some(certs) = &view.certificates {
        let until = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
            t.as_ref().map_or_else(|| "-".to_string(), |t| t.0.to_string())
        };
        let client = match status.secrets.as_ref().and_then(|s| s.client_certificate.clone()) {
            Some(secret) => format!("client certificate issued in Secret {secret}"),
            None => "client certificates from the CA in spec.mtls.acceptedClientCA".into(),
        };
        let message = match &certs.not_after {
            Some(_) => format!(
                "server certificate signed by the cell CA, valid until {}, renewed at {}; {client}",
                until(&certs.not_after),
                until(&certs.renew_at)
            ),
            None => "simulated certificates".to_string(),
        };
        notes.push((CERTIFICATES_READY, "CertificatesIssued", message));
    }
    match &view.route {
        Some(route) => notes.push((
            INGRESS_READY,
            "RouteCreated",
            format!(
                "{} {}/{} routes {}",
                route.kind,
                route.namespace,
                route.name,
                view.endpoint.clone().unwrap_or_default()
            ),
        )),
        None if done.contains(&INGRESS_READY) => notes.push((INGRESS_READY, "RouteCreated", "simulated route".into())),
        None => {}
    }
    if let Some(verified) = &view.connected {
        notes.push((CONNECTED, "HandshakeVerified", verified.clone()));
    }
    notes
}

/// A stall for a namespace no cell can take now, unless a cell that could is still being
/// provisioned (then it is only waiting).
fn no_eligible_cell(
    view: Option<&NamespaceView>,
    checkpoint: Option<&cellplane_workflows::Checkpoint>,
) -> Option<Stall> {
    let refusals = match (view.and_then(|v| v.waiting.clone()), checkpoint) {
        (Some(waiting), _) => waiting,
        (None, Some(cp)) if cp.step.as_deref() == Some("select-cell") => cp.last_error.clone()?,
        _ => return None,
    };
    if view.is_some_and(|v| v.assigned_cell.is_some()) || refusals.contains("not provisioned yet") {
        return None;
    }
    Some(Stall { reason: "NoEligibleCell".into(), message: refusals })
}

/// Teardown: the workflow releases everything; the finalizer goes when it has finished.
async fn cleanup(
    ns: &Namespace,
    tenant: &TenantId,
    ctx: &Context,
    api: &Api<Namespace>,
) -> Result<Action, ReconcileError> {
    let Some(uid) = ns.uid() else { return Ok(Action::await_change()) };
    let id = ids::namespace(tenant, &uid);
    let Some(checkpoint) = ctx.engine.checkpoint(&id).await? else {
        remove_finalizer(api, ns).await?;
        return Ok(Action::await_change());
    };
    match checkpoint.state {
        State::Completed | State::Cancelled => {
            ctx.event(ns, false, "Deleted", "database, certificates, route and capacity released".into()).await;
            remove_finalizer(api, ns).await?;
            return Ok(Action::await_change());
        }
        State::Failed | State::NonDeterministic => {
            let message = format!(
                "the provisioning workflow ended {} ({}); retry it with `cellplane workflows retry {id}`",
                checkpoint.state,
                checkpoint.reason.clone().unwrap_or_default()
            );
            write_status(ns, ctx, api, Some(&checkpoint), None, Some(("WorkflowFailed", message))).await?;
            return Ok(Action::await_change());
        }
        _ => {}
    }
    let placed = ns.status.as_ref().and_then(|s| s.assigned_cell.as_ref()).is_some()
        || view::<NamespaceView>(Some(&checkpoint)).is_some_and(|v| v.assigned_cell.is_some());
    // Only while choosing a cell does the workflow hold nothing that teardown must release.
    let choosing = matches!(checkpoint.step.as_deref(), None | Some("select-cell"));
    if placed || !choosing {
        ctx.signal_once(&id, DELETE, "delete", &()).await?;
    } else {
        // Still looking for a cell: nothing to release, stop looking.
        match ctx.engine.cancel(&id).await {
            Ok(()) | Err(cellplane_workflows::Error::WrongState { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let blocker = ("TearingDown", progress_message(&checkpoint));
    write_status(ns, ctx, api, Some(&checkpoint), None, Some(blocker)).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(300)))
}
