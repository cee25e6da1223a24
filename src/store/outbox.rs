//! The outbox: VoiceKit events waiting to be delivered, and the record of every attempt.

use sqlx::FromRow;

use super::{
    Backend, Store, StoreError, now_ms,
    postgres::claims::{self, Claim},
    sql::{Dialect, in_values, rows_key_filter, rows_of},
    sqlite::args,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryStatus {
    Pending,
    Delivered,
    /// The retry schedule is exhausted: kept as a dead letter, never dropped.
    Failed,
}

impl DeliveryStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub webhook_id: String,
    pub call_id: i64,
    pub event_type: String,
    pub workflow_id: i64,
    pub payload: String,
    pub recording: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

impl OutboxRow {
    /// A row selected with [`ROW`]'s columns, on SQLite.
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
        Ok(OutboxRow {
            id: r.get("id")?,
            webhook_id: r.get("webhook_id")?,
            call_id: r.get("call_id")?,
            event_type: r.get("event_type")?,
            workflow_id: r.get("workflow_id")?,
            payload: r.get("payload")?,
            recording: r.get("recording")?,
            attempts: r.get("attempts")?,
            next_attempt_at: r.get("next_attempt_at")?,
        })
    }
}

/// One try at delivering an outbox row.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub outbox_id: i64,
    pub attempted_at: i64,
    pub endpoint: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

/// The due rows of one workflow, for [`Store::due_for_workflow`] and
/// [`Store::claim_due`]: $1 the workflow, $2 now, $3 hooks only, $4 [`HOOK_EVENT`], $5 the
/// limit, $6 this instance, $7 the sync horizon.
pub(super) const DUE: &str = "FROM outbox o
     WHERE o.workflow_id = $1 AND o.status = 'pending' AND o.next_attempt_at <= $2
       AND o.id < $7
       AND (o.claimed_until IS NULL OR o.claimed_until <= $2 OR o.claimed_by = $6)
       AND ($3 = 0 OR o.event_type = $4)
       AND NOT EXISTS (SELECT 1 FROM outbox e
                       WHERE e.call_id = o.call_id AND e.seq < o.seq AND e.seq > 0
                         AND e.status NOT IN ('delivered', 'failed'))
     ORDER BY o.next_attempt_at, o.id LIMIT $5";

pub(super) const ROW: &str =
    "id, webhook_id, call_id, event_type, workflow_id, payload, recording, attempts,
                   next_attempt_at";

/// Event type of the synchronous `call_started_hook` request, queued beside the events.
pub(crate) const HOOK_EVENT: &str = "call_started_hook";

/// A published body replaces the stored one; the recording is then no longer needed.
/// (SQLite numbers `$1` and `$2` in order of appearance, so rusqlite binds them too.)
/// Both backends' writers run it.
pub(crate) const SET_PAYLOAD: &str =
    "UPDATE outbox SET payload = $1, recording = NULL WHERE id = $2";

impl Store {
    /// Up to `limit` pending rows of one workflow that are due, oldest first, each only
    /// once every earlier event of its call is no longer pending: a call's events reach
    /// the customer in order, across retries. The `call_started_hook` (seq 0) waits for
    /// nothing and holds nothing up. `hooks_only` while the events endpoint is paused.
    ///
    /// One query per workflow walks the `(workflow_id, status, next_attempt_at)` index
    /// and stops after `limit` rows, so its cost follows what it returns, not the
    /// backlog.
    pub(crate) async fn due_for_workflow(
        &self,
        now: i64,
        workflow_id: i64,
        hooks_only: bool,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // A row another instance claimed is skipped until its lease runs out; this
        // instance's own claims are its to send. "Not settled" is spelled
        // `NOT IN ('delivered', 'failed')` where rows are found by id or call: as
        // `= 'pending'` PostgreSQL, with stale statistics (autovacuum off), intersects it
        // with the whole status index on every row, and deliveries stall.
        let sql = format!("SELECT {ROW} {DUE}");
        // Planned at every read on PostgreSQL. A prepared statement's plan is kept once
        // it has run five times, and this one's was chosen while the table was nearly
        // empty: sequential scans of `outbox`, per due row for the `NOT EXISTS`, which
        // grow with the table (before the first ANALYZE, or between two) until
        // deliveries stall. Planning costs a fraction of a millisecond and sees the
        // table as it is.
        // Rows of a commit whose fsync is still running wait for it (`wal_sync.rs`).
        let below = self.visible_below();
        match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![
                    workflow_id,
                    now,
                    i64::from(hooks_only),
                    HOOK_EVENT.to_owned(),
                    limit,
                    self.instance().to_owned(),
                    below
                ];
                db.pool.all(&sql, args, OutboxRow::from_sqlite).await
            }
            Backend::Postgres(db) => Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .persistent(false)
                .bind(workflow_id)
                .bind(now)
                .bind(i64::from(hooks_only))
                .bind(HOOK_EVENT)
                .bind(limit)
                .bind(self.instance())
                .bind(below)
                .fetch_all(&db.pool)
                .await?),
        }
    }

    /// [`Store::due_for_workflow`], claimed for this instance until `now + lease_ms`:
    /// the rows it returns are this instance's to send. Rows this instance holds are
    /// claimed again, their lease renewed; rows another one holds, or that another
    /// transaction has locked, are passed over, so of two instances reading at once
    /// each row goes to one. One statement on PostgreSQL: the read and the claim had been
    /// two round trips on the way from a commit to its delivery. A store only this
    /// process uses needs no claims: the read, with no write.
    pub(crate) async fn claim_due(
        &self,
        now: i64,
        workflow_id: i64,
        hooks_only: bool,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let Backend::Postgres(db) = self.backend() else {
            return self
                .due_for_workflow(now, workflow_id, hooks_only, limit)
                .await;
        };
        let claim = Claim {
            now,
            workflow_id,
            hooks_only,
            limit,
            lease_ms,
            instance: self.instance(),
        };
        claims::claim_due(db, claim).await
    }

    /// Gives up this instance's claims on these rows (read but not sent), so other
    /// instances need not wait for the lease.
    pub(crate) async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        match self.backend() {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(db) => claims::release(db, self.instance(), ids).await,
        }
    }

    /// Outbox rows at or above this id may not be durable yet: on SQLite, those of
    /// commits whose WAL sync is still running (`sqlite/wal_sync.rs`).
    fn visible_below(&self) -> i64 {
        match self.backend() {
            Backend::Sqlite(db) => db.visible_below(),
            Backend::Postgres(_) => i64::MAX,
        }
    }

    /// When the next pending row of an unpaused workflow falls due after `now`.
    pub(crate) async fn next_due_after(
        &self,
        now: i64,
        paused_workflows: &[i64],
    ) -> Result<Option<i64>, StoreError> {
        let sql = format!(
            "SELECT MIN(next_attempt_at) FROM outbox
             WHERE status = 'pending' AND next_attempt_at > $1
               AND {}",
            in_values(self.dialect(), "workflow_id", "$2", true, true)
        );
        let paused = serde_json::to_string(paused_workflows)?;
        match self.backend() {
            Backend::Sqlite(db) => Ok(db
                .pool
                .first(&sql, args![now, paused], |r| r.get(0))
                .await?
                .flatten()),
            Backend::Postgres(db) => {
                let (at,): (Option<i64>,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(now)
                    .bind(paused)
                    .fetch_one(&db.pool)
                    .await?;
                Ok(at)
            }
        }
    }

    /// How many deliveries are pending, per workflow.
    pub(crate) async fn pending_by_workflow(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let sql = "SELECT workflow_id, COUNT(*) FROM outbox WHERE status = 'pending'
                   GROUP BY workflow_id ORDER BY workflow_id";
        match self.backend() {
            Backend::Sqlite(db) => {
                db.pool
                    .all(sql, args![], |r| Ok((r.get(0)?, r.get(1)?)))
                    .await
            }
            Backend::Postgres(db) => Ok(sqlx::query_as(sql).fetch_all(&db.pool).await?),
        }
    }
}

/// The attempts and where they leave their rows, as the JSON array parameter of
/// [`record_attempts_sql`].
pub(crate) fn attempt_rows(attempts: &[(Attempt, AttemptOutcome)]) -> Result<String, StoreError> {
    let now = now_ms();
    let rows: Vec<_> = attempts
        .iter()
        .map(|(attempt, outcome)| {
            let error = attempt.error.clone().or_else(|| {
                attempt
                    .status_code
                    .filter(|c| !(200..300).contains(c))
                    .map(|c| format!("HTTP {c}"))
            });
            let (status, next, delivered_at) = match outcome {
                AttemptOutcome::Delivered => (DeliveryStatus::Delivered, None, Some(now)),
                AttemptOutcome::RetryAt(at) => (DeliveryStatus::Pending, Some(*at), None),
                AttemptOutcome::Dead => (DeliveryStatus::Failed, None, None),
            };
            serde_json::json!([
                attempt.outbox_id,
                attempt.attempted_at,
                attempt.endpoint,
                attempt.status_code,
                attempt.error,
                attempt.latency_ms,
                attempt.response_body,
                status.as_str(),
                next,
                delivered_at,
                error,
            ])
        })
        .collect();
    Ok(serde_json::to_string(&rows)?)
}

/// Inserts the attempts, then moves their outbox rows on; each takes the rows of
/// [`attempt_rows`] as its one parameter, so a whole batch of attempts costs two
/// statements. Both backends' writers run them.
pub(crate) fn record_attempts_sql(dialect: Dialect) -> [String; 2] {
    let insert = format!(
        "INSERT INTO delivery_attempts (outbox_id, attempted_at, endpoint, status_code,
                                        error, latency_ms, response_body)
         SELECT CAST(j.value->>0 AS BIGINT), CAST(j.value->>1 AS BIGINT), j.value->>2,
                CAST(j.value->>3 AS BIGINT), j.value->>4, CAST(j.value->>5 AS BIGINT),
                j.value->>6
         FROM {} ORDER BY j.key",
        rows_of(dialect, "$1")
    );
    // Each row's claim ends with its attempt.
    let update = format!(
        "UPDATE outbox SET status = j.value->>7, attempts = attempts + 1,
             next_attempt_at = COALESCE(CAST(j.value->>8 AS BIGINT), next_attempt_at),
             delivered_at = CAST(j.value->>9 AS BIGINT), last_error = j.value->>10,
             claimed_by = NULL, claimed_until = NULL
         FROM {} WHERE outbox.id = CAST(j.value->>0 AS BIGINT){}",
        rows_of(dialect, "$1"),
        rows_key_filter(dialect, "outbox.id", "$1")
    );
    [insert, update]
}

/// Where an attempt leaves its outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    Delivered,
    RetryAt(i64),
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        fixtures::{insert_call, insert_delivery, row, rows},
        test_postgres_store, test_sqlite_store, test_stores,
    };

    async fn call_with_two_events(store: &Store) -> (i64, i64) {
        let call = insert_call(store, "RM_c", 7).await;
        for (seq, kind) in [(1, "call_started"), (2, "call_ended")] {
            insert_delivery(store, call, seq, kind, 7).await;
        }
        let due = store
            .due_for_workflow(now_ms(), 7, false, 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "call_ended waits for call_started");
        let ended: (i64,) = row(store, "SELECT id FROM outbox WHERE seq = 2", &[]).await;
        (due[0].id, ended.0)
    }

    fn delivered(outbox_id: i64) -> (Attempt, AttemptOutcome) {
        let attempt = Attempt {
            outbox_id,
            attempted_at: now_ms(),
            endpoint: "http://127.0.0.1:9/".into(),
            status_code: Some(200),
            error: None,
            latency_ms: 1,
            response_body: None,
        };
        (attempt, AttemptOutcome::Delivered)
    }

    fn start_writer(store: &Store) -> (crate::store::Writer, tokio::task::JoinHandle<()>) {
        let workflows = crate::ingest::sample::workflows();
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        store.start_writer(workflows, wake).unwrap()
    }

    fn ids(rows: Vec<OutboxRow>) -> Vec<i64> {
        rows.into_iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn a_claimed_row_is_one_instances_until_its_lease_ends() {
        let claim = async |store: &Store, now: i64| {
            ids(store.claim_due(now, 7, false, 10, 1000).await.unwrap())
        };

        // One process owns a SQLite file: every due row is won, nothing is written.
        let (sqlite, _dir) = test_sqlite_store().await;
        let (started, _) = call_with_two_events(&sqlite).await;
        assert_eq!(claim(&sqlite, now_ms()).await, [started]);
        assert_eq!(claim(&sqlite, now_ms()).await, [started]);

        let Some(postgres) = test_postgres_store(4).await else {
            return;
        };
        let (a, b) = (&postgres, postgres.as_another_instance());
        let (started, ended) = call_with_two_events(a).await;
        let now = now_ms();
        assert_eq!(claim(&b, now).await, [started]);
        assert!(claim(a, now).await.is_empty());
        // Claimed elsewhere, and holding up its call's next event; the holder reads it
        // again, which renews its lease.
        assert!(
            a.due_for_workflow(now, 7, false, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(claim(&b, now).await, [started]);
        // Released, it is anyone's again; then B takes it back.
        b.release(&[started]).await.unwrap();
        assert_eq!(
            a.due_for_workflow(now, 7, false, 10).await.unwrap().len(),
            1
        );
        assert_eq!(claim(&b, now).await, [started]);

        // B died: once the lease is over the row is A's to take.
        let later = now + 1001;
        assert_eq!(claim(a, later).await, [started]);
        assert!(claim(&b, later).await.is_empty());

        // Its outcome ends the claim and lets the call's next event go.
        let (writer, task) = start_writer(a);
        let (attempt, outcome) = delivered(started);
        writer.record(attempt, outcome).await.unwrap();
        assert_eq!(claim(&b, now_ms()).await, [ended]);
        drop(writer);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn two_instances_reading_at_once_share_the_due_rows_without_overlap() {
        let Some(a) = test_postgres_store(4).await else {
            return;
        };
        let b = a.as_another_instance();
        for n in 0..40 {
            let call = insert_call(&a, &format!("RM_{n}"), 7).await;
            insert_delivery(&a, call, 1, "call_started", 7).await;
        }
        // Twice: the second time each renews its own claims and takes none of the other's.
        for _ in 0..2 {
            let now = now_ms();
            let (x, y) = tokio::join!(
                a.claim_due(now, 7, false, 40, 60_000),
                b.claim_due(now, 7, false, 40, 60_000)
            );
            let (x, y) = (ids(x.unwrap()), ids(y.unwrap()));
            assert!(x.iter().all(|id| !y.contains(id)), "{x:?} {y:?}");
            assert_eq!(
                x.len() + y.len(),
                40,
                "every row went to one of them: {x:?} {y:?}"
            );
        }
    }

    #[tokio::test]
    async fn delivery_writes_store_the_published_body_and_record_the_attempt() {
        let (stores, _dir) = test_stores().await;
        for store in &stores {
            let (started, _) = call_with_two_events(store).await;
            let body = r#"{"recording_url":"https://r.example/a.ogg"}"#.to_string();
            let (writer, task) = start_writer(store);
            writer.publish(started, body.clone()).await.unwrap();
            let (attempt, outcome) = delivered(started);
            writer.record(attempt, outcome).await.unwrap();
            drop(writer);
            task.await.unwrap();
            let found: (String, Option<String>, String) = row(
                store,
                "SELECT payload, recording, status FROM outbox WHERE id = $1",
                &[started.into()],
            )
            .await;
            assert_eq!(found, (body, None, "delivered".into()));
        }
    }

    #[tokio::test]
    async fn a_batch_of_outcomes_moves_each_row_its_own_way() {
        let (stores, _dir) = test_stores().await;
        for store in &stores {
            let (started, ended) = call_with_two_events(store).await;
            let mut retried = delivered(started);
            retried.0.status_code = Some(503);
            retried.0.response_body = Some("busy \"now\"\n".into());
            retried.1 = AttemptOutcome::RetryAt(42);
            let mut dead = delivered(ended);
            dead.0.status_code = None;
            dead.0.error = Some("connection refused".into());
            dead.1 = AttemptOutcome::Dead;
            // Queued together, as the worker queues a batch of finished deliveries.
            let (writer, task) = start_writer(store);
            let (r, d) = tokio::join!(
                writer.record(retried.0, retried.1),
                writer.record(dead.0, dead.1)
            );
            r.unwrap();
            d.unwrap();
            drop(writer);
            task.await.unwrap();
            type Row = (String, i64, i64, Option<String>, Option<i64>);
            let outbox: Vec<Row> = rows(
                store,
                "SELECT status, attempts, next_attempt_at, last_error, delivered_at
                 FROM outbox ORDER BY seq",
                &[],
            )
            .await;
            assert_eq!(
                outbox[0],
                ("pending".into(), 1, 42, Some("HTTP 503".into()), None)
            );
            assert_eq!(outbox[1].0, "failed");
            assert_eq!(outbox[1].3.as_deref(), Some("connection refused"));
            type Tried = (i64, Option<i64>, Option<String>, Option<String>);
            let tried: Vec<Tried> = rows(
                store,
                "SELECT outbox_id, status_code, error, response_body
                 FROM delivery_attempts ORDER BY id",
                &[],
            )
            .await;
            assert_eq!(
                tried,
                [
                    (started, Some(503), None, Some("busy \"now\"\n".into())),
                    (ended, None, Some("connection refused".into()), None),
                ]
            );
        }
    }

    #[tokio::test]
    async fn postgres_plans_the_window_read_at_every_read() {
        // One connection in each pool, so the checks below see the sessions that ran
        // the reads: the worker's read and claim (`claim_due`, on the claims pool) and
        // the plain read (on the main pool).
        let Some(store) = test_postgres_store(1).await else {
            return;
        };
        let (started, _) = call_with_two_events(&store).await;
        for _ in 0..8 {
            store.claim_due(now_ms(), 7, false, 10, 1000).await.unwrap();
            store.release(&[started]).await.unwrap();
            store
                .due_for_workflow(now_ms(), 7, false, 10)
                .await
                .unwrap();
            store.next_due_after(now_ms(), &[]).await.unwrap();
        }
        let Backend::Postgres(db) = store.backend() else {
            unreachable!()
        };
        let pools = [
            (db.claims_pool(), "claimed_by = NULL"),
            (&db.pool, "MIN(next_attempt_at)"),
        ];
        for (pool, also_run_there) in pools {
            let kept: Vec<(String,)> =
                sqlx::query_as("SELECT statement FROM pg_prepared_statements")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            assert!(
                kept.iter().any(|(s,)| s.contains(also_run_there)),
                "the check sees the reads' session: {kept:#?}"
            );
            assert!(
                !kept.iter().any(|(s,)| s.contains("NOT EXISTS")),
                "the window read kept a plan: {kept:#?}"
            );
        }
    }
}
