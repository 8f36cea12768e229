//! The providers this binary was built with: `sim` always, `aws` and `gcp` with their cargo
//! features (on by default; `--no-default-features` builds without their SDKs).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{Account, AwsAccount, CellScope, CloudError, Clouds, GcpAccount, SecretRef, Secrets};
use crate::api::cell::{CellSpec, Provider};

/// The names of the providers built in.
pub fn built_in() -> Vec<&'static str> {
    let mut names = vec!["sim"];
    if cfg!(feature = "aws") {
        names.push("aws");
    }
    if cfg!(feature = "gcp") {
        names.push("gcp");
    }
    names
}

pub fn name(provider: Provider) -> &'static str {
    match provider {
        Provider::Aws => "aws",
        Provider::Gcp => "gcp",
        Provider::Sim => "sim",
    }
}

/// The registry `cellplane run` uses: `sim` (given, so tests can read its ledger) and the
/// real providers, reading credential Secrets through `client` (in `namespace` when a
/// reference names none).
pub fn clouds(sim: Arc<super::sim::SimCloud>, client: kube::Client, namespace: &str) -> Clouds {
    // The SDKs are built without a TLS crypto provider of their own: they use the process's,
    // rustls on ring as everywhere else here (an error means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[allow(unused_variables)]
    let secrets: Arc<dyn Secrets> = Arc::new(KubeSecrets { client, namespace: namespace.to_string() });
    let clouds = Clouds::new().with(sim);
    #[cfg(feature = "aws")]
    let clouds = clouds.with(Arc::new(cellplane_cloud_aws::AwsCloud::new(Some(secrets.clone()))));
    #[cfg(feature = "gcp")]
    let clouds = clouds.with(Arc::new(cellplane_cloud_gcp::GcpCloud::new(Some(secrets))));
    clouds
}

/// The scope of a cell's cloud calls: its name, region, provider and account.
pub fn scope(cell: &str, spec: &CellSpec) -> CellScope {
    let credentials = spec
        .credentials_secret_ref
        .as_ref()
        .map(|r| SecretRef { namespace: r.namespace.clone().unwrap_or_default(), name: r.name.clone() });
    let account = match (spec.provider, &spec.aws, &spec.gcp) {
        (Provider::Aws, Some(aws), _) => Account::Aws(AwsAccount {
            role_arn: aws.role_arn.clone(),
            credentials,
            cluster_role_arn: aws.cluster_role_arn.clone(),
            node_role_arn: aws.node_role_arn.clone(),
        }),
        (Provider::Gcp, _, Some(gcp)) => {
            Account::Gcp(GcpAccount { project: gcp.project.clone(), network: gcp.network.clone(), credentials })
        }
        _ => Account::Ambient,
    };
    CellScope { cell: cell.to_string(), region: spec.region.clone(), provider: name(spec.provider).into(), account }
}

/// Secrets read from the management cluster.
struct KubeSecrets {
    client: kube::Client,
    /// Where a reference without a namespace points: the operator's namespace.
    namespace: String,
}

#[async_trait]
impl Secrets for KubeSecrets {
    async fn read(&self, secret: &SecretRef) -> Result<BTreeMap<String, Vec<u8>>, CloudError> {
        let namespace = if secret.namespace.is_empty() { &self.namespace } else { &secret.namespace };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_opt(&secret.name).await.map_err(|e| match &e {
            kube::Error::Api(status) if status.code == 403 => CloudError::MissingPermission(format!(
                "reading Secret {namespace}/{}: {}",
                secret.name,
                crate::kube_error::describe(&e)
            )),
            _ => CloudError::Transient(format!("reading Secret {namespace}/{}: {e}", secret.name)),
        })?;
        let Some(found) = found else {
            return Err(CloudError::Invalid(format!("credentials Secret {namespace}/{} does not exist", secret.name)));
        };
        Ok(found.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}
