//! One conformance suite for every provider: sim in process, aws against moto (behind the
//! proxy that adds CREATING/UPDATING/DELETING states and throttling), gcp against the GKE fake.
//! Each run creates a cell's network, cluster and node pool, resumes every create as a
//! workflow does after a crash that lost the answer (same step key: no second VPC, cluster or
//! node group), reaches the cluster's API (endpoint, CA, token), upgrades the Kubernetes version
//! of the control plane and then of the node pool, tears down in reverse waiting for each
//! deletion, and finds nothing of the cell left by its tag or label.

use std::collections::BTreeMap;
use std::sync::Arc;

use cellplane_cloud::sim::{EffectOp, SimCloud, SimConfig};
use cellplane_cloud::{
    Account, AwsAccount, CellScope, CloudError, CloudProvider, ClusterAccess, ClusterRequest, ComponentsRequest,
    GcpAccount, Network, NetworkRequest, NodePoolRequest, SecretRef, Secrets, WaitPolicy, wait_for,
};
use cellplane_cloud_aws::{AwsCloud, Endpoint as AwsEndpoint};
use cellplane_cloud_gcp::{Endpoint as GcpEndpoint, GcpCloud};
use cellplane_cloud_testkit::gke::GkeFake;
use cellplane_cloud_testkit::moto::{Behaviour, MotoProxy};

/// What one run saw.
struct Outcome {
    /// Kinds of resource found by tag after provisioning, with their counts.
    found: BTreeMap<String, usize>,
    network: Network,
    /// How the cluster was reached, where the provider has a cluster of its own.
    access: Option<ClusterAccess>,
}

fn scope(cell: &str, region: &str, provider: &str, account: Account) -> CellScope {
    CellScope { cell: cell.into(), region: region.into(), provider: provider.into(), account }
}

async fn conformance(cloud: &dyn CloudProvider, scope: CellScope, nat_gateway: bool) -> Outcome {
    let wait = WaitPolicy::quick();
    let network_request = NetworkRequest { scope: scope.clone(), cidr: "10.20.0.0/16".into(), nat_gateway };
    let network = cloud.create_network("k-network", &network_request).await.expect("create the network");
    let resumed = cloud.create_network("k-network", &network_request).await.expect("resume the network's create");
    assert_eq!(network, resumed, "a resumed create finds the network the first one made");

    let cluster_request =
        ClusterRequest { scope: scope.clone(), network: network.clone(), kubernetes_version: "1.32".into() };
    let cluster = cloud.create_cluster("k-cluster", &cluster_request).await.expect("create the cluster");
    let resumed = cloud.create_cluster("k-cluster", &cluster_request).await.expect("resume the cluster's create");
    assert_eq!(cluster.id, resumed.id);
    let ready = wait_for("cluster", wait, || cloud.cluster_progress(&cluster_request, &cluster.id))
        .await
        .expect("the cluster becomes ready");
    assert!(ready.endpoint.starts_with("https://"), "endpoint {:?}", ready.endpoint);
    assert_eq!(ready.kubernetes_version, "1.32");
    let access = cloud.cluster_access(&scope).await.expect("reach the cluster");
    if let Some(access) = &access {
        assert_eq!(access.endpoint, ready.endpoint, "the API server the cloud describes");
        assert!(access.certificate_authority_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }

    let pool_request = NodePoolRequest {
        scope: scope.clone(),
        cluster_id: cluster.id.clone(),
        subnet_ids: network.subnet_ids.clone(),
        name: "general".into(),
        instance_type: "m6i.large".into(),
        min_nodes: 1,
        max_nodes: 3,
        labels: BTreeMap::from([("workload".into(), "tenants".into())]),
        kubernetes_version: "1.32".into(),
    };
    let pool = cloud.create_node_pool("k-pool", &pool_request).await.expect("create the node pool");
    let resumed = cloud.create_node_pool("k-pool", &pool_request).await.expect("resume the node pool's create");
    assert_eq!(pool, resumed);
    wait_for("node pool", wait, || cloud.node_pool_progress(&pool_request, &pool.id))
        .await
        .expect("the node pool becomes ready");

    let components =
        ComponentsRequest { scope: scope.clone(), cluster_id: cluster.id.clone(), version: "1.4.2".into() };
    let installed = cloud.install_components("k-components", &components).await.expect("install the components");

    let mut found = BTreeMap::new();
    for entry in cloud.leftovers(&scope).await.expect("list the cell's resources") {
        *found.entry(entry.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }

    let upgrade = ClusterRequest { kubernetes_version: "1.33".into(), ..cluster_request.clone() };
    cloud.upgrade_cluster("k-upgrade", &upgrade, &cluster.id).await.expect("start the upgrade");
    let upgraded = wait_for("upgrade", wait, || cloud.cluster_progress(&upgrade, &cluster.id))
        .await
        .expect("the upgrade finishes");
    assert_eq!(upgraded.kubernetes_version, "1.33");
    let pool_upgrade = NodePoolRequest { kubernetes_version: "1.33".into(), ..pool_request.clone() };
    cloud.upgrade_node_pool("k-pool-upgrade", &pool_upgrade, &pool.id).await.expect("start the nodes' upgrade");
    cloud.upgrade_node_pool("k-pool-upgrade", &pool_upgrade, &pool.id).await.expect("a retried start is fine");
    wait_for("nodes' upgrade", wait, || cloud.node_pool_progress(&pool_upgrade, &pool.id))
        .await
        .expect("the nodes' upgrade finishes");

    cloud.delete_components("k-d-components", &scope, &installed.id).await.expect("delete the components");
    wait_for("delete pool", wait, || cloud.delete_node_pool("k-d-pool", &scope, &pool.id)).await.expect("pool gone");
    wait_for("delete cluster", wait, || cloud.delete_cluster("k-d-cluster", &scope, &cluster.id))
        .await
        .expect("cluster gone");
    wait_for("delete network", wait, || cloud.delete_network("k-d-network", &scope, &network.id))
        .await
        .expect("network gone");
    let left = cloud.leftovers(&scope).await.expect("list what is left");
    assert!(left.is_empty(), "left after teardown: {left:?}");
    Outcome { found, network, access }
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn sim() {
    let cloud = SimCloud::new(SimConfig { latency: std::time::Duration::ZERO, ..SimConfig::default() });
    let outcome = conformance(&cloud, scope("cell-a", "eu-west-1", "sim", Account::Ambient), false).await;
    let kinds: Vec<&str> = outcome.found.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["cluster", "components", "network", "pool/general"]);
    assert!(outcome.found.values().all(|n| *n == 1), "{:?}", outcome.found);
    assert!(cloud.duplicates().is_empty(), "{:?}", cloud.duplicates());
    assert!(outcome.access.is_none(), "sim cells' routes live where the operator runs");
    let upgrades: Vec<(String, Option<String>)> =
        cloud.ledger().into_iter().filter(|e| e.op == EffectOp::Upgrade).map(|e| (e.name, e.version)).collect();
    let expected = [("cluster".to_string(), Some("1.33".to_string())), ("pool/general".into(), Some("1.33".into()))];
    assert_eq!(upgrades, expected, "the control plane, then the nodes, each once");
}

#[tokio::test]
async fn aws_against_moto() {
    install_crypto();
    let proxy = MotoProxy::start(Behaviour::default()).await.expect("moto and its proxy");
    let cloud = AwsCloud::with_endpoint(AwsEndpoint::local(&proxy.url), None);
    let account = Account::Aws(AwsAccount {
        cluster_role_arn: "arn:aws:iam::123456789012:role/eks-cluster".into(),
        node_role_arn: "arn:aws:iam::123456789012:role/eks-nodes".into(),
        ..AwsAccount::default()
    });
    let outcome = conformance(&cloud, scope("cell-a", "eu-west-1", "aws", account), true).await;
    let expected = [
        ("eks-cluster", 1),
        ("eks-nodegroup", 1),
        ("elastic-ip", 1),
        ("internet-gateway", 1),
        ("nat-gateway", 1),
        ("route-table", 1),
        ("security-group", 1),
        ("subnet", 4),
        ("vpc", 1),
    ];
    let expected: BTreeMap<String, usize> = expected.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    assert_eq!(outcome.found, expected, "one of each, found by the cell's tag");
    assert_eq!(outcome.network.subnet_ids.len(), 2, "nodes in two private subnets");
    assert_eq!(outcome.network.public_subnet_ids.len(), 2, "the NAT gateway in a public one");
    let access = outcome.access.expect("EKS clusters are reached with a token");
    assert!(access.token.starts_with("k8s-aws-v1."), "an `aws eks get-token` token");
    let stats = proxy.stats();
    for create in [
        "CreateVpc",
        "CreateSubnet",
        "CreateInternetGateway",
        "CreateSecurityGroup",
        "AllocateAddress",
        "CreateNatGateway",
        "CreateRouteTable",
        "POST /clusters",
        "POST /clusters/*/node-groups",
    ] {
        let made = stats.creates.get(create).copied().unwrap_or(0);
        let expected = if create == "CreateSubnet" { 4 } else { 1 };
        assert_eq!(made, expected, "{create} took effect {made} times: {:?}", stats.creates);
    }
    assert!(stats.throttled > 5, "throttling was injected and survived: {}", stats.throttled);
    assert!(stats.pending_answers >= 12, "CREATING, UPDATING and DELETING were polled: {}", stats.pending_answers);
}

#[tokio::test]
async fn gcp_against_the_gke_fake() {
    install_crypto();
    let fake = GkeFake::start().await.expect("the GKE fake");
    let key = ServiceAccountKey::generate();
    let secrets: Arc<dyn Secrets> = Arc::new(key.clone());
    let cloud = GcpCloud::with_endpoint(GcpEndpoint { url: Some(fake.url.clone()) }, Some(secrets));
    let credentials = Some(SecretRef { namespace: "cellplane-system".into(), name: "gcp-cells".into() });
    let account = Account::Gcp(GcpAccount { project: "acme-cells".into(), network: Some("cells".into()), credentials });
    let outcome = conformance(&cloud, scope("cell-a", "europe-west1", "gcp", account), false).await;
    let access = outcome.access.expect("GKE clusters are reached with a token");
    key.verify(&access.token);
    // The system pool GKE wants at creation, and the spec's pool.
    let expected: BTreeMap<String, usize> = [("gke-cluster".to_string(), 1), ("gke-node-pool".to_string(), 2)].into();
    assert_eq!(outcome.found, expected);
    let stats = fake.stats();
    assert_eq!(stats.creates.get("cluster"), Some(&1), "{:?}", stats.creates);
    assert_eq!(stats.creates.get("nodePool"), Some(&1), "{:?}", stats.creates);
    assert!(stats.pending_answers > 0, "PROVISIONING was polled");
}

/// The registry routes each cell to its provider and refuses one it was not built with.
#[tokio::test]
async fn clouds_route_by_provider() {
    let sim = Arc::new(SimCloud::new(SimConfig { latency: std::time::Duration::ZERO, ..SimConfig::default() }));
    let clouds = cellplane_cloud::Clouds::new().with(sim.clone());
    let on_sim = scope("c", "r", "sim", Account::Ambient);
    let request = NetworkRequest { scope: on_sim, cidr: "10.0.0.0/16".into(), nat_gateway: false };
    clouds.create_network("k", &request).await.expect("routed to sim");
    assert_eq!(sim.live_in("c"), vec!["network".to_string()]);
    let elsewhere = NetworkRequest { scope: scope("c", "r", "aws", Account::Ambient), ..request };
    let refused = clouds.create_network("k", &elsewhere).await.unwrap_err();
    assert!(!refused.is_transient());
    assert!(refused.to_string().contains("provider \"aws\" is not built into this binary (it has: sim)"), "{refused}");
}

/// A Google service-account key made for the test (RSA, by openssl), served as the cell's
/// credentials Secret; GKE tokens made from it are self-signed JWTs it can verify.
#[derive(Clone)]
struct ServiceAccountKey {
    dir: Arc<tempfile::TempDir>,
    json: serde_json::Value,
}

impl ServiceAccountKey {
    const EMAIL: &str = "cells@acme-cells.iam.gserviceaccount.com";

    fn generate() -> ServiceAccountKey {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = dir.path().join("key.pem");
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"], &key);
        openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap_or_default(), "-out"], &dir.path().join("pub.pem"));
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "acme-cells",
            "private_key_id": "test-key-1",
            "private_key": std::fs::read_to_string(&key).expect("the key"),
            "client_email": Self::EMAIL,
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        ServiceAccountKey { dir: Arc::new(dir), json }
    }

    /// The token is an RS256 JWT for this account, and its signature verifies with the key.
    fn verify(&self, token: &str) {
        use base64::Engine;
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT: {token}");
        let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).expect("the JWT header");
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).expect("the JWT claims");
        assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("RS256"), Some("test-key-1")));
        assert_eq!(claims["iss"].as_str(), Some(Self::EMAIL));
        let (signed, signature) = (self.dir.path().join("signed"), self.dir.path().join("signature"));
        std::fs::write(&signed, format!("{}.{}", parts[0], parts[1])).expect("write");
        std::fs::write(&signature, decode(parts[2])).expect("write");
        let public = self.dir.path().join("pub.pem");
        let verified = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .args([&public, &std::path::PathBuf::from("-signature"), &signature, &signed])
            .output()
            .expect("openssl");
        assert!(verified.status.success(), "the token's signature: {}", String::from_utf8_lossy(&verified.stdout));
    }
}

fn openssl(args: &[&str], out: &std::path::Path) {
    let status = std::process::Command::new("openssl").args(args).arg(out).output().expect("openssl");
    assert!(status.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

#[async_trait::async_trait]
impl Secrets for ServiceAccountKey {
    async fn read(&self, secret: &SecretRef) -> Result<BTreeMap<String, Vec<u8>>, CloudError> {
        assert_eq!(secret.name, "gcp-cells");
        Ok(BTreeMap::from([("credentials.json".to_string(), self.json.to_string().into_bytes())]))
    }
}
