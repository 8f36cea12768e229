//! cellplane: a Kubernetes operator for the control plane of a cell-based managed service.

pub mod api;
pub mod cell;
pub mod cli;
pub mod client;
pub mod cloud;
pub mod console;
pub mod controllers;
pub mod fixtures;
pub mod flows;
pub mod http;
pub mod kube_error;
pub mod operator;
pub mod testing;

/// This release of cellplane: recorded with every workflow it starts or runs, so that an older
/// replica never takes over what a newer one has run (see the README's "Upgrading cellplane").
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
