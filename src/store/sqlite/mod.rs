//! Everything particular to SQLite: one file, one bridge. Its one write lock is held
//! by a writer thread of its own (`writer.rs`), which commits accepted events,
//! delivery outcomes and published bodies together and has each commit's WAL fsynced
//! on a second thread (`wal_sync.rs`) before anything is answered. Reads and the
//! operator's writes go through a small pool of connections on blocking threads
//! (`pool.rs`), waiting for the lock with short polls (`busy.rs`); checkpoints run off
//! the commit path (`checkpoint.rs`). One driver, rusqlite, for all of it.

mod busy;
mod call_cache;
mod checkpoint;
mod connection;
pub(crate) mod dashboard;
mod headroom;
pub(super) mod migrate;
mod plans;
mod pool;
mod wal_sync;
mod writer;

use std::{path::PathBuf, sync::Arc};

use super::StoreError;
pub(crate) use pool::Pool;
pub(crate) use pool::args;
pub(super) use wal_sync::SyncHorizon;
#[cfg(test)]
pub(super) use writer::start_with_sync;
pub(super) use writer::{WriterHandle, start_writer};

/// A SQLite store: its pool, its file, and what keeps delivery off rows not yet synced.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) pool: Pool,
    file: PathBuf,
    /// The held lock on `<file>.lock` that keeps a second bridge off this file.
    _owner: Arc<std::fs::File>,
    /// The outbox rows committed by the writer but not yet synced.
    horizon: SyncHorizon,
}

impl Db {
    /// Whether the disk under the file has room for more than a probe write.
    pub(super) fn check_headroom(&self) -> Result<(), StoreError> {
        headroom::check(&self.file)
    }

    /// Outbox rows at or above this id may not be durable yet: delivery must not read
    /// them (`wal_sync.rs`).
    pub(super) fn visible_below(&self) -> i64 {
        self.horizon.below()
    }
}

/// Opens (creating if missing) and migrates the SQLite file `url` names
/// (`sqlite://PATH`, `sqlite:PATH`; a query string is ignored).
pub(super) async fn open(url: &str) -> Result<Db, StoreError> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
        return Err(StoreError::InMemory(url.to_owned()));
    }
    let file = PathBuf::from(path);
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
    Ok(Db {
        pool: Pool::new(&file),
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
