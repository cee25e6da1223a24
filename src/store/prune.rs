//! Keeping the store small: what is settled and older than the retention is deleted,
//! a batch at a time so ingest never waits long behind it. Pending deliveries are never
//! deleted, however old: nothing accepted is lost to housekeeping.

use super::{Backend, Store, StoreError, sqlite::args};

/// How many rows of each kind one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pruned {
    pub attempts: u64,
    pub deliveries: u64,
    pub calls: u64,
    pub inbound_events: u64,
}

/// Each statement deletes at most `batch` rows; it repeats until nothing is left.
const STATEMENTS: [&str; 4] = [
    "DELETE FROM delivery_attempts WHERE id IN (
         SELECT a.id FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
         WHERE o.status <> 'pending' AND o.created_at < $1 LIMIT $2)",
    "DELETE FROM outbox WHERE id IN (
         SELECT o.id FROM outbox o
         WHERE o.status <> 'pending' AND o.created_at < $1
           AND NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.outbox_id = o.id)
         LIMIT $2)",
    "DELETE FROM calls WHERE id IN (
         SELECT c.id FROM calls c
         WHERE c.updated_at < $1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.call_id = c.id)
         LIMIT $2)",
    "DELETE FROM inbound_events WHERE event_id IN (
         SELECT event_id FROM inbound_events WHERE received_at < $1 LIMIT $2)",
];

impl Store {
    /// Deletes what settled before `cutoff_ms`, `batch` rows per statement.
    pub(crate) async fn prune(&self, cutoff_ms: i64, batch: i64) -> Result<Pruned, StoreError> {
        let mut counts = [0u64; 4];
        for (sql, count) in STATEMENTS.iter().zip(counts.iter_mut()) {
            loop {
                let done = match self.backend() {
                    Backend::Sqlite(db) => db.pool.execute(sql, args![cutoff_ms, batch]).await?,
                    Backend::Postgres(db) => sqlx::query(*sql)
                        .bind(cutoff_ms)
                        .bind(batch)
                        .execute(&db.pool)
                        .await?
                        .rows_affected(),
                };
                *count += done;
                if done < batch as u64 {
                    break;
                }
                // Let ingest's writer in between batches.
                tokio::task::yield_now().await;
            }
        }
        let [attempts, deliveries, calls, inbound_events] = counts;
        Ok(Pruned {
            attempts,
            deliveries,
            calls,
            inbound_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        fixtures::{execute, row},
        now_ms,
    };

    async fn count(store: &Store, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let (n,): (i64,) = row(store, &sql, &[]).await;
        n
    }

    /// A call with one delivery (delivered or still pending) and one attempt, all
    /// dated `age_ms` ago.
    async fn call_with_delivery(store: &Store, room: &str, delivered: bool, age_ms: i64) {
        let then = now_ms() - age_ms;
        let status = if delivered { "delivered" } else { "pending" };
        let (call,): (i64,) = row(
            store,
            "INSERT INTO calls (room_sid, room_name, workflow_id, workflow_slug, call_slug,
                                phase, state, created_at, updated_at)
             VALUES ($1, $1, 1, 'w', 's', 'finalized', '{}', $2, $2) RETURNING id",
            &[room.into(), then.into()],
        )
        .await;
        execute(
            store,
            "INSERT INTO inbound_events (event_id, event_type, room_sid, call_id, received_at)
             VALUES ($1, 'room_finished', $2, $3, $4)",
            &[
                format!("EV_{room}").into(),
                room.into(),
                call.into(),
                then.into(),
            ],
        )
        .await;
        let (outbox,): (i64,) = row(
            store,
            "INSERT INTO outbox (webhook_id, call_id, seq, event_type, workflow_id, payload,
                                 status, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, 1, 'call_started', 1, '{}', $3, 1, $4, $4) RETURNING id",
            &[
                format!("msg_{room}").into(),
                call.into(),
                status.into(),
                then.into(),
            ],
        )
        .await;
        execute(
            store,
            "INSERT INTO delivery_attempts (outbox_id, attempted_at, endpoint, status_code,
                                            latency_ms)
             VALUES ($1, $2, 'http://127.0.0.1:9/', 200, 1)",
            &[outbox.into(), then.into()],
        )
        .await;
    }

    #[tokio::test]
    async fn old_settled_rows_go_in_batches_and_pending_ones_stay() {
        let (stores, _dir) = crate::store::test_stores().await;
        for store in &stores {
            old_settled_rows_go(store).await;
        }
    }

    async fn old_settled_rows_go(store: &Store) {
        const DAY: i64 = 86_400_000;
        for n in 0..5 {
            call_with_delivery(store, &format!("RM_old{n}"), true, 40 * DAY).await;
        }
        call_with_delivery(store, "RM_old_pending", false, 40 * DAY).await;
        call_with_delivery(store, "RM_recent", true, DAY).await;

        let pruned = store.prune(now_ms() - 30 * DAY, 2).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                attempts: 5,
                deliveries: 5,
                calls: 5,
                inbound_events: 6,
            }
        );
        // The old pending delivery keeps its call and attempts; the recent call is whole.
        assert_eq!(count(store, "outbox").await, 2);
        assert_eq!(count(store, "calls").await, 2);
        assert_eq!(count(store, "delivery_attempts").await, 2);
        assert_eq!(count(store, "inbound_events").await, 1);
        assert_eq!(
            store.prune(now_ms() - 30 * DAY, 2).await.unwrap(),
            Pruned::default()
        );
    }
}
