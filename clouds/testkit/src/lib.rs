//! Protocol peers on loopback for the cloud providers' tests:
//! - [`moto::Moto`]: moto's server (EC2, EKS, STS), installed from PyPI into its own virtualenv
//!   under the target directory when missing, behind [`moto::MotoProxy`], which adds what moto
//!   lacks (CREATING, UPDATING and DELETING states, EKS version updates, a real cluster CA) and injects faults
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

/// A self-signed CA certificate as EKS and GKE hand a cluster's out: base64 of its PEM.
fn cluster_ca() -> Result<String, PeerError> {
    use base64::Engine;
    let failed = |e: rcgen::Error| PeerError::Failed(format!("the fake cluster CA: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "cellplane-testkit-cluster-ca");
    let pem = params.self_signed(&key).map_err(failed)?.pem();
    Ok(base64::engine::general_purpose::STANDARD.encode(pem))
}
