//! Calls read and written outside an ingest batch: the hook's runtime data, the call a
//! delivery needs, and the open calls the repairs look at.

use super::{Backend, Store, StoreError, now_ms, sql::in_values, sqlite::args};
use crate::call::CallState;

impl Store {
    /// The state of one call, for work done outside an ingest transaction.
    pub async fn call_state(&self, call_id: i64) -> Result<Option<CallState>, StoreError> {
        let sql = "SELECT state FROM calls WHERE id = $1";
        let state: Option<String> = match self.backend() {
            Backend::Sqlite(db) => db.pool.first(sql, args![call_id], |r| r.get(0)).await?,
            Backend::Postgres(db) => {
                sqlx::query_scalar(sql)
                    .bind(call_id)
                    .fetch_optional(&db.pool)
                    .await?
            }
        };
        Ok(state.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    /// Keeps the runtime data a `call_started_hook` returned with its call.
    pub async fn set_runtime_data(&self, call_id: i64, data: &str) -> Result<(), StoreError> {
        let sql = "UPDATE calls SET runtime_data = $1, updated_at = $2 WHERE id = $3";
        match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![data.to_owned(), now_ms(), call_id];
                db.pool.execute(sql, args).await?;
            }
            Backend::Postgres(db) => {
                sqlx::query(sql)
                    .bind(data)
                    .bind(now_ms())
                    .bind(call_id)
                    .execute(&db.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Calls in one of `phases` that nothing has touched since `untouched_since_ms`:
    /// the candidates for repair when LiveKit lost an event.
    pub async fn stale_calls(
        &self,
        phases: &[&str],
        untouched_since_ms: i64,
        limit: i64,
    ) -> Result<Vec<CallState>, StoreError> {
        let sql = format!(
            "SELECT state FROM calls
             WHERE {} AND updated_at < $2
             ORDER BY updated_at LIMIT $3",
            in_values(self.dialect(), "phase", "$1", false, false)
        );
        let phases = serde_json::to_string(phases)?;
        let states: Vec<String> = match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![phases, untouched_since_ms, limit];
                db.pool.all(&sql, args, |r| r.get(0)).await?
            }
            Backend::Postgres(db) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(phases)
                    .bind(untouched_since_ms)
                    .bind(limit)
                    .fetch_all(&db.pool)
                    .await?
            }
        };
        states
            .into_iter()
            .map(|s| serde_json::from_str(&s).map_err(StoreError::from))
            .collect()
    }
}
