//! The two databases the store runs on, behind one `Store`.
//!
//! SQLite is the default: one file, one bridge. PostgreSQL lets several bridges share
//! one state. The queries are written once, with `$N` placeholders both understand; the
//! `on_pool!`/`on_tx!` macros expand a query for each driver, so each runs on its
//! native types with no conversion layer. Where the dialects differ (expanding a JSON
//! array into rows, locking, claiming) the difference is spelled out here or next to
//! the query.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::StoreError;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/postgres");

#[derive(Clone, Debug)]
pub(super) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which SQL dialect a pool or transaction speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// The store: calls, seen events and the outbox, on SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// PostgreSQL: connections whose commits do not wait for the WAL's fsync, for
    /// delivery claims only (a claim lost in a crash of the database means a resend
    /// with the same id, never a lost event). One such wait per dispatch round capped
    /// delivery at about 600 events/s.
    claims: Option<PgPool>,
    /// SQLite: the held lock on `<file>.lock` that keeps a second bridge off this file.
    _owner: Option<Arc<std::fs::File>>,
    /// Names this process in the claims it takes on a shared store.
    instance: Arc<str>,
    /// SQLite: the outbox rows committed by the ingest writer but not yet synced.
    horizon: super::SyncHorizon,
}

/// One write transaction. On SQLite it is opened `IMMEDIATE`, so it holds the write lock
/// from its start and never fails half-way on a lock upgrade.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$p` bound to the store's pool, once per driver.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match $store.backend() {
            $crate::store::backend::Pool::Sqlite($p) => $body,
            $crate::store::backend::Pool::Postgres($p) => $body,
        }
    };
}

/// Runs `$body` with `$c` bound to the transaction's connection, once per driver.
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(super) use {on_pool, on_tx};

impl Store {
    /// Opens the store at `url` (`sqlite://PATH` or `postgres://...`), creating the
    /// database if it does not exist, and runs pending migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let (pool, claims, owner) =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                let (pool, claims) = open_postgres(url, max_connections).await?;
                (Pool::Postgres(pool), Some(claims), None)
            } else {
                let (pool, owner) = open_sqlite(url).await?;
                (Pool::Sqlite(pool), None, owner.map(Arc::new))
            };
        let store = Store {
            pool,
            claims,
            _owner: owner,
            instance: instance_name().into(),
            horizon: super::SyncHorizon::default(),
        };
        // PostgreSQL's migrator holds an advisory lock while it runs: bridges starting
        // together migrate one after the other.
        match &store.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Pool::Postgres(p) => {
                POSTGRES_MIGRATIONS.run(p).await?;
                // Fresh statistics for the planner after a restart or an upgrade;
                // autovacuum keeps them up from here.
                sqlx::query("ANALYZE calls, inbound_events, outbox, delivery_attempts")
                    .execute(p)
                    .await?;
            }
        }
        Ok(store)
    }

    /// The SQLite database file, for connections opened beside the pool (none for an
    /// in-memory database, whose every connection is a database of its own).
    pub(super) fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        let Pool::Sqlite(p) = &self.pool else {
            return None;
        };
        let file = p.connect_options().get_filename().to_owned();
        let name = file.to_string_lossy();
        let memory = name.is_empty() || name == ":memory:" || name.starts_with("file:");
        (!memory).then_some(file)
    }

    pub(super) fn backend(&self) -> &Pool {
        &self.pool
    }

    pub(super) fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(super) fn migrator(&self) -> &'static Migrator {
        match self.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Whether other bridge processes may share this store, so deliveries must be
    /// claimed before they are sent. A SQLite file belongs to one process.
    pub fn is_shared(&self) -> bool {
        self.dialect() == Dialect::Postgres
    }

    /// The pool delivery claims are written through (PostgreSQL only).
    pub(super) fn claims_pool(&self) -> Option<&PgPool> {
        self.claims.as_ref()
    }

    /// This process's name in delivery claims: host, pid and a random tag.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin_with(PG_BEGIN).await?),
        })
    }

    /// The most connections the pool opens (`store.max_connections` on PostgreSQL).
    pub fn pool_size(&self) -> u32 {
        match &self.pool {
            Pool::Postgres(p) => p.options().get_max_connections(),
            Pool::Sqlite(p) => p.options().get_max_connections(),
        }
    }

    pub(crate) fn postgres(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            Pool::Sqlite(_) => None,
        }
    }

    /// Closes every connection; queries after this fail.
    pub async fn close(&self) {
        if let Some(claims) = &self.claims {
            claims.close().await;
        }
        on_pool!(self, p => p.close().await)
    }

    /// The same database as another bridge process would see it: its own claims.
    #[cfg(test)]
    pub(crate) fn as_another_instance(&self) -> Store {
        Store {
            pool: self.pool.clone(),
            claims: self.claims.clone(),
            _owner: self._owner.clone(),
            instance: format!("{}-other", self.instance).into(),
            horizon: self.horizon.clone(),
        }
    }

    /// Where delivery stops reading the outbox (`wal_sync.rs`).
    pub fn sync_horizon(&self) -> &super::SyncHorizon {
        &self.horizon
    }

    /// The SQLite pool, for tests that look at rows directly.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &SqlitePool {
        match &self.pool {
            Pool::Sqlite(p) => p,
            Pool::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }
}

async fn open_sqlite(url: &str) -> Result<(SqlitePool, Option<std::fs::File>), StoreError> {
    let options = SqliteConnectOptions::from_str(url)?;
    let owner = own_sqlite_file(options.get_filename())?;
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
                unsafe { super::busy::install(db) }.map_err(|rc| {
                    sqlx::Error::Protocol(format!("sqlite3_busy_handler failed: {rc}"))
                })?;
                // SAFETY: as above.
                unsafe { super::plans::install(db) }.map_err(|rc| {
                    sqlx::Error::Protocol(format!("SQLITE_DBCONFIG_ENABLE_QPSG failed: {rc}"))
                })
            })
        })
        // A local file does not go stale like a network connection: pinging it before
        // each use only added a round trip to every transaction.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok((pool, owner))
}

/// Takes an exclusive lock on `<file>.lock`, held for the store's life (the kernel lets
/// go when the process dies, however it dies). Two bridges on one SQLite file would
/// both send every event: nothing claims rows there.
fn own_sqlite_file(db: &std::path::Path) -> Result<Option<std::fs::File>, StoreError> {
    if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Lock(lock_path.clone(), e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(db.to_owned(), lock_path)),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Lock(lock_path, e.to_string())),
    }
}

async fn open_postgres(url: &str, max_connections: u32) -> Result<(PgPool, PgPool), StoreError> {
    let options = PgConnectOptions::from_str(url)?.application_name("voicekit-bridge");
    if !Postgres::database_exists(url).await? {
        match Postgres::create_database(url).await {
            Ok(()) => tracing::info!(url = %redact_url(url), "created the database"),
            // Another bridge starting beside this one created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    // PostgreSQL commits are durable by default (`synchronous_commit = on`): a 200 to
    // LiveKit means the event is on the server's disk.
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    // The worker's claims, reads and releases one after another: two connections, or
    // one when the operator allows one in all.
    let claims = PgPoolOptions::new()
        .max_connections(max_connections.min(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.options([("synchronous_commit", "off")]))
        .await?;
    Ok((pool, claims))
}

/// `url` with any password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let tag: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
        .take(6)
        .map(char::from)
        .collect();
    format!("{host}/{}/{tag}", std::process::id())
}

/// The rows of a JSON array parameter, as `j(value, key)` with `key` its position:
/// SQLite's `json_each`, PostgreSQL's `jsonb_array_elements`. Values are read with
/// `j.value->>N` (an element of a row array) or `j.value` (a scalar array, `text`
/// flavour); both are cast where a column needs a number, which both dialects accept.
pub(super) fn rows_of(dialect: Dialect, param: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("json_each({param}) AS j"),
        Dialect::Postgres => {
            // jsonb: parsed once, so each `->>` is a lookup, not another parse of the
            // element (a call state or payload of a kilobyte or more).
            format!("jsonb_array_elements({param}::jsonb) WITH ORDINALITY AS j(value, key)")
        }
    }
}

/// For an `UPDATE ... FROM` the rows of a JSON array parameter (see [`rows_of`]) whose
/// first element is the updated row's `column`: on PostgreSQL, `AND column = ANY(those
/// ids)`, which says nothing new but lets the planner probe the column's index with
/// them. It takes a set-returning function for 100 rows, so without this it planned a
/// hash join over a sequential scan of the whole table: measured, the delivery
/// recorder's update of `outbox` took 9 ms for two rows of a 2,000-row table, and grew
/// with the table. SQLite walks the JSON rows and probes the key already: nothing.
pub(super) fn rows_key_filter(dialect: Dialect, column: &str, param: &str) -> String {
    match dialect {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => format!(
            " AND {column} = ANY(ARRAY(SELECT CAST(k.value->>0 AS BIGINT) \
             FROM jsonb_array_elements({param}::jsonb) AS k(value)))"
        ),
    }
}

/// `column IN (the elements of the JSON array parameter)`, `NOT IN` when `negate`;
/// `number` casts the elements to integers. PostgreSQL gets `= ANY(ARRAY(...))`: it
/// then probes the column's index with the array, where `IN (SELECT ...)` planned a
/// hash join that read the whole table (5 ms for 30,000 seen events, every batch).
pub(super) fn in_values(
    dialect: Dialect,
    column: &str,
    param: &str,
    number: bool,
    negate: bool,
) -> String {
    let value = if number {
        "CAST(j.value AS BIGINT)"
    } else {
        "j.value"
    };
    match dialect {
        Dialect::Sqlite => {
            let op = if negate { "NOT IN" } else { "IN" };
            format!("{column} {op} (SELECT {value} FROM json_each({param}) AS j)")
        }
        Dialect::Postgres => {
            let op = if negate { "<> ALL" } else { "= ANY" };
            format!(
                "{column} {op}(ARRAY(SELECT {value} \
                 FROM jsonb_array_elements_text({param}::jsonb) AS j(value)))"
            )
        }
    }
}

/// How a PostgreSQL write transaction begins. It plans the batch's statements for the
/// tables as they are now: their JSON row joins got a generic plan cached while the
/// tables were small (a hash join reading all of `calls`), kept on the connection as
/// the tables grew; measured, ingest then slowed with every batch. Planning each time
/// costs less than that; the worker's single-table queries keep their cached plans.
/// Sent with the BEGIN, in one round trip.
pub(super) const PG_BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan";

/// A stable 64-bit key for an advisory lock (FNV-1a): the same text gives the same key
/// in every process.
pub(super) fn lock_key(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// A fresh SQLite store for a test: the file `t.db` in a new temporary directory.
#[cfg(test)]
pub(crate) async fn test_sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::open(&url, 4).await.unwrap(), dir)
}

/// Fresh stores for the store's own tests: one of each kind, so each test proves its
/// queries on both dialects. PostgreSQL is the machine's (`VOICEKIT_TEST_POSTGRES`,
/// default `postgres://postgres@127.0.0.1:5432`), in a new `vkb_t_*` database.
#[cfg(test)]
pub(crate) async fn test_stores() -> (Vec<Store>, tempfile::TempDir) {
    let (sqlite, dir) = test_sqlite_store().await;
    (vec![sqlite, test_postgres_store(4).await], dir)
}

/// A fresh PostgreSQL store of its own database, with a pool of `connections`.
#[cfg(test)]
pub(crate) async fn test_postgres_store(connections: u32) -> Store {
    let base = std::env::var("VOICEKIT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
        .take(12)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    Store::open(&format!("{base}/vkb_t_unit_{name}"), connections)
        .await
        .unwrap_or_else(|e| panic!("the store tests need PostgreSQL at {base}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("postgres://bridge:s3cret@db:5432/vk"),
            "postgres://bridge:***@db:5432/vk"
        );
        assert_eq!(
            redact_url("postgres://bridge@db/vk"),
            "postgres://bridge@db/vk"
        );
        assert_eq!(redact_url("sqlite://bridge.db"), "sqlite://bridge.db");
    }

    #[tokio::test]
    async fn postgres_write_transactions_plan_for_the_tables_as_they_are() {
        let (stores, _dir) = test_stores().await;
        let Tx::Postgres(mut tx) = stores[1].begin().await.unwrap() else {
            panic!("the second test store is PostgreSQL");
        };
        let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(mode, "force_custom_plan");
        tx.rollback().await.unwrap();
        // SET LOCAL ends with its transaction: the pool's other queries keep cached plans.
        let Pool::Postgres(pool) = stores[1].backend() else {
            unreachable!()
        };
        let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "auto");
    }

    #[tokio::test]
    async fn a_sqlite_file_belongs_to_one_bridge_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("one.db").display());
        let first = Store::open(&url, 4).await.unwrap();
        let second = Store::open(&url, 4).await.unwrap_err().to_string();
        assert!(
            second.contains("another process uses the SQLite store"),
            "{second}"
        );
        assert!(second.contains("PostgreSQL"), "{second}");
        first.close().await;
        drop(first);
        Store::open(&url, 4).await.unwrap();
    }

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(lock_key("RM_1"), lock_key("RM_1"));
        assert_ne!(lock_key("RM_1"), lock_key("RM_2"));
        // FNV-1a's published value for the empty string.
        assert_eq!(lock_key("") as u64, 0xcbf2_9ce4_8422_2325);
    }
}
