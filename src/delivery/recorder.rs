//! Group commit for delivery outcomes: every finished attempt is recorded, but many
//! in one transaction. With an fsync per commit, one transaction per delivery capped
//! the worker at about a hundred deliveries a second; batched, one fsync serves all
//! the deliveries that finished meanwhile. A delivery counts as done (and leaves the
//! in-flight set) only once its outcome is committed.
//!
//! On a SQLite file the ingest writer commits them, in its own transactions
//! (`Ingestor::takes_outcomes`); elsewhere a task of the recorder's own does.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{
    ingest::{IngestError, Ingestor},
    store::{Attempt, AttemptOutcome, Store, StoreError},
};

/// The most outcomes committed in one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the attempt recorder has stopped")]
    Stopped,
}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> RecordError {
        RecordError::Store(Arc::new(e))
    }
}

impl From<IngestError> for RecordError {
    fn from(e: IngestError) -> RecordError {
        match e {
            IngestError::Store(e) => RecordError::Store(e),
            IngestError::Stopped => RecordError::Stopped,
        }
    }
}

type Job = (
    Attempt,
    AttemptOutcome,
    oneshot::Sender<Result<(), Arc<StoreError>>>,
);

#[derive(Clone)]
pub enum Recorder {
    /// The recorder's own task (and the store, for published bodies).
    Own(mpsc::Sender<Job>, Store),
    /// The ingest writer.
    Writer(Ingestor),
}

impl Recorder {
    /// Hands outcomes to `writer` if it takes them; otherwise starts the task that
    /// commits them, which ends when every `Recorder` is dropped.
    pub fn start(store: Store, writer: &Ingestor) -> Recorder {
        if writer.takes_outcomes() {
            return Recorder::Writer(writer.clone());
        }
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store.clone(), rx));
        Recorder::Own(jobs, store)
    }

    /// Stores a `call_finalized` body with its published recording URL; returns once
    /// committed. Where the ingest writer takes outcomes, it commits this too: a write
    /// of its own there would hold the SQLite file's one write lock, which the writer
    /// then waits for.
    pub async fn set_payload(&self, outbox_id: i64, payload: String) -> Result<(), RecordError> {
        match self {
            Recorder::Own(_, store) => Ok(store.set_payload(outbox_id, &payload).await?),
            Recorder::Writer(writer) => Ok(writer.set_payload(outbox_id, payload).await?),
        }
    }

    /// Records one attempt and its outcome; returns once committed.
    pub async fn record(
        &self,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), RecordError> {
        let jobs = match self {
            Recorder::Own(jobs, _) => jobs,
            Recorder::Writer(writer) => return Ok(writer.record(attempt, outcome).await?),
        };
        let (done, committed) = oneshot::channel();
        jobs.send((attempt, outcome, done))
            .await
            .map_err(|_| RecordError::Stopped)?;
        committed
            .await
            .map_err(|_| RecordError::Stopped)?
            .map_err(RecordError::Store)
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (records, waiters): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|(attempt, outcome, done)| ((attempt, outcome), done))
            .unzip();
        let result = store.finish_attempts(&records).await.map_err(Arc::new);
        for done in waiters {
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;
    use crate::store::test_sqlite_store;

    #[tokio::test]
    async fn on_a_sqlite_file_outcomes_go_to_the_ingest_writer() {
        let (store, _dir) = test_sqlite_store().await;
        let workflows = Arc::new(arc_swap::ArcSwap::from_pointee(vec![]));
        let (writer, handle) =
            Ingestor::start(store.clone(), workflows, Arc::new(Notify::new())).unwrap();
        let recorder = Recorder::start(store, &writer);
        assert!(
            matches!(recorder, Recorder::Writer(_)),
            "a second writer on the file would take the write lock in turns with ingest"
        );
        drop((recorder, writer));
        handle.await.unwrap();
    }
}
