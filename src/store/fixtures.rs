//! Rows for the store's own tests to start from, written with plain SQL on either
//! backend. (What ingest writes is tested through the writer itself.)

use super::{Store, sql::on_pool};

/// Inserts a call of `workflow_id` for `room`; its id.
pub(crate) async fn insert_call(store: &Store, room: &str, workflow_id: i64) -> i64 {
    let (id,): (i64,) = on_pool!(store, p => sqlx::query_as(
        "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug, phase,
                            state, created_at, updated_at)
         VALUES ($1, 'room', $2, 'wf', $1, 'waiting', '{}', 1, 1) RETURNING id")
        .bind(room)
        .bind(workflow_id)
        .fetch_one(p)
        .await
        .unwrap());
    id
}

/// Queues a pending delivery of `event_type` at `seq` for a call; its outbox id.
pub(crate) async fn insert_delivery(
    store: &Store,
    call_id: i64,
    seq: i64,
    event_type: &str,
    workflow_id: i64,
) -> i64 {
    let (id,): (i64,) = on_pool!(store, p => sqlx::query_as(
        "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                             next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, '{}', 0, 0) RETURNING id")
        .bind(format!("msg_{call_id}_{seq}"))
        .bind(call_id)
        .bind(seq)
        .bind(event_type)
        .bind(workflow_id)
        .fetch_one(p)
        .await
        .unwrap());
    id
}
