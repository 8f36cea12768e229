//! Protocol peers on loopback for the cloud providers' tests:
//! - [`moto::Moto`]: moto's server (EC2, EKS, STS), installed from PyPI into its own virtualenv
//!   under the target directory when missing, behind [`moto::MotoProxy`], which adds what moto
//!   lacks (CREATING, UPDATING and DELETING states, EKS version updates) and injects faults
//!   (throttling, 5xx);
//! - [`gke::GkeFake`]: a fake of the GKE REST API, faithful where the provider depends on it:
//!   operations go PENDING, RUNNING, DONE; a duplicate create answers 409 ALREADY_EXISTS; a
//!   deleted cluster answers 404.

pub mod gke;
pub mod moto;
mod serve;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

/// The cargo target directory the running test belongs to (where the peers' installs live).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors().nth(3).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"))
}
