//! The operator as a library: workflow engine, controllers and leader election around one
//! `kube::Client`. `cellplane run`, `cellplane sandbox`, the benchmarks and the tests all start
//! it through [`Operator`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cellplane_workflows::journal::Journal;
use cellplane_workflows::{Clock, Engine, EngineConfig};
use futures::future::BoxFuture;
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cell::CellServices;
use crate::cloud::CloudProvider;
use crate::controllers::leader::LeaderElection;
use crate::controllers::synthetic::{ProbeMetrics, Prober};
use crate::controllers::{self, Context, ControllerMetrics};
use crate::flows::{self, Fleet, FlowDeps};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("workflow engine: {0}")]
    Engine(#[from] cellplane_workflows::Error),
    #[error("metrics registration: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("lost the leader lease {0}; stopping the controllers")]
    LeaseLost(String),
}

/// The operator's namespace when nothing names another: its Lease, cell CA and endpoint
/// certificate Secrets, and the routes of cells its own cluster serves.
pub const DEFAULT_NAMESPACE: &str = "cellplane-system";

/// Where the controllers' leader lease lives.
#[derive(Clone, Debug)]
pub struct LeaderOptions {
    pub namespace: String,
    pub name: String,
    pub lease_duration: Duration,
}

/// How the operator runs. `Default` suits one replica without leader election.
#[derive(Clone)]
pub struct OperatorOptions {
    pub engine: EngineConfig,
    /// The clock durable timers run on (a `TestClock` in tests); the system clock if unset.
    pub clock: Option<Arc<dyn Clock>>,
    /// Run the controllers only while holding this lease (workflows run regardless).
    pub leader: Option<LeaderOptions>,
    /// Where engine and controller metrics are registered.
    pub registry: prometheus::Registry,
    /// Reconcile only the cellplane objects with these labels (a label selector such as
    /// `cellplane.io/test-run=abc`); unset: all of them.
    pub selector: Option<String>,
    /// The operator's namespace (its synthetic tenants live there).
    pub namespace: String,
    /// The Prometheus that gates without an address query.
    pub prometheus: Option<String>,
}

/// Workflows a replica runs at once by default. The API server sets the pace, not the number of
/// workflows in flight: bringing up 10,200 objects, 1,000 or 2,000 at once were as fast as
/// 10,000 and kept 14 MiB less memory.
pub const MAX_WORKFLOWS: usize = 2_000;

/// The engine's defaults, running as this release of cellplane.
pub fn engine_config() -> EngineConfig {
    EngineConfig { app_version: crate::VERSION.into(), max_concurrent: MAX_WORKFLOWS, ..EngineConfig::default() }
}

impl Default for OperatorOptions {
    fn default() -> Self {
        OperatorOptions {
            engine: engine_config(),
            clock: None,
            leader: None,
            registry: prometheus::Registry::new(),
            selector: None,
            namespace: DEFAULT_NAMESPACE.into(),
            prometheus: None,
        }
    }
}

/// Lets an `Arc<dyn Clock>` be handed to the engine builder.
struct SharedClock(Arc<dyn Clock>);

impl Clock for SharedClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }

    fn sleep_until(&self, deadline: i64) -> BoxFuture<'static, ()> {
        self.0.sleep_until(deadline)
    }
}

pub struct Operator {
    engine: Arc<Engine>,
    prober: Prober,
    fleet: Arc<Fleet>,
    context: Arc<Context>,
    leader: Option<(LeaderElection, String)>,
    ready: AtomicBool,
    /// Stops the fleet's watches when the operator goes.
    watching: CancellationToken,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.watching.cancel();
    }
}

impl Operator {
    /// Starts the workflow engine (its workers run from now on) and the fleet's watches, and
    /// prepares the controllers. Call from within a Tokio runtime.
    pub fn new(
        client: Client,
        journal: Arc<dyn Journal>,
        cloud: Arc<dyn CloudProvider>,
        services: Arc<dyn CellServices>,
        options: OperatorOptions,
    ) -> Result<Self, OperatorError> {
        let watching = CancellationToken::new();
        let fleet = Fleet::watch(&client, options.selector.as_deref(), watching.clone());
        let prober = Prober::new(services.clone(), ProbeMetrics::new(&options.registry)?);
        let deps = FlowDeps::new(cloud, services, fleet.clone(), options.prometheus.clone());
        let identity = options.engine.owner.clone();
        let mut builder = Engine::builder(journal).config(options.engine).metrics(&options.registry);
        if let Some(clock) = options.clock {
            builder = builder.clock(SharedClock(clock));
        }
        let engine = Arc::new(flows::register(builder, &deps).start()?);
        deps.signals.bind(&engine);
        let metrics = ControllerMetrics::new(&options.registry)?;
        let context = Context::new(
            client.clone(),
            engine.clone(),
            fleet.clone(),
            metrics,
            options.selector,
            options.namespace.clone(),
        );
        let leader = options.leader.map(|l| {
            let election = LeaderElection::new(client, &l.namespace, &l.name, &identity, l.lease_duration);
            (election, format!("{}/{}", l.namespace, l.name))
        });
        Ok(Operator { engine, prober, fleet, context, leader, ready: AtomicBool::new(false), watching })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn metrics(&self) -> &ControllerMetrics {
        &self.context.metrics
    }

    /// True once the controllers run (after winning the lease, with leader election).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Runs the controllers until `shutdown`, then shuts the engine down gracefully (running
    /// steps finish, leases are released). Returns an error if the leader lease was lost.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), OperatorError> {
        if let Some((election, _)) = &self.leader
            && !election.acquire(&shutdown).await
        {
            self.engine.shutdown().await;
            return Ok(());
        }
        self.ready.store(true, Ordering::SeqCst);
        self.context.metrics.active.set(1);
        let stop = shutdown.child_token();
        let controllers = controllers::run_all(self.context.clone(), &self.prober, stop.clone());
        let hold = async {
            match &self.leader {
                Some((election, name)) if !election.hold(&shutdown).await => Err(name.clone()),
                Some(_) => Ok(()),
                None => {
                    shutdown.cancelled().await;
                    Ok(())
                }
            }
        };
        let (_, held) = tokio::join!(controllers, async {
            let held = hold.await;
            stop.cancel();
            held
        });
        self.ready.store(false, Ordering::SeqCst);
        self.context.metrics.active.set(0);
        self.engine.shutdown().await;
        held.map_err(OperatorError::LeaseLost)
    }

    /// Runs [`Operator::run`] in a background task; cancel the token to stop it gracefully.
    pub fn spawn(self: &Arc<Self>) -> (CancellationToken, JoinHandle<Result<(), OperatorError>>) {
        let token = CancellationToken::new();
        let (operator, stop) = (self.clone(), token.clone());
        (token, tokio::spawn(async move { operator.run(stop).await }))
    }

    /// Stops the engine at once without writing anything more, as if the process died (the
    /// caller also cancels the token given to `run`). For failure drills and tests.
    pub async fn abort(&self) {
        self.engine.abort().await;
    }
}
