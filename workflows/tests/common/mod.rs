//! Test support: a throwaway journal (a PostgreSQL schema or a SQLite file) and waiting on
//! conditions with a deadline.
#![allow(dead_code)]

pub mod child;
pub mod provision;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cellplane_workflows::journal::{self, Journal};
use cellplane_workflows::{Checkpoint, Engine, EngineBuilder, EngineConfig, State};

pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A journal that exists for one test: a fresh schema in PostgreSQL or a file in a temp dir.
pub struct TestJournal {
    pub url: String,
    pub schema: String,
    postgres: bool,
    _dir: Option<tempfile::TempDir>,
}

impl TestJournal {
    pub fn postgres() -> Self {
        let schema = format!("t_{}", uuid_simple());
        TestJournal { url: postgres_url(), schema, postgres: true, _dir: None }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("journal.db").display());
        TestJournal { url, schema: "unused".into(), postgres: false, _dir: Some(dir) }
    }

    pub fn of_kind(postgres: bool) -> Self {
        if postgres { Self::postgres() } else { Self::sqlite() }
    }

    pub async fn open(&self) -> Arc<dyn Journal> {
        journal::open(&self.url, &self.schema).await.expect("journal opens")
    }

    /// A pool on the same database (for effect tables written by steps).
    pub async fn pool(&self) -> EffectDb {
        if self.postgres {
            let options: sqlx::postgres::PgConnectOptions = self.url.parse().expect("url");
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect_with(options.options([("search_path", self.schema.as_str())]))
                .await
                .expect("connect");
            EffectDb::Postgres(pool)
        } else {
            let options: sqlx::sqlite::SqliteConnectOptions = self.url.parse().expect("url");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.busy_timeout(Duration::from_secs(30)))
                .await
                .expect("connect");
            EffectDb::Sqlite(pool)
        }
    }
}

impl Drop for TestJournal {
    fn drop(&mut self) {
        if !self.postgres {
            return;
        }
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Runs on its own thread: Drop may be called inside a runtime that cannot block.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(pool) = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                }
            })
        })
        .join();
    }
}

/// One run of a step body, as the step recorded it.
#[derive(sqlx::FromRow)]
pub struct Execution {
    pub workflow_id: String,
    pub seq: i64,
    pub owner: String,
    pub started_ms: i64,
    pub ended_ms: i64,
}

pub enum EffectDb {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// Evaluates `$body` with `$pool` bound to the database's pool, whichever of the two types it has.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            EffectDb::Postgres($pool) => $body,
            EffectDb::Sqlite($pool) => $body,
        }
    };
}

impl EffectDb {
    pub async fn execute(&self, sql: impl Into<String>) {
        let sql = sqlx::AssertSqlSafe(sql.into());
        with_pool!(self, pool => sqlx::query(sql).execute(pool).await.map(|_| ())).expect("statement runs");
    }

    /// Stores the effect of a step once (keyed by its idempotency key) and logs, in the same
    /// transaction, that `owner` executed it: the log holds one row per execution.
    pub async fn record_effect(&self, key: &str, value: &str, owner: &str) -> Result<String, sqlx::Error> {
        const UPSERT: &str = "INSERT INTO effects (key, value, executions) VALUES ($1, $2, 1) \
             ON CONFLICT (key) DO UPDATE SET executions = effects.executions + 1 RETURNING value";
        const LOG: &str = "INSERT INTO effect_log (key, owner) VALUES ($1, $2)";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let stored: String = sqlx::query_scalar(UPSERT).bind(key).bind(value).fetch_one(&mut *tx).await?;
            sqlx::query(LOG).bind(key).bind(owner).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(stored)
        })
    }

    /// Makes the journal refuse to record operations named `name`, as a failing database would.
    pub async fn refuse_events_named(&self, name: &'static str) {
        match self {
            EffectDb::Postgres(_) => {
                self.execute(
                    "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
                )
                .await;
                let trigger = format!(
                    "CREATE TRIGGER refused BEFORE INSERT ON events FOR EACH ROW WHEN (NEW.name = '{name}') \
                     EXECUTE FUNCTION refuse_event()"
                );
                self.execute(trigger).await;
            }
            EffectDb::Sqlite(_) => {
                let trigger = format!(
                    "CREATE TRIGGER refused BEFORE INSERT ON events WHEN NEW.name = '{name}' \
                     BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                );
                self.execute(trigger).await;
            }
        }
    }

    /// Ends [`EffectDb::refuse_events_named`].
    pub async fn accept_events(&self) {
        match self {
            EffectDb::Postgres(_) => self.execute("DROP TRIGGER refused ON events").await,
            EffectDb::Sqlite(_) => self.execute("DROP TRIGGER refused").await,
        }
    }

    pub async fn create_effects_table(&self) {
        self.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, value TEXT NOT NULL, executions BIGINT NOT NULL)")
            .await;
        self.execute("CREATE TABLE IF NOT EXISTS effect_log (key TEXT NOT NULL, owner TEXT NOT NULL)").await;
        self.execute(
            "CREATE TABLE IF NOT EXISTS executions (workflow_id TEXT NOT NULL, seq BIGINT NOT NULL, owner TEXT NOT NULL, \
             started_ms BIGINT NOT NULL, ended_ms BIGINT NOT NULL)",
        )
        .await;
    }

    /// Records that `owner` ran a step of `workflow_id` from `started_ms` until now.
    pub async fn record_execution(
        &self,
        workflow_id: &str,
        seq: i64,
        owner: &str,
        started_ms: i64,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str =
            "INSERT INTO executions (workflow_id, seq, owner, started_ms, ended_ms) VALUES ($1, $2, $3, $4, $5)";
        let ended = cellplane_workflows::clock::wall_ms();
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(workflow_id)
            .bind(seq)
            .bind(owner)
            .bind(started_ms)
            .bind(ended)
            .execute(pool)
            .await
            .map(|_| ()))
    }

    /// Every step execution, in order of start per workflow.
    pub async fn executions(&self) -> Vec<Execution> {
        const SQL: &str =
            "SELECT workflow_id, seq, owner, started_ms, ended_ms FROM executions ORDER BY workflow_id, started_ms";
        with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await).expect("executions readable")
    }

    /// (key, value, executions) of every effect.
    pub async fn effects(&self) -> Vec<(String, String, i64)> {
        const SQL: &str = "SELECT key, value, executions FROM effects ORDER BY key";
        with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await).expect("effects readable")
    }

    /// (key, owner) of every execution of a step's effect.
    pub async fn effect_log(&self) -> Vec<(String, String)> {
        const SQL: &str = "SELECT key, owner FROM effect_log ORDER BY key";
        with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await).expect("effect log readable")
    }
}

pub fn uuid_simple() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

pub fn fast_config(owner: &str) -> EngineConfig {
    EngineConfig {
        owner: owner.to_string(),
        lease: Duration::from_secs(2),
        poll_interval: Duration::from_millis(25),
        shutdown_grace: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

pub fn engine(journal: Arc<dyn Journal>, owner: &str) -> EngineBuilder {
    Engine::builder(journal).config(fast_config(owner))
}

/// Polls `check` until it returns Some or the deadline passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of a counter in `registry` (summed over its labels).
pub fn counter(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

/// Awaits `fut`, failing the test if it takes longer than the suite's deadline.
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut).await.expect("finished within 30 s")
}

pub async fn checkpoint_in(engine: &Engine, id: &str, state: State) -> Checkpoint {
    eventually(&format!("{id} to be {state}"), || async {
        engine.checkpoint(id).await.expect("journal readable").filter(|cp| cp.state == state)
    })
    .await
}

pub async fn await_finished(journal: &Arc<dyn Journal>, id: &str) -> Checkpoint {
    eventually(&format!("{id} to finish"), || async {
        journal.get(id).await.expect("journal readable").map(|row| row.checkpoint).filter(|cp| cp.state.is_finished())
    })
    .await
}

/// Declares a test that runs `$body(postgres: bool)` once per journal.
#[macro_export]
macro_rules! both_journals {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(true).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(false).await
            }
        }
    };
}
