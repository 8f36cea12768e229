//! Charts for the tests: the real Helm with a home of its own, and chart repositories served
//! over HTTP on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The Helm to test with: `HELM` (as `make test` sets it), else `helm` on PATH; None (the test
/// says it did not run) when there is neither and skipping is allowed.
pub fn helm() -> Option<PathBuf> {
    let helm = std::env::var_os("HELM").map(PathBuf::from).unwrap_or_else(|| "helm".into());
    if std::process::Command::new(&helm).arg("version").output().is_ok_and(|o| o.status.success()) {
        return Some(helm);
    }
    if std::env::var_os(cellplane::testing::REQUIRE_CLUSTER_ENV).is_some() {
        panic!("no Helm at {helm:?} (set HELM)");
    }
    println!("DID NOT RUN: no Helm (set HELM or put helm on PATH)");
    None
}

/// Runs Helm with a home of its own in `dir`.
pub fn run_helm(helm: &Path, dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(helm)
        .args(args)
        .current_dir(dir)
        .env("HELM_CACHE_HOME", dir.join(".cache"))
        .env("HELM_CONFIG_HOME", dir.join(".config"))
        .env("HELM_DATA_HOME", dir.join(".data"))
        .output()
        .unwrap();
    assert!(output.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A chart repository: `dir` served over HTTP on loopback, until the returned task is dropped.
pub async fn serve(dir: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let name = request.uri().path().trim_start_matches('/').to_string();
                    let file = (!name.contains('/') && !name.contains(".."))
                        .then(|| std::fs::read(dir.join(&name)).ok())
                        .flatten();
                    let response = match file {
                        Some(body) => hyper::Response::new(Full::new(Bytes::from(body))),
                        None => hyper::Response::builder().status(404).body(Full::new(Bytes::new())).unwrap(),
                    };
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (format!("http://{address}"), task)
}

/// A chart repository served on loopback, for as long as it lives.
pub struct Repository {
    pub url: String,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for Repository {
    fn drop(&mut self) {
        self._server.abort();
    }
}

/// examples/release/chart (cell-service 1.1.0) packaged and indexed by the real Helm, served.
pub async fn example() -> Option<Repository> {
    let helm = helm()?;
    let dir = tempfile::tempdir().unwrap();
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/release/chart");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    run_helm(&helm, dir.path(), &["package", chart.to_str().unwrap(), "--destination", repo.to_str().unwrap()]);
    run_helm(&helm, dir.path(), &["repo", "index", repo.to_str().unwrap()]);
    let (url, server) = serve(repo).await;
    Some(Repository { url, _dir: dir, _server: server })
}
