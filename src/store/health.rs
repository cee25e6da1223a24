//! Whether the store takes writes now. A full disk or a lost database fails commits
//! while reads still answer, so a ping alone would call the bridge ready while every
//! webhook is refused with 503. Every write through the [`super::Writer`] reports here;
//! readiness is lost at the first failed commit and comes back with the next good one
//! (or a probe write, `Store::probe_write`, that succeeds).

use std::sync::atomic::{AtomicU64, Ordering};

/// The latest write outcomes, by sequence number: failing while the latest failure
/// came after the latest success.
#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    sequence: AtomicU64,
    last_failure: AtomicU64,
    last_success: AtomicU64,
}

impl StoreHealth {
    pub(crate) fn failed(&self) {
        let n = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        self.last_failure.fetch_max(n, Ordering::AcqRel);
        crate::metrics::store_write_failed();
    }

    pub(crate) fn succeeded(&self) {
        let n = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        self.last_success.fetch_max(n, Ordering::AcqRel);
    }

    /// The latest write failed.
    pub(crate) fn failing(&self) -> bool {
        self.last_failure.load(Ordering::Acquire) > self.last_success.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_from_a_failed_write_until_the_next_good_one() {
        let health = StoreHealth::default();
        assert!(!health.failing());
        health.succeeded();
        health.failed();
        assert!(health.failing());
        health.failed();
        assert!(health.failing());
        health.succeeded();
        assert!(!health.failing());
    }
}
