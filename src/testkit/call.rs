//! One whole call as LiveKit plays it: the room starts, a SIP caller and an agent join,
//! an audio egress records it, both leave, the room finishes and the egress ends.
//!
//! The timeline is fixed relative to the room's creation (the caller joins 1.2 s in,
//! the agent at 2 s, recording starts at 3 s; the caller leaves at 94 s, the agent at
//! 95 s, the room finishes at 96 s and the egress ends at 97 s), so the call the bridge
//! reports lasts 93 s from the agent joining to the last participant leaving. The
//! webhooks may be posted at once: only their timestamps tell the time.

use super::webhook::{self, FileResult, Participant, Room};

/// One webhook of a call, in the order LiveKit sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    RoomStarted,
    CallerJoined,
    AgentJoined,
    EgressStarted,
    CallerLeft,
    AgentLeft,
    RoomFinished,
    EgressEnded,
}

/// A whole call: 8 webhooks, 3 VoiceKit events.
pub const WHOLE_CALL: [Step; 8] = [
    Step::RoomStarted,
    Step::CallerJoined,
    Step::AgentJoined,
    Step::EgressStarted,
    Step::CallerLeft,
    Step::AgentLeft,
    Step::RoomFinished,
    Step::EgressEnded,
];

/// A call that is still going on: room up, caller and agent in it (`call_started`).
pub const CALL_START: [Step; 3] = [Step::RoomStarted, Step::CallerJoined, Step::AgentJoined];

/// The call's length as the bridge reports it: agent joined to last participant left.
pub const DURATION_SECS: i64 = 93;

const NS: i64 = 1_000_000_000;

/// The parties and recording of one call; [`Call::webhook`] writes each step's body.
#[derive(Clone, Debug)]
pub struct Call {
    /// The room; its `creation_time_ms` is the start of the timeline.
    pub room: Room,
    pub caller: Participant,
    pub agent: Participant,
    pub egress_id: String,
    /// The recording as the egress reports it when it ends.
    pub recording: FileResult,
}

impl Call {
    /// A call in `room` from `phone_number` to `trunk_phone_number`, recorded to
    /// `{location_base}/recordings/{room name}/{egress id}.ogg`.
    pub fn new(
        room: Room,
        phone_number: &str,
        trunk_phone_number: &str,
        location_base: &str,
    ) -> Call {
        let t0_ms = room.creation_time_ms / 1000 * 1000;
        let ids = webhook::new_event_id();
        let suffix = ids.trim_start_matches("EV_");
        let caller = Participant::sip(
            &format!("PA_c{suffix}"),
            phone_number,
            trunk_phone_number,
            t0_ms + 1_200,
        );
        let agent = Participant::agent(
            &format!("PA_a{suffix}"),
            &format!("agent-AJ_{suffix}"),
            t0_ms + 2_000,
        )
        .with_attribute("lk.agent.state", "listening")
        .with_attribute("lk.agent.name", "voicekit-agent");
        let egress_id = format!("EG_{suffix}");
        let filename = format!("recordings/{}/{egress_id}.ogg", room.name);
        let recording = FileResult {
            location: format!("{}/{filename}", location_base.trim_end_matches('/')),
            filename,
            duration_ns: DURATION_SECS * NS,
            size: 1_442_477,
        };
        Call {
            room,
            caller,
            agent,
            egress_id,
            recording,
        }
    }

    /// The body LiveKit sends for `step` of this call, with a fresh event id.
    pub fn webhook(&self, step: Step) -> String {
        let t0 = self.room.creation_time_ms / 1000;
        let room = |n| self.room.with_participants(n);
        let recording_started_ns = (t0 + 3) * NS;
        match step {
            Step::RoomStarted => webhook::room_started(&room(0), t0),
            Step::CallerJoined => webhook::participant_joined(&room(1), &self.caller, t0 + 1),
            Step::AgentJoined => webhook::participant_joined(&room(2), &self.agent, t0 + 2),
            Step::EgressStarted => webhook::egress_started(
                &self.room,
                &self.egress_id,
                recording_started_ns,
                &self.recording.filename,
            ),
            Step::CallerLeft => webhook::participant_left(&room(1), &self.caller, t0 + 94),
            Step::AgentLeft => webhook::participant_left(&room(0), &self.agent, t0 + 95),
            Step::RoomFinished => webhook::room_finished(&room(0), t0 + 96),
            Step::EgressEnded => webhook::egress_ended(
                &self.room,
                &self.egress_id,
                "EGRESS_COMPLETE",
                recording_started_ns,
                (t0 + 96) * NS + 987_654_321,
                Some(&self.recording),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn call() -> Call {
        let room = Room::new("RM_call", "VOICEKIT_workflow_abc12345_1", 1_761_234_567_123);
        Call::new(
            room,
            "+15551230001",
            "+15557650002",
            "https://b.s3.amazonaws.com/",
        )
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn the_steps_name_their_events_in_order_each_with_its_own_id() {
        let call = call();
        let bodies: Vec<Value> = WHOLE_CALL.iter().map(|&s| json(&call.webhook(s))).collect();
        let events: Vec<&str> = bodies
            .iter()
            .map(|b| b["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            events,
            [
                "room_started",
                "participant_joined",
                "participant_joined",
                "egress_started",
                "participant_left",
                "participant_left",
                "room_finished",
                "egress_ended"
            ]
        );
        let ids: std::collections::HashSet<&str> =
            bodies.iter().map(|b| b["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), WHOLE_CALL.len());
        let created: Vec<i64> = bodies
            .iter()
            .map(|b| b["createdAt"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(created.is_sorted(), "{created:?}");
    }

    #[test]
    fn the_agent_joins_and_the_last_participant_leaves_duration_secs_apart() {
        let call = call();
        let joined = json(&call.webhook(Step::AgentJoined));
        let left = json(&call.webhook(Step::AgentLeft));
        let joined_ms: i64 = joined["participant"]["joinedAtMs"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let left_s: i64 = left["createdAt"].as_str().unwrap().parse().unwrap();
        assert_eq!(left_s * 1000 - joined_ms, DURATION_SECS * 1000);
        assert_eq!(joined["participant"]["kind"], "AGENT");
        assert_eq!(joined["room"]["numParticipants"], 2);
    }

    #[test]
    fn the_egress_ends_with_the_recording_at_its_location() {
        let ended = json(&call().webhook(Step::EgressEnded));
        let file = &ended["egressInfo"]["fileResults"][0];
        assert_eq!(ended["egressInfo"]["status"], "EGRESS_COMPLETE");
        let key = format!(
            "recordings/VOICEKIT_workflow_abc12345_1/{}.ogg",
            call_egress(&ended)
        );
        assert_eq!(file["filename"], key.as_str());
        assert_eq!(
            file["location"],
            format!("https://b.s3.amazonaws.com/{key}").as_str()
        );
        assert_eq!(
            ended["room"].as_object().unwrap().len(),
            2,
            "only sid and name"
        );
    }

    fn call_egress(body: &Value) -> &str {
        body["egressInfo"]["egressId"].as_str().unwrap()
    }
}
