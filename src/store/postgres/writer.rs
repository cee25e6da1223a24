//! The write path on PostgreSQL: event batches on the pool, a few in progress at once,
//! and delivery outcomes committed in groups by a task of their own. Neither takes a
//! lock the other waits for, so each keeps its own transactions.

use std::{sync::Arc, time::Instant};

use tokio::{
    sync::{Notify, mpsc},
    task::JoinSet,
};

use super::{PG_BEGIN, batch};
use crate::{
    config::SharedWorkflows,
    ingest::Accepted,
    store::{
        Attempt, AttemptOutcome, Backend, Store, StoreError,
        outbox::{SET_PAYLOAD, attempt_rows, record_attempts_sql},
        sql::Dialect,
        writer::{self, EventJob, MAX_BATCH, OutcomeJob, WriteError},
    },
};

/// Batches in progress at once, each on a connection of its own (and at most half the
/// pool's). One at a time, a webhook waited for the batch before its own to finish its
/// round trips and its commit. Batches are begun, and their advisory locks taken, in
/// the order they were taken from the queue, so a batch sharing a room or an event id
/// with an earlier one waits in PostgreSQL for that one's commit and then reads what it
/// wrote, as a batch of another bridge does.
pub(super) const BATCHES_IN_FLIGHT: usize = 4;

/// Deliveries whose request is over but whose outcome is still being committed, per
/// slot of `delivery.concurrency`. They hold no connection, so they do not count
/// against it; but each holds its row, so they are bounded. Counted as in flight, they
/// would cap delivery at `concurrency` / (request + commit).
pub(in crate::store) const OUTCOMES_WAITING_PER_SLOT: usize = 4;

/// The queues to the event writer and the outcome recorder.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    events: mpsc::Sender<EventJob>,
    outcomes: mpsc::Sender<OutcomeJob>,
    store: Store,
}

impl WriterHandle {
    pub(crate) async fn accept(&self, job: EventJob) -> Result<(), WriteError> {
        self.events.send(job).await.map_err(|_| WriteError::Stopped)
    }

    pub(crate) async fn record(&self, job: OutcomeJob) -> Result<(), WriteError> {
        self.outcomes
            .send(job)
            .await
            .map_err(|_| WriteError::Stopped)
    }

    /// A published body takes no lock ingest waits for: a transaction of its own.
    pub(crate) async fn publish(&self, outbox_id: i64, payload: &str) -> Result<(), WriteError> {
        let Backend::Postgres(db) = self.store.backend() else {
            unreachable!("the PostgreSQL writer runs on PostgreSQL")
        };
        sqlx::query(SET_PAYLOAD)
            .bind(payload)
            .bind(outbox_id)
            .execute(&db.pool)
            .await
            .map_err(|e| WriteError::Store(Arc::new(e.into())))?;
        Ok(())
    }
}

/// Starts the event writer and the outcome recorder; the task ends when both have.
pub(crate) fn start_writer(
    store: Store,
    workflows: SharedWorkflows,
    delivery: Arc<Notify>,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (events, events_rx) = mpsc::channel(4 * MAX_BATCH);
    let (outcomes, outcomes_rx) = mpsc::channel(4 * MAX_BATCH);
    let pool_size = match store.backend() {
        Backend::Postgres(db) => db.pool.options().get_max_connections() as usize,
        Backend::Sqlite(_) => unreachable!("the PostgreSQL writer runs on PostgreSQL"),
    };
    let depth = BATCHES_IN_FLIGHT.min(pool_size / 2).max(1);
    let writer = Arc::new(Writer {
        store: store.clone(),
        workflows,
        delivery,
    });
    let recorder = tokio::spawn(record(store.clone(), outcomes_rx));
    let task = tokio::spawn(async move {
        writer.run(events_rx, depth).await;
        let _ = recorder.await;
    });
    let handle = WriterHandle {
        events,
        outcomes,
        store,
    };
    (handle, task)
}

pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) workflows: SharedWorkflows,
    pub(super) delivery: Arc<Notify>,
}

impl Writer {
    /// Commits batches, up to `depth` in progress, until every handle is dropped.
    pub(super) async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<EventJob>, depth: usize) {
        let Backend::Postgres(db) = self.store.backend() else {
            unreachable!("the PostgreSQL writer runs on PostgreSQL")
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        let mut running = JoinSet::new();
        loop {
            if running.len() >= depth {
                running.join_next().await;
                continue;
            }
            let received = tokio::select! {
                // Cancel safe: nothing is taken from the queue unless this branch wins.
                n = rx.recv_many(&mut jobs, MAX_BATCH) => n,
                Some(_) = running.join_next(), if !running.is_empty() => continue,
            };
            if received == 0 {
                break;
            }
            fail::fail_point!("store-writer-batch");
            let (batch, replies) = writer::unzip(std::mem::take(&mut jobs));
            // Begun here, in queue order (see BATCHES_IN_FLIGHT); the rest runs beside
            // the next batches.
            let started = Instant::now();
            let tx = match batch::begin(&db.pool, &batch::lock_keys(&batch)).await {
                Ok(tx) => tx,
                Err(e) => {
                    writer::answer(replies, Err(Arc::new(e)));
                    continue;
                }
            };
            let writer = Arc::clone(&self);
            running.spawn(async move {
                let result: Result<Vec<Accepted>, StoreError> = async {
                    let mut tx = tx;
                    let results = batch::apply(&mut tx, &batch, &writer.workflows.load()).await?;
                    tx.commit().await?;
                    crate::metrics::store_commit(started.elapsed().as_secs_f64());
                    Ok(results)
                }
                .await;
                if writer::answer(replies, result.map_err(Arc::new)) {
                    writer.delivery.notify_one();
                }
            });
        }
        while running.join_next().await.is_some() {}
    }
}

/// Group commit for delivery outcomes: every finished attempt is recorded, but many in
/// one transaction, so one fsync serves all the deliveries that finished meanwhile.
async fn record(store: Store, mut rx: mpsc::Receiver<OutcomeJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (records, waiters): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|job: OutcomeJob| ((job.attempt, job.outcome), job.done))
            .unzip();
        let result = finish_attempts(&store, &records).await.map_err(Arc::new);
        for done in waiters {
            let _ = done.send(result.clone());
        }
    }
}

/// Records attempts and moves each row on (delivered, retried at its time, or
/// failed), all in one transaction. Each row's claim ends with its attempt.
async fn finish_attempts(
    store: &Store,
    attempts: &[(Attempt, AttemptOutcome)],
) -> Result<(), StoreError> {
    let Backend::Postgres(db) = store.backend() else {
        unreachable!("the PostgreSQL writer runs on PostgreSQL")
    };
    let rows = attempt_rows(attempts)?;
    let mut tx = db.pool.begin_with(PG_BEGIN).await?;
    for sql in record_attempts_sql(Dialect::Postgres) {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&rows)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests;
