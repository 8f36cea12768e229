//! How the operator reaches the cluster of a cell in a cloud (EKS, GKE): a kubeconfig made for
//! the call from the endpoint and CA the cloud describes and a short-lived bearer token, never
//! a stored secret. On a real API server (`make test` starts one) with a token it really
//! issues (TokenRequest for a ServiceAccount that may manage Ingresses in one namespace): the token is
//! accepted and its RBAC applies, a wrong token is refused, and another CA is not trusted.
//! The in-memory API checks no credentials: without a real server the test says it did not run,
//! and under `make test` (`CELLPLANE_REQUIRE_CLUSTER`) it fails.

mod binary;

use cellplane::cell::cluster::cloud_client;
use cellplane::cloud::ClusterAccess;
use cellplane::testing::{TestCluster, real_kubeconfig};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};

/// The real server's endpoint and CA, with a fresh token for a ServiceAccount that may manage
/// the test namespace only.
async fn access(cluster: &TestCluster, kubeconfig: &Kubeconfig) -> ClusterAccess {
    use base64::Engine;
    let named = &kubeconfig.clusters[0];
    let server = named.cluster.as_ref().and_then(|c| c.server.clone()).expect("a server");
    let authority = named.cluster.as_ref().and_then(|c| c.certificate_authority_data.clone()).expect("a CA");
    let pem = base64::engine::general_purpose::STANDARD.decode(authority).expect("base64");

    let namespace = &cluster.namespace;
    let meta =
        |name: &str| ObjectMeta { name: Some(name.into()), namespace: Some(namespace.clone()), ..Default::default() };
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), namespace);
    accounts
        .create(&PostParams::default(), &ServiceAccount { metadata: meta("cell-routes"), ..Default::default() })
        .await
        .unwrap();
    let role = Role {
        metadata: meta("cell-routes"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["networking.k8s.io".into()]),
            resources: Some(vec!["ingresses".into()]),
            verbs: ["get", "list", "watch", "create", "update", "patch", "delete"].map(String::from).to_vec(),
            ..Default::default()
        }]),
    };
    let roles: Api<Role> = Api::namespaced(cluster.client.clone(), namespace);
    roles.create(&PostParams::default(), &role).await.unwrap();
    let binding = RoleBinding {
        metadata: meta("cell-routes"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "cell-routes".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "cell-routes".into(),
            namespace: Some(namespace.clone()),
            ..Default::default()
        }]),
    };
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), namespace);
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() },
        ..Default::default()
    };
    let issued = accounts.create_token_request("cell-routes", &PostParams::default(), &request).await.unwrap();
    let token = issued.status.expect("an issued token").token;
    ClusterAccess { endpoint: server, certificate_authority_pem: String::from_utf8(pem).unwrap(), token }
}

async fn ingresses(client: Client, namespace: &str) -> Result<usize, kube::Error> {
    let api: Api<Ingress> = Api::namespaced(client, namespace);
    Ok(api.list(&Default::default()).await?.items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_cells_cluster_is_reached_with_its_ca_and_a_short_lived_token() {
    let Some(path) = real_kubeconfig("the cloud cluster access test (the in-memory API checks no tokens)") else {
        return;
    };
    TestCluster::real(&path)
        .await
        .unwrap()
        .scenario(|cluster| async move {
            let (path, _file) = binary::kubeconfig(&cluster).await;
            let kubeconfig = Kubeconfig::read_from(&path).unwrap();
            let access = access(&cluster, &kubeconfig).await;

            let client = cloud_client("eu-aws-1", &access).await.expect("a client from the access");
            let listed = ingresses(client.clone(), &cluster.namespace).await;
            assert_eq!(listed.map_err(|e| e.to_string()), Ok(0), "the token is accepted where its RBAC allows");
            let elsewhere = ingresses(client, &cluster.account).await.unwrap_err();
            assert_eq!(cellplane::kube_error::code(&elsewhere), Some(403), "and only there: {elsewhere}");

            let forged = ClusterAccess { token: format!("{}x", access.token), ..access.clone() };
            let refused = ingresses(cloud_client("eu-aws-1", &forged).await.unwrap(), &cluster.namespace).await;
            let refused = refused.unwrap_err();
            assert_eq!(cellplane::kube_error::code(&refused), Some(401), "a wrong token: {refused}");

            let other_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap().cert.pem();
            let untrusted = ClusterAccess { certificate_authority_pem: other_ca, ..access };
            let result = ingresses(cloud_client("eu-aws-1", &untrusted).await.unwrap(), &cluster.namespace).await;
            assert!(result.is_err(), "a server whose certificate the cell's CA did not sign is not trusted");
        })
        .await;
}
