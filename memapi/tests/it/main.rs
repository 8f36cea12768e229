//! Compatibility tests: real kube clients and kube::runtime against the server.

mod common;
mod crud;
mod finalizers;
mod hooks;
mod namespaces;
mod over_http;
mod patches;
mod reference;
mod routing;
mod selectors;
mod validation;
mod watches;
