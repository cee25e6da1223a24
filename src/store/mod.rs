//! Durable state: calls, the LiveKit events already seen, and the outbox.
//!
//! An accepted webhook, the call state it changes and the VoiceKit events it causes are
//! written in one transaction, so a crash never leaves an event half-handled. The
//! outbox is the only queue: nothing lives in memory that a restart could lose.

mod outbox;

use std::{str::FromStr, time::Duration};

use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use outbox::{Attempt, AttemptOutcome, DeliveryStatus, NewDelivery, OutboxRow, enqueue};

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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

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

/// Records a LiveKit event id; `false` when it was seen before.
pub async fn remember_event(
    tx: &mut Tx,
    event_id: &str,
    event_type: &str,
    room_sid: Option<&str>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO inbound_events (event_id, event_type, room_sid, received_at)
         VALUES (?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(room_sid)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Links a remembered event to the call it touched, for the operator's view.
pub async fn link_event(tx: &mut Tx, event_id: &str, call_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbound_events SET call_id = ? WHERE event_id = ?")
        .bind(call_id)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn call_by_room(tx: &mut Tx, room_sid: &str) -> Result<Option<CallState>, StoreError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT state FROM calls WHERE room_sid = ?")
        .bind(room_sid)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.map(|(s,)| serde_json::from_str(&s)).transpose()?)
}

/// Inserts a call row and returns the id the store assigned.
pub async fn create_call(
    tx: &mut Tx,
    room_sid: &str,
    room_name: &str,
    workflow_id: i64,
    workflow_slug: &str,
    call_slug: &str,
) -> Result<i64, StoreError> {
    let now = now_ms();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                            state, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'waiting', '{}', ?, ?) RETURNING id",
    )
    .bind(room_sid)
    .bind(room_name)
    .bind(workflow_id)
    .bind(workflow_slug)
    .bind(call_slug)
    .bind(now)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    Ok(id)
}

pub async fn save_call(tx: &mut Tx, state: &CallState) -> Result<(), StoreError> {
    sqlx::query("UPDATE calls SET state = ?, phase = ?, updated_at = ? WHERE id = ?")
        .bind(serde_json::to_string(state)?)
        .bind(state.phase().as_str())
        .bind(now_ms())
        .bind(state.call_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
