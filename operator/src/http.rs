//! Metrics and health on one port: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (the controllers run or the replica waits as a standby).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves until `shutdown`. `ready` answers `/readyz`.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let (registry, ready) = (registry.clone(), ready.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &registry, ready.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    registry: &Registry,
    ready: &(dyn Fn() -> bool + Send + Sync),
) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/metrics" => {
            let mut buffer = Vec::new();
            match TextEncoder::new().encode(&registry.gather(), &mut buffer) {
                Ok(()) => (StatusCode::OK, buffer),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string().into_bytes()),
            }
        }
        "/healthz" => (StatusCode::OK, b"ok\n".to_vec()),
        "/readyz" if ready() => (StatusCode::OK, b"ready\n".to_vec()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, b"not ready\n".to_vec()),
        _ => (StatusCode::NOT_FOUND, b"not found\n".to_vec()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
