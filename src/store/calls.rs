//! Calls read and written outside an ingest batch: the hook's runtime data, the call a
//! delivery needs, and the open calls the repairs look at.

use super::{
    Store, StoreError, now_ms,
    sql::{in_values, on_pool},
};
use crate::call::CallState;

impl Store {
    /// The state of one call, for work done outside an ingest transaction.
    pub async fn call_state(&self, call_id: i64) -> Result<Option<CallState>, StoreError> {
        let row: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT state FROM calls WHERE id = $1")
            .bind(call_id)
            .fetch_optional(p)
            .await?);
        Ok(row.map(|(s,)| serde_json::from_str(&s)).transpose()?)
    }

    /// Keeps the runtime data a `call_started_hook` returned with its call.
    pub async fn set_runtime_data(&self, call_id: i64, data: &str) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE calls SET runtime_data = $1, updated_at = $2 WHERE id = $3")
            .bind(data)
            .bind(now_ms())
            .bind(call_id)
            .execute(p)
            .await?.rows_affected());
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
        let rows: Vec<(String,)> = on_pool!(self, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(phases)
            .bind(untouched_since_ms)
            .bind(limit)
            .fetch_all(p)
            .await?);
        rows.into_iter()
            .map(|(s,)| serde_json::from_str(&s).map_err(StoreError::from))
            .collect()
    }
}
