//! Accepting a verified LiveKit event: drop duplicates, find or create the call, run
//! the state machine, and commit the result with its outgoing events.
//!
//! One writer task owns the write path. Requests queue to it and it commits whatever
//! has queued in one transaction (group commit): one fsync serves many webhooks, and
//! each request is answered only after the transaction holding its event committed.

use std::sync::Arc;

use rand::{Rng, distr::Alphanumeric};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{
    call::{CallState, workflow},
    config::SharedWorkflows,
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
        (Ingestor { commands }, tokio::spawn(writer.run(rx)))
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
        let mut tx = self.store.begin().await?;
        let mut results = Vec::with_capacity(batch.len());
        for cmd in batch {
            results.push(self.apply(&mut tx, &cmd.event, &cmd.dedupe_key).await?);
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn apply(
        &self,
        tx: &mut Tx,
        event: &WebhookEvent,
        key: &str,
    ) -> Result<Accepted, StoreError> {
        let room_sid = event.room_sid();
        if !store::remember_event(tx, key, &event.event, room_sid).await? {
            return Ok(Accepted::Duplicate);
        }
        let Some(room_sid) = room_sid else {
            return Ok(Accepted::Ignored("event concerns no room"));
        };
        let state = match store::call_by_room(tx, room_sid).await? {
            Some(state) => state,
            None => {
                let room_name = event.room_name().unwrap_or_default();
                let metadata = event
                    .room
                    .as_ref()
                    .map(|r| r.metadata.as_str())
                    .unwrap_or("");
                let workflows = self.workflows.load();
                let Some(assignment) = workflow::assign(&workflows, room_name, metadata) else {
                    return Ok(Accepted::Ignored("room maps to no workflow"));
                };
                let wf = workflows
                    .iter()
                    .find(|w| w.id == assignment.workflow_id)
                    .expect("assign returns configured workflows");
                let slug = assignment.call_slug.unwrap_or_else(random_slug);
                let call_id =
                    store::create_call(tx, room_sid, room_name, wf.id, &wf.slug, &slug).await?;
                tracing::info!(call_id, room = room_name, room_sid, workflow = %wf.slug, "new call");
                CallState::new(call_id, slug, wf, room_sid, room_name)
            }
        };
        let transition = state.apply(event);
        let call = &transition.state;
        store::save_call(tx, call).await?;
        store::link_event(tx, key, call.call_id).await?;
        for emitted in &transition.emitted {
            let kind = emitted.event.kind();
            let recording = emitted
                .recording
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?;
            store::enqueue(
                tx,
                &NewDelivery {
                    webhook_id: &new_webhook_id(),
                    call_id: call.call_id,
                    seq: kind.seq(),
                    event_type: kind.as_str(),
                    workflow_id: call.workflow_id,
                    payload: &emitted.event.to_json(),
                    recording: recording.as_deref(),
                },
            )
            .await?;
            tracing::info!(
                call_id = call.call_id,
                event = kind.as_str(),
                "queued VoiceKit event"
            );
        }
        Ok(Accepted::Applied {
            call_id: call.call_id,
            emitted: transition.emitted.len(),
        })
    }
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
