//! Repairs for what LiveKit loses. Its webhook queue lives in memory: a restart or a
//! 30-second backlog drops events. A call whose `room_finished` never comes is ended
//! once its room has stayed empty long enough; a call whose egress never reports an end
//! is settled by asking LiveKit's Egress API. Repairs go through the same ingest path
//! as LiveKit's own events (dedupe, state machine, one transaction) and are noted on
//! the call.

use std::time::Duration;

use crate::{
    call::machine::{CallState, Phase, REPAIR_EGRESS_ENDED, REPAIR_ROOM_FINISHED},
    config::ReconcileConfig,
    ingest::Ingestor,
    livekit::{
        api::LiveKitApi,
        event::{Room, WebhookEvent},
    },
    shutdown::Shutdown,
    store::{Store, now_ms},
};

const BATCH: i64 = 200;

pub struct Reconciler {
    pub store: Store,
    pub ingestor: Ingestor,
    pub livekit: LiveKitApi,
    pub config: ReconcileConfig,
}

impl Reconciler {
    pub async fn run(self, mut shutdown: Shutdown) {
        let every = Duration::from_secs_f64(self.config.interval_secs);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
            self.sweep_empty_rooms().await;
            self.settle_egresses().await;
        }
    }

    /// Ends calls whose room has had nobody in it for `empty_room_timeout_secs`.
    pub async fn sweep_empty_rooms(&self) {
        let timeout_ms = (self.config.empty_room_timeout_secs * 1000.0) as i64;
        let cutoff = now_ms() - timeout_ms;
        let phases = [Phase::Waiting.as_str(), Phase::InProgress.as_str()];
        let calls = match self.store.stale_calls(&phases, cutoff, BATCH).await {
            Ok(calls) => calls,
            Err(e) => return tracing::error!(error = %e, "reconcile: cannot list open calls"),
        };
        for call in calls {
            let empty_since = call.last_left_at_ms.or(call.room_created_at_ms);
            if !call.present.is_empty() || empty_since.is_some_and(|t| t > cutoff) {
                continue;
            }
            let at_s = empty_since.map_or(now_ms(), |t| t) / 1000;
            tracing::warn!(call_id = call.call_id, room = %call.room_name,
                "ending a call whose room stayed empty: LiveKit never sent room_finished");
            self.submit(&call, REPAIR_ROOM_FINISHED, at_s, None).await;
        }
    }

    /// Asks LiveKit about egresses of ended calls whose `egress_ended` never came.
    pub async fn settle_egresses(&self) {
        let cutoff = now_ms() - (self.config.egress_timeout_secs * 1000.0) as i64;
        let calls = match self
            .store
            .stale_calls(&[Phase::Ended.as_str()], cutoff, BATCH)
            .await
        {
            Ok(calls) => calls,
            Err(e) => return tracing::error!(error = %e, "reconcile: cannot list ended calls"),
        };
        for call in calls
            .into_iter()
            .filter(|c| c.egress.is_none() && !c.egress_ids.is_empty())
        {
            let egresses = match self.livekit.list_egress(&call.room_name).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(call_id = call.call_id, error = %e, "reconcile: ListEgress failed; will try again");
                    continue;
                }
            };
            let ended = egresses.into_iter().find(|e| {
                call.egress_ids.contains(&e.egress_id)
                    && matches!(
                        e.status(),
                        "EGRESS_COMPLETE"
                            | "EGRESS_FAILED"
                            | "EGRESS_ABORTED"
                            | "EGRESS_LIMIT_REACHED"
                    )
            });
            match ended {
                Some(info) => {
                    tracing::warn!(call_id = call.call_id, egress_id = %info.egress_id, status = info.status(),
                        "finalizing from ListEgress: LiveKit never sent egress_ended");
                    let at_s = info.ended_at.map_or(now_ms() * 1_000_000, |ns| ns) / 1_000_000_000;
                    self.submit(&call, REPAIR_EGRESS_ENDED, at_s, Some(info))
                        .await;
                }
                None => tracing::debug!(call_id = call.call_id, "reconcile: egress still running"),
            }
        }
    }

    async fn submit(
        &self,
        call: &CallState,
        kind: &str,
        at_s: i64,
        egress: Option<crate::livekit::event::EgressInfo>,
    ) {
        let id = format!("{kind}:{}", call.room_sid);
        let event = WebhookEvent {
            event: kind.into(),
            id: Some(id.clone()),
            created_at: Some(at_s),
            room: Some(Room {
                sid: call.room_sid.clone(),
                name: call.room_name.clone(),
                ..Default::default()
            }),
            participant: None,
            egress_info: egress,
            received_at_ms: Some(now_ms()),
        };
        if let Err(e) = self.ingestor.submit(event, id).await {
            tracing::error!(call_id = call.call_id, error = %e, "reconcile: could not store the repair");
        }
    }
}
