//! A cluster and an operator for the tests, the e2e suite and the benchmarks. The cluster is
//! the real API server named by `E2E_KUBECONFIG` when it is set (`make test` starts one), else
//! the in-memory one. Every test works in namespaces of its own and labels the cellplane
//! objects it creates with its run id; its operator reconciles only those. So tests share a
//! real cluster without seeing each other, and [`TestCluster::scenario`] removes what a test
//! created even when it fails.

pub mod chart;
pub mod record;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cellplane_memapi::ApiServer;
use cellplane_workflows::{Clock, EngineConfig};
use futures::FutureExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{Cell, DeploymentRing, Namespace};
use crate::cell::CellServices;
use crate::cloud::CloudProvider;
use crate::fixtures;
use crate::operator::{LeaderOptions, Operator, OperatorError, OperatorOptions};

/// The label that ties an object to the test run that created it.
pub const RUN_LABEL: &str = "cellplane.io/test-run";
/// The environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "E2E_KUBECONFIG";
/// Set (by `make test`) when a test that needs a real cluster must fail rather than skip.
pub const REQUIRE_CLUSTER_ENV: &str = "CELLPLANE_REQUIRE_CLUSTER";
/// How long a test waits for the cluster to converge.
pub const WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("Kubernetes API: {}", crate::kube_error::describe(.0))]
    Kube(#[from] kube::Error),
    #[error("in-memory API: {0}")]
    Memory(String),
    #[error(transparent)]
    Wait(#[from] fixtures::WaitError),
    #[error("CRD {0} already exists with another definition; use a cluster with this version's CRDs")]
    ForeignCrd(String),
    #[error("the Helm chart: {0}")]
    Chart(String),
}

/// A cluster for one test: its client, its run id and namespaces of its own.
pub struct TestCluster {
    pub client: Client,
    /// The in-memory API server, when this is not a real cluster.
    pub memory: Option<ApiServer>,
    /// Short random id of this test run; labels its objects and suffixes its names.
    pub run: String,
    /// The operator's namespace for this test (cell CA Secrets, routes, the leader Lease).
    pub namespace: String,
    /// A tenant account (Kubernetes namespace) for this test.
    pub account: String,
    /// The kubeconfig of a real cluster (None in memory).
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// The environment variable naming the oldest Kubernetes the chart promises (`make test` starts one).
pub const OLDEST_KUBECONFIG_ENV: &str = "E2E_OLDEST_KUBECONFIG";

/// The kubeconfig of the real cluster `E2E_KUBECONFIG` names. Without one, `what` is skipped
/// (saying so), or fails when `CELLPLANE_REQUIRE_CLUSTER` is set, as under `make test`.
pub fn real_kubeconfig(what: &str) -> Option<std::path::PathBuf> {
    kubeconfig_from(KUBECONFIG_ENV, what)
}

/// The same for the oldest Kubernetes the chart promises (`E2E_OLDEST_KUBECONFIG`).
pub fn oldest_kubeconfig(what: &str) -> Option<std::path::PathBuf> {
    kubeconfig_from(OLDEST_KUBECONFIG_ENV, what)
}

fn kubeconfig_from(env: &str, what: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(path.into());
    }
    if std::env::var_os(REQUIRE_CLUSTER_ENV).is_some() {
        panic!("{what} needs a real cluster: {env} is unset and {REQUIRE_CLUSTER_ENV} forbids skipping");
    }
    println!("{what} DID NOT RUN: set {env} to run it against a cluster (`make test` starts one)");
    None
}

impl TestCluster {
    /// The real cluster named by `E2E_KUBECONFIG`, else a new in-memory API server.
    pub async fn start() -> Result<Self, TestError> {
        match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => Self::real(std::path::Path::new(&path)).await,
            None => Self::in_memory(|_| {}).await,
        }
    }

    /// The real cluster a kubeconfig names, with the cellplane CRDs installed.
    pub async fn real(path: &std::path::Path) -> Result<Self, TestError> {
        let bad = |message: String| TestError::Kubeconfig { path: path.display().to_string(), message };
        let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        let client = Client::try_from(config)?;
        install_crds(&client).await?;
        let mut cluster = Self::with_client(client, None).await?;
        cluster.kubeconfig = Some(path.to_path_buf());
        Ok(cluster)
    }

    /// A new in-memory API server with the cellplane kinds, after `setup` (extra CRDs).
    pub async fn in_memory(setup: impl FnOnce(&ApiServer)) -> Result<Self, TestError> {
        let server = ApiServer::new();
        crate::cli::operator::register_kinds(&server).map_err(|e| TestError::Memory(e.to_string()))?;
        setup(&server);
        Self::with_client(server.client(), Some(server)).await
    }

    async fn with_client(client: Client, memory: Option<ApiServer>) -> Result<Self, TestError> {
        init_test_tracing();
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let cluster = TestCluster {
            client,
            memory,
            namespace: format!("cellplane-{run}"),
            account: format!("account-{run}"),
            run,
            kubeconfig: None,
        };
        for namespace in [&cluster.namespace, &cluster.account] {
            cluster.create_namespace(namespace).await?;
        }
        for version in fixtures::TEST_VERSIONS {
            let release = fixtures::release(&cluster.name(&format!("service-{version}")), version);
            cluster.create(&Api::all(cluster.client.clone()), release).await?;
        }
        Ok(cluster)
    }

    /// Deletes the Releases every test cluster starts with, for a test that brings its own (the
    /// examples have Releases of the same versions).
    pub async fn without_test_releases(&self) -> Result<(), TestError> {
        self.delete_all(&kube::api::ApiResource::erase::<crate::api::Release>(&())).await
    }

    pub fn is_real(&self) -> bool {
        self.memory.is_none()
    }

    /// The label selector of this run's objects.
    pub fn selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run)
    }

    /// `base` made unique to this run.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.run)
    }

    /// Labels an object as this run's.
    pub fn own<K: Resource>(&self, mut obj: K) -> K {
        obj.meta_mut().labels.get_or_insert_default().insert(RUN_LABEL.into(), self.run.clone());
        obj
    }

    /// Creates this run's object (labelled as its own; an existing one is left as it is).
    pub async fn create<K>(&self, api: &Api<K>, obj: K) -> Result<(), kube::Error>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        fixtures::create(api, &self.own(obj)).await
    }

    /// Another account namespace of this run, `base-<run>`.
    pub async fn new_account(&self, base: &str) -> Result<String, TestError> {
        let name = self.name(base);
        self.create_namespace(&name).await?;
        Ok(name)
    }

    pub async fn create_namespace(&self, name: &str) -> Result<(), TestError> {
        let namespace = self.own(k8s_openapi::api::core::v1::Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        });
        fixtures::create(&Api::all(self.client.clone()), &namespace).await?;
        Ok(())
    }

    pub fn cells(&self) -> Api<Cell> {
        Api::all(self.client.clone())
    }

    pub fn rings(&self) -> Api<DeploymentRing> {
        Api::all(self.client.clone())
    }

    /// The Namespaces of this run's account.
    pub fn namespaces(&self) -> Api<Namespace> {
        Api::namespaced(self.client.clone(), &self.account)
    }

    /// Runs a test body, then removes everything this run created, also when the body panicked
    /// (the panic is raised again afterwards).
    pub async fn scenario<F, Fut>(self, body: F)
    where
        F: FnOnce(Arc<TestCluster>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let cluster = Arc::new(self);
        let outcome = std::panic::AssertUnwindSafe(body(cluster.clone())).catch_unwind().await;
        if let Err(e) = cluster.cleanup().await {
            eprintln!("cleaning up test run {} failed: {e}", cluster.run);
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// Deletes this run's cellplane objects (their teardown gets a while; then their finalizers
    /// are removed, as nobody is left to tear them down) and its namespaces.
    pub async fn cleanup(&self) -> Result<(), TestError> {
        let kinds = [
            kube::api::ApiResource::erase::<Namespace>(&()),
            kube::api::ApiResource::erase::<DeploymentRing>(&()),
            kube::api::ApiResource::erase::<Cell>(&()),
            kube::api::ApiResource::erase::<crate::api::Release>(&()),
        ];
        for kind in &kinds {
            self.delete_all(kind).await?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut left = 0;
            for kind in &kinds {
                left += self.list(kind).await?.len();
            }
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                for kind in &kinds {
                    self.release_all(kind).await?;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.delete_all(&kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&())).await?;
        // The chart's cluster-scoped RBAC (see [`chart`]); an API without RBAC has none.
        for kind in [
            kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&()),
            kube::api::ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&()),
        ] {
            match self.delete_all(&kind).await {
                Err(TestError::Kube(e)) if crate::kube_error::code(&e) == Some(404) => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn list(&self, kind: &kube::api::ApiResource) -> Result<Vec<DynamicObject>, TestError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), kind);
        Ok(api.list(&ListParams::default().labels(&self.selector())).await?.items)
    }

    /// The API of `obj` in its own namespace (an `Api::all` cannot write namespaced objects).
    fn api_of(&self, kind: &kube::api::ApiResource, obj: &DynamicObject) -> Api<DynamicObject> {
        match obj.metadata.namespace.as_deref() {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, kind),
            None => Api::all_with(self.client.clone(), kind),
        }
    }

    async fn delete_all(&self, kind: &kube::api::ApiResource) -> Result<(), TestError> {
        for obj in self.list(kind).await? {
            match self.api_of(kind, &obj).delete(&obj.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if crate::kube_error::code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes the finalizers of what is left.
    async fn release_all(&self, kind: &kube::api::ApiResource) -> Result<(), TestError> {
        let patch = serde_json::json!({ "metadata": { "finalizers": null } });
        for obj in self.list(kind).await? {
            eprintln!("test cleanup: removing the finalizers of {} {}", kind.kind, crate::api::object_key(&obj));
            let api = self.api_of(kind, &obj);
            match api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(e) if crate::kube_error::code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Installs the cellplane CRDs, CEL rules and all, unless they are. A CRD that exists with
/// another schema is refused, not overwritten.
pub async fn install_crds(client: &Client) -> Result<(), TestError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in crate::api::crds() {
        let name = crd.name_any();
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(e) if crate::kube_error::code(&e) == Some(409) => {
                let installed = api.get(&name).await?;
                let (ours, theirs) = (&crd.spec, &installed.spec);
                if (&ours.names.plural, &ours.names.kind, &ours.scope)
                    != (&theirs.names.plural, &theirs.names.kind, &theirs.scope)
                {
                    return Err(TestError::ForeignCrd(name));
                }
            }
            Err(e) => return Err(e.into()),
        }
        let established = kube::runtime::wait::conditions::is_crd_established();
        match tokio::time::timeout(WITHIN, kube::runtime::wait::await_condition(api.clone(), &name, established)).await
        {
            Ok(result) => {
                result.map_err(fixtures::WaitError::from)?;
            }
            Err(_) => {
                return Err(
                    fixtures::WaitError::Timeout { what: format!("CRD {name} established"), within: WITHIN }.into()
                );
            }
        }
    }
    Ok(())
}

fn init_test_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// What a test operator runs with.
#[derive(Clone)]
pub struct OperatorSetup {
    pub cloud: Arc<dyn CloudProvider>,
    pub services: Arc<dyn CellServices>,
    pub clock: Option<Arc<dyn Clock>>,
    pub engine: EngineConfig,
    /// Leader election with a Lease in the test's operator namespace.
    pub leader_election: bool,
    /// The Prometheus that gates without an address query.
    pub prometheus: Option<String>,
    /// Where the operator's metrics are registered (a test may serve them).
    pub registry: prometheus::Registry,
    /// The operator's identity: the chart's ServiceAccount (see [`chart`]), else the test's admin.
    pub client: Option<Client>,
}

impl OperatorSetup {
    pub fn new(cloud: Arc<dyn CloudProvider>, services: Arc<dyn CellServices>) -> Self {
        OperatorSetup {
            cloud,
            services,
            clock: None,
            engine: EngineConfig {
                lease: Duration::from_secs(2),
                poll_interval: Duration::from_millis(200),
                ..crate::operator::engine_config()
            },
            leader_election: false,
            prometheus: None,
            registry: prometheus::Registry::new(),
            client: None,
        }
    }
}

/// An operator in this process, reconciling only its test run's objects, on a journal file of
/// its own that outlives a crash.
pub struct TestOperator {
    pub operator: Arc<Operator>,
    token: CancellationToken,
    task: Option<JoinHandle<Result<(), OperatorError>>>,
    journal: Arc<tempfile::TempDir>,
}

impl TestOperator {
    pub async fn start(cluster: &TestCluster, setup: OperatorSetup) -> Self {
        let journal = Arc::new(tempfile::tempdir().expect("a temporary directory for the journal"));
        Self::launch(cluster, setup, journal).await
    }

    async fn launch(cluster: &TestCluster, setup: OperatorSetup, journal: Arc<tempfile::TempDir>) -> Self {
        let url = format!("sqlite://{}", journal.path().join("journal.db").display());
        let store = cellplane_workflows::journal::open(&url, "cellplane").await.expect("the journal opens");
        let leader = setup.leader_election.then(|| LeaderOptions {
            namespace: cluster.namespace.clone(),
            name: "cellplane-leader".into(),
            lease_duration: Duration::from_secs(5),
        });
        let options = OperatorOptions {
            engine: setup.engine,
            clock: setup.clock,
            leader,
            selector: Some(cluster.selector()),
            namespace: cluster.namespace.clone(),
            prometheus: setup.prometheus,
            registry: setup.registry,
        };
        let client = setup.client.unwrap_or_else(|| cluster.client.clone());
        let operator = Operator::new(client, store, setup.cloud, setup.services, options).expect("the operator starts");
        let operator = Arc::new(operator);
        let (token, task) = operator.spawn();
        TestOperator { operator, token, task: Some(task), journal }
    }

    /// Kills the operator as a crash would (nothing more is written), then starts a new one on
    /// the same journal with `setup` (a new process has new in-memory services and metrics).
    pub async fn crash_and_restart(&mut self, cluster: &TestCluster, setup: OperatorSetup) {
        let setup = OperatorSetup { registry: prometheus::Registry::new(), ..setup };
        self.token.cancel();
        self.operator.abort().await;
        if let Some(task) = self.task.take() {
            task.abort();
            // The crash ends it (cancelled, or stopped by the token meanwhile); an operator that
            // had failed on its own before must not be replaced as if nothing had happened.
            expect_no_failure(task.await, "before the crash");
        }
        *self = Self::launch(cluster, setup, self.journal.clone()).await;
    }

    /// Stops gracefully; panics if the operator had stopped with an error or panicked. Records
    /// its journal's histories when asked to (see [`record`]).
    pub async fn stop(mut self) {
        let journal = self.operator.engine().journal().clone();
        if let Err(e) = record::record(journal.as_ref()).await {
            panic!("recording the workflow histories: {e}");
        }
        self.token.cancel();
        if let Some(task) = self.task.take() {
            expect_clean_stop(task).await;
        }
    }
}

/// Waits (within [`WITHIN`]) for an operator whose token was cancelled to stop, and panics if it
/// stopped with an error or its task panicked.
pub async fn expect_clean_stop(task: JoinHandle<Result<(), OperatorError>>) {
    match tokio::time::timeout(WITHIN, task).await {
        Ok(outcome) => expect_no_failure(outcome, "while it ran"),
        Err(_) => panic!("the operator did not stop within {WITHIN:?} of its shutdown"),
    }
}

/// Panics if an operator's task ended with an error or a panic (`when` says when that was).
fn expect_no_failure(outcome: Result<Result<(), OperatorError>, tokio::task::JoinError>, when: &str) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the operator stopped with an error {when}: {e}"),
        Err(e) if e.is_panic() => panic!("the operator's task panicked {when}: {e}"),
        // Cancelled: only a crash does that.
        Err(_) => {}
    }
}
