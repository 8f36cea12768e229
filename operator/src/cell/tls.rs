//! Real TLS on both ends of a tenant endpoint: the sim data plane's front doors (one TLS
//! listener on loopback per sim cell, routing by SNI to each namespace's server certificate and
//! requiring a client certificate from the namespace's accepted CA), and the connectivity
//! check (resolve, connect, full mutual-TLS handshake, server chain verified against the cell
//! CA and the endpoint name).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::CellError;

/// The TLS port tenant endpoints answer on.
pub const PORT: u16 = 443;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: &str, e: impl std::fmt::Display) -> CellError {
    CellError::Invalid(format!("{what}: {e}"))
}

/// Certificates of a PEM bundle.
pub fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, CellError> {
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(CellError::Invalid(format!("{what}: no certificate")));
    }
    Ok(certs)
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, CellError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(what, e))
}

fn roots(pem: &str, what: &str) -> Result<Arc<RootCertStore>, CellError> {
    let mut store = RootCertStore::empty();
    for cert in certs(pem, what)? {
        store.add(cert).map_err(|e| invalid(what, e))?;
    }
    Ok(Arc::new(store))
}

/// Finds the addresses of an endpoint host. Tests (and the sim data plane) replace DNS.
#[async_trait]
pub trait Resolve: Send + Sync + 'static {
    async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, CellError>;
}

/// The system resolver, port 443.
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, CellError> {
        match tokio::net::lookup_host((host, PORT)).await {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                if addrs.is_empty() {
                    Err(CellError::Transient(format!("{host} does not resolve yet")))
                } else {
                    Ok(addrs)
                }
            }
            // Not published yet, or not propagated: the step backs off and asks again.
            Err(e) => Err(CellError::Transient(format!("{host} does not resolve yet: {e}"))),
        }
    }
}

/// A route served by a front door: the namespace's TLS settings.
struct Route {
    config: Arc<ServerConfig>,
}

struct Door {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    task: AbortHandle,
}

/// The sim provider's data plane: one TLS listener per sim cell on 127.0.0.1, each routing
/// by SNI. It also answers DNS for the hosts it serves.
#[derive(Default)]
pub struct SimDataPlane {
    doors: Mutex<HashMap<String, Door>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for SimDataPlane {
    fn drop(&mut self) {
        for door in lock(&self.doors).values() {
            door.task.abort();
        }
    }
}

impl SimDataPlane {
    pub fn new() -> Arc<Self> {
        Arc::new(SimDataPlane::default())
    }

    /// Serves `host` on `cell`'s front door with the server certificate chain and key, accepting
    /// client certificates that chain to `client_ca_pem`. Returns the front door's address.
    pub async fn serve(
        &self,
        cell: &str,
        host: &str,
        server_chain_pem: &str,
        server_key_pem: &str,
        client_ca_pem: &str,
    ) -> Result<SocketAddr, CellError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca_pem, "client CA")?, provider())
            .build()
            .map_err(|e| invalid("client CA", e))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(server_chain_pem, "server certificate")?, key(server_key_pem, "server key")?)
            .map_err(|e| invalid("server certificate", e))?;
        let route = Route { config: Arc::new(config) };
        let (addr, routes) = self.door(cell).await?;
        lock(&routes).insert(host.to_string(), route);
        Ok(addr)
    }

    /// Stops serving `host` (nothing happens when it was not served).
    pub fn remove(&self, cell: &str, host: &str) {
        if let Some(door) = lock(&self.doors).get(cell) {
            lock(&door.routes).remove(host);
        }
    }

    /// Hosts a cell's front door serves, sorted.
    pub fn hosts(&self, cell: &str) -> Vec<String> {
        let mut hosts: Vec<String> =
            lock(&self.doors).get(cell).map(|d| lock(&d.routes).keys().cloned().collect()).unwrap_or_default();
        hosts.sort();
        hosts
    }

    /// The address of `cell`'s front door, if it has one.
    pub fn address(&self, cell: &str) -> Option<SocketAddr> {
        lock(&self.doors).get(cell).map(|d| d.addr)
    }

    async fn door(&self, cell: &str) -> Result<(SocketAddr, Arc<Mutex<HashMap<String, Route>>>), CellError> {
        if let Some(door) = lock(&self.doors).get(cell) {
            return Ok((door.addr, door.routes.clone()));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| CellError::Transient(format!("front door of {cell}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| CellError::Transient(e.to_string()))?;
        let mut doors = lock(&self.doors);
        // Another call may have opened it meanwhile; keep that one.
        if let Some(door) = doors.get(cell) {
            return Ok((door.addr, door.routes.clone()));
        }
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let task = tokio::spawn(accept_loop(cell.to_string(), listener, routes.clone())).abort_handle();
        tracing::debug!(%cell, %addr, "sim front door listening");
        doors.insert(cell.to_string(), Door { addr, routes: routes.clone(), task });
        Ok((addr, routes))
    }
}

async fn accept_loop(cell: String, listener: TcpListener, routes: Arc<Mutex<HashMap<String, Route>>>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let routes = routes.clone();
        let cell = cell.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &routes).await {
                tracing::debug!(%cell, %peer, error = %e, "front door connection refused");
            }
        });
    }
}

async fn handle(stream: TcpStream, routes: &Mutex<HashMap<String, Route>>) -> Result<(), String> {
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = tokio::time::timeout(Duration::from_secs(10), acceptor)
        .await
        .map_err(|_| "no ClientHello".to_string())?
        .map_err(|e| e.to_string())?;
    let host = start.client_hello().server_name().map(str::to_string).ok_or("no SNI")?;
    let config = lock(routes).get(&host).map(|r| r.config.clone()).ok_or_else(|| format!("no route for {host}"))?;
    let mut tls = start.into_stream(config).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let client = session.peer_certificates().map_or(0, <[_]>::len);
    tls.write_all(format!("cellplane sim endpoint {host}: hello, client ({client} certificates)\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())
}

#[async_trait]
impl Resolve for SimDataPlane {
    async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, CellError> {
        let doors = lock(&self.doors);
        doors
            .values()
            .find(|d| lock(&d.routes).contains_key(host))
            .map(|d| vec![d.addr])
            .ok_or_else(|| CellError::Transient(format!("{host} does not resolve yet (no front door serves it)")))
    }
}

/// What the client side of a check presents and trusts.
pub struct ProbeTls<'a> {
    /// The cell CA bundle the server certificate must chain to.
    pub server_roots_pem: &'a str,
    pub client_chain_pem: &'a str,
    pub client_key_pem: &'a str,
}

/// Resolves `host`, connects, completes a mutual-TLS handshake presenting the client
/// certificate, verifies the server certificate chains to the roots and names `host`, and
/// reads the server's first bytes (with TLS 1.3 a refused client certificate only shows up
/// as an alert after the client's side of the handshake is done). Returns what was verified.
pub async fn probe(resolver: &dyn Resolve, host: &str, tls: &ProbeTls<'_>) -> Result<String, CellError> {
    let addrs = resolver.resolve(host).await?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", e))?
        .with_root_certificates(roots(tls.server_roots_pem, "cell CA")?)
        .with_client_auth_cert(
            certs(tls.client_chain_pem, "client certificate")?,
            key(tls.client_key_pem, "client key")?,
        )
        .map_err(|e| invalid("client certificate", e))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(host.to_string()).map_err(|e| invalid("endpoint host", e))?;
    let mut last = String::new();
    for addr in addrs {
        let attempt = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            let mut stream = connector.connect(name.clone(), tcp).await.map_err(|e| format!("TLS handshake: {e}"))?;
            let (_, session) = stream.get_ref();
            let version = session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
            let mut first = [0u8; 1];
            // Data or silence both mean the client certificate was accepted.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut first)).await {
                return Err(format!("the server refused the client certificate: {e}"));
            }
            Ok::<_, String>(version)
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(version)) => {
                return Ok(format!(
                    "mutual TLS ({version}) with {host} at {addr}: server certificate chains to the cell CA and names the host; client certificate accepted"
                ));
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: timed out"),
        }
    }
    // A wrong certificate may be a route not yet updated: retry with backoff like any other.
    Err(CellError::Transient(format!("no mutual-TLS connection to {host}: {last}")))
}
