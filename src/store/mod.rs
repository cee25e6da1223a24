//! Durable state: calls, the LiveKit events already seen, and the outbox.
//!
//! An accepted webhook, the call state it changes and the VoiceKit events it causes are
//! written in one transaction, so a crash never leaves an event half-handled. The
//! outbox is the only queue: nothing lives in memory that a restart could lose.
//!
//! This module is the one API the rest of the bridge uses: the write path
//! ([`Writer`]: accept an event, record an outcome, publish a body), the delivery
//! reads (`claim_due`, `release`), the operator's queries, and housekeeping (prune,
//! checkpoint, vacuum). What is particular to a backend lives in its folder:
//! `sqlite/` (the writer thread, WAL sync and horizon, call cache, busy handling,
//! checkpoints) and `postgres/` (batches in flight, advisory locks, claims and leases,
//! vacuum). Nothing outside asks which backend it runs on.

mod calls;
pub(crate) mod dashboard;
mod endpoints;
#[cfg(test)]
pub(crate) mod fixtures;
mod health;
mod observe;
pub(crate) mod operator;
mod outbox;
mod postgres;
mod prune;
mod rows;
pub(crate) mod sql;
mod sqlite;
mod writer;

use std::{sync::Arc, time::Duration};

pub(crate) use calls::StaleCursor;
pub(crate) use dashboard::{CallSearch, DeliverySearch, MinuteTraffic};
pub(crate) use health::StoreHealth;
pub(crate) use operator::{AttemptRecord, CallSummary, DeliverySummary};
pub(crate) use outbox::{Attempt, AttemptOutcome, HOOK_EVENT, OutboxRow};
pub(crate) use prune::Pruned;
pub(crate) use rows::{NewCall, NewDelivery, SeenEvent};
pub(crate) use writer::{WriteError, Writer};

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("migration failed: {0}")]
    SqliteMigrate(#[from] sqlite::migrate::MigrateError),
    #[error("stored call state is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(
        "{0} is an in-memory SQLite database: everything accepted would be lost at exit; \
         name a file (sqlite://PATH)"
    )]
    InMemory(String),
    #[error(
        "another process uses the SQLite store {0} (it holds {1}): run one bridge per \
         SQLite file; several bridges share a PostgreSQL store"
    )]
    InUse(std::path::PathBuf, std::path::PathBuf),
    #[error(
        "another running bridge uses the instance id {0:?} on this PostgreSQL store: give each \
         bridge its own `[store] instance_id` (or its own config file)"
    )]
    InstanceInUse(String),
    #[error("cannot lock {0}: {1}")]
    Lock(std::path::PathBuf, String),
    #[error("fsync of the SQLite WAL failed: {0}; the bridge takes no more writes until restarted")]
    WalSync(std::io::Error),
    #[error("an fsync of the SQLite WAL failed earlier; restart the bridge")]
    WalSyncFailed,
    #[error("the store is closed")]
    Closed,
    #[error(
        "only {free} bytes free under {dir}; the store waits for {needed} before it is ready again"
    )]
    LowDisk {
        dir: std::path::PathBuf,
        free: u64,
        needed: u64,
    },
}

/// How long a starting bridge waits for its instance name to be given up: the session
/// of the process it replaces may take a moment to end (about 25 s at most when that
/// process's host vanished, see `postgres::Db::hold_identity`).
const IDENTITY_WAIT: Duration = Duration::from_secs(30);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The store: calls, seen events and the outbox, on SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    backend: Backend,
    /// Names this process in the claims it takes on a shared store.
    instance: Arc<str>,
    /// On PostgreSQL, the session that holds this instance's name while it runs.
    _identity: Option<Arc<postgres::Identity>>,
    /// Whether the latest write was committed.
    health: Arc<StoreHealth>,
}

/// The database a store runs on, with what only that backend needs.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

impl Store {
    /// Opens the store at `url` (`sqlite://PATH` or `postgres://...`), creating the
    /// database if it does not exist, and runs pending migrations.
    pub(crate) async fn open(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::open(url, max_connections).await?)
        } else {
            Backend::Sqlite(sqlite::open(url).await?)
        };
        Ok(Store {
            backend,
            instance: instance_name().into(),
            _identity: None,
            health: Arc::default(),
        })
    }

    /// This store under a stable name: after a crash and restart under the same name,
    /// the claims the process held are its own again and are sent at once, not after
    /// their lease. On PostgreSQL the name is held by a session-level advisory lock
    /// while this process runs, so two running bridges never share one (the second
    /// fails to start with [`StoreError::InstanceInUse`]); a process that dies loses
    /// the lock with its connection.
    pub(crate) async fn named(self, instance: &str) -> Result<Store, StoreError> {
        self.named_within(instance, IDENTITY_WAIT).await
    }

    /// [`Store::named`], waiting at most `wait` for a name still held.
    pub(crate) async fn named_within(
        self,
        instance: &str,
        wait: Duration,
    ) -> Result<Store, StoreError> {
        let identity = match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(db) => Some(Arc::new(db.hold_identity(instance, wait).await?)),
        };
        Ok(Store {
            backend: self.backend,
            instance: instance.into(),
            _identity: identity,
            health: self.health,
        })
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether the latest write through the writer was committed.
    pub(crate) fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Whether the disk under a SQLite store has room for more than a small write. Always
    /// on PostgreSQL, whose disk is its server's.
    pub(crate) fn check_headroom(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(db) => db.check_headroom(),
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// A small write of its own, to learn whether the store takes writes again while
    /// nothing else writes; reports to [`Store::health`]. On SQLite it also needs some
    /// free space on the disk (`sqlite/headroom.rs`).
    pub(crate) async fn probe_write(&self) -> Result<(), StoreError> {
        let sql = "INSERT INTO store_probe (id, at) VALUES (1, $1)
                   ON CONFLICT (id) DO UPDATE SET at = excluded.at";
        let result = match &self.backend {
            Backend::Sqlite(db) => match db.check_headroom() {
                Ok(()) => db.pool.execute(sql, sqlite::args![now_ms()]).await,
                Err(e) => Err(e),
            },
            Backend::Postgres(db) => sqlx::query(sql)
                .bind(now_ms())
                .execute(&db.pool)
                .await
                .map(|r| r.rows_affected())
                .map_err(StoreError::from),
        };
        match result {
            Ok(_) => {
                self.health.succeeded();
                Ok(())
            }
            Err(e) => {
                self.health.failed();
                Err(e)
            }
        }
    }

    /// This process's name in delivery claims: the name given to [`Store::named`], else
    /// host, pid and a random tag.
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// How soon work this process is not told about may appear in the outbox: other
    /// bridges sharing the store queue rows, and leave claims to take over when they
    /// die. `None` where every write goes through this process.
    pub(crate) fn unannounced_work_within(&self) -> Option<Duration> {
        match self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(_) => Some(Duration::from_secs(1)),
        }
    }

    /// Closes every connection; queries after this fail.
    pub(crate) async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(db) => db.pool.close(),
            Backend::Postgres(db) => db.close().await,
        }
    }

    /// The same database as another bridge process would see it: its own claims.
    #[cfg(test)]
    pub(crate) fn as_another_instance(&self) -> Store {
        Store {
            backend: self.backend.clone(),
            instance: format!("{}-other", self.instance).into(),
            _identity: None,
            health: self.health.clone(),
        }
    }

    /// The SQLite pool, for tests that look at rows directly.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &sqlite::Pool {
        match &self.backend {
            Backend::Sqlite(db) => &db.pool,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}

/// `url` with any password replaced, for logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
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

/// A fresh SQLite store for a test: the file `t.db` in a new temporary directory.
#[cfg(test)]
pub(crate) async fn test_sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::open(&url, 4).await.unwrap(), dir)
}

/// A fresh PostgreSQL store of its own database, with a pool of `connections`, when the
/// tests are asked to use PostgreSQL: `VOICEKIT_TEST_STORE=postgres` (as the
/// integration tests read it) or `VOICEKIT_TEST_POSTGRES=<server URL>` (default
/// `postgres://postgres@127.0.0.1:5432`). `None` otherwise: `cargo test` passes on a
/// machine without PostgreSQL, and `scripts/test.sh` runs the PostgreSQL pass.
#[cfg(test)]
pub(crate) async fn test_postgres_store(connections: u32) -> Option<Store> {
    let server = std::env::var("VOICEKIT_TEST_POSTGRES").ok();
    let asked = std::env::var("VOICEKIT_TEST_STORE").is_ok_and(|s| s == "postgres");
    if server.is_none() && !asked {
        eprintln!("PostgreSQL part skipped: set VOICEKIT_TEST_STORE=postgres to run it");
        return None;
    }
    let base = server.unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
    let name: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
        .take(12)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    // `scripts/test.sh` names its run, so it drops its own databases and no other run's.
    let run = std::env::var("VOICEKIT_TEST_DB_PREFIX").unwrap_or_else(|_| "vkb_t_".into());
    let store = Store::open(&format!("{base}/{run}unit_{name}"), connections)
        .await
        .unwrap_or_else(|e| panic!("the store tests need PostgreSQL at {base}: {e}"));
    Some(store)
}

/// Fresh stores for tests that prove a query on both dialects: SQLite, and PostgreSQL
/// when the tests are asked to use it (see [`test_postgres_store`]).
#[cfg(test)]
pub(crate) async fn test_stores() -> (Vec<Store>, tempfile::TempDir) {
    let (sqlite, dir) = test_sqlite_store().await;
    let mut stores = vec![sqlite];
    stores.extend(test_postgres_store(4).await);
    (stores, dir)
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

    #[tokio::test]
    async fn an_in_memory_sqlite_store_is_refused() {
        for url in ["sqlite::memory:", "sqlite://:memory:"] {
            let e = Store::open(url, 4).await.unwrap_err();
            assert!(matches!(e, StoreError::InMemory(_)), "{url}: {e}");
            assert!(e.to_string().contains("name a file"), "{e}");
        }
    }
}
