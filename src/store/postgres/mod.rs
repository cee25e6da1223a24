//! Everything particular to PostgreSQL, where several bridges share one state: ingest
//! batches serialised by advisory locks and several in progress at once (`writer.rs`,
//! `batch.rs`), delivery claims with leases on a pool of their own (`claims.rs`), and
//! vacuuming where the server does not (`vacuum.rs`).

mod batch;
pub(super) mod claims;
pub(crate) mod dashboard;
mod vacuum;
mod writer;

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{StoreError, redact_url};
pub(super) use writer::{OUTCOMES_WAITING_PER_SLOT, WriterHandle, start_writer};

pub(super) static MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// A PostgreSQL store: its pool, and the connections delivery claims are written on.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(super) pool: PgPool,
    /// Connections whose commits do not wait for the WAL's fsync, for delivery claims
    /// only (a claim lost in a crash of the database means a resend with the same id,
    /// never a lost event). One such wait per dispatch round capped delivery at about
    /// 600 events/s.
    claims: PgPool,
}

/// How a PostgreSQL write transaction begins. It plans the batch's statements for the
/// tables as they are now: their JSON row joins got a generic plan cached while the
/// tables were small (a hash join reading all of `calls`), kept on the connection as
/// the tables grew, and ingest then slowed with every batch. Planning each time costs
/// less than that; the worker's single-table queries keep their cached plans. Sent
/// with the BEGIN, in one round trip.
pub(super) const PG_BEGIN: &str = "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan";

/// Opens (creating the database if missing) and migrates the store at `url`.
pub(super) async fn open(url: &str, max_connections: u32) -> Result<Db, StoreError> {
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
    // The migrator holds an advisory lock while it runs: bridges starting together
    // migrate one after the other.
    MIGRATIONS.run(&pool).await?;
    // Fresh statistics for the planner after a restart or an upgrade; autovacuum keeps
    // them up from here.
    sqlx::query("ANALYZE calls, inbound_events, outbox, delivery_attempts")
        .execute(&pool)
        .await?;
    Ok(Db { pool, claims })
}

/// The session holding a bridge instance's name (`Store::named`): an advisory lock
/// that ends with the connection, so a process that dies gives its name up.
#[derive(Debug)]
pub(crate) struct Identity {
    _session: tokio::sync::Mutex<sqlx::PgConnection>,
}

impl Db {
    /// Takes the advisory lock on `instance`'s name on a connection of its own, held
    /// until the returned [`Identity`] is dropped. A lock still held is waited for up
    /// to `wait`: the session of a process that just died may not have ended yet.
    pub(super) async fn hold_identity(
        &self,
        instance: &str,
        wait: Duration,
    ) -> Result<Identity, StoreError> {
        let mut session = self.pool.acquire().await?.detach();
        // A host that vanishes (no FIN) would otherwise keep its session, and the name,
        // for the system's keepalive time (often two hours): the server drops this
        // session within about 25 s of silence instead.
        sqlx::raw_sql(
            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
             SET tcp_keepalives_count = 3",
        )
        .execute(&mut session)
        .await?;
        let key = lock_key(&format!("voicekit-bridge instance {instance}"));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut session)
                .await?;
            if held {
                return Ok(Identity {
                    _session: tokio::sync::Mutex::new(session),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::InstanceInUse(instance.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(super) async fn close(&self) {
        self.claims.close().await;
        self.pool.close().await;
    }
}

/// A stable 64-bit key for an advisory lock (FNV-1a): the same text gives the same key
/// in every process.
fn lock_key(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Backend, test_postgres_store};

    #[test]
    fn lock_keys_are_stable() {
        assert_eq!(lock_key("RM_1"), lock_key("RM_1"));
        assert_ne!(lock_key("RM_1"), lock_key("RM_2"));
        // FNV-1a's published value for the empty string.
        assert_eq!(lock_key("") as u64, 0xcbf2_9ce4_8422_2325);
    }

    #[tokio::test]
    async fn two_running_bridges_never_share_an_instance_id() {
        let Some(store) = test_postgres_store(4).await else {
            return;
        };
        let first = store.clone().named("host-a:/etc/vkb.toml").await.unwrap();
        assert_eq!(first.instance(), "host-a:/etc/vkb.toml");
        let e = store
            .clone()
            .named_within("host-a:/etc/vkb.toml", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::InstanceInUse(_)), "{e}");
        assert!(e.to_string().contains("instance_id"), "{e}");
        store.clone().named("host-b:/etc/vkb.toml").await.unwrap();
        // The process that held it is gone: its name is free again.
        drop(first);
        store
            .clone()
            .named_within("host-a:/etc/vkb.toml", Duration::from_secs(5))
            .await
            .expect("the name is given up with its session");
    }

    #[tokio::test]
    async fn postgres_write_transactions_plan_for_the_tables_as_they_are() {
        let Some(store) = test_postgres_store(4).await else {
            return;
        };
        let Backend::Postgres(db) = store.backend() else {
            unreachable!()
        };
        let mut tx = db.pool.begin_with(PG_BEGIN).await.unwrap();
        let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(mode, "force_custom_plan");
        tx.rollback().await.unwrap();
        // SET LOCAL ends with its transaction: the pool's other queries keep cached plans.
        let (mode,): (String,) = sqlx::query_as("SHOW plan_cache_mode")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(mode, "auto");
    }
}
