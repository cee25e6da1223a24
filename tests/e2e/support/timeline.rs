//! Many calls on one clock, for tests that post many and tell what arrived by its
//! timestamp: call `i` is created 60 s after call `i - 1`, its agent joins 1.5 s in and
//! its room finishes 30 s in, so each VoiceKit timestamp names exactly one call and event.

use super::lk::{Participant, Room};

pub struct Timeline {
    base_ms: i64,
}

impl Timeline {
    /// Calls from `base_ms` on (LiveKit's clock).
    pub const fn new(base_ms: i64) -> Timeline {
        Timeline { base_ms }
    }

    pub fn created_ms(&self, i: usize) -> i64 {
        self.base_ms + i as i64 * 60_000
    }

    pub fn agent_joined_ms(&self, i: usize) -> i64 {
        self.created_ms(i) + 1_500
    }

    pub fn finished_s(&self, i: usize) -> i64 {
        (self.created_ms(i) + 30_000) / 1000
    }

    /// Call `i`'s room, `tag` in its name, mapped by the test config's first workflow.
    pub fn room(&self, tag: &str, i: usize) -> Room {
        Room::new(
            &format!("RM_{tag}{i:03}"),
            &format!("VOICEKIT_workflow_{tag}{i:03}_{i}"),
            self.created_ms(i),
        )
    }

    /// Call `i`'s agent, joining at [`Timeline::agent_joined_ms`].
    pub fn agent(&self, i: usize) -> Participant {
        Participant::agent(&format!("PA_agent{i}"), "agent", self.agent_joined_ms(i))
    }
}
