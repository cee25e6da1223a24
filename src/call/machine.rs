//! The call state machine: (call state, LiveKit event) -> (new state, VoiceKit events).
//!
//! LiveKit tells us about rooms, participants and egresses; VoiceKit customers want to
//! hear about calls. This is where one becomes the other: when a call starts (the agent
//! connects), when it ends and for how long, and when its recording is final. Ordering
//! is decided here too: `call_finalized` waits for `call_ended`, which always follows
//! `call_started`, however LiveKit's two queues interleave.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::voicekit::{
    CallEndedData, CallFinalizedData, CallStartedData, EgressInfoData, VoiceKitEvent,
    duration_minutes,
};
use crate::{
    config::Workflow,
    livekit::{
        event::{EgressInfo, Participant, WebhookEvent},
        time::{EARLIEST_MS, nanos_from_ms, sane_ms, sane_nanos},
    },
};

/// Everything the bridge remembers about one call (one LiveKit room instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    pub(crate) call_id: i64,
    pub(crate) call_slug: String,
    pub(crate) workflow_id: i64,
    pub(crate) workflow_slug: String,
    pub(crate) organization_id: i64,
    pub(crate) room_sid: String,
    pub(crate) room_name: String,
    pub(crate) room_created_at_ms: Option<i64>,
    /// The room's metadata as LiveKit last reported it (runtime data is merged into it).
    #[serde(default)]
    pub(crate) room_metadata: String,
    pub(crate) metadata_phone: Option<String>,
    pub(crate) sip_phone: Option<String>,
    /// Participants in the room now, egress recorders excluded.
    pub(crate) present: BTreeSet<String>,
    pub(crate) last_left_at_ms: Option<i64>,
    pub(crate) started_at_ms: Option<i64>,
    pub(crate) ended_at_ms: Option<i64>,
    pub(crate) duration_seconds: Option<i64>,
    /// Egresses seen for this room, for reconciling one whose end never arrives.
    pub(crate) egress_ids: BTreeSet<String>,
    /// The first egress to end; it decides `call_finalized`.
    pub(crate) egress: Option<EgressOutcome>,
    pub(crate) finalized: bool,
    /// What the bridge had to repair because LiveKit lost an event, for the operator.
    #[serde(default)]
    pub(crate) repairs: Vec<String>,
}

/// Events the bridge itself raises when LiveKit's never came (its webhook queue is in
/// memory and drops events): they act like LiveKit's own and are noted on the call.
pub(crate) const REPAIR_ROOM_FINISHED: &str = "bridge_room_timeout";
pub(crate) const REPAIR_EGRESS_ENDED: &str = "bridge_egress_reconciled";

/// Whether an event type can change a call; others are acknowledged and ignored.
pub(crate) fn concerns_calls(event: &str) -> bool {
    matches!(
        event,
        "room_started"
            | "room_finished"
            | "participant_joined"
            | "participant_left"
            | "participant_connection_aborted"
            | "egress_started"
            | "egress_updated"
            | "egress_ended"
            | REPAIR_ROOM_FINISHED
            | REPAIR_EGRESS_ENDED
    )
}

/// How the call's recording ended, as far as `call_finalized` needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EgressOutcome {
    pub(crate) at_ms: i64,
    pub(crate) info: EgressInfoData,
    pub(crate) file: Option<RecordingFile>,
}

/// A recording the egress says it uploaded, to be confirmed and turned into a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordingFile {
    pub(crate) filename: String,
    pub(crate) location: String,
}

/// What the call wants sent; `recording` is set on `call_finalized` when a URL must be
/// published for a file before delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub(crate) event: VoiceKitEvent,
    pub(crate) recording: Option<RecordingFile>,
}

/// The result of applying one LiveKit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: CallState,
    pub emitted: Vec<Emitted>,
}

/// The room's phase, for listing calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Waiting,
    InProgress,
    Ended,
    Finalized,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::InProgress => "in_progress",
            Phase::Ended => "ended",
            Phase::Finalized => "finalized",
        }
    }
}

impl CallState {
    /// A new call for a room, before any event is applied.
    pub fn new(
        call_id: i64,
        call_slug: String,
        workflow: &Workflow,
        room_sid: &str,
        room_name: &str,
    ) -> CallState {
        CallState {
            call_id,
            call_slug,
            workflow_id: workflow.id,
            workflow_slug: workflow.slug.clone(),
            organization_id: workflow.organization_id,
            room_sid: room_sid.to_owned(),
            room_name: room_name.to_owned(),
            room_created_at_ms: None,
            room_metadata: String::new(),
            metadata_phone: None,
            sip_phone: None,
            present: BTreeSet::new(),
            last_left_at_ms: None,
            started_at_ms: None,
            ended_at_ms: None,
            duration_seconds: None,
            egress_ids: BTreeSet::new(),
            egress: None,
            finalized: false,
            repairs: Vec::new(),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        match (self.started_at_ms, self.ended_at_ms, self.finalized) {
            (_, _, true) => Phase::Finalized,
            (_, Some(_), false) => Phase::Ended,
            (Some(_), None, false) => Phase::InProgress,
            (None, None, false) => Phase::Waiting,
        }
    }

    /// The SIP caller's number when one is in the room, else the room metadata's.
    pub(crate) fn phone_number(&self) -> Option<String> {
        self.sip_phone
            .clone()
            .or_else(|| self.metadata_phone.clone())
    }

    /// Applies one LiveKit event. Events that do not matter leave the state as it was.
    ///
    /// Times come from LiveKit's clocks when they are believable (see
    /// [`crate::livekit::time`]), else from the other times LiveKit gave, else from
    /// when the event was received: every timestamp emitted lies in the sane window, and
    /// a call never ends before it started.
    /// Applies events in order: the final state and everything emitted on the way.
    #[cfg(test)]
    pub(crate) fn apply_all(self, events: &[WebhookEvent]) -> (CallState, Vec<Emitted>) {
        events
            .iter()
            .fold((self, Vec::new()), |(state, mut out), event| {
                let t = state.apply(event);
                out.extend(t.emitted);
                (t.state, out)
            })
    }

    pub fn apply(mut self, event: &WebhookEvent) -> Transition {
        let mut emitted = Vec::new();
        let at_ms = event.created_at_ms().or(event.received_at_ms());
        // A state stored by an older version may hold times from outside the window.
        self.room_created_at_ms = self.room_created_at_ms.and_then(sane_ms);
        self.last_left_at_ms = self.last_left_at_ms.and_then(sane_ms);

        if let Some(room) = &event.room {
            if self.room_created_at_ms.is_none() {
                self.room_created_at_ms = room.created_at_ms();
            }
            // LiveKit repeats the room's metadata in every event; what is already the
            // state's gave its phone number already (parsing it again was a tenth of
            // the ingest writer's instructions).
            if !room.metadata.is_empty() && room.metadata != self.room_metadata {
                self.room_metadata.clone_from(&room.metadata);
                if let Some(phone) = super::workflow::metadata_phone_number(&room.metadata) {
                    self.metadata_phone = Some(phone);
                }
            }
        }

        let kind = match event.event.as_str() {
            REPAIR_ROOM_FINISHED if self.ended_at_ms.is_none() => {
                self.repairs.push(
                    "ended by the bridge: the room stayed empty and no room_finished came".into(),
                );
                "room_finished"
            }
            REPAIR_EGRESS_ENDED if self.egress.is_none() => {
                self.repairs.push(
                    "egress end taken from LiveKit's ListEgress: no egress_ended came".into(),
                );
                "egress_ended"
            }
            other => other,
        };
        let participant = event.participant.as_ref().filter(|p| p.kind() != "EGRESS");
        match kind {
            "participant_joined" if self.ended_at_ms.is_none() => {
                if let Some(p) = participant {
                    self.present.insert(p.sid.clone());
                    self.note_phone(p);
                    if p.kind() == "AGENT"
                        && self.started_at_ms.is_none()
                        && let Some(start) = p.joined_at_ms().or(at_ms)
                    {
                        emitted.push(self.start(start));
                    }
                }
            }
            "participant_left" | "participant_connection_aborted" if self.ended_at_ms.is_none() => {
                if let Some(p) = participant {
                    let was_present = self.present.remove(&p.sid);
                    // LiveKit loses joins: the caller's number may come only now.
                    self.note_phone(p);
                    // A participant who left was in the room, join seen or not; one
                    // whose connection was aborted was not, unless it had joined.
                    let departed = kind == "participant_left" || was_present;
                    if departed && let Some(left) = at_ms {
                        self.last_left_at_ms =
                            Some(self.last_left_at_ms.map_or(left, |l| l.max(left)));
                    }
                }
            }
            "room_finished" if self.ended_at_ms.is_none() => {
                let finished = event
                    .created_at_ms()
                    .or(event.received_at_ms())
                    .or(self.last_left_at_ms)
                    .or(self.room_created_at_ms)
                    .or(self.started_at_ms.and_then(sane_ms))
                    .unwrap_or(EARLIEST_MS);
                if self.started_at_ms.is_none() {
                    // No agent ever joined: the call still started, when the room did.
                    let created = self.room_created_at_ms.filter(|c| *c <= finished);
                    emitted.push(self.start(created.unwrap_or(finished)));
                }
                let end = match self.last_left_at_ms {
                    Some(left) if self.present.is_empty() => left,
                    _ => finished,
                };
                emitted.push(self.end(end));
                emitted.extend(self.finalize());
            }
            "egress_started" | "egress_updated" => {
                if let Some(info) = &event.egress_info {
                    self.egress_ids.insert(info.egress_id.clone());
                }
            }
            "egress_ended" => {
                if let Some(info) = &event.egress_info {
                    self.egress_ids.insert(info.egress_id.clone());
                    if self.egress.is_none() {
                        self.egress = Some(self.outcome(info, event));
                        emitted.extend(self.finalize());
                    }
                }
            }
            _ => {}
        }
        Transition {
            state: self,
            emitted,
        }
    }

    /// Keeps the first SIP participant's number, from whichever event brings it.
    fn note_phone(&mut self, p: &Participant) {
        if self.sip_phone.is_none() {
            self.sip_phone = p.sip_phone_number().map(str::to_owned);
        }
    }

    fn start(&mut self, at_ms: i64) -> Emitted {
        self.started_at_ms = Some(at_ms);
        Emitted {
            event: VoiceKitEvent::CallStarted {
                at_ms,
                data: CallStartedData {
                    call_id: self.call_id,
                    workflow_slug: self.workflow_slug.clone(),
                    phone_number: self.phone_number(),
                },
            },
            recording: None,
        }
    }

    fn end(&mut self, end_ms: i64) -> Emitted {
        let start = self.started_at_ms.and_then(sane_ms).unwrap_or(end_ms);
        let end_ms = end_ms.max(start);
        // Both are sane times, so the difference cannot overflow.
        let seconds = (end_ms - start) / 1000;
        self.ended_at_ms = Some(end_ms);
        self.duration_seconds = Some(seconds);
        Emitted {
            event: VoiceKitEvent::CallEnded {
                at_ms: end_ms,
                data: CallEndedData {
                    call_id: self.call_id,
                    workflow_slug: self.workflow_slug.clone(),
                    phone_number: self.phone_number(),
                    duration_seconds: seconds,
                    duration_minutes: duration_minutes(seconds),
                },
            },
            recording: None,
        }
    }

    /// `call_finalized`, once both the call has ended and its first egress has.
    fn finalize(&mut self) -> Option<Emitted> {
        if self.finalized || self.ended_at_ms.is_none() {
            return None;
        }
        let outcome = self.egress.clone()?;
        self.finalized = true;
        Some(Emitted {
            event: VoiceKitEvent::CallFinalized {
                at_ms: outcome.at_ms,
                data: CallFinalizedData {
                    call_id: self.call_id,
                    call_slug: self.call_slug.clone(),
                    recording_url: None,
                    workflow_id: self.workflow_id,
                    organization_id: self.organization_id,
                    egress_info: outcome.info,
                },
            },
            recording: outcome.file,
        })
    }

    /// What an ended egress comes to. LiveKit may leave `endedAt` out or report a
    /// negative duration (an egress that stopped abnormally): times fall back to the
    /// file's, then to the egress's last update, then to the event's own time, so
    /// `ended_at` is always a real time, `started_at` never after it, and `duration`
    /// and `file_size` never negative.
    fn outcome(&self, info: &EgressInfo, event: &WebhookEvent) -> EgressOutcome {
        let file = info.file();
        let publishable = matches!(info.status(), "EGRESS_COMPLETE" | "EGRESS_LIMIT_REACHED");
        let at_ms = info
            .ended_at_ms()
            .or(event.created_at_ms())
            .or(event.received_at_ms())
            .or(self.ended_at_ms.and_then(sane_ms))
            .unwrap_or(EARLIEST_MS);
        let sane = |ns: Option<i64>| ns.and_then(sane_nanos);
        let ended_ns = info
            .ended_at_ns()
            .or_else(|| sane(file.and_then(|f| f.ended_at)))
            .or_else(|| sane(info.updated_at))
            .unwrap_or_else(|| nanos_from_ms(at_ms));
        let file_duration = file.and_then(|f| f.duration).filter(|d| *d >= 0);
        let started_ns = info
            .started_at_ns()
            .or_else(|| sane(file.and_then(|f| f.started_at)))
            .or_else(|| file_duration.and_then(|d| sane(ended_ns.checked_sub(d))))
            .or_else(|| self.started_at_ms.and_then(sane_ms).map(nanos_from_ms))
            .unwrap_or(ended_ns)
            .min(ended_ns);
        let duration = file.map_or(0, |f| {
            file_duration
                .or_else(|| {
                    let (start, end) = (sane(f.started_at)?, sane(f.ended_at)?);
                    Some(end - start).filter(|d| *d >= 0)
                })
                .unwrap_or(ended_ns - started_ns)
        });
        EgressOutcome {
            at_ms,
            info: EgressInfoData {
                egress_id: info.egress_id.clone(),
                room_id: non_empty(&info.room_id)
                    .unwrap_or(&self.room_sid)
                    .to_owned(),
                room_name: non_empty(&info.room_name)
                    .unwrap_or(&self.room_name)
                    .to_owned(),
                status: info.status().to_owned(),
                started_at: started_ns.to_string(),
                ended_at: ended_ns.to_string(),
                duration: duration.to_string(),
                file_size: file
                    .and_then(|f| f.size)
                    .filter(|s| *s >= 0)
                    .unwrap_or(0)
                    .to_string(),
                file_type: file.and_then(|f| {
                    file_extension(&f.filename).or_else(|| file_extension(&f.location))
                }),
            },
            file: file.filter(|_| publishable).map(|f| RecordingFile {
                filename: f.filename.clone(),
                location: f.location.clone(),
            }),
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// `ogg` for `recordings/room/2025-10-23T154929.ogg` (query strings ignored).
fn file_extension(path: &str) -> Option<String> {
    let path = path.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::voicekit::EventKind;
    use serde_json::json;

    use crate::testkit::workflow::sample_workflow as workflow;

    const ROOM: &str = "RM_kfWfYGzHvVYy";
    const START_MS: i64 = 1_761_234_567_123;

    fn call() -> CallState {
        CallState::new(
            123,
            "abc12345".into(),
            &workflow(),
            ROOM,
            "VOICEKIT_workflow_abc12345_8453",
        )
    }

    fn room() -> serde_json::Value {
        json!({"sid": ROOM, "name": "VOICEKIT_workflow_abc12345_8453",
               "creationTime": (START_MS / 1000).to_string(), "creationTimeMs": START_MS.to_string()})
    }

    fn ev(value: serde_json::Value) -> WebhookEvent {
        serde_json::from_value(value).unwrap()
    }

    fn joined(sid: &str, kind: Option<&str>, joined_ms: i64) -> WebhookEvent {
        let mut p = json!({"sid": sid, "identity": sid, "joinedAtMs": joined_ms.to_string(),
                           "attributes": {"sip.phoneNumber": "+15551230001"}});
        if let Some(k) = kind {
            p["kind"] = json!(k);
        }
        ev(
            json!({"event": "participant_joined", "room": room(), "participant": p,
                  "createdAt": (joined_ms / 1000).to_string()}),
        )
    }

    fn left(sid: &str, kind: Option<&str>, at_s: i64) -> WebhookEvent {
        let mut p = json!({"sid": sid});
        if let Some(k) = kind {
            p["kind"] = json!(k);
        }
        ev(
            json!({"event": "participant_left", "room": room(), "participant": p,
                  "createdAt": at_s.to_string()}),
        )
    }

    fn finished(at_s: i64) -> WebhookEvent {
        ev(json!({"event": "room_finished", "room": room(), "createdAt": at_s.to_string()}))
    }

    fn egress_ended(status: &str, with_file: bool) -> WebhookEvent {
        let mut info = json!({"egressId": "EG_dmi8xHQYNX6r", "roomId": ROOM,
            "roomName": "VOICEKIT_workflow_abc12345_8453", "status": status,
            "startedAt": "1749599674369480049", "endedAt": "1749599765791839485"});
        if with_file {
            info["fileResults"] = json!([{"filename": "rec/a.ogg", "duration": "88756989820",
                "size": "1442477", "location": "https://b.s3.amazonaws.com/rec/a.ogg"}]);
        }
        ev(
            json!({"event": "egress_ended", "room": {"sid": ROOM}, "egressInfo": info,
                  "createdAt": "1749599766"}),
        )
    }

    /// Applies events in order, collecting everything emitted.
    fn run(events: &[WebhookEvent]) -> (CallState, Vec<Emitted>) {
        call().apply_all(events)
    }

    fn kinds(out: &[Emitted]) -> Vec<EventKind> {
        out.iter().map(|e| e.event.kind()).collect()
    }

    fn duration_of(out: &[Emitted]) -> (i64, i64) {
        out.iter()
            .find_map(|e| match &e.event {
                VoiceKitEvent::CallEnded { data, .. } => {
                    Some((data.duration_seconds, data.duration_minutes))
                }
                _ => None,
            })
            .expect("call_ended emitted")
    }

    /// A call whose agent joins at START and whose last participant leaves `secs` later.
    fn call_lasting(secs: i64) -> Vec<Emitted> {
        let agent_ms = START_MS + 877; // a whole second boundary: 1761234568000
        let (_, out) = run(&[
            joined("PA_agent", Some("AGENT"), agent_ms),
            left("PA_agent", Some("AGENT"), agent_ms / 1000 + secs),
            finished(agent_ms / 1000 + secs + 20),
        ]);
        out
    }

    #[test]
    fn durations_round_up_to_whole_minutes_with_a_minimum_of_one() {
        for (secs, minutes) in [(0, 1), (59, 1), (60, 1), (61, 2), (150, 3)] {
            assert_eq!(
                duration_of(&call_lasting(secs)),
                (secs, minutes),
                "{secs} s"
            );
        }
    }

    #[test]
    fn a_full_call_emits_started_ended_finalized_in_order() {
        let (state, out) = run(&[
            ev(json!({"event": "room_started", "room": room(), "createdAt": "1761234567"})),
            joined("PA_sip", Some("SIP"), START_MS + 1_333),
            joined("PA_agent", Some("AGENT"), START_MS + 2_000),
            left("PA_sip", Some("SIP"), 1_761_234_717),
            left("PA_agent", Some("AGENT"), 1_761_234_718),
            finished(1_761_234_740),
            egress_ended("EGRESS_COMPLETE", true),
        ]);
        assert_eq!(
            kinds(&out),
            [
                EventKind::CallStarted,
                EventKind::CallEnded,
                EventKind::CallFinalized
            ]
        );
        let VoiceKitEvent::CallStarted { at_ms, data } = &out[0].event else {
            panic!()
        };
        assert_eq!(*at_ms, START_MS + 2_000);
        assert_eq!(data.phone_number.as_deref(), Some("+15551230001"));
        // Ends when the last participant left, not when the room closed.
        assert_eq!(duration_of(&out).0, 148);
        assert_eq!(out[2].recording.as_ref().unwrap().filename, "rec/a.ogg");
        assert_eq!(state.phase(), Phase::Finalized);
    }

    #[test]
    fn egress_before_room_finished_waits_for_call_ended() {
        let (_, out) = run(&[
            joined("PA_agent", Some("AGENT"), START_MS),
            egress_ended("EGRESS_COMPLETE", true),
        ]);
        assert_eq!(kinds(&out), [EventKind::CallStarted]);
        let (_, out) = run(&[
            joined("PA_agent", Some("AGENT"), START_MS),
            egress_ended("EGRESS_COMPLETE", true),
            finished(START_MS / 1000 + 30),
        ]);
        assert_eq!(
            kinds(&out),
            [
                EventKind::CallStarted,
                EventKind::CallEnded,
                EventKind::CallFinalized
            ]
        );
    }

    #[test]
    fn duplicates_change_nothing() {
        let agent = joined("PA_agent", Some("AGENT"), START_MS);
        let (_, out) = run(&[
            agent.clone(),
            agent,
            finished(START_MS / 1000 + 10),
            finished(START_MS / 1000 + 99),
            egress_ended("EGRESS_COMPLETE", true),
            egress_ended("EGRESS_FAILED", false),
        ]);
        assert_eq!(
            kinds(&out),
            [
                EventKind::CallStarted,
                EventKind::CallEnded,
                EventKind::CallFinalized
            ]
        );
        let VoiceKitEvent::CallFinalized { data, .. } = &out[2].event else {
            panic!()
        };
        assert_eq!(
            data.egress_info.status, "EGRESS_COMPLETE",
            "first egress decides"
        );
    }

    #[test]
    fn failed_egress_finalizes_without_recording() {
        let (_, out) = run(&[
            joined("PA_agent", Some("AGENT"), START_MS),
            finished(START_MS / 1000 + 10),
            egress_ended("EGRESS_FAILED", true),
        ]);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[2].recording, None,
            "FAILED publishes no URL even with a file"
        );
        let VoiceKitEvent::CallFinalized { at_ms, data } = &out[2].event else {
            panic!()
        };
        assert_eq!(*at_ms, 1_749_599_765_791);
        assert_eq!(data.egress_info.status, "EGRESS_FAILED");
        assert_eq!(data.egress_info.file_type.as_deref(), Some("ogg"));
        assert_eq!(data.egress_info.duration, "88756989820");

        let (_, out) = run(&[
            finished(START_MS / 1000 + 10),
            egress_ended("EGRESS_ABORTED", false),
        ]);
        let VoiceKitEvent::CallFinalized { data, .. } = &out[2].event else {
            panic!()
        };
        assert_eq!(
            (
                data.egress_info.file_size.as_str(),
                data.egress_info.file_type.as_deref()
            ),
            ("0", None)
        );
        assert_eq!(out[2].recording, None);
    }

    #[test]
    fn limit_reached_with_a_file_publishes_it() {
        let (_, out) = run(&[
            finished(START_MS / 1000 + 10),
            egress_ended("EGRESS_LIMIT_REACHED", true),
        ]);
        assert!(out[2].recording.is_some());
    }

    #[test]
    fn no_agent_still_starts_at_room_creation_before_ending() {
        let (_, out) = run(&[
            ev(json!({"event": "room_started", "room": room(), "createdAt": "1761234567"})),
            joined("PA_sip", Some("SIP"), START_MS + 500),
            left("PA_sip", Some("SIP"), START_MS / 1000 + 45),
            finished(START_MS / 1000 + 70),
        ]);
        assert_eq!(kinds(&out), [EventKind::CallStarted, EventKind::CallEnded]);
        let VoiceKitEvent::CallStarted { at_ms, .. } = &out[0].event else {
            panic!()
        };
        assert_eq!(*at_ms, START_MS);
        assert_eq!(duration_of(&out), (44, 1));
    }

    #[test]
    fn egress_participants_do_not_hold_the_call_open() {
        let (_, out) = run(&[
            joined("PA_agent", Some("AGENT"), START_MS),
            joined("EG_rec", Some("EGRESS"), START_MS + 100),
            left("PA_agent", Some("AGENT"), START_MS / 1000 + 61),
            finished(START_MS / 1000 + 200),
        ]);
        assert_eq!(duration_of(&out), (60, 1));
    }

    #[test]
    fn participant_still_present_at_room_finished_ends_at_room_finished() {
        let (_, out) = run(&[
            joined("PA_agent", Some("AGENT"), START_MS),
            joined("PA_sip", Some("SIP"), START_MS),
            left("PA_sip", Some("SIP"), START_MS / 1000 + 10),
            finished(START_MS / 1000 + 100),
        ]);
        assert_eq!(duration_of(&out).0, 99);
    }

    #[test]
    fn phone_number_falls_back_to_metadata_then_null() {
        let mut r = room();
        r["metadata"] = json!(r#"{"phone_number":"+15559990000"}"#);
        let (_, out) = run(&[ev(json!({"event": "participant_joined", "room": r,
            "participant": {"sid": "PA_agent", "kind": "AGENT", "joinedAtMs": START_MS.to_string()}}))]);
        let VoiceKitEvent::CallStarted { data, .. } = &out[0].event else {
            panic!()
        };
        assert_eq!(data.phone_number.as_deref(), Some("+15559990000"));
        let (_, out) = run(&[ev(json!({"event": "participant_joined", "room": room(),
            "participant": {"sid": "PA_agent", "kind": "AGENT", "joinedAtMs": START_MS.to_string()}}))]);
        let VoiceKitEvent::CallStarted { data, .. } = &out[0].event else {
            panic!()
        };
        assert_eq!(data.phone_number, None);
    }

    #[test]
    fn metadata_seen_before_changes_nothing_and_new_metadata_keeps_a_known_phone() {
        let with_phone = |metadata: &str| {
            let mut r = room();
            r["metadata"] = json!(metadata);
            ev(json!({"event": "track_published", "room": r}))
        };
        let phone = r#"{"phone_number":"+15559990000","agent":"a"}"#;
        let once = call().apply(&with_phone(phone)).state;
        assert_eq!(once.metadata_phone.as_deref(), Some("+15559990000"));
        assert_eq!(once.clone().apply(&with_phone(phone)).state, once);
        let other = once.apply(&with_phone(r#"{"agent":"b"}"#)).state;
        assert_eq!(other.room_metadata, r#"{"agent":"b"}"#);
        assert_eq!(other.metadata_phone.as_deref(), Some("+15559990000"));
    }

    #[test]
    fn unknown_events_change_nothing() {
        let before = call();
        let t = before.clone().apply(&ev(
            json!({"event": "track_published", "room": {"sid": ROOM}}),
        ));
        assert_eq!(t.emitted, vec![]);
        let t2 = before.clone().apply(&ev(json!({"event": "something_new"})));
        assert_eq!(t2.state, before);
    }

    #[test]
    fn repairs_act_like_livekit_events_and_are_noted() {
        let mut timeout = finished(START_MS / 1000 + 40);
        timeout.event = REPAIR_ROOM_FINISHED.into();
        let mut reconciled = egress_ended("EGRESS_COMPLETE", true);
        reconciled.event = REPAIR_EGRESS_ENDED.into();
        let (state, out) = run(&[
            joined("PA_agent", Some("AGENT"), START_MS),
            left("PA_agent", Some("AGENT"), START_MS / 1000 + 30),
            timeout.clone(),
            reconciled.clone(),
            timeout,
            reconciled,
        ]);
        assert_eq!(
            kinds(&out),
            [
                EventKind::CallStarted,
                EventKind::CallEnded,
                EventKind::CallFinalized
            ]
        );
        assert_eq!(duration_of(&out).0, 29);
        assert_eq!(state.repairs.len(), 2, "{:?}", state.repairs);
    }

    #[test]
    fn file_type_is_the_extension() {
        assert_eq!(
            file_extension("a/b/2025-10-23T154929.ogg").as_deref(),
            Some("ogg")
        );
        assert_eq!(
            file_extension("https://x/y.MP4?X-Amz=1").as_deref(),
            Some("mp4")
        );
        assert_eq!(file_extension("noext"), None);
    }
}
