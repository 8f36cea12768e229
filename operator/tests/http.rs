//! Metrics and health on one port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_health_and_readiness_answer_on_one_port() {
    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounter::new("cellplane_test_total", "a test counter").unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    counter.inc();
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(cellplane::http::serve(
        listener,
        registry,
        Arc::new(move || flag.load(Ordering::SeqCst)),
        shutdown.clone(),
    ));

    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"), "not ready before the controllers run");
    ready.store(true, Ordering::SeqCst);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/metrics").await.contains("cellplane_test_total 1"));
    assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    shutdown.cancel();
}
