//! What is done inside a cell for a tenant namespace: its database, certificates, ingress
//! route and a connectivity check, behind [`CellServices`]. [`cluster::ClusterCellServices`]
//! does them for real (PostgreSQL roles, X.509 certificates in Secrets, Ingress or TLSRoute
//! objects, a mutual-TLS check; sim cells get real TLS front doors from
//! [`tls::SimDataPlane`]); [`sim::SimCellServices`] only records them, for the fleet benchmark.
//!
//! Every create takes the calling step's idempotency key and is safe to repeat; every remove
//! treats what is already gone as removed.

pub mod cluster;
pub mod database;
pub mod ledger;
pub mod pki;
pub mod release;
pub mod routes;
pub mod sim;
pub mod software;
pub mod tls;

use async_trait::async_trait;
pub use cellplane_cloud::MISSING_PERMISSION;
use cellplane_workflows::StepError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::cell::{DatabaseSpec, IngressSpec, Provider};
use crate::api::namespace::{MtlsSpec, TenantId};

/// Names of what the operator creates for cells and tenants, in one place.
pub mod names {
    use crate::api::namespace::TenantId;

    /// The cell CA Secret, in the operator's namespace. It contains a dot, which the names
    /// below cannot, so the two never collide.
    pub fn cell_ca(cell: &str) -> String {
        format!("{cell}.cell-ca")
    }

    /// The tenant's route in the cell's cluster and the Service it sends traffic to: a DNS
    /// label unique across accounts.
    pub fn route(tenant: &TenantId) -> String {
        tenant.unique_name("tenant-", '-', 63)
    }

    /// The endpoint's server certificate, beside the route in the operator's namespace.
    pub fn server(tenant: &TenantId) -> String {
        format!("{}-tls", route(tenant))
    }

    /// The tenant's database login, in its account's namespace.
    pub fn database(tenant: &TenantId) -> String {
        format!("{}-db", tenant.name)
    }

    /// The client CA bundle the endpoint accepts, in the account's namespace.
    pub fn client_ca(tenant: &TenantId) -> String {
        format!("{}-client-ca", tenant.name)
    }

    /// The issued client certificate, in the account's namespace.
    pub fn client(tenant: &TenantId) -> String {
        format!("{}-client-tls", tenant.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CellError {
    /// Retrying can help (a connection refused, DNS not yet propagated).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (an invalid client CA, a name that cannot be made safe).
    #[error("{0}")]
    Invalid(String),
    /// The operator's Kubernetes identity lacks a permission (RBAC); waited out until granted.
    #[error("{MISSING_PERMISSION}{0}")]
    Forbidden(String),
}

impl CellError {
    /// The step error a workflow sees: transient errors retry, the others end the step.
    pub fn into_step(self) -> StepError {
        match self {
            CellError::Transient(message) => StepError::of_kind("cell-transient", message),
            CellError::Invalid(message) => StepError { kind: "invalid".into(), message, retryable: false },
            forbidden @ CellError::Forbidden(_) => StepError::blocked(forbidden),
        }
    }
}

/// A Kubernetes API error as a cell error: refusals a retry cannot change (bad request,
/// invalid) end the step; a missing permission is waited out; the rest (a used-up quota
/// among them) are retried.
pub(crate) fn kube_error(what: &str, e: kube::Error) -> CellError {
    let message = format!("{what}: {}", crate::kube_error::describe(&e));
    if crate::kube_error::is_missing_permission(&e) {
        return CellError::Forbidden(message);
    }
    match crate::kube_error::code(&e) {
        Some(400 | 422) => CellError::Invalid(message),
        _ => CellError::Transient(message),
    }
}

fn default_provider() -> Provider {
    Provider::Sim
}

/// The cell a namespace is placed in, as the in-cell steps need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellContext {
    pub name: String,
    pub region: String,
    #[serde(default = "default_provider")]
    pub provider: Provider,
    pub ingress: IngressSpec,
    pub database: Option<DatabaseSpec>,
    /// The version the cell's components run, when the caller knows it (synthetic probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the cell lives in its cloud: how its cluster is reached (see
    /// [`crate::cloud::CloudProvider::cluster_access`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<crate::cloud::CellScope>,
    /// The Service of its release that tenants' routes send traffic to, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_door: Option<FrontDoor>,
}

impl CellContext {
    /// The context of a Cell as the API has it.
    pub fn of(cell: &crate::api::Cell) -> CellContext {
        CellContext {
            name: kube::ResourceExt::name_any(cell),
            region: cell.spec.region.clone(),
            provider: cell.spec.provider,
            ingress: cell.spec.ingress.clone(),
            database: cell.spec.database.clone(),
            version: cell.status.as_ref().and_then(|s| s.running_version.clone()),
            cloud: Some(crate::cloud::providers::scope(&kube::ResourceExt::name_any(cell), &cell.spec)),
            front_door: None,
        }
    }
}

/// The tenant being provisioned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The Namespace's name and account (its Kubernetes namespace): validated DNS labels.
    pub id: TenantId,
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
    /// `host:port` of the server; empty for a simulated database.
    #[serde(default)]
    pub server: String,
    /// What the role was granted, in words.
    #[serde(default)]
    pub privileges: String,
    /// The cell names no database server: nothing real was created.
    #[serde(default)]
    pub simulated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    pub server_secret: String,
    pub client_ca_secret: String,
    pub client_secret: Option<String>,
    /// When the server certificate expires (ms since the epoch); None when simulated.
    #[serde(default)]
    pub not_after_ms: Option<i64>,
    /// When the certificates are renewed (ms since the epoch); None: never.
    #[serde(default)]
    pub renew_at_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    /// `Ingress` or `TLSRoute`; empty when simulated.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
}

/// A cell's certificate authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCa {
    /// Secret with the CA (tls.crt, tls.key) and the bundle clients trust (ca.crt).
    pub secret: String,
    pub not_after_ms: Option<i64>,
    /// When it is rotated; None: never.
    pub renew_at_ms: Option<i64>,
}

#[async_trait]
pub trait CellServices: Send + Sync + 'static {
    /// The cell's CA, created when missing (idempotent without a key: it is looked up first).
    async fn ensure_cell_ca(&self, cell: &CellContext) -> Result<CellCa, CellError>;
    /// Replaces the cell's CA with a new one; the old one stays in the trusted bundle.
    async fn rotate_cell_ca(&self, key: &str, cell: &CellContext) -> Result<CellCa, CellError>;
    async fn remove_cell_ca(&self, cell: &CellContext) -> Result<(), CellError>;

    async fn create_database(&self, key: &str, cell: &CellContext, tenant: &Tenant)
    -> Result<DatabaseGrant, CellError>;
    async fn drop_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    /// Issues the tenant's certificates; a repeat with the same key returns what it issued,
    /// a new key (a renewal) issues new ones.
    async fn issue_certificates(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<Certificates, CellError>;
    async fn remove_certificates(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    async fn create_route(&self, key: &str, cell: &CellContext, tenant: &Tenant) -> Result<Route, CellError>;
    async fn delete_route(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    /// Connects to the tenant endpoint with mutual TLS; Ok (with what was verified) once a
    /// handshake succeeded.
    async fn probe(&self, cell: &CellContext, tenant: &Tenant) -> Result<String, CellError>;

    /// A round trip to the tenant's database with the tenant's own login.
    async fn probe_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError>;

    /// Renders `release` for the cell (the caller journals it, so it is rendered once).
    async fn render_release(&self, cell: &CellContext, release: &ReleaseRequest) -> Result<RenderedRelease, CellError>;
    /// Applies one rendered object in the cell's cluster; returns its inventory entry.
    async fn apply_release_object(&self, cell: &CellContext, object: &Value, force: bool) -> Result<String, CellError>;
    /// How healthy the objects of an inventory are.
    async fn check_release(&self, cell: &CellContext, inventory: &[String]) -> Result<ReleaseCheck, CellError>;
    /// Deletes the objects of `stale` that are cellplane's for the cell (others are kept, and
    /// named with why); call again until done.
    async fn prune_release(&self, cell: &CellContext, stale: &[String]) -> Result<Pruned, CellError>;
    /// The objects (by index in `objects`) changed by hand since they were applied, with how.
    async fn release_drift(&self, cell: &CellContext, objects: &[Value]) -> Result<Vec<(usize, String)>, CellError>;
}

/// A release as a cell is asked to install it: the Release and the cell's facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRequest {
    /// The Release object's name.
    pub name: String,
    pub spec: crate::api::release::ReleaseSpec,
    /// The Kubernetes version of the cell's cluster.
    pub kubernetes_version: String,
}

/// A release rendered for one cell: what its install applies, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedRelease {
    pub name: String,
    pub version: String,
    /// Where its namespaced objects went.
    pub namespace: String,
    pub objects: Vec<Value>,
    pub front_door: Option<FrontDoor>,
    pub health_timeout_ms: u64,
    pub drift_interval_ms: u64,
    pub force: bool,
}

/// The Service and port of a cell's front door, in its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontDoor {
    pub namespace: String,
    pub service: String,
    pub port: i32,
}

/// What a cell's cluster says of a release's objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseCheck {
    pub healthy: bool,
    /// A workload failed for good (no waiting helps).
    pub failed: bool,
    /// The unhealthy objects and why, one per line.
    pub report: String,
}

/// What a prune did: the objects deleted or on their way, and those it left alone, with why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub done: bool,
    pub kept: Vec<String>,
}
