//! Accepting a verified LiveKit event: drop duplicates, find or create the call, run
//! the state machine, and commit the result with its outgoing events.
//!
//! One writer task owns the write path. Requests queue to it and it commits whatever
//! has queued in one transaction (group commit): one fsync serves many webhooks, and
//! each request is answered only after the transaction holding its event committed.

use std::{collections::HashMap, sync::Arc};

use rand::{Rng, distr::Alphanumeric};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    call::{CallState, EventKind, machine, workflow},
    config::{SharedWorkflows, Workflow},
    livekit::event::WebhookEvent,
    store::{self, NewDelivery, Store, StoreError, Tx},
};

/// The most events committed in one transaction.
const MAX_BATCH: usize = 512;

/// What became of an accepted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Applied to a call; `emitted` VoiceKit events were queued.
    Applied { call_id: i64, emitted: usize },
    /// This LiveKit event id was accepted before: nothing happens again.
    Duplicate,
    /// Stored as seen, but it concerns no call.
    Ignored(&'static str),
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

/// The handle request handlers submit events through.
#[derive(Clone)]
pub struct Ingestor {
    commands: mpsc::Sender<Command>,
}

impl Ingestor {
    /// Starts the writer task. `delivery` is woken whenever new events are queued.
    pub fn start(
        store: Store,
        workflows: SharedWorkflows,
        delivery: Arc<Notify>,
    ) -> (Ingestor, tokio::task::JoinHandle<()>) {
        let (commands, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer = Writer {
            store,
            workflows,
            delivery,
        };
        // The writer runs on a thread of its own: on the shared runtime each of its awaits
        // (one per statement) resumed behind every queued HTTP task, and its batches,
        // which every request waits for, took several times their work.
        let task = tokio::spawn(writer.run(rx)); //TMPAB
        (Ingestor { commands }, task)
    }

    /// Commits `event` and everything it causes; returns once that is durable.
    pub async fn submit(
        &self,
        event: WebhookEvent,
        dedupe_key: String,
    ) -> Result<Accepted, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command {
                event,
                dedupe_key,
                reply,
            })
            .await
            .map_err(|_| IngestError::Stopped)?;
        match answer.await {
            Ok(Ok(accepted)) => Ok(accepted),
            Ok(Err(e)) => Err(IngestError::Store(e)),
            Err(_) => Err(IngestError::Stopped),
        }
    }
}

struct Writer {
    store: Store,
    workflows: SharedWorkflows,
    delivery: Arc<Notify>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            match self.commit(&batch).await {
                Ok(results) => {
                    if results
                        .iter()
                        .any(|r| matches!(r, Accepted::Applied { emitted, .. } if *emitted > 0))
                    {
                        self.delivery.notify_one();
                    }
                    for (cmd, result) in batch.drain(..).zip(results) {
                        let _ = cmd.reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "could not commit webhook events; LiveKit will retry");
                    let e = Arc::new(e);
                    for cmd in batch.drain(..) {
                        let _ = cmd.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    async fn commit(&self, batch: &[Command]) -> Result<Vec<Accepted>, StoreError> {
        let started = std::time::Instant::now();
        let mut tx = self.store.begin().await?;
        let t1 = started.elapsed();
        let results = self.apply(&mut tx, batch).await?;
        let t2 = started.elapsed();
        tx.commit().await?;
        tracing::debug!(
            n = batch.len(),
            begin_us = t1.as_micros() as u64,
            apply_us = (t2 - t1).as_micros() as u64,
            commit_us = (started.elapsed() - t2).as_micros() as u64,
            "TMPBATCH"
        );
        crate::metrics::store_commit(started.elapsed().as_secs_f64());
        Ok(results)
    }

    /// Applies a batch in order, as if its events came one by one, with a fixed number
    /// of statements (plus one per VoiceKit event queued): duplicates are found with one
    /// query, the rooms' calls are read with one, new calls inserted with one, and the
    /// events and final call states written with one each.
    async fn apply(&self, tx: &mut Tx, batch: &[Command]) -> Result<Vec<Accepted>, StoreError> {
        let keys: Vec<&str> = batch.iter().map(|c| c.dedupe_key.as_str()).collect();
        let mut seen = store::seen_events(tx, &keys).await?;
        let mut rooms: Vec<&str> = batch.iter().filter_map(|c| c.event.room_sid()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut calls: HashMap<String, CallState> = store::calls_by_rooms(tx, &rooms)
            .await?
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
        let ids = store::create_calls(tx, &rows).await?;
        for (room_sid, room_name, wf, slug) in new_calls {
            let call_id = ids[room_sid];
            tracing::info!(call_id, room = room_name, room_sid, workflow = %wf.slug, "new call");
            let state = CallState::new(call_id, slug, wf, room_sid, room_name);
            calls.insert(room_sid.to_owned(), state);
        }

        // Run the machine, queue what it emits, then write events and calls once each.
        let mut results = Vec::with_capacity(batch.len());
        let mut remembered = Vec::with_capacity(batch.len());
        let mut touched: Vec<&str> = Vec::new();
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
                    self.queue(tx, &call, &transition.emitted).await?;
                    remembered.push(store::SeenEvent(key, kind, room, Some(call.call_id)));
                    results.push(Accepted::Applied {
                        call_id: call.call_id,
                        emitted: transition.emitted.len(),
                    });
                    if !touched.contains(&room_sid) {
                        touched.push(room_sid);
                    }
                    calls.insert(room_sid.to_owned(), call);
                }
            }
        }
        store::remember_events(tx, &remembered).await?;
        let states: Vec<&CallState> = touched.iter().map(|r| &calls[*r]).collect();
        store::save_calls(tx, &states).await?;
        Ok(results)
    }

    /// Queues a call's VoiceKit events in the outbox, in the transaction of their cause.
    async fn queue(
        &self,
        tx: &mut Tx,
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
            store::enqueue(
                tx,
                &NewDelivery {
                    webhook_id: &new_webhook_id(),
                    call_id: call.call_id,
                    seq: kind.seq(),
                    event_type: kind.as_str(),
                    workflow_id: call.workflow_id,
                    payload: &payload,
                    recording: recording.as_deref(),
                },
            )
            .await?;
            let has_hook = || {
                self.workflows
                    .load()
                    .iter()
                    .any(|w| w.id == call.workflow_id && w.call_started_hook.is_some())
            };
            if kind == EventKind::CallStarted && has_hook() {
                // The hook gets the call_started payload too, as its own outbox row
                // (seq 0): it never holds up the call's events.
                store::enqueue(
                    tx,
                    &NewDelivery {
                        webhook_id: &new_webhook_id(),
                        call_id: call.call_id,
                        seq: 0,
                        event_type: store::HOOK_EVENT,
                        workflow_id: call.workflow_id,
                        payload: &payload,
                        recording: None,
                    },
                )
                .await?;
            }
            tracing::info!(
                call_id = call.call_id,
                event = kind.as_str(),
                "queued VoiceKit event"
            );
        }
        Ok(())
    }
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
fn new_webhook_id() -> String {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("msg_{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_ne!(a, new_webhook_id());
    }
}
