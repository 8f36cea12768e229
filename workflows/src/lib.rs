//! cellplane-workflows: a durable workflow engine journaled to PostgreSQL or SQLite.
//!
//! A workflow is ordinary async Rust over a [`Ctx`]: named steps with retry policies, durable
//! sleeps, signals, child workflows, continue-as-new and cooperative cancellation. Every step
//! result is committed to the [`journal`] before the workflow goes on; after a crash the function
//! runs again from the top and completed operations return their recorded results. Engines claim
//! workflows under leases fenced by an epoch, so several of them can share one PostgreSQL.
//! A workflow may publish a state of its own ([`Ctx::publish`]), which any engine reads with its
//! checkpoint; [`Engine::changes`] names the workflows whose checkpoint changed, on PostgreSQL
//! whichever engine changed them.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cellplane_workflows::{Ctx, Engine, WfError, Workflow};
//!
//! struct Greet;
//! impl Workflow for Greet {
//!     const NAME: &'static str = "greet";
//!     type Input = String;
//!     type Output = String;
//!     async fn run(self: Arc<Self>, ctx: Ctx, name: String) -> Result<String, WfError> {
//!         let greeting: String = ctx
//!             .step("compose")
//!             .run(|_key| {
//!                 let name = name.clone();
//!                 async move { Ok(format!("hello {name}")) }
//!             })
//!             .await?;
//!         ctx.sleep(std::time::Duration::from_secs(3600)).await?;
//!         Ok(greeting)
//!     }
//! }
//!
//! # async fn demo() -> cellplane_workflows::Result<()> {
//! let journal = cellplane_workflows::journal::open("sqlite://cellplane.db", "cellplane").await?;
//! let engine = Engine::builder(journal).register(Greet).start()?;
//! engine.start::<Greet>("greet-1", &"world".to_string()).await?;
//! assert_eq!(engine.result::<Greet>("greet-1").await?, "hello world");
//! # Ok(()) }
//! ```

pub mod clock;
mod context;
mod engine;
mod error;
pub mod journal;
mod metrics;
mod types;

pub use clock::{Clock, SystemClock, TestClock};
pub use context::{Ctx, Step};
pub use engine::{Engine, EngineBuilder, EngineConfig, Workflow};
pub use error::{Error, Result, StepError, WfError};
pub use metrics::Metrics;
pub use types::{
    Checkpoint, Event, IdReuse, IdempotencyKey, Op, Outcome, Record, RetryPolicy, Started, State, UnknownState,
};
