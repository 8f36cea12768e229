//! The web console: server-rendered pages over the cellplane resources and the workflow
//! journal, with a little JavaScript for live updates (server-sent events from Kubernetes
//! watches).
//!
//! It acts as the person using it: outside the sandbox every Kubernetes request carries the
//! user's own bearer token ([`auth`]), so Kubernetes RBAC decides what they see and may do, and
//! buttons a user may not use are not shown (SelfSubjectAccessReview). The operator's own
//! credentials are never used for a browser's request. Secret values are never read.
//!
//! One file per concern: [`server`] (listener, TLS, routing, responses), [`auth`] (sessions,
//! login, CSRF, permissions), [`html`] (escaping and the page layout), [`live`] (server-sent
//! events), [`assets`] (CSS and JavaScript), and [`pages`] (one module per area).

pub mod assets;
pub mod auth;
pub mod html;
pub mod live;
pub mod pages;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cellplane_workflows::journal::Journal;
use http::StatusCode;

pub use auth::Access;
pub use server::{Console, Tls, serve};

/// What goes wrong while answering a request, and how it reads to the user.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The Kubernetes API refused or failed; its own message is shown.
    #[error("{}", crate::kube_error::describe(.0))]
    Kube(#[from] kube::Error),
    #[error("workflow journal: {0}")]
    Journal(#[from] cellplane_workflows::Error),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
}

impl ConsoleError {
    /// The HTTP status the error is answered with (the API server's own for API errors).
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Kube(e) => crate::kube_error::code(e)
                .and_then(|code| StatusCode::from_u16(code).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            ConsoleError::Journal(cellplane_workflows::Error::NotFound(_)) | ConsoleError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ConsoleError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot serve the console on {addr}: {source} (choose another --console-addr)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("console TLS: cannot read {path}: {source}")]
    ReadTls { path: PathBuf, source: std::io::Error },
    #[error("console TLS: {0}")]
    Tls(String),
}

/// How `cellplane run`, `sandbox` and `console` start the console.
pub struct Options {
    pub addr: SocketAddr,
    pub access: Access,
    pub journal: Option<Arc<dyn Journal>>,
    pub tls: Tls,
}

/// Binds the console's address, prepares TLS and serves in the background until `shutdown`;
/// returns the URL to open.
pub async fn start(options: Options, shutdown: tokio_util::sync::CancellationToken) -> Result<String, StartError> {
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|source| StartError::Bind { addr: options.addr, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: options.addr, source })?;
    let console = Arc::new(Console::new(addr, options.access, options.journal, options.tls)?);
    let url = console.url();
    tracing::info!(%url, "serving the web console");
    tokio::spawn(serve(listener, console, shutdown));
    Ok(url)
}

/// The console's command-line options, shared by `run`, `sandbox` and `console`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConsoleArgs {
    /// Serve the web console on this address (e.g. 127.0.0.1:8090). Off loopback it always
    /// uses TLS: the certificate below, else a self-signed one, flagged on every page.
    #[arg(long)]
    pub console_addr: Option<SocketAddr>,
    /// The console's certificate chain, PEM (with --console-tls-key).
    #[arg(long, requires = "console_tls_key")]
    pub console_tls_cert: Option<PathBuf>,
    /// The console certificate's private key, PEM.
    #[arg(long, requires = "console_tls_cert")]
    pub console_tls_key: Option<PathBuf>,
}

impl ConsoleArgs {
    pub fn tls(&self) -> Tls {
        match (&self.console_tls_cert, &self.console_tls_key) {
            (Some(cert), Some(key)) => Tls::Files { cert: cert.clone(), key: key.clone() },
            _ => Tls::Off,
        }
    }

    /// Starts the console when an address is given; returns its URL.
    pub async fn start(
        &self,
        access: Access,
        journal: Option<Arc<dyn Journal>>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Option<String>, StartError> {
        let Some(addr) = self.console_addr else { return Ok(None) };
        start(Options { addr, access, journal, tls: self.tls() }, shutdown).await.map(Some)
    }
}
