//! A fake of the GKE REST API (container.googleapis.com/v1), for the gcp provider's tests.
//! No emulator exists, so this one is faithful where the provider depends on it:
//! - a create, delete, update or node pool change returns an Operation that goes PENDING,
//!   RUNNING, DONE (one state per later request), and only at DONE does its effect settle
//!   (the cluster RUNNING, the pool RUNNING, the cluster gone);
//! - a second create of the same cluster or node pool answers 409 ALREADY_EXISTS;
//! - a cluster or node pool that does not exist (or no longer) answers 404 NOT_FOUND;
//! - errors have Google's JSON shape (`error.code`, `error.message`, `error.status`);
//! - a cluster carries its endpoint and its CA certificate (`masterAuth.clusterCaCertificate`,
//!   base64 of a real self-signed CA's PEM), and node pools their Kubernetes version.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::PeerError;
use crate::serve::{self, Reply};

/// Requests an operation spends in each of PENDING and RUNNING.
const TICKS_PER_STATE: u32 = 2;

#[derive(Clone, Debug)]
struct Operation {
    name: String,
    kind: &'static str,
    target: String,
    age: u32,
    done: bool,
}

impl Operation {
    fn status(&self) -> &'static str {
        match self.age {
            a if a < TICKS_PER_STATE => "PENDING",
            a if a < 2 * TICKS_PER_STATE => "RUNNING",
            _ => "DONE",
        }
    }
}

#[derive(Default)]
struct State {
    /// By full name (`projects/P/locations/L/clusters/C`): the cluster's JSON.
    clusters: BTreeMap<String, Value>,
    /// By full name (`.../clusters/C/nodePools/N`).
    pools: BTreeMap<String, Value>,
    /// By full name (`projects/P/locations/L/operations/O`).
    operations: BTreeMap<String, Operation>,
    next: u32,
    /// Creates that made something, by kind, for duplicate checks.
    creates: BTreeMap<String, u32>,
    /// Describes answered while something was not settled.
    pending_answers: u32,
    /// base64 of the PEM of the CA every cluster reports.
    ca: String,
}

pub struct GkeFake {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the fake counted.
#[derive(Clone, Debug, Default)]
pub struct GkeStats {
    pub creates: BTreeMap<String, u32>,
    pub pending_answers: u32,
}

impl GkeFake {
    pub async fn start() -> Result<GkeFake, PeerError> {
        let ca = crate::cluster_ca()?;
        let state = Arc::new(Mutex::new(State { ca, ..State::default() }));
        let shared = state.clone();
        let handler: serve::Handler = Arc::new(move |request| {
            let state = shared.clone();
            Box::pin(async move { handle(&state, request) }) as Reply
        });
        let (addr, task) = serve::serve(handler).await?;
        Ok(GkeFake { url: format!("http://{addr}"), state, task })
    }

    pub fn stats(&self) -> GkeStats {
        let state = lock(&self.state);
        GkeStats { creates: state.creates.clone(), pending_answers: state.pending_answers }
    }
}

impl Drop for GkeFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn error(code: u16, status: &str, message: String) -> Response<Full<Bytes>> {
    serve::json(code, &json!({"error": {"code": code, "message": message, "status": status}}))
}

fn not_found(name: &str) -> Response<Full<Bytes>> {
    error(404, "NOT_FOUND", format!("Not found: {name}."))
}

fn handle(state: &Mutex<State>, request: Request<Bytes>) -> Response<Full<Bytes>> {
    let mut state = lock(state);
    state.tick();
    let path = request.uri().path().trim_start_matches("/v1/").to_string();
    let body: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
    let (name, verb) = match path.split_once(':') {
        Some((name, verb)) => (name.to_string(), Some(verb.to_string())),
        None => (path, None),
    };
    match (request.method().clone(), verb.as_deref()) {
        (Method::GET, None) if name.ends_with("/clusters") => state.list(&name),
        (Method::GET, None) => state.get(&name),
        (Method::POST, None) if name.ends_with("/clusters") => {
            state.create_cluster(name.trim_end_matches("/clusters"), &body["cluster"])
        }
        (Method::POST, None) if name.ends_with("/nodePools") => state.create_pool(&name, &body["nodePool"]),
        (Method::DELETE, None) => state.delete(&name),
        (Method::PUT, None) if name.contains("/nodePools/") => state.update_pool(&name, &body),
        (Method::POST, Some("updateMaster")) => state.update_master(&name, &body),
        (Method::POST, Some("setResourceLabels")) => state.set_labels(&name, &body),
        _ => error(400, "INVALID_ARGUMENT", format!("the fake does not serve {} {}", request.method(), request.uri())),
    }
}

fn location_of(name: &str) -> String {
    name.split('/').take(4).collect::<Vec<_>>().join("/")
}

impl State {
    /// Every request moves every unfinished operation on by one; DONE applies its effect.
    fn tick(&mut self) {
        let mut finished = Vec::new();
        for operation in self.operations.values_mut().filter(|o| !o.done) {
            operation.age += 1;
            if operation.status() == "DONE" {
                operation.done = true;
                finished.push(operation.clone());
            }
        }
        for operation in finished {
            self.settle(&operation);
        }
    }

    fn settle(&mut self, operation: &Operation) {
        match operation.kind {
            "DELETE_CLUSTER" => {
                self.clusters.remove(&operation.target);
                let prefix = format!("{}/nodePools/", operation.target);
                self.pools.retain(|name, _| !name.starts_with(&prefix));
            }
            "DELETE_NODE_POOL" => {
                self.pools.remove(&operation.target);
            }
            "CREATE_NODE_POOL" | "UPGRADE_NODES" => {
                if let Some(pool) = self.pools.get_mut(&operation.target) {
                    pool["status"] = json!("RUNNING");
                    if let Some(version) = pool["pendingVersion"].as_str().map(str::to_string) {
                        pool["version"] = json!(format!("{version}.3-gke.100"));
                    }
                }
            }
            _ => {
                if let Some(cluster) = self.clusters.get_mut(&operation.target) {
                    cluster["status"] = json!("RUNNING");
                    if let Some(version) = cluster["pendingVersion"].as_str().map(str::to_string) {
                        cluster["currentMasterVersion"] = json!(format!("{version}.3-gke.100"));
                    }
                }
            }
        }
    }

    fn operation(&mut self, kind: &'static str, target: &str) -> Response<Full<Bytes>> {
        self.next += 1;
        let short = format!("operation-{}", self.next);
        let name = format!("{}/operations/{short}", location_of(target));
        let operation = Operation { name: name.clone(), kind, target: target.to_string(), age: 0, done: false };
        self.operations.insert(name, operation.clone());
        serve::json(200, &operation_json(&operation))
    }

    fn list(&self, parent: &str) -> Response<Full<Bytes>> {
        let prefix = format!("{parent}/");
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(name, cluster)| self.with_pools(name, cluster))
            .collect();
        serve::json(200, &json!({ "clusters": clusters }))
    }

    fn with_pools(&self, name: &str, cluster: &Value) -> Value {
        let prefix = format!("{name}/nodePools/");
        let pools: Vec<Value> =
            self.pools.iter().filter(|(n, _)| n.starts_with(&prefix)).map(|(_, p)| p.clone()).collect();
        let mut cluster = cluster.clone();
        cluster["nodePools"] = json!(pools);
        cluster
    }

    fn get(&mut self, name: &str) -> Response<Full<Bytes>> {
        if let Some(operation) = self.operations.get(name) {
            return serve::json(200, &operation_json(operation));
        }
        let found = match (self.clusters.get(name), self.pools.get(name)) {
            (Some(cluster), _) => self.with_pools(name, cluster),
            (_, Some(pool)) => pool.clone(),
            _ => return not_found(name),
        };
        if found["status"] != "RUNNING" {
            self.pending_answers += 1;
        }
        serve::json(200, &found)
    }

    fn create_cluster(&mut self, parent: &str, cluster: &Value) -> Response<Full<Bytes>> {
        let Some(short) = cluster["name"].as_str().filter(|n| !n.is_empty()) else {
            return error(400, "INVALID_ARGUMENT", "Cluster.name is required.".into());
        };
        let name = format!("{parent}/clusters/{short}");
        if self.clusters.contains_key(&name) {
            return error(409, "ALREADY_EXISTS", format!("Already exists: {name}."));
        }
        let version = cluster["initialClusterVersion"].as_str().unwrap_or("1.33").to_string();
        let mut created = cluster.clone();
        created["status"] = json!("PROVISIONING");
        created["selfLink"] = json!(format!("https://container.googleapis.com/v1/{name}"));
        created["endpoint"] = json!("203.0.113.10");
        created["masterAuth"] = json!({ "clusterCaCertificate": self.ca });
        created["currentMasterVersion"] = json!(format!("{version}.1-gke.100"));
        created.as_object_mut().map(|c| c.remove("nodePools"));
        self.clusters.insert(name.clone(), created);
        for pool in cluster["nodePools"].as_array().cloned().unwrap_or_default() {
            let pool_name = format!("{name}/nodePools/{}", pool["name"].as_str().unwrap_or("default-pool"));
            let mut pool = pool.clone();
            pool["status"] = json!("PROVISIONING");
            self.pools.insert(pool_name.clone(), pool);
            // Settled with the cluster.
            self.operations.insert(
                format!("{pool_name}#initial"),
                Operation { name: pool_name.clone(), kind: "CREATE_NODE_POOL", target: pool_name, age: 0, done: false },
            );
        }
        *self.creates.entry("cluster".into()).or_default() += 1;
        self.operation("CREATE_CLUSTER", &name)
    }

    fn create_pool(&mut self, parent: &str, pool: &Value) -> Response<Full<Bytes>> {
        if !self.clusters.contains_key(parent.trim_end_matches("/nodePools")) {
            return not_found(parent);
        }
        let Some(short) = pool["name"].as_str().filter(|n| !n.is_empty()) else {
            return error(400, "INVALID_ARGUMENT", "NodePool.name is required.".into());
        };
        let name = format!("{parent}/{short}");
        if self.pools.contains_key(&name) {
            return error(409, "ALREADY_EXISTS", format!("Already exists: {name}."));
        }
        let master = self.clusters[parent.trim_end_matches("/nodePools")]["currentMasterVersion"].clone();
        let mut created = pool.clone();
        created["status"] = json!("PROVISIONING");
        created["selfLink"] = json!(format!("https://container.googleapis.com/v1/{name}"));
        if created["config"]["imageType"].as_str().is_none_or(str::is_empty) {
            created["config"]["imageType"] = json!("COS_CONTAINERD");
        }
        match pool["version"].as_str().filter(|v| !v.is_empty()) {
            Some(version) => created["pendingVersion"] = json!(version),
            None => created["version"] = master,
        }
        self.pools.insert(name.clone(), created);
        *self.creates.entry("nodePool".into()).or_default() += 1;
        self.operation("CREATE_NODE_POOL", &name)
    }

    fn delete(&mut self, name: &str) -> Response<Full<Bytes>> {
        if let Some(cluster) = self.clusters.get_mut(name) {
            cluster["status"] = json!("STOPPING");
            return self.operation("DELETE_CLUSTER", name);
        }
        if let Some(pool) = self.pools.get_mut(name) {
            pool["status"] = json!("STOPPING");
            return self.operation("DELETE_NODE_POOL", name);
        }
        not_found(name)
    }

    fn update_master(&mut self, name: &str, body: &Value) -> Response<Full<Bytes>> {
        let Some(cluster) = self.clusters.get_mut(name) else { return not_found(name) };
        if cluster["status"] != "RUNNING" {
            return error(400, "FAILED_PRECONDITION", format!("Cluster {name} is busy with another operation."));
        }
        let Some(version) = body["masterVersion"].as_str() else {
            return error(400, "INVALID_ARGUMENT", "masterVersion is required.".into());
        };
        cluster["status"] = json!("RECONCILING");
        cluster["pendingVersion"] = json!(version);
        self.operation("UPGRADE_MASTER", name)
    }

    /// UpdateNodePool: `nodeVersion` and `imageType` are both required, as GKE has them.
    fn update_pool(&mut self, name: &str, body: &Value) -> Response<Full<Bytes>> {
        let Some(pool) = self.pools.get_mut(name) else { return not_found(name) };
        if pool["status"] != "RUNNING" {
            return error(400, "FAILED_PRECONDITION", format!("Node pool {name} is busy with another operation."));
        }
        let (Some(version), Some(_)) = (body["nodeVersion"].as_str(), body["imageType"].as_str()) else {
            return error(400, "INVALID_ARGUMENT", "nodeVersion and imageType are required.".into());
        };
        pool["status"] = json!("RECONCILING");
        pool["pendingVersion"] = json!(version);
        self.operation("UPGRADE_NODES", name)
    }

    fn set_labels(&mut self, name: &str, body: &Value) -> Response<Full<Bytes>> {
        let Some(cluster) = self.clusters.get_mut(name) else { return not_found(name) };
        cluster["resourceLabels"] = body["resourceLabels"].clone();
        self.operation("SET_LABELS", name)
    }
}

fn operation_json(operation: &Operation) -> Value {
    let short = operation.name.rsplit('/').next().unwrap_or_default();
    json!({
        "name": short,
        "operationType": operation.kind,
        "status": operation.status(),
        "selfLink": format!("https://container.googleapis.com/v1/{}", operation.name),
        "targetLink": format!("https://container.googleapis.com/v1/{}", operation.target),
        "location": operation.name.split('/').nth(3).unwrap_or_default(),
    })
}
