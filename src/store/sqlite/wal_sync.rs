//! The SQLite ingest writer's fsync, taken off the writer's thread.
//!
//! With `synchronous = FULL`, SQLite fsyncs the WAL inside every commit, and the
//! writer, the one serial step of ingest, would spend much of its time waiting for the
//! disk. Its connection runs `synchronous = NORMAL` instead, under which
//! a commit only writes its frames to the WAL (checkpoints still sync the WAL before
//! copying it and the database after), and a thread of its own fsyncs the WAL after
//! each commit, with `fdatasync`, while the writer goes on to the next batch. Nothing
//! is acknowledged until the sync that covers it returns: the durability of
//! `synchronous = FULL` (the WAL synced after every commit before anyone is told), one
//! batch later in the pipeline.
//!
//! Other connections see a commit before its sync. [`SyncHorizon`] keeps delivery off
//! the outbox rows of commits not yet synced: a customer never gets an event that a
//! power loss could then take back (its retry from LiveKit would make a new webhook id).

use std::{
    collections::VecDeque,
    fs::File,
    io,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
};

/// How the WAL is made durable: `fdatasync` on the `-wal` file, or a stand-in in tests.
#[derive(Clone)]
pub(super) struct WalSync(Arc<dyn Fn() -> io::Result<()> + Send + Sync>);

impl WalSync {
    /// Syncs the WAL of the database at `db` (`<db>-wal`, which SQLite keeps while a
    /// connection is open, so the writer's connection must be opened first).
    pub(super) fn of(db: &Path) -> io::Result<WalSync> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let file = File::open(&wal)?;
        Ok(WalSync(Arc::new(move || file.sync_data())))
    }

    /// A sync that runs `f` instead, for tests that hold it back or fail it.
    #[cfg(test)]
    pub fn with(f: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> WalSync {
        WalSync(Arc::new(f))
    }

    pub(super) fn sync(&self) -> io::Result<()> {
        (self.0)()
    }
}

/// Where delivery must stop reading the outbox: below the first row of the oldest
/// commit that is not yet synced ([`i64::MAX`] when every commit is).
#[derive(Clone, Debug)]
pub(crate) struct SyncHorizon {
    /// One entry per commit not yet synced, oldest first: its first outbox id, if it
    /// queued any.
    unsynced: Arc<Mutex<VecDeque<Option<i64>>>>,
    below: Arc<AtomicI64>,
}

impl Default for SyncHorizon {
    fn default() -> SyncHorizon {
        SyncHorizon {
            unsynced: Arc::default(),
            below: Arc::new(AtomicI64::new(i64::MAX)),
        }
    }
}

impl SyncHorizon {
    /// Outbox rows with an id at or above this may not be durable yet.
    pub(crate) fn below(&self) -> i64 {
        self.below.load(Ordering::Acquire)
    }

    /// Called before each commit, whose rows others see from the commit on; its first
    /// outbox id, if it queued any (ids only grow, so later rows are above it).
    pub(crate) fn committing(&self, first_outbox_id: Option<i64>) {
        let mut unsynced = self.unsynced.lock().expect("horizon lock");
        unsynced.push_back(first_outbox_id);
        self.publish(&unsynced);
    }

    /// Called when the commit announced last failed: none of its rows exist.
    pub(crate) fn withdraw(&self) {
        let mut unsynced = self.unsynced.lock().expect("horizon lock");
        unsynced.pop_back();
        self.publish(&unsynced);
    }

    /// Called once the oldest `commits` commits are synced (or failed: nothing of a
    /// failed commit is visible).
    pub(crate) fn synced(&self, commits: usize) {
        let mut unsynced = self.unsynced.lock().expect("horizon lock");
        let commits = commits.min(unsynced.len());
        unsynced.drain(..commits);
        self.publish(&unsynced);
    }

    fn publish(&self, unsynced: &VecDeque<Option<i64>>) {
        let below = unsynced
            .iter()
            .flatten()
            .next()
            .copied()
            .unwrap_or(i64::MAX);
        self.below.store(below, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_the_first_row_of_the_oldest_unsynced_commit() {
        let h = SyncHorizon::default();
        assert_eq!(h.below(), i64::MAX);
        h.committing(None);
        assert_eq!(
            h.below(),
            i64::MAX,
            "a commit that queued nothing holds nothing back"
        );
        h.committing(Some(10));
        h.committing(Some(14));
        assert_eq!(h.below(), 10);
        h.committing(Some(20));
        h.withdraw();
        assert_eq!(h.below(), 10, "a failed commit takes its own place back");
        h.synced(2);
        assert_eq!(h.below(), 14);
        h.synced(1);
        assert_eq!(h.below(), i64::MAX);
    }
}
