//! Namespace provisioning: place the tenant in a cell (reserving capacity through the cell's
//! entity workflow), create its database, certificates and ingress route there, probe the
//! endpoint, then hold until deletion and tear everything down again.

use std::sync::Arc;
use std::time::Duration;

use cellplane_workflows::{Ctx, RetryPolicy, StepError, WfError, Workflow};
use serde::{Deserialize, Serialize};

use super::cell::{COMMAND, CellCommand, ReserveReply};
use super::fleet::NamespaceView;
use super::placement::{self, Applicant, Candidate, Refusals};
use super::{FlowDeps, call_retry, ids, request, send_from_step};
use crate::api::common::time_ms;
use crate::api::namespace::{
    CELL_SELECTED, CERTIFICATES_READY, CONNECTED, DATABASE_READY, INGRESS_READY, NamespacePhase, NamespaceSecrets,
    NamespaceSpec, TenantId,
};
use crate::api::namespace::{CertificatesStatus, DatabaseStatus, RouteStatus};
use crate::cell::{CellContext, CellError, Certificates, DatabaseGrant, Route, Tenant};

/// The signal that starts teardown.
pub const DELETE: &str = "delete";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamespaceInput {
    pub tenant: TenantId,
    pub uid: String,
    pub spec: NamespaceSpec,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamespaceOutput {
    pub cell: String,
}

pub struct NamespaceWorkflow {
    pub deps: Arc<FlowDeps>,
}

/// Waiting for a cell to have room: patient, unbounded, and visible in status as attempts.
fn placement_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(250),
        backoff_coefficient: 1.5,
        max_interval: Duration::from_secs(15),
        max_attempts: 0,
        jitter: 0.2,
        non_retryable: Vec::new(),
    }
}

impl Workflow for NamespaceWorkflow {
    const NAME: &'static str = "namespace";
    type Input = NamespaceInput;
    type Output = NamespaceOutput;

    async fn run(self: Arc<Self>, ctx: Ctx, input: NamespaceInput) -> Result<NamespaceOutput, WfError> {
        let deps = &self.deps;
        let mut view = NamespaceView { phase: Some(NamespacePhase::Pending), ..NamespaceView::default() };
        ctx.publish(&view).await?;
        let (candidate, cell) = place(&ctx, deps, &input, &mut view).await?;
        let endpoint = placement::render_hostname(
            &input.spec.endpoint.hostname_template,
            &input.tenant,
            &cell.name,
            &cell.region,
            &cell.ingress.domain,
        );
        let tenant = Tenant {
            id: input.tenant.clone(),
            uid: input.uid.clone(),
            mtls: input.spec.mtls.clone(),
            endpoint: endpoint.clone(),
        };
        view.phase = Some(NamespacePhase::Provisioning);
        view.assigned_cell = Some(cell.name.clone());
        view.endpoint = Some(endpoint);
        view.done = vec![CELL_SELECTED.into()];
        view.waiting = None;
        ctx.publish(&view).await?;

        let services = &deps.services;
        let (c, t) = (&cell, &tenant);
        let grant = ctx
            .step("create-database")
            .retry(call_retry())
            .run(|key| async move { services.create_database(&key.digest(), c, t).await.map_err(CellError::into_step) })
            .await?;
        // Secret names appear in status as soon as the Secrets exist.
        let mut secrets =
            NamespaceSecrets { database_credentials: Some(grant.secret.clone()), ..NamespaceSecrets::default() };
        view.done.push(DATABASE_READY.into());
        view.database = Some(database_status(&grant));
        view.secrets = Some(secrets.clone());
        ctx.publish(&view).await?;
        let mut certificates =
            ctx.step("issue-certificates")
                .retry(call_retry())
                .run(|key| async move {
                    services.issue_certificates(&key.digest(), c, t).await.map_err(CellError::into_step)
                })
                .await?;
        secrets.server_certificate = Some(certificates.server_secret.clone());
        secrets.client_certificate = certificates.client_secret.clone();
        secrets.client_ca = Some(certificates.client_ca_secret.clone());
        view.done.push(CERTIFICATES_READY.into());
        view.certificates = Some(certificates_status(&certificates));
        view.secrets = Some(secrets);
        ctx.publish(&view).await?;
        let route = ctx
            .step("create-route")
            .retry(call_retry())
            .run(|key| async move { services.create_route(&key.digest(), c, t).await.map_err(CellError::into_step) })
            .await?;
        view.done.push(INGRESS_READY.into());
        view.route = route_status(&route);
        ctx.publish(&view).await?;
        let verified = ctx
            .step("probe-endpoint")
            .retry(call_retry())
            .run(|_| async move { services.probe(c, t).await.map_err(CellError::into_step) })
            .await?;
        view.done.push(CONNECTED.into());
        view.phase = Some(NamespacePhase::Ready);
        view.connected = Some(verified);
        ctx.publish(&view).await?;

        // Serve until deletion, renewing the certificates before they expire: a durable timer,
        // so a renewal due while the operator was down happens as soon as it is back.
        let mut renewal = 0;
        loop {
            let wait = match certificates.renew_at_ms {
                Some(at) => Some(until(at, ctx.now().await?)),
                None => None,
            };
            if ctx.wait_signal::<()>(DELETE, wait).await?.is_some() {
                break;
            }
            renewal += 1;
            certificates = ctx
                .step(format!("renew-certificates-{renewal}"))
                .retry(call_retry())
                .run(|key| async move {
                    services.issue_certificates(&key.digest(), c, t).await.map_err(CellError::into_step)
                })
                .await?;
            ctx.step(format!("update-route-{renewal}"))
                .retry(call_retry())
                .run(
                    |key| async move { services.create_route(&key.digest(), c, t).await.map_err(CellError::into_step) },
                )
                .await?;
            let verified = ctx
                .step(format!("probe-endpoint-{renewal}"))
                .retry(call_retry())
                .run(|_| async move { services.probe(c, t).await.map_err(CellError::into_step) })
                .await?;
            view.certificates = Some(certificates_status(&certificates));
            view.connected = Some(verified);
            ctx.publish(&view).await?;
        }
        view.phase = Some(NamespacePhase::Deleting);
        ctx.publish(&view).await?;
        ctx.step("delete-route")
            .retry(call_retry())
            .run(|_| async move { services.delete_route(c, t).await.map_err(CellError::into_step) })
            .await?;
        ctx.step("remove-certificates")
            .retry(call_retry())
            .run(|_| async move { services.remove_certificates(c, t).await.map_err(CellError::into_step) })
            .await?;
        ctx.step("drop-database")
            .retry(call_retry())
            .run(|_| async move { services.drop_database(c, t).await.map_err(CellError::into_step) })
            .await?;
        let release = CellCommand::Release { namespace: input.tenant.to_string() };
        send_from_step(&ctx, deps, "release-capacity", &candidate.workflow_id, COMMAND, &release).await?;
        view.done.clear();
        ctx.publish(&view).await?;
        Ok(NamespaceOutput { cell: cell.name })
    }
}

/// How long from `now` until `at_ms`.
fn until(at_ms: i64, now: std::time::SystemTime) -> Duration {
    let now_ms = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    Duration::from_millis(u64::try_from(at_ms - now_ms).unwrap_or(0))
}

fn database_status(grant: &DatabaseGrant) -> DatabaseStatus {
    DatabaseStatus {
        server: grant.server.clone(),
        database: grant.database.clone(),
        role: grant.role.clone(),
        grants: grant.privileges.clone(),
        simulated: grant.simulated,
    }
}

fn certificates_status(certificates: &Certificates) -> CertificatesStatus {
    CertificatesStatus {
        not_after: certificates.not_after_ms.and_then(time_ms),
        renew_at: certificates.renew_at_ms.and_then(time_ms),
    }
}

fn route_status(route: &Route) -> Option<RouteStatus> {
    (!route.kind.is_empty()).then(|| RouteStatus {
        kind: route.kind.clone(),
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    })
}

/// Tries the eligible cells, least loaded first, until one accepts the reservation; waits
/// (durably) and tries again while none can.
async fn place(
    ctx: &Ctx,
    deps: &FlowDeps,
    input: &NamespaceInput,
    view: &mut NamespaceView,
) -> Result<(Candidate, CellContext), WfError> {
    let units = placement::units(input.spec.placement.tier);
    let id = ctx.id().to_string();
    loop {
        let fleet = &deps.fleet;
        let applicant = Applicant {
            id: input.tenant.to_string(),
            region: &input.spec.region,
            placement: &input.spec.placement,
            synthetic: input.spec.synthetic,
        };
        let applicant = &applicant;
        let candidates: Vec<Candidate> = ctx
            .step("select-cell")
            .retry(placement_retry())
            .run(|_| async move {
                placement::rank(&fleet.cells(), applicant).map_err(|refusals| {
                    let message = format!("no eligible cell: {refusals}");
                    // A cell on its way is an expected wait, not a failure.
                    match refusals.contains(placement::NOT_PROVISIONED) {
                        true => StepError::waiting(message),
                        false => StepError::of_kind("no-eligible-cell", message),
                    }
                })
            })
            .await?;
        let mut refusals = Refusals::default();
        for candidate in candidates {
            let reserve = |request_id| CellCommand::Reserve {
                namespace: input.tenant.to_string(),
                units,
                reply_to: id.clone(),
                request_id,
            };
            let Some(request_id) = request(ctx, deps, "reserve-capacity", &candidate.workflow_id, reserve).await?
            else {
                refusals.add(&candidate.cell, "being deleted".into());
                continue;
            };
            let reply: Option<ReserveReply> = ctx.wait_signal(&ids::reply(&request_id), None).await?;
            match reply {
                Some(ReserveReply::Accepted { cell }) => return Ok((candidate, *cell)),
                Some(ReserveReply::Refused { reason }) => refusals.add(&candidate.cell, reason),
                None => refusals.add(&candidate.cell, "no answer".into()),
            }
        }
        view.waiting = Some(format!("every eligible cell refused: {refusals}"));
        ctx.publish(view).await?;
        ctx.sleep(Duration::from_secs(5)).await?;
    }
}
