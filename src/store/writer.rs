//! The store's write path: accepted LiveKit events, delivery outcomes and published
//! bodies, each committed in a group with whatever else is waiting (one fsync serves
//! many), and answered only once durable.
//!
//! How the groups are formed is the backend's business: on SQLite one thread holds the
//! file's one write lock and commits all three kinds together (`sqlite/writer.rs`); on
//! PostgreSQL several event batches are in progress at once and outcomes have
//! transactions of their own (`postgres/writer.rs`). Callers see one [`Writer`].

use std::sync::Arc;

use tokio::sync::{Notify, oneshot};

use super::{Attempt, AttemptOutcome, Backend, Store, StoreError, StoreHealth, postgres, sqlite};
use crate::{
    config::SharedWorkflows,
    ingest::{Accepted, Incoming},
};

/// The most events, or outcomes, committed in one transaction.
pub(super) const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the store's writer has stopped")]
    Stopped,
}

/// Where the answer to one write goes once it is durable (or failed).
pub(super) type Reply<T> = oneshot::Sender<Result<T, Arc<StoreError>>>;

/// An accepted event waiting for its batch.
pub(super) struct EventJob {
    pub incoming: Incoming,
    pub reply: Reply<Accepted>,
}

/// A finished delivery attempt waiting to be recorded.
pub(super) struct OutcomeJob {
    pub attempt: Attempt,
    pub outcome: AttemptOutcome,
    pub done: Reply<()>,
}

/// The handle everything that writes goes through. Cheap to clone; the backend's
/// writer stops once every handle is dropped and what was queued is committed.
#[derive(Clone)]
pub(crate) struct Writer {
    kind: Kind,
    /// Told of every write's outcome.
    health: Arc<StoreHealth>,
}

#[derive(Clone)]
enum Kind {
    Sqlite(sqlite::WriterHandle),
    Postgres(postgres::WriterHandle),
}

impl Store {
    /// Starts the write path. `delivery` is woken whenever new VoiceKit events are
    /// durable; `workflows` decide which rooms are calls. The task ends after the last
    /// [`Writer`] is dropped.
    pub(crate) fn start_writer(
        &self,
        workflows: SharedWorkflows,
        delivery: Arc<Notify>,
    ) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
        let (kind, task) = match self.backend() {
            Backend::Sqlite(db) => {
                let (handle, task) = sqlite::start_writer(db, workflows, delivery)?;
                (Kind::Sqlite(handle), task)
            }
            Backend::Postgres(_) => {
                let (handle, task) = postgres::start_writer(self.clone(), workflows, delivery);
                (Kind::Postgres(handle), task)
            }
        };
        Ok((
            Writer {
                kind,
                health: self.health.clone(),
            },
            task,
        ))
    }
}

impl Writer {
    /// Commits `incoming` and everything it causes; returns once that is durable.
    pub(crate) async fn accept(&self, incoming: Incoming) -> Result<Accepted, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = EventJob { incoming, reply };
        let done = async {
            match &self.kind {
                Kind::Sqlite(h) => h.accept(job).await?,
                Kind::Postgres(h) => h.accept(job).await?,
            }
            wait(answer).await
        };
        self.observed(done.await)
    }

    /// Tells the store's health how a write went.
    fn observed<T>(&self, result: Result<T, WriteError>) -> Result<T, WriteError> {
        match &result {
            Ok(_) => self.health.succeeded(),
            Err(_) => self.health.failed(),
        }
        result
    }

    /// Records a finished delivery attempt and moves its outbox row on; returns once
    /// that is durable.
    pub(crate) async fn record(
        &self,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), WriteError> {
        let (done, answer) = oneshot::channel();
        let job = OutcomeJob {
            attempt,
            outcome,
            done,
        };
        let recorded = async {
            match &self.kind {
                Kind::Sqlite(h) => h.record(job).await?,
                Kind::Postgres(h) => h.record(job).await?,
            }
            wait(answer).await
        };
        self.observed(recorded.await)
    }

    /// Freezes a `call_finalized` body once its recording URL is known, so that every
    /// retry sends these bytes; returns once that is durable.
    pub(crate) async fn publish(&self, outbox_id: i64, payload: String) -> Result<(), WriteError> {
        let published = async {
            match &self.kind {
                Kind::Sqlite(h) => {
                    let (done, answer) = oneshot::channel();
                    h.publish(outbox_id, payload, done).await?;
                    wait(answer).await
                }
                Kind::Postgres(h) => h.publish(outbox_id, &payload).await,
            }
        };
        self.observed(published.await)
    }

    /// How many deliveries per slot of `delivery.concurrency` may wait for their
    /// outcome's commit after their request ended, without holding the slot. Where
    /// outcomes have transactions of their own, a few, so the next request overlaps
    /// the commit; where they share the transactions webhooks wait for, none, so a
    /// drain of the outbox never crowds out ingest.
    pub(crate) fn outcomes_waiting_per_slot(&self) -> usize {
        match &self.kind {
            Kind::Sqlite(_) => 0,
            Kind::Postgres(_) => postgres::OUTCOMES_WAITING_PER_SLOT,
        }
    }
}

#[cfg(test)]
impl Writer {
    /// A SQLite store's writer whose WAL sync runs `sync` instead of the fsync.
    pub(crate) fn sqlite_with_sync(
        store: &Store,
        workflows: SharedWorkflows,
        sync: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> (Writer, std::thread::JoinHandle<()>) {
        let Backend::Sqlite(db) = store.backend() else {
            panic!("not a SQLite store")
        };
        let (handle, thread) = sqlite::start_with_sync(db, workflows, sync);
        (
            Writer {
                kind: Kind::Sqlite(handle),
                health: store.health.clone(),
            },
            thread,
        )
    }
}

/// The answer to a queued write.
async fn wait<T>(answer: oneshot::Receiver<Result<T, Arc<StoreError>>>) -> Result<T, WriteError> {
    answer
        .await
        .map_err(|_| WriteError::Stopped)?
        .map_err(WriteError::Store)
}

/// Answers every event of a batch; whether any of them queued VoiceKit events.
pub(super) fn answer(
    replies: Vec<Reply<Accepted>>,
    result: Result<Vec<Accepted>, Arc<StoreError>>,
) -> bool {
    match result {
        Ok(results) => {
            let emitted = results
                .iter()
                .any(|r| matches!(r, Accepted::Applied { emitted, .. } if !emitted.is_empty()));
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
            emitted
        }
        Err(e) => {
            tracing::error!(error = %e, events = replies.len(), "could not commit webhook events; LiveKit will retry");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            false
        }
    }
}

/// Splits a batch of event jobs into the events and where their answers go.
pub(super) fn unzip(jobs: Vec<EventJob>) -> (Vec<Incoming>, Vec<Reply<Accepted>>) {
    jobs.into_iter().map(|j| (j.incoming, j.reply)).unzip()
}
