//! The cell's EKS cluster and managed node groups. Creates carry the workflow step's key as
//! `clientRequestToken`, so a retried create has one effect; a create that finds the resource
//! already there (a resumed workflow) takes it.

use aws_sdk_eks::Client;
use aws_sdk_eks::types::{
    AccessScope, AccessScopeType, AuthenticationMode, ClusterStatus, CreateAccessConfigRequest, NodegroupScalingConfig,
    NodegroupStatus, VpcConfigRequest,
};
use cellplane_cloud::{
    CELL_TAG, CellScope, CloudError, Cluster, ClusterAccess, ClusterRequest, NodePool, NodePoolRequest, Progress,
};

use crate::error::fail;

/// The EKS cluster of a cell is named after it.
pub(crate) fn cluster_name(scope: &CellScope) -> &str {
    &scope.cell
}

/// A node group's name from its ARN (`arn:aws:eks:REGION:ACCOUNT:nodegroup/CLUSTER/NAME/UUID`).
pub(crate) fn nodegroup_name(arn: &str) -> &str {
    arn.split('/').nth(2).unwrap_or(arn)
}

pub(crate) async fn create_cluster(
    eks: &Client,
    key: &str,
    request: &ClusterRequest,
    role_arn: &str,
    security_group: &str,
) -> Result<Cluster, CloudError> {
    let vpc = VpcConfigRequest::builder()
        .set_subnet_ids(Some(request.network.subnet_ids.clone()))
        .security_group_ids(security_group)
        .build();
    let name = cluster_name(&request.scope);
    let created = eks
        .create_cluster()
        .name(name)
        .version(&request.kubernetes_version)
        .role_arn(role_arn)
        .resources_vpc_config(vpc)
        // Access entries, which grant_access adds to, besides the aws-auth ConfigMap.
        .access_config(
            CreateAccessConfigRequest::builder()
                .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                .bootstrap_cluster_creator_admin_permissions(true)
                .build(),
        )
        .tags(CELL_TAG, &request.scope.cell)
        .client_request_token(key)
        .send()
        .await;
    match created.map_err(|e| fail("CreateCluster", e)) {
        Ok(created) => {
            let arn = created.cluster().and_then(|c| c.arn()).unwrap_or(name);
            tracing::info!(cell = %request.scope.cell, cluster = %arn, "creating EKS cluster");
            Ok(Cluster { id: arn.to_string(), endpoint: String::new(), kubernetes_version: String::new() })
        }
        // Made by an earlier attempt whose answer was lost.
        Err(e) if e.in_use() => {
            let found = eks.describe_cluster().name(name).send().await.map_err(|e| fail("DescribeCluster", e))?;
            let arn = found.cluster().and_then(|c| c.arn()).unwrap_or(name);
            Ok(Cluster { id: arn.to_string(), endpoint: String::new(), kubernetes_version: String::new() })
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn cluster_progress(
    eks: &Client,
    request: &ClusterRequest,
    id: &str,
) -> Result<Progress<Cluster>, CloudError> {
    let found = eks
        .describe_cluster()
        .name(cluster_name(&request.scope))
        .send()
        .await
        .map_err(|e| fail("DescribeCluster", e))?;
    let Some(cluster) = found.cluster() else {
        return Err(CloudError::Transient("DescribeCluster returned no cluster".into()));
    };
    let version = cluster.version().unwrap_or_default();
    match cluster.status() {
        Some(ClusterStatus::Active) if version == request.kubernetes_version => Ok(Progress::Ready(Cluster {
            id: id.to_string(),
            endpoint: cluster.endpoint().unwrap_or_default().to_string(),
            kubernetes_version: version.to_string(),
        })),
        Some(ClusterStatus::Failed) => Err(CloudError::Invalid(format!("EKS cluster {id} is FAILED"))),
        Some(status) => Ok(Progress::Pending(format!("{status} at Kubernetes {version}"))),
        None => Ok(Progress::Pending("without a status".into())),
    }
}

pub(crate) async fn upgrade_cluster(eks: &Client, key: &str, request: &ClusterRequest) -> Result<(), CloudError> {
    let updated = eks
        .update_cluster_version()
        .name(cluster_name(&request.scope))
        .version(&request.kubernetes_version)
        .client_request_token(key)
        .send()
        .await;
    started(updated.map_err(|e| fail("UpdateClusterVersion", e)))
}

/// An update that started, or that is running already (ours, retried): the wait that follows
/// sees it through.
fn started<T>(update: Result<T, crate::error::Failure>) -> Result<(), CloudError> {
    match update {
        Err(e) if !e.in_use() => Err(e.into()),
        _ => Ok(()),
    }
}

pub(crate) async fn delete_cluster(eks: &Client, scope: &CellScope) -> Result<Progress<()>, CloudError> {
    let name = cluster_name(scope);
    let found = eks.describe_cluster().name(name).send().await.map_err(|e| fail("DescribeCluster", e));
    match found {
        Err(e) if e.not_found() => return Ok(Progress::Ready(())),
        Err(e) => return Err(e.into()),
        Ok(found) if found.cluster().and_then(|c| c.status()) == Some(&ClusterStatus::Deleting) => {
            return Ok(Progress::Pending("DELETING".into()));
        }
        Ok(_) => {}
    }
    match eks.delete_cluster().name(name).send().await.map_err(|e| fail("DeleteCluster", e)) {
        Ok(_) => Ok(Progress::Pending("DELETING".into())),
        Err(e) if e.not_found() => Ok(Progress::Ready(())),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn create_node_group(
    eks: &Client,
    key: &str,
    request: &NodePoolRequest,
    node_role_arn: &str,
) -> Result<NodePool, CloudError> {
    let scaling = NodegroupScalingConfig::builder()
        .min_size(request.min_nodes)
        .max_size(request.max_nodes.max(1))
        .desired_size(request.min_nodes.max(1))
        .build();
    let cluster = cluster_name(&request.scope);
    let version = Some(request.kubernetes_version.clone()).filter(|v| !v.is_empty());
    let created = eks
        .create_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(&request.name)
        .set_version(version)
        .scaling_config(scaling)
        .set_subnets(Some(request.subnet_ids.clone()))
        .instance_types(&request.instance_type)
        .node_role(node_role_arn)
        .set_labels(Some(request.labels.clone().into_iter().collect()))
        .tags(CELL_TAG, &request.scope.cell)
        .client_request_token(key)
        .send()
        .await;
    let arn = match created.map_err(|e| fail("CreateNodegroup", e)) {
        Ok(created) => created.nodegroup().and_then(|n| n.nodegroup_arn()).map(str::to_string),
        Err(e) if e.in_use() => {
            let found = describe_node_group(eks, cluster, &request.name).await?;
            found.and_then(|n| n.nodegroup_arn().map(str::to_string))
        }
        Err(e) => return Err(e.into()),
    };
    let arn = arn.ok_or_else(|| CloudError::Transient(format!("node group {} has no ARN yet", request.name)))?;
    Ok(NodePool { id: arn })
}

async fn describe_node_group(
    eks: &Client,
    cluster: &str,
    name: &str,
) -> Result<Option<aws_sdk_eks::types::Nodegroup>, CloudError> {
    let found = eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(name).send().await;
    match found.map_err(|e| fail("DescribeNodegroup", e)) {
        Ok(found) => Ok(found.nodegroup),
        Err(e) if e.not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn node_group_progress(
    eks: &Client,
    request: &NodePoolRequest,
    id: &str,
) -> Result<Progress<NodePool>, CloudError> {
    let found = describe_node_group(eks, cluster_name(&request.scope), &request.name).await?;
    let Some(group) = found else {
        return Err(CloudError::Invalid(format!("node group {id} does not exist")));
    };
    let version = group.version().unwrap_or_default();
    let wanted = &request.kubernetes_version;
    match group.status() {
        Some(NodegroupStatus::Active) if wanted.is_empty() || version == wanted => {
            Ok(Progress::Ready(NodePool { id: id.to_string() }))
        }
        Some(NodegroupStatus::CreateFailed | NodegroupStatus::Degraded) => {
            let issues: Vec<String> = group
                .health()
                .map(|h| h.issues().iter().filter_map(|i| i.message().map(str::to_string)).collect())
                .unwrap_or_default();
            Err(CloudError::Invalid(format!("node group {id} failed: {}", issues.join("; "))))
        }
        Some(status) => Ok(Progress::Pending(format!("{status} at Kubernetes {version}"))),
        None => Ok(Progress::Pending("without a status".into())),
    }
}

pub(crate) async fn upgrade_node_group(eks: &Client, key: &str, request: &NodePoolRequest) -> Result<(), CloudError> {
    let updated = eks
        .update_nodegroup_version()
        .cluster_name(cluster_name(&request.scope))
        .nodegroup_name(&request.name)
        .version(&request.kubernetes_version)
        .client_request_token(key)
        .send()
        .await;
    started(updated.map_err(|e| fail("UpdateNodegroupVersion", e)))
}

/// The cluster's endpoint and CA as EKS describes them, with a fresh token from `token`.
pub(crate) async fn access(eks: &Client, scope: &CellScope, token: String) -> Result<ClusterAccess, CloudError> {
    let found =
        eks.describe_cluster().name(cluster_name(scope)).send().await.map_err(|e| fail("DescribeCluster", e))?;
    let cluster = found.cluster();
    let endpoint = cluster.and_then(|c| c.endpoint()).filter(|e| !e.is_empty());
    let authority = cluster.and_then(|c| c.certificate_authority()).and_then(|a| a.data());
    let (Some(endpoint), Some(authority)) = (endpoint, authority) else {
        return Err(CloudError::Transient(format!("EKS cluster {} has no endpoint yet", cluster_name(scope))));
    };
    let certificate_authority_pem = cellplane_cloud::decode_certificate_authority(authority)?;
    Ok(ClusterAccess { endpoint: endpoint.to_string(), certificate_authority_pem, token })
}

/// EKS's own access policy for cluster-admin.
pub(crate) const CLUSTER_ADMIN_POLICY: &str = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy";

/// Gives `principal` an access entry on the cell's cluster with the cluster-admin access policy.
/// The cluster's creator has one already (a ResourceInUse, taken as done); associating the
/// policy again changes nothing.
pub(crate) async fn grant_access(eks: &Client, scope: &CellScope, principal: &str) -> Result<(), CloudError> {
    let cluster = cluster_name(scope);
    let created = eks
        .create_access_entry()
        .cluster_name(cluster)
        .principal_arn(principal)
        .tags(CELL_TAG, &scope.cell)
        .send()
        .await
        .map_err(|e| fail("CreateAccessEntry", e));
    match created {
        Ok(_) => {}
        Err(e) if e.in_use() => {}
        Err(e) => return Err(e.into()),
    }
    eks.associate_access_policy()
        .cluster_name(cluster)
        .principal_arn(principal)
        .policy_arn(CLUSTER_ADMIN_POLICY)
        .access_scope(AccessScope::builder().r#type(AccessScopeType::Cluster).build())
        .send()
        .await
        .map_err(|e| fail("AssociateAccessPolicy", e))?;
    tracing::info!(cell = %scope.cell, %principal, "granted cluster-admin on the EKS cluster");
    Ok(())
}

/// The IAM ARN an access entry names for a caller: an assumed role's session
/// (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`) is the role `arn:aws:iam::ACCOUNT:role/NAME`;
/// users and roles are themselves.
pub(crate) fn principal_of(caller: &str) -> String {
    let Some((prefix, rest)) = caller.split_once(":assumed-role/") else { return caller.to_string() };
    let account = prefix.rsplit(':').next().unwrap_or_default();
    let partition = prefix.split(':').nth(1).unwrap_or("aws");
    let role = rest.split('/').next().unwrap_or(rest);
    format!("arn:{partition}:iam::{account}:role/{role}")
}

pub(crate) async fn delete_node_group(eks: &Client, scope: &CellScope, id: &str) -> Result<Progress<()>, CloudError> {
    let (cluster, name) = (cluster_name(scope), nodegroup_name(id));
    match describe_node_group(eks, cluster, name).await? {
        None => return Ok(Progress::Ready(())),
        Some(group) if group.status() == Some(&NodegroupStatus::Deleting) => {
            return Ok(Progress::Pending("DELETING".into()));
        }
        Some(_) => {}
    }
    let deleted = eks.delete_nodegroup().cluster_name(cluster).nodegroup_name(name).send().await;
    match deleted.map_err(|e| fail("DeleteNodegroup", e)) {
        Ok(_) => Ok(Progress::Pending("DELETING".into())),
        Err(e) if e.not_found() => Ok(Progress::Ready(())),
        Err(e) => Err(e.into()),
    }
}

/// The cell's cluster and node groups, if they still exist, as `kind name`.
pub(crate) async fn leftovers(eks: &Client, scope: &CellScope) -> Result<Vec<String>, CloudError> {
    let name = cluster_name(scope);
    match eks.describe_cluster().name(name).send().await.map_err(|e| fail("DescribeCluster", e)) {
        Err(e) if e.not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let groups = eks.list_nodegroups().cluster_name(name).send().await.map_err(|e| fail("ListNodegroups", e))?;
    let mut left = vec![format!("eks-cluster {name}")];
    left.extend(groups.nodegroups().iter().map(|g| format!("eks-nodegroup {name}/{g}")));
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::principal_of;

    #[test]
    fn an_access_entry_names_the_role_behind_an_assumed_role_session() {
        let session = "arn:aws:sts::111122223333:assumed-role/cellplane-operator/botocore-session-1";
        assert_eq!(principal_of(session), "arn:aws:iam::111122223333:role/cellplane-operator");
        let china = "arn:aws-cn:sts::111122223333:assumed-role/ops/s";
        assert_eq!(principal_of(china), "arn:aws-cn:iam::111122223333:role/ops");
        let user = "arn:aws:iam::111122223333:user/ci";
        assert_eq!(principal_of(user), user);
    }
}
