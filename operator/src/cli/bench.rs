//! `cellplane bench ...`: engine benchmarks. Each prints one JSON line of figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cellplane_workflows::journal::{ClaimRequest, Commit, Journal, NewWorkflow, RowUpdate};
use cellplane_workflows::{
    AppVersion, Ctx, Engine, EngineConfig, Event, IdReuse, Op, Record, Started, State, StepError, WfError, Workflow,
};
use clap::{Args, Subcommand};
use serde_json::json;
use tokio::sync::Mutex;

use super::{JournalArgs, open_journal};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// C cells and N namespaces until all are Ready: seconds, reconciles/s, peak RSS.
    Fleet(super::fleet::FleetArgs),
    /// C sim cells on a real cluster install a release of N objects: seconds until every one is
    /// healthy, the operator's API requests and peak RSS.
    Releases(super::release_bench::ReleasesArgs),
    /// N workflows of M no-op steps at concurrency C: throughput and step latency.
    Engine(EngineBench),
    /// N workflows left mid-flight under a dead owner: how fast a new engine resumes them all.
    Recovery {
        #[command(flatten)]
        journal: JournalArgs,
        #[arg(long, default_value_t = 10_000)]
        workflows: usize,
    },
    /// N workflows that each run a step and then sleep for an hour: the engine's memory.
    Sleepers {
        #[command(flatten)]
        journal: JournalArgs,
        #[arg(long, default_value_t = 10_000)]
        workflows: usize,
    },
}

#[derive(Args)]
pub struct EngineBench {
    #[command(flatten)]
    journal: JournalArgs,
    #[arg(long, default_value_t = 1_000)]
    workflows: usize,
    #[arg(long, default_value_t = 10)]
    steps: u32,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Names the workflows `bench-<ID>-<i>`; a second run with the same id resumes the
    /// unfinished ones instead of starting new ones.
    #[arg(long)]
    run_id: Option<String>,
    /// Each step upserts `(idempotency_key, executions)` into the table `bench_effects`.
    #[arg(long)]
    effects: bool,
    /// Each step is followed by a publish of the step's number (a step's latency includes it).
    #[arg(long)]
    publish: bool,
}

pub async fn run(command: BenchCommand) -> Result<(), String> {
    match command {
        BenchCommand::Fleet(args) => super::fleet::bench_fleet(args).await.map_err(|e| e.to_string()),
        BenchCommand::Releases(args) => super::release_bench::bench_releases(args).await.map_err(|e| e.to_string()),
        BenchCommand::Engine(args) => engine_bench(args).await,
        BenchCommand::Recovery { journal, workflows } => recovery_bench(journal, workflows).await,
        BenchCommand::Sleepers { journal, workflows } => sleepers_bench(journal, workflows).await,
    }
}

/// A workflow of `steps` steps that do nothing (or write one effect row each, or publish after each).
struct NoOps {
    effects: Option<Effects>,
    publish: bool,
    latencies_us: Arc<Mutex<Vec<u64>>>,
    live_steps: Arc<AtomicUsize>,
}

impl Workflow for NoOps {
    const NAME: &'static str = "bench-noops";
    type Input = u32;
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, steps: u32) -> Result<(), WfError> {
        for i in 0..steps {
            let live = !ctx.is_replaying();
            let started = Instant::now();
            let effects = self.effects.clone();
            ctx.step(format!("noop-{i}"))
                .run(|key| {
                    let effects = effects.clone();
                    async move {
                        if let Some(effects) = effects {
                            effects.record(&key.to_string()).await.map_err(StepError::from)?;
                        }
                        Ok(())
                    }
                })
                .await?;
            if self.publish {
                ctx.publish(&json!({ "step": i })).await?;
            }
            if live {
                self.live_steps.fetch_add(1, Ordering::Relaxed);
                self.latencies_us.lock().await.push(started.elapsed().as_micros() as u64);
            }
        }
        Ok(())
    }
}

/// The `bench_effects` table, in the journal's own database.
#[derive(Clone)]
enum Effects {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Effects {
    async fn connect(args: &JournalArgs) -> Result<Self, String> {
        let fail = |e: sqlx::Error| format!("cannot prepare bench_effects: {e}");
        const CREATE: &str =
            "CREATE TABLE IF NOT EXISTS bench_effects (idempotency_key TEXT PRIMARY KEY, executions BIGINT NOT NULL)";
        if args.journal.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&args.journal).await.map_err(fail)?;
            sqlx::query(CREATE).execute(&pool).await.map_err(fail)?;
            Ok(Effects::Sqlite(pool))
        } else {
            let options: sqlx::postgres::PgConnectOptions = args.journal.parse().map_err(fail)?;
            let options = options.options([("search_path", args.journal_schema.as_str())]);
            let pool =
                sqlx::postgres::PgPoolOptions::new().max_connections(16).connect_with(options).await.map_err(fail)?;
            sqlx::query(CREATE).execute(&pool).await.map_err(fail)?;
            Ok(Effects::Postgres(pool))
        }
    }

    async fn record(&self, key: &str) -> Result<(), sqlx::Error> {
        const UPSERT: &str = "INSERT INTO bench_effects (idempotency_key, executions) VALUES ($1, 1) \
             ON CONFLICT (idempotency_key) DO UPDATE SET executions = bench_effects.executions + 1";
        match self {
            Effects::Postgres(pool) => sqlx::query(UPSERT).bind(key).execute(pool).await.map(|_| ()),
            Effects::Sqlite(pool) => sqlx::query(UPSERT).bind(key).execute(pool).await.map(|_| ()),
        }
    }
}

fn bench_config(owner: String, concurrency: usize) -> EngineConfig {
    EngineConfig {
        owner,
        max_concurrent: concurrency,
        claim_batch: concurrency.clamp(1, 500),
        poll_interval: Duration::from_millis(200),
        ..EngineConfig::default()
    }
}

fn noops(effects: Option<Effects>, publish: bool) -> (NoOps, Arc<Mutex<Vec<u64>>>, Arc<AtomicUsize>) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let live = Arc::new(AtomicUsize::new(0));
    (NoOps { effects, publish, latencies_us: latencies.clone(), live_steps: live.clone() }, latencies, live)
}

async fn engine_bench(args: EngineBench) -> Result<(), String> {
    let journal = open_journal(&args.journal, true).await?;
    let effects = if args.effects { Some(Effects::connect(&args.journal).await?) } else { None };
    let run_id = args.run_id.clone().unwrap_or_else(uuid_short);
    let (workflow, latencies, live_steps) = noops(effects, args.publish);
    let registry = prometheus::Registry::new();
    // A stable owner per run id: a second run of the same id reclaims the first one's leases at once.
    let engine = Engine::builder(journal.clone())
        .config(bench_config(format!("bench-{run_id}"), args.concurrency))
        .metrics(&registry)
        .register(workflow)
        .start()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut already_done = 0;
    for chunk in (0..args.workflows).collect::<Vec<_>>().chunks(1_000) {
        let items: Vec<(String, serde_json::Value)> =
            chunk.iter().map(|i| (format!("bench-{run_id}-{i}"), json!(args.steps))).collect();
        let outcomes = engine.start_many::<NoOps>(&items, IdReuse::ReturnExisting).await.map_err(|e| e.to_string())?;
        already_done += outcomes.iter().filter(|o| matches!(o, Started::Existing(s) if s.is_finished())).count();
    }
    wait_for_completions(&registry, args.workflows - already_done).await;
    let seconds = started.elapsed().as_secs_f64();
    engine.shutdown().await;
    let steps = live_steps.load(Ordering::Relaxed);
    let mut latencies = latencies.lock().await.clone();
    let (commits, batch_sum) = histogram(&registry, "cellplane_journal_commit_batch_size");
    let (_, commit_seconds) = histogram(&registry, "cellplane_journal_commit_duration_seconds");
    println!(
        "{}",
        json!({
            "workflows": args.workflows,
            "resumed_finished": already_done,
            "steps": steps,
            "concurrency": args.concurrency,
            "publish": args.publish,
            "journal": journal_kind(&args.journal.journal),
            "seconds": round(seconds),
            "steps_per_sec": round(steps as f64 / seconds),
            "p50_step_ms": round(percentile(&mut latencies, 0.50)),
            "p99_step_ms": round(percentile(&mut latencies, 0.99)),
            "group_commits": commits,
            "avg_commits_per_group": round(batch_sum / commits.max(1) as f64),
            "avg_group_commit_ms": round(commit_seconds * 1000.0 / commits.max(1) as f64),
        })
    );
    Ok(())
}

/// The recovery benchmark's workflow: [`NoOps`] under its own name, so stranding claims nothing else.
struct Stranded(NoOps);

impl Workflow for Stranded {
    const NAME: &'static str = "bench-stranded";
    type Input = u32;
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, steps: u32) -> Result<(), WfError> {
        let inner = NoOps {
            effects: None,
            publish: false,
            latencies_us: self.0.latencies_us.clone(),
            live_steps: self.0.live_steps.clone(),
        };
        Arc::new(inner).run(ctx, steps).await
    }
}

async fn recovery_bench(args: JournalArgs, workflows: usize) -> Result<(), String> {
    let journal = open_journal(&args, true).await?;
    let run_id = uuid_short();
    let ids = strand_mid_flight(&journal, &run_id, workflows).await.map_err(|e| e.to_string())?;
    let (inner, _, live_steps) = noops(None, false);
    let workflow = Stranded(inner);
    let registry = prometheus::Registry::new();
    let started = Instant::now();
    let engine = Engine::builder(journal.clone())
        .config(bench_config(format!("rescuer-{run_id}"), workflows.max(1)))
        .metrics(&registry)
        .register(workflow)
        .start()
        .map_err(|e| e.to_string())?;
    // Resumed = taken over, replayed, and one new step committed.
    while live_steps.load(Ordering::Relaxed) < ids.len() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let resumed = started.elapsed().as_secs_f64();
    wait_for_completions(&registry, ids.len()).await;
    let completed = started.elapsed().as_secs_f64();
    engine.shutdown().await;
    println!(
        "{}",
        json!({
            "workflows": workflows,
            "journal": journal_kind(&args.journal),
            "seconds_to_resume_all": round(resumed),
            "seconds_to_complete_all": round(completed),
            "takeovers": counter(&registry, "cellplane_workflow_lease_takeovers_total"),
            "peak_rss_mib": memory_mib("self", "VmHWM"),
        })
    );
    Ok(())
}

/// Creates workflows of two steps, claims them for an owner that then "dies" and journals their
/// first step, as a crashed engine would leave them; returns once the dead owner's leases expired.
async fn strand_mid_flight(
    journal: &Arc<dyn Journal>,
    run_id: &str,
    count: usize,
) -> cellplane_workflows::Result<Vec<String>> {
    let dead = format!("dead-{run_id}");
    let ids: Vec<String> = (0..count).map(|i| format!("recovery-{run_id}-{i}")).collect();
    let now = cellplane_workflows::clock::wall_ms();
    let mut expired_at = now;
    for chunk in ids.chunks(1_000) {
        let new: Vec<NewWorkflow> = chunk
            .iter()
            .map(|id| NewWorkflow {
                id: id.clone(),
                name: Stranded::NAME.into(),
                version: Stranded::VERSION,
                input: json!(2),
                parent: None,
                app_version: AppVersion::default(),
            })
            .collect();
        journal.create(&new, IdReuse::ReturnExisting, now).await?;
        let lease_until = cellplane_workflows::clock::wall_ms() + 1_000;
        expired_at = lease_until + 1;
        let claimed = journal
            .claim(&ClaimRequest {
                owner: dead.clone(),
                app_version: AppVersion::default(),
                types: vec![(Stranded::NAME.into(), Stranded::VERSION)],
                limit: chunk.len() as i64,
                clock_now: now,
                wall_now: now,
                lease_until,
            })
            .await?;
        let commits: Vec<Commit> = claimed
            .iter()
            .map(|c| Commit {
                id: c.id.clone(),
                owner: dead.clone(),
                epoch: c.epoch,
                wall_now: now,
                events: vec![Event {
                    run: c.run,
                    seq: 0,
                    idx: 0,
                    op: Op::Step,
                    name: "noop-0".into(),
                    record: Record::StepDone { result: Ok(json!(null)), attempts: 1, duration_ms: 0 },
                    epoch: c.epoch,
                    owner: Some(dead.clone()),
                    at: now,
                }],
                row: RowUpdate {
                    step: Some("noop-0".into()),
                    step_seq: Some(0),
                    attempt: 1,
                    ..RowUpdate::new(State::Running)
                },
                consume_signal: None,
                send_signals: Vec::new(),
                append_only: false,
            })
            .collect();
        journal.commit(&commits).await?;
    }
    // The owner is "dead" from here on: wait out its leases (set-up, not measured).
    while cellplane_workflows::clock::wall_ms() <= expired_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(ids)
}

/// A workflow that runs one step and then sleeps for an hour.
struct Sleeper(Arc<AtomicUsize>);
impl Workflow for Sleeper {
    const NAME: &'static str = "bench-sleeper";
    type Input = ();
    type Output = ();
    async fn run(self: Arc<Self>, ctx: Ctx, _: ()) -> Result<(), WfError> {
        ctx.step("prepare").run(|_| async { Ok(()) }).await?;
        self.0.fetch_add(1, Ordering::Relaxed);
        ctx.sleep(Duration::from_secs(3600)).await
    }
}

async fn sleepers_bench(args: JournalArgs, workflows: usize) -> Result<(), String> {
    let journal = open_journal(&args, true).await?;
    let run_id = uuid_short();
    let prepared = Arc::new(AtomicUsize::new(0));
    let engine = Engine::builder(journal.clone())
        .config(bench_config(format!("sleepers-{run_id}"), workflows.max(1)))
        .register(Sleeper(prepared.clone()))
        .start()
        .map_err(|e| e.to_string())?;
    let rss_before = memory_mib("self", "VmRSS");
    let started = Instant::now();
    for chunk in (0..workflows).collect::<Vec<_>>().chunks(1_000) {
        let items: Vec<(String, serde_json::Value)> =
            chunk.iter().map(|i| (format!("sleeper-{run_id}-{i}"), json!(null))).collect();
        engine.start_many::<Sleeper>(&items, IdReuse::ReturnExisting).await.map_err(|e| e.to_string())?;
    }
    // Asleep = its step ran and it left memory with its timer journaled.
    while prepared.load(Ordering::Relaxed) < workflows || engine.running() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sample = journal.get(&format!("sleeper-{run_id}-0")).await.map_err(|e| e.to_string())?;
    let sample_state = sample.map(|row| row.checkpoint.state.to_string()).unwrap_or_default();
    println!(
        "{}",
        json!({
            "workflows": workflows,
            "sample_state": sample_state,
            "journal": journal_kind(&args.journal),
            "seconds_to_all_sleeping": round(seconds),
            "resident_in_memory": engine.running(),
            "rss_mib_before": rss_before,
            "rss_mib": memory_mib("self", "VmRSS"),
            "peak_rss_mib": memory_mib("self", "VmHWM"),
        })
    );
    engine.shutdown().await;
    Ok(())
}

async fn wait_for_completions(registry: &prometheus::Registry, expected: usize) {
    while counter(registry, "cellplane_workflows_completed_total") < expected as f64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

/// (sample count, sample sum) of a histogram.
fn histogram(registry: &prometheus::Registry, name: &str) -> (u64, f64) {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter().map(|m| m.get_histogram()))
        .fold((0, 0.0), |(count, sum), h| (count + h.get_sample_count(), sum + h.get_sample_sum()))
}

fn percentile(samples_us: &mut [u64], q: f64) -> f64 {
    if samples_us.is_empty() {
        return 0.0;
    }
    samples_us.sort_unstable();
    let index = ((samples_us.len() - 1) as f64 * q).round() as usize;
    samples_us[index] as f64 / 1000.0
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn journal_kind(url: &str) -> &'static str {
    if url.starts_with("sqlite:") { "sqlite" } else { "postgres" }
}

fn uuid_short() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A line of /proc/PID/status (VmRSS, VmHWM) in MiB, PID being a number or `self`; 0 where
/// /proc is not available.
pub(super) fn memory_mib(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    round(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&mut samples, 0.5), 51.0);
        assert_eq!(percentile(&mut samples, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }
}
