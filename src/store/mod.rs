//! Durable state: calls, the LiveKit events already seen, and the outbox.
//!
//! An accepted webhook, the call state it changes and the VoiceKit events it causes are
//! written in one transaction, so a crash never leaves an event half-handled. The
//! outbox is the only queue: nothing lives in memory that a restart could lose.

mod backend;
mod batch;
mod busy;
mod call_cache;
mod checkpoint;
mod observe;
mod operator;
mod outbox;
mod plans;
mod prune;
mod sqlite_writer;
mod vacuum;
mod wal_sync;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

pub use backend::{Store, Tx, redact_url};
#[cfg(test)]
pub(crate) use backend::{test_sqlite_store, test_stores};
pub(crate) use batch::IngestBatch;
pub use checkpoint::keep_checkpointed;
pub use operator::{AttemptRecord, CallDetail, CallSummary, DeliverySummary, InboundRecord};
pub use outbox::{
    Attempt, AttemptOutcome, DeliveryStatus, HOOK_EVENT, NewDelivery, OutboxRow, enqueue,
};
pub use prune::{Pruned, keep_pruned};
pub use sqlite_writer::{IngestConnection, SqliteBatch};
pub use vacuum::keep_vacuumed;
pub use wal_sync::{SyncHorizon, WalSync};

use crate::call::CallState;
use backend::{Dialect, on_pool, on_tx, rows_of};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored call state is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(
        "another process uses the SQLite store {0} (it holds {1}): run one bridge per \
         SQLite file; several bridges share a PostgreSQL store"
    )]
    InUse(std::path::PathBuf, std::path::PathBuf),
    #[error("cannot lock {0}: {1}")]
    Lock(std::path::PathBuf, String),
    #[error("fsync of the SQLite WAL failed: {0}; the bridge takes no more writes until restarted")]
    WalSync(std::io::Error),
    #[error("an fsync of the SQLite WAL failed earlier; restart the bridge")]
    WalSyncFailed,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// The ingest writer's statements. Each takes a whole batch of webhooks as one JSON
// array parameter (see `backend::rows_of`), so a batch costs the same handful of
// statements whatever its size: every statement is a round trip, and one round trip
// per row was what limited ingest.

impl Store {
    /// Begins an ingest transaction serialised against every other one touching the
    /// same rooms or LiveKit event ids, in this process or any other bridge: two
    /// batches holding events of one room (or the same event twice) apply them one
    /// after the other, never both from the same old state. On PostgreSQL the advisory
    /// locks are taken with the `BEGIN`, in its round trip; on SQLite the `IMMEDIATE`
    /// transaction already holds the only write lock.
    pub async fn begin_ingest(&self, keys: &[&str]) -> Result<Tx, StoreError> {
        let Some(pool) = self.postgres() else {
            return self.begin().await;
        };
        // Always in the same order, so two batches never wait for each other in a cycle.
        let mut locks: Vec<i64> = keys.iter().map(|k| backend::lock_key(k)).collect();
        locks.sort_unstable();
        locks.dedup();
        let locks: Vec<String> = locks.iter().map(i64::to_string).collect();
        // Integers only: nothing of the events' text reaches the statement.
        let begin = format!(
            "{}; SELECT pg_advisory_xact_lock(k) FROM unnest('{{{}}}'::bigint[]) AS k",
            backend::PG_BEGIN,
            locks.join(",")
        );
        Ok(Tx::Postgres(
            pool.begin_with(sqlx::AssertSqlSafe(begin)).await?,
        ))
    }
}

/// What the store knows of a batch: which of its event ids were accepted before, and
/// the calls of its rooms that exist. One statement for both lookups, as each is a
/// round trip.
pub async fn known(
    tx: &mut Tx,
    event_ids: &[&str],
    room_sids: &[&str],
) -> Result<(HashSet<String>, Vec<CallState>), StoreError> {
    let d = tx.dialect();
    let sql = format!(
        "SELECT 0, event_id FROM inbound_events WHERE {}
         UNION ALL
         SELECT 1, state FROM calls WHERE {}",
        backend::in_values(d, "event_id", "$1", false, false),
        backend::in_values(d, "room_sid", "$2", false, false)
    );
    let (ids, rooms) = (
        serde_json::to_string(event_ids)?,
        serde_json::to_string(room_sids)?,
    );
    let rows: Vec<(i32, String)> = on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .bind(rooms)
        .fetch_all(&mut *c)
        .await?);
    let (mut seen, mut calls) = (HashSet::new(), Vec::new());
    for (table, value) in rows {
        if table == 0 {
            seen.insert(value);
        } else {
            calls.push(serde_json::from_str(&value)?);
        }
    }
    Ok((seen, calls))
}

/// A LiveKit event to remember, with the call it touched (for the operator's view).
#[derive(Debug, Clone, Serialize)]
pub struct SeenEvent<'a>(
    pub &'a str,
    pub &'a str,
    pub Option<&'a str>,
    pub Option<i64>,
);

/// Records new event ids (`event_id, event_type, room_sid, call_id`). An id seen before
/// is an error: the writer checked with [`known`] in the same transaction.
pub async fn remember_events(tx: &mut Tx, events: &[SeenEvent<'_>]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = remember_events_sql(tx.dialect(), "$1", "$2");
    let rows = serde_json::to_string(events)?;
    on_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(rows)
        .execute(&mut *c)
        .await?.rows_affected());
    Ok(())
}

fn remember_events_sql(dialect: Dialect, now: &str, rows: &str) -> String {
    format!(
        "INSERT INTO inbound_events (event_id, event_type, room_sid, call_id, received_at)
         SELECT j.value->>0, j.value->>1, j.value->>2, CAST(j.value->>3 AS BIGINT), {now}
         FROM {} ORDER BY j.key",
        rows_of(dialect, rows)
    )
}

/// A call to create: `room_sid, room_name, workflow_id, workflow_slug, call_slug`.
#[derive(Debug, Clone, Serialize)]
pub struct NewCall<'a>(pub &'a str, pub &'a str, pub i64, pub &'a str, pub &'a str);

/// Inserts call rows (their state is saved by [`save_calls`] before the commit);
/// returns the id the store assigned to each room.
pub async fn create_calls(
    tx: &mut Tx,
    calls: &[NewCall<'_>],
) -> Result<HashMap<String, i64>, StoreError> {
    if calls.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                            state, created_at, updated_at)
         SELECT j.value->>0, j.value->>1, CAST(j.value->>2 AS BIGINT), j.value->>3,
                j.value->>4, 'waiting', '{{}}', $1, $1
         FROM {} ORDER BY j.key
         RETURNING id, room_sid",
        rows_of(tx.dialect(), "$2")
    );
    let rows = serde_json::to_string(calls)?;
    let rows: Vec<(i64, String)> = on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(rows)
        .fetch_all(&mut *c)
        .await?);
    Ok(rows.into_iter().map(|(id, room)| (room, id)).collect())
}

/// [`enqueue`] for many deliveries in one statement, in order: the same columns and
/// values, so the rows are those `enqueue` would write one by one (a test checks it).
pub async fn enqueue_all(tx: &mut Tx, deliveries: &[NewDelivery<'_>]) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let sql = enqueue_all_sql(tx.dialect(), "$1", "$2");
    let rows = delivery_rows(deliveries)?;
    on_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(rows)
        .execute(&mut *c)
        .await?.rows_affected());
    Ok(())
}

fn delivery_rows(deliveries: &[NewDelivery<'_>]) -> Result<String, StoreError> {
    let rows: Vec<_> = deliveries
        .iter()
        .map(|d| {
            let (id, call, seq, kind) = (d.webhook_id, d.call_id, d.seq, d.event_type);
            (id, call, seq, kind, d.workflow_id, d.payload, d.recording)
        })
        .collect();
    Ok(serde_json::to_string(&rows)?)
}

fn enqueue_all_sql(dialect: Dialect, now: &str, rows: &str) -> String {
    format!(
        "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload, recording,
                             next_attempt_at, created_at)
         SELECT j.value->>0, CAST(j.value->>1 AS BIGINT), CAST(j.value->>2 AS BIGINT),
                j.value->>3, CAST(j.value->>4 AS BIGINT), j.value->>5, j.value->>6, {now}, {now}
         FROM {} ORDER BY j.key",
        rows_of(dialect, rows)
    )
}

/// Saves the state (and phase) of each call.
pub async fn save_calls(tx: &mut Tx, states: &[CallState]) -> Result<(), StoreError> {
    if states.is_empty() {
        return Ok(());
    }
    let sql = save_calls_sql(tx.dialect(), "$1", "$2");
    let rows = state_rows(states)?;
    on_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(rows)
        .execute(&mut *c)
        .await?.rows_affected());
    Ok(())
}

fn state_rows(states: &[CallState]) -> Result<String, StoreError> {
    let rows = states
        .iter()
        .map(|s| Ok((s.call_id, serde_json::to_string(s)?, s.phase().as_str())))
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Ok(serde_json::to_string(&rows)?)
}

fn save_calls_sql(dialect: Dialect, now: &str, rows: &str) -> String {
    format!(
        "UPDATE calls SET state = j.value->>1, phase = j.value->>2, updated_at = {now}
         FROM {} WHERE calls.id = CAST(j.value->>0 AS BIGINT){}",
        rows_of(dialect, rows),
        backend::rows_key_filter(dialect, "calls.id", rows)
    )
}

/// A batch's last writes: its outbox rows, its seen events and its calls' states, as
/// [`enqueue_all`], [`remember_events`] and [`save_calls`] write them. On PostgreSQL
/// they are one statement (the inserts as data-modifying `WITH` parts of the update),
/// so one round trip where three had been: measured at 500 webhooks/s, each was about
/// half a millisecond at the median on the way to the 200, two or three at p99.
pub async fn write_batch(
    tx: &mut Tx,
    deliveries: &[NewDelivery<'_>],
    events: &[SeenEvent<'_>],
    states: &[CallState],
) -> Result<(), StoreError> {
    let Tx::Postgres(t) = tx else {
        enqueue_all(tx, deliveries).await?;
        remember_events(tx, events).await?;
        return save_calls(tx, states).await;
    };
    let d = Dialect::Postgres;
    let sql = format!(
        "WITH queued AS ({}), seen AS ({}) {}",
        enqueue_all_sql(d, "$1", "$2"),
        remember_events_sql(d, "$1", "$3"),
        save_calls_sql(d, "$1", "$4")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(delivery_rows(deliveries)?)
        .bind(serde_json::to_string(events)?)
        .bind(state_rows(states)?)
        .execute(&mut **t)
        .await?;
    Ok(())
}

impl Store {
    /// The state of one call, for work done outside an ingest transaction.
    pub async fn call_state(&self, call_id: i64) -> Result<Option<CallState>, StoreError> {
        let row: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT state FROM calls WHERE id = $1")
            .bind(call_id)
            .fetch_optional(p)
            .await?);
        Ok(row.map(|(s,)| serde_json::from_str(&s)).transpose()?)
    }

    /// Keeps the runtime data a `call_started_hook` returned with its call.
    pub async fn set_runtime_data(&self, call_id: i64, data: &str) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE calls SET runtime_data = $1, updated_at = $2 WHERE id = $3")
            .bind(data)
            .bind(now_ms())
            .bind(call_id)
            .execute(p)
            .await?.rows_affected());
        Ok(())
    }

    /// Calls in one of `phases` that nothing has touched since `untouched_since_ms`:
    /// the candidates for repair when LiveKit lost an event.
    pub async fn stale_calls(
        &self,
        phases: &[&str],
        untouched_since_ms: i64,
        limit: i64,
    ) -> Result<Vec<CallState>, StoreError> {
        let sql = format!(
            "SELECT state FROM calls
             WHERE {} AND updated_at < $2
             ORDER BY updated_at LIMIT $3",
            backend::in_values(self.dialect(), "phase", "$1", false, false)
        );
        let phases = serde_json::to_string(phases)?;
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(phases)
            .bind(untouched_since_ms)
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.into_iter()
            .map(|(s,)| serde_json::from_str(&s).map_err(StoreError::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type OutboxColumns = (
        i64,
        String,
        i64,
        String,
        Option<String>,
        String,
        i64,
        bool,
        bool,
    );

    /// A write transaction holding one new call, room `RM_1` of workflow 7.
    async fn with_one_call(store: &Store) -> (Tx, i64) {
        let mut tx = store.begin().await.unwrap();
        let ids = create_calls(&mut tx, &[NewCall("RM_1", "room", 7, "wf", "slug")])
            .await
            .unwrap();
        (tx, ids["RM_1"])
    }

    #[tokio::test]
    async fn enqueue_all_writes_the_rows_enqueue_writes() {
        let (stores, _dir) = backend::test_stores().await;
        for store in stores {
            let (mut tx, call_id) = with_one_call(&store).await;
            let delivery = |webhook_id, seq, recording| NewDelivery {
                webhook_id,
                call_id,
                seq,
                event_type: "call_finalized",
                workflow_id: 7,
                payload: "{\"a\":\"\\u00e9 \\\" \u{e9}\\n\"}",
                recording,
            };
            enqueue(&mut tx, &delivery("msg_one", 1, Some("{\"k\":1}")))
                .await
                .unwrap();
            enqueue(&mut tx, &delivery("msg_two", 2, None))
                .await
                .unwrap();
            enqueue_all(
                &mut tx,
                &[
                    delivery("msg_three", 3, Some("{\"k\":1}")),
                    delivery("msg_four", 4, None),
                ],
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            let rows: Vec<OutboxColumns> = on_pool!(store, p => sqlx::query_as(
                "SELECT call_id, event_type, workflow_id, payload, recording, status, attempts,
                        next_attempt_at > 0, created_at > 0
                 FROM outbox ORDER BY id",
            )
            .fetch_all(p)
            .await
            .unwrap());
            assert_eq!(rows.len(), 4, "{:?}", store.dialect());
            assert_eq!(rows[0], rows[2], "{:?}", store.dialect());
            assert_eq!(rows[1], rows[3], "{:?}", store.dialect());
            assert_eq!(rows[1].3, "{\"a\":\"\\u00e9 \\\" \u{e9}\\n\"}");
            let seqs: Vec<(i64,)> = on_pool!(store, p => sqlx::query_as(
                "SELECT seq FROM outbox ORDER BY id")
                .fetch_all(p)
                .await
                .unwrap());
            assert_eq!(seqs, [(1,), (2,), (3,), (4,)]);
        }
    }

    #[tokio::test]
    async fn one_lookup_finds_the_seen_ids_and_the_existing_calls() {
        let (stores, _dir) = backend::test_stores().await;
        for store in stores {
            let (mut tx, call_id) = with_one_call(&store).await;
            let state = crate::call::CallState::new(
                call_id,
                "slug".into(),
                &crate::config::Workflow {
                    id: 7,
                    slug: "wf".into(),
                    organization_id: 1,
                    events_webhook_url: "http://127.0.0.1:1/".into(),
                    call_started_hook: None,
                    room_pattern: None,
                    signing_keys: vec![],
                },
                "RM_1",
                "room",
            );
            save_calls(&mut tx, std::slice::from_ref(&state))
                .await
                .unwrap();
            remember_events(
                &mut tx,
                &[SeenEvent("EV_1", "room_started", Some("RM_1"), None)],
            )
            .await
            .unwrap();
            let (seen, calls) = known(&mut tx, &["EV_1", "EV_2"], &["RM_1", "RM_2"])
                .await
                .unwrap();
            assert_eq!(
                seen,
                HashSet::from(["EV_1".to_owned()]),
                "{:?}",
                store.dialect()
            );
            assert_eq!(calls.len(), 1, "{:?}", store.dialect());
            assert_eq!(calls[0].room_sid, "RM_1");
            assert_eq!(calls[0].call_id, call_id);
            let (seen, calls) = known(&mut tx, &[], &[]).await.unwrap();
            assert!(seen.is_empty() && calls.is_empty());
        }
    }

    #[tokio::test]
    async fn ingest_batches_of_one_room_wait_for_each_other_across_instances() {
        let (stores, _dir) = backend::test_stores().await;
        let (a, b) = (&stores[1], stores[1].as_another_instance());
        let mut first = a.begin_ingest(&["RM_shared", "EV_1"]).await.unwrap();
        // Keys in another order and one more: still no cycle, and it must wait.
        let mut second = tokio::spawn(async move {
            let mut tx = b
                .begin_ingest(&["RM_other", "EV_1", "RM_shared"])
                .await
                .unwrap();
            let (seen, _) = known(&mut tx, &["EV_1"], &[]).await.unwrap();
            tx.commit().await.unwrap();
            seen
        });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut second).await;
        assert!(
            waited.is_err(),
            "the second batch did not wait for the first"
        );
        remember_events(
            &mut first,
            &[SeenEvent("EV_1", "room_started", Some("RM_shared"), None)],
        )
        .await
        .unwrap();
        first.commit().await.unwrap();
        // It then reads what the first committed: EV_1 is a duplicate.
        assert!(second.await.unwrap().contains("EV_1"));
    }

    /// 2,000 ended calls, each with a delivered `call_started`, written after the
    /// start-time ANALYZE: the planner's statistics still say the tables are empty.
    async fn grown_past_its_statistics(store: &Store) {
        let pool = store.postgres().unwrap();
        sqlx::raw_sql(
            "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug,
                                phase, state, created_at, updated_at)
             SELECT 'RM_' || g, 'room', 7, 'wf', 's' || g, 'ended', repeat('x', 500), 0, 0
             FROM generate_series(1, 2000) AS g;
             INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                                 status, next_attempt_at, created_at)
             SELECT 'msg_' || id, id, 1, 'call_started', 7, repeat('x', 500), 'delivered', 0, 0
             FROM calls",
        )
        .execute(pool)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn postgres_updates_from_json_rows_probe_the_key_not_the_whole_table() {
        let store = backend::test_postgres_store(2).await;
        grown_past_its_statistics(&store).await;
        let d = Dialect::Postgres;
        // Both take the JSON rows as $1; the calls' update its clock as $2, here a
        // constant.
        let recorded = outbox::record_attempts_sql(d)[1].clone();
        let saved = save_calls_sql(d, "0", "$1");
        for (sql, table) in [(recorded, "outbox"), (saved, "calls")] {
            let plan: Vec<(String,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
                    .bind(r#"[[1,"x","y"],[2,"x","y"]]"#)
                    .fetch_all(store.postgres().unwrap())
                    .await
                    .unwrap();
            let plan: Vec<String> = plan.into_iter().map(|(line,)| line).collect();
            assert!(
                !plan
                    .iter()
                    .any(|l| l.contains(&format!("Seq Scan on {table}"))),
                "{table}: {plan:#?}"
            );
        }
    }

    #[tokio::test]
    async fn write_batch_writes_what_its_three_statements_write() {
        let (stores, _dir) = backend::test_stores().await;
        for store in stores {
            let workflow = crate::config::Workflow {
                id: 7,
                slug: "wf".into(),
                organization_id: 9,
                events_webhook_url: "http://127.0.0.1:1/".into(),
                call_started_hook: None,
                room_pattern: None,
                signing_keys: vec![],
            };
            let mut tx = store.begin().await.unwrap();
            let rooms = [
                NewCall("RM_a", "a", 7, "wf", "sa"),
                NewCall("RM_b", "b", 7, "wf", "sb"),
            ];
            let ids = create_calls(&mut tx, &rooms).await.unwrap();
            // Room a through write_batch, room b through the three statements.
            for (room, together) in [("RM_a", true), ("RM_b", false)] {
                let call_id = ids[room];
                let hooks = [format!("msg_{room}_1"), format!("msg_{room}_2")];
                let deliveries: Vec<NewDelivery> = (0..2)
                    .map(|n| NewDelivery {
                        webhook_id: &hooks[n],
                        call_id,
                        seq: n as i64 + 1,
                        event_type: "call_started",
                        workflow_id: 7,
                        payload: "{\"p\":\"\\u00e9 \u{e9}\"}",
                        recording: (n == 1).then_some("{\"k\":1}"),
                    })
                    .collect();
                let seen = [format!("EV_{room}_1"), format!("EV_{room}_2")];
                let events = [
                    SeenEvent(&seen[0], "room_started", Some(room), Some(call_id)),
                    SeenEvent(&seen[1], "track_published", Some(room), None),
                ];
                let state = crate::call::CallState::new(call_id, "s".into(), &workflow, room, "r");
                if together {
                    write_batch(&mut tx, &deliveries, &events, &[state])
                        .await
                        .unwrap();
                } else {
                    enqueue_all(&mut tx, &deliveries).await.unwrap();
                    remember_events(&mut tx, &events).await.unwrap();
                    save_calls(&mut tx, &[state]).await.unwrap();
                }
            }
            tx.commit().await.unwrap();
            let dump = async |room: &str| -> Vec<String> {
                let queries = [
                    "SELECT seq || event_type || payload || COALESCE(recording, '-') || status
                     FROM outbox o JOIN calls c ON c.id = o.call_id WHERE c.room_sid = $1
                     ORDER BY o.id",
                    "SELECT event_type || COALESCE(CAST(e.call_id - c.id AS TEXT), '-')
                     FROM inbound_events e JOIN calls c ON c.room_sid = e.room_sid
                     WHERE e.room_sid = $1 ORDER BY e.event_id",
                    "SELECT phase || (updated_at > 0) || length(state) FROM calls WHERE room_sid = $1",
                ];
                let mut rows = Vec::new();
                for q in queries {
                    let got: Vec<(String,)> = on_pool!(store, p => sqlx::query_as(q)
                        .bind(room)
                        .fetch_all(p)
                        .await
                        .unwrap());
                    rows.extend(got.into_iter().map(|(r,)| r));
                }
                rows
            };
            let (a, b) = (dump("RM_a").await, dump("RM_b").await);
            assert_eq!(a.len(), 5, "{:?}: {a:?}", store.dialect());
            assert_eq!(a, b, "{:?}", store.dialect());
        }
    }
}
