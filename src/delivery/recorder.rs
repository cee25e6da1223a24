//! Group commit for delivery outcomes: every finished attempt is recorded, but many
//! in one transaction. With an fsync per commit, one transaction per delivery capped
//! the worker at about a hundred deliveries a second; batched, one fsync serves all
//! the deliveries that finished meanwhile. A delivery counts as done (and leaves the
//! in-flight set) only once its outcome is committed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Attempt, AttemptOutcome, Store, StoreError};

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

type Job = (
    Attempt,
    AttemptOutcome,
    oneshot::Sender<Result<(), Arc<StoreError>>>,
);

#[derive(Clone)]
pub struct Recorder {
    jobs: mpsc::Sender<Job>,
}

impl Recorder {
    /// Starts the task that commits outcomes; it ends when every `Recorder` is dropped.
    pub fn start(store: Store) -> Recorder {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, rx));
        Recorder { jobs }
    }

    /// Records one attempt and its outcome; returns once committed.
    pub async fn record(
        &self,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), RecordError> {
        let (done, committed) = oneshot::channel();
        self.jobs
            .send((attempt, outcome, done))
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
