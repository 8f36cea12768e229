//! The `ApiServer` handle, its tower `Service` and request dispatch.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::accept::{self, Representation};
use crate::discovery;
use crate::error::ApiError;
use crate::handlers::{self, Manager, Target, UpdateRequest};
use crate::hooks::{Fault, Hooks, RequestRecord, Verb};
use crate::kinds::ResourceKind;
use crate::managed::Scope;
use crate::path::{self, Query, RequestPath, Route};
use crate::render::Render;
use crate::router;
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::store::Store;
use crate::watch::{self as watches, WatchRequest};

/// Body of every response: a whole JSON document, or a watch stream.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// An in-memory Kubernetes API server. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    hooks: Mutex<Hooks>,
    bookmark_interval: Duration,
    /// Bumped to end every open watch stream.
    closed: watch::Sender<u64>,
}

/// Options of an [`ApiServer`].
#[derive(Debug, Clone)]
pub struct ApiServerBuilder {
    history_limit: usize,
    bookmark_interval: Duration,
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        Self { history_limit: 10_000, bookmark_interval: Duration::from_secs(60) }
    }
}

impl ApiServerBuilder {
    /// How many changes are kept for watches resuming from an older
    /// resourceVersion; older ones get 410 Expired. Default 10 000.
    pub fn history_limit(mut self, changes: usize) -> Self {
        self.history_limit = changes;
        self
    }

    /// How often open watches that asked for bookmarks get one. Default 60 s,
    /// about what the apiserver does.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    pub fn build(self) -> ApiServer {
        let mut store = Store::new(self.history_limit);
        for kind in ResourceKind::builtins() {
            store.registry.insert(kind);
        }
        let server = ApiServer {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                hooks: Mutex::new(Hooks::default()),
                bookmark_interval: self.bookmark_interval,
                closed: watch::Sender::new(0),
            }),
        };
        server.seed_namespaces();
        server
    }
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// A kube client talking to this server (default namespace `default`).
    /// Must be called inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Serves a kind without a CRD object (e.g. another built-in type).
    pub fn register_kind(&self, kind: ResourceKind) {
        self.store().registry.insert(kind);
    }

    /// Installs a CRD as `kubectl apply` would: creates (or updates) the
    /// CustomResourceDefinition object, which serves its versions.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) -> Result<(), ApiError> {
        let body = serde_json::to_value(crd).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut store = self.store();
        let kind = store
            .registry
            .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or_else(ApiError::no_route)?;
        let name = crate::meta::name(&body).unwrap_or_default().to_string();
        let mut target = Target { kind, namespace: None, name: None, subresource: None };
        let existing = store.get(&target.gr(), &(String::new(), name.clone()));
        match existing {
            None => {
                let q = Query::default();
                handlers::create(&mut store, &target, &q, body, "memapi")?;
            }
            Some(old) => {
                target.name = Some(name);
                let req = UpdateRequest {
                    scope: Scope::Main { status_subresource: true },
                    manager: Manager::Update("memapi"),
                    require_rv: false,
                    dry_run: false,
                };
                handlers::write_update(&mut store, &target, &old, body, req)?;
            }
        }
        Ok(())
    }

    /// Installs the CRD of a `#[derive(CustomResource)]` type.
    pub fn register<K: kube::CustomResourceExt>(&self) -> Result<(), ApiError> {
        self.register_crd(&K::crd())
    }

    /// Makes matching requests fail; faults are consumed in the order injected.
    pub fn inject(&self, fault: Fault) {
        self.hooks().inject(fault);
    }

    /// Shorthand: the next `times` requests with `verb` on `resource` fail with `code`.
    pub fn fail_next(&self, verb: Verb, resource: &str, times: usize, code: u16) {
        self.inject(Fault::new(code).verb(verb).resource(resource).times(times));
    }

    pub fn clear_faults(&self) {
        self.hooks().clear_faults();
    }

    /// Requests with this verb on any resource since start or the last reset.
    pub fn request_count(&self, verb: Verb) -> u64 {
        self.hooks().count(Some(verb), None)
    }

    /// Requests with this verb on one plural resource (e.g. `cells`).
    pub fn request_count_for(&self, verb: Verb, resource: &str) -> u64 {
        self.hooks().count(Some(verb), Some(resource))
    }

    /// All requests on resources since start or the last reset.
    pub fn total_requests(&self) -> u64 {
        self.hooks().count(None, None)
    }

    /// The most recent requests on resources (at most 10 000), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.hooks().log()
    }

    pub fn reset_request_counts(&self) {
        self.hooks().reset_counts();
    }

    /// Forgets the change history, as an etcd compaction does: watches resuming
    /// from any resourceVersion before now get 410 Expired and must relist.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Ends every open watch stream, as an apiserver restart would.
    pub fn close_watches(&self) {
        self.inner.closed.send_modify(|n| *n += 1);
    }

    /// The current (highest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Serves the API over plain HTTP/1.1 (no TLS, no authentication) on a bound
    /// listener, so that kubectl or a separate process can reach it, e.g. with a
    /// kubeconfig whose server is `http://127.0.0.1:PORT`. Runs until dropped or
    /// until accepting fails.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let service = hyper_util::service::TowerToHyperService::new(self.clone());
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!(%peer, error = %e, "memapi connection ended with an error");
                }
            });
        }
    }

    /// Serves on a fresh loopback port in the background and returns a kubeconfig (JSON, which
    /// is YAML) that reaches it without credentials, as a client of a real cluster would.
    pub async fn serve_on_loopback(&self) -> std::io::Result<serde_json::Value> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = self.clone();
        tokio::spawn(async move { server.serve(listener).await });
        Ok(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "memapi", "cluster": {"server": format!("http://{addr}")}}],
            "users": [{"name": "memapi", "user": {}}],
            "contexts": [{"name": "memapi", "context": {"cluster": "memapi", "user": "memapi"}}],
            "current-context": "memapi",
        }))
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        self.inner.hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seed_namespaces(&self) {
        let mut store = self.store();
        let Some(kind) = store.registry.get("", "v1", "namespaces") else {
            return;
        };
        let target = Target { kind, namespace: None, name: None, subresource: None };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = handlers::create(&mut store, &target, &Query::default(), body, "memapi") {
                tracing::warn!(namespace = ns, error = %e, "could not create namespace");
            }
        }
    }

    async fn handle<B>(self, req: Request<B>) -> Response<ResponseBody>
    where
        B: http_body::Body,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let err = ApiError::BadRequest(format!("reading the request body: {e}"));
                return error_response(&err);
            }
        };
        let response = self.route(&parts, &body).unwrap_or_else(|e| error_response(&e));
        tracing::debug!(method = %parts.method, uri = %parts.uri, status = response.status().as_u16(), "memapi request");
        response
    }

    fn route(&self, parts: &Parts, body: &Bytes) -> Result<Response<ResponseBody>, ApiError> {
        let route = path::parse(parts.uri.path())?;
        match route {
            Route::Resource(p) => return self.resource(parts, &p, body),
            Route::Health => return Ok(text_response(StatusCode::OK, "ok")),
            _ if parts.method != Method::GET => {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{} is not supported on discovery paths",
                    parts.method
                )));
            }
            _ => {}
        }
        let store = self.store();
        let registry = &store.registry;
        let wanted = accept::negotiate(accept_header(parts), |r| {
            r == Representation::Discovery && matches!(route, Route::CoreVersions | Route::Groups)
        })?;
        let doc = match (route, wanted) {
            (Route::CoreVersions, Representation::Discovery) => discovery::aggregated(registry, true),
            (Route::Groups, Representation::Discovery) => discovery::aggregated(registry, false),
            (Route::Version, _) => json!({
                "major": "1", "minor": "37", "gitVersion": "v1.37.0-memapi",
                "platform": "linux/amd64", "goVersion": "none", "compiler": "rustc",
            }),
            (Route::CoreVersions, _) => discovery::core_versions(),
            (Route::Groups, _) => discovery::groups(registry),
            (Route::Group(group), _) => discovery::group(registry, &group)?,
            (Route::Resources { group, version }, _) => discovery::resources(registry, &group, &version)?,
            (Route::Health | Route::Resource(_), _) => unreachable!("answered above"),
        };
        Ok(json_response_as(StatusCode::OK, &doc, &wanted.content_type()))
    }

    fn resource(&self, parts: &Parts, p: &RequestPath, body: &Bytes) -> Result<Response<ResponseBody>, ApiError> {
        let q = Query::parse(parts.uri.query());
        let router::Resolved { target, verb } = router::resolve(&self.store().registry, p, &parts.method, &q)?;
        self.record(&target, verb)?;
        let render = Render::negotiate(accept_header(parts), verb, &q)?;
        let mut store = self.store();
        if verb == Verb::Watch {
            return self.watch(&store, target, &q, render);
        }
        let (code, doc) = execute(&mut store, parts, &target, verb, &q, body)?;
        let deleted_namespaces = std::mem::take(&mut store.namespaces_to_sweep);
        drop(store);
        self.run_namespace_controller(deleted_namespaces);
        Ok(json_response(code, &render.apply(&target.kind, doc, true)))
    }

    /// Counts the request, and fails it when a test injected a fault for it.
    fn record(&self, target: &Target, verb: Verb) -> Result<(), ApiError> {
        let record = RequestRecord {
            verb,
            group: target.kind.group.clone(),
            resource: target.kind.plural.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            subresource: target.subresource.clone(),
        };
        self.hooks().on_request(&record).map_or(Ok(()), Err)
    }

    /// The namespace controller's work for namespaces just deleted, after the response (see
    /// `namespaces`); inline when there is no runtime to run it in.
    fn run_namespace_controller(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let server = self.clone();
        let sweep = move || crate::namespaces::sweep_all(&mut server.store(), names);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { sweep() })),
            Err(_) => sweep(),
        }
    }

    fn watch(
        &self,
        store: &Store,
        target: Target,
        q: &Query,
        render: Render,
    ) -> Result<Response<ResponseBody>, ApiError> {
        let selectors = Selectors {
            labels: LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or_default(), &target.kind.selectable_fields)?,
        };
        let req = WatchRequest {
            target,
            selectors,
            resource_version: q.get("resourceVersion").map(String::from),
            bookmarks: q.flag("allowWatchBookmarks"),
            send_initial_events: q.flag("sendInitialEvents"),
            timeout: Duration::from_secs(q.number("timeoutSeconds")?.unwrap_or(1800)),
            bookmark_interval: self.inner.bookmark_interval,
            render,
            headers_sent: false,
        };
        let lines = watches::start(store, self.inner.closed.subscribe(), req)?;
        let body = StreamBody::new(lines.map(|b| Ok::<_, Infallible>(http_body::Frame::data(b))));
        let mut resp = Response::new(BodyExt::boxed_unsync(body));
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(resp)
    }
}

/// Runs a verb other than watch under the store lock.
fn execute(
    store: &mut Store,
    parts: &Parts,
    target: &Target,
    verb: Verb,
    q: &Query,
    body: &Bytes,
) -> Result<(StatusCode, Value), ApiError> {
    let default = default_manager(parts);
    let manager = q.get("fieldManager").unwrap_or(&default);
    let json_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the body of the request could not be decoded as JSON: {e}")))
    };
    Ok(match verb {
        Verb::Get => (StatusCode::OK, handlers::get(store, target)?),
        Verb::List | Verb::Watch => (StatusCode::OK, handlers::list(store, target, q)?),
        Verb::Create => (StatusCode::CREATED, handlers::create(store, target, q, json_body()?, manager)?),
        Verb::Update => (StatusCode::OK, handlers::replace(store, target, q, json_body()?, manager)?),
        Verb::Patch => {
            let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            handlers::patch(store, target, q, ct, body, &default)?
        }
        // 200 whether the object went or lingers for its finalizers, as the apiserver answers
        // when no foreground deletion was asked for.
        Verb::Delete => (StatusCode::OK, handlers::delete(store, target, q, body)?),
        Verb::DeleteCollection => (StatusCode::OK, handlers::delete_collection(store, target, q)?),
    })
}

/// The field manager of a non-apply write without `fieldManager`: the user-agent's
/// program name, as the apiserver derives it.
fn default_manager(parts: &Parts) -> String {
    parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn accept_header(parts: &Parts) -> Option<&str> {
    parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

fn json_response(code: StatusCode, doc: &Value) -> Response<ResponseBody> {
    json_response_as(code, doc, "application/json")
}

fn json_response_as(code: StatusCode, doc: &Value, content_type: &str) -> Response<ResponseBody> {
    body_response(code, serde_json::to_vec(doc).unwrap_or_default(), content_type)
}

fn text_response(code: StatusCode, text: &str) -> Response<ResponseBody> {
    body_response(code, text.as_bytes().to_vec(), "text/plain; charset=utf-8")
}

fn body_response(code: StatusCode, bytes: Vec<u8>, content_type: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *resp.status_mut() = code;
    let content_type = HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CONTENT_TYPE, content_type);
    resp
}

fn error_response(err: &ApiError) -> Response<ResponseBody> {
    tracing::debug!(code = err.code().as_u16(), reason = err.reason(), error = %err, "request failed");
    match err {
        ApiError::PageNotFound => text_response(err.code(), "404 page not found\n"),
        _ => json_response(err.code(), &err.to_status()),
    }
}

impl<B> tower::Service<Request<B>> for ApiServer
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}
