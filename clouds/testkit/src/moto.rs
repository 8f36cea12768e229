//! moto's server on loopback, and a proxy in front of it.
//!
//! moto answers at once: its clusters and node groups are ACTIVE the moment they are created
//! and gone the moment they are deleted, and it has no EKS version updates. The proxy adds
//! those behaviours as AWS has them (CREATING, UPDATING and DELETING for a few polls, then the
//! outcome), so the providers' polling is exercised, and injects throttling on the first call
//! of every operation, which the clients must survive. It also serves the version updates moto
//! lacks (UpdateClusterVersion, UpdateNodegroupVersion) and the access entries (CreateAccessEntry,
//! AssociateAccessPolicy), and gives clusters a real CA certificate, base64 of its PEM as EKS
//! has it (moto's is random text).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::serve::{self, Reply};
use crate::{PeerError, target_dir};

/// The moto the tests run, from PyPI.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.5";

/// A moto server process on loopback; killed when dropped.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    /// Installs moto into `<target>/cloud-peers/moto-venv` when missing, then starts it.
    pub async fn start() -> Result<Moto, PeerError> {
        let venv = tokio::task::spawn_blocking(ensure_venv)
            .await
            .map_err(|e| PeerError::Failed(format!("installing moto: {e}")))??;
        let port = free_port()?;
        let log = std::fs::File::create(venv.with_file_name(format!("moto-{port}.log")))
            .map_err(|e| PeerError::Io("moto's log file".into(), e))?;
        let child = Command::new(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| PeerError::Io("starting moto_server".into(), e))?;
        let moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
        wait_until_up(&moto.url).await?;
        Ok(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, PeerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| PeerError::Io("a free port".into(), e))?;
    Ok(listener.local_addr().map_err(|e| PeerError::Io("a free port".into(), e))?.port())
}

async fn wait_until_up(url: &str) -> Result<(), PeerError> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let uri: http::Uri = format!("{url}/moto-api/").parse().map_err(|e| PeerError::Failed(format!("{e}")))?;
    loop {
        let request =
            Request::get(uri.clone()).body(Full::new(Bytes::new())).map_err(|e| PeerError::Failed(format!("{e}")))?;
        if client.request(request).await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(PeerError::Failed(format!("moto did not answer on {url} within 60s")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The virtualenv with moto, installed once per target directory (under a file lock, as
/// nextest runs tests in parallel processes).
fn ensure_venv() -> Result<PathBuf, PeerError> {
    let dir = target_dir().join("cloud-peers");
    std::fs::create_dir_all(&dir).map_err(|e| PeerError::Io(format!("creating {}", dir.display()), e))?;
    let _lock = FileLock::take(&dir.join("moto.lock"))?;
    let venv = dir.join("moto-venv");
    let marker = venv.join("cellplane-requirement");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(MOTO_REQUIREMENT) {
        return Ok(venv);
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", MOTO_REQUIREMENT]))?;
    std::fs::write(&marker, MOTO_REQUIREMENT).map_err(|e| PeerError::Io("writing the venv marker".into(), e))?;
    Ok(venv)
}

fn run(command: &mut Command) -> Result<(), PeerError> {
    let output = command.output().map_err(|e| PeerError::Io(format!("running {command:?}"), e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(PeerError::Failed(format!("{command:?} failed: {stderr}")));
    }
    Ok(())
}

/// Held while alive: closing the file releases the lock.
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn take(path: &Path) -> Result<FileLock, PeerError> {
        let file = std::fs::File::create(path).map_err(|e| PeerError::Io(format!("{}", path.display()), e))?;
        // SAFETY: flock on a descriptor this function owns; released when the file closes.
        let taken = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        if taken != 0 {
            return Err(PeerError::Io("locking the moto install".into(), std::io::Error::last_os_error()));
        }
        Ok(FileLock { _file: file })
    }
}

/// What the proxy does besides forwarding.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    /// Polls of a cluster or node group that see CREATING, UPDATING or DELETING.
    pub pending_polls: u32,
    /// The first call of each operation is throttled (EC2 `RequestLimitExceeded` 503, EKS
    /// `ThrottlingException` 429).
    pub throttle_first_calls: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour { pending_polls: 3, throttle_first_calls: true }
    }
}

/// What the proxy saw and did, for assertions.
#[derive(Clone, Debug, Default)]
pub struct ProxyStats {
    pub throttled: u32,
    /// Describe answers that said CREATING, UPDATING or DELETING.
    pub pending_answers: u32,
    /// Successful creates by operation (`CreateVpc`, `AllocateAddress`, `POST /clusters`, ...).
    pub creates: HashMap<String, u32>,
    /// EKS access entries by cluster and principal ARN, with their access policies' ARNs.
    pub access_entries: HashMap<(String, String), Vec<String>>,
}

#[derive(Default)]
struct State {
    seen: HashSet<String>,
    /// By EKS path: the state word, polls left, and the last body (for a deleted resource).
    pending: HashMap<String, (String, u32, Option<Value>)>,
    /// Kubernetes version updates by EKS path (a cluster's or a node group's).
    versions: HashMap<String, String>,
    /// base64 of the PEM of the CA every cluster reports.
    ca: String,
    stats: ProxyStats,
}

/// moto with AWS's slowness and faults in front.
pub struct MotoProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _moto: Moto,
}

impl MotoProxy {
    pub async fn start(behaviour: Behaviour) -> Result<MotoProxy, PeerError> {
        let moto = Moto::start().await?;
        let state = Arc::new(Mutex::new(State { ca: crate::cluster_ca()?, ..State::default() }));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
        let proxy = Arc::new(Proxy { upstream: moto.url.clone(), client, state: state.clone(), behaviour });
        let handler: serve::Handler = Arc::new(move |request| {
            let proxy = proxy.clone();
            Box::pin(async move { proxy.handle(request).await }) as Reply
        });
        let (addr, task) = serve::serve(handler).await?;
        Ok(MotoProxy { url: format!("http://{addr}"), state, task, _moto: moto })
    }

    pub fn stats(&self) -> ProxyStats {
        lock(&self.state).stats.clone()
    }
}

impl Drop for MotoProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Proxy {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Arc<Mutex<State>>,
    behaviour: Behaviour,
}

/// The operation a request calls: EC2's `Action`, or EKS's method and path pattern.
fn operation(request: &Request<Bytes>) -> String {
    let body = String::from_utf8_lossy(request.body());
    if let Some(action) = body.split('&').find_map(|p| p.strip_prefix("Action=")) {
        return action.to_string();
    }
    let path = request.uri().path();
    let shape: Vec<&str> =
        path.split('/').enumerate().map(|(i, p)| if i % 2 == 0 && i > 0 { "*" } else { p }).collect();
    format!("{} {}", request.method(), shape.join("/"))
}

impl Proxy {
    async fn handle(&self, request: Request<Bytes>) -> Response<Full<Bytes>> {
        let op = operation(&request);
        if self.behaviour.throttle_first_calls && lock(&self.state).seen.insert(op.clone()) {
            lock(&self.state).stats.throttled += 1;
            return throttled(&op);
        }
        let path = request.uri().path().to_string();
        if request.method() == http::Method::POST {
            if let Some(cluster) = path.strip_suffix("/updates") {
                return self.update_version(cluster, request.body());
            }
            if let Some(group) = path.strip_suffix("/update-version") {
                return self.update_version(group, request.body());
            }
            if path.contains("/access-entries") {
                return self.access_entry(&path, request.body());
            }
        }
        let method = request.method().clone();
        let body = request.body().clone();
        let (status, headers, answer) = match self.forward(request).await {
            Ok(answer) => answer,
            Err(e) => return serve::respond(502, "text/plain", e),
        };
        if (200..300).contains(&status) {
            self.after(&method, &path, &op, &body, &answer);
        }
        let mut response = self.rewrite(&method, &path, status, answer);
        for (name, value) in &headers {
            if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
                response.headers_mut().insert(name, value.clone());
            }
        }
        response
    }

    async fn forward(&self, request: Request<Bytes>) -> Result<(u16, http::HeaderMap, Bytes), String> {
        let (mut parts, body) = request.into_parts();
        let target = format!("{}{}", self.upstream, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
        parts.uri = target.parse().map_err(|e| format!("{e}"))?;
        parts.headers.remove(http::header::HOST);
        let response =
            self.client.request(Request::from_parts(parts, Full::new(body))).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, headers, body))
    }

    /// Records creates and starts the CREATING and DELETING states of EKS resources.
    fn after(&self, method: &http::Method, path: &str, op: &str, body: &Bytes, answer: &Bytes) {
        let mut state = lock(&self.state);
        let polls = self.behaviour.pending_polls;
        let creates = ["AllocateAddress", "POST /clusters", "POST /clusters/*/node-groups"];
        if op.starts_with("Create") || creates.contains(&op) {
            *state.stats.creates.entry(op.to_string()).or_default() += 1;
        }
        let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let got: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
        if *method == http::Method::POST && path == "/clusters" {
            if let Some(name) = sent["name"].as_str() {
                state.pending.insert(format!("/clusters/{name}"), ("CREATING".into(), polls, None));
            }
        } else if *method == http::Method::POST && path.ends_with("/node-groups") {
            if let Some(name) = sent["nodegroupName"].as_str() {
                state.pending.insert(format!("{path}/{name}"), ("CREATING".into(), polls, None));
            }
        } else if *method == http::Method::DELETE && path.starts_with("/clusters/") {
            state.pending.insert(path.to_string(), ("DELETING".into(), polls, Some(got)));
        }
    }

    /// Answers a describe with the pending state while it lasts, and with the updated version.
    fn rewrite(&self, method: &http::Method, path: &str, status: u16, answer: Bytes) -> Response<Full<Bytes>> {
        if *method != http::Method::GET || !path.starts_with("/clusters/") {
            return raw(status, answer);
        }
        let mut state = lock(&self.state);
        let mut body: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let key = if path.contains("/node-groups/") { "nodegroup" } else { "cluster" };
        let mut changed = false;
        if let Some((word, left, saved)) = state.pending.get_mut(path)
            && *left > 0
        {
            *left -= 1;
            if status == 404
                && let Some(saved) = saved.clone()
            {
                body = saved;
            }
            body[key]["status"] = json!(word.clone());
            changed = true;
            state.stats.pending_answers += 1;
        }
        let ready = state.pending.get(path).is_none_or(|(_, left, _)| *left == 0);
        if let Some(version) = state.versions.get(path)
            && ready
            && body[key].is_object()
        {
            body[key]["version"] = json!(version);
            changed = true;
        }
        if key == "cluster" && body[key]["certificateAuthority"].is_object() {
            body[key]["certificateAuthority"]["data"] = json!(state.ca);
            changed = true;
        }
        if !changed {
            return raw(status, answer);
        }
        serve::json(200, &body)
    }

    /// EKS UpdateClusterVersion and UpdateNodegroupVersion, which moto lacks: UPDATING for a
    /// few polls of the resource at `path`, then the new version.
    fn update_version(&self, path: &str, body: &Bytes) -> Response<Full<Bytes>> {
        let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let Some(version) = sent["version"].as_str() else {
            return serve::json(400, &json!({"message": "version is required"}));
        };
        let mut state = lock(&self.state);
        state.versions.insert(path.to_string(), version.to_string());
        state.pending.insert(path.to_string(), ("UPDATING".into(), self.behaviour.pending_polls, None));
        let update = json!({"update": {"id": format!("update-{}", state.versions.len()), "status": "InProgress", "type": "VersionUpdate"}});
        serve::json(200, &update)
    }

    /// EKS CreateAccessEntry (`POST /clusters/NAME/access-entries`) and AssociateAccessPolicy
    /// (`POST /clusters/NAME/access-entries/PRINCIPAL/access-policies`), which moto lacks, with
    /// EKS's answers: an entry made twice is a ResourceInUseException, a policy for a principal
    /// without an entry a ResourceNotFoundException.
    fn access_entry(&self, path: &str, body: &Bytes) -> Response<Full<Bytes>> {
        let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut state = lock(&self.state);
        let entries = &mut state.stats.access_entries;
        match parts.as_slice() {
            ["clusters", cluster, "access-entries"] => {
                let Some(principal) = sent["principalArn"].as_str() else {
                    return serve::json(400, &json!({"message": "principalArn is required"}));
                };
                let key = (cluster.to_string(), principal.to_string());
                if entries.contains_key(&key) {
                    return eks_error(
                        409,
                        "ResourceInUseException",
                        "The specified access entry resource is already in use on this cluster.",
                    );
                }
                entries.insert(key, Vec::new());
                serve::json(
                    200,
                    &json!({"accessEntry": {"clusterName": cluster, "principalArn": principal, "type": "STANDARD"}}),
                )
            }
            ["clusters", cluster, "access-entries", principal, "access-policies"] => {
                let principal = percent_encoding::percent_decode_str(principal).decode_utf8_lossy().to_string();
                let Some(policy) = sent["policyArn"].as_str() else {
                    return serve::json(400, &json!({"message": "policyArn is required"}));
                };
                let Some(policies) = entries.get_mut(&(cluster.to_string(), principal.clone())) else {
                    return eks_error(
                        404,
                        "ResourceNotFoundException",
                        "The specified principalArn could not be found.",
                    );
                };
                if !policies.iter().any(|p| p == policy) {
                    policies.push(policy.to_string());
                }
                let associated = json!({"policyArn": policy, "accessScope": sent["accessScope"]});
                serve::json(
                    200,
                    &json!({"clusterName": cluster, "principalArn": principal, "associatedAccessPolicy": associated}),
                )
            }
            _ => serve::json(404, &json!({"message": format!("no access-entry operation at {path}")})),
        }
    }
}

/// An EKS error as its REST-JSON protocol sends it.
fn eks_error(status: u16, code: &'static str, message: &str) -> Response<Full<Bytes>> {
    let mut response = serve::json(status, &json!({"message": message}));
    response.headers_mut().insert("x-amzn-errortype", http::HeaderValue::from_static(code));
    response
}

fn raw(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    serve::respond(status, "application/json", body)
}

fn throttled(op: &str) -> Response<Full<Bytes>> {
    if op.contains(' ') {
        let mut response = serve::json(429, &json!({"message": "Rate exceeded"}));
        response.headers_mut().insert("x-amzn-errortype", http::HeaderValue::from_static("ThrottlingException"));
        return response;
    }
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>RequestLimitExceeded</Code>\
               <Message>Request limit exceeded.</Message></Error></Errors><RequestID>cellplane-proxy</RequestID></Response>";
    serve::respond(503, "text/xml", xml)
}
