//! PostgreSQL without autovacuum: the bridge vacuums its own tables.
//!
//! Every delivery rewrites its outbox row and every event its call row; PostgreSQL
//! leaves the old versions behind until a vacuum, and plans from statistics only
//! `ANALYZE` refreshes. Autovacuum does both, and is on by default. Where a server runs
//! with it off, the due-rows query slows from under a millisecond to seconds within
//! minutes of steady traffic, and deliveries stall. So at start the bridge asks; if
//! autovacuum is off it says so and runs `VACUUM (ANALYZE)` on its tables itself at a
//! steady pace (the schedule is `jobs::vacuum`).

use crate::store::{Backend, Store, StoreError};

const TABLES: &str = "outbox, calls, inbound_events, delivery_attempts";

impl Store {
    /// Whether this is PostgreSQL with autovacuum off (server-wide).
    pub(crate) async fn needs_own_vacuum(&self) -> Result<bool, StoreError> {
        let Backend::Postgres(db) = self.backend() else {
            return Ok(false);
        };
        let (setting,): (String,) = sqlx::query_as("SELECT current_setting('autovacuum')")
            .fetch_one(&db.pool)
            .await?;
        Ok(setting != "on")
    }

    /// `VACUUM (ANALYZE)` of the bridge's tables (PostgreSQL; nothing on SQLite).
    pub(crate) async fn vacuum(&self) -> Result<(), StoreError> {
        if let Backend::Postgres(db) = self.backend() {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {TABLES}")))
                .execute(&db.pool)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Backend, fixtures, test_postgres_store, test_sqlite_store};

    #[tokio::test]
    async fn sqlite_needs_no_vacuum() {
        let (sqlite, _dir) = test_sqlite_store().await;
        assert!(!sqlite.needs_own_vacuum().await.unwrap());
        sqlite.vacuum().await.unwrap();
    }

    #[tokio::test]
    async fn the_bridges_vacuum_brings_postgres_statistics_up_to_date() {
        let Some(postgres) = test_postgres_store(4).await else {
            return;
        };
        postgres.needs_own_vacuum().await.unwrap();
        for room in ["RM_v1", "RM_v2", "RM_v3"] {
            fixtures::insert_call(&postgres, room, 1).await;
        }
        // The planner's row count is what the start-time ANALYZE saw (none) until a
        // vacuum's ANALYZE counts the rows again.
        postgres.vacuum().await.unwrap();
        let Backend::Postgres(db) = postgres.backend() else {
            unreachable!()
        };
        let (counted,): (f32,) =
            sqlx::query_as("SELECT reltuples FROM pg_class WHERE relname = 'calls'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(counted, 3.0);
    }
}
