//! SQLite's one writer: a thread with a connection of its own that commits whatever has
//! queued in one transaction (group commit), and a second thread that fsyncs each
//! commit's WAL and only then answers its requests, while the writer goes on with the
//! next batch (see `wal_sync.rs`).
//!
//! The writer also commits the delivery worker's outcomes and published bodies, in the
//! same transactions: one file has one write lock, and two writers, each with an fsync
//! per commit, took it in turns and halved ingest while deliveries were recorded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use tokio::sync::{Notify, mpsc};

use super::{
    Db,
    connection::IngestConnection,
    wal_sync::{SyncHorizon, WalSync},
};
use crate::{
    config::SharedWorkflows,
    ingest::{Accepted, Incoming},
    store::{
        Attempt, AttemptOutcome, StoreError,
        writer::{self, EventJob, MAX_BATCH, OutcomeJob, Reply, WriteError},
    },
};

/// A WAL this long (16 MiB of pages) means the checkpoint task is not keeping up: the
/// writer checkpoints itself (see [`Writer::run`]).
const WAL_RESTART_FRAMES: i64 = 4096;

/// What the writer commits.
#[allow(
    clippy::large_enum_variant,
    reason = "events are nearly every job: boxing them would cost an allocation each"
)]
pub(super) enum Job {
    Event(EventJob),
    Outcome(OutcomeJob),
    /// A published body to store before its first send.
    Payload {
        outbox_id: i64,
        payload: String,
        done: Reply<()>,
    },
}

/// The queue to the writer thread.
#[derive(Clone)]
pub(crate) struct WriterHandle(mpsc::Sender<Job>);

impl WriterHandle {
    pub(crate) async fn accept(&self, job: EventJob) -> Result<(), WriteError> {
        self.send(Job::Event(job)).await
    }

    pub(crate) async fn record(&self, job: OutcomeJob) -> Result<(), WriteError> {
        self.send(Job::Outcome(job)).await
    }

    pub(crate) async fn publish(
        &self,
        outbox_id: i64,
        payload: String,
        done: Reply<()>,
    ) -> Result<(), WriteError> {
        let job = Job::Payload {
            outbox_id,
            payload,
            done,
        };
        self.send(job).await
    }

    async fn send(&self, job: Job) -> Result<(), WriteError> {
        self.0.send(job).await.map_err(|_| WriteError::Stopped)
    }
}

/// Opens the writer's connection and starts its thread and its WAL sync thread.
pub(crate) fn start_writer(
    db: &Db,
    workflows: SharedWorkflows,
    delivery: Arc<Notify>,
) -> Result<(WriterHandle, tokio::task::JoinHandle<()>), StoreError> {
    let conn = IngestConnection::open(&db.file)?;
    let sync = conn.wal_sync()?;
    let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
    let writer = Writer {
        workflows,
        delivery,
        horizon: db.horizon.clone(),
        wal_restart_frames: WAL_RESTART_FRAMES,
    };
    // Its statements block on the disk: a thread of its own, not a runtime worker.
    let task = tokio::task::spawn_blocking(move || writer.run(conn, rx, sync));
    Ok((WriterHandle(jobs), task))
}

/// [`start_writer`] with `sync` in place of the WAL's fsync, on a plain thread.
#[cfg(test)]
pub(crate) fn start_with_sync(
    db: &Db,
    workflows: SharedWorkflows,
    sync: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let conn = IngestConnection::open(&db.file).unwrap();
    let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
    let writer = Writer {
        workflows,
        delivery: Arc::new(Notify::new()),
        horizon: db.horizon.clone(),
        wal_restart_frames: WAL_RESTART_FRAMES,
    };
    let thread = std::thread::spawn(move || writer.run(conn, rx, WalSync::with(sync)));
    (WriterHandle(jobs), thread)
}

pub(super) struct Writer {
    pub(super) workflows: SharedWorkflows,
    pub(super) delivery: Arc<Notify>,
    pub(super) horizon: SyncHorizon,
    /// [`WAL_RESTART_FRAMES`], but for tests.
    pub(super) wal_restart_frames: i64,
}

impl Writer {
    /// Commits batches until every handle is dropped.
    ///
    /// When a commit leaves the WAL longer than [`WAL_RESTART_FRAMES`], it checkpoints
    /// too, before the next batch. SQLite starts the WAL over only at a write that finds
    /// every frame copied back, and while batches follow each other the checkpoint task
    /// never gets there: the WAL would grow for as long as a burst lasts, and appending
    /// to an ever longer file makes each commit dearer. Here no write is in progress, so
    /// the checkpoint copies the last frames (most are copied by the task already) and
    /// the next batch writes from the WAL's start. Below a burst's rates the task keeps
    /// the WAL short by itself and the writer never waits for a checkpoint.
    pub(super) fn run(
        self,
        mut conn: IngestConnection,
        mut rx: mpsc::Receiver<Job>,
        sync: WalSync,
    ) {
        let failed = Arc::new(AtomicBool::new(false));
        let (committed, to_sync) = std::sync::mpsc::channel();
        let syncer = {
            let (horizon, failed, delivery) =
                (self.horizon.clone(), failed.clone(), self.delivery.clone());
            std::thread::Builder::new()
                .name("vkb-wal-sync".into())
                .spawn(move || sync_and_answer(&to_sync, &sync, &horizon, &failed, &delivery))
                .expect("spawning the WAL sync thread")
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            fail::fail_point!("store-writer-batch");
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let (events, writes) = split(&mut jobs);
            let (batch, replies) = writer::unzip(events);
            // After a failed fsync the page cache may have dropped writes SQLite counts
            // as made: nothing more is written until a restart lets SQLite recover.
            let result = if failed.load(Ordering::Acquire) {
                Err(StoreError::WalSyncFailed)
            } else {
                self.commit(&mut conn, &batch, &writes)
            };
            let _ = committed.send(Committed {
                replies,
                writes,
                result: result.map_err(Arc::new),
            });
            if conn.wal_frames() > self.wal_restart_frames
                && let Err(e) = conn.checkpoint()
            {
                tracing::warn!(error = %e, "WAL checkpoint by the ingest writer failed; will try again");
            }
        }
        drop(committed);
        syncer.join().expect("the WAL sync thread panicked");
    }

    /// Applies a batch of events and delivery writes in one transaction and commits it
    /// (not yet synced).
    pub(super) fn commit(
        &self,
        conn: &mut IngestConnection,
        batch: &[Incoming],
        writes: &DeliveryWrites,
    ) -> Result<Vec<Accepted>, StoreError> {
        let started = Instant::now();
        let mut tx = conn.begin()?;
        let results = if batch.is_empty() {
            Vec::new()
        } else {
            tx.apply(batch, &self.workflows.load())?
        };
        tx.set_payloads(&writes.payloads)?;
        tx.record_attempts(&writes.records)?;
        // Others see the rows from the commit on; delivery must not until they are synced.
        self.horizon.committing(tx.first_outbox_id());
        if let Err(e) = tx.commit() {
            self.horizon.withdraw();
            return Err(e);
        }
        crate::metrics::store_commit(started.elapsed().as_secs_f64());
        Ok(results)
    }
}

/// A batch the writer committed (or failed to), on its way to the WAL sync.
struct Committed {
    replies: Vec<Reply<Accepted>>,
    writes: DeliveryWrites,
    result: Result<Vec<Accepted>, Arc<StoreError>>,
}

/// The WAL sync thread: syncs once for every batch committed since its last sync, then
/// answers them in order, lets delivery read their rows, and wakes it.
fn sync_and_answer(
    committed: &std::sync::mpsc::Receiver<Committed>,
    sync: &WalSync,
    horizon: &SyncHorizon,
    failed: &AtomicBool,
    delivery: &Notify,
) {
    while let Ok(first) = committed.recv() {
        let done: Vec<Committed> = std::iter::once(first).chain(committed.try_iter()).collect();
        // A failed commit holds no place in the horizon (`Writer::commit` let it go).
        let held = done.iter().filter(|c| c.result.is_ok()).count();
        let synced = if held == 0 {
            Ok(())
        } else {
            let started = Instant::now();
            let synced = sync.sync();
            crate::metrics::wal_sync(started.elapsed().as_secs_f64());
            synced
        };
        let synced = match synced {
            Ok(()) => {
                horizon.synced(held);
                Ok(())
            }
            Err(e) => {
                // Its rows stay held back from delivery: they may not be on disk.
                failed.store(true, Ordering::Release);
                let e = Arc::new(StoreError::WalSync(e));
                tracing::error!(error = %e, "the ingest writer stops: restart the bridge so SQLite recovers its WAL");
                Err(e)
            }
        };
        let mut wake = false;
        for Committed {
            replies,
            writes,
            result,
        } in done
        {
            let result = match (&synced, result) {
                (Ok(()), result) => result,
                (Err(e), Ok(_)) => Err(e.clone()),
                (Err(_), Err(e)) => Err(e),
            };
            writes.answer(result.as_ref().map(|_| ()).map_err(Arc::clone));
            wake |= writer::answer(replies, result);
        }
        if wake {
            delivery.notify_one();
        }
    }
}

/// A batch's delivery writes (outcomes and published bodies), and who waits for each
/// to be durable.
#[derive(Default)]
pub(super) struct DeliveryWrites {
    pub(super) records: Vec<(Attempt, AttemptOutcome)>,
    pub(super) payloads: Vec<(i64, String)>,
    waiting: Vec<Reply<()>>,
}

impl DeliveryWrites {
    fn answer(self, result: Result<(), Arc<StoreError>>) {
        if let Err(e) = &result {
            tracing::error!(error = %e, outcomes = self.waiting.len(), "could not record delivery outcomes or published bodies; those deliveries will be sent again");
        }
        for done in self.waiting {
            let _ = done.send(result.clone());
        }
    }
}

/// Sorts a batch's jobs into events and delivery writes, each in arrival order.
fn split(jobs: &mut Vec<Job>) -> (Vec<EventJob>, DeliveryWrites) {
    let mut events = Vec::with_capacity(jobs.len());
    let mut writes = DeliveryWrites::default();
    for job in jobs.drain(..) {
        match job {
            Job::Event(job) => events.push(job),
            Job::Outcome(o) => {
                writes.records.push((o.attempt, o.outcome));
                writes.waiting.push(o.done);
            }
            Job::Payload {
                outbox_id,
                payload,
                done,
            } => {
                writes.payloads.push((outbox_id, payload));
                writes.waiting.push(done);
            }
        }
    }
    (events, writes)
}

#[cfg(test)]
mod tests;
