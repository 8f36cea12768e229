//! The cell's VPC: subnets in two availability zones, an internet gateway with a default route,
//! and the cluster's security group. EC2's CreateVpc takes no client token, so each create
//! first looks its resource up by the cell's tag: a retried or resumed step finds what the
//! first attempt made.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{Filter, InternetGateway, ResourceType, SecurityGroup, Subnet, Tag, TagSpecification, Vpc};
use cellplane_cloud::{CELL_TAG, CellScope, CloudError, Network, NetworkRequest, Progress};

use crate::error::fail;

/// Subnets per cell: EKS needs two availability zones at least.
const ZONES: usize = 2;

pub(crate) fn tags(scope: &CellScope, kind: ResourceType, name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .tags(Tag::builder().key(CELL_TAG).value(&scope.cell).build())
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

pub(crate) fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

pub(crate) fn cell_filter(scope: &CellScope) -> Filter {
    filter(&format!("tag:{CELL_TAG}"), &scope.cell)
}

/// The cell's network. Without a NAT gateway the nodes live in the public subnets; with one,
/// they live in private subnets whose route table sends the internet through it.
pub(crate) async fn create(ec2: &Client, key: &str, request: &NetworkRequest) -> Result<Network, CloudError> {
    let (scope, cidr) = (&request.scope, request.cidr.as_str());
    let vpc = match find_vpc(ec2, scope).await? {
        Some(vpc) => vpc,
        None => create_vpc(ec2, scope, cidr).await?,
    };
    let zones = zones(ec2).await?;
    let mut public = Vec::new();
    for (index, zone) in zones.iter().take(ZONES).enumerate() {
        public.push(subnet(ec2, scope, &vpc, cidr, Tier::Public, index, zone).await?);
    }
    let gateway = internet_gateway(ec2, scope, &vpc).await?;
    default_route(ec2, &vpc, &gateway).await?;
    security_group(ec2, scope, &vpc).await?;
    if !request.nat_gateway {
        return Ok(Network { id: vpc, subnet_ids: public, public_subnet_ids: Vec::new(), nat_gateway_id: None });
    }
    let mut private = Vec::new();
    for (index, zone) in zones.iter().take(ZONES).enumerate() {
        private.push(subnet(ec2, scope, &vpc, cidr, Tier::Private, ZONES + index, zone).await?);
    }
    let nat = crate::nat::gateway(ec2, key, scope, &public[0]).await?;
    crate::nat::private_routes(ec2, scope, &vpc, &nat, &private).await?;
    Ok(Network { id: vpc, subnet_ids: private, public_subnet_ids: public, nat_gateway_id: Some(nat) })
}

/// Public subnets hold the internet-facing load balancers (and the nodes without NAT);
/// private ones the nodes behind the NAT gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Public,
    Private,
}

async fn find_vpc(ec2: &Client, scope: &CellScope) -> Result<Option<String>, CloudError> {
    Ok(vpcs(ec2, vec![cell_filter(scope)]).await?.iter().find_map(|v| v.vpc_id().map(str::to_string)))
}

/// The VPCs, subnets, internet gateways and security groups that match `filters`: what a create
/// looks for first, a delete removes and the leak check lists.
async fn vpcs(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Vpc>, CloudError> {
    let found = ec2.describe_vpcs().set_filters(Some(filters)).send().await.map_err(|e| fail("DescribeVpcs", e))?;
    Ok(found.vpcs.unwrap_or_default())
}

async fn subnets(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<Subnet>, CloudError> {
    let found =
        ec2.describe_subnets().set_filters(Some(filters)).send().await.map_err(|e| fail("DescribeSubnets", e))?;
    Ok(found.subnets.unwrap_or_default())
}

async fn internet_gateways(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<InternetGateway>, CloudError> {
    let found = ec2.describe_internet_gateways().set_filters(Some(filters)).send().await;
    Ok(found.map_err(|e| fail("DescribeInternetGateways", e))?.internet_gateways.unwrap_or_default())
}

async fn security_groups(ec2: &Client, filters: Vec<Filter>) -> Result<Vec<SecurityGroup>, CloudError> {
    let found = ec2.describe_security_groups().set_filters(Some(filters)).send().await;
    Ok(found.map_err(|e| fail("DescribeSecurityGroups", e))?.security_groups.unwrap_or_default())
}

async fn create_vpc(ec2: &Client, scope: &CellScope, cidr: &str) -> Result<String, CloudError> {
    let created = ec2
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(tags(scope, ResourceType::Vpc, &scope.cell))
        .send()
        .await
        .map_err(|e| fail("CreateVpc", e))?;
    let id = created.vpc().and_then(|v| v.vpc_id()).map(str::to_string);
    let id = id.ok_or_else(|| CloudError::Transient("CreateVpc returned no VPC id".into()))?;
    tracing::info!(cell = %scope.cell, vpc = %id, "created VPC");
    Ok(id)
}

async fn zones(ec2: &Client) -> Result<Vec<String>, CloudError> {
    let found = ec2
        .describe_availability_zones()
        .filters(filter("state", "available"))
        .send()
        .await
        .map_err(|e| fail("DescribeAvailabilityZones", e))?;
    let mut zones: Vec<String> =
        found.availability_zones().iter().filter_map(|z| z.zone_name().map(str::to_string)).collect();
    zones.sort();
    if zones.len() < ZONES {
        return Err(CloudError::Invalid(format!(
            "the region has {} availability zones; EKS needs {ZONES}",
            zones.len()
        )));
    }
    Ok(zones)
}

async fn subnet(
    ec2: &Client,
    scope: &CellScope,
    vpc: &str,
    vpc_cidr: &str,
    tier: Tier,
    index: usize,
    zone: &str,
) -> Result<String, CloudError> {
    let name = match tier {
        Tier::Public => format!("{}-{zone}", scope.cell),
        Tier::Private => format!("{}-{zone}-private", scope.cell),
    };
    let found = subnets(ec2, vec![filter("vpc-id", vpc), filter("tag:Name", &name)]).await?;
    if let Some(id) = found.iter().find_map(|s| s.subnet_id()) {
        return Ok(id.to_string());
    }
    let cidr = subnet_cidr(vpc_cidr, index)?;
    let created = ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .availability_zone(zone)
        .tag_specifications(tags(scope, ResourceType::Subnet, &name))
        .send()
        .await
        .map_err(|e| fail("CreateSubnet", e))?;
    let id = created.subnet().and_then(|s| s.subnet_id()).map(str::to_string);
    let id = id.ok_or_else(|| CloudError::Transient("CreateSubnet returned no subnet id".into()))?;
    if tier == Tier::Private {
        return Ok(id);
    }
    // Nodes in the public subnets need an address to reach the control plane and registries.
    ec2.modify_subnet_attribute()
        .subnet_id(&id)
        .map_public_ip_on_launch(aws_sdk_ec2::types::AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .map_err(|e| fail("ModifySubnetAttribute", e))?;
    Ok(id)
}

/// The `index`th quarter of the VPC's block (two more bits of prefix).
pub(crate) fn subnet_cidr(vpc_cidr: &str, index: usize) -> Result<String, CloudError> {
    let invalid = || CloudError::Invalid(format!("{vpc_cidr:?} is not an IPv4 CIDR block"));
    let (address, prefix) = vpc_cidr.split_once('/').ok_or_else(invalid)?;
    let address: std::net::Ipv4Addr = address.parse().map_err(|_| invalid())?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    if !(8..=26).contains(&prefix) {
        return Err(CloudError::Invalid(format!("{vpc_cidr}: the prefix must be between /8 and /26")));
    }
    let size = 1u32 << (32 - prefix - 2);
    let base = u32::from(address) & !((1u32 << (32 - prefix)) - 1);
    let start = std::net::Ipv4Addr::from(base + size * index as u32);
    Ok(format!("{start}/{}", prefix + 2))
}

async fn internet_gateway(ec2: &Client, scope: &CellScope, vpc: &str) -> Result<String, CloudError> {
    let (id, attached) = match internet_gateways(ec2, vec![cell_filter(scope)]).await?.first() {
        Some(gateway) => {
            let attached = gateway.attachments().iter().any(|a| a.vpc_id() == Some(vpc));
            (gateway.internet_gateway_id().unwrap_or_default().to_string(), attached)
        }
        None => {
            let created = ec2
                .create_internet_gateway()
                .tag_specifications(tags(scope, ResourceType::InternetGateway, &scope.cell))
                .send()
                .await
                .map_err(|e| fail("CreateInternetGateway", e))?;
            let id = created.internet_gateway().and_then(|g| g.internet_gateway_id()).unwrap_or_default();
            (id.to_string(), false)
        }
    };
    if !attached {
        let result = ec2.attach_internet_gateway().internet_gateway_id(&id).vpc_id(vpc).send().await;
        if let Err(e) = result.map_err(|e| fail("AttachInternetGateway", e))
            && !e.is("Resource.AlreadyAssociated")
        {
            return Err(e.into());
        }
    }
    Ok(id)
}

/// 0.0.0.0/0 through the gateway in the VPC's main route table (which every subnet uses).
async fn default_route(ec2: &Client, vpc: &str, gateway: &str) -> Result<(), CloudError> {
    let tables = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", vpc))
        .filters(filter("association.main", "true"))
        .send()
        .await
        .map_err(|e| fail("DescribeRouteTables", e))?;
    let Some(table) = tables.route_tables().first() else {
        return Err(CloudError::Transient(format!("VPC {vpc} has no main route table yet")));
    };
    if table.routes().iter().any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")) {
        return Ok(());
    }
    let result = ec2
        .create_route()
        .route_table_id(table.route_table_id().unwrap_or_default())
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(gateway)
        .send()
        .await;
    match result.map_err(|e| fail("CreateRoute", e)) {
        Err(e) if !e.is("RouteAlreadyExists") => Err(e.into()),
        _ => Ok(()),
    }
}

/// The cluster's security group (EKS adds its own rules to the cluster security group it makes).
pub(crate) async fn security_group(ec2: &Client, scope: &CellScope, vpc: &str) -> Result<String, CloudError> {
    let found = security_groups(ec2, vec![filter("vpc-id", vpc), cell_filter(scope)]).await?;
    if let Some(id) = found.iter().find_map(|g| g.group_id()) {
        return Ok(id.to_string());
    }
    let name = format!("{}-cluster", scope.cell);
    let created = ec2
        .create_security_group()
        .group_name(&name)
        .description(format!("cellplane cell {}: EKS cluster", scope.cell))
        .vpc_id(vpc)
        .tag_specifications(tags(scope, ResourceType::SecurityGroup, &name))
        .send()
        .await
        .map_err(|e| fail("CreateSecurityGroup", e))?;
    Ok(created.group_id().unwrap_or_default().to_string())
}

/// Deletes what [`create`] made, found by tag, dependents first; Pending while EC2 still holds
/// them (network interfaces of a deleted cluster linger for minutes).
pub(crate) async fn delete(ec2: &Client, scope: &CellScope, vpc: &str) -> Result<Progress<()>, CloudError> {
    let groups = security_groups(ec2, vec![filter("vpc-id", vpc)]).await?;
    for group in groups.iter().filter(|g| g.group_name() != Some("default")) {
        let id = group.group_id().unwrap_or_default();
        let deleted = ec2.delete_security_group().group_id(id).send().await.map_err(|e| fail("DeleteSecurityGroup", e));
        if let Some(pending) = gone_or_pending(deleted, &format!("security group {id}"))? {
            return Ok(pending);
        }
    }
    if let Progress::Pending(what) = crate::nat::delete(ec2, scope).await? {
        return Ok(Progress::Pending(what));
    }
    for gateway in internet_gateways(ec2, vec![cell_filter(scope)]).await? {
        let id = gateway.internet_gateway_id().unwrap_or_default();
        for attachment in gateway.attachments() {
            let vpc_id = attachment.vpc_id().unwrap_or_default();
            let detached = ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc_id).send().await;
            gone_or_pending(detached.map_err(|e| fail("DetachInternetGateway", e)), id)?;
        }
        let deleted = ec2.delete_internet_gateway().internet_gateway_id(id).send().await;
        gone_or_pending(deleted.map_err(|e| fail("DeleteInternetGateway", e)), id)?;
    }
    for subnet in subnets(ec2, vec![filter("vpc-id", vpc)]).await? {
        let id = subnet.subnet_id().unwrap_or_default();
        let deleted = ec2.delete_subnet().subnet_id(id).send().await.map_err(|e| fail("DeleteSubnet", e));
        if let Some(pending) = gone_or_pending(deleted, &format!("subnet {id}"))? {
            return Ok(pending);
        }
    }
    if let Progress::Pending(what) = crate::nat::delete_routes(ec2, scope).await? {
        return Ok(Progress::Pending(what));
    }
    let deleted = ec2.delete_vpc().vpc_id(vpc).send().await.map_err(|e| fail("DeleteVpc", e));
    Ok(gone_or_pending(deleted, &format!("VPC {vpc}"))?.unwrap_or(Progress::Ready(())))
}

/// A delete's outcome: done or already gone (None), still in use (Pending), or an error.
pub(crate) fn gone_or_pending<T>(
    result: Result<T, crate::error::Failure>,
    what: &str,
) -> Result<Option<Progress<()>>, CloudError> {
    match result {
        Ok(_) => Ok(None),
        Err(e) if e.not_found() || e.is("Gateway.NotAttached") => Ok(None),
        Err(e) if e.is("DependencyViolation") || e.is("InvalidGroup.InUse") => {
            Ok(Some(Progress::Pending(format!("{what} still in use: {}", e.error))))
        }
        Err(e) => Err(e.into()),
    }
}

/// The cell's EC2 resources, found by its tag, as `kind id`.
pub(crate) async fn leftovers(ec2: &Client, scope: &CellScope) -> Result<Vec<String>, CloudError> {
    let mine = || vec![cell_filter(scope)];
    let named = |kind: &str, id: Option<&str>| id.map(|id| format!("{kind} {id}"));
    let mut left: Vec<String> = vpcs(ec2, mine()).await?.iter().filter_map(|v| named("vpc", v.vpc_id())).collect();
    left.extend(subnets(ec2, mine()).await?.iter().filter_map(|s| named("subnet", s.subnet_id())));
    let gateways = internet_gateways(ec2, mine()).await?;
    left.extend(gateways.iter().filter_map(|g| named("internet-gateway", g.internet_gateway_id())));
    left.extend(security_groups(ec2, mine()).await?.iter().filter_map(|g| named("security-group", g.group_id())));
    left.extend(crate::nat::leftovers(ec2, scope).await?);
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_quarters_of_the_vpc_block() {
        assert_eq!(subnet_cidr("10.20.0.0/16", 0).unwrap(), "10.20.0.0/18");
        assert_eq!(subnet_cidr("10.20.0.0/16", 1).unwrap(), "10.20.64.0/18");
        assert!(subnet_cidr("10.20.0.0/28", 0).is_err());
        assert!(subnet_cidr("nonsense", 0).is_err());
    }
}
