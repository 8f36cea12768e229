//! Compatibility tests: real kube clients and kube::runtime against the server.

mod common;
mod crud;
mod finalizers;
mod hooks;
mod over_http;
mod patches;
mod selectors;
mod watches;
