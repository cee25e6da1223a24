//! Accepting a verified LiveKit event: drop duplicates, find or create the call, run
//! the state machine, and commit the result with its outgoing events.
//!
//! What an event does is decided by [`plan`], with no I/O; the store's writer looks up
//! what the plan needs, and writes the plan in a transaction it shares with whatever
//! else has queued (`crate::store::Writer`). [`Ingestor`] is the door the webhook route
//! and the repairs use: it answers once the event is durable, and logs what it did.

pub(crate) mod plan;
#[cfg(test)]
pub(crate) mod sample;

pub(crate) use plan::{Accepted, Incoming};

use crate::{livekit::event::WebhookEvent, store::Writer};

/// Why an event was not accepted: the store failed, or its writer stopped.
pub(crate) use crate::store::WriteError as IngestError;

/// The handle request handlers submit events through.
#[derive(Clone)]
pub(crate) struct Ingestor {
    writer: Writer,
}

impl Ingestor {
    pub(crate) fn new(writer: Writer) -> Ingestor {
        Ingestor { writer }
    }

    /// Commits `event` and everything it causes; returns once that is durable.
    pub(crate) async fn submit(
        &self,
        event: WebhookEvent,
        dedupe_key: String,
    ) -> Result<Accepted, IngestError> {
        let accepted = self.writer.accept(Incoming { event, dedupe_key }).await?;
        // Logged here, once durable, by the task that asked, rather than on the
        // writer's thread, the one serial step of ingest: a slow log reader must not
        // stall it.
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
}

#[cfg(test)]
mod tests;
