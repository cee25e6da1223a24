//! Repairs for what LiveKit loses. Its webhook queue lives in memory: a restart or a
//! 30-second backlog drops events. A call whose `room_finished` never comes is ended
//! once its room has stayed empty long enough; a call whose egress never reports an end
//! is settled by asking LiveKit's Egress API. Repairs go through the same ingest path
//! as LiveKit's own events (dedupe, state machine, one transaction) and are noted on
//! the call.

use tokio_util::sync::CancellationToken;

use crate::{
    call::machine::{CallState, Phase, REPAIR_EGRESS_ENDED, REPAIR_ROOM_FINISHED},
    config::ReconcileConfig,
    ingest::Ingestor,
    livekit::{
        api::LiveKitApi,
        event::{Room, WebhookEvent},
    },
    store::{StaleCursor, Store, now_ms},
};

/// How many stale calls one read takes. A sweep pages through all of them, so calls
/// it must skip (someone still in the room, an egress still running) never hold up the
/// rest.
const PAGE: i64 = 200;

pub(crate) struct Reconciler {
    pub store: Store,
    pub ingestor: Ingestor,
    pub livekit: LiveKitApi,
    pub config: ReconcileConfig,
}

impl Reconciler {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let every = self.config.interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            self.sweep_empty_rooms().await;
            self.settle_egresses().await;
        }
    }

    /// Ends calls whose room has had nobody in it for `empty_room_timeout_secs`.
    pub(crate) async fn sweep_empty_rooms(&self) {
        let timeout_ms = self.config.empty_room_timeout.as_millis() as i64;
        let cutoff = now_ms() - timeout_ms;
        let phases = [Phase::Waiting.as_str(), Phase::InProgress.as_str()];
        let mut after = None;
        loop {
            let Some((calls, next)) = self.page(&phases, cutoff, after, "open").await else {
                return;
            };
            for call in calls {
                self.end_if_empty(&call, cutoff).await;
            }
            match next {
                Some(next) => after = Some(next),
                None => return,
            }
        }
    }

    /// One page of stale calls; `None` (logged) when the store cannot say.
    async fn page(
        &self,
        phases: &[&str],
        cutoff: i64,
        after: Option<StaleCursor>,
        what: &str,
    ) -> Option<(Vec<CallState>, Option<StaleCursor>)> {
        match self.store.stale_calls(phases, cutoff, after, PAGE).await {
            Ok(page) => Some((page.calls, page.next)),
            Err(e) => {
                tracing::error!(error = %e, "reconcile: cannot list {what} calls");
                None
            }
        }
    }

    /// Ends `call` if its room has stayed empty since before `cutoff`.
    async fn end_if_empty(&self, call: &CallState, cutoff: i64) {
        let empty_since = call.last_left_at_ms.or(call.room_created_at_ms);
        if !call.present.is_empty() || empty_since.is_some_and(|t| t > cutoff) {
            return;
        }
        let at_s = empty_since.map_or(now_ms(), |t| t) / 1000;
        tracing::warn!(call_id = call.call_id, room = %call.room_name,
            "ending a call whose room stayed empty: LiveKit never sent room_finished");
        self.submit(call, REPAIR_ROOM_FINISHED, at_s, None).await;
    }

    /// Asks LiveKit about egresses of ended calls whose `egress_ended` never came.
    pub(crate) async fn settle_egresses(&self) {
        let cutoff = now_ms() - self.config.egress_timeout.as_millis() as i64;
        let phases = [Phase::Ended.as_str()];
        let mut after = None;
        loop {
            let Some((calls, next)) = self.page(&phases, cutoff, after, "ended").await else {
                return;
            };
            for call in calls
                .iter()
                .filter(|c| c.egress.is_none() && !c.egress_ids.is_empty())
            {
                self.settle_egress(call).await;
            }
            match next {
                Some(next) => after = Some(next),
                None => return,
            }
        }
    }

    /// Settles `call` from `ListEgress` if LiveKit reports its egress over.
    async fn settle_egress(&self, call: &CallState) {
        let egresses = match self.livekit.list_egress(&call.room_name).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(call_id = call.call_id, error = %e, "reconcile: ListEgress failed; will try again");
                return;
            }
        };
        let ended = egresses.into_iter().find(|e| {
            call.egress_ids.contains(&e.egress_id)
                && matches!(
                    e.status(),
                    "EGRESS_COMPLETE" | "EGRESS_FAILED" | "EGRESS_ABORTED" | "EGRESS_LIMIT_REACHED"
                )
        });
        match ended {
            Some(info) => {
                tracing::warn!(call_id = call.call_id, egress_id = %info.egress_id, status = info.status(),
                    "finalizing from ListEgress: LiveKit never sent egress_ended");
                let at_s = info.ended_at.map_or(now_ms() * 1_000_000, |ns| ns) / 1_000_000_000;
                self.submit(call, REPAIR_EGRESS_ENDED, at_s, Some(info))
                    .await;
            }
            None => tracing::debug!(call_id = call.call_id, "reconcile: egress still running"),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use tokio::{sync::Notify, task::JoinSet};

    use super::*;
    use crate::{config::ApiKey, ingest::sample, store::test_stores};

    /// A LiveKit event for room `RM_<n>` (named `VK_c<n>_1`, of the sample workflow).
    fn event(id: String, kind: &str, n: usize, participant: bool) -> WebhookEvent {
        let mut body = json!({
            "id": id, "event": kind, "createdAt": "1761234570",
            "room": {"sid": format!("RM_{n}"), "name": format!("VK_c{n}_1"),
                     "creationTimeMs": "1761234567000"},
        });
        if participant {
            body["participant"] = json!({"sid": format!("PA_{n}"), "identity": "caller",
                                         "kind": "STANDARD", "joinedAtMs": "1761234568000"});
        }
        WebhookEvent::parse(body.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn calls_the_sweep_skips_never_hide_an_empty_room_behind_them_on_both_stores() {
        let (stores, _dir) = test_stores().await;
        for store in stores {
            let (writer, task) = store
                .start_writer(sample::workflows(), Arc::new(Notify::new()))
                .unwrap();
            let ingestor = Ingestor::new(writer);
            // More occupied rooms than one page, all touched before the empty one: the
            // least recently touched page is all calls the sweep must skip.
            let occupied = PAGE as usize + 20;
            let mut submits = JoinSet::new();
            for n in 0..occupied {
                let ingestor = ingestor.clone();
                submits.spawn(async move {
                    let started = event(format!("EV_s{n}"), "room_started", n, false);
                    ingestor.submit(started, format!("EV_s{n}")).await.unwrap();
                    let joined = event(format!("EV_j{n}"), "participant_joined", n, true);
                    ingestor.submit(joined, format!("EV_j{n}")).await.unwrap();
                });
            }
            while let Some(done) = submits.join_next().await {
                done.unwrap();
            }
            let empty = occupied;
            let started = event("EV_empty".into(), "room_started", empty, false);
            ingestor.submit(started, "EV_empty".into()).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;

            let reconciler = Reconciler {
                store: store.clone(),
                ingestor,
                livekit: LiveKitApi::new(
                    None,
                    ApiKey {
                        key: "key".into(),
                        secret: crate::config::Secret::new("secret-secret-secret-secret-32b"),
                    },
                ),
                config: ReconcileConfig {
                    interval: std::time::Duration::from_secs(30),
                    empty_room_timeout: std::time::Duration::ZERO,
                    egress_timeout: std::time::Duration::from_secs(900),
                },
            };
            reconciler.sweep_empty_rooms().await;

            let ended = store.list_calls(Some("ended"), 1000).await.unwrap();
            assert_eq!(
                ended
                    .iter()
                    .map(|c| c.room_sid.as_str())
                    .collect::<Vec<_>>(),
                vec![format!("RM_{empty}")],
                "only the empty room is ended"
            );
            let open = store
                .list_calls(Some("in_progress"), 1000)
                .await
                .unwrap()
                .len()
                + store.list_calls(Some("waiting"), 1000).await.unwrap().len();
            assert_eq!(open, occupied);
            drop(reconciler);
            task.await.unwrap();
        }
    }
}
