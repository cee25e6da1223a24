//! Moving SQLite's WAL checkpoints off the commit path.
//!
//! By default the connection whose commit pushes the WAL past 1000 pages copies it back
//! into the database file, with its own fsyncs, before that commit returns: every few
//! hundred batches one batch of webhooks waited for a checkpoint, and that was the tail
//! of the webhook latency. The store's connections never checkpoint
//! (`wal_autocheckpoint = 0`); [`Store::checkpoint`] does, `PASSIVE`ly (it never blocks a
//! writer), at the steady pace of a job (`jobs::checkpoint`). PostgreSQL checkpoints by
//! itself.
//!
//! A checkpoint that runs beside a writer never finds every frame copied, and SQLite
//! only starts the WAL over when one does: during a burst the WAL would grow without
//! end. The SQLite writer therefore also checkpoints itself between batches
//! (`writer.rs`), which lets the WAL restart.

use crate::store::{Backend, Store, StoreError};

impl Store {
    /// Whether this store needs its WAL checkpointed by the bridge (SQLite); PostgreSQL
    /// checkpoints by itself.
    pub(crate) fn needs_own_checkpoints(&self) -> bool {
        matches!(self.backend(), Backend::Sqlite(_))
    }

    /// Copies what the WAL holds into the database file, without waiting for readers or
    /// writers; returns the (log, checkpointed) page counts.
    pub(crate) async fn checkpoint(&self) -> Result<Option<(i64, i64)>, StoreError> {
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
