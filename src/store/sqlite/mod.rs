//! Everything particular to SQLite: one file, one bridge. Its one write lock is held
//! by a writer thread of its own (`writer.rs`), which commits accepted events,
//! delivery outcomes and published bodies together and has each commit's WAL fsynced
//! on a second thread (`wal_sync.rs`) before anything is answered. Reads and the
//! operator's writes go through the pool, waiting for the lock with short polls
//! (`busy.rs`); checkpoints run off the commit path (`checkpoint.rs`).

mod busy;
mod call_cache;
mod checkpoint;
mod connection;
pub(super) mod migrate;
mod plans;
mod wal_sync;
mod writer;

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::StoreError;
pub use checkpoint::keep_checkpointed;
pub(super) use wal_sync::SyncHorizon;
#[cfg(test)]
pub(super) use writer::start_with_sync;
pub(super) use writer::{WriterHandle, start_writer};

/// A SQLite store: its pool, its file, and what keeps delivery off rows not yet synced.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(super) pool: SqlitePool,
    file: PathBuf,
    /// The held lock on `<file>.lock` that keeps a second bridge off this file.
    _owner: Arc<std::fs::File>,
    /// The outbox rows committed by the writer but not yet synced.
    horizon: SyncHorizon,
}

impl Db {
    /// Outbox rows at or above this id may not be durable yet: delivery must not read
    /// them (`wal_sync.rs`).
    pub(super) fn visible_below(&self) -> i64 {
        self.horizon.below()
    }
}

/// Opens (creating if missing) and migrates the SQLite file `url` names.
pub(super) async fn open(url: &str) -> Result<Db, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?;
    let file = options.get_filename().to_owned();
    let name = file.to_string_lossy();
    if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
        return Err(StoreError::InMemory(url.to_owned()));
    }
    let owner = own_file(&file)?;
    let migrating = file.clone();
    tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let mut conn = rusqlite::Connection::open(&migrating)?;
        conn.busy_handler(Some(busy::wait))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")?;
        migrate::run(&mut conn)?;
        Ok(())
    })
    .await
    .expect("the migration thread panicked")?;
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // An fsync per commit: a 200 to LiveKit means the event survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Checkpoints run in their own task (`checkpoint.rs`), never inside a commit.
        .pragma("wal_autocheckpoint", "0")
        // Statement journals of multi-row writes in memory: as files, each batch of
        // outcomes created, wrote and deleted one.
        .pragma("temp_store", "MEMORY")
        // A WAL that grew during a burst is cut back to this size once it restarts.
        .pragma("journal_size_limit", "67108864");
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                let db = handle.as_raw_handle().as_ptr();
                // SAFETY: the handle is open, and locked for this task alone.
                unsafe { busy::install(db) }.map_err(|rc| {
                    sqlx::Error::Protocol(format!("sqlite3_busy_handler failed: {rc}"))
                })?;
                // SAFETY: as above.
                unsafe { plans::install(db) }.map_err(|rc| {
                    sqlx::Error::Protocol(format!("SQLITE_DBCONFIG_ENABLE_QPSG failed: {rc}"))
                })
            })
        })
        // A local file does not go stale like a network connection: pinging it before
        // each use only added a round trip to every transaction.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(Db {
        pool,
        file,
        _owner: Arc::new(owner),
        horizon: SyncHorizon::default(),
    })
}

/// Takes an exclusive lock on `<file>.lock`, held for the store's life (the kernel lets
/// go when the process dies, however it dies). Two bridges on one SQLite file would
/// both send every event: nothing claims rows there.
fn own_file(db: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Lock(lock_path.clone(), e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(db.to_owned(), lock_path)),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Lock(lock_path, e.to_string())),
    }
}

#[cfg(test)]
impl super::Store {
    /// A connection like the writer's to this SQLite store's file, for tests.
    pub(crate) fn ingest_connection(&self) -> connection::IngestConnection {
        match self.backend() {
            super::Backend::Sqlite(db) => connection::IngestConnection::open(&db.file).unwrap(),
            super::Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}
