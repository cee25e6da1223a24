//! Read-only questions operators ask of the store: is it answering (`/readyz`, the
//! systemd watchdog), are its migrations all applied, and how much is in it (`/metrics`
//! reads these at scrape time, so the numbers are the stored truth, not a count kept in
//! memory that a restart would reset).

use super::{Backend, Store, StoreError, now_ms, sqlite::args};
use crate::metrics::StoreGauges;

/// Every value `calls.phase` takes, so each is exported even when no call is in it.
const PHASES: &[&str] = &["waiting", "in_progress", "ended", "finalized"];

impl Store {
    /// One trivial query: the database answers.
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        match self.backend() {
            Backend::Sqlite(db) => {
                db.pool
                    .first("SELECT 1", args![], |r| r.get::<_, i64>(0))
                    .await?;
            }
            Backend::Postgres(db) => {
                sqlx::query("SELECT 1").execute(&db.pool).await?;
            }
        }
        Ok(())
    }

    /// How many of this binary's migrations the database has not applied successfully.
    pub(crate) async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success = TRUE";
        let applied: Vec<i64> = match self.backend() {
            Backend::Sqlite(db) => db.pool.all(sql, args![], |r| r.get(0)).await?,
            Backend::Postgres(db) => sqlx::query_scalar(sql).fetch_all(&db.pool).await?,
        };
        Ok(match self.backend() {
            Backend::Sqlite(_) => super::sqlite::migrate::pending(&applied),
            Backend::Postgres(_) => super::postgres::MIGRATIONS
                .iter()
                .filter(|m| !m.migration_type.is_down_migration())
                .filter(|m| !applied.contains(&m.version))
                .count(),
        })
    }

    /// Calls by phase and the outbox backlog, for `/metrics`.
    pub(crate) async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        let sql = "SELECT phase, COUNT(*) FROM calls GROUP BY phase";
        let counted: Vec<(String, i64)> = match self.backend() {
            Backend::Sqlite(db) => {
                db.pool
                    .all(sql, args![], |r| Ok((r.get(0)?, r.get(1)?)))
                    .await?
            }
            Backend::Postgres(db) => sqlx::query_as(sql).fetch_all(&db.pool).await?,
        };
        let mut calls_by_state: Vec<(String, i64)> = PHASES
            .iter()
            .map(|p| {
                let n = counted.iter().find(|(c, _)| c == p).map_or(0, |(_, n)| *n);
                ((*p).to_owned(), n)
            })
            .collect();
        calls_by_state.extend(
            counted
                .into_iter()
                .filter(|(phase, _)| !PHASES.contains(&phase.as_str())),
        );
        let sql = "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending'";
        let (pending, oldest): (i64, Option<i64>) = match self.backend() {
            Backend::Sqlite(db) => db
                .pool
                .first(sql, args![], |r| Ok((r.get(0)?, r.get(1)?)))
                .await?
                .unwrap_or_default(),
            Backend::Postgres(db) => sqlx::query_as(sql).fetch_one(&db.pool).await?,
        };
        let age_ms = oldest.map_or(0, |created| (now_ms() - created).max(0));
        Ok(StoreGauges {
            calls_by_state,
            outbox_pending: pending,
            oldest_pending_age_seconds: age_ms as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_store_answers_with_nothing_pending() {
        let (stores, _dir) = crate::store::test_stores().await;
        for store in stores {
            store.ping().await.unwrap();
            assert_eq!(store.pending_migrations().await.unwrap(), 0);
            let gauges = store.gauges().await.unwrap();
            assert_eq!(gauges.outbox_pending, 0);
            assert_eq!(gauges.oldest_pending_age_seconds, 0.0);
            let states: Vec<&str> = gauges
                .calls_by_state
                .iter()
                .map(|(s, _)| s.as_str())
                .collect();
            assert_eq!(states, PHASES);
            assert!(gauges.calls_by_state.iter().all(|(_, n)| *n == 0));
        }
    }
}
