//! PostgreSQL journal: several engines share it; claims use `FOR UPDATE SKIP LOCKED`, every
//! write is fenced by the lease epoch, and a batch of commits is one statement. Writes that make
//! work runnable NOTIFY a wake-up channel; writes that change a checkpoint or published state
//! NOTIFY a change channel with the ids, in the same transaction.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

use super::*;
use crate::clock::wall_ms;
use crate::{Error, Started};

/// A workflow row with its checkpoint. Append-only step commits leave the row's step fields
/// behind; the latest step event of the run after the row's step (only such commits write one)
/// carries them, and its time is the update time.
const ROW_SELECT: &str = "SELECT w.id, w.name, w.version, w.run, w.state, w.reason, w.input::text AS input, \
    w.output::text AS output, w.parent_id, COALESCE(l.name, w.step_name) AS step_name, \
    COALESCE(l.seq, w.step_seq) AS step_seq, COALESCE((l.payload->>'attempts')::int, w.attempt) AS attempt, \
    w.last_error, w.wake_at, w.lease_owner, w.epoch, w.takeovers, w.cancel_requested, w.created_at, \
    GREATEST(w.updated_at, l.at) AS updated_at, w.published::text AS published, w.lease_expires_at, \
    w.app_version, w.max_app_version \
    FROM workflows w LEFT JOIN LATERAL ( \
        SELECT e.seq, e.name, e.payload, e.at FROM events e \
        WHERE w.state = 'Running' AND e.workflow_id = w.id AND e.run = w.run \
          AND e.seq > COALESCE(w.step_seq, -1) AND e.kind = 'step' \
        ORDER BY e.seq DESC, e.idx DESC LIMIT 1) l ON TRUE";

const FINISHED: &str = "'{Completed,Failed,Cancelled,NonDeterministic}'::text[]";

const ACTIVE: &str = "('Pending', 'Running', 'Sleeping', 'WaitingSignal')";

/// The longest NOTIFY payload PostgreSQL accepts, in bytes (less than 8000), less a margin for
/// a server encoding that spells some characters longer than UTF-8.
const PAYLOAD_LIMIT: usize = 7900;

/// How long the listening connection may be silent before a query checks that it still lives
/// (a connection dropped by a NAT or a load balancer shows no error, and hears nothing).
const LISTENER_QUIET: Duration = Duration::from_secs(30);
/// How long that check may take before the connection counts as lost.
const LISTENER_CHECK: Duration = Duration::from_secs(10);
/// After the listening connection was lost, workflows updated since it was last heard from, less
/// this, are announced again: writers stamp updates with their own clocks.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Runs `$query.$fetch(..)` on the journal's commit connection when it is free, else on the pool,
/// and evaluates to the fetched value (`?` applied).
macro_rules! on_commit_conn {
    ($self:ident, $query:expr, $fetch:ident) => {{
        let mut own = $self.take_commit_conn();
        let result = match own.as_mut() {
            Some(conn) => $query.$fetch(&mut *conn).await,
            None => $query.$fetch(&$self.pool).await,
        };
        $self.return_commit_conn(own, &result);
        result?
    }};
}

pub struct PgJournal {
    pool: PgPool,
    /// A connection of the journal's own for commits. sqlx pings a connection each time it goes
    /// back into the pool, which costs a sequential commit a second round trip's worth of work;
    /// this one skips the pool. It is taken out while in use, so a commit dropped half way drops
    /// (closes) it rather than leaving it mid-protocol; commits that find it taken use the pool.
    commit_conn: std::sync::Mutex<Option<PgConnection>>,
    channels: Arc<Channels>,
    /// Names this journal in its change notifications, so that its listener skips its own.
    token: String,
    wakeups: Arc<Notify>,
    feed: ChangeFeed,
    /// Stops the listener when the journal is dropped.
    _listener: DropGuard,
}

/// The journal's notification channels, named after its schema.
struct Channels {
    wakeup: String,
    changes: String,
}

impl Channels {
    fn of(schema: &str) -> Self {
        Channels { wakeup: channel_name("wakeup", schema), changes: channel_name("changes", schema) }
    }
}

/// `cellplane_KIND_SCHEMA`, or with a digest of the schema where that would exceed PostgreSQL's
/// 63-byte names (pg_notify refuses longer channel names).
fn channel_name(kind: &str, schema: &str) -> String {
    use sha2::{Digest, Sha256};
    let name = format!("cellplane_{kind}_{schema}");
    if name.len() <= 63 {
        return name;
    }
    let digest: String = Sha256::digest(schema.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("cellplane_{kind}_{digest}")
}

/// A change notification's payload: the ids a journal changed, and which journal it was.
#[derive(Serialize, Deserialize)]
struct ChangeNote<'a> {
    from: Cow<'a, str>,
    ids: Vec<Cow<'a, str>>,
}

/// The payloads announcing `ids` as changed by the journal `from`, each within NOTIFY's limit.
fn change_payloads(from: &str, ids: &[&str]) -> Result<Vec<String>> {
    let mut payloads = Vec::new();
    let mut note = ChangeNote { from: from.into(), ids: Vec::new() };
    let empty = serde_json::to_string(&note)?.len();
    let mut size = empty;
    for id in ids {
        let len = serde_json::to_string(id)?.len() + 1;
        if !note.ids.is_empty() && size + len > PAYLOAD_LIMIT {
            payloads.push(serde_json::to_string(&note)?);
            note.ids.clear();
            size = empty;
        }
        note.ids.push(Cow::Borrowed(id));
        size += len;
    }
    if !note.ids.is_empty() {
        payloads.push(serde_json::to_string(&note)?);
    }
    Ok(payloads)
}

impl PgJournal {
    /// Connects, creates `schema` if needed and applies the embedded migrations in it.
    pub async fn connect(url: &str, schema: &str) -> Result<Self> {
        validate_schema(schema)?;
        let options = PgConnectOptions::from_str(url)?
            .application_name("cellplane")
            .options([("search_path", schema), ("plan_cache_mode", "force_generic_plan")]);
        // Set up on a connection of its own: an unreachable server fails here at once, with the
        // driver's own reason (refused, unknown host, authentication) rather than a pool timeout.
        let mut conn = PgConnection::connect_with(&options).await?;
        // Serialise first-time set-up between engines starting together.
        sqlx::query("SELECT pg_advisory_lock(4242424201)").execute(&mut conn).await?;
        let setup = async {
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))).execute(&mut conn).await?;
            sqlx::migrate!("./migrations/postgres").run(&mut conn).await?;
            Ok::<_, Error>(())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock(4242424201)").execute(&mut conn).await?;
        setup?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A ping before every checkout costs a round trip per commit; a broken connection
            // shows up as a failed statement instead, which the engine already handles.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let listener = Listener {
            pool: pool.clone(),
            channels: Arc::new(Channels::of(schema)),
            token: uuid::Uuid::new_v4().simple().to_string(),
            wakeups: Arc::new(Notify::new()),
            feed: ChangeFeed::new(),
        };
        let journal = PgJournal {
            pool,
            commit_conn: std::sync::Mutex::new(Some(conn)),
            channels: listener.channels.clone(),
            token: listener.token.clone(),
            wakeups: listener.wakeups.clone(),
            feed: listener.feed.clone(),
            _listener: listener.start(schema).await?,
        };
        Ok(journal)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn take_commit_conn(&self) -> Option<PgConnection> {
        self.commit_conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// Keeps the commit connection unless its statement failed for a reason other than the
    /// server refusing it (then the connection may be broken; commits go through the pool).
    fn return_commit_conn<T>(&self, conn: Option<PgConnection>, result: &std::result::Result<T, sqlx::Error>) {
        if let Some(conn) = conn
            && matches!(result, Ok(_) | Err(sqlx::Error::Database(_)))
        {
            *self.commit_conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(conn);
        }
    }

    /// Wakes claim loops and announces `changed` to other journals when `tx` commits.
    async fn notify(&self, tx: &mut Transaction<'_, Postgres>, changed: &[&str]) -> Result<()> {
        let changes = self.change_payloads(changed)?;
        let mut channels = vec![self.channels.wakeup.as_str()];
        channels.resize(changes.len() + 1, self.channels.changes.as_str());
        let payloads: Vec<&str> = std::iter::once("").chain(changes.iter().map(String::as_str)).collect();
        sqlx::query("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)")
            .bind(&channels)
            .bind(&payloads)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    fn change_payloads(&self, ids: &[&str]) -> Result<Vec<String>> {
        change_payloads(&self.token, ids)
    }

    async fn deliver(&self, tx: &mut Transaction<'_, Postgres>, signals: &[&OutgoingSignal], now: i64) -> Result<()> {
        let targets: Vec<&str> = signals.iter().map(|s| s.target.as_str()).collect();
        let names: Vec<&str> = signals.iter().map(|s| s.name.as_str()).collect();
        let payloads: Vec<String> = signals.iter().map(|s| s.payload.to_string()).collect();
        sqlx::query(
            "INSERT INTO signals (workflow_id, name, payload, sent_at) \
             SELECT t, n, p::jsonb, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS s(t, n, p)",
        )
        .bind(&targets)
        .bind(&names)
        .bind(&payloads)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE workflows SET signal_version = signal_version + 1, \
             wake_at = CASE WHEN lease_owner IS NULL AND state = 'WaitingSignal' THEN 0 ELSE wake_at END \
             WHERE id = ANY($1) AND state IN {ACTIVE}"
        )))
        .bind(&targets)
        .execute(&mut **tx)
        .await?;
        self.notify(tx, &[]).await
    }

    /// The common case at low concurrency, as one statement with plain parameters: array
    /// parameters cost a commit about 0.1 ms more.
    async fn commit_one(&self, c: &Commit) -> Result<bool> {
        if let Some(event) = c.appended_step() {
            let payload = serde_json::to_string(&event.record)?;
            let query = sqlx::query_scalar(APPEND_SQL)
                .bind(&c.id)
                .bind(c.epoch)
                .bind(&c.owner)
                .bind(event.run)
                .bind(event.seq)
                .bind(event.idx)
                .bind(event.op.as_str())
                .bind(event.name.as_str())
                .bind(&payload)
                .bind(event.at);
            let appended: Option<String> = on_commit_conn!(self, query, fetch_optional);
            return Ok(appended.is_some());
        }
        let query = self.bind_commit_one(sqlx::query_as(COMMIT_ONE_SQL), c)?;
        let applied: Option<(String,)> = on_commit_conn!(self, query, fetch_optional);
        Ok(applied.is_some())
    }

    /// Binds one commit's parameters ($1 to $25): its row, its event, and its notification.
    fn bind_commit_one<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
        c: &'q Commit,
    ) -> Result<sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>> {
        let r = &c.row;
        let event = c.events.first();
        let payload = self.change_payloads(&[&c.id])?.into_iter().next();
        Ok(query
            .bind(&c.id)
            .bind(c.epoch)
            .bind(&c.owner)
            .bind(r.state.as_str())
            .bind(&r.reason)
            .bind(&r.step)
            .bind(r.step_seq)
            .bind(r.attempt)
            .bind(&r.last_error)
            .bind(r.wake_at)
            .bind(r.release)
            .bind(r.seen_signal_version)
            .bind(r.output.as_ref().map(Value::to_string))
            .bind(r.next_run_input.as_ref().map(Value::to_string))
            .bind(c.wall_now)
            .bind(event.map(|e| e.run))
            .bind(event.map(|e| e.seq))
            .bind(event.map(|e| e.idx))
            .bind(event.map(|e| e.op.as_str()))
            .bind(event.map(|e| e.name.as_str()))
            .bind(event.map(|e| serde_json::to_string(&e.record)).transpose()?)
            .bind(event.map(|e| e.at))
            .bind(r.published.as_ref().map(Value::to_string))
            .bind(self.channels.changes.as_str())
            .bind(payload))
    }

    /// Applies a batch, announcing nothing yet.
    async fn apply(&self, batch: &[Commit]) -> Result<Vec<bool>> {
        if let [single] = batch
            && is_simple(single)
        {
            return Ok(vec![self.commit_one(single).await?]);
        }
        let mut rows = CommitColumns::default();
        for c in batch {
            rows.push(c)?;
        }
        let announced: Vec<&str> =
            batch.iter().filter(|c| c.appended_step().is_none()).map(|c| c.id.as_str()).collect();
        let payloads = self.change_payloads(&announced)?;
        let with_signals = batch.iter().any(|c| !c.send_signals.is_empty());
        let mut tx = if with_signals { Some(self.pool.begin().await?) } else { None };
        let query = sqlx::query_as::<_, (String, String, i64)>(COMMIT_SQL)
            .bind(&rows.id)
            .bind(&rows.owner)
            .bind(&rows.epoch)
            .bind(&rows.state)
            .bind(&rows.reason)
            .bind(&rows.step)
            .bind(&rows.step_seq)
            .bind(&rows.attempt)
            .bind(&rows.last_error)
            .bind(&rows.wake_at)
            .bind(&rows.release)
            .bind(&rows.seen_signal_version)
            .bind(&rows.output)
            .bind(&rows.next_input)
            .bind(&rows.now)
            .bind(&rows.e_id)
            .bind(&rows.e_run)
            .bind(&rows.e_seq)
            .bind(&rows.e_idx)
            .bind(&rows.e_kind)
            .bind(&rows.e_name)
            .bind(&rows.e_payload)
            .bind(&rows.e_epoch)
            .bind(&rows.e_owner)
            .bind(&rows.e_at)
            .bind(&rows.s_id)
            .bind(&rows.s_signal)
            .bind(&rows.s_now)
            .bind(&rows.s_owner)
            .bind(&rows.s_epoch)
            .bind(&rows.published)
            .bind(&payloads)
            .bind(self.channels.changes.as_str());
        let accepted: std::collections::HashSet<(String, String, i64)> = match tx.as_mut() {
            Some(tx) => query.fetch_all(&mut **tx).await?,
            None => on_commit_conn!(self, query, fetch_all),
        }
        .into_iter()
        .collect();
        let results: Vec<bool> =
            batch.iter().map(|c| accepted.contains(&(c.id.clone(), c.owner.clone(), c.epoch))).collect();
        if let Some(mut tx) = tx {
            let signals: Vec<&OutgoingSignal> =
                batch.iter().zip(&results).filter(|(_, ok)| **ok).flat_map(|(c, _)| &c.send_signals).collect();
            if !signals.is_empty() {
                let now = batch.iter().map(|c| c.wall_now).max().unwrap_or_default();
                self.deliver(&mut tx, &signals, now).await?;
            }
            tx.commit().await?;
        }
        Ok(results)
    }

    async fn state_of(&self, id: &str) -> Result<State> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM workflows WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        parse_state(&state.ok_or_else(|| Error::NotFound(id.to_string()))?)
    }
}

#[async_trait]
impl Journal for PgJournal {
    async fn create(&self, workflows: &[NewWorkflow], reuse: IdReuse, now: i64) -> Result<Vec<Started>> {
        check_ids(workflows)?;
        let ids: Vec<&str> = workflows.iter().map(|w| w.id.as_str()).collect();
        let names: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
        let versions: Vec<i32> = workflows.iter().map(|w| w.version).collect();
        let inputs: Vec<String> = workflows.iter().map(|w| w.input.to_string()).collect();
        let parents: Vec<Option<&str>> = workflows.iter().map(|w| w.parent.as_deref()).collect();
        let app_versions: Vec<&str> = workflows.iter().map(|w| w.app_version.as_str()).collect();
        let app_numbers: Vec<i64> = workflows.iter().map(|w| w.app_version.number()).collect();
        let mut tx = self.pool.begin().await?;
        let created: Vec<String> = sqlx::query_scalar(
            "WITH c AS ( \
                INSERT INTO workflows (id, name, version, state, input, parent_id, created_at, updated_at, \
                    app_version, max_app_version, max_app_version_num) \
                SELECT i, n, v, 'Pending', p::jsonb, par, $6, $6, av, av, avn \
                FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $7::text[], $8::bigint[]) \
                    AS t(i, n, v, p, par, av, avn) \
                ON CONFLICT (id) DO NOTHING RETURNING id, run, input \
             ), r AS (INSERT INTO runs (workflow_id, run, input, started_at) SELECT id, run, input, $6 FROM c) \
             SELECT id FROM c",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&versions)
        .bind(&inputs)
        .bind(&parents)
        .bind(now)
        .bind(&app_versions)
        .bind(&app_numbers)
        .fetch_all(&mut *tx)
        .await?;
        let restartable: Vec<&str> = reuse.restartable().iter().map(|s| s.as_str()).collect();
        let restarted: Vec<String> = if restartable.is_empty() || created.len() == workflows.len() {
            Vec::new()
        } else {
            sqlx::query_scalar(
                "WITH u AS ( \
                    UPDATE workflows w SET run = w.run + 1, state = 'Pending', reason = NULL, input = t.p::jsonb, \
                    output = NULL, step_name = NULL, step_seq = NULL, attempt = 0, last_error = NULL, wake_at = 0, \
                    cancel_requested = FALSE, updated_at = $4, app_version = t.av, \
                    max_app_version = CASE WHEN t.avn > w.max_app_version_num THEN t.av ELSE w.max_app_version END, \
                    max_app_version_num = GREATEST(w.max_app_version_num, t.avn) \
                    FROM unnest($1::text[], $2::text[], $6::text[], $7::bigint[]) AS t(i, p, av, avn) \
                    WHERE w.id = t.i AND w.state = ANY($3) AND w.lease_owner IS NULL AND t.i <> ALL($5) \
                    RETURNING w.id, w.run, w.input \
                 ), r AS (INSERT INTO runs (workflow_id, run, input, started_at) SELECT id, run, input, $4 FROM u) \
                 SELECT id FROM u",
            )
            .bind(&ids)
            .bind(&inputs)
            .bind(&restartable)
            .bind(now)
            .bind(&created)
            .bind(&app_versions)
            .bind(&app_numbers)
            .fetch_all(&mut *tx)
            .await?
        };
        let existing: Vec<(String, String)> =
            sqlx::query_as("SELECT id, state FROM workflows WHERE id = ANY($1)").bind(&ids).fetch_all(&mut *tx).await?;
        let changed: Vec<&str> = created.iter().chain(&restarted).map(String::as_str).collect();
        self.notify(&mut tx, &changed).await?;
        tx.commit().await?;
        self.feed.announce(changed.iter().copied());
        let existing: std::collections::HashMap<String, String> = existing.into_iter().collect();
        ids.iter()
            .map(|id| {
                if created.iter().any(|c| c == id) {
                    Ok(Started::Created)
                } else if restarted.iter().any(|r| r == id) {
                    Ok(Started::Restarted)
                } else {
                    let state = existing.get(*id).ok_or_else(|| Error::NotFound(id.to_string()))?;
                    Ok(Started::Existing(parse_state(state)?))
                }
            })
            .collect()
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<Claimed>> {
        let rows: Vec<RawClaim> = sqlx::query_as(AssertSqlSafe(CLAIM_SQL.as_str()))
            .bind(&req.owner)
            .bind(type_keys(&req.types))
            .bind(req.clock_now)
            .bind(req.wall_now)
            .bind(req.limit)
            .bind(req.lease_until)
            .bind(req.app_version.number())
            .bind(req.app_version.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Claimed::try_from).collect()
    }

    async fn commit_and_claim(&self, batch: &[Commit], claim: &ClaimRequest) -> Result<(Vec<bool>, Vec<Claimed>)> {
        let single = match batch {
            [single] if is_simple(single) => single,
            _ => {
                let applied = self.commit(batch).await?;
                return Ok((applied, self.claim(claim).await.unwrap_or_default()));
            }
        };
        let query = self
            .bind_commit_one(sqlx::query_as(AssertSqlSafe(COMMIT_ONE_CLAIM_SQL.as_str())), single)?
            .bind(&claim.owner)
            .bind(type_keys(&claim.types))
            .bind(claim.clock_now)
            .bind(claim.wall_now)
            .bind(claim.limit)
            .bind(claim.lease_until)
            .bind(claim.app_version.number())
            .bind(claim.app_version.as_str());
        let rows: Vec<CommitClaimRow> = on_commit_conn!(self, query, fetch_all);
        let applied = vec![rows.first().is_some_and(|r| r.applied)];
        self.feed.announce_applied(batch, &applied);
        let claimed = rows.into_iter().filter_map(CommitClaimRow::claimed).collect::<Result<Vec<_>>>()?;
        Ok((applied, claimed))
    }

    async fn histories(&self, runs: &[(String, i64)]) -> Result<Vec<(String, Vec<Event>)>> {
        let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
        let run_numbers: Vec<i64> = runs.iter().map(|(_, run)| *run).collect();
        let rows: Vec<RawEvent> = sqlx::query_as(
            "SELECT e.workflow_id, e.run, e.seq, e.idx, e.kind, e.name, e.payload::text AS payload, e.epoch, e.owner, e.at \
             FROM events e JOIN unnest($1::text[], $2::bigint[]) AS r(i, n) ON e.workflow_id = r.i AND e.run = r.n \
             ORDER BY e.workflow_id, e.seq, e.idx",
        )
        .bind(&ids)
        .bind(&run_numbers)
        .fetch_all(&self.pool)
        .await?;
        group_events(runs, rows)
    }

    async fn commit(&self, batch: &[Commit]) -> Result<Vec<bool>> {
        let applied = self.apply(batch).await?;
        self.feed.announce_applied(batch, &applied);
        Ok(applied)
    }

    async fn renew(&self, owner: &str, until: i64) -> Result<Vec<Renewed>> {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "UPDATE workflows SET lease_expires_at = $2 WHERE lease_owner = $1 RETURNING id, cancel_requested",
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
             WHERE lease_owner = $1 AND ($2::text IS NULL OR id = $2)",
        )
        .bind(owner)
        .bind(id)
        .execute(&self.pool)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')").bind(&self.channels.wakeup).execute(&self.pool).await?;
        Ok(())
    }

    async fn find_signal(&self, id: &str, name: &str) -> Result<SignalLookup> {
        // Read the version first: a signal arriving after it bumps the version, so the wait that
        // follows cannot miss it.
        let version: i64 = sqlx::query_scalar("SELECT signal_version FROM workflows WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let signal: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, payload::text FROM signals WHERE workflow_id = $1 AND name = $2 AND consumed_at IS NULL \
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
        let mut tx = self.pool.begin().await?;
        let signal = OutgoingSignal { target: id.into(), name: name.into(), payload: payload.clone() };
        self.deliver(&mut tx, &[&signal], now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn wake(&self, id: &str, cancel: bool, now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(AssertSqlSafe(format!(
            "UPDATE workflows SET cancel_requested = (cancel_requested OR $3), signal_version = signal_version + 1, updated_at = $2, \
             wake_at = CASE WHEN lease_owner IS NULL AND state IN ('Sleeping', 'WaitingSignal') THEN 0 ELSE wake_at END \
             WHERE id = $1 AND state IN {ACTIVE}"
        )))
        .bind(id)
        .bind(now)
        .bind(cancel)
        .execute(&mut *tx)
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
        self.notify(&mut tx, &[]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retry(&self, id: &str, now: i64) -> Result<()> {
        let RetryPlan { state, run, forget_from } = plan_retry(self, id).await?;
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE workflows SET state = 'Pending', reason = NULL, last_error = NULL, output = NULL, attempt = 0, \
             wake_at = 0, updated_at = $3 WHERE id = $1 AND state = $2 AND run = $4",
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
            sqlx::query("DELETE FROM events WHERE workflow_id = $1 AND run = $2 AND seq >= $3")
                .bind(id)
                .bind(run)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        self.notify(&mut tx, &[id]).await?;
        tx.commit().await?;
        self.feed.announce([id]);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<WorkflowRow>> {
        let row: Option<RawRow> = sqlx::query_as(AssertSqlSafe(format!("{ROW_SELECT} WHERE w.id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(WorkflowRow::try_from).transpose()
    }

    async fn list(&self, state: Option<State>, limit: i64) -> Result<Vec<WorkflowRow>> {
        let rows: Vec<RawRow> = sqlx::query_as(AssertSqlSafe(format!(
            "{ROW_SELECT} WHERE ($1::text IS NULL OR w.state = $1) ORDER BY updated_at DESC, w.id LIMIT $2"
        )))
        .bind(state.map(State::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(WorkflowRow::try_from).collect()
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>> {
        let rows: Vec<RawEvent> = sqlx::query_as(
            "SELECT workflow_id, run, seq, idx, kind, name, payload::text AS payload, epoch, owner, at \
             FROM events WHERE workflow_id = $1 ORDER BY run, seq, idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| r.parse().map(|(_, e)| e)).collect()
    }

    async fn runs(&self, id: &str) -> Result<Vec<RunInput>> {
        let rows: Vec<RawRunInput> = sqlx::query_as(
            "SELECT run, input::text AS input, started_at FROM runs WHERE workflow_id = $1 ORDER BY run",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RunInput::try_from).collect()
    }

    async fn wait_for_wakeup(&self) {
        self.wakeups.notified().await
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.feed.subscribe()
    }
}

/// The journal's LISTEN connection: it wakes the claim loop on the wake-up channel, and announces
/// on the change feed the ids that other journals on the schema notify on the change channel.
struct Listener {
    pool: PgPool,
    channels: Arc<Channels>,
    token: String,
    wakeups: Arc<Notify>,
    feed: ChangeFeed,
}

impl Listener {
    /// Listens before returning, so that no change committed afterwards is missed, then forwards
    /// notifications from a task of its own until the guard is dropped.
    async fn start(self, schema: &str) -> Result<DropGuard> {
        let since = wall_ms();
        let session = self.listen().await?;
        let stop = CancellationToken::new();
        let span = tracing::info_span!("journal_listener", schema);
        let task = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = self.run(session, since) => {}
                }
            }
        };
        tokio::spawn(task.instrument(span));
        Ok(stop.drop_guard())
    }

    async fn listen(&self) -> Result<PgListener> {
        let mut session = PgListener::connect_with(&self.pool).await?;
        session.listen_all([self.channels.wakeup.as_str(), self.channels.changes.as_str()]).await?;
        Ok(session)
    }

    /// Forwards notifications; after losing the connection, listens again and announces what
    /// changed meanwhile.
    async fn run(&self, mut session: PgListener, mut since: i64) {
        loop {
            let heard_at = self.forward(&mut session, since).await;
            tracing::warn!("the journal's listening connection was lost; listening again");
            (session, since) = self.listen_again().await;
            self.recover(heard_at).await;
        }
    }

    /// Forwards notifications while the connection lives; returns when it was last heard from.
    async fn forward(&self, session: &mut PgListener, mut heard_at: i64) -> i64 {
        loop {
            match tokio::time::timeout(LISTENER_QUIET, session.try_recv()).await {
                Ok(Ok(Some(notification))) => {
                    heard_at = wall_ms();
                    self.dispatch(&notification);
                }
                // A lost connection, which sqlx may have replaced already: run starts afresh.
                Ok(Ok(None)) => return heard_at,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "listening failed");
                    return heard_at;
                }
                Err(_quiet) => {
                    let checked_at = wall_ms();
                    let check = sqlx::query("SELECT 1").execute(&mut *session);
                    match tokio::time::timeout(LISTENER_CHECK, check).await {
                        Ok(Ok(_)) => heard_at = checked_at,
                        _ => return heard_at,
                    }
                }
            }
        }
    }

    fn dispatch(&self, notification: &PgNotification) {
        if notification.channel() == self.channels.wakeup {
            return self.wakeups.notify_one();
        }
        match serde_json::from_str::<ChangeNote>(notification.payload()) {
            Ok(note) if note.from != self.token => self.feed.announce(note.ids.iter().map(|id| id.as_ref())),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "ignoring a change notification that no journal sent"),
        }
    }

    /// A new listening connection, and when it started listening at the latest.
    async fn listen_again(&self) -> (PgListener, i64) {
        loop {
            let since = wall_ms();
            match self.listen().await {
                Ok(session) => return (session, since),
                Err(e) => tracing::warn!(error = %e, "cannot listen for wake-ups and changes; retrying in a second"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Announces the workflows updated since `heard_at` (less the clock skew allowed), whose
    /// notifications may have been lost with the connection, and wakes the claim loop.
    async fn recover(&self, heard_at: i64) {
        self.wakeups.notify_one();
        let since = heard_at - CLOCK_SKEW.as_millis() as i64;
        loop {
            let query = sqlx::query_scalar::<_, String>("SELECT id FROM workflows WHERE updated_at >= $1").bind(since);
            match query.fetch_all(&self.pool).await {
                Ok(ids) => return self.feed.announce(ids.iter().map(String::as_str)),
                Err(e) => tracing::warn!(error = %e, "cannot read the workflows changed while not listening; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A commit that fits the single-commit statements: at most one event, no signals, no new run.
fn is_simple(c: &Commit) -> bool {
    c.events.len() <= 1 && c.consume_signal.is_none() && c.send_signals.is_empty() && c.row.next_run_input.is_none()
}

/// A row of the commit-and-claim statement: whether the commit applied, and one claimed
/// workflow if any.
#[derive(sqlx::FromRow)]
struct CommitClaimRow {
    applied: bool,
    id: Option<String>,
    name: Option<String>,
    version: Option<i32>,
    run: Option<i64>,
    state: Option<String>,
    input: Option<String>,
    parent_id: Option<String>,
    epoch: Option<i64>,
    cancel_requested: Option<bool>,
    taken_from: Option<String>,
    created_at: Option<i64>,
    has_history: Option<bool>,
    plain: Option<bool>,
    published: Option<String>,
    app_version: Option<String>,
    max_app_version: Option<String>,
}

impl CommitClaimRow {
    fn claimed(self) -> Option<Result<Claimed>> {
        let raw = RawClaim {
            id: self.id?,
            name: self.name?,
            version: self.version?,
            run: self.run?,
            state: self.state?,
            input: self.input?,
            parent_id: self.parent_id,
            epoch: self.epoch?,
            cancel_requested: self.cancel_requested?,
            taken_from: self.taken_from,
            created_at: self.created_at?,
            has_history: self.has_history?,
            plain: self.plain?,
            published: self.published,
            app_version: self.app_version,
            max_app_version: self.max_app_version,
        };
        Some(Claimed::try_from(raw))
    }
}

/// The commit batch as column arrays for `unnest`.
#[derive(Default)]
struct CommitColumns {
    id: Vec<String>,
    owner: Vec<String>,
    epoch: Vec<i64>,
    state: Vec<&'static str>,
    reason: Vec<Option<String>>,
    step: Vec<Option<String>>,
    step_seq: Vec<Option<i64>>,
    attempt: Vec<i32>,
    last_error: Vec<Option<String>>,
    wake_at: Vec<i64>,
    release: Vec<bool>,
    seen_signal_version: Vec<Option<i64>>,
    output: Vec<Option<String>>,
    next_input: Vec<Option<String>>,
    now: Vec<i64>,
    e_id: Vec<String>,
    e_run: Vec<i64>,
    e_seq: Vec<i64>,
    e_idx: Vec<i32>,
    e_kind: Vec<&'static str>,
    e_name: Vec<String>,
    e_payload: Vec<String>,
    e_epoch: Vec<i64>,
    e_owner: Vec<Option<String>>,
    e_at: Vec<i64>,
    s_id: Vec<String>,
    s_signal: Vec<i64>,
    s_now: Vec<i64>,
    s_owner: Vec<String>,
    s_epoch: Vec<i64>,
    published: Vec<Option<String>>,
}

impl CommitColumns {
    fn push(&mut self, c: &Commit) -> Result<()> {
        let r = &c.row;
        self.id.push(c.id.clone());
        self.owner.push(c.owner.clone());
        self.epoch.push(c.epoch);
        self.state.push(r.state.as_str());
        self.reason.push(r.reason.clone());
        self.step.push(r.step.clone());
        self.step_seq.push(r.step_seq);
        self.attempt.push(r.attempt);
        self.last_error.push(r.last_error.clone());
        self.wake_at.push(r.wake_at);
        self.release.push(r.release);
        self.seen_signal_version.push(r.seen_signal_version);
        self.output.push(r.output.as_ref().map(Value::to_string));
        self.next_input.push(r.next_run_input.as_ref().map(Value::to_string));
        self.now.push(c.wall_now);
        self.published.push(r.published.as_ref().map(Value::to_string));
        for e in &c.events {
            self.e_id.push(c.id.clone());
            self.e_run.push(e.run);
            self.e_seq.push(e.seq);
            self.e_idx.push(e.idx);
            self.e_kind.push(e.op.as_str());
            self.e_name.push(e.name.clone());
            self.e_payload.push(serde_json::to_string(&e.record)?);
            self.e_epoch.push(c.epoch);
            self.e_owner.push(Some(c.owner.clone()));
            self.e_at.push(e.at);
        }
        if let Some(signal) = c.consume_signal {
            self.s_id.push(c.id.clone());
            self.s_signal.push(signal);
            self.s_now.push(c.wall_now);
            self.s_owner.push(c.owner.clone());
            self.s_epoch.push(c.epoch);
        }
        Ok(())
    }
}

macro_rules! commit_one_ctes {
    () => {
        "WITH w AS ( \
    UPDATE workflows w SET state = $4, reason = $5, step_name = $6, step_seq = $7, attempt = $8, last_error = $9, \
        wake_at = CASE WHEN $12::bigint IS NOT NULL AND w.signal_version <> $12 THEN 0 ELSE $10 END, \
        lease_owner = CASE WHEN $11 THEN NULL ELSE w.lease_owner END, \
        lease_expires_at = CASE WHEN $11 THEN NULL ELSE w.lease_expires_at END, \
        output = $13::jsonb, input = COALESCE($14::jsonb, w.input), \
        run = w.run + CASE WHEN $14::text IS NULL THEN 0 ELSE 1 END, updated_at = $15, \
        published = COALESCE($23::jsonb, w.published) \
    WHERE w.id = $1 AND w.epoch = $2 AND w.lease_owner = $3 \
    RETURNING w.id \
), e AS ( \
    INSERT INTO events (workflow_id, run, seq, idx, kind, name, payload, epoch, owner, at) \
    SELECT $1, $16, $17, $18, $19, $20, $21::jsonb, $2, $3, $22 FROM w WHERE $16::bigint IS NOT NULL \
), n AS (SELECT w.id, pg_notify($24, $25) FROM w)"
    };
}

/// One commit; `n` holds its id if applied (and then notified).
const COMMIT_ONE_SQL: &str = concat!(commit_one_ctes!(), " SELECT id FROM n");

/// A completed step appended without rewriting the workflow row. The fence is a share lock on
/// the row, taken only if owner and epoch match: a takeover's UPDATE of the epoch conflicts with
/// it, so either the takeover waits for this commit (and then reads the event), or this statement
/// waits for the takeover and, under READ COMMITTED, re-checks the fence on the row the takeover
/// committed, and appends nothing. A key-share lock would not conflict with an UPDATE that
/// leaves the key alone, and could let the append commit after the takeover.
const APPEND_SQL: &str = "INSERT INTO events (workflow_id, run, seq, idx, kind, name, payload, epoch, owner, at) \
    SELECT $1, $4, $5, $6, $7, $8, $9::jsonb, $2, $3, $10 \
    WHERE EXISTS (SELECT 1 FROM workflows WHERE id = $1 AND epoch = $2 AND lease_owner = $3 FOR SHARE) \
    RETURNING workflow_id";

/// The claim as CTEs ending in `claimed`, with its parameters numbered from `p`: owner, types,
/// workflow clock, wall clock, limit, lease end, the claimer's application version as a number
/// and as text. `exclude` filters out ids (SQL).
fn claim_ctes(p: usize, exclude: &str) -> String {
    let [owner, types, clock, wall, limit, until, app, app_text] = std::array::from_fn(|i| format!("${}", p + i));
    // Two index scans rather than one OR: workflows that wait (timers, signals) must not cost a
    // claim anything, however many there are. Expired leases are filtered on the finished states
    // (`<> ALL`, which no index serves): with `IN` active states, generic plans on young tables
    // scanned every active workflow through the state index instead of the lease index.
    format!(
        "ready AS ( \
            SELECT id FROM workflows \
            WHERE lease_owner IS NULL AND state IN {ACTIVE} AND wake_at <= {clock} \
              AND (name || '@' || version) = ANY({types}) AND max_app_version_num <= {app}::bigint {exclude} \
            ORDER BY wake_at LIMIT {limit} FOR UPDATE SKIP LOCKED), \
         expired AS ( \
            SELECT id FROM workflows \
            WHERE lease_owner IS NOT NULL AND lease_expires_at < {wall} AND state <> ALL ({FINISHED}) \
              AND (name || '@' || version) = ANY({types}) AND max_app_version_num <= {app}::bigint {exclude} \
            ORDER BY lease_expires_at LIMIT {limit} FOR UPDATE SKIP LOCKED), \
         c AS (SELECT id FROM ready UNION SELECT id FROM expired LIMIT {limit}), \
         claimed AS ( \
            UPDATE workflows k SET previous_owner = k.lease_owner, \
                takeovers = k.takeovers + (k.lease_owner IS NOT NULL)::int, \
                lease_owner = {owner}, lease_expires_at = {until}, epoch = k.epoch + 1, {START_RUN}, \
                max_app_version = CASE WHEN k.max_app_version_num < {app}::bigint THEN {app_text}::text \
                    ELSE k.max_app_version END, \
                max_app_version_num = GREATEST(k.max_app_version_num, {app}::bigint) \
            FROM c WHERE k.id = c.id \
            RETURNING k.id, k.name, k.version, k.run, k.state, k.input::text AS input, k.parent_id, k.epoch, \
                k.cancel_requested, k.previous_owner AS taken_from, k.created_at, \
                EXISTS (SELECT 1 FROM events e WHERE e.workflow_id = k.id AND e.run = k.run) AS has_history, \
                {CLAIMED_PLAIN} AS plain, k.published::text AS published, k.app_version, k.max_app_version)"
    )
}

static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| format!("WITH {} SELECT * FROM claimed", claim_ctes(1, "")));

/// A single commit and a claim in one statement; the claim never takes the committing workflow.
static COMMIT_ONE_CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}, {} SELECT EXISTS (SELECT 1 FROM n) AS applied, claimed.* FROM (VALUES (1)) AS one (x) \
         LEFT JOIN claimed ON TRUE",
        commit_one_ctes!(),
        claim_ctes(26, "AND id <> $1")
    )
});

/// One statement for a whole batch: update each workflow whose fence holds, then append the
/// events, consume the signals and record the new runs' inputs of exactly those workflows, and
/// send the change notifications ($32) if any applied.
const COMMIT_SQL: &str = "WITH r AS ( \
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], \
        $8::int[], $9::text[], $10::bigint[], $11::bool[], $12::bigint[], $13::text[], $14::text[], $15::bigint[], \
        $31::text[]) \
    AS r(id, owner, epoch, state, reason, step_name, step_seq, attempt, last_error, wake_at, release, seen_sv, \
        output, next_input, now, published) \
), w AS ( \
    UPDATE workflows w SET state = r.state, reason = r.reason, step_name = r.step_name, step_seq = r.step_seq, \
        attempt = r.attempt, last_error = r.last_error, \
        wake_at = CASE WHEN r.seen_sv IS NOT NULL AND w.signal_version <> r.seen_sv THEN 0 ELSE r.wake_at END, \
        lease_owner = CASE WHEN r.release THEN NULL ELSE w.lease_owner END, \
        lease_expires_at = CASE WHEN r.release THEN NULL ELSE w.lease_expires_at END, \
        output = r.output::jsonb, input = COALESCE(r.next_input::jsonb, w.input), \
        run = w.run + CASE WHEN r.next_input IS NULL THEN 0 ELSE 1 END, updated_at = r.now, \
        published = COALESCE(r.published::jsonb, w.published) \
    FROM r WHERE w.id = r.id AND w.epoch = r.epoch AND w.lease_owner = r.owner \
    RETURNING w.id, r.owner, r.epoch, w.run, r.next_input, r.now \
), nr AS ( \
    INSERT INTO runs (workflow_id, run, input, started_at) \
    SELECT id, run, next_input::jsonb, now FROM w WHERE next_input IS NOT NULL \
), e AS ( \
    INSERT INTO events (workflow_id, run, seq, idx, kind, name, payload, epoch, owner, at) \
    SELECT e.i, e.run, e.seq, e.idx, e.kind, e.name, e.payload::jsonb, e.epoch, e.owner, e.at \
    FROM unnest($16::text[], $17::bigint[], $18::bigint[], $19::int[], $20::text[], $21::text[], $22::text[], \
        $23::bigint[], $24::text[], $25::bigint[]) AS e(i, run, seq, idx, kind, name, payload, epoch, owner, at) \
    WHERE (e.i, e.owner, e.epoch) IN (SELECT id, owner, epoch FROM w) \
), s AS ( \
    UPDATE signals s SET consumed_at = c.now \
    FROM unnest($26::text[], $27::bigint[], $28::bigint[], $29::text[], $30::bigint[]) \
        AS c(i, signal_id, now, owner, epoch) \
    WHERE s.id = c.signal_id AND (c.i, c.owner, c.epoch) IN (SELECT id, owner, epoch FROM w) \
), n AS ( \
    SELECT pg_notify($33, p) FROM unnest($32::text[]) AS p WHERE EXISTS (SELECT 1 FROM w) \
) \
SELECT id, owner, epoch FROM w CROSS JOIN (SELECT count(*) FROM n) AS notified";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_payloads_split_under_the_notify_limit_and_carry_every_id_once() {
        let ids: Vec<String> = (0..400).map(|i| format!("cell-\"{i}\"-{}", "x".repeat(i % 90))).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let payloads = change_payloads("journal-a", &ids).unwrap();
        assert!(payloads.len() > 1, "{} bytes of ids fit one payload?", ids.concat().len());
        let mut seen = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < 8000, "a payload of {} bytes", payload.len());
            let note: ChangeNote = serde_json::from_str(payload).unwrap();
            assert_eq!(note.from, "journal-a");
            seen.extend(note.ids.into_iter().map(Cow::into_owned));
        }
        assert_eq!(seen, ids);
        assert!(change_payloads("journal-a", &[]).unwrap().is_empty());
    }

    #[test]
    fn channel_names_fit_postgres_names_and_stay_apart() {
        assert_eq!(channel_name("changes", "cellplane"), "cellplane_changes_cellplane");
        let long_a = channel_name("changes", &"a".repeat(63));
        let long_b = channel_name("changes", &format!("{}b", "a".repeat(62)));
        assert!(long_a.len() <= 63 && long_b.len() <= 63);
        assert_ne!(long_a, long_b);
    }
}
