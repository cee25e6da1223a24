//! The outbox: VoiceKit events waiting to be delivered, and the record of every attempt.

use sqlx::FromRow;

use super::{Store, StoreError, Tx, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// The retry schedule is exhausted: kept as a dead letter, never dropped.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// An event to enqueue in the same transaction as the call change that caused it.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub webhook_id: &'a str,
    pub call_id: i64,
    pub seq: i64,
    pub event_type: &'a str,
    pub workflow_id: i64,
    pub payload: &'a str,
    /// JSON of the recording to publish before the first attempt, if any.
    pub recording: Option<&'a str>,
}

#[derive(Debug, Clone, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub webhook_id: String,
    pub call_id: i64,
    pub seq: i64,
    pub event_type: String,
    pub workflow_id: i64,
    pub payload: String,
    pub recording: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

/// One try at delivering an outbox row.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outbox_id: i64,
    pub attempted_at: i64,
    pub endpoint: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

pub async fn enqueue(tx: &mut Tx, d: &NewDelivery<'_>) -> Result<(), StoreError> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload, recording,
                             next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(d.webhook_id)
    .bind(d.call_id)
    .bind(d.seq)
    .bind(d.event_type)
    .bind(d.workflow_id)
    .bind(d.payload)
    .bind(d.recording)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const ROW: &str =
    "id, webhook_id, call_id, seq, event_type, workflow_id, payload, recording, status,
                   attempts, next_attempt_at";

/// Event type of the synchronous `call_started_hook` request, queued beside the events.
pub const HOOK_EVENT: &str = "call_started_hook";

impl Store {
    /// Up to `limit` pending rows of one workflow that are due, oldest first, each only
    /// once every earlier event of its call is no longer pending: a call's events reach
    /// the customer in order, across retries. The `call_started_hook` (seq 0) waits for
    /// nothing and holds nothing up. `hooks_only` while the events endpoint is paused.
    ///
    /// One query per workflow walks the `(workflow_id, status, next_attempt_at)` index
    /// and stops after `limit` rows, so its cost follows what it returns, not the
    /// backlog.
    pub async fn due_for_workflow(
        &self,
        now: i64,
        workflow_id: i64,
        hooks_only: bool,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {ROW} FROM outbox o
             WHERE o.workflow_id = ? AND o.status = 'pending' AND o.next_attempt_at <= ?
               AND (? = 0 OR o.event_type = ?)
               AND NOT EXISTS (SELECT 1 FROM outbox e
                               WHERE e.call_id = o.call_id AND e.seq < o.seq AND e.seq > 0
                                 AND e.status = 'pending')
             ORDER BY o.next_attempt_at, o.id LIMIT ?"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(workflow_id)
            .bind(now)
            .bind(i64::from(hooks_only))
            .bind(HOOK_EVENT)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// When the next pending row of an unpaused workflow falls due after `now`.
    pub async fn next_due_after(
        &self,
        now: i64,
        paused_workflows: &[i64],
    ) -> Result<Option<i64>, StoreError> {
        let (at,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(next_attempt_at) FROM outbox
             WHERE status = 'pending' AND next_attempt_at > ?
               AND workflow_id NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(now)
        .bind(serde_json::to_string(paused_workflows)?)
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }

    /// Marks every pending event of these workflows failed (the endpoint said 410 Gone).
    pub async fn fail_pending(&self, workflow_ids: &[i64], error: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'failed', last_error = ?
             WHERE status = 'pending' AND event_type <> ?
               AND workflow_id IN (SELECT value FROM json_each(?))",
        )
        .bind(error)
        .bind(HOOK_EVENT)
        .bind(serde_json::to_string(workflow_ids)?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Freezes a body once its recording URL is known; retries then send these bytes.
    pub async fn set_payload(&self, id: i64, payload: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET payload = ?, recording = NULL WHERE id = ?")
            .bind(payload)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records attempts and moves each row on (delivered, retried at its time, or
    /// failed), all in one transaction: one fsync for a whole batch of finished deliveries.
    pub async fn finish_attempts(
        &self,
        attempts: &[(Attempt, AttemptOutcome)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for (attempt, outcome) in attempts {
            record_attempt(&mut tx, attempt, *outcome).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn record_attempt(
    tx: &mut Tx,
    attempt: &Attempt,
    outcome: AttemptOutcome,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO delivery_attempts (outbox_id, attempted_at, endpoint, status_code,
                                        error, latency_ms, response_body)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(attempt.outbox_id)
    .bind(attempt.attempted_at)
    .bind(&attempt.endpoint)
    .bind(attempt.status_code.map(i64::from))
    .bind(&attempt.error)
    .bind(attempt.latency_ms)
    .bind(&attempt.response_body)
    .execute(&mut **tx)
    .await?;
    let error = attempt.error.clone().or_else(|| {
        attempt
            .status_code
            .filter(|c| !(200..300).contains(c))
            .map(|c| format!("HTTP {c}"))
    });
    let (status, next, delivered_at) = match outcome {
        AttemptOutcome::Delivered => (DeliveryStatus::Delivered, 0, Some(now_ms())),
        AttemptOutcome::RetryAt(at) => (DeliveryStatus::Pending, at, None),
        AttemptOutcome::Dead => (DeliveryStatus::Failed, 0, None),
    };
    sqlx::query(
        "UPDATE outbox SET status = ?, attempts = attempts + 1,
             next_attempt_at = CASE WHEN ? = 'pending' THEN ? ELSE next_attempt_at END,
             delivered_at = ?, last_error = ?
         WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(status.as_str())
    .bind(next)
    .bind(delivered_at)
    .bind(error)
    .bind(attempt.outbox_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where an attempt leaves its outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    RetryAt(i64),
    Dead,
}
