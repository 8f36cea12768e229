//! The control-plane workflows, written as happy-path code on the durable engine:
//! [`cell::CellWorkflow`] (one long-lived entity workflow per cell),
//! [`namespace::NamespaceWorkflow`] (placement and in-cell provisioning of a tenant) and
//! [`ring::RingRollout`] (a version rolled out to a ring's cells batch by batch).
//!
//! Workflows talk to each other by signals: a request carries the requester's workflow id and
//! a request id, and the reply is the signal `reply:<request id>` sent back to the requester.
//! What they have done is published to the [`Fleet`], which the controllers mirror into status.

pub mod cell;
pub mod fleet;
pub mod gates;
pub mod namespace;
pub mod placement;
pub mod ring;

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use cellplane_workflows::{Ctx, Engine, EngineBuilder, Error as EngineError, RetryPolicy, StepError, WfError};
use serde::Serialize;

use crate::cell::CellServices;
use crate::cloud::{CloudProvider, WaitPolicy};
pub use fleet::Fleet;

/// What the workflows call out to.
pub struct FlowDeps {
    pub cloud: Arc<dyn CloudProvider>,
    pub services: Arc<dyn CellServices>,
    pub fleet: Arc<Fleet>,
    pub gates: gates::Gates,
    pub signals: Signaller,
    /// How long cloud creates and deletes are polled for before their step retries.
    pub wait: WaitPolicy,
}

impl FlowDeps {
    /// `prometheus`: the address of the Prometheus that gates without one query.
    pub fn new(
        cloud: Arc<dyn CloudProvider>,
        services: Arc<dyn CellServices>,
        fleet: Arc<Fleet>,
        prometheus: Option<String>,
    ) -> Arc<Self> {
        let gates = gates::Gates::new(fleet.clone(), prometheus);
        Arc::new(FlowDeps { cloud, services, fleet, gates, signals: Signaller::default(), wait: WaitPolicy::cloud() })
    }
}

/// Registers every control-plane workflow with an engine being built.
pub fn register(builder: EngineBuilder, deps: &Arc<FlowDeps>) -> EngineBuilder {
    builder
        .register(cell::CellWorkflow { deps: deps.clone() })
        .register(namespace::NamespaceWorkflow { deps: deps.clone() })
        .register(ring::RingRollout { deps: deps.clone() })
}

/// Lets workflow steps signal other workflows through the engine that runs them (bound once
/// the engine is built; weak, so the engine's workflows do not keep it alive).
#[derive(Clone, Default)]
pub struct Signaller(Arc<OnceLock<Weak<Engine>>>);

impl Signaller {
    pub fn bind(&self, engine: &Arc<Engine>) {
        let _ = self.0.set(Arc::downgrade(engine));
    }

    pub async fn send<T: Serialize>(&self, id: &str, name: &str, payload: &T) -> Result<(), EngineError> {
        let engine = self.0.get().and_then(Weak::upgrade).ok_or(EngineError::ShuttingDown)?;
        engine.signal(id, name, payload).await
    }
}

/// The kinds of object a workflow belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    Cell,
    Namespace,
    Ring,
}

/// Workflow ids: `cell/NAME/UID`, `ns/ACCOUNT/NAME/UID`, `ring/NAME/UID/VERSION`. Names and
/// accounts are DNS labels (validated by the controllers) so `/` separates unambiguously.
pub mod ids {
    use super::Owner;
    use crate::api::namespace::TenantId;

    pub fn cell(name: &str, uid: &str) -> String {
        format!("cell/{name}/{uid}")
    }

    pub fn namespace(tenant: &TenantId, uid: &str) -> String {
        format!("ns/{}/{}/{uid}", tenant.account, tenant.name)
    }

    pub fn ring(name: &str, uid: &str, version: &str) -> String {
        format!("ring/{name}/{uid}/{version}")
    }

    /// The object a workflow id belongs to: its kind, its Kubernetes namespace (for namespaced
    /// kinds) and its name.
    pub fn owner(id: &str) -> Option<(Owner, Option<&str>, &str)> {
        let mut parts = id.split('/');
        match parts.next()? {
            "cell" => Some((Owner::Cell, None, parts.next()?)),
            "ring" => Some((Owner::Ring, None, parts.next()?)),
            "ns" => {
                let account = parts.next()?;
                Some((Owner::Namespace, Some(account), parts.next()?))
            }
            _ => None,
        }
    }

    pub fn reply(request_id: &str) -> String {
        format!("reply:{request_id}")
    }
}

/// Retries for cloud and cell calls: quick at first, patient later, bounded.
pub fn call_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(200),
        backoff_coefficient: 2.0,
        max_interval: Duration::from_secs(30),
        max_attempts: 25,
        jitter: 0.2,
        non_retryable: Vec::new(),
    }
}

/// Sends a signal from a step, once per step (a replayed step does not send again). Returns
/// false when the target has finished or does not exist.
pub(crate) async fn send_from_step<T: Serialize + Sync>(
    ctx: &Ctx,
    deps: &FlowDeps,
    step: &str,
    target: &str,
    name: &str,
    payload: &T,
) -> Result<bool, WfError> {
    ctx.step(step)
        .retry(call_retry())
        .run(|_key| async move {
            match deps.signals.send(target, name, payload).await {
                Ok(()) => Ok(true),
                Err(EngineError::NotFound(_) | EngineError::WrongState { .. }) => Ok(false),
                Err(e) => Err(StepError::transient(e)),
            }
        })
        .await
}

/// Sends a request that expects a reply; returns its request id (None if the target is gone).
pub(crate) async fn request<T: Serialize + Sync>(
    ctx: &Ctx,
    deps: &FlowDeps,
    step: &str,
    target: &str,
    make: impl Fn(String) -> T,
) -> Result<Option<String>, WfError> {
    ctx.step(step)
        .retry(call_retry())
        .run(|key| {
            let request_id = key.to_string();
            let payload = make(request_id.clone());
            async move {
                match deps.signals.send(target, "command", &payload).await {
                    Ok(()) => Ok(Some(request_id)),
                    Err(EngineError::WrongState { .. }) => Ok(None),
                    // Not created yet (the cell's controller has not started it): retry.
                    Err(e) => Err(StepError::transient(e)),
                }
            }
        })
        .await
}
