//! networking.k8s.io/v1 Ingress (pkg/apis/networking/validation).

use std::net::IpAddr;

use serde_json::Value;

use super::{each, names, text};
use crate::error::Cause;

const PATH_TYPES: [&str; 3] = ["Exact", "ImplementationSpecific", "Prefix"];
const INVALID_PATH_SEQUENCES: [&str; 5] = ["//", "/./", "/../", "%2f", "%2F"];
const INVALID_PATH_SUFFIXES: [&str; 2] = ["/..", "/."];
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn items(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

pub fn ingress(obj: &Value) -> Vec<Cause> {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let rules = spec.get("rules");
    let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
    let mut causes = Vec::new();
    if items(rules).is_empty() && default_backend.is_none() {
        // The apiserver shows the list as JSON: `[]` when empty, `null` when absent.
        let shown = if rules.is_some_and(Value::is_array) { "[]" } else { "null" };
        causes.push(Cause::invalid_shown("spec", shown, "either `defaultBackend` or `rules` must be specified"));
    }
    if let Some(backend) = default_backend {
        causes.extend(backend_causes(backend, "spec.defaultBackend"));
    }
    for (i, rule) in items(rules).iter().enumerate() {
        causes.extend(rule_causes(rule, &format!("spec.rules[{i}]")));
    }
    for (i, tls) in items(spec.get("tls")).iter().enumerate() {
        causes.extend(tls_causes(tls, &format!("spec.tls[{i}]")));
    }
    if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str) {
        causes.extend(each("spec.ingressClassName", class, names::dns1123_subdomain(class)));
        let annotated = text(obj, &format!("/metadata/annotations/{}", CLASS_ANNOTATION.replace('/', "~1")));
        if !annotated.is_empty() && annotated != class {
            let field = format!("annotations.{CLASS_ANNOTATION}");
            causes.push(Cause::invalid(&field, annotated, "must match `ingressClassName` when both are specified"));
        }
    }
    causes
}

/// A rule's or a TLS entry's host: a DNS subdomain, a wildcard only as the first label.
fn host_causes(field: &str, host: &str) -> Vec<Cause> {
    let messages =
        if host.contains('*') { names::wildcard_dns1123_subdomain(host) } else { names::dns1123_subdomain(host) };
    each(field, host, messages).collect()
}

fn rule_causes(rule: &Value, at: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let host = text(rule, "/host");
    if !host.is_empty() {
        if host.parse::<IpAddr>().is_ok() {
            causes.push(Cause::invalid(&format!("{at}.host"), host, "must be a DNS name, not an IP address"));
        }
        causes.extend(host_causes(&format!("{at}.host"), host));
    }
    if let Some(http) = rule.get("http").filter(|h| !h.is_null()) {
        let paths = items(http.get("paths"));
        if paths.is_empty() {
            causes.push(Cause::required(&format!("{at}.http.paths"), ""));
        }
        for (j, path) in paths.iter().enumerate() {
            causes.extend(path_causes(path, &format!("{at}.http.paths[{j}]")));
        }
    }
    causes
}

fn path_causes(path: &Value, at: &str) -> Vec<Cause> {
    let Some(path_type) = path.get("pathType").and_then(Value::as_str) else {
        return vec![Cause::required(&format!("{at}.pathType"), "pathType must be specified")];
    };
    let value = text(path, "/path");
    let field = format!("{at}.path");
    let mut causes = Vec::new();
    let absolute = |causes: &mut Vec<Cause>| {
        if !value.starts_with('/') {
            causes.push(Cause::invalid(&field, value, "must be an absolute path"));
        }
    };
    match path_type {
        "Exact" | "Prefix" => {
            absolute(&mut causes);
            for seq in INVALID_PATH_SEQUENCES.iter().filter(|s| !value.is_empty() && value.contains(*s)) {
                causes.push(Cause::invalid(&field, value, &format!("must not contain '{seq}'")));
            }
            for suffix in INVALID_PATH_SUFFIXES.iter().filter(|s| !value.is_empty() && value.ends_with(*s)) {
                causes.push(Cause::invalid(&field, value, &format!("cannot end with '{suffix}'")));
            }
        }
        "ImplementationSpecific" if !value.is_empty() => absolute(&mut causes),
        "ImplementationSpecific" => {}
        other => causes.push(Cause::not_supported(&format!("{at}.pathType"), other, &PATH_TYPES)),
    }
    let backend = path.get("backend").cloned().unwrap_or(Value::Null);
    causes.extend(backend_causes(&backend, &format!("{at}.backend")));
    causes
}

fn backend_causes(backend: &Value, at: &str) -> Vec<Cause> {
    let service = backend.get("service").filter(|s| !s.is_null());
    let resource = backend.get("resource").filter(|r| !r.is_null());
    match (service, resource) {
        (Some(_), Some(_)) => vec![Cause::invalid(at, "", "cannot set both resource and service backends")],
        (None, Some(resource)) => resource_causes(resource, &format!("{at}.resource")),
        (Some(service), None) => service_causes(service, at),
        (None, None) => vec![Cause::invalid(at, "", "resource or service backend is required")],
    }
}

fn service_causes(service: &Value, at: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = text(service, "/name");
    let name_field = format!("{at}.service.name");
    if name.is_empty() {
        causes.push(Cause::required(&name_field, ""));
    } else {
        // A DNS-1123 label, as Kubernetes 1.37 checks it (a DNS-1035 label before Service names
        // were relaxed).
        causes.extend(each(&name_field, name, names::dns1123_label(name)));
    }
    let port_name = text(service, "/port/name");
    let port_number = service.pointer("/port/number").and_then(Value::as_i64).unwrap_or(0);
    match (port_name.is_empty(), port_number == 0) {
        (false, false) => causes.push(Cause::invalid(at, "", "cannot set both port name & port number")),
        (false, true) => {
            causes.extend(each(&format!("{at}.service.port.name"), port_name, names::port_name(port_name)))
        }
        (true, false) => {
            let field = format!("{at}.service.port.number");
            let shown = port_number.to_string();
            causes.extend(names::port_number(port_number).iter().map(|m| Cause::invalid_shown(&field, &shown, m)));
        }
        (true, true) => causes.push(Cause::required(at, "port name or number is required")),
    }
    causes
}

fn resource_causes(resource: &Value, at: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(group) = resource.get("apiGroup").and_then(Value::as_str) {
        causes.extend(each(&format!("{at}.apiGroup"), group, names::dns1123_subdomain(group)));
    }
    for field in ["kind", "name"] {
        let value = text(resource, &format!("/{field}"));
        let path = format!("{at}.{field}");
        if value.is_empty() {
            causes.push(Cause::required(&path, ""));
        } else {
            causes.extend(each(&path, value, names::path_segment_name(value)));
        }
    }
    causes
}

fn tls_causes(tls: &Value, at: &str) -> Vec<Cause> {
    let hosts = items(tls.get("hosts"));
    let mut causes: Vec<Cause> = hosts
        .iter()
        .enumerate()
        .flat_map(|(i, h)| host_causes(&format!("{at}.hosts[{i}]"), h.as_str().unwrap_or_default()))
        .collect();
    let secret = text(tls, "/secretName");
    if !secret.is_empty() {
        causes.extend(each(&format!("{at}.secretName"), secret, names::dns1123_subdomain(secret)));
    }
    causes
}
