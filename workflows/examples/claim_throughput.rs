//! Prints the journal's claim throughput as one JSON line: raw claims of pending workflows (one
//! claim statement per batch), then workflows of one no-op step through a whole engine, where
//! claims dominate. The journal is `JOURNAL_URL`, else `DATABASE_URL`, else a SQLite temp file;
//! each run uses a fresh PostgreSQL schema.
//!
//! `cargo run --release -p cellplane-workflows --example claim_throughput -- [WORKFLOWS] [CONCURRENCY]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cellplane_workflows::journal::{self, ClaimRequest, Journal};
use cellplane_workflows::{AppVersion, Ctx, Engine, EngineConfig, IdReuse, WfError, Workflow};
use serde_json::json;

struct OneStep;

impl Workflow for OneStep {
    const NAME: &'static str = "claim-bench";
    type Input = ();
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
        ctx.step("noop").run(|_| async { Ok(()) }).await
    }
}

type Failure = Box<dyn std::error::Error>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let workflows: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let dir = tempfile_dir()?;
    let url = std::env::var("JOURNAL_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("bench.db").display()));
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple().to_string().get(..8).unwrap_or("x"));
    let journal = journal::open(&url, &schema).await?;
    let raw = raw_claims(&journal, workflows).await?;
    let engine = engine_run(&journal, workflows, concurrency).await?;
    println!(
        "{}",
        json!({
            "journal": if url.starts_with("sqlite") { "sqlite" } else { "postgres" },
            "workflows": workflows,
            "raw_claims_per_sec": raw,
            "concurrency": concurrency,
            "engine_workflows_per_sec": engine,
        })
    );
    if !url.starts_with("sqlite") {
        drop_schema(&url, &schema).await?;
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!("claim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn starts(prefix: &str, n: usize) -> Vec<(String, serde_json::Value)> {
    (0..n).map(|i| (format!("{prefix}-{i}"), json!(null))).collect()
}

/// Claims per second of `n` pending workflows, 500 per claim statement, by a client engine.
async fn raw_claims(journal: &Arc<dyn Journal>, n: usize) -> Result<f64, Failure> {
    let client = Engine::builder(journal.clone()).start()?;
    for chunk in starts("raw", n).chunks(1_000) {
        client.start_many::<OneStep>(chunk, IdReuse::ReturnExisting).await?;
    }
    let started = Instant::now();
    let mut claimed = 0;
    while claimed < n {
        let now = cellplane_workflows::clock::wall_ms();
        let request = ClaimRequest {
            owner: "raw-claimer".into(),
            app_version: AppVersion::default(),
            types: vec![(OneStep::NAME.into(), 1)],
            limit: 500,
            clock_now: now,
            wall_now: now,
            lease_until: now + 600_000,
        };
        let batch = journal.claim(&request).await?.len();
        if batch == 0 {
            return Err(format!("claimed {claimed} of {n}, then nothing").into());
        }
        claimed += batch;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    client.shutdown().await;
    Ok(rate.round())
}

/// Workflows per second of `n` one-step workflows through an engine at `concurrency`.
async fn engine_run(journal: &Arc<dyn Journal>, n: usize, concurrency: usize) -> Result<f64, Failure> {
    let config = EngineConfig {
        owner: "bench-engine".into(),
        max_concurrent: concurrency,
        claim_batch: concurrency.clamp(1, 500),
        poll_interval: Duration::from_millis(200),
        ..EngineConfig::default()
    };
    let registry = prometheus::Registry::new();
    let engine = Engine::builder(journal.clone()).config(config).metrics(&registry).register(OneStep).start()?;
    let started = Instant::now();
    for chunk in starts("run", n).chunks(1_000) {
        engine.start_many::<OneStep>(chunk, IdReuse::ReturnExisting).await?;
    }
    while completed(&registry) < n as f64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    engine.shutdown().await;
    Ok(rate.round())
}

fn completed(registry: &prometheus::Registry) -> f64 {
    let families = registry.gather();
    let completed = families.iter().filter(|f| f.name() == "cellplane_workflows_completed_total");
    completed.flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value())).sum()
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), Failure> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE"))).execute(&pool).await?;
    Ok(())
}
