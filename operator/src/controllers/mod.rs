//! The controllers: one reconcile [`driver`] for every kind, and one file per kind with what is
//! its own ([`namespace`], [`cell`], [`ring`]). A reconcile returns in milliseconds and never
//! waits: finalizer first, then validation, then an idempotent start of the object's workflow,
//! then status mirrored from the workflow (through server-side apply on the status subresource).
//! Reconciles are triggered by watches and by workflow progress, never by polling.

pub mod cell;
pub mod context;
pub mod dependents;
pub mod driver;
pub mod error;
pub mod events;
pub mod finalizers;
pub mod gauges;
pub mod leader;
pub mod metrics;
pub mod namespace;
pub mod release;
pub mod ring;
pub mod runner;
pub mod status;
pub mod synthetic;

use std::sync::Arc;

pub use context::Context;
pub use error::ReconcileError;
pub use metrics::ControllerMetrics;

/// Runs the controllers and the synthetic prober until `shutdown`.
pub async fn run_all(ctx: Arc<Context>, prober: &synthetic::Prober, shutdown: tokio_util::sync::CancellationToken) {
    tokio::join!(
        cell::run(ctx.clone(), shutdown.clone()),
        namespace::run(ctx.clone(), shutdown.clone()),
        ring::run(ctx.clone(), shutdown.clone()),
        release::run(ctx.clone(), shutdown.clone()),
        prober.run(ctx, shutdown),
    );
}
