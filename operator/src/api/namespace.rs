//! The `Namespace` resource (`namespaces.cellplane.io`): one tenant, living in the Kubernetes
//! namespace of its account (the RBAC boundary). Its identity across the fleet is
//! `<name>.<account>` ([`TenantId`]).
//!
//! The kind collides with the core `Namespace`; use the short names `cns` / `cellns`, the
//! full name `namespaces.cellplane.io`, or the `cellplane` category with kubectl.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::WorkflowStatus;
use super::conditions::{Condition, MAX_CONDITIONS, types};

/// Condition: a cell was chosen and capacity reserved in it (status.assignedCell).
pub const CELL_SELECTED: &str = "CellSelected";
/// Condition: the tenant's database and role exist in the cell's database server.
pub const DATABASE_READY: &str = "DatabaseReady";
/// Condition: server (and, if requested, client) certificates are issued and stored.
pub const CERTIFICATES_READY: &str = "CertificatesReady";
/// Condition: the tenant's ingress route exists and its hostname resolves.
pub const INGRESS_READY: &str = "IngressReady";
/// Condition: an mTLS connection to the tenant endpoint succeeded.
pub const CONNECTED: &str = "Connected";

/// The per-step conditions of a Namespace, in the order provisioning makes them True.
pub const NAMESPACE_STEPS: &[&str] = &[CELL_SELECTED, DATABASE_READY, CERTIFICATES_READY, INGRESS_READY, CONNECTED];
/// Every condition a Namespace carries from first sight (all Unknown until evaluated).
pub const NAMESPACE_CONDITIONS: &[&str] = &[
    types::READY,
    types::RECONCILING,
    types::STALLED,
    CELL_SELECTED,
    DATABASE_READY,
    CERTIFICATES_READY,
    INGRESS_READY,
    CONNECTED,
];

/// Default endpoint hostname template.
pub const DEFAULT_HOSTNAME_TEMPLATE: &str = "{namespace}.{account}.{cell}.{domain}";

/// A tenant's identity across the fleet: `<name>.<account>`, where the account is the
/// Kubernetes namespace its `Namespace` object lives in (as Temporal Cloud's namespaces are
/// `name.account-id`). Both parts are DNS labels, so the dot separates them unambiguously.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId {
    pub name: String,
    pub account: String,
}

impl TenantId {
    pub fn new(name: impl Into<String>, account: impl Into<String>) -> Self {
        TenantId { name: name.into(), account: account.into() }
    }

    /// The identity of a Namespace object (None before it has a namespace, which the API
    /// server always gives it).
    pub fn of(ns: &Namespace) -> Option<Self> {
        Some(TenantId::new(ns.metadata.name.clone()?, ns.metadata.namespace.clone()?))
    }
}

impl TenantId {
    /// A name for this tenant of at most `max` bytes made of `[a-z0-9]` and `separator`:
    /// `prefix`, then `<name><separator><account>` (cut to fit), then `separator` and ten hex
    /// digits of a hash of the identity. The readable part alone would be ambiguous (`a-b`.`c`
    /// and `a`.`b-c`), the hash makes it unique.
    pub fn unique_name(&self, prefix: &str, separator: char, max: usize) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.to_string().as_bytes());
        let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        let readable: String = format!("{}{separator}{}", self.name, self.account)
            .chars()
            .map(|c| if c == '-' { separator } else { c })
            .collect();
        let room = max.saturating_sub(prefix.len() + 1 + hash.len());
        let readable = readable.get(..room.min(readable.len())).unwrap_or_default().trim_end_matches(separator);
        format!("{prefix}{readable}{separator}{hash}")
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.name, self.account)
    }
}

/// Desired state of a tenant namespace: where it may be placed, how long its data is kept,
/// how clients authenticate, and how its endpoint is named.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cellplane.io",
    version = "v1alpha1",
    kind = "Namespace",
    plural = "namespaces",
    namespaced,
    shortname = "cns",
    shortname = "cellns",
    status = "NamespaceStatus",
    category = "cellplane",
    derive = "PartialEq",
    doc = "A Namespace (namespaces.cellplane.io; short names cns, cellns) is one tenant of the managed service. It lives in the Kubernetes namespace of its account, and its identity across the fleet is <name>.<account>. The operator places it into a Cell, creates its database, certificates and ingress route there, and checks that its endpoint accepts mTLS connections. The name becomes a DNS label of the tenant endpoint, so it must be at most 63 characters without dots.",
    validation = ("self.metadata.name.size() <= 63 && !self.metadata.name.contains('.')", "metadata.name must be a DNS label: at most 63 characters and no dots"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region", description = "Region the namespace lives in"),
    printcolumn(name = "Cell", type_ = "string", json_path = ".status.assignedCell", description = "Cell the namespace is placed in"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.placement.tier", description = "Service tier"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Ready condition"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", description = "Tenant endpoint hostname", priority = 1),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].message", description = "What the namespace is waiting for or why it failed", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Region the namespace lives in; it is placed only into cells of this region.
    /// Immutable: moving a tenant to another region is a migration, not an edit.
    #[x_kube(validation = ("self == oldSelf", "region is immutable"))]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::common::DNS_LABEL_PATTERN))]
    pub region: String,

    /// Hints for choosing the cell. Placement happens once; changing them later does not move
    /// a placed namespace.
    #[serde(default)]
    pub placement: Placement,

    /// How long the tenant's closed data is kept.
    #[serde(default)]
    pub retention: Retention,

    /// How clients authenticate to the tenant endpoint with mutual TLS.
    pub mtls: MtlsSpec,

    /// How the tenant endpoint is named.
    #[serde(default)]
    pub endpoint: EndpointSpec,

    /// A synthetic tenant: the operator's own, carrying probe traffic only, admitted by rings
    /// that admit only synthetic tenants. Honoured only in the operator's namespace, where the
    /// operator creates one per cell of a ring with synthetic probes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synthetic: bool,
}

/// Hints for choosing the cell of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only cells whose labels match are candidates. Unset: every cell of the region that is
    /// not cordoned and has capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_selector: Option<LabelSelector>,

    /// Service tier: standard, or critical (weighs more capacity units and is placed only
    /// into cells labelled for it).
    #[serde(default)]
    pub tier: Tier,

    /// Placement priority from 0 to 1000; when capacity is short, higher priorities are
    /// placed first. Deployment rings carry tenants by rising priority.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub priority: i32,

    /// The cell to place the namespace in, by name: no other is considered. For pinning (the
    /// operator pins each synthetic tenant to its cell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = super::common::DNS_LABEL_PATTERN))]
    pub cell: Option<String>,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Critical => "critical",
        }
    }
}

/// Service tier of a namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Standard tier.
    #[default]
    Standard,
    /// Critical tier.
    Critical,
}

/// How long the tenant's closed data is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Days that closed data is kept before it is deleted, from 1 to 90.
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1, max = 90))]
    pub days: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { days: default_retention_days() }
    }
}

fn default_retention_days() -> i32 {
    30
}

/// Mutual TLS for the tenant endpoint: set exactly one of acceptedClientCA and
/// issueClientCertificate: true.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
// "At least one and not both" rather than `a != b`, which Kubernetes 1.25.0 refuses (see
// DeploymentRingSpec).
#[x_kube(validation = (
    "(has(self.acceptedClientCA) || (has(self.issueClientCertificate) && self.issueClientCertificate)) && !(has(self.acceptedClientCA) && has(self.issueClientCertificate) && self.issueClientCertificate)",
    "set exactly one of acceptedClientCA or issueClientCertificate: true"
))]
#[serde(rename_all = "camelCase")]
pub struct MtlsSpec {
    /// PEM-encoded CA certificate(s) that sign the tenant's client certificates. Clients
    /// presenting a certificate from another CA are refused.
    #[serde(rename = "acceptedClientCA", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536), regex(pattern = r"^\s*-----BEGIN CERTIFICATE-----"))]
    pub accepted_client_ca: Option<String>,

    /// When true, the operator creates a CA for the tenant, issues a client certificate and
    /// stores it in the Secret named in status.secrets.clientCertificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_client_certificate: Option<bool>,
}

/// How the tenant endpoint is named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// Hostname template of the tenant endpoint. Placeholders: `{namespace}` and `{account}`
    /// (both required: together they are the tenant's identity, so endpoints never collide),
    /// `{cell}` (the assigned cell), `{region}` (spec.region) and `{domain}` (the assigned
    /// cell's spec.ingress.domain). The endpoint's server certificate names it.
    #[serde(default = "default_hostname_template")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9{}.-]+$"))]
    #[x_kube(validation = (
        "self.contains('{namespace}') && self.contains('{account}')",
        "hostnameTemplate must contain {namespace} and {account}"
    ))]
    pub hostname_template: String,
}

impl Default for EndpointSpec {
    fn default() -> Self {
        Self { hostname_template: default_hostname_template() }
    }
}

fn default_hostname_template() -> String {
    DEFAULT_HOSTNAME_TEMPLATE.to_owned()
}

/// Lifecycle phase of the namespace: Pending, Provisioning, Ready, Degraded, Deleting or
/// Failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NamespacePhase {
    /// Pending: seen, not yet placed.
    Pending,
    /// Provisioning: placed; database, certificates and ingress are being set up.
    Provisioning,
    /// Ready: serving on its endpoint.
    Ready,
    /// Degraded: provisioned, but the connectivity check fails.
    Degraded,
    /// Deleting: being torn down.
    Deleting,
    /// Failed: stopped on an error that needs a person; see the Stalled condition.
    Failed,
}

/// Observed state of a Namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Lifecycle phase of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<NamespacePhase>,

    /// The Cell the namespace is placed in. Once set it never changes (the controller
    /// enforces it); moving a tenant is a separate migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub assigned_cell: Option<String>,

    /// Hostname of the tenant endpoint, rendered from spec.endpoint.hostnameTemplate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub endpoint: Option<String>,

    /// Names of the Secrets that hold the tenant's credentials (in the Namespace's own
    /// Kubernetes namespace, except the endpoint's server certificate, which stays beside its
    /// route in the operator's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<NamespaceSecrets>,

    /// The tenant's database and what its role was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,

    /// Validity of the endpoint's certificates and when they are renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesStatus>,

    /// The ingress route of the tenant endpoint in the cell's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteStatus>,

    /// Current state: Ready, Reconciling, Stalled, CellSelected, DatabaseReady,
    /// CertificatesReady, IngressReady, Connected (and Deleting while being deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    #[schemars(length(max = MAX_CONDITIONS))]
    pub conditions: Vec<Condition>,

    /// Checkpoint of the namespace's provisioning workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<WorkflowStatus>,
}

/// Names of the Secrets that hold a tenant's credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSecrets {
    /// Secret (type kubernetes.io/tls) with the endpoint's server certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub server_certificate: Option<String>,

    /// Secret (type kubernetes.io/tls) with the issued client certificate and key; only
    /// when spec.mtls.issueClientCertificate is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub client_certificate: Option<String>,

    /// Secret with the CA bundle (key ca.crt) the endpoint accepts client certificates from.
    #[serde(rename = "clientCA", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub client_ca: Option<String>,

    /// Secret with the tenant's database credentials (keys username, password, database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub database_credentials: Option<String>,
}

/// The tenant's database on the cell's PostgreSQL server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// `host:port` of the server; empty when simulated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 260))]
    pub server: String,
    /// Name of the tenant's database.
    #[schemars(length(max = 63))]
    pub database: String,
    /// Name of the tenant's login role, which owns the database.
    #[schemars(length(max = 63))]
    pub role: String,
    /// What the role was granted, and what was revoked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 4096))]
    pub grants: String,
    /// True when the cell names no database server and the database is simulated.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simulated: bool,
}

/// Validity of a tenant endpoint's certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificatesStatus {
    /// When the server certificate expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the certificates are renewed (a durable timer of the namespace's workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// The ingress route of a tenant endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// TLSRoute (Gateway API) or Ingress.
    #[schemars(length(max = 63))]
    pub kind: String,
    /// Namespace of the route in the cell's cluster.
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// Name of the route.
    #[schemars(length(max = 253))]
    pub name: String,
}
