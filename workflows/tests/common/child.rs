//! An engine in a child process (this test binary run again with `CHILD_*` variables), so tests
//! can SIGKILL, SIGSTOP and SIGCONT a real owner. It runs `Effectful` workflows whose steps write
//! an effect keyed by their idempotency key, and reports on stdout:
//! `effect KEY` after each step body, `status running=N fenced=F` every 50 ms, `done` at the end.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use cellplane_workflows::journal::Journal;
use cellplane_workflows::{Ctx, Engine, EngineConfig, IdempotencyKey, Record, State, WfError, Workflow};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::{EffectDb, TestJournal};

/// `steps` steps; each writes its effect once per idempotency key and returns the stored value.
pub struct Effectful {
    pub db: Arc<EffectDb>,
    pub owner: String,
    pub step_ms: u64,
}

impl Workflow for Effectful {
    const NAME: &'static str = "effectful";
    type Input = u32;
    type Output = u32;
    async fn run(self: Arc<Self>, ctx: Ctx, steps: u32) -> Result<u32, WfError> {
        for i in 0..steps {
            let this = self.clone();
            let id = ctx.id().to_string();
            let value: String = ctx
                .step(format!("step-{i}"))
                .run(|key| {
                    let this = this.clone();
                    let id = id.clone();
                    async move {
                        let started = cellplane_workflows::clock::wall_ms();
                        let value = this.db.record_effect(&key.to_string(), &format!("{id}/{i}"), &this.owner).await?;
                        println!("effect {key}");
                        tokio::time::sleep(Duration::from_millis(this.step_ms)).await;
                        this.db.record_execution(&id, key.seq, &this.owner, started).await?;
                        Ok(value)
                    }
                })
                .await?;
            if value != format!("{}/{i}", ctx.id()) {
                return Err(WfError::failed(format!("step {i} returned {value:?}")));
            }
        }
        Ok(steps)
    }
}

/// Workflows a child engine runs at once: small, so that two engines started together both get
/// work. It bounds the steps in flight when the child is interrupted.
pub const CHILD_MAX_CONCURRENT: usize = 8;

/// What a child engine does, read from its environment.
pub struct ChildSpec {
    pub postgres: bool,
    pub url: String,
    pub schema: String,
    pub owner: String,
    pub workflows: u32,
    pub steps: u32,
    pub step_ms: u64,
    pub lease_ms: u64,
}

impl ChildSpec {
    fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(format!("CHILD_{name}")).ok();
        Some(ChildSpec {
            postgres: var("POSTGRES")? == "1",
            url: var("URL")?,
            schema: var("SCHEMA")?,
            owner: var("OWNER")?,
            workflows: var("WORKFLOWS")?.parse().ok()?,
            steps: var("STEPS")?.parse().ok()?,
            step_ms: var("STEP_MS")?.parse().ok()?,
            lease_ms: var("LEASE_MS")?.parse().ok()?,
        })
    }

    /// Starts this test binary as a child engine running `entry` (an ignored test).
    pub fn spawn(&self, entry: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([entry, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CHILD_POSTGRES", if self.postgres { "1" } else { "0" })
            .env("CHILD_URL", &self.url)
            .env("CHILD_SCHEMA", &self.schema)
            .env("CHILD_OWNER", &self.owner)
            .env("CHILD_WORKFLOWS", self.workflows.to_string())
            .env("CHILD_STEPS", self.steps.to_string())
            .env("CHILD_STEP_MS", self.step_ms.to_string())
            .env("CHILD_LEASE_MS", self.lease_ms.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        (child, BufReader::new(stdout).lines())
    }
}

/// The body of the ignored entry test: runs an engine until every workflow finished.
pub async fn run_child() {
    let Some(spec) = ChildSpec::from_env() else { return };
    let db = TestJournal { url: spec.url.clone(), schema: spec.schema.clone(), postgres: spec.postgres, _dir: None };
    let journal = db.open().await;
    let effects = Arc::new(db.pool().await);
    std::mem::forget(db); // the parent owns the schema's lifetime
    let registry = prometheus::Registry::new();
    let config = EngineConfig {
        owner: spec.owner.clone(),
        lease: Duration::from_millis(spec.lease_ms),
        poll_interval: Duration::from_millis(20),
        max_concurrent: CHILD_MAX_CONCURRENT,
        ..EngineConfig::default()
    };
    let engine = Engine::builder(journal.clone())
        .config(config)
        .metrics(&registry)
        .register(Effectful { db: effects, owner: spec.owner.clone(), step_ms: spec.step_ms })
        .start()
        .expect("engine starts");
    let items: Vec<(String, serde_json::Value)> =
        (0..spec.workflows).map(|i| (format!("wf-{i:03}"), serde_json::json!(spec.steps))).collect();
    engine.start_many::<Effectful>(&items, Default::default()).await.expect("workflows start");
    loop {
        let fenced = super::counter(&registry, "cellplane_workflow_fenced_writes_total");
        println!("status running={} fenced={fenced}", engine.running());
        let finished = journal.list(Some(State::Completed), i64::from(spec.workflows) + 1).await.expect("list").len();
        if finished == spec.workflows as usize && engine.running() == 0 {
            println!("done");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks what the `Effectful` workflows `wf-000`... left against the journal, and returns the
/// number of re-executions. Steps run at least once and their effects exactly once through the
/// idempotency key: every step's result is journaled and its effect stored, with its own value;
/// the owner that committed a step executed it once; and a step was executed again only by an
/// owner in `interrupted` (killed, or paused past its lease) that had it in flight, between the
/// effect and the commit, so at most one step per workflow that owner held.
pub async fn check_effects(
    journal: &Arc<dyn Journal>,
    effects: &EffectDb,
    workflows: u32,
    steps: u32,
    interrupted: &[String],
) -> usize {
    let committed = committers(journal, workflows).await;
    assert_eq!(committed.len(), (workflows * steps) as usize, "every step's result is journaled");
    let stored = effects.effects().await;
    assert_eq!(stored.len(), committed.len(), "every step's effect is stored once");
    let mut executors: HashMap<String, Vec<String>> = HashMap::new();
    for (key, owner) in effects.effect_log().await {
        executors.entry(key).or_default().push(owner);
    }
    let mut in_flight: HashMap<String, usize> = HashMap::new();
    for (key, value, executions) in &stored {
        let (workflow, seq) =
            key.rsplit_once(':').and_then(|(rest, seq)| Some((rest.rsplit_once(':')?.0, seq))).expect("a key");
        assert_eq!(*value, format!("{workflow}/{seq}"), "{key} stored its own value");
        let committer = committed.get(key).unwrap_or_else(|| panic!("{key} has an effect but no journaled result"));
        let owners = executors.remove(key).unwrap_or_default();
        assert_eq!(owners.len() as i64, *executions, "{key}: the log counts every execution");
        let distinct: std::collections::HashSet<&String> = owners.iter().collect();
        assert_eq!(distinct.len(), owners.len(), "{key}: an owner executed it twice: {owners:?}");
        assert!(owners.contains(committer), "{key}: {committer} committed it without executing it: {owners:?}");
        for other in owners.iter().filter(|o| *o != committer) {
            assert!(
                interrupted.contains(other),
                "{key}: re-executed by {other}, which was never interrupted: {owners:?}"
            );
            *in_flight.entry(other.clone()).or_default() += 1;
        }
    }
    for (owner, steps) in &in_flight {
        assert!(steps <= &CHILD_MAX_CONCURRENT, "{owner} had {steps} steps in flight, more than the workflows it ran");
    }
    in_flight.values().sum()
}

/// The owner that journaled each step's result, by idempotency key.
async fn committers(journal: &Arc<dyn Journal>, workflows: u32) -> HashMap<String, String> {
    let mut committed = HashMap::new();
    for i in 0..workflows {
        let id = format!("wf-{i:03}");
        for event in journal.history(&id).await.expect("history readable") {
            if let Record::StepDone { result: Ok(_), .. } = event.record {
                let key = IdempotencyKey { workflow_id: id.clone(), run: event.run, seq: event.seq };
                let previous = committed.insert(key.to_string(), event.owner.unwrap_or_default());
                assert!(previous.is_none(), "{key} journaled twice");
            }
        }
    }
    committed
}
