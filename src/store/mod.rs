//! Durable state: calls, the LiveKit events already seen, and the outbox.
//!
//! An accepted webhook, the call state it changes and the VoiceKit events it causes are
//! written in one transaction, so a crash never leaves an event half-handled. The
//! outbox is the only queue: nothing lives in memory that a restart could lose.

mod observe;
mod operator;
mod outbox;
mod prune;

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
    time::Duration,
};

use serde::Serialize;

use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use operator::{AttemptRecord, CallDetail, CallSummary, DeliverySummary, InboundRecord};
pub use outbox::{
    Attempt, AttemptOutcome, DeliveryStatus, HOOK_EVENT, NewDelivery, OutboxRow, enqueue,
};
pub use prune::{Pruned, keep_pruned};

use crate::call::CallState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored call state is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// The embedded SQLite store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// One write transaction, opened `IMMEDIATE` so it never fails half-way on a lock upgrade.
pub type Tx = Transaction<'static, Sqlite>;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database at `url` and runs pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An fsync per commit: a 200 to LiveKit means the event survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file does not go stale like a network connection: pinging it before
            // each use only added a round trip to every transaction.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

// The ingest writer's statements. Each takes a whole batch of webhooks as one JSON
// array parameter (`json_each`), so a batch costs the same handful of statements
// whatever its size: with sqlx every statement is a round trip to the connection's
// thread, and one round trip per row was what limited ingest.

/// The ids among `event_ids` that were accepted before.
pub async fn seen_events(tx: &mut Tx, event_ids: &[&str]) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT event_id FROM inbound_events WHERE event_id IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(event_ids)?)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
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
/// is an error: the writer checked with [`seen_events`] in the same transaction.
pub async fn remember_events(tx: &mut Tx, events: &[SeenEvent<'_>]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO inbound_events (event_id, event_type, room_sid, call_id, received_at)
         SELECT value->>0, value->>1, value->>2, value->>3, ? FROM json_each(?) ORDER BY key",
    )
    .bind(now_ms())
    .bind(serde_json::to_string(events)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The calls of these rooms that exist.
pub async fn calls_by_rooms(tx: &mut Tx, room_sids: &[&str]) -> Result<Vec<CallState>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT state FROM calls WHERE room_sid IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(room_sids)?)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|(s,)| serde_json::from_str(&s).map_err(StoreError::from))
        .collect()
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
    let now = now_ms();
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                            state, created_at, updated_at)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, 'waiting', '{}', ?, ?
         FROM json_each(?) ORDER BY key
         RETURNING id, room_sid",
    )
    .bind(now)
    .bind(now)
    .bind(serde_json::to_string(calls)?)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(id, room)| (room, id)).collect())
}

/// [`enqueue`] for many deliveries in one statement, in order: the same columns and
/// values, so the rows are those `enqueue` would write one by one (a test checks it).
pub async fn enqueue_all(tx: &mut Tx, deliveries: &[NewDelivery<'_>]) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = deliveries
        .iter()
        .map(|d| {
            let (id, call, seq, kind) = (d.webhook_id, d.call_id, d.seq, d.event_type);
            (id, call, seq, kind, d.workflow_id, d.payload, d.recording)
        })
        .collect();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload, recording,
                             next_attempt_at, created_at)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, ?, ?
         FROM json_each(?) ORDER BY key",
    )
    .bind(now)
    .bind(now)
    .bind(serde_json::to_string(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Saves the state (and phase) of each call.
pub async fn save_calls(tx: &mut Tx, states: &[&CallState]) -> Result<(), StoreError> {
    if states.is_empty() {
        return Ok(());
    }
    let rows = states
        .iter()
        .map(|s| Ok((s.call_id, serde_json::to_string(s)?, s.phase().as_str())))
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    sqlx::query(
        "UPDATE calls SET state = j.value->>1, phase = j.value->>2, updated_at = ?
         FROM json_each(?) AS j WHERE calls.id = j.value->>0",
    )
    .bind(now_ms())
    .bind(serde_json::to_string(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The state of one call, for work done outside an ingest transaction.
    pub async fn call_state(&self, call_id: i64) -> Result<Option<CallState>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as("SELECT state FROM calls WHERE id = ?")
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(s,)| serde_json::from_str(&s)).transpose()?)
    }

    /// Keeps the runtime data a `call_started_hook` returned with its call.
    pub async fn set_runtime_data(&self, call_id: i64, data: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE calls SET runtime_data = ?, updated_at = ? WHERE id = ?")
            .bind(data)
            .bind(now_ms())
            .bind(call_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Calls in one of `phases` that nothing has touched since `untouched_since_ms`:
    /// the candidates for repair when LiveKit lost an event.
    pub async fn stale_calls(
        &self,
        phases: &[&str],
        untouched_since_ms: i64,
        limit: i64,
    ) -> Result<Vec<CallState>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT state FROM calls
             WHERE phase IN (SELECT value FROM json_each(?)) AND updated_at < ?
             ORDER BY updated_at LIMIT ?",
        )
        .bind(serde_json::to_string(phases)?)
        .bind(untouched_since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(s,)| serde_json::from_str(&s).map_err(StoreError::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn enqueue_all_writes_the_rows_enqueue_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let ids = create_calls(&mut tx, &[NewCall("RM_1", "room", 7, "wf", "slug")])
            .await
            .unwrap();
        let delivery = |webhook_id, seq, recording| NewDelivery {
            webhook_id,
            call_id: ids["RM_1"],
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
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT json_array(call_id, event_type, workflow_id, payload, recording, status,
                               attempts, next_attempt_at > 0, created_at > 0)
             FROM outbox ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0], rows[2]);
        assert_eq!(rows[1], rows[3]);
        let seqs: Vec<(i64,)> = sqlx::query_as("SELECT seq FROM outbox ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(seqs, [(1,), (2,), (3,), (4,)]);
    }
}
