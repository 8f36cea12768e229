//! SQLite journal: one file, the default for a single replica and a newcomer's first run.
//! SQLite serialises writers, so a batch is one transaction of small statements. One process
//! uses it, so its change feed announces its own writes only.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::*;
use crate::{Error, Started};

const ROW_COLUMNS: &str = "id, name, version, run, state, reason, input, output, parent_id, step_name, step_seq, \
    attempt, last_error, wake_at, lease_owner, epoch, takeovers, cancel_requested, created_at, updated_at, published, \
    lease_expires_at, app_version, max_app_version";

const ACTIVE: &str = "('Pending', 'Running', 'Sleeping', 'WaitingSignal')";

pub struct SqliteJournal {
    pool: SqlitePool,
    feed: ChangeFeed,
}

impl SqliteJournal {
    /// Opens (creating if missing) the file a `sqlite://PATH` URL names and migrates it.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteJournal { pool, feed: ChangeFeed::new() })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn deliver(tx: &mut Transaction<'_, Sqlite>, signal: &OutgoingSignal, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO signals (workflow_id, name, payload, sent_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(&signal.target)
            .bind(&signal.name)
            .bind(signal.payload.to_string())
            .bind(now)
            .execute(&mut **tx)
            .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE workflows SET signal_version = signal_version + 1, \
             wake_at = CASE WHEN lease_owner IS NULL AND state = 'WaitingSignal' THEN 0 ELSE wake_at END \
             WHERE id = ?1 AND state IN {ACTIVE}"
        )))
        .bind(&signal.target)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records the input of the workflow's current run, which has just begun.
    async fn record_run(tx: &mut Transaction<'_, Sqlite>, id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (workflow_id, run, input, started_at) SELECT id, run, input, ?2 FROM workflows WHERE id = ?1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn state_of(&self, id: &str) -> Result<State> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM workflows WHERE id = ?1").bind(id).fetch_optional(&self.pool).await?;
        parse_state(&state.ok_or_else(|| Error::NotFound(id.to_string()))?)
    }

    async fn claim_with(conn: &mut sqlx::SqliteConnection, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        let rows: Vec<RawClaim> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE workflows SET previous_owner = lease_owner, takeovers = takeovers + (lease_owner IS NOT NULL), \
                lease_owner = ?1, lease_expires_at = ?6, epoch = epoch + 1, {START_RUN}, \
                max_app_version = CASE WHEN max_app_version_num < ?7 THEN ?8 ELSE max_app_version END, \
                max_app_version_num = MAX(max_app_version_num, ?7) \
             WHERE id IN ( \
                SELECT id FROM ( \
                    SELECT id FROM workflows \
                    WHERE lease_owner IS NULL AND state IN {ACTIVE} AND wake_at <= ?3 \
                      AND (name || '@' || version) IN (SELECT value FROM json_each(?2)) \
                      AND max_app_version_num <= ?7 \
                    ORDER BY wake_at LIMIT ?5) \
                UNION \
                SELECT id FROM ( \
                    SELECT id FROM workflows \
                    WHERE lease_owner IS NOT NULL AND lease_expires_at < ?4 AND state IN {ACTIVE} \
                      AND (name || '@' || version) IN (SELECT value FROM json_each(?2)) \
                      AND max_app_version_num <= ?7 \
                    ORDER BY lease_expires_at LIMIT ?5) \
                LIMIT ?5) \
             RETURNING id, name, version, run, state, input, parent_id, epoch, cancel_requested, \
                previous_owner AS taken_from, created_at, \
                EXISTS (SELECT 1 FROM events e WHERE e.workflow_id = workflows.id AND e.run = workflows.run) AS has_history, \
                {CLAIMED_PLAIN} AS plain, published, app_version, max_app_version"
        )))
        .bind(&req.owner)
        .bind(serde_json::to_string(&type_keys(&req.types))?)
        .bind(req.clock_now)
        .bind(req.wall_now)
        .bind(req.limit)
        .bind(req.lease_until)
        .bind(req.app_version.number())
        .bind(req.app_version.as_str())
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(Claimed::try_from).collect()
    }

    async fn apply(tx: &mut Transaction<'_, Sqlite>, c: &Commit) -> Result<bool> {
        let r = &c.row;
        let updated = sqlx::query(
            "UPDATE workflows SET state = ?1, reason = ?2, step_name = ?3, step_seq = ?4, attempt = ?5, last_error = ?6, \
             wake_at = CASE WHEN ?7 IS NOT NULL AND signal_version <> ?7 THEN 0 ELSE ?8 END, \
             lease_owner = CASE WHEN ?9 THEN NULL ELSE lease_owner END, \
             lease_expires_at = CASE WHEN ?9 THEN NULL ELSE lease_expires_at END, \
             output = ?10, input = COALESCE(?11, input), run = run + (CASE WHEN ?11 IS NULL THEN 0 ELSE 1 END), \
             updated_at = ?12, published = COALESCE(?16, published) \
             WHERE id = ?13 AND epoch = ?14 AND lease_owner = ?15",
        )
        .bind(r.state.as_str())
        .bind(&r.reason)
        .bind(&r.step)
        .bind(r.step_seq)
        .bind(r.attempt)
        .bind(&r.last_error)
        .bind(r.seen_signal_version)
        .bind(r.wake_at)
        .bind(r.release)
        .bind(r.output.as_ref().map(Value::to_string))
        .bind(r.next_run_input.as_ref().map(Value::to_string))
        .bind(c.wall_now)
        .bind(&c.id)
        .bind(c.epoch)
        .bind(&c.owner)
        .bind(r.published.as_ref().map(Value::to_string))
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        if r.next_run_input.is_some() {
            Self::record_run(tx, &c.id, c.wall_now).await?;
        }
        for e in &c.events {
            sqlx::query(
                "INSERT INTO events (workflow_id, run, seq, idx, kind, name, payload, epoch, owner, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .bind(&c.id)
            .bind(e.run)
            .bind(e.seq)
            .bind(e.idx)
            .bind(e.op.as_str())
            .bind(&e.name)
            .bind(serde_json::to_string(&e.record)?)
            .bind(c.epoch)
            .bind(&c.owner)
            .bind(e.at)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(signal) = c.consume_signal {
            sqlx::query("UPDATE signals SET consumed_at = ?1 WHERE id = ?2 AND workflow_id = ?3")
                .bind(c.wall_now)
                .bind(signal)
                .bind(&c.id)
                .execute(&mut **tx)
                .await?;
        }
        for signal in &c.send_signals {
            Self::deliver(tx, signal, c.wall_now).await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl Journal for SqliteJournal {
    async fn create(&self, workflows: &[NewWorkflow], reuse: IdReuse, now: i64) -> Result<Vec<Started>> {
        check_ids(workflows)?;
        let restartable = serde_json::to_string(&reuse.restartable().iter().map(|s| s.as_str()).collect::<Vec<_>>())?;
        let mut tx = self.write().await?;
        let mut outcomes = Vec::with_capacity(workflows.len());
        for w in workflows {
            let inserted = sqlx::query(
                "INSERT INTO workflows (id, name, version, state, input, parent_id, created_at, updated_at, \
                    app_version, max_app_version, max_app_version_num) \
                 VALUES (?1, ?2, ?3, 'Pending', ?4, ?5, ?6, ?6, ?7, ?7, ?8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&w.id)
            .bind(&w.name)
            .bind(w.version)
            .bind(w.input.to_string())
            .bind(&w.parent)
            .bind(now)
            .bind(w.app_version.as_str())
            .bind(w.app_version.number())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                Self::record_run(&mut tx, &w.id, now).await?;
                outcomes.push(Started::Created);
                continue;
            }
            let restarted = sqlx::query(
                "UPDATE workflows SET run = run + 1, state = 'Pending', reason = NULL, input = ?2, output = NULL, \
                 step_name = NULL, step_seq = NULL, attempt = 0, last_error = NULL, wake_at = 0, \
                 cancel_requested = 0, updated_at = ?3, app_version = ?5, \
                 max_app_version = CASE WHEN ?6 > max_app_version_num THEN ?5 ELSE max_app_version END, \
                 max_app_version_num = MAX(max_app_version_num, ?6) \
                 WHERE id = ?1 AND lease_owner IS NULL AND state IN (SELECT value FROM json_each(?4))",
            )
            .bind(&w.id)
            .bind(w.input.to_string())
            .bind(now)
            .bind(&restartable)
            .bind(w.app_version.as_str())
            .bind(w.app_version.number())
            .execute(&mut *tx)
            .await?;
            if restarted.rows_affected() == 1 {
                Self::record_run(&mut tx, &w.id, now).await?;
                outcomes.push(Started::Restarted);
                continue;
            }
            let state: String =
                sqlx::query_scalar("SELECT state FROM workflows WHERE id = ?1").bind(&w.id).fetch_one(&mut *tx).await?;
            outcomes.push(Started::Existing(parse_state(&state)?));
        }
        tx.commit().await?;
        let changed = workflows.iter().zip(&outcomes).filter(|(_, o)| !matches!(o, Started::Existing(_)));
        self.feed.announce(changed.map(|(w, _)| w.id.as_str()));
        Ok(outcomes)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        Self::claim_with(&mut *self.pool.acquire().await?, req).await
    }

    async fn commit_and_claim(&self, batch: &[Commit], claim: &ClaimRequest) -> Result<(Vec<bool>, Vec<Claimed>)> {
        let mut tx = self.write().await?;
        let mut results = Vec::with_capacity(batch.len());
        for c in batch {
            results.push(Self::apply(&mut tx, c).await?);
        }
        let claimed = Self::claim_with(&mut tx, claim).await?;
        tx.commit().await?;
        self.feed.announce_applied(batch, &results);
        Ok((results, claimed))
    }

    async fn histories(&self, runs: &[(String, i64)]) -> Result<Vec<(String, Vec<Event>)>> {
        let keys = serde_json::to_string(&runs.iter().map(|(id, run)| (id, run)).collect::<Vec<_>>())?;
        let rows: Vec<RawEvent> = sqlx::query_as(
            "SELECT e.workflow_id, e.run, e.seq, e.idx, e.kind, e.name, e.payload, e.epoch, e.owner, e.at \
             FROM events e JOIN json_each(?1) AS r \
               ON e.workflow_id = json_extract(r.value, '$[0]') AND e.run = json_extract(r.value, '$[1]') \
             ORDER BY e.workflow_id, e.seq, e.idx",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        group_events(runs, rows)
    }

    async fn commit(&self, batch: &[Commit]) -> Result<Vec<bool>> {
        let mut tx = self.write().await?;
        let mut results = Vec::with_capacity(batch.len());
        for c in batch {
            results.push(Self::apply(&mut tx, c).await?);
        }
        tx.commit().await?;
        self.feed.announce_applied(batch, &results);
        Ok(results)
    }

    async fn renew(&self, owner: &str, until: i64) -> Result<Vec<Renewed>> {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "UPDATE workflows SET lease_expires_at = ?2 WHERE lease_owner = ?1 RETURNING id, cancel_requested",
        )
        .bind(owner)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, cancel_requested)| Renewed { id, cancel_requested }).collect())
    }

    async fn release(&self, owner: &str, id: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE workflows SET lease_owner = NULL, lease_expires_at = NULL, wake_at = 0 \
             WHERE lease_owner = ?1 AND (?2 IS NULL OR id = ?2)",
        )
        .bind(owner)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn find_signal(&self, id: &str, name: &str) -> Result<SignalLookup> {
        let version: i64 = sqlx::query_scalar("SELECT signal_version FROM workflows WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let signal: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, payload FROM signals WHERE workflow_id = ?1 AND name = ?2 AND consumed_at IS NULL \
             ORDER BY id LIMIT 1",
        )
        .bind(id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let signal = signal.map(|(sid, payload)| Ok::<_, Error>((sid, serde_json::from_str(&payload)?))).transpose()?;
        Ok(SignalLookup { signal, version })
    }

    async fn send_signal(&self, id: &str, name: &str, payload: &Value, now: i64) -> Result<()> {
        let state = self.state_of(id).await?;
        if state.is_finished() {
            return Err(Error::WrongState { id: id.into(), state, action: "signal", needed: "active" });
        }
        let mut tx = self.write().await?;
        let signal = OutgoingSignal { target: id.into(), name: name.into(), payload: payload.clone() };
        Self::deliver(&mut tx, &signal, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn wake(&self, id: &str, cancel: bool, now: i64) -> Result<()> {
        let updated = sqlx::query(AssertSqlSafe(format!(
            "UPDATE workflows SET cancel_requested = (cancel_requested OR ?3), signal_version = signal_version + 1, updated_at = ?2, \
             wake_at = CASE WHEN lease_owner IS NULL AND state IN ('Sleeping', 'WaitingSignal') THEN 0 ELSE wake_at END \
             WHERE id = ?1 AND state IN {ACTIVE}"
        )))
        .bind(id)
        .bind(now)
        .bind(cancel)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            let state = self.state_of(id).await?;
            return Err(Error::WrongState {
                id: id.into(),
                state,
                action: if cancel { "cancel" } else { "wake" },
                needed: "active",
            });
        }
        Ok(())
    }

    async fn retry(&self, id: &str, now: i64) -> Result<()> {
        let RetryPlan { state, run, forget_from } = plan_retry(self, id).await?;
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE workflows SET state = 'Pending', reason = NULL, last_error = NULL, output = NULL, attempt = 0, \
             wake_at = 0, updated_at = ?3 WHERE id = ?1 AND state = ?2 AND run = ?4",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(now)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::WrongState { id: id.into(), state, action: "retry", needed: "unchanged meanwhile" });
        }
        if let Some(seq) = forget_from {
            sqlx::query("DELETE FROM events WHERE workflow_id = ?1 AND run = ?2 AND seq >= ?3")
                .bind(id)
                .bind(run)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.feed.announce([id]);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<WorkflowRow>> {
        let row: Option<RawRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {ROW_COLUMNS} FROM workflows WHERE id = ?1")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(WorkflowRow::try_from).transpose()
    }

    async fn list(&self, state: Option<State>, limit: i64) -> Result<Vec<WorkflowRow>> {
        let rows: Vec<RawRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM workflows WHERE (?1 IS NULL OR state = ?1) ORDER BY updated_at DESC, id LIMIT ?2"
        )))
        .bind(state.map(State::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(WorkflowRow::try_from).collect()
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>> {
        let rows: Vec<RawEvent> = sqlx::query_as(
            "SELECT workflow_id, run, seq, idx, kind, name, payload, epoch, owner, at \
             FROM events WHERE workflow_id = ?1 ORDER BY run, seq, idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| r.parse().map(|(_, e)| e)).collect()
    }

    async fn runs(&self, id: &str) -> Result<Vec<RunInput>> {
        let rows: Vec<RawRunInput> =
            sqlx::query_as("SELECT run, input, started_at FROM runs WHERE workflow_id = ?1 ORDER BY run")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(RunInput::try_from).collect()
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.feed.subscribe()
    }
}
