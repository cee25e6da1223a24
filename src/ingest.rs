//! Accepting a verified LiveKit event: drop duplicates, find or create the call, run
//! the state machine, and commit the result with its outgoing events.
//!
//! One writer owns the write path. Requests queue to it and it commits whatever has
//! queued in one transaction (group commit): one fsync serves many webhooks, and each
//! request is answered only after the transaction holding its event committed. On a
//! SQLite file the writer is a thread with a connection of its own
//! (`store::IngestConnection`), and a second thread fsyncs each commit and only then
//! answers its requests, while the writer goes on with the next batch (see
//! `store::WalSync`); on PostgreSQL the writer is a task on the pool, with a few
//! batches in progress at once (see [`PG_BATCHES_IN_FLIGHT`]).
//!
//! On a SQLite file the writer also commits the delivery worker's outcomes and published
//! bodies, in the same transactions: one file has one write lock, and two writers each
//! with an fsync per commit took it in turns (see [`Ingestor::takes_outcomes`]).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use rand::{Rng, distr::Alphanumeric};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    task::JoinSet,
};

use crate::{
    call::{CallState, EventKind, machine, workflow},
    config::{SharedWorkflows, Workflow},
    livekit::event::WebhookEvent,
    store::{
        self, Attempt, AttemptOutcome, IngestBatch, IngestConnection, NewDelivery, Store,
        StoreError, SyncHorizon, WalSync,
    },
};

/// The most events committed in one transaction.
const MAX_BATCH: usize = 512;

/// Batches the PostgreSQL writer has in progress at once, each on a connection of its
/// own (and at most half the pool's). One at a time, a webhook waited for the batch
/// before its own to finish its round trips and its commit: at 500 webhooks/s that
/// wait was about half its time to the 200. Batches are begun, and their advisory
/// locks taken, in the order they were taken from the queue, so a batch sharing a room
/// or an event id with an earlier one waits in PostgreSQL for that one's commit and
/// then reads what it wrote, as a batch of another bridge does.
const PG_BATCHES_IN_FLIGHT: usize = 4;

/// A WAL this long (16 MiB of pages) means the checkpoint task is not keeping up: the
/// SQLite writer checkpoints itself (see `run_on`).
const WAL_RESTART_FRAMES: i64 = 4096;

/// What became of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Applied to a call: the VoiceKit events it queued, in order, and the call itself
    /// when the event's room became one.
    Applied {
        call_id: i64,
        emitted: Vec<EventKind>,
        new_call: Option<Box<CreatedCall>>,
    },
    /// This LiveKit event id was accepted before: nothing happens again.
    Duplicate,
    /// Stored as seen, but it concerns no call.
    Ignored(&'static str),
}

/// A call an event created, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCall {
    pub room_name: String,
    pub room_sid: String,
    pub workflow: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Store(Arc<StoreError>),
    #[error("the ingest writer has stopped")]
    Stopped,
}

struct Command {
    event: WebhookEvent,
    dedupe_key: String,
    reply: oneshot::Sender<Result<Accepted, Arc<StoreError>>>,
}

/// A finished delivery attempt to record.
struct Outcome {
    attempt: Attempt,
    outcome: AttemptOutcome,
    done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

/// A published `call_finalized` body to store before its first send, so that a
/// retry sends the same bytes.
struct Payload {
    outbox_id: i64,
    payload: String,
    done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

/// What the writer commits.
#[allow(
    clippy::large_enum_variant,
    reason = "events are nearly every job, and the channel carried them unboxed before"
)]
enum Job {
    Event(Command),
    Outcome(Outcome),
    Payload(Payload),
}

/// The handle request handlers submit events through.
#[derive(Clone)]
pub struct Ingestor {
    jobs: mpsc::Sender<Job>,
    takes_outcomes: bool,
}

impl Ingestor {
    /// Starts the writer. `delivery` is woken whenever new events are queued.
    pub fn start(
        store: Store,
        workflows: SharedWorkflows,
        delivery: Arc<Notify>,
    ) -> Result<(Ingestor, tokio::task::JoinHandle<()>), StoreError> {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let own = store.ingest_connection()?;
        let takes_outcomes = own.is_some();
        let writer = Writer {
            store,
            workflows,
            delivery,
            wal_restart_frames: WAL_RESTART_FRAMES,
        };
        let handle = match own {
            // Its statements block on the disk: a thread of its own, not a runtime worker.
            Some(conn) => {
                let sync = conn.wal_sync()?;
                tokio::task::spawn_blocking(move || writer.run_on(conn, rx, sync))
            }
            None => {
                // SQLite through the pool (no file) has one write lock: one batch at a time.
                let depth = if writer.store.is_shared() {
                    PG_BATCHES_IN_FLIGHT.min(writer.store.pool_size() as usize / 2)
                } else {
                    1
                };
                tokio::spawn(Arc::new(writer).run(rx, depth.max(1)))
            }
        };
        Ok((
            Ingestor {
                jobs,
                takes_outcomes,
            },
            handle,
        ))
    }

    /// Whether delivery outcomes should be recorded through [`Ingestor::record`]: on a
    /// SQLite file, where the writer holds the one write lock. Measured with a
    /// recorder of its own beside it, the two transactions' fsyncs alternated:
    /// ingest ran at half its rate while deliveries were recorded. On PostgreSQL the
    /// recorder keeps its own transactions, which take no lock ingest waits for.
    pub fn takes_outcomes(&self) -> bool {
        self.takes_outcomes
    }

    /// Records a finished delivery attempt in the writer's next transaction; returns
    /// once that is durable.
    pub async fn record(
        &self,
        attempt: Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), IngestError> {
        self.write_for_delivery(|done| {
            Job::Outcome(Outcome {
                attempt,
                outcome,
                done,
            })
        })
        .await
    }

    /// Stores a published body in the writer's next transaction; returns once that is
    /// durable. Through the pool this was a transaction of its own, and on a SQLite
    /// file it held the one write lock: measured on the ingest bench, the writer's
    /// `BEGIN IMMEDIATE` waited for it hundreds of times a second during a burst.
    pub async fn set_payload(&self, outbox_id: i64, payload: String) -> Result<(), IngestError> {
        self.write_for_delivery(|done| {
            Job::Payload(Payload {
                outbox_id,
                payload,
                done,
            })
        })
        .await
    }

    /// Queues one of delivery's writes, made by `job` around the sender that answers
    /// it, and waits until it is durable.
    async fn write_for_delivery(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<(), Arc<StoreError>>>) -> Job,
    ) -> Result<(), IngestError> {
        let (done, committed) = oneshot::channel();
        self.ask(job(done), committed).await
    }

    /// Commits `event` and everything it causes; returns once that is durable.
    pub async fn submit(
        &self,
        event: WebhookEvent,
        dedupe_key: String,
    ) -> Result<Accepted, IngestError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Event(Command {
            event,
            dedupe_key,
            reply,
        });
        let accepted = self.ask(job, answer).await?;
        // Logged here, once durable, by the task that asked, rather than on the
        // writer's thread, the one serial step of ingest: formatting and writing these
        // lines was 5% of its instructions, and a slow log reader would stall it.
        if let Accepted::Applied {
            call_id,
            emitted,
            new_call,
        } = &accepted
        {
            if let Some(call) = new_call {
                tracing::info!(
                    call_id,
                    room = call.room_name,
                    room_sid = call.room_sid,
                    workflow = call.workflow,
                    "new call"
                );
            }
            for kind in emitted {
                tracing::info!(call_id, event = kind.as_str(), "queued VoiceKit event");
            }
        }
        Ok(accepted)
    }

    /// Queues `job` for the writer and waits for the answer it carries.
    async fn ask<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, Arc<StoreError>>>,
    ) -> Result<T, IngestError> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| IngestError::Stopped)?;
        answer
            .await
            .map_err(|_| IngestError::Stopped)?
            .map_err(IngestError::Store)
    }
}

struct Writer {
    store: Store,
    workflows: SharedWorkflows,
    delivery: Arc<Notify>,
    /// [`WAL_RESTART_FRAMES`], but for tests.
    wal_restart_frames: i64,
}

impl Writer {
    /// The writer on the store's pool (PostgreSQL), with up to `depth` batches in
    /// progress.
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Job>, depth: usize) {
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
            let mut batch = Vec::with_capacity(jobs.len());
            let writes = split(&mut jobs, &mut batch);
            if !writes.is_empty() {
                // Not sent here (`takes_outcomes` is false), but recorded if they are.
                let result = self
                    .store
                    .finish_delivery_writes(&writes.payloads, &writes.records)
                    .await;
                writes.answer(result);
            }
            if batch.is_empty() {
                continue;
            }
            // Begun here, in queue order (see PG_BATCHES_IN_FLIGHT); the rest runs
            // beside the next batches.
            let started = Instant::now();
            let tx = match self.store.begin_ingest(&lock_keys(&batch)).await {
                Ok(tx) => tx,
                Err(e) => {
                    answer(&mut batch, Err::<Vec<Accepted>, _>(e));
                    continue;
                }
            };
            let writer = Arc::clone(&self);
            running.spawn(async move {
                let result = writer.finish(tx, &batch, started).await;
                if answer(&mut batch, result) {
                    writer.delivery.notify_one();
                }
            });
        }
        while running.join_next().await.is_some() {}
    }

    /// The writer on its own SQLite connection, on a thread of its own.
    ///
    /// When a commit leaves the WAL longer than [`WAL_RESTART_FRAMES`], it checkpoints
    /// too, before the next batch. SQLite starts the WAL over only at a write that finds
    /// every frame copied back, and while batches follow each other the checkpoint task
    /// never gets there: measured, the WAL grew to 1.1 GB in a 10 s burst, and appending
    /// to an ever longer file made each commit dearer. Here no write is in progress, so
    /// the checkpoint copies the last frames (most are copied by the task already) and
    /// the next batch writes from the WAL's start: ingest went from 14,800 to 17,900
    /// webhooks/s on the bench machine. Below a burst's rates the task keeps the WAL
    /// short by itself and the writer never waits for a checkpoint.
    fn run_on(self, mut conn: IngestConnection, mut rx: mpsc::Receiver<Job>, sync: WalSync) {
        let horizon = self.store.sync_horizon().clone();
        let failed = Arc::new(AtomicBool::new(false));
        let (committed, to_sync) = std::sync::mpsc::channel();
        let syncer = {
            let (horizon, failed, delivery) =
                (horizon.clone(), failed.clone(), self.delivery.clone());
            std::thread::Builder::new()
                .name("vkb-wal-sync".into())
                .spawn(move || sync_and_answer(&to_sync, &sync, &horizon, &failed, &delivery))
                .expect("spawning the WAL sync thread")
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut batch = Vec::with_capacity(jobs.len());
            let writes = split(&mut jobs, &mut batch);
            // After a failed fsync the page cache may have dropped writes SQLite counts
            // as made: nothing more is written until a restart lets SQLite recover.
            let result = if failed.load(Ordering::Acquire) {
                Err(StoreError::WalSyncFailed)
            } else {
                self.commit_on(&mut conn, &batch, &writes, &horizon)
            };
            let _ = committed.send(Committed {
                batch,
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

    #[cfg(test)]
    async fn commit(&self, batch: &[Command]) -> Result<Vec<Accepted>, StoreError> {
        let started = Instant::now();
        let tx = self.store.begin_ingest(&lock_keys(batch)).await?;
        self.finish(tx, batch, started).await
    }

    /// Applies a batch in a transaction begun by [`Store::begin_ingest`], and commits.
    async fn finish(
        &self,
        mut tx: store::Tx,
        batch: &[Command],
        started: Instant,
    ) -> Result<Vec<Accepted>, StoreError> {
        let results = self.apply(&mut tx, batch).await?;
        tx.commit().await?;
        crate::metrics::store_commit(started.elapsed().as_secs_f64());
        Ok(results)
    }

    fn commit_on(
        &self,
        conn: &mut IngestConnection,
        batch: &[Command],
        writes: &DeliveryWrites,
        horizon: &SyncHorizon,
    ) -> Result<Vec<Accepted>, StoreError> {
        let started = Instant::now();
        let mut tx = conn.begin()?;
        let results = if batch.is_empty() {
            Vec::new()
        } else {
            completed(self.apply(&mut tx, batch))?
        };
        tx.set_payloads(&writes.payloads)?;
        tx.record_attempts(&writes.records)?;
        // Others see the rows from the commit on; delivery must not until they are synced.
        horizon.committing(tx.first_outbox_id());
        if let Err(e) = tx.commit() {
            horizon.withdraw();
            return Err(e);
        }
        crate::metrics::store_commit(started.elapsed().as_secs_f64());
        Ok(results)
    }

    /// Applies a batch in order, as if its events came one by one. Through the pool that
    /// is a handful of statements whatever its size: duplicates and the rooms' calls are
    /// read with one query, new calls inserted with one, and the outbox rows, the seen
    /// events and the final call states written with one each (on PostgreSQL, those
    /// three as one statement). On the writer's own SQLite connection the same steps run
    /// row by row.
    async fn apply(
        &self,
        tx: &mut impl IngestBatch,
        batch: &[Command],
    ) -> Result<Vec<Accepted>, StoreError> {
        let keys: Vec<&str> = batch.iter().map(|c| c.dedupe_key.as_str()).collect();
        let rooms = rooms_of(batch);
        let (mut seen, known_calls) = tx.known(&keys, &rooms).await?;
        let mut calls: HashMap<String, CallState> = known_calls
            .into_iter()
            .map(|c| (c.room_sid.clone(), c))
            .collect();

        // Decide each event; a room that is new and maps to a workflow becomes a call.
        let workflows = self.workflows.load();
        let mut plans = Vec::with_capacity(batch.len());
        let mut new_calls: Vec<(&str, &str, &Workflow, String)> = Vec::new();
        for cmd in batch {
            let event = &cmd.event;
            let plan = if !seen.insert(cmd.dedupe_key.clone()) {
                Plan::Duplicate
            } else if !machine::concerns_calls(&event.event) {
                Plan::Ignored("event type does not concern calls")
            } else if let Some(room_sid) = event.room_sid() {
                if calls.contains_key(room_sid) || new_calls.iter().any(|c| c.0 == room_sid) {
                    Plan::Apply(room_sid)
                } else {
                    let room_name = event.room_name().unwrap_or_default();
                    let metadata = event.room.as_ref().map_or("", |r| r.metadata.as_str());
                    match workflow::assign(&workflows, room_name, metadata) {
                        Some(assignment) => {
                            let wf = workflows
                                .iter()
                                .find(|w| w.id == assignment.workflow_id)
                                .expect("assign returns configured workflows");
                            let slug = assignment.call_slug.unwrap_or_else(random_slug);
                            new_calls.push((room_sid, room_name, wf, slug));
                            Plan::Apply(room_sid)
                        }
                        None => Plan::Ignored("room maps to no workflow"),
                    }
                }
            } else {
                Plan::Ignored("event concerns no room")
            };
            plans.push(plan);
        }
        let rows: Vec<store::NewCall> = new_calls
            .iter()
            .map(|(room, name, wf, slug)| store::NewCall(room, name, wf.id, &wf.slug, slug))
            .collect();
        let ids = tx.create_calls(&rows).await?;
        let mut created = HashMap::with_capacity(new_calls.len());
        for (room_sid, room_name, wf, slug) in new_calls {
            let call_id = ids[room_sid];
            let state = CallState::new(call_id, slug, wf, room_sid, room_name);
            calls.insert(room_sid.to_owned(), state);
            created.insert(
                room_sid,
                Box::new(CreatedCall {
                    room_name: room_name.to_owned(),
                    room_sid: room_sid.to_owned(),
                    workflow: wf.slug.clone(),
                }),
            );
        }

        // Run the machine, queue what it emits, then write events and calls once each.
        let mut results = Vec::with_capacity(batch.len());
        let mut remembered = Vec::with_capacity(batch.len());
        let mut touched: Vec<&str> = Vec::new();
        let mut queued = Vec::new();
        for (cmd, plan) in batch.iter().zip(plans) {
            let (key, kind, room) = (
                cmd.dedupe_key.as_str(),
                cmd.event.event.as_str(),
                cmd.event.room_sid(),
            );
            match plan {
                Plan::Duplicate => results.push(Accepted::Duplicate),
                Plan::Ignored(why) => {
                    remembered.push(store::SeenEvent(key, kind, room, None));
                    results.push(Accepted::Ignored(why));
                }
                Plan::Apply(room_sid) => {
                    let state = calls.remove(room_sid).expect("planned rooms have a call");
                    let transition = state.apply(&cmd.event);
                    let call = transition.state;
                    self.queue(&mut queued, &call, &transition.emitted)?;
                    remembered.push(store::SeenEvent(key, kind, room, Some(call.call_id)));
                    results.push(Accepted::Applied {
                        call_id: call.call_id,
                        emitted: transition.emitted.iter().map(|e| e.event.kind()).collect(),
                        // The room's first event in the batch is the one that made it a call.
                        new_call: created.remove(room_sid),
                    });
                    if !touched.contains(&room_sid) {
                        touched.push(room_sid);
                    }
                    calls.insert(room_sid.to_owned(), call);
                }
            }
        }
        let deliveries: Vec<NewDelivery> = queued
            .iter()
            .map(|q| NewDelivery {
                webhook_id: &q.webhook_id,
                call_id: q.call_id,
                seq: q.seq,
                event_type: q.event_type,
                workflow_id: q.workflow_id,
                payload: &q.payload,
                recording: q.recording.as_deref(),
            })
            .collect();
        let states: Vec<CallState> = touched
            .iter()
            .map(|r| calls.remove(*r).expect("touched rooms have a call"))
            .collect();
        tx.write(&deliveries, &remembered, states).await?;
        Ok(results)
    }

    /// A call's VoiceKit events for the outbox, written with the batch (in its order).
    fn queue(
        &self,
        out: &mut Vec<Queued>,
        call: &CallState,
        emitted: &[machine::Emitted],
    ) -> Result<(), StoreError> {
        for emitted in emitted {
            let kind = emitted.event.kind();
            let recording = emitted
                .recording
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?;
            let payload = emitted.event.to_json();
            let has_hook = || {
                self.workflows
                    .load()
                    .iter()
                    .any(|w| w.id == call.workflow_id && w.call_started_hook.is_some())
            };
            let hook = (kind == EventKind::CallStarted && has_hook()).then(|| payload.clone());
            out.push(Queued {
                webhook_id: new_webhook_id(),
                call_id: call.call_id,
                seq: kind.seq(),
                event_type: kind.as_str(),
                workflow_id: call.workflow_id,
                payload,
                recording,
            });
            if let Some(payload) = hook {
                // The hook gets the call_started payload too, as its own outbox row
                // (seq 0): it never holds up the call's events.
                out.push(Queued {
                    webhook_id: new_webhook_id(),
                    call_id: call.call_id,
                    seq: 0,
                    event_type: store::HOOK_EVENT,
                    workflow_id: call.workflow_id,
                    payload,
                    recording: None,
                });
            }
        }
        Ok(())
    }
}

/// Answers every request of the batch; whether it queued VoiceKit events.
fn answer(
    batch: &mut Vec<Command>,
    result: Result<Vec<Accepted>, impl Into<Arc<StoreError>>>,
) -> bool {
    match result {
        Ok(results) => {
            let emitted = results
                .iter()
                .any(|r| matches!(r, Accepted::Applied { emitted, .. } if !emitted.is_empty()));
            for (cmd, result) in batch.drain(..).zip(results) {
                let _ = cmd.reply.send(Ok(result));
            }
            emitted
        }
        Err(e) => {
            let e: Arc<StoreError> = e.into();
            tracing::error!(error = %e, events = batch.len(), "could not commit webhook events; LiveKit will retry");
            for cmd in batch.drain(..) {
                let _ = cmd.reply.send(Err(e.clone()));
            }
            false
        }
    }
}

/// The rooms a batch's events concern, each once.
fn rooms_of(batch: &[Command]) -> Vec<&str> {
    let mut rooms: Vec<&str> = batch.iter().filter_map(|c| c.event.room_sid()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    rooms
}

/// What a PostgreSQL batch locks before it reads (`Store::begin_ingest`): its event ids
/// and rooms. Another batch, of this bridge or another, may hold events of these rooms
/// or these very events: this one waits for it, then reads what it committed.
fn lock_keys(batch: &[Command]) -> Vec<&str> {
    let keys = batch.iter().map(|c| c.dedupe_key.as_str());
    keys.chain(rooms_of(batch)).collect()
}

/// A batch the SQLite writer committed (or failed to), on its way to the WAL sync.
struct Committed {
    batch: Vec<Command>,
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
        // A failed commit holds no place in the horizon (`commit_on` let it go).
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
            mut batch,
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
            wake |= answer(&mut batch, result);
        }
        if wake {
            delivery.notify_one();
        }
    }
}

/// A batch's delivery writes (outcomes and published bodies), and who waits for each
/// to be durable.
#[derive(Default)]
struct DeliveryWrites {
    records: Vec<(Attempt, AttemptOutcome)>,
    payloads: Vec<(i64, String)>,
    waiting: Vec<oneshot::Sender<Result<(), Arc<StoreError>>>>,
}

impl DeliveryWrites {
    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    fn answer(self, result: Result<(), impl Into<Arc<StoreError>>>) {
        let result = result.map_err(Into::into);
        if let Err(e) = &result {
            tracing::error!(error = %e, outcomes = self.waiting.len(), "could not record delivery outcomes or published bodies; those deliveries will be sent again");
        }
        for done in self.waiting {
            let _ = done.send(result.clone());
        }
    }
}

/// Sorts a batch's jobs into events and delivery writes, each in arrival order.
fn split(jobs: &mut Vec<Job>, events: &mut Vec<Command>) -> DeliveryWrites {
    let mut writes = DeliveryWrites::default();
    for job in jobs.drain(..) {
        match job {
            Job::Event(cmd) => events.push(cmd),
            Job::Outcome(o) => {
                writes.records.push((o.attempt, o.outcome));
                writes.waiting.push(o.done);
            }
            Job::Payload(p) => {
                writes.payloads.push((p.outbox_id, p.payload));
                writes.waiting.push(p.done);
            }
        }
    }
    writes
}

/// The output of a future that never waits, as [`store::SqliteBatch`]'s statements.
fn completed<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("SQLite batch statements never wait"),
    }
}

/// An outbox row to write at the end of the batch.
struct Queued {
    webhook_id: String,
    call_id: i64,
    seq: i64,
    event_type: &'static str,
    workflow_id: i64,
    payload: String,
    recording: Option<String>,
}

/// What the writer does with one event of a batch.
enum Plan<'a> {
    Duplicate,
    Ignored(&'static str),
    /// Apply it to the call of this room.
    Apply(&'a str),
}

/// An 8-character lowercase alphanumeric call slug, for rooms whose name carries none.
fn random_slug() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// The Standard Webhooks message id: stable across every retry of one event.
///
/// It starts with the time (milliseconds, 7 base-62 digits, in ASCII order) and ends in
/// 17 random characters: ids made close in time sort close together, so each batch's
/// rows land on the last pages of the outbox's unique index instead of one random page
/// each, and a commit writes fewer pages.
fn new_webhook_id() -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(28);
    id.push_str("msg_");
    let mut ms = u64::try_from(store::now_ms()).unwrap_or(0);
    let mut time = [b'0'; 7];
    for digit in time.iter_mut().rev() {
        *digit = DIGITS[(ms % 62) as usize];
        ms /= 62;
    }
    id.extend(time.iter().map(|&d| d as char));
    id.extend(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(17)
            .map(char::from),
    );
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn writer() -> (Writer, tempfile::TempDir) {
        let (store, dir) = store::test_sqlite_store().await;
        (writer_on(store), dir)
    }

    fn writer_on(store: Store) -> Writer {
        let workflow = Workflow {
            id: 456,
            slug: "support".into(),
            organization_id: 789,
            events_webhook_url: "http://127.0.0.1:1/".into(),
            call_started_hook: None,
            room_pattern: Some(regex::Regex::new(r"^VK_(?P<call_slug>[a-z0-9]+)_\d+$").unwrap()),
            signing_keys: vec![],
        };
        let workflows = Arc::new(arc_swap::ArcSwap::from_pointee(vec![workflow]));
        Writer {
            store,
            workflows,
            delivery: Arc::new(Notify::new()),
            wal_restart_frames: WAL_RESTART_FRAMES,
        }
    }

    fn command(body: serde_json::Value) -> Command {
        let event = WebhookEvent::parse(body.to_string().as_bytes()).unwrap();
        Command {
            dedupe_key: event.id.clone().unwrap(),
            event,
            reply: oneshot::channel().0,
        }
    }

    /// Room R1 (a whole call), a duplicate in the batch and one of an earlier event, a
    /// room of no workflow, an event type that concerns no call, and a second new room.
    fn events() -> Vec<serde_json::Value> {
        let room = |sid: &str, name: &str| json!({"sid": sid, "name": name, "creationTimeMs": "1761234567000"});
        let r1 = room("RM_1", "VK_abc_1");
        let agent = json!({"sid": "PA_a", "identity": "agent", "kind": "AGENT", "joinedAtMs": "1761234569000"});
        let sip = json!({"sid": "PA_s", "identity": "sip", "kind": "SIP", "joinedAtMs": "1761234568000",
                         "attributes": {"sip.phoneNumber": "+15551230001"}});
        let ev = |id: &str, event: &str, room: &serde_json::Value, extra: serde_json::Value| {
            let mut v = json!({"id": id, "event": event, "room": room, "createdAt": "1761234570"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        vec![
            ev("EV_1", "room_started", &r1, json!({})),
            ev("EV_1", "room_started", &r1, json!({})),
            ev(
                "EV_2",
                "participant_joined",
                &r1,
                json!({"participant": sip}),
            ),
            ev(
                "EV_3",
                "participant_joined",
                &r1,
                json!({"participant": agent}),
            ),
            ev(
                "EV_4",
                "room_started",
                &room("RM_2", "someone-else"),
                json!({}),
            ),
            ev("EV_5", "track_published", &r1, json!({})),
            ev("EV_6", "room_started", &room("RM_3", "VK_def_2"), json!({})),
            ev(
                "EV_7",
                "participant_left",
                &r1,
                json!({"participant": agent}),
            ),
            ev("EV_8", "room_finished", &r1, json!({})),
            ev(
                "EV_3",
                "participant_joined",
                &r1,
                json!({"participant": agent}),
            ),
        ]
    }

    /// Everything the writer stores, minus what is random or a clock reading.
    async fn dump(w: &Writer) -> Vec<String> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT json_array(event_id, event_type, room_sid, call_id) FROM inbound_events
             UNION ALL SELECT json_array(id, room_sid, call_slug, phase, state) FROM calls
             UNION ALL SELECT json_array(call_id, seq, event_type, workflow_id, payload, recording)
                       FROM (SELECT * FROM outbox ORDER BY id)",
        )
        .fetch_all(w.store.sqlite())
        .await
        .unwrap();
        rows.into_iter().map(|(r,)| r).collect()
    }

    #[tokio::test]
    async fn a_batch_does_what_its_events_do_one_by_one() {
        let (batched, _d1) = writer().await;
        let batch: Vec<Command> = events().into_iter().map(command).collect();
        let together = batched.commit(&batch).await.unwrap();

        let (single, _d2) = writer().await;
        let mut one_by_one = Vec::new();
        for body in events() {
            one_by_one.extend(single.commit(&[command(body)]).await.unwrap());
        }
        assert_eq!(together, one_by_one);
        assert_eq!(dump(&batched).await, dump(&single).await);

        // The writer's own SQLite connection writes the same rows as the pool does.
        let (own, _d3) = writer().await;
        let mut conn = own.store.ingest_connection().unwrap().unwrap();
        let on_own = own
            .commit_on(
                &mut conn,
                &batch,
                &DeliveryWrites::default(),
                &SyncHorizon::default(),
            )
            .unwrap();
        assert_eq!(on_own, together);
        assert_eq!(dump(&own).await, dump(&batched).await);
        let again = own
            .commit_on(
                &mut conn,
                &batch,
                &DeliveryWrites::default(),
                &SyncHorizon::default(),
            )
            .unwrap();
        assert!(again.iter().all(|a| *a == Accepted::Duplicate));

        use Accepted::*;
        let applied = |emitted: &[EventKind]| Applied {
            call_id: 1,
            emitted: emitted.to_vec(),
            new_call: None,
        };
        let created = |call_id, room_name: &str, room_sid: &str| Applied {
            call_id,
            emitted: vec![],
            new_call: Some(Box::new(CreatedCall {
                room_name: room_name.into(),
                room_sid: room_sid.into(),
                workflow: "support".into(),
            })),
        };
        assert_eq!(
            together,
            vec![
                created(1, "VK_abc_1", "RM_1"),
                Duplicate,
                applied(&[]),
                applied(&[EventKind::CallStarted]),
                Ignored("room maps to no workflow"),
                Ignored("event type does not concern calls"),
                created(2, "VK_def_2", "RM_3"),
                applied(&[]),
                applied(&[EventKind::CallEnded]),
                Duplicate,
            ]
        );
        let again = batched.commit(&batch).await.unwrap();
        assert!(again.iter().all(|a| *a == Duplicate));
        let kinds: Vec<(String,)> = sqlx::query_as("SELECT event_type FROM outbox ORDER BY id")
            .fetch_all(batched.store.sqlite())
            .await
            .unwrap();
        assert_eq!(kinds, [("call_started".into(),), ("call_ended".into(),)]);
    }

    #[tokio::test]
    async fn the_writer_keeps_the_calls_it_committed_until_another_connection_commits() {
        let (pool, _d1) = writer().await;
        let (own, _d2) = writer().await;
        let mut conn = own.store.ingest_connection().unwrap().unwrap();
        let (mut on_pool, mut on_own) = (Vec::new(), Vec::new());
        for body in events() {
            on_pool.extend(pool.commit(&[command(body.clone())]).await.unwrap());
            let one = [command(body)];
            on_own.extend(
                own.commit_on(
                    &mut conn,
                    &one,
                    &DeliveryWrites::default(),
                    &SyncHorizon::default(),
                )
                .unwrap(),
            );
        }
        // Room RM_1's later events found its state in memory, and did what reading the
        // file does.
        assert!(conn.cached_reads() >= 5, "{}", conn.cached_reads());
        assert_eq!(on_own, on_pool);
        assert_eq!(dump(&own).await, dump(&pool).await);

        // The checkpoint task's pass (PASSIVE, every 500 ms) is no commit: were it to
        // empty the cache, the cache would hardly ever be used.
        own.store.checkpoint().await.unwrap();
        let reads = conn.cached_reads();
        let egress = command(json!({"id": "EV_8b", "event": "egress_started",
            "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234571",
            "egressInfo": {"egressId": "EG_0", "roomId": "RM_3", "status": "EGRESS_ACTIVE"}}));
        own.commit_on(
            &mut conn,
            &[egress],
            &DeliveryWrites::default(),
            &SyncHorizon::default(),
        )
        .unwrap();
        assert_eq!(conn.cached_reads(), reads + 1, "RM_3 came from memory");

        // Someone else's commit (here: an edit of RM_3's state through the pool): the
        // writer's next batch reads RM_3 from the file.
        sqlx::query(
            "UPDATE calls SET state = json_set(state, '$.room_metadata', 'edited')
             WHERE room_sid = 'RM_3'",
        )
        .execute(own.store.sqlite())
        .await
        .unwrap();
        let reads = conn.cached_reads();
        let joined = command(json!({"id": "EV_9", "event": "participant_joined",
            "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234571",
            "participant": {"sid": "PA_x", "identity": "x", "kind": "STANDARD"}}));
        own.commit_on(
            &mut conn,
            &[joined],
            &DeliveryWrites::default(),
            &SyncHorizon::default(),
        )
        .unwrap();
        assert_eq!(conn.cached_reads(), reads, "nothing came from memory");
        let (metadata,): (String,) =
            sqlx::query_as("SELECT state->>'$.room_metadata' FROM calls WHERE room_sid = 'RM_3'")
                .fetch_one(own.store.sqlite())
                .await
                .unwrap();
        assert_eq!(
            metadata, "edited",
            "the batch applied its event to the file's state"
        );

        // A batch that fails (here: an outcome for a row that does not exist) rolls
        // back, and what it decided for RM_3 never reaches the cache either.
        let bad = Attempt {
            outbox_id: 999_999,
            attempted_at: store::now_ms(),
            endpoint: "http://127.0.0.1:1/".into(),
            status_code: Some(200),
            error: None,
            latency_ms: 1,
            response_body: None,
        };
        let left = command(json!({"id": "EV_10", "event": "participant_left",
            "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234572",
            "participant": {"sid": "PA_x", "identity": "x", "kind": "STANDARD"}}));
        let failed = own.commit_on(
            &mut conn,
            &[left],
            &DeliveryWrites {
                records: vec![(bad, AttemptOutcome::Delivered)],
                ..DeliveryWrites::default()
            },
            &SyncHorizon::default(),
        );
        assert!(failed.is_err(), "{failed:?}");
        let reads = conn.cached_reads();
        let again = command(json!({"id": "EV_11", "event": "track_published",
            "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234573"}));
        let egress = command(json!({"id": "EV_12", "event": "egress_started",
            "room": {"sid": "RM_3", "name": "VK_def_2"}, "createdAt": "1761234573",
            "egressInfo": {"egressId": "EG_1", "roomId": "RM_3", "status": "EGRESS_ACTIVE"}}));
        own.commit_on(
            &mut conn,
            &[again, egress],
            &DeliveryWrites::default(),
            &SyncHorizon::default(),
        )
        .unwrap();
        assert_eq!(conn.cached_reads(), reads, "the failed batch left nothing");
        let (present,): (String,) =
            sqlx::query_as("SELECT state->>'$.present' FROM calls WHERE room_sid = 'RM_3'")
                .fetch_one(own.store.sqlite())
                .await
                .unwrap();
        assert_eq!(present, r#"["PA_x"]"#, "PA_x's leaving was rolled back");
    }

    #[tokio::test]
    async fn on_a_sqlite_file_the_writer_records_delivery_outcomes() {
        let (w, _dir) = writer().await;
        let store = w.store.clone();
        let (ingestor, handle) =
            Ingestor::start(store.clone(), w.workflows.clone(), w.delivery.clone()).unwrap();
        assert!(
            ingestor.takes_outcomes(),
            "a SQLite file's writer takes outcomes"
        );
        let first = command(events()[0].clone());
        let accepted = ingestor
            .submit(first.event, first.dedupe_key)
            .await
            .unwrap();
        assert!(
            matches!(&accepted, Accepted::Applied { emitted, .. } if emitted.is_empty()),
            "{accepted:?}"
        );
        let joined = events();
        for body in &joined[2..4] {
            let cmd = command(body.clone());
            ingestor.submit(cmd.event, cmd.dedupe_key).await.unwrap();
        }
        let (outbox_id,): (i64,) =
            sqlx::query_as("SELECT id FROM outbox WHERE event_type = 'call_started'")
                .fetch_one(store.sqlite())
                .await
                .unwrap();
        let attempt = Attempt {
            outbox_id,
            attempted_at: store::now_ms(),
            endpoint: "http://127.0.0.1:1/".into(),
            status_code: Some(200),
            error: None,
            latency_ms: 3,
            response_body: Some("ok".into()),
        };
        ingestor
            .record(attempt, AttemptOutcome::Delivered)
            .await
            .unwrap();
        let (status, attempts): (String, i64) = sqlx::query_as(
            "SELECT status, (SELECT count(*) FROM delivery_attempts WHERE outbox_id = o.id)
             FROM outbox o WHERE id = $1",
        )
        .bind(outbox_id)
        .fetch_one(store.sqlite())
        .await
        .unwrap();
        assert_eq!((status.as_str(), attempts), ("delivered", 1));
        drop(ingestor);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn on_a_sqlite_file_the_writer_stores_published_bodies() {
        let (w, _dir) = writer().await;
        let store = w.store.clone();
        let (ingestor, handle) =
            Ingestor::start(store.clone(), w.workflows.clone(), w.delivery.clone()).unwrap();
        for body in &events()[..4] {
            let cmd = command(body.clone());
            ingestor.submit(cmd.event, cmd.dedupe_key).await.unwrap();
        }
        // As a `call_finalized` row holds its recording until the URL is published.
        let (outbox_id,): (i64,) = sqlx::query_as(
            "UPDATE outbox SET recording = '{}' WHERE event_type = 'call_started' RETURNING id",
        )
        .fetch_one(store.sqlite())
        .await
        .unwrap();
        let published = r#"{"event":"call_finalized","recording_url":"https://r.example/a"}"#;
        ingestor
            .set_payload(outbox_id, published.to_string())
            .await
            .unwrap();
        let row: (String, Option<String>) =
            sqlx::query_as("SELECT payload, recording FROM outbox WHERE id = $1")
                .bind(outbox_id)
                .fetch_one(store.sqlite())
                .await
                .unwrap();
        assert_eq!(row, (published.to_string(), None));
        drop(ingestor);
        handle.await.unwrap();
    }

    /// The delivery worker's path for a published body on a SQLite file: through the
    /// writer (under its fsync), answered only once synced, so a retry after a power
    /// loss sends the bytes the first attempt sent. Written through the pool instead, it
    /// would be answered with the writer's sync never called.
    #[tokio::test]
    async fn a_published_body_is_answered_only_after_the_writers_wal_sync() {
        let (w, _dir) = writer().await;
        let store = w.store.clone();
        let (release, syncs, sync) = gated_sync();
        let (ingestor, writer) = ingestor_with_sync(w, sync);
        // room_started, the caller, the agent (call_started queued), one sync each.
        let all = events();
        for body in [&all[0], &all[2], &all[3]] {
            let answer = send_event(&ingestor.jobs, body.clone()).await;
            release.send(()).unwrap();
            assert!(matches!(
                answer.await.unwrap(),
                Ok(Accepted::Applied { .. })
            ));
        }
        let (outbox_id,): (i64,) =
            sqlx::query_as("SELECT id FROM outbox WHERE event_type = 'call_started'")
                .fetch_one(store.sqlite())
                .await
                .unwrap();
        let before = syncs.load(Ordering::SeqCst);

        let recorder = crate::delivery::recorder::Recorder::start(store.clone(), &ingestor);
        let published = r#"{"event":"call_finalized","recording_url":"https://r.example/b"}"#;
        let mut stored =
            tokio::spawn(
                async move { recorder.set_payload(outbox_id, published.to_string()).await },
            );
        let sync_called = async {
            while syncs.load(Ordering::SeqCst) == before {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            done = &mut stored => panic!("answered without the writer's sync: {done:?}"),
            () = sync_called => {}
        }
        assert!(!stored.is_finished(), "answered before its sync returned");
        let (payload,): (String,) = sqlx::query_as("SELECT payload FROM outbox WHERE id = $1")
            .bind(outbox_id)
            .fetch_one(store.sqlite())
            .await
            .unwrap();
        assert_eq!(payload, published, "the sync held covers the body's commit");
        release.send(()).unwrap();
        stored.await.unwrap().unwrap();
        drop((ingestor, release));
        writer.join().unwrap();
    }

    /// The writer's statements, cached on its connection and bound anew for every
    /// event, are compiled once (`store/plans.rs`).
    #[tokio::test]
    async fn the_writers_statements_are_compiled_once_not_at_every_batch() {
        let (w, _dir) = writer().await;
        let mut conn = w.store.ingest_connection().unwrap().unwrap();
        for body in events() {
            w.commit_on(
                &mut conn,
                &[command(body)],
                &DeliveryWrites::default(),
                &SyncHorizon::default(),
            )
            .unwrap();
        }
        assert_eq!(conn.reprepares(), 0);
    }

    /// A WAL sync that counts its calls, and lets each through only when the test sends
    /// on the first channel.
    fn gated_sync() -> (
        std::sync::mpsc::Sender<()>,
        Arc<std::sync::atomic::AtomicUsize>,
        WalSync,
    ) {
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = syncs.clone();
        let sync = WalSync::with(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = gate.lock().unwrap().recv();
            Ok(())
        });
        (release, syncs, sync)
    }

    /// Starts the SQLite writer with `sync` as its WAL sync; submits `bodies`, each as
    /// its own job, and returns their answers.
    async fn submit_with_sync(
        w: Writer,
        sync: WalSync,
        bodies: &[serde_json::Value],
    ) -> (
        mpsc::Sender<Job>,
        std::thread::JoinHandle<()>,
        Vec<oneshot::Receiver<Result<Accepted, Arc<StoreError>>>>,
    ) {
        let (ingestor, writer) = ingestor_with_sync(w, sync);
        let mut answers = Vec::new();
        for body in bodies {
            answers.push(send_event(&ingestor.jobs, body.clone()).await);
        }
        (ingestor.jobs, writer, answers)
    }

    /// An ingestor whose writer, on its own connection and thread, syncs with `sync`.
    fn ingestor_with_sync(w: Writer, sync: WalSync) -> (Ingestor, std::thread::JoinHandle<()>) {
        let conn = w.store.ingest_connection().unwrap().unwrap();
        let (jobs, rx) = mpsc::channel(16);
        let writer = std::thread::spawn(move || w.run_on(conn, rx, sync));
        let ingestor = Ingestor {
            jobs,
            takes_outcomes: true,
        };
        (ingestor, writer)
    }

    /// What a `tracing` subscriber wrote, for a test to read.
    #[derive(Clone, Default)]
    struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogBuffer {
        fn lines_with(&self, what: &str) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(what))
                .map(str::to_owned)
                .collect()
        }
    }

    #[tokio::test]
    async fn calls_and_queued_events_are_logged_by_the_submitter_once_durable() {
        // This thread's subscriber only: what the writer's own threads log is not seen.
        let logs = LogBuffer::default();
        let subscriber = {
            let logs = logs.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish()
        };
        let _guard = tracing::subscriber::set_default(subscriber);
        let all = events();
        let submit = async |ingestor: &Ingestor, body: &serde_json::Value| {
            let cmd = command(body.clone());
            ingestor.submit(cmd.event, cmd.dedupe_key).await
        };

        // Every sync fails: the writer commits the call, but it is never durable.
        let (w, _d1) = writer().await;
        let (ingestor, thread) =
            ingestor_with_sync(w, WalSync::with(|| Err(std::io::Error::other("disk gone"))));
        assert!(submit(&ingestor, &all[0]).await.is_err());
        assert_eq!(logs.lines_with("new call"), Vec::<String>::new());
        drop(ingestor);
        thread.join().unwrap();

        // The same call, synced: room_started makes it, the agent's join queues call_started.
        let (w, _d2) = writer().await;
        let (ingestor, thread) = ingestor_with_sync(w, WalSync::with(|| Ok(())));
        for body in [&all[0], &all[2], &all[3]] {
            assert!(matches!(
                submit(&ingestor, body).await,
                Ok(Accepted::Applied { .. })
            ));
        }
        let created = logs.lines_with("new call");
        assert_eq!(created.len(), 1, "{created:?}");
        assert!(
            ["call_id=1", "RM_1", "VK_abc_1", "support"]
                .iter()
                .all(|part| created[0].contains(part)),
            "{}",
            created[0]
        );
        let queued = logs.lines_with("queued VoiceKit event");
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(
            queued[0].contains("call_id=1") && queued[0].contains("call_started"),
            "{}",
            queued[0]
        );
        drop(ingestor);
        thread.join().unwrap();
    }

    /// Queues the event `body` to a writer's channel; its answer comes on the receiver.
    async fn send_event(
        tx: &mpsc::Sender<Job>,
        body: serde_json::Value,
    ) -> oneshot::Receiver<Result<Accepted, Arc<StoreError>>> {
        let mut cmd = command(body);
        let (reply, answer) = oneshot::channel();
        cmd.reply = reply;
        tx.send(Job::Event(cmd)).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn webhooks_are_answered_and_delivered_only_after_the_wal_sync() {
        let (w, _dir) = writer().await;
        let store = w.store.clone();
        let (release, _, sync) = gated_sync();
        let all = events();
        // room_started, the caller, the agent: the agent's join queues call_started.
        let (tx, writer, mut answers) =
            submit_with_sync(w, sync, &[all[0].clone(), all[2].clone(), all[3].clone()]).await;
        // The writer commits all three while the first sync is still held.
        let committed = || async {
            sqlx::query_as::<_, (i64,)>("SELECT id FROM outbox WHERE event_type = 'call_started'")
                .fetch_optional(store.sqlite())
                .await
                .unwrap()
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let (outbox_id,) = loop {
            if let Some(row) = committed().await {
                break row;
            }
            assert!(
                Instant::now() < deadline,
                "the writer did not commit past a held sync"
            );
            tokio::task::yield_now().await;
        };
        for answer in &mut answers {
            assert!(
                answer.try_recv().is_err(),
                "answered before its commit was synced"
            );
        }
        let due = store
            .due_for_workflow(i64::MAX, 456, false, 10)
            .await
            .unwrap();
        assert!(
            due.is_empty(),
            "delivery read a row whose commit is not synced: {due:?}"
        );

        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for answer in answers {
            assert!(matches!(
                answer.await.unwrap(),
                Ok(Accepted::Applied { .. })
            ));
        }
        let due = store
            .due_for_workflow(i64::MAX, 456, false, 10)
            .await
            .unwrap();
        assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [outbox_id]);
        assert_eq!(store.sync_horizon().below(), i64::MAX);
        drop((tx, release));
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn after_a_failed_wal_sync_the_writer_takes_nothing_more() {
        let (w, _dir) = writer().await;
        let store = w.store.clone();
        let sync = WalSync::with(|| Err(std::io::Error::other("disk gone")));
        let all = events();
        let (tx, writer, mut answers) = submit_with_sync(w, sync, &[all[0].clone()]).await;
        let first = answers.remove(0).await.unwrap().unwrap_err();
        assert!(matches!(*first, StoreError::WalSync(_)), "{first}");
        let later = send_event(&tx, all[2].clone()).await;
        let later = later.await.unwrap().unwrap_err();
        assert!(matches!(*later, StoreError::WalSyncFailed), "{later}");
        let (events_stored,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbound_events")
            .fetch_one(store.sqlite())
            .await
            .unwrap();
        assert_eq!(
            events_stored, 1,
            "the event after the failed sync was not written"
        );
        drop(tx);
        writer.join().unwrap();
    }

    #[tokio::test]
    async fn the_writers_checkpoint_starts_the_wal_over() {
        let (w, _dir) = writer().await;
        let mut conn = w.store.ingest_connection().unwrap().unwrap();
        let calls = |from: usize, n: usize| -> Vec<Command> {
            (from..from + n)
                .map(|i| {
                    let room = json!({"sid": format!("RM_{i}"), "name": format!("VK_c{i}_1")});
                    command(json!({"id": format!("EV_{i}"), "event": "room_started", "room": room}))
                })
                .collect()
        };
        w.commit_on(
            &mut conn,
            &calls(0, 200),
            &DeliveryWrites::default(),
            &SyncHorizon::default(),
        )
        .unwrap();
        let big = conn.wal_frames();
        assert!(big > 0, "the commit's pages are in the WAL");
        let (log, copied) = conn.checkpoint().unwrap();
        assert_eq!(log, big);
        assert_eq!(
            big, copied,
            "with no write in progress every frame is copied"
        );
        w.commit_on(
            &mut conn,
            &calls(200, 1),
            &DeliveryWrites::default(),
            &SyncHorizon::default(),
        )
        .unwrap();
        let small = conn.wal_frames();
        // Appended, the WAL would hold both batches' frames; started over, only the last.
        assert!(small < big, "WAL not restarted: {small} frames after {big}");
    }

    #[tokio::test]
    async fn a_long_wal_is_started_over_by_the_writer() {
        let (mut w, dir) = writer().await;
        w.wal_restart_frames = 100;
        let conn = w.store.ingest_connection().unwrap().unwrap();
        let sync = conn.wal_sync().unwrap();
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer = std::thread::spawn(move || w.run_on(conn, rx, sync));
        // No checkpoint task runs here: without the writer's own, the WAL would hold
        // every frame of these 6,000 calls (about 1,200).
        let mut answers = Vec::new();
        for i in 0..6000 {
            let room = json!({"sid": format!("RM_{i}"), "name": format!("VK_c{i}_1")});
            let body = json!({"id": format!("EV_{i}"), "event": "room_started", "room": room});
            answers.push(send_event(&tx, body).await);
        }
        for answer in answers {
            assert!(matches!(answer.await, Ok(Ok(Accepted::Applied { .. }))));
        }
        // A WAL started over is written from its start again: the file, which never
        // shrinks below its high-water mark here, stays near the threshold. (Measured
        // while the writer's connection is open: the last connection to close a
        // database deletes its WAL.)
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        drop(tx);
        writer.join().unwrap();
        let frames = (wal.saturating_sub(32)) / (4096 + 24);
        assert!(frames < 600, "the WAL grew to {frames} frames");
    }

    #[test]
    fn slugs_are_eight_lowercase_alphanumerics() {
        let s = random_slug();
        assert_eq!(s.len(), 8);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(random_slug(), random_slug());
    }

    #[test]
    fn webhook_ids_are_unique_and_prefixed() {
        let a = new_webhook_id();
        assert!(a.starts_with("msg_") && a.len() == 28);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, new_webhook_id());
    }

    #[test]
    fn webhook_ids_sort_in_the_order_they_were_made() {
        // Random ids would come out in this order once in 20! tries.
        let mut made = Vec::new();
        for _ in 0..20 {
            made.push(new_webhook_id());
            // The order is by millisecond: wait for the clock to move on.
            let now = store::now_ms();
            while store::now_ms() == now {
                std::hint::spin_loop();
            }
        }
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(sorted, made);
    }

    #[tokio::test]
    async fn on_postgres_a_waiting_batch_holds_up_only_the_later_batches_of_its_rooms() {
        let (stores, _dir) = store::test_stores().await;
        let store = stores[1].clone();
        let (jobs, rx) = mpsc::channel(16);
        let writer = tokio::spawn(Arc::new(writer_on(store.clone())).run(rx, PG_BATCHES_IN_FLIGHT));
        let room = |sid: &str, name: &str| json!({"sid": sid, "name": name, "creationTimeMs": "1761234567000"});
        let (r1, r3) = (room("RM_1", "VK_abc_1"), room("RM_3", "VK_def_2"));
        let agent = json!({"sid": "PA_a", "identity": "agent", "kind": "AGENT", "joinedAtMs": "1761234569000"});
        let ev = |id: &str, event: &str, room: &serde_json::Value| json!({"id": id, "event": event, "room": room, "participant": agent, "createdAt": "1761234570"});
        let answer = |a: Result<Result<Accepted, Arc<StoreError>>, _>| a.unwrap().unwrap();
        answer(
            send_event(&jobs, ev("EV_1", "room_started", &r1))
                .await
                .await,
        );

        // Another transaction holds RM_1's call row: the batch of the agent's arrival
        // waits in PostgreSQL for it, with its room's advisory lock taken.
        let pool = store.postgres().unwrap();
        let mut holder = pool.begin().await.unwrap();
        sqlx::query("SELECT id FROM calls WHERE room_sid = 'RM_1' FOR UPDATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut joined = send_event(&jobs, ev("EV_2", "participant_joined", &r1)).await;
        let waiting = async || {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            n > 0
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !waiting().await {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the agent's batch waits for the call row");

        // Another room's batch goes past it and is answered.
        let other = send_event(&jobs, ev("EV_3", "room_started", &r3)).await;
        let other = tokio::time::timeout(std::time::Duration::from_secs(10), other)
            .await
            .expect("a batch of another room waited for the waiting one");
        assert!(matches!(answer(other), Accepted::Applied { .. }));
        assert!(joined.try_recv().is_err(), "the waiting batch was answered");

        // A later batch of RM_1 waits for the first, then applies to what it committed.
        let finished = send_event(&jobs, ev("EV_4", "room_finished", &r1)).await;
        holder.rollback().await.unwrap();
        let started = answer(joined.await);
        let ended = answer(finished.await);
        assert!(
            matches!(&started, Accepted::Applied { emitted, .. } if emitted == &[EventKind::CallStarted]),
            "{started:?}"
        );
        assert!(
            matches!(&ended, Accepted::Applied { emitted, .. } if emitted == &[EventKind::CallEnded]),
            "{ended:?}"
        );
        let events: Vec<(i64, String)> = sqlx::query_as(
            "SELECT o.seq, o.event_type FROM outbox o JOIN calls c ON c.id = o.call_id
             WHERE c.room_sid = 'RM_1' ORDER BY o.seq",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(
            events,
            [(1, "call_started".to_owned()), (2, "call_ended".to_owned())]
        );
        drop(jobs);
        writer.await.unwrap();
    }
}
