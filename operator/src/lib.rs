//! cellplane: a Kubernetes operator for the control plane of a cell-based managed service.

pub mod api;
pub mod cell;
pub mod cloud;
pub mod flows;
pub mod controllers;
pub mod http;
pub mod operator;
pub mod fixtures;
pub mod cli;
