//! The SQLite ingest writer's memory of the call states it last committed.
//!
//! Every webhook of a call needs the call's state, and the writer wrote that state
//! itself a batch or two earlier: reading the row back and parsing its 1.2 KB of JSON
//! is a large share of the writer's work, and the writer is ingest's one serial step.
//! So the writer keeps what it committed and reads the file only for calls it has not
//! got.
//!
//! The copy is only as good as the rule that nothing else changed the rows. SQLite
//! tells: `PRAGMA data_version` changes when another connection (the pool's prune, the
//! runtime-data update, the operator, another process) commits anything to the file.
//! The writer reads it inside each batch's `IMMEDIATE` transaction, where no one else
//! can commit, and forgets everything when it moved (the checkpoint task's `PASSIVE`
//! checkpoints do not move it; a `TRUNCATE` one would). States enter only once their
//! transaction committed; a state handed to a batch leaves the cache, so a batch that
//! fails leaves the next one to read the file.

use std::num::NonZeroUsize;

use lru::LruCache;

use crate::call::CallState;

/// How many calls the writer remembers: far more than are ever mid-batch, in a few
/// MiB. Beyond it the least recently written are forgotten (and read again).
pub(super) const CAPACITY: usize = 4096;

/// Call states by room sid, as committed by this connection.
pub(super) struct CallCache {
    states: LruCache<String, CallState>,
    /// `PRAGMA data_version` when the cache was last known to match the file.
    data_version: Option<i64>,
    #[cfg(test)]
    pub(crate) hits: u64,
}

impl CallCache {
    pub(super) fn new(capacity: usize) -> Self {
        CallCache {
            states: LruCache::new(NonZeroUsize::new(capacity).expect("capacity above 0")),
            data_version: None,
            #[cfg(test)]
            hits: 0,
        }
    }

    /// Starts a batch: when another connection committed since the last one
    /// (`data_version` moved), nothing remembered can be trusted.
    pub(super) fn check(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.states.clear();
            self.data_version = Some(data_version);
        }
    }

    /// The room's call state, taken out: the batch that uses it puts back what it commits.
    pub(super) fn take(&mut self, room_sid: &str) -> Option<CallState> {
        let state = self.states.pop(room_sid);
        #[cfg(test)]
        if state.is_some() {
            self.hits += 1;
        }
        state
    }

    /// Remembers states just committed. A finalized call expects nothing more worth
    /// the memory; a late event of it reads the file.
    pub(super) fn keep(&mut self, states: Vec<CallState>) {
        for state in states {
            if state.finalized {
                self.states.pop(&state.room_sid);
            } else {
                self.states.put(state.room_sid.clone(), state);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.states.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Workflow;

    fn state(room: &str) -> CallState {
        let wf = Workflow {
            id: 1,
            slug: "w".into(),
            organization_id: 2,
            events_webhook_url: "http://127.0.0.1:1/".into(),
            call_started_hook: None,
            room_pattern: None,
            signing_keys: vec![],
        };
        CallState::new(7, "slug".into(), &wf, room, "name")
    }

    #[test]
    fn a_taken_state_is_gone_until_kept_again() {
        let mut cache = CallCache::new(4);
        cache.check(1);
        cache.keep(vec![state("RM_a")]);
        assert_eq!(cache.take("RM_a"), Some(state("RM_a")));
        assert_eq!(
            cache.take("RM_a"),
            None,
            "a failed batch leaves nothing behind"
        );
        assert_eq!(cache.take("RM_b"), None);
    }

    #[test]
    fn a_commit_by_anyone_else_forgets_everything() {
        let mut cache = CallCache::new(4);
        cache.check(1);
        cache.keep(vec![state("RM_a"), state("RM_b")]);
        cache.check(1);
        assert_eq!(cache.len(), 2, "our own commits leave data_version alone");
        cache.check(2);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.take("RM_a"), None);
    }

    #[test]
    fn the_least_recently_written_go_first_and_finalized_calls_at_once() {
        let mut cache = CallCache::new(2);
        cache.check(1);
        cache.keep(vec![state("RM_a"), state("RM_b")]);
        cache.keep(vec![state("RM_a"), state("RM_c")]);
        assert_eq!(cache.take("RM_b"), None);
        assert!(cache.take("RM_a").is_some());
        let mut done = state("RM_c");
        done.finalized = true;
        cache.keep(vec![done]);
        assert_eq!(cache.take("RM_c"), None);
    }
}
