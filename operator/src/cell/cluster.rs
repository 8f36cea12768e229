//! The real in-cell services: tenant databases on the cell's PostgreSQL, the tenant's
//! credentials in Secrets of its account's namespace (the endpoint's server certificate and the
//! cell CA in the operator's), routes in the cell's cluster, and a mutual-TLS check.
//! Sim cells get the same, with the sim data plane's TLS front door in place of a load
//! balancer; a cell that names no database server gets a simulated database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tracing::Instrument;

use super::database::{self, AdminLogin};
use super::pki::{self, Lifetimes};
use super::routes;
use super::sim::SimCellServices;
use super::tls::{self, ProbeTls, Resolve, SimDataPlane, SystemResolver};
use super::{
    CellCa, CellContext, CellError, CellServices, Certificates, DatabaseGrant, Pruned, ReleaseCheck, ReleaseRequest,
    RenderedRelease, Route, Tenant, kube_error, names, software,
};
use crate::api::MANAGER;
use crate::api::cell::{DatabaseSpec, Provider};
use crate::api::common::SecretReference;
use crate::cloud::{CloudError, CloudProvider, ClusterAccess};

/// Annotation naming the idempotency key a Secret's content was issued for.
pub const ISSUED_FOR: &str = "cellplane.io/issued-for";

/// Where and how the services work.
#[derive(Clone, Debug)]
pub struct ServicesConfig {
    /// The operator's namespace: cell CA and endpoint server certificate Secrets, and the
    /// routes of cells served by this cluster. Tenant Secrets go to their account's namespace.
    pub namespace: String,
    pub lifetimes: Lifetimes,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig { namespace: crate::operator::DEFAULT_NAMESPACE.into(), lifetimes: Lifetimes::default() }
    }
}

pub struct ClusterCellServices {
    client: Client,
    /// The operator's own cluster, where sim cells run their software (discovery cached).
    own_cluster: super::release::CellCluster,
    config: ServicesConfig,
    /// Reaches the clusters of cloud cells (EKS, GKE) with short-lived tokens.
    cloud: Option<Arc<dyn CloudProvider>>,
    data_plane: Arc<SimDataPlane>,
    resolver: Option<Arc<dyn Resolve>>,
    simulated: SimCellServices,
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn issued_for(secret: &Secret) -> Option<&str> {
    secret.metadata.annotations.as_ref()?.get(ISSUED_FOR).map(String::as_str)
}

async fn client_of(kubeconfig: kube::config::Kubeconfig, what: &str) -> Result<Client, CellError> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| CellError::Invalid(format!("{what}: {e}")))?;
    Client::try_from(config).map_err(|e| CellError::Invalid(format!("{what}: {e}")))
}

/// A client for the cluster of a cell in a cloud, from a kubeconfig that lives only as long as
/// the call that needs it.
pub async fn cloud_client(cell: &str, access: &ClusterAccess) -> Result<Client, CellError> {
    use base64::Engine;
    let authority = base64::engine::general_purpose::STANDARD.encode(&access.certificate_authority_pem);
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cell, "cluster": { "server": access.endpoint, "certificate-authority-data": authority } }],
        "users": [{ "name": cell, "user": { "token": access.token } }],
        "contexts": [{ "name": cell, "context": { "cluster": cell, "user": cell } }],
        "current-context": cell,
    });
    let kubeconfig =
        serde_json::from_value(kubeconfig).map_err(|e| CellError::Invalid(format!("{cell}'s cluster: {e}")))?;
    client_of(kubeconfig, &format!("{cell}'s cluster")).await
}

/// A cloud error as a cell error: what retrying can fix stays retryable.
fn cloud_error(e: CloudError) -> CellError {
    match e {
        CloudError::Transient(message) => CellError::Transient(format!("reaching the cell's cluster: {message}")),
        CloudError::MissingPermission(message) => {
            CellError::Forbidden(format!("reaching the cell's cluster: {message}"))
        }
        other => CellError::Invalid(format!("reaching the cell's cluster: {other}")),
    }
}

fn pki_error(e: pki::PkiError) -> CellError {
    CellError::Invalid(e.to_string())
}

/// The first certificate of a PEM bundle's validity, in ms.
fn validity(pem: &str) -> Result<(i64, i64), CellError> {
    let info = pki::inspect(pem).map_err(pki_error)?;
    Ok((info[0].not_before_ms, info[0].not_after_ms))
}

struct SecretSpec<'a> {
    namespace: &'a str,
    name: String,
    type_: &'a str,
    data: Vec<(&'a str, String)>,
    labels: BTreeMap<String, String>,
    issued_for: Option<&'a str>,
    owner: Option<&'a Tenant>,
}

impl ClusterCellServices {
    pub fn new(client: Client, config: ServicesConfig, data_plane: Arc<SimDataPlane>) -> Self {
        ClusterCellServices {
            own_cluster: super::release::CellCluster::new(client.clone()),
            client,
            config,
            cloud: None,
            data_plane,
            resolver: None,
            simulated: SimCellServices::default(),
        }
    }

    /// Reaches the clusters of cloud cells through `cloud` (their routes go there).
    pub fn with_cloud(mut self, cloud: Arc<dyn CloudProvider>) -> Self {
        self.cloud = Some(cloud);
        self
    }

    /// Resolves endpoint hosts with `resolver` instead of DNS (sim cells otherwise resolve
    /// through their data plane, the others through the system resolver).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    pub fn data_plane(&self) -> &Arc<SimDataPlane> {
        &self.data_plane
    }

    fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Secret>, CellError> {
        let secret = self.secrets(namespace).get_opt(name).await;
        secret.map_err(|e| kube_error(&format!("reading Secret {namespace}/{name}"), e))
    }

    /// A Secret of the operator's namespace (cell CAs, endpoint server certificates).
    async fn own(&self, name: &str) -> Result<Option<Secret>, CellError> {
        self.get(&self.config.namespace, name).await
    }

    /// A Secret in the tenant's account namespace.
    async fn tenants(&self, tenant: &Tenant, name: &str) -> Result<Option<Secret>, CellError> {
        self.get(&tenant.id.account, name).await
    }

    fn secret(&self, spec: SecretSpec<'_>) -> Secret {
        let data = spec.data.into_iter().map(|(k, v)| (k.to_string(), ByteString(v.into_bytes()))).collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(spec.name),
                namespace: Some(spec.namespace.to_string()),
                labels: Some(spec.labels),
                annotations: spec.issued_for.map(|k| [(ISSUED_FOR.to_string(), k.to_string())].into()),
                owner_references: spec.owner.map(|t| vec![owner(t)]),
                ..ObjectMeta::default()
            },
            type_: Some(spec.type_.to_string()),
            data: Some(data),
            ..Secret::default()
        }
    }

    async fn apply(&self, spec: SecretSpec<'_>) -> Result<(), CellError> {
        let (namespace, name) = (spec.namespace, spec.name.clone());
        let mut value = serde_json::to_value(self.secret(spec)).map_err(|e| CellError::Invalid(e.to_string()))?;
        value["apiVersion"] = "v1".into();
        value["kind"] = "Secret".into();
        self.secrets(namespace)
            .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&value))
            .await
            .map_err(|e| kube_error(&format!("writing Secret {namespace}/{name}"), e))?;
        Ok(())
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), CellError> {
        match self.secrets(namespace).delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(kube_error(&format!("deleting Secret {namespace}/{name}"), e)),
        }
    }

    /// The endpoint's server certificate, also beside a route that lives in the front door's
    /// namespace of the operator's own cluster (an Ingress names its TLS Secret in its own).
    async fn copy_server_certificate(&self, tenant: &Tenant, namespace: &str) -> Result<(), CellError> {
        let name = names::server(&tenant.id);
        let secret = self.own(&name).await?.ok_or_else(|| CellError::Transient(format!("Secret {name} is missing")))?;
        let data = ["tls.crt", "tls.key"].into_iter().filter_map(|key| Some((key, text(&secret, key)?))).collect();
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        let spec =
            SecretSpec { namespace, name, type_: "kubernetes.io/tls", data, labels, issued_for: None, owner: None };
        self.apply(spec).await
    }

    fn tenant_labels(cell: &CellContext, tenant: &Tenant) -> BTreeMap<String, String> {
        routes::labels(&cell.name, &tenant.id)
    }

    fn ca_info(&self, secret: &Secret) -> Result<CellCa, CellError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let cert =
            text(secret, "tls.crt").ok_or_else(|| CellError::Invalid(format!("Secret {name} has no tls.crt")))?;
        let (not_before, not_after) = validity(&cert)?;
        Ok(CellCa {
            secret: name,
            not_after_ms: Some(not_after),
            renew_at_ms: Some(self.config.lifetimes.renew_at(not_before, not_after)),
        })
    }

    /// The cell CA's certificate, key and trusted bundle.
    async fn cell_ca(&self, cell: &CellContext) -> Result<(String, String, String), CellError> {
        self.ensure_cell_ca(cell).await?;
        let name = names::cell_ca(&cell.name);
        let secret = self.own(&name).await?.ok_or_else(|| CellError::Transient(format!("Secret {name} is gone")))?;
        let field = |key| text(&secret, key).ok_or_else(|| CellError::Invalid(format!("Secret {name} has no {key}")));
        Ok((field("tls.crt")?, field("tls.key")?, field("ca.crt")?))
    }

    /// The Secret a spec refers to (in the operator's namespace unless it names one), with its
    /// `namespace/name` for messages. A missing Secret is transient: it may be created yet.
    async fn referenced_secret(&self, reference: &SecretReference, what: &str) -> Result<(Secret, String), CellError> {
        let namespace = reference.namespace.as_deref().unwrap_or(&self.config.namespace);
        let path = format!("{namespace}/{}", reference.name);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api
            .get_opt(&reference.name)
            .await
            .map_err(|e| kube_error(&format!("reading the {what} Secret"), e))?
            .ok_or_else(|| CellError::Transient(format!("the {what} Secret {path} does not exist")))?;
        Ok((secret, path))
    }

    async fn admin_login(&self, spec: &DatabaseSpec) -> Result<AdminLogin, CellError> {
        let (secret, _) = self.referenced_secret(&spec.admin_secret_ref, "database admin").await?;
        Ok(AdminLogin {
            host: spec.host.clone(),
            port: u16::try_from(spec.port).map_err(|_| CellError::Invalid(format!("port {} is invalid", spec.port)))?,
            database: spec.database.clone(),
            username: text(&secret, "username").unwrap_or_else(|| "postgres".into()),
            password: text(&secret, "password").unwrap_or_default(),
        })
    }

    /// The cell's cluster, for its software; `shared` when it is the operator's own.
    async fn cell_cluster(&self, cell: &CellContext) -> Result<(super::release::CellCluster, bool), CellError> {
        match self.own_client(cell).await? {
            Some(client) => Ok((super::release::CellCluster::new(client), false)),
            None => Ok((self.own_cluster.clone(), true)),
        }
    }

    /// The client of the cell's cluster (see [`ClusterCellServices::own_client`]).
    async fn cell_client(&self, cell: &CellContext) -> Result<Client, CellError> {
        Ok(self.own_client(cell).await?.unwrap_or_else(|| self.client.clone()))
    }

    /// Where a tenant's route goes: the client of the cell's cluster, the route's namespace
    /// there, and whether that is another namespace of the operator's own cluster (where the
    /// endpoint's server certificate must be copied beside the route).
    async fn route_place<'a>(&'a self, cell: &'a CellContext) -> Result<(Client, &'a str, bool), CellError> {
        let own = self.own_client(cell).await?;
        let namespace = routes::namespace_of(cell, &self.config.namespace);
        let beside_own = own.is_none() && namespace != self.config.namespace;
        Ok((own.unwrap_or_else(|| self.client.clone()), namespace, beside_own))
    }

    /// The client of the cell's cluster when it has one of its own: its kubeconfig Secret's;
    /// else, for a cell in a cloud, one made now from the cloud's endpoint, CA and a short-lived
    /// token. None: the cell lives in the operator's cluster.
    async fn own_client(&self, cell: &CellContext) -> Result<Option<Client>, CellError> {
        if let Some(reference) = &cell.ingress.kubeconfig_secret_ref {
            let (secret, path) = self.referenced_secret(reference, "cell kubeconfig").await?;
            let yaml = text(&secret, "kubeconfig")
                .ok_or_else(|| CellError::Invalid(format!("Secret {path} has no key kubeconfig")))?;
            let kubeconfig =
                kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| CellError::Invalid(e.to_string()))?;
            return client_of(kubeconfig, "cell kubeconfig").await.map(Some);
        }
        let (Some(cloud), Some(scope)) = (&self.cloud, &cell.cloud) else { return Ok(None) };
        match cloud.cluster_access(scope).await.map_err(cloud_error)? {
            Some(access) => cloud_client(&cell.name, &access).await.map(Some),
            None => Ok(None),
        }
    }

    fn resolver(&self, cell: &CellContext) -> Arc<dyn Resolve> {
        match (&self.resolver, cell.provider) {
            (Some(resolver), _) => resolver.clone(),
            (None, Provider::Sim) => self.data_plane.clone(),
            (None, _) => Arc::new(SystemResolver),
        }
    }

    /// Serves the tenant endpoint on the sim cell's front door with what its Secrets hold now.
    async fn serve_sim(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        let server_secret = names::server(&tenant.id);
        let secret = self
            .own(&server_secret)
            .await?
            .ok_or_else(|| CellError::Transient(format!("Secret {server_secret} is missing")))?;
        let missing = |key| CellError::Invalid(format!("Secret {server_secret} has no {key}"));
        let chain = text(&secret, "tls.crt").ok_or_else(|| missing("tls.crt"))?;
        let key = text(&secret, "tls.key").ok_or_else(|| missing("tls.key"))?;
        let accepted = self.accepted_client_cas(cell, tenant).await?;
        self.data_plane.serve(&cell.name, &tenant.endpoint, &chain, &key, &accepted).await?;
        Ok(())
    }

    /// The client CAs the endpoint accepts: the tenant's (supplied or issued) and, when the
    /// tenant supplied its own, the cell CA so the operator's check can present a certificate.
    async fn accepted_client_cas(&self, cell: &CellContext, tenant: &Tenant) -> Result<String, CellError> {
        let name = names::client_ca(&tenant.id);
        let secret = self
            .tenants(tenant, &name)
            .await?
            .ok_or_else(|| CellError::Transient(format!("Secret {name} is missing")))?;
        let mut bundle = text(&secret, "ca.crt").unwrap_or_default();
        if tenant.mtls.accepted_client_ca.is_some() {
            let (ca_cert, _, _) = self.cell_ca(cell).await?;
            bundle.push_str(&ca_cert);
        }
        Ok(bundle)
    }
}

#[async_trait::async_trait]
impl CellServices for ClusterCellServices {
    async fn ensure_cell_ca(&self, cell: &CellContext) -> Result<CellCa, CellError> {
        let name = names::cell_ca(&cell.name);
        if let Some(secret) = self.own(&name).await? {
            return self.ca_info(&secret);
        }
        let span = tracing::info_span!("create_cell_ca", cell = %cell.name);
        async {
            let ca = pki::new_ca(&format!("{} cell CA", cell.name), SystemTime::now(), self.config.lifetimes.ca)
                .map_err(pki_error)?;
            let labels: BTreeMap<String, String> = [
                (routes::MANAGED_BY.0.to_string(), routes::MANAGED_BY.1.to_string()),
                (routes::CELL_LABEL.to_string(), cell.name.clone()),
            ]
            .into();
            let secret = self.secret(SecretSpec {
                namespace: &self.config.namespace,
                name: name.clone(),
                type_: "kubernetes.io/tls",
                data: vec![("tls.crt", ca.cert_pem.clone()), ("tls.key", ca.key_pem), ("ca.crt", ca.cert_pem)],
                labels,
                issued_for: None,
                owner: None,
            });
            // Create, never overwrite: a CA another caller created first wins.
            match self.secrets(&self.config.namespace).create(&PostParams::default(), &secret).await {
                Ok(created) => self.ca_info(&created),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let secret = self
                        .own(&name)
                        .await?
                        .ok_or_else(|| CellError::Transient(format!("Secret {name} vanished")))?;
                    self.ca_info(&secret)
                }
                Err(e) => Err(kube_error(&format!("creating Secret {name}"), e)),
            }
        }
        .instrument(span)
        .await
    }

    async fn rotate_cell_ca(&self, key: &str, cell: &CellContext) -> Result<CellCa, CellError> {
        let name = names::cell_ca(&cell.name);
        let current = self.own(&name).await?;
        if let Some(secret) = &current
            && issued_for(secret) == Some(key)
        {
            return self.ca_info(secret);
        }
        let ca = pki::new_ca(&format!("{} cell CA", cell.name), SystemTime::now(), self.config.lifetimes.ca)
            .map_err(pki_error)?;
        // Certificates signed by the old CA stay trusted until they are renewed.
        let now_ms = pki_now_ms();
        let old = current
            .as_ref()
            .and_then(|s| text(s, "tls.crt"))
            .filter(|pem| validity(pem).is_ok_and(|(_, end)| end > now_ms));
        let bundle = format!("{}{}", ca.cert_pem, old.unwrap_or_default());
        let labels: BTreeMap<String, String> = [
            (routes::MANAGED_BY.0.to_string(), routes::MANAGED_BY.1.to_string()),
            (routes::CELL_LABEL.to_string(), cell.name.clone()),
        ]
        .into();
        self.apply(SecretSpec {
            namespace: &self.config.namespace,
            name: name.clone(),
            type_: "kubernetes.io/tls",
            data: vec![("tls.crt", ca.cert_pem.clone()), ("tls.key", ca.key_pem), ("ca.crt", bundle)],
            labels,
            issued_for: Some(key),
            owner: None,
        })
        .await?;
        tracing::info!(cell = %cell.name, "cell CA rotated");
        Ok(CellCa {
            secret: name,
            not_after_ms: Some(ca.not_after_ms),
            renew_at_ms: Some(self.config.lifetimes.renew_at(ca.not_before_ms, ca.not_after_ms)),
        })
    }

    async fn remove_cell_ca(&self, cell: &CellContext) -> Result<(), CellError> {
        self.delete(&self.config.namespace, &names::cell_ca(&cell.name)).await
    }

    async fn create_database(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<DatabaseGrant, CellError> {
        let ident = database::tenant_identifier(&tenant.id)?;
        let secret_name = names::database(&tenant.id);
        let Some(spec) = &cell.database else {
            let mut grant = self.simulated.create_database(key, cell, tenant).await?;
            grant.role = ident.clone();
            grant.database = ident.clone();
            let data = vec![("username", ident.clone()), ("database", ident), ("simulated", "true".to_string())];
            let labels = Self::tenant_labels(cell, tenant);
            let spec = SecretSpec {
                namespace: &tenant.id.account,
                name: secret_name,
                type_: "Opaque",
                data,
                labels,
                issued_for: None,
                owner: Some(tenant),
            };
            self.apply(spec).await?;
            return Ok(grant);
        };
        let admin = self.admin_login(spec).await?;
        let span = tracing::info_span!("create_database", cell = %cell.name, role = %ident);
        async {
            // The Secret is written first and is the source of the password, so a retry after
            // a crash sets the same password the tenant may already have read.
            let existing = self.tenants(tenant, &secret_name).await?;
            let password = existing
                .as_ref()
                .filter(|s| text(s, "host").as_deref() == Some(admin.host.as_str()))
                .and_then(|s| text(s, "password"))
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
                .unwrap_or_else(database::new_password);
            let uri = format!("postgres://{ident}:{password}@{}:{}/{ident}", admin.host, admin.port);
            let data = vec![
                ("username", ident.clone()),
                ("password", password.clone()),
                ("database", ident.clone()),
                ("host", admin.host.clone()),
                ("port", admin.port.to_string()),
                ("uri", uri),
            ];
            let labels = Self::tenant_labels(cell, tenant);
            let spec = SecretSpec {
                namespace: &tenant.id.account,
                name: secret_name.clone(),
                type_: "Opaque",
                data,
                labels,
                issued_for: None,
                owner: Some(tenant),
            };
            self.apply(spec).await?;
            database::create(&admin, &ident, &password).await?;
            Ok(DatabaseGrant {
                role: ident.clone(),
                database: ident.clone(),
                secret: secret_name.clone(),
                server: admin.server(),
                privileges: database::GRANTS.into(),
                simulated: false,
            })
        }
        .instrument(span)
        .await
    }

    async fn drop_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        match &cell.database {
            Some(spec) => {
                let ident = database::tenant_identifier(&tenant.id)?;
                let admin = self.admin_login(spec).await?;
                database::drop(&admin, &ident).instrument(tracing::info_span!("drop_database", role = %ident)).await?;
            }
            None => self.simulated.drop_database(cell, tenant).await?,
        }
        self.delete(&tenant.id.account, &names::database(&tenant.id)).await
    }

    async fn issue_certificates(
        &self,
        key: &str,
        cell: &CellContext,
        tenant: &Tenant,
    ) -> Result<Certificates, CellError> {
        let lifetimes = self.config.lifetimes;
        let issue_client = tenant.mtls.accepted_client_ca.is_none();
        let result = |server_pem: &str, client_not_after: Option<(i64, i64)>| -> Result<Certificates, CellError> {
            let (start, end) = validity(server_pem)?;
            let mut renew_at = lifetimes.renew_at(start, end);
            if let Some((start, end)) = client_not_after {
                renew_at = renew_at.min(lifetimes.renew_at(start, end));
            }
            Ok(Certificates {
                server_secret: names::server(&tenant.id),
                client_ca_secret: names::client_ca(&tenant.id),
                client_secret: issue_client.then(|| names::client(&tenant.id)),
                not_after_ms: Some(end),
                renew_at_ms: Some(renew_at),
            })
        };
        // Each Secret carries the key it was issued for: a repeat returns what exists.
        let client_secret = match issue_client {
            true => self.tenants(tenant, &names::client(&tenant.id)).await?,
            false => None,
        };
        if let Some(secret) = self.own(&names::server(&tenant.id)).await?
            && issued_for(&secret) == Some(key)
            && let Some(pem) = text(&secret, "tls.crt")
            && (!issue_client || client_secret.as_ref().is_some_and(|s| issued_for(s) == Some(key)))
        {
            let client = client_secret.as_ref().and_then(|s| text(s, "tls.crt"));
            return result(&pem, client.as_deref().map(validity).transpose()?);
        }
        let span = tracing::info_span!("issue_certificates", cell = %cell.name, tenant = %tenant.id);
        async {
            let now = SystemTime::now();
            let labels = Self::tenant_labels(cell, tenant);
            let (ca_cert, ca_key, ca_bundle) = self.cell_ca(cell).await?;
            let mut new_client = None;
            let accepted = match &tenant.mtls.accepted_client_ca {
                Some(pem) => {
                    pki::validate_client_ca(pem, now)
                        .map_err(|e| CellError::Invalid(format!("spec.mtls.acceptedClientCA: {e}")))?;
                    pem.trim_end().to_string() + "\n"
                }
                None => {
                    // A CA of the tenant's own, so its client certificates are accepted by its
                    // endpoint only. The previous CA stays accepted until the new certificate
                    // has been picked up.
                    let identity = tenant.id.to_string();
                    let tenant_ca =
                        pki::new_ca(&format!("{identity} client CA"), now, lifetimes.client).map_err(pki_error)?;
                    let client =
                        pki::issue_client(&tenant_ca.cert_pem, &tenant_ca.key_pem, &identity, now, lifetimes.client)
                            .map_err(pki_error)?;
                    let previous = self
                        .tenants(tenant, &names::client_ca(&tenant.id))
                        .await?
                        .and_then(|s| text(&s, "ca.crt"))
                        .and_then(|pem| pem.split_inclusive("-----END CERTIFICATE-----\n").next().map(str::to_string))
                        .filter(|pem| validity(pem).is_ok_and(|(_, end)| end > pki_now_ms()))
                        .unwrap_or_default();
                    let data =
                        vec![("tls.crt", client.cert_pem), ("tls.key", client.key_pem), ("ca.crt", ca_bundle.clone())];
                    let name = names::client(&tenant.id);
                    let spec = SecretSpec {
                        namespace: &tenant.id.account,
                        name,
                        type_: "kubernetes.io/tls",
                        data,
                        labels: labels.clone(),
                        issued_for: Some(key),
                        owner: Some(tenant),
                    };
                    new_client = Some(spec);
                    format!("{}{previous}", tenant_ca.cert_pem)
                }
            };
            let spec = SecretSpec {
                namespace: &tenant.id.account,
                name: names::client_ca(&tenant.id),
                type_: "Opaque",
                data: vec![("ca.crt", accepted)],
                labels: labels.clone(),
                issued_for: Some(key),
                owner: Some(tenant),
            };
            self.apply(spec).await?;
            let server =
                pki::issue_server(&ca_cert, &ca_key, &tenant.endpoint, now, lifetimes.server).map_err(pki_error)?;
            let chain = format!("{}{ca_cert}", server.cert_pem);
            let data = vec![("tls.crt", chain), ("tls.key", server.key_pem), ("ca.crt", ca_bundle)];
            // Beside the route that serves it, in the operator's namespace: the tenant never
            // holds the endpoint's key.
            let spec = SecretSpec {
                namespace: &self.config.namespace,
                name: names::server(&tenant.id),
                type_: "kubernetes.io/tls",
                data,
                labels,
                issued_for: Some(key),
                owner: None,
            };
            self.apply(spec).await?;
            // A renewal: the endpoint must accept the new client CA (and serve the new server
            // certificate) before the tenant is handed a client certificate from it.
            if cell.provider == Provider::Sim && self.data_plane.hosts(&cell.name).contains(&tenant.endpoint) {
                self.serve_sim(cell, tenant).await?;
            }
            let client = new_client.as_ref().and_then(|spec| spec.data.first().map(|(_, pem)| pem.clone()));
            let client_validity = client.as_deref().map(validity).transpose()?;
            if let Some(spec) = new_client {
                self.apply(spec).await?;
            }
            result(&server.cert_pem, client_validity)
        }
        .instrument(span)
        .await
    }

    async fn remove_certificates(&self, _cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.delete(&self.config.namespace, &names::server(&tenant.id)).await?;
        for name in [names::client_ca(&tenant.id), names::client(&tenant.id)] {
            self.delete(&tenant.id.account, &name).await?;
        }
        Ok(())
    }

    async fn create_route(&self, _key: &str, cell: &CellContext, tenant: &Tenant) -> Result<Route, CellError> {
        let span = tracing::info_span!("create_route", cell = %cell.name, host = %tenant.endpoint);
        async {
            let (client, namespace, beside_own) = self.route_place(cell).await?;
            if beside_own {
                self.copy_server_certificate(tenant, namespace).await?;
            }
            let route = routes::apply(&client, namespace, cell, tenant).await?;
            if cell.provider == Provider::Sim {
                self.serve_sim(cell, tenant).await?;
            }
            Ok(Route { name: route.name, kind: route.kind.into(), namespace: route.namespace })
        }
        .instrument(span)
        .await
    }

    async fn delete_route(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        self.data_plane.remove(&cell.name, &tenant.endpoint);
        let (client, namespace, beside_own) = self.route_place(cell).await?;
        routes::delete(&client, namespace, &tenant.id).await?;
        if beside_own {
            self.delete(namespace, &names::server(&tenant.id)).await?;
        }
        Ok(())
    }

    async fn probe_database(&self, cell: &CellContext, tenant: &Tenant) -> Result<(), CellError> {
        // A simulated database has no server to reach.
        let Some(spec) = &cell.database else { return Ok(()) };
        let name = names::database(&tenant.id);
        let secret = self
            .tenants(tenant, &name)
            .await?
            .ok_or_else(|| CellError::Transient(format!("Secret {name} is missing")))?;
        let missing = |key| CellError::Invalid(format!("Secret {name} has no {key}"));
        let login = AdminLogin {
            host: spec.host.clone(),
            port: u16::try_from(spec.port).map_err(|_| CellError::Invalid(format!("port {} is invalid", spec.port)))?,
            database: text(&secret, "database").ok_or_else(|| missing("database"))?,
            username: text(&secret, "username").ok_or_else(|| missing("username"))?,
            password: text(&secret, "password").ok_or_else(|| missing("password"))?,
        };
        database::round_trip(&login).await
    }

    async fn probe(&self, cell: &CellContext, tenant: &Tenant) -> Result<String, CellError> {
        let span = tracing::info_span!("probe", cell = %cell.name, host = %tenant.endpoint);
        async {
            // The sim front door lives in this process: after a restart it serves the routes
            // that exist again, as an ingress controller would.
            if cell.provider == Provider::Sim
                && let Some(fault) = super::sim::front_door_fault(cell)
            {
                return Err(fault);
            }
            if cell.provider == Provider::Sim && !self.data_plane.hosts(&cell.name).contains(&tenant.endpoint) {
                let client = self.cell_client(cell).await?;
                if routes::exists(&client, routes::namespace_of(cell, &self.config.namespace), &tenant.id).await? {
                    self.serve_sim(cell, tenant).await?;
                }
            }
            let (ca_cert, ca_key, ca_bundle) = self.cell_ca(cell).await?;
            let (chain, key) = match &tenant.mtls.accepted_client_ca {
                None => {
                    let name = names::client(&tenant.id);
                    let secret = self
                        .tenants(tenant, &name)
                        .await?
                        .ok_or_else(|| CellError::Transient(format!("Secret {name} is missing")))?;
                    let missing = |key| CellError::Invalid(format!("Secret {name} has no {key}"));
                    (
                        text(&secret, "tls.crt").ok_or_else(|| missing("tls.crt"))?,
                        text(&secret, "tls.key").ok_or_else(|| missing("tls.key"))?,
                    )
                }
                // The tenant holds its own client keys: the check presents the operator's
                // short-lived probe certificate from the cell CA instead.
                Some(_) => {
                    let probe = pki::issue_client(
                        &ca_cert,
                        &ca_key,
                        "cellplane-probe",
                        SystemTime::now(),
                        Duration::from_secs(600),
                    )
                    .map_err(pki_error)?;
                    (probe.cert_pem, probe.key_pem)
                }
            };
            let resolver = self.resolver(cell);
            let tls = ProbeTls { server_roots_pem: &ca_bundle, client_chain_pem: &chain, client_key_pem: &key };
            tls::probe(resolver.as_ref(), &tenant.endpoint, &tls).await
        }
        .instrument(span)
        .await
    }

    async fn render_release(&self, cell: &CellContext, release: &ReleaseRequest) -> Result<RenderedRelease, CellError> {
        let (_, shared) = self.cell_cluster(cell).await?;
        software::render(cell, release, shared).await
    }

    async fn apply_release_object(&self, cell: &CellContext, object: &Value, force: bool) -> Result<String, CellError> {
        software::apply(&self.cell_cluster(cell).await?.0, object, force).await
    }

    async fn check_release(&self, cell: &CellContext, inventory: &[String]) -> Result<ReleaseCheck, CellError> {
        software::check(&self.cell_cluster(cell).await?.0, inventory).await
    }

    async fn prune_release(&self, cell: &CellContext, stale: &[String]) -> Result<Pruned, CellError> {
        software::prune(&self.cell_cluster(cell).await?.0, &cell.name, stale).await
    }

    async fn release_drift(&self, cell: &CellContext, objects: &[Value]) -> Result<Vec<(usize, String)>, CellError> {
        software::drift(&self.cell_cluster(cell).await?.0, objects).await
    }
}

/// An owner reference to the tenant's Namespace: its Secrets live in the same namespace, so
/// they go with it when the account's namespace (or the object) is deleted without teardown.
fn owner(tenant: &Tenant) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "cellplane.io/v1alpha1".into(),
        kind: "Namespace".into(),
        name: tenant.id.name.clone(),
        uid: tenant.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn pki_now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
