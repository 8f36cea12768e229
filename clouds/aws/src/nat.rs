//! The NAT gateway of a cell that keeps its nodes in private subnets: an Elastic IP, the
//! gateway in the first public subnet, and the private subnets' route table sending the
//! internet through it. Each is found by the cell's tag before it is made, like the rest of
//! the network; the gateway also carries the step's key as its client token.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{DomainType, NatGatewayState, ResourceType};
use cellplane_cloud::{CELL_TAG, CellScope, CloudError, Progress};

use crate::error::fail;
use crate::network::{cell_filter, gone_or_pending, tags};

/// The gateway's id once it is available; a transient error while AWS still creates it (the
/// step retries with backoff, as for any call that is not done yet).
pub(crate) async fn gateway(ec2: &Client, key: &str, scope: &CellScope, subnet: &str) -> Result<String, CloudError> {
    if let Some((id, state)) = live_gateways(ec2, scope).await?.into_iter().next() {
        return match state {
            NatGatewayState::Available => Ok(id),
            NatGatewayState::Failed => Err(CloudError::Invalid(format!("NAT gateway {id} failed"))),
            other => Err(CloudError::Transient(format!("NAT gateway {id} is {other}"))),
        };
    }
    let allocation = elastic_ip(ec2, scope).await?;
    let name = format!("{}-nat", scope.cell);
    let created = ec2
        .create_nat_gateway()
        .subnet_id(subnet)
        .allocation_id(allocation)
        .client_token(key)
        .tag_specifications(tags(scope, ResourceType::Natgateway, &name))
        .send()
        .await
        .map_err(|e| fail("CreateNatGateway", e))?;
    let gateway = created.nat_gateway();
    let id = gateway.and_then(|g| g.nat_gateway_id()).unwrap_or_default().to_string();
    tracing::info!(cell = %scope.cell, nat_gateway = %id, "creating NAT gateway");
    match gateway.and_then(|g| g.state()) {
        Some(NatGatewayState::Available) => Ok(id),
        _ => Err(CloudError::Transient(format!("NAT gateway {id} is pending"))),
    }
}

/// The cell's NAT gateways that exist or are on their way, with their state.
async fn live_gateways(ec2: &Client, scope: &CellScope) -> Result<Vec<(String, NatGatewayState)>, CloudError> {
    let found = ec2
        .describe_nat_gateways()
        .filter(cell_filter(scope))
        .send()
        .await
        .map_err(|e| fail("DescribeNatGateways", e))?;
    // The tag is checked here too: not every EC2 endpoint (moto) honours tag filters here.
    let mine = |g: &&aws_sdk_ec2::types::NatGateway| {
        g.tags().iter().any(|t| t.key() == Some(CELL_TAG) && t.value() == Some(scope.cell.as_str()))
    };
    let live = found.nat_gateways().iter().filter(mine).filter(|g| g.state() != Some(&NatGatewayState::Deleted));
    Ok(live
        .filter_map(|g| Some((g.nat_gateway_id()?.to_string(), g.state().cloned().unwrap_or(NatGatewayState::Pending))))
        .collect())
}

async fn elastic_ips(ec2: &Client, scope: &CellScope) -> Result<Vec<String>, CloudError> {
    let found =
        ec2.describe_addresses().filters(cell_filter(scope)).send().await.map_err(|e| fail("DescribeAddresses", e))?;
    Ok(found.addresses().iter().filter_map(|a| a.allocation_id().map(str::to_string)).collect())
}

async fn elastic_ip(ec2: &Client, scope: &CellScope) -> Result<String, CloudError> {
    if let Some(id) = elastic_ips(ec2, scope).await?.into_iter().next() {
        return Ok(id);
    }
    let allocated = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(tags(scope, ResourceType::ElasticIp, &format!("{}-nat", scope.cell)))
        .send()
        .await
        .map_err(|e| fail("AllocateAddress", e))?;
    allocated
        .allocation_id()
        .map(str::to_string)
        .ok_or_else(|| CloudError::Transient("AllocateAddress returned no id".into()))
}

async fn route_tables(ec2: &Client, scope: &CellScope) -> Result<Vec<aws_sdk_ec2::types::RouteTable>, CloudError> {
    let found = ec2
        .describe_route_tables()
        .filters(cell_filter(scope))
        .send()
        .await
        .map_err(|e| fail("DescribeRouteTables", e))?;
    Ok(found.route_tables().to_vec())
}

/// The private subnets' route table: the internet through the NAT gateway.
pub(crate) async fn private_routes(
    ec2: &Client,
    scope: &CellScope,
    vpc: &str,
    nat: &str,
    subnets: &[String],
) -> Result<(), CloudError> {
    let table = match route_tables(ec2, scope).await?.into_iter().next() {
        Some(table) => table,
        None => {
            let name = format!("{}-private", scope.cell);
            let created = ec2
                .create_route_table()
                .vpc_id(vpc)
                .tag_specifications(tags(scope, ResourceType::RouteTable, &name))
                .send()
                .await
                .map_err(|e| fail("CreateRouteTable", e))?;
            created
                .route_table()
                .cloned()
                .ok_or_else(|| CloudError::Transient("CreateRouteTable returned none".into()))?
        }
    };
    let id = table.route_table_id().unwrap_or_default();
    if !table.routes().iter().any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")) {
        let result =
            ec2.create_route().route_table_id(id).destination_cidr_block("0.0.0.0/0").nat_gateway_id(nat).send().await;
        if let Err(e) = result.map_err(|e| fail("CreateRoute", e))
            && !e.is("RouteAlreadyExists")
        {
            return Err(e.into());
        }
    }
    for subnet in subnets {
        if table.associations().iter().any(|a| a.subnet_id() == Some(subnet)) {
            continue;
        }
        let result = ec2.associate_route_table().route_table_id(id).subnet_id(subnet).send().await;
        if let Err(e) = result.map_err(|e| fail("AssociateRouteTable", e))
            && !e.is("Resource.AlreadyAssociated")
        {
            return Err(e.into());
        }
    }
    Ok(())
}

/// Deletes the NAT gateway and releases its address; Pending until the gateway is gone (AWS
/// takes a minute or two, and the address stays in use until then).
pub(crate) async fn delete(ec2: &Client, scope: &CellScope) -> Result<Progress<()>, CloudError> {
    let gateways = live_gateways(ec2, scope).await?;
    for (id, state) in &gateways {
        if *state != NatGatewayState::Deleting {
            let deleted = ec2.delete_nat_gateway().nat_gateway_id(id).send().await;
            gone_or_pending(deleted.map_err(|e| fail("DeleteNatGateway", e)), id)?;
        }
    }
    if let Some((id, _)) = gateways.first() {
        return Ok(Progress::Pending(format!("NAT gateway {id} deleting")));
    }
    for allocation in elastic_ips(ec2, scope).await? {
        let released = ec2.release_address().allocation_id(&allocation).send().await;
        match released.map_err(|e| fail("ReleaseAddress", e)) {
            Err(e) if e.is("InvalidIPAddress.InUse") || e.is("AuthFailure") => {
                return Ok(Progress::Pending(format!("Elastic IP {allocation} still in use")));
            }
            Err(e) if !e.not_found() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(Progress::Ready(()))
}

/// Deletes the private route table once its subnets are gone.
pub(crate) async fn delete_routes(ec2: &Client, scope: &CellScope) -> Result<Progress<()>, CloudError> {
    for table in route_tables(ec2, scope).await? {
        let id = table.route_table_id().unwrap_or_default();
        for association in table.associations().iter().filter(|a| a.main() != Some(true)) {
            let association = association.route_table_association_id().unwrap_or_default();
            let result = ec2.disassociate_route_table().association_id(association).send().await;
            gone_or_pending(result.map_err(|e| fail("DisassociateRouteTable", e)), association)?;
        }
        let deleted = ec2.delete_route_table().route_table_id(id).send().await;
        if let Some(pending) =
            gone_or_pending(deleted.map_err(|e| fail("DeleteRouteTable", e)), &format!("route table {id}"))?
        {
            return Ok(pending);
        }
    }
    Ok(Progress::Ready(()))
}

/// The cell's NAT gateways, Elastic IPs and route tables, as `kind id`.
pub(crate) async fn leftovers(ec2: &Client, scope: &CellScope) -> Result<Vec<String>, CloudError> {
    let mut left: Vec<String> =
        live_gateways(ec2, scope).await?.into_iter().map(|(id, _)| format!("nat-gateway {id}")).collect();
    left.extend(elastic_ips(ec2, scope).await?.into_iter().map(|id| format!("elastic-ip {id}")));
    let tables = route_tables(ec2, scope).await?;
    left.extend(tables.iter().filter_map(|t| t.route_table_id()).map(|id| format!("route-table {id}")));
    Ok(left)
}
