//! The cloud a cell lives in: the provider abstraction and the simulated cloud come from the
//! `cellplane-cloud` crate; the real providers (`cellplane-cloud-aws`, `cellplane-cloud-gcp`)
//! are linked in by the `aws` and `gcp` features ([`providers`]).

pub mod providers;
pub mod workloads;

pub use cellplane_cloud::*;
