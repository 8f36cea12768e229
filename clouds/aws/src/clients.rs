//! SDK clients per cell account: the region, and credentials from the cell's Secret, an STS
//! role assumed for the cell, or the default chain (IRSA, environment, instance role).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;
use cellplane_cloud::{Account, AwsAccount, CellScope, CloudError, SecretRef, Secrets};

/// The clients of one account and region.
#[derive(Clone, Debug)]
pub struct Clients {
    pub config: SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
}

/// Where the clients send their requests.
#[derive(Clone, Debug, Default)]
pub struct Endpoint {
    /// One URL for every service (a local peer in tests); None: AWS.
    pub url: Option<String>,
    /// Credentials for that peer.
    pub credentials: Option<Credentials>,
}

impl Endpoint {
    /// A local peer (moto) with its test credentials.
    pub fn local(url: impl Into<String>) -> Self {
        let credentials = Credentials::new("testing", "testing", None, None, "local-peer");
        Endpoint { url: Some(url.into()), credentials: Some(credentials) }
    }
}

pub(crate) struct ClientCache {
    endpoint: Endpoint,
    secrets: Option<Arc<dyn Secrets>>,
    /// By region and role; clients from Secrets are not kept, so a rotated key takes effect.
    cached: Mutex<HashMap<(String, Option<String>), Clients>>,
}

impl ClientCache {
    pub fn new(endpoint: Endpoint, secrets: Option<Arc<dyn Secrets>>) -> Self {
        ClientCache { endpoint, secrets, cached: Mutex::new(HashMap::new()) }
    }

    pub async fn get(&self, scope: &CellScope) -> Result<Clients, CloudError> {
        let account = account(scope)?;
        if let Some(secret) = &account.credentials {
            let credentials = self.read(secret).await?;
            return Ok(self.build(scope, account.role_arn.as_deref(), Some(credentials)).await);
        }
        let key = (scope.region.clone(), account.role_arn.clone());
        if let Some(clients) = self.lock().get(&key) {
            return Ok(clients.clone());
        }
        let clients = self.build(scope, account.role_arn.as_deref(), None).await;
        self.lock().insert(key, clients.clone());
        Ok(clients)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Option<String>), Clients>> {
        self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn read(&self, secret: &SecretRef) -> Result<Credentials, CloudError> {
        let Some(secrets) = &self.secrets else {
            return Err(CloudError::Invalid("this operator reads no credentials Secrets".into()));
        };
        let data = secrets.read(secret).await?;
        let field = |key: &str| data.get(key).map(|v| String::from_utf8_lossy(v).trim().to_string());
        let (Some(id), Some(key)) = (field("aws_access_key_id"), field("aws_secret_access_key")) else {
            return Err(CloudError::Invalid(format!(
                "Secret {}/{} needs the keys aws_access_key_id and aws_secret_access_key",
                secret.namespace, secret.name
            )));
        };
        Ok(Credentials::new(id, key, field("aws_session_token"), None, "cellplane-secret"))
    }

    async fn build(&self, scope: &CellScope, role: Option<&str>, credentials: Option<Credentials>) -> Clients {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(scope.region.clone())).http_client(http);
        if let Some(url) = &self.endpoint.url {
            loader = loader.endpoint_url(url);
        }
        if let Some(credentials) = credentials.or_else(|| self.endpoint.credentials.clone()) {
            loader = loader.credentials_provider(credentials);
        }
        let mut config = loader.load().await;
        if let Some(role) = role {
            let assumed = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name(format!("cellplane-{}", scope.cell))
                .configure(&config)
                .build()
                .await;
            config = config.into_builder().credentials_provider(SharedCredentialsProvider::new(assumed)).build();
        }
        Clients { ec2: aws_sdk_ec2::Client::new(&config), eks: aws_sdk_eks::Client::new(&config), config }
    }
}

/// The cell's AWS account (tests and ambient cells use the provider's own roles).
pub(crate) fn account(scope: &CellScope) -> Result<AwsAccount, CloudError> {
    match &scope.account {
        Account::Aws(account) => Ok(account.clone()),
        Account::Ambient => Ok(AwsAccount::default()),
        Account::Gcp(_) => Err(CloudError::Invalid(format!("cell {}: a gcp account given to aws", scope.cell))),
    }
}
