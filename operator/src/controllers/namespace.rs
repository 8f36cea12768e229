//! The Namespace controller: one provisioning workflow per namespace, mirrored into status.

use std::sync::Arc;

use cellplane_workflows::{Checkpoint, State};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::driver::{Command, Desired, Reconciled, Report, Run, Stage, Teardown, Work, World};
use super::error::ReconcileError;
use super::events::Note;
use super::runner;
use super::status::{Blocker, Steps, conditions_for, progress_message, set_deleting, steps_done, workflow_status};
use crate::api::common::is_dns_label;
use crate::api::conditions::{self, Condition, ConditionStatus, Stall};
use crate::api::namespace::{
    CELL_SELECTED, CERTIFICATES_READY, CONNECTED, DATABASE_READY, INGRESS_READY, NAMESPACE_CONDITIONS, NAMESPACE_STEPS,
    Namespace, NamespacePhase, NamespaceStatus, TenantId,
};
use crate::cell::pki;
use crate::flows::fleet::{NamespaceView, view};
use crate::flows::namespace::{DELETE, NamespaceInput, NamespaceOutput, NamespaceWorkflow};
use crate::flows::placement::render_hostname;
use crate::flows::{Owner, ids};

pub async fn run(ctx: Arc<super::Context>, shutdown: CancellationToken) {
    runner::run::<Namespace>(ctx, shutdown, &[Owner::Namespace]).await
}

type NamespaceStage<'a> = Stage<'a, NamespaceInput, NamespaceOutput>;

impl Reconciled for Namespace {
    const KIND: &'static str = "Namespace";
    type Flow = NamespaceWorkflow;
    type Status = NamespaceStatus;

    fn api(&self, client: Client) -> Result<Api<Self>, ReconcileError> {
        Ok(Api::namespaced(client, &tenant_of(self)?.account))
    }

    fn owned_status(&self) -> Option<NamespaceStatus> {
        self.status.clone()
    }

    fn desire(&self, world: &World) -> Result<Desired<NamespaceInput>, ReconcileError> {
        let tenant = tenant_of(self)?;
        if let Err(stall) = validate(self, &tenant, world) {
            return Ok(Work::Invalid(stall).into());
        }
        let uid = self.uid().ok_or(ReconcileError::MissingField("metadata.uid"))?;
        let id = ids::namespace(&tenant, &uid);
        Ok(Work::Run(Run::new(id, NamespaceInput { tenant, uid, spec: self.spec.clone() })).into())
    }

    fn report(&self, stage: &NamespaceStage<'_>, world: &World) -> Report<NamespaceStatus> {
        let assessment = Assessment::of(stage);
        let status = status(self, stage, &assessment, world);
        let events = events(self.status.as_ref(), &status, &assessment);
        Report { status, events }
    }

    fn teardown_workflow(&self) -> Option<String> {
        Some(ids::namespace(&TenantId::of(self)?, &self.uid()?))
    }

    fn teardown(
        &self,
        checkpoint: Option<&Checkpoint>,
        _world: &World,
    ) -> Result<Teardown<NamespaceInput>, ReconcileError> {
        teardown(self, checkpoint)
    }
}

fn tenant_of(ns: &Namespace) -> Result<TenantId, ReconcileError> {
    TenantId::of(ns).ok_or(ReconcileError::MissingField("metadata.namespace"))
}

/// What the schema should have refused, checked again (names reach hostnames and SQL), and
/// what it cannot check: a supplied client CA must parse, be a CA and be valid now.
fn validate(ns: &Namespace, tenant: &TenantId, world: &World) -> Result<(), Stall> {
    validate_spec(ns, tenant).map_err(|message| Stall { reason: "InvalidSpec".into(), message })?;
    if ns.spec.synthetic && tenant.account != world.namespace {
        let message =
            format!("spec.synthetic: only the operator's own tenants (in namespace {}) are synthetic", world.namespace);
        return Err(Stall { reason: "InvalidSpec".into(), message });
    }
    if let Some(pem) = &ns.spec.mtls.accepted_client_ca
        && let Err(problem) = pki::validate_client_ca(pem, world.system_time())
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

/// What the workflow has done and why it stopped, read once for the status and its Events.
struct Assessment {
    view: Option<NamespaceView>,
    /// A stop that needs a person: an invalid spec or a failed workflow.
    failed: Option<Stall>,
    /// Why progress stopped: `failed`, or a wait that goes on by itself once resolved.
    stall: Option<Stall>,
}

impl Assessment {
    fn of(stage: &NamespaceStage<'_>) -> Assessment {
        let checkpoint = stage.checkpoint();
        let view = view::<NamespaceView>(checkpoint);
        let failed = stage.failure();
        // A permission the operator lacks, or no cell that can take the namespace (and none on
        // its way to): stalled, but not failed; it goes on once the permission is granted or a
        // cell has room again.
        let waiting = failed.is_none().then(|| stage.blocked().or_else(|| no_eligible_cell(view.as_ref(), checkpoint)));
        let stall = failed.clone().or(waiting.flatten());
        Assessment { view, failed, stall }
    }
}

fn status(ns: &Namespace, stage: &NamespaceStage<'_>, assessment: &Assessment, world: &World) -> NamespaceStatus {
    let Assessment { view, failed, stall } = assessment;
    let checkpoint = stage.checkpoint();
    let mut status = ns.status.clone().unwrap_or_default();
    let generation = ns.metadata.generation;
    let done = steps_done(NAMESPACE_STEPS, view.as_ref().map(|v| v.done.as_slice()), &status.conditions);
    let waiting = match (view, checkpoint) {
        (Some(view), _) if view.waiting.is_some() => view.waiting.clone(),
        (_, Some(cp)) => Some(progress_message(cp)),
        _ => None,
    };
    if let Some(view) = view {
        mirror_view(&mut status, view);
    }
    if failed.is_some() {
        status.phase = Some(NamespacePhase::Failed);
    }
    status.phase = status.phase.or(Some(NamespacePhase::Pending));
    let now = world.time();
    let steps = Steps {
        all: NAMESPACE_CONDITIONS,
        steps: NAMESPACE_STEPS,
        done: &done,
        waiting,
        generation,
        stall: stall.as_ref(),
    };
    let mut conditions = conditions_for(&status.conditions, steps, &now);
    if let Some(view) = view {
        for (step, reason, message) in step_notes(view, &done, &status) {
            if done.contains(&step) {
                let note = Condition::new(step, ConditionStatus::True, reason, message, generation, now.clone());
                conditions::set_condition(&mut conditions, note);
            }
        }
    }
    set_deleting(&mut conditions, stage.blocker(), generation, &now);
    status.conditions = conditions;
    status.observed_generation = generation;
    status.workflow = checkpoint.map(workflow_status);
    status
}

/// What the workflow published, over what the status had.
fn mirror_view(status: &mut NamespaceStatus, view: &NamespaceView) {
    status.phase = view.phase.or(status.phase);
    if view.assigned_cell.is_some() {
        status.assigned_cell = view.assigned_cell.clone();
    }
    status.endpoint = view.endpoint.clone().or(status.endpoint.take());
    status.secrets = view.secrets.clone().or(status.secrets.take());
    status.database = view.database.clone().or(status.database.take());
    status.certificates = view.certificates.clone().or(status.certificates.take());
    status.route = view.route.clone().or(status.route.take());
}

/// An Event when the namespace stalls, fails or becomes Ready. Each step's progress is in its
/// condition: an Event per step would cost the API server a write per step of every tenant.
fn events(before: Option<&NamespaceStatus>, after: &NamespaceStatus, assessment: &Assessment) -> Vec<Note> {
    let previous = before.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut notes = Vec::new();
    if let Some(stall) = assessment.stall.as_ref().filter(|_| assessment.failed.is_none())
        && !conditions::is_true(previous, conditions::types::STALLED)
    {
        notes.push(Note::warning(stall.reason.clone(), stall.message.clone()));
    }
    if before.and_then(|s| s.phase) != after.phase {
        match (&assessment.failed, after.phase) {
            (Some(stall), _) => notes.push(Note::warning(stall.reason.clone(), stall.message.clone())),
            (None, Some(NamespacePhase::Ready)) => {
                let note = format!(
                    "serving at {} in cell {}",
                    after.endpoint.clone().unwrap_or_default(),
                    after.assigned_cell.clone().unwrap_or_default()
                );
                notes.push(Note::normal("Ready", note));
            }
            // Intermediate phases are in status; events are kept for milestones and failures.
            _ => {}
        }
    }
    notes
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
fn no_eligible_cell(view: Option<&NamespaceView>, checkpoint: Option<&Checkpoint>) -> Option<Stall> {
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
fn teardown(ns: &Namespace, checkpoint: Option<&Checkpoint>) -> Result<Teardown<NamespaceInput>, ReconcileError> {
    let Some(checkpoint) = checkpoint else {
        return Ok(Teardown::Finished { commands: Vec::new(), release: None, note: None });
    };
    match checkpoint.state {
        State::Completed | State::Cancelled => {
            let note = Note::normal("Deleted", "database, certificates, route and capacity released");
            return Ok(Teardown::Finished { commands: Vec::new(), release: None, note: Some(note) });
        }
        State::Failed | State::NonDeterministic => {
            let message = format!(
                "the provisioning workflow ended {} ({}); retry it with `cellplane workflows retry {}`",
                checkpoint.state,
                checkpoint.reason.clone().unwrap_or_default(),
                checkpoint.id
            );
            return Ok(Teardown::Blocked(Blocker::new("WorkflowFailed", message)));
        }
        _ => {}
    }
    let placed = ns.status.as_ref().and_then(|s| s.assigned_cell.as_ref()).is_some()
        || view::<NamespaceView>(Some(checkpoint)).is_some_and(|v| v.assigned_cell.is_some());
    // Only while choosing a cell does the workflow hold nothing that teardown must release.
    let choosing = matches!(checkpoint.step.as_deref(), None | Some("select-cell"));
    let command = if placed || !choosing {
        Command::signal(DELETE, "delete", &())?
    } else {
        // Still looking for a cell: nothing to release, stop looking.
        Command::Cancel
    };
    let blocker = Blocker::new("TearingDown", progress_message(checkpoint));
    Ok(Teardown::Continuing { commands: vec![command], blocker })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{from_yaml, world};

    /// A tenant `orders` of account `acme`, on first sight.
    const ORDERS: &str = r#"
apiVersion: cellplane.io/v1alpha1
kind: Namespace
metadata: {name: orders, namespace: acme, uid: 0b5c, generation: 1}
spec:
  region: eu-west-1
  mtls: {issueClientCertificate: true}
"#;

    /// Placed in cell `eu-1`; the database step waits for a Secret permission.
    const WAITING_FOR_A_PERMISSION: &str = r#"
id: ns/acme/orders/0b5c
workflow: namespace-provisioning
version: 1
run: 1
state: Sleeping
step: create-database
stepSeq: 3
attempt: 4
lastError: "missing permission: create secrets in namespace acme"
createdAt: 1750000000000
updatedAt: 1750000060000
published:
  phase: Provisioning
  done: [CellSelected]
  assignedCell: eu-1
"#;

    /// Still choosing a cell: every cell refused it.
    const NO_ROOM: &str = r#"
id: ns/acme/orders/0b5c
workflow: namespace-provisioning
version: 1
run: 1
state: Sleeping
step: select-cell
attempt: 2
lastError: "no cell can take orders.acme: eu-1 is full (10 of 10 namespaces)"
createdAt: 1750000000000
updatedAt: 1750000060000
"#;

    fn orders(edit: impl FnOnce(&mut Namespace)) -> Namespace {
        let mut ns: Namespace = from_yaml(ORDERS);
        edit(&mut ns);
        ns
    }

    fn running<'a>(run: &'a Run<NamespaceInput>, checkpoint: &'a Checkpoint) -> NamespaceStage<'a> {
        Stage::Running { run, checkpoint: Some(checkpoint), output: None }
    }

    fn run_of(ns: &Namespace) -> Run<NamespaceInput> {
        match ns.desire(&world(&[], &[])).map(|d| d.work) {
            Ok(Work::Run(run)) => run,
            _ => panic!("{} does not run", ns.name_any()),
        }
    }

    fn invalid(ns: &Namespace) -> Stall {
        match ns.desire(&world(&[], &[])).map(|d| d.work) {
            Ok(Work::Invalid(stall)) => stall,
            _ => panic!("{} is not refused", ns.name_any()),
        }
    }

    fn condition<'a>(status: &'a NamespaceStatus, type_: &str) -> (ConditionStatus, &'a str, &'a str) {
        let c = conditions::find(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status, c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn a_valid_namespace_runs_one_workflow_named_by_its_account_name_and_uid() {
        let run = run_of(&orders(|_| {}));
        assert_eq!(run.id, "ns/acme/orders/0b5c");
        assert_eq!(run.input.tenant.to_string(), "orders.acme");
        assert!(run.hold.is_none() && run.supersedes.is_none() && run.announce.is_none());
    }

    #[test]
    fn a_spec_that_cannot_name_an_endpoint_or_a_database_fails_saying_why() {
        let stall = invalid(&orders(|ns| ns.spec.region = "EU_West".into()));
        assert_eq!(
            (stall.reason.as_str(), stall.message.as_str()),
            ("InvalidSpec", r#"spec.region "EU_West" must be a DNS label"#)
        );
        let stall = invalid(&orders(|ns| ns.spec.endpoint.hostname_template = "{namespace}.example.com".into()));
        assert!(stall.message.contains("must contain {namespace} and {account}"), "{}", stall.message);
        let stall = invalid(&orders(|ns| ns.spec.mtls.issue_client_certificate = None));
        assert!(stall.message.starts_with("spec.mtls: set exactly one"), "{}", stall.message);

        let ns = orders(|ns| ns.spec.region = "EU_West".into());
        let Report { status, events } = ns.report(&Stage::Invalid(&invalid(&ns)), &world(&[], &[]));
        assert_eq!(status.phase, Some(NamespacePhase::Failed));
        assert_eq!(condition(&status, "Stalled").0, ConditionStatus::True);
        assert_eq!(condition(&status, "Ready").0, ConditionStatus::False);
        assert_eq!(condition(&status, CELL_SELECTED).1, "InvalidSpec", "the first step names the problem");
        assert_eq!(events, [Note::warning("InvalidSpec", r#"spec.region "EU_West" must be a DNS label"#)]);
    }

    #[test]
    fn only_the_operators_own_namespace_holds_synthetic_tenants() {
        let stall = invalid(&orders(|ns| ns.spec.synthetic = true));
        assert!(stall.message.contains("only the operator's own tenants (in namespace cellplane-system)"));
        let own = orders(|ns| {
            ns.spec.synthetic = true;
            ns.metadata.namespace = Some("cellplane-system".into());
        });
        run_of(&own);
    }

    #[test]
    fn a_step_waiting_for_a_permission_is_stalled_and_named_but_not_failed() {
        let ns = orders(|_| {});
        let (run, checkpoint) = (run_of(&ns), from_yaml::<Checkpoint>(WAITING_FOR_A_PERMISSION));
        let Report { status, events } = ns.report(&running(&run, &checkpoint), &world(&[], &[]));
        assert_eq!(status.phase, Some(NamespacePhase::Provisioning), "waiting, not failed");
        assert_eq!(status.assigned_cell.as_deref(), Some("eu-1"));
        let (stalled, reason, message) = condition(&status, "Stalled");
        assert_eq!((stalled, reason), (ConditionStatus::True, "MissingPermission"));
        assert!(message.contains("step create-database waits for a permission"), "{message}");
        assert!(message.contains("create secrets in namespace acme"), "{message}");
        assert_eq!(condition(&status, DATABASE_READY).0, ConditionStatus::False);
        assert_eq!(condition(&status, CELL_SELECTED).1, "CellAssigned");
        let reasons: Vec<(bool, &str)> = events.iter().map(|e| (e.warning, e.reason.as_str())).collect();
        assert_eq!(reasons, [(true, "MissingPermission")], "the stall, not the steps done");

        // Reported again, nothing new is announced.
        let again = Namespace { status: Some(status), ..ns };
        assert!(again.report(&running(&run, &checkpoint), &world(&[], &[])).events.is_empty());
    }

    #[test]
    fn no_cell_with_room_stalls_naming_the_refusals_unless_a_cell_is_on_its_way() {
        let ns = orders(|_| {});
        let (run, checkpoint) = (run_of(&ns), from_yaml::<Checkpoint>(NO_ROOM));
        let status = ns.report(&running(&run, &checkpoint), &world(&[], &[])).status;
        let (stalled, reason, message) = condition(&status, "Stalled");
        assert_eq!((stalled, reason), (ConditionStatus::True, "NoEligibleCell"));
        assert!(message.contains("eu-1 is full (10 of 10 namespaces)"), "{message}");
        assert_eq!(status.phase, Some(NamespacePhase::Pending));

        let mut provisioning = checkpoint.clone();
        provisioning.last_error = Some("no cell can take orders.acme: eu-2 is not provisioned yet".into());
        let status = ns.report(&running(&run, &provisioning), &world(&[], &[])).status;
        assert_eq!(condition(&status, "Stalled").0, ConditionStatus::False, "a cell is coming");
        assert_eq!(condition(&status, "Reconciling").0, ConditionStatus::True);
    }

    #[test]
    fn teardown_stops_a_search_releases_a_placed_tenant_and_names_a_failed_workflow() {
        let ns = orders(|_| {});
        let choosing: Checkpoint = from_yaml(NO_ROOM);
        let placed: Checkpoint = from_yaml(WAITING_FOR_A_PERMISSION);
        match teardown(&ns, Some(&choosing)).unwrap_or_else(|e| panic!("{e}")) {
            Teardown::Continuing { commands, blocker } => {
                assert!(matches!(commands.as_slice(), [Command::Cancel]), "nothing to release: stop looking");
                assert_eq!(blocker.reason, "TearingDown");
            }
            _ => panic!("teardown goes on"),
        }
        match teardown(&ns, Some(&placed)).unwrap_or_else(|e| panic!("{e}")) {
            Teardown::Continuing { commands, .. } => {
                assert!(matches!(commands.as_slice(), [Command::Signal { name: DELETE, .. }]), "release");
            }
            _ => panic!("teardown goes on"),
        }
        let failed = Checkpoint { state: State::Failed, reason: Some("boom".into()), ..placed.clone() };
        match teardown(&ns, Some(&failed)).unwrap_or_else(|e| panic!("{e}")) {
            Teardown::Blocked(blocker) => {
                assert_eq!(blocker.reason, "WorkflowFailed");
                assert!(
                    blocker.message.contains("cellplane workflows retry ns/acme/orders/0b5c"),
                    "{}",
                    blocker.message
                );
            }
            _ => panic!("a failed workflow blocks teardown"),
        }
        let done = Checkpoint { state: State::Completed, ..placed };
        assert!(matches!(teardown(&ns, Some(&done)), Ok(Teardown::Finished { note: Some(_), .. })));
        assert!(matches!(teardown(&ns, None), Ok(Teardown::Finished { note: None, .. })), "never started");
    }
}
