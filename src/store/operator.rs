//! What an operator asks of the store: calls, their events and attempts, failed
//! deliveries, and putting deliveries back in line (retry one, replay many).

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreError, now_ms, sql::on_pool};

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct CallSummary {
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
pub struct DeliverySummary {
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
pub struct AttemptRecord {
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
pub struct InboundRecord {
    pub event_id: String,
    pub event_type: String,
    pub received_at: i64,
}

/// Everything known about one call.
#[derive(Debug, Clone, Serialize)]
pub struct CallDetail {
    pub call: CallSummary,
    pub state: serde_json::Value,
    pub runtime_data: Option<serde_json::Value>,
    pub livekit_events: Vec<InboundRecord>,
    pub deliveries: Vec<DeliverySummary>,
    pub attempts: Vec<AttemptRecord>,
}

const CALL: &str = "id, room_sid, room_name, workflow_id, workflow_slug, call_slug, phase, \
                    created_at, updated_at";
const DELIVERY: &str = "id, webhook_id, call_id, event_type, workflow_id, status, attempts, \
                        next_attempt_at, created_at, delivered_at, last_error, payload";

impl Store {
    /// The newest calls first, optionally only those in one phase.
    pub async fn list_calls(
        &self,
        phase: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CallSummary>, StoreError> {
        let sql = format!(
            "SELECT {CALL} FROM calls WHERE ($1 IS NULL OR phase = $1) ORDER BY id DESC LIMIT $2"
        );
        Ok(on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(phase)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }

    pub async fn call_detail(&self, id: i64) -> Result<Option<CallDetail>, StoreError> {
        use sqlx::Row;
        let sql = format!("SELECT {CALL}, state, runtime_data FROM calls WHERE id = $1");
        let deliveries_sql =
            format!("SELECT {DELIVERY} FROM outbox WHERE call_id = $1 ORDER BY seq");
        let found = on_pool!(self, p => {
            match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await? {
                None => None,
                Some(row) => {
                    let call = CallSummary::from_row(&row)?;
                    let state: String = row.try_get("state")?;
                    let runtime: Option<String> = row.try_get("runtime_data")?;
                    let livekit_events: Vec<InboundRecord> = sqlx::query_as(
                        "SELECT event_id, event_type, received_at FROM inbound_events
                         WHERE call_id = $1 ORDER BY received_at, event_id",
                    )
                    .bind(id)
                    .fetch_all(p)
                    .await?;
                    let deliveries: Vec<DeliverySummary> =
                        sqlx::query_as(sqlx::AssertSqlSafe(deliveries_sql))
                            .bind(id)
                            .fetch_all(p)
                            .await?;
                    let attempts: Vec<AttemptRecord> = sqlx::query_as(
                        "SELECT a.id, a.outbox_id, a.attempted_at, a.endpoint, a.status_code,
                                a.error, a.latency_ms, a.response_body
                         FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
                         WHERE o.call_id = $1 ORDER BY a.id",
                    )
                    .bind(id)
                    .fetch_all(p)
                    .await?;
                    Some((call, state, runtime, livekit_events, deliveries, attempts))
                }
            }
        });
        let Some((call, state, runtime, livekit_events, deliveries, attempts)) = found else {
            return Ok(None);
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

    pub async fn list_deliveries(
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
        Ok(on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(status)
            .bind(workflow_id)
            .bind(limit)
            .fetch_all(p)
            .await?))
    }

    /// Puts one delivery back in line to be sent now, whatever became of it; its
    /// workflow, or `None` when there is no such delivery.
    pub async fn retry_now(&self, id: i64) -> Result<Option<i64>, StoreError> {
        // A claim left by an instance that died is void too: the row goes now.
        let workflow: Option<(i64,)> = on_pool!(self, p => sqlx::query_as(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $1, delivered_at = NULL,
                               claimed_by = NULL, claimed_until = NULL
             WHERE id = $2 RETURNING workflow_id",
        )
        .bind(now_ms())
        .bind(id)
        .fetch_optional(p)
        .await?);
        Ok(workflow.map(|(w,)| w))
    }

    /// Puts every failed delivery of a workflow created in `[since, until)` back in line.
    pub async fn replay_failed(
        &self,
        workflow_id: i64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = on_pool!(self, p => sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $1
             WHERE status = 'failed' AND workflow_id = $2 AND created_at >= $3 AND created_at < $4",
        )
        .bind(now_ms())
        .bind(workflow_id)
        .bind(since_ms)
        .bind(until_ms)
        .execute(p)
        .await?
        .rows_affected());
        Ok(done)
    }
}
