//! Tenant ingress routes in a cell's cluster: a Gateway API `TLSRoute` (TLS passthrough) when
//! the cluster serves that kind, else a networking.k8s.io/v1 `Ingress` with the cell's class
//! and annotations. Written with server-side apply (idempotent), labelled with the tenant's
//! identity, deleted by the teardown (never left to garbage collection: the route lives in
//! another namespace, often another cluster, than the tenant's Namespace object).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use super::{CellContext, CellError, Tenant, kube_error, names};
use crate::api::namespace::TenantId;

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Labels on everything the operator creates for a tenant.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "cellplane");
pub const NAMESPACE_LABEL: &str = "cellplane.io/namespace";
pub const ACCOUNT_LABEL: &str = "cellplane.io/account";
pub const CELL_LABEL: &str = "cellplane.io/cell";

/// The route's kind and name as recorded in status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

pub fn labels(cell: &str, tenant: &TenantId) -> BTreeMap<String, String> {
    [
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (NAMESPACE_LABEL.to_string(), tenant.name.clone()),
        (ACCOUNT_LABEL.to_string(), tenant.account.clone()),
        (CELL_LABEL.to_string(), cell.to_string()),
    ]
    .into()
}

/// The served TLSRoute version, if the cluster has Gateway API's TLSRoute CRD.
pub async fn tls_route_resource(client: &Client) -> Result<Option<ApiResource>, CellError> {
    let groups = client.list_api_groups().await.map_err(|e| kube_error("API discovery", e))?;
    let Some(group) = groups.groups.iter().find(|g| g.name == GATEWAY_GROUP) else { return Ok(None) };
    let mut versions: Vec<String> = group.preferred_version.iter().map(|v| v.group_version.clone()).collect();
    versions.extend(group.versions.iter().map(|v| v.group_version.clone()));
    for group_version in versions {
        let resources =
            client.list_api_group_resources(&group_version).await.map_err(|e| kube_error("API discovery", e))?;
        if resources.resources.iter().any(|r| r.name == "tlsroutes") {
            let version = group_version.rsplit('/').next().unwrap_or_default().to_string();
            return Ok(Some(ApiResource {
                group: GATEWAY_GROUP.into(),
                version,
                api_version: group_version.clone(),
                kind: "TLSRoute".into(),
                plural: "tlsroutes".into(),
            }));
        }
    }
    Ok(None)
}

/// Where a tenant's route sends traffic: the Service of the cell's release that is its front
/// door, else a Service named like the route.
fn backend(cell: &CellContext, route: &str) -> (String, i32) {
    match &cell.front_door {
        Some(door) => (door.service.clone(), door.port),
        None => (route.to_string(), 443),
    }
}

/// The namespace of a tenant's route in the cell's cluster: the front door's (a route reaches
/// only Services of its own namespace), else `default`.
pub fn namespace_of<'a>(cell: &'a CellContext, default: &'a str) -> &'a str {
    cell.front_door.as_ref().map_or(default, |door| door.namespace.as_str())
}

/// Creates or updates the route for the tenant endpoint.
pub async fn apply(
    client: &Client,
    namespace: &str,
    cell: &CellContext,
    tenant: &Tenant,
) -> Result<RouteRef, CellError> {
    let name = names::route(&tenant.id);
    let (service, port) = backend(cell, &name);
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(&cell.name, &tenant.id)),
        annotations: (!cell.ingress.annotations.is_empty()).then(|| cell.ingress.annotations.clone()),
        ..ObjectMeta::default()
    };
    let params = PatchParams::apply(crate::api::MANAGER).force();
    if let Some(resource) = tls_route_resource(client).await? {
        let gateway = cell.ingress.gateway.clone().unwrap_or_default();
        let mut parent = serde_json::json!({ "name": gateway.name.unwrap_or_else(|| "cellplane".into()) });
        if let Some(ns) = gateway.namespace {
            parent["namespace"] = ns.into();
        }
        if let Some(section) = gateway.section_name {
            parent["sectionName"] = section.into();
        }
        let mut route = DynamicObject::new(&name, &resource).within(namespace);
        route.metadata = metadata;
        route.data = serde_json::json!({
            "spec": {
                "parentRefs": [parent],
                "hostnames": [tenant.endpoint],
                "rules": [{ "backendRefs": [{ "name": service, "port": port }] }],
            }
        });
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        api.patch(&name, &params, &Patch::Apply(&route)).await.map_err(|e| kube_error("applying the TLSRoute", e))?;
        return Ok(RouteRef { kind: "TLSRoute", namespace: namespace.into(), name });
    }
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: service,
            port: Some(ServiceBackendPort { number: Some(port), name: None }),
        }),
        resource: None,
    };
    let ingress = Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: cell.ingress.class_name.clone(),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![tenant.endpoint.clone()]),
                secret_name: Some(names::server(&tenant.id)),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(tenant.endpoint.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath { path: Some("/".into()), path_type: "Prefix".into(), backend }],
                }),
            }]),
            default_backend: None,
        }),
        status: None,
    };
    let mut value = serde_json::to_value(&ingress).map_err(|e| CellError::Invalid(e.to_string()))?;
    value["apiVersion"] = "networking.k8s.io/v1".into();
    value["kind"] = "Ingress".into();
    let api: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    api.patch(&name, &params, &Patch::Apply(&value)).await.map_err(|e| kube_error("applying the Ingress", e))?;
    Ok(RouteRef { kind: "Ingress", namespace: namespace.into(), name })
}

/// Whether the tenant's route exists (of either kind).
pub async fn exists(client: &Client, namespace: &str, tenant: &TenantId) -> Result<bool, CellError> {
    let name = names::route(tenant);
    if let Some(resource) = tls_route_resource(client).await? {
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        if routes.get_opt(&name).await.map_err(|e| kube_error("reading the TLSRoute", e))?.is_some() {
            return Ok(true);
        }
    }
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    Ok(ingresses.get_opt(&name).await.map_err(|e| kube_error("reading the Ingress", e))?.is_some())
}

/// Deletes the tenant's route of either kind; what is already gone is fine.
pub async fn delete(client: &Client, namespace: &str, tenant: &TenantId) -> Result<(), CellError> {
    let name = names::route(tenant);
    let gone = |r: Result<_, kube::Error>, what: &str| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(kube_error(what, e)),
    };
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    gone(ingresses.delete(&name, &DeleteParams::default()).await.map(|_| ()), "deleting the Ingress")?;
    if let Some(resource) = tls_route_resource(client).await? {
        let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        gone(routes.delete(&name, &DeleteParams::default()).await.map(|_| ()), "deleting the TLSRoute")?;
    }
    Ok(())
}
