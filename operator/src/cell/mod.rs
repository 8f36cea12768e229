//! What is done inside a cell for a tenant namespace: its database, certificates, ingress
//! route and a connectivity probe, behind [`CellServices`]. `sim` simulates them; the real
//! implementation (PostgreSQL roles, X.509 certificates, routes, an mTLS probe) replaces it.
//!
//! Every create takes the calling step's idempotency key and is safe to repeat; every remove
//! treats what is already gone as removed.

pub mod sim;

use async_trait::async_trait;
use cellplane_workflows::StepError;
use serde::{Deserialize, Serialize};

use crate::api::cell::{DatabaseSpec, IngressSpec};
use crate::api::namespace::MtlsSpec;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    /// Retrying can help (a connection refused, DNS not yet propagated).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (an invalid client CA, a name that cannot be made safe).
    #[error("{0}")]
    Invalid(String),
}

impl CellError {
    /// The step error a workflow sees: transient errors retry, the others end the step.
    pub fn into_step(self) -> StepError {
        match self {
            CellError::Transient(message) => StepError::of_kind("cell-transient", message),
            CellError::Invalid(message) => StepError { kind: "invalid".into(), message, retryable: false },
        }
    }
}

/// The cell a namespace is placed in, as the in-cell steps need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellContext {
    pub name: String,
    pub region: String,
    pub ingress: IngressSpec,
    pub database: Option<DatabaseSpec>,
}

/// The tenant being provisioned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The Namespace's name: a validated DNS label.
    pub name: String,
    pub uid: String,
    pub mtls: MtlsSpec,
    /// The endpoint hostname rendered from the hostname template.
    pub endpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseGrant {
    pub role: String,
    pub database: String,
    /// Secret holding the tenant's database credentials.
    pub secret: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    pub server_secret: String,
    pub client_ca_secret: String,
    pub client_secret: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
}

#[async_trait]
pub trait CellServices: Send + Sync + 'static {
    async fn create_database(&self, key: &str, cell: &CellContext, tenant: &Tenant)
    -> Result<DatabaseGrant, CellError>;
    async fn drop_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    async fn issue_certificates(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<Certificates, CellError>;
    async fn remove_certificates(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    async fn create_route(&self, key: &str, cell: &CellContext, tenant: &Tenant) -> Result<Route, CellError>;
    async fn delete_route(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    /// Connects to the tenant endpoint with mutual TLS; Ok once a handshake succeeded.
    async fn probe(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;
}
