//! Prometheus metrics of the engine, registered in the registry the caller serves.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub(crate) started: IntCounterVec,
    pub(crate) completed: IntCounterVec,
    pub(crate) failed: IntCounterVec,
    pub(crate) step_seconds: HistogramVec,
    pub(crate) step_retries: IntCounterVec,
    pub(crate) lease_takeovers: IntCounter,
    pub(crate) fenced_writes: IntCounter,
    pub(crate) journal_write_failures: IntCounter,
    pub(crate) commit_seconds: Histogram,
    pub(crate) commit_batch_size: Histogram,
    pub(crate) running: IntGauge,
}

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let by_workflow = &["workflow"];
        let metrics = Metrics {
            started: IntCounterVec::new(
                Opts::new("cellplane_workflows_started_total", "Workflow runs started by this engine"),
                by_workflow,
            )?,
            completed: IntCounterVec::new(
                Opts::new("cellplane_workflows_completed_total", "Workflow runs that completed"),
                by_workflow,
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "cellplane_workflows_failed_total",
                    "Workflow runs that failed, were cancelled or became non-deterministic",
                ),
                &["workflow", "state"],
            )?,
            step_seconds: HistogramVec::new(
                HistogramOpts::new("cellplane_workflow_step_duration_seconds", "Step attempt latency, body and commit")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                by_workflow,
            )?,
            step_retries: IntCounterVec::new(
                Opts::new(
                    "cellplane_workflow_step_retries_total",
                    "Step attempts that failed and were scheduled again",
                ),
                by_workflow,
            )?,
            lease_takeovers: IntCounter::new(
                "cellplane_workflow_lease_takeovers_total",
                "Workflows claimed from an owner whose lease expired",
            )?,
            fenced_writes: IntCounter::new(
                "cellplane_workflow_fenced_writes_total",
                "Commits refused because this engine no longer held the workflow's lease",
            )?,
            journal_write_failures: IntCounter::new(
                "cellplane_journal_write_failures_total",
                "Workflow writes the journal refused or failed; each workflow runs again after a pause",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new("cellplane_journal_commit_duration_seconds", "Latency of one group commit")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            commit_batch_size: Histogram::with_opts(
                HistogramOpts::new("cellplane_journal_commit_batch_size", "Workflow commits per group commit")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
            )?,
            running: IntGauge::new("cellplane_workflows_running", "Workflows held in memory by this engine")?,
        };
        registry.register(Box::new(metrics.started.clone()))?;
        registry.register(Box::new(metrics.completed.clone()))?;
        registry.register(Box::new(metrics.failed.clone()))?;
        registry.register(Box::new(metrics.step_seconds.clone()))?;
        registry.register(Box::new(metrics.step_retries.clone()))?;
        registry.register(Box::new(metrics.lease_takeovers.clone()))?;
        registry.register(Box::new(metrics.fenced_writes.clone()))?;
        registry.register(Box::new(metrics.journal_write_failures.clone()))?;
        registry.register(Box::new(metrics.commit_seconds.clone()))?;
        registry.register(Box::new(metrics.commit_batch_size.clone()))?;
        registry.register(Box::new(metrics.running.clone()))?;
        Ok(metrics)
    }
}
