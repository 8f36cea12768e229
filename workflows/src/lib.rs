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
//! Workflows outlive binaries. A change to the sequence of a workflow's durable operations goes
//! behind a patch: `if ctx.patched("change-id").await? { new path } else { old path }`
//! ([`Ctx::patched`]). A run executing live records a marker there and takes the new path; a run
//! replaying a history that passed that point without the marker takes the old one. Once no run on
//! the old path remains, delete the old path and keep `ctx.deprecate_patch("change-id")` in place
//! of the test ([`Ctx::deprecate_patch`]); once no history holds the marker, delete that call too.
//! A replay suite proves each step: export histories ([`Engine::export`]) and replay them on the
//! new code with a [`Replayer`], which executes nothing and names the first operation where code
//! and history part.
//!
//! Each engine runs at an application version ([`EngineConfig::app_version`], `MAJOR.MINOR.PATCH`).
//! A workflow records the version that started it and the highest that ran it, and an engine
//! claims only workflows that no newer version started or ran: in a rolling update, new replicas
//! take over what old ones started (patches keep that safe), and old replicas never pick up a
//! history that newer code wrote. [`Engine::checkpoint`] says when a workflow is held for a newer
//! engine.
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
mod replay;
mod types;
mod version;

pub use clock::{Clock, SystemClock, TestClock};
pub use context::{Ctx, Step};
pub use engine::{Engine, EngineBuilder, EngineConfig, Workflow};
pub use error::{Error, Result, StepError, WfError};
pub use metrics::Metrics;
pub use replay::{History, ReplayError, Replayer, RunHistory};
pub use types::{
    Checkpoint, Event, IdReuse, IdempotencyKey, Op, Outcome, Record, RetryPolicy, Started, State, UnknownState,
};
pub use version::AppVersion;
