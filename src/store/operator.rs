//! What an operator asks of the store: calls, their events and attempts, failed
//! deliveries, and putting deliveries back in line (retry one, replay many).

use serde::Serialize;
use sqlx::FromRow;

use super::{Backend, Store, StoreError, now_ms, sqlite::args};

#[derive(Debug, Clone, Serialize, FromRow)]
pub(crate) struct CallSummary {
    pub id: i64,
    pub room_sid: String,
    pub room_name: String,
    pub workflow_id: i64,
    pub workflow_slug: String,
    pub call_slug: String,
    pub phase: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub(crate) struct DeliverySummary {
    pub id: i64,
    pub webhook_id: String,
    pub call_id: i64,
    pub event_type: String,
    pub workflow_id: i64,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    pub payload: String,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub(crate) struct AttemptRecord {
    pub id: i64,
    pub outbox_id: i64,
    pub attempted_at: i64,
    pub endpoint: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub(crate) struct InboundRecord {
    pub event_id: String,
    pub event_type: String,
    pub received_at: i64,
}

/// Everything known about one call.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CallDetail {
    pub call: CallSummary,
    pub state: serde_json::Value,
    pub runtime_data: Option<serde_json::Value>,
    pub livekit_events: Vec<InboundRecord>,
    pub deliveries: Vec<DeliverySummary>,
    pub attempts: Vec<AttemptRecord>,
}

pub(crate) const CALL: &str = "id, room_sid, room_name, workflow_id, workflow_slug, call_slug, phase, \
                    created_at, updated_at";
pub(crate) const DELIVERY: &str = "id, webhook_id, call_id, event_type, workflow_id, status, attempts, \
                        next_attempt_at, created_at, delivered_at, last_error, payload";

impl CallSummary {
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallSummary> {
        Ok(CallSummary {
            id: r.get("id")?,
            room_sid: r.get("room_sid")?,
            room_name: r.get("room_name")?,
            workflow_id: r.get("workflow_id")?,
            workflow_slug: r.get("workflow_slug")?,
            call_slug: r.get("call_slug")?,
            phase: r.get("phase")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        })
    }
}

impl DeliverySummary {
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliverySummary> {
        Ok(DeliverySummary {
            id: r.get("id")?,
            webhook_id: r.get("webhook_id")?,
            call_id: r.get("call_id")?,
            event_type: r.get("event_type")?,
            workflow_id: r.get("workflow_id")?,
            status: r.get("status")?,
            attempts: r.get("attempts")?,
            next_attempt_at: r.get("next_attempt_at")?,
            created_at: r.get("created_at")?,
            delivered_at: r.get("delivered_at")?,
            last_error: r.get("last_error")?,
            payload: r.get("payload")?,
        })
    }
}

impl AttemptRecord {
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttemptRecord> {
        Ok(AttemptRecord {
            id: r.get("id")?,
            outbox_id: r.get("outbox_id")?,
            attempted_at: r.get("attempted_at")?,
            endpoint: r.get("endpoint")?,
            status_code: r.get("status_code")?,
            error: r.get("error")?,
            latency_ms: r.get("latency_ms")?,
            response_body: r.get("response_body")?,
        })
    }
}

impl InboundRecord {
    pub(crate) fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboundRecord> {
        Ok(InboundRecord {
            event_id: r.get("event_id")?,
            event_type: r.get("event_type")?,
            received_at: r.get("received_at")?,
        })
    }
}

const INBOUND: &str = "SELECT event_id, event_type, received_at FROM inbound_events
                       WHERE call_id = $1 ORDER BY received_at, event_id";
const ATTEMPTS: &str = "SELECT a.id, a.outbox_id, a.attempted_at, a.endpoint, a.status_code,
                               a.error, a.latency_ms, a.response_body
                        FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
                        WHERE o.call_id = $1 ORDER BY a.id";
const RETRY: &str =
    "UPDATE outbox SET status = 'pending', next_attempt_at = $1, delivered_at = NULL,
                                       claimed_by = NULL, claimed_until = NULL
                     WHERE id = $2 RETURNING workflow_id";
const REPLAY: &str = "UPDATE outbox SET status = 'pending', next_attempt_at = $1
                      WHERE status = 'failed' AND workflow_id = $2
                        AND created_at >= $3 AND created_at < $4";

/// A call's row with its state and runtime data, before they are parsed.
type CallRow = (CallSummary, String, Option<String>);

impl Store {
    /// The newest calls first, optionally only those in one phase.
    pub(crate) async fn list_calls(
        &self,
        phase: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CallSummary>, StoreError> {
        let sql = format!(
            "SELECT {CALL} FROM calls WHERE ($1 IS NULL OR phase = $1) ORDER BY id DESC LIMIT $2"
        );
        match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![phase.map(str::to_owned), limit];
                db.pool.all(&sql, args, CallSummary::from_sqlite).await
            }
            Backend::Postgres(db) => Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(phase)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?),
        }
    }

    pub(crate) async fn call_detail(&self, id: i64) -> Result<Option<CallDetail>, StoreError> {
        let sql = format!("SELECT {CALL}, state, runtime_data FROM calls WHERE id = $1");
        let deliveries_sql =
            format!("SELECT {DELIVERY} FROM outbox WHERE call_id = $1 ORDER BY seq");
        let found: Option<CallRow> = match self.backend() {
            Backend::Sqlite(db) => {
                db.pool
                    .first(&sql, args![id], |r| {
                        Ok((
                            CallSummary::from_sqlite(r)?,
                            r.get("state")?,
                            r.get("runtime_data")?,
                        ))
                    })
                    .await?
            }
            Backend::Postgres(db) => {
                use sqlx::{FromRow, Row};
                match sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&db.pool)
                    .await?
                {
                    None => None,
                    Some(row) => Some((
                        CallSummary::from_row(&row)?,
                        row.try_get("state")?,
                        row.try_get("runtime_data")?,
                    )),
                }
            }
        };
        let Some((call, state, runtime)) = found else {
            return Ok(None);
        };
        let (livekit_events, deliveries, attempts) = match self.backend() {
            Backend::Sqlite(db) => (
                db.pool
                    .all(INBOUND, args![id], InboundRecord::from_sqlite)
                    .await?,
                db.pool
                    .all(&deliveries_sql, args![id], DeliverySummary::from_sqlite)
                    .await?,
                db.pool
                    .all(ATTEMPTS, args![id], AttemptRecord::from_sqlite)
                    .await?,
            ),
            Backend::Postgres(db) => (
                sqlx::query_as(INBOUND).bind(id).fetch_all(&db.pool).await?,
                sqlx::query_as(sqlx::AssertSqlSafe(deliveries_sql))
                    .bind(id)
                    .fetch_all(&db.pool)
                    .await?,
                sqlx::query_as(ATTEMPTS)
                    .bind(id)
                    .fetch_all(&db.pool)
                    .await?,
            ),
        };
        Ok(Some(CallDetail {
            call,
            state: serde_json::from_str(&state)?,
            runtime_data: runtime.map(|r| serde_json::from_str(&r)).transpose()?,
            livekit_events,
            deliveries,
            attempts,
        }))
    }

    pub(crate) async fn list_deliveries(
        &self,
        status: Option<&str>,
        workflow_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY} FROM outbox
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR workflow_id = $2)
             ORDER BY id DESC LIMIT $3"
        );
        match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![status.map(str::to_owned), workflow_id, limit];
                db.pool.all(&sql, args, DeliverySummary::from_sqlite).await
            }
            Backend::Postgres(db) => Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(status)
                .bind(workflow_id)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?),
        }
    }

    /// Puts one delivery back in line to be sent now, whatever became of it; its
    /// workflow, or `None` when there is no such delivery.
    pub(crate) async fn retry_now(&self, id: i64) -> Result<Option<i64>, StoreError> {
        // A claim left by an instance that died is void too: the row goes now.
        let workflow: Option<i64> = match self.backend() {
            Backend::Sqlite(db) => {
                db.pool
                    .first(RETRY, args![now_ms(), id], |r| r.get(0))
                    .await?
            }
            Backend::Postgres(db) => {
                sqlx::query_scalar(RETRY)
                    .bind(now_ms())
                    .bind(id)
                    .fetch_optional(&db.pool)
                    .await?
            }
        };
        Ok(workflow)
    }

    /// Puts every failed delivery of a workflow created in `[since, until)` back in line.
    pub(crate) async fn replay_failed(
        &self,
        workflow_id: i64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![now_ms(), workflow_id, since_ms, until_ms];
                db.pool.execute(REPLAY, args).await
            }
            Backend::Postgres(db) => Ok(sqlx::query(REPLAY)
                .bind(now_ms())
                .bind(workflow_id)
                .bind(since_ms)
                .bind(until_ms)
                .execute(&db.pool)
                .await?
                .rows_affected()),
        }
    }
}
