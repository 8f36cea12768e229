//! Compatibility tests: real kube clients and kube::runtime against the server.

#[cfg(feature = "cel")]
mod cel;
mod common;
mod crud;
mod discovery;
mod finalizers;
mod hooks;
mod kubectl;
mod managed;
mod namespaces;
mod over_http;
mod patches;
mod reference;
mod routing;
mod selectors;
mod statuses;
mod tables;
mod validation;
mod watches;
