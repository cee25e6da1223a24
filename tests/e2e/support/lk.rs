//! LiveKit webhook bodies for the suite: the crate's testkit builders
//! (`voicekit_bridge::testkit::webhook`, the same ones `simulate` and the bench use),
//! plus what only this suite knows: the room its config maps.

pub use voicekit_bridge::testkit::webhook::*;

/// A fresh instance of a room the test config's first workflow (`room_pattern`) claims.
pub fn mapped_room() -> Room {
    let sid = new_event_id().replacen("EV_", "RM_", 1);
    Room::new(&sid, "VOICEKIT_workflow_abc12345_8453", 1_761_234_567_123)
}

/// The agent joining `room`: on a mapped room this alone causes `call_started`.
pub fn agent_joined(room: &Room) -> String {
    let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
    participant_joined(room, &agent, 1_761_234_569)
}
