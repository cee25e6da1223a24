//! The SQLite store's connections for everything but the writer's batches: delivery's
//! reads, the operator's queries and changes, pruning, health and checkpoints.
//!
//! A few rusqlite connections, each lent to one closure at a time on tokio's blocking
//! threads: SQLite's calls block, so they run where blocking is expected and the async
//! callers only wait. Connections are opened as they are first needed and kept.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, Row, config::DbConfig, types::Value};
use tokio::sync::Semaphore;

use super::busy;
use crate::store::{StoreError, sql::numbered};

/// At most this many queries run at once.
const CONNECTIONS: usize = 4;

#[derive(Clone, Debug)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    pub(super) fn new(file: &Path) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                file: file.to_owned(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(CONNECTIONS)),
            }),
        }
    }

    /// Runs `work` on one of the pool's connections, on a blocking thread.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = inner.idle.lock().expect("pool lock").pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open(&inner.file)?,
            };
            let out = work(&mut conn);
            if !inner.permits.is_closed() {
                inner.idle.lock().expect("pool lock").push(conn);
            }
            out
        })
        .await
        .expect("a SQLite query panicked")
    }

    /// The rows `sql` (with `$N` placeholders) returns for `args`, each read by `row`.
    pub(crate) async fn all<T: Send + 'static>(
        &self,
        sql: &str,
        args: Vec<Value>,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = numbered(sql);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// The first row `sql` returns, if any (see [`Pool::all`]).
    pub(crate) async fn first<T: Send + 'static>(
        &self,
        sql: &str,
        args: Vec<Value>,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.all(sql, args, row).await?.into_iter().next())
    }

    /// Runs a statement; how many rows it changed.
    pub(crate) async fn execute(&self, sql: &str, args: Vec<Value>) -> Result<u64, StoreError> {
        let sql = numbered(sql);
        self.run(move |c| {
            let changed = c
                .prepare_cached(&sql)?
                .execute(rusqlite::params_from_iter(args))?;
            Ok(changed as u64)
        })
        .await
    }

    /// Closes every idle connection; queries after this fail.
    pub(crate) fn close(&self) {
        self.inner.permits.close();
        self.inner.idle.lock().expect("pool lock").clear();
    }
}

/// One of the pool's connections, with the store's settings (per connection in SQLite).
fn open(file: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(file)?;
    conn.busy_handler(Some(busy::wait))?;
    // Plans that do not depend on bound values: a statement is compiled once, not again
    // at each new `LIMIT` or `now` (`plans.rs`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.execute_batch(
        // An fsync per commit: an operator's change survives power loss once answered.
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The arguments of a [`Pool`] query, in `$N` order.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(rusqlite::types::Value::from($arg)),*]
    };
}
pub(crate) use args;
