//! Moving SQLite's WAL checkpoints off the commit path.
//!
//! By default the connection whose commit pushes the WAL past 1000 pages copies it back
//! into the database file, with its own fsyncs, before that commit returns: every few
//! hundred batches one batch of webhooks waited for a checkpoint, and that was the tail
//! of the webhook latency. The store's connections never checkpoint
//! (`wal_autocheckpoint = 0`); this task does, `PASSIVE`ly (it never blocks a writer), at
//! a steady pace. PostgreSQL checkpoints by itself.
//!
//! A checkpoint that runs beside a writer never finds every frame copied, and SQLite
//! only starts the WAL over when one does: during a burst the WAL would grow without
//! end. The SQLite writer therefore also checkpoints itself between batches
//! (`writer.rs`), which lets the WAL restart.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Backend, Store, StoreError};

/// How often the WAL is copied back when the ingest writer is not writing (deliveries'
/// outcomes, repairs, an idle store).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

impl Store {
    /// Copies what the WAL holds into the database file, without waiting for readers or
    /// writers; returns the (log, checkpointed) page counts.
    pub async fn checkpoint(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let Backend::Sqlite(db) = self.backend() else {
            return Ok(None);
        };
        let counts = db
            .pool
            .run(|c| {
                Ok(c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(1)?, r.get(2)?))
                })?)
            })
            .await?;
        Ok(Some(counts))
    }
}

/// Checkpoints a SQLite store every [`CHECKPOINT_INTERVAL`] until shutdown, and once more
/// on the way out.
pub async fn keep_checkpointed(store: Store, shutdown: CancellationToken) {
    if !matches!(store.backend(), Backend::Sqlite(_)) {
        return;
    }
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(CHECKPOINT_INTERVAL) => false,
            _ = shutdown.cancelled() => true,
        };
        if let Err(e) = store.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint failed; will try again");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_sqlite_store;

    #[tokio::test]
    async fn commits_leave_the_wal_to_the_checkpointer() {
        let (store, _dir) = test_sqlite_store().await;
        for n in 0..50 {
            crate::store::fixtures::insert_call(&store, &format!("RM_{n}"), 1).await;
        }
        let (autocheckpoint,): (i64,) =
            crate::store::fixtures::row(&store, "PRAGMA wal_autocheckpoint", &[]).await;
        assert_eq!(autocheckpoint, 0, "commits must not checkpoint");
        let (log, done) = store.checkpoint().await.unwrap().unwrap();
        assert!(log > 0, "the commits are in the WAL");
        assert_eq!(log, done, "a quiet store is checkpointed whole");
    }
}
