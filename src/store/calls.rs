//! Calls read and written outside an ingest batch: the hook's runtime data, the call a
//! delivery needs, and the open calls the repairs look at.

use super::{Backend, Store, StoreError, now_ms, sql::in_values, sqlite::args};
use crate::call::CallState;

impl Store {
    /// The state of one call, for work done outside an ingest transaction.
    pub(crate) async fn call_state(&self, call_id: i64) -> Result<Option<CallState>, StoreError> {
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
    pub(crate) async fn set_runtime_data(
        &self,
        call_id: i64,
        data: &str,
    ) -> Result<(), StoreError> {
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

    /// Up to `limit` calls in one of `phases` that nothing has touched since
    /// `untouched_since_ms`, the candidates for repair when LiveKit lost an event: the
    /// least recently touched first, after `after` (the [`StalePage::next`] of the page
    /// before; `None` for the first). A caller that skips some calls pages on past
    /// them, so they never hide the rest.
    pub(crate) async fn stale_calls(
        &self,
        phases: &[&str],
        untouched_since_ms: i64,
        after: Option<StaleCursor>,
        limit: i64,
    ) -> Result<StalePage, StoreError> {
        let sql = format!(
            "SELECT id, updated_at, state FROM calls
             WHERE {} AND updated_at < $2
               AND (updated_at > $3 OR (updated_at = $3 AND id > $4))
             ORDER BY updated_at, id LIMIT $5",
            in_values(self.dialect(), "phase", "$1", false, false)
        );
        let phases = serde_json::to_string(phases)?;
        let after = after.unwrap_or(StaleCursor {
            updated_at: i64::MIN,
            id: i64::MIN,
        });
        let rows: Vec<(i64, i64, String)> = match self.backend() {
            Backend::Sqlite(db) => {
                let args = args![
                    phases,
                    untouched_since_ms,
                    after.updated_at,
                    after.id,
                    limit
                ];
                db.pool
                    .all(&sql, args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .await?
            }
            Backend::Postgres(db) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(phases)
                    .bind(untouched_since_ms)
                    .bind(after.updated_at)
                    .bind(after.id)
                    .bind(limit)
                    .fetch_all(&db.pool)
                    .await?
            }
        };
        let next = match rows.last() {
            Some(&(id, updated_at, _)) if rows.len() as i64 >= limit => {
                Some(StaleCursor { updated_at, id })
            }
            _ => None,
        };
        let calls = rows
            .into_iter()
            .map(|(_, _, s)| serde_json::from_str(&s).map_err(StoreError::from))
            .collect::<Result<_, _>>()?;
        Ok(StalePage { calls, next })
    }
}

/// Where a page of stale calls ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StaleCursor {
    updated_at: i64,
    id: i64,
}

/// One page of [`Store::stale_calls`].
#[derive(Debug)]
pub(crate) struct StalePage {
    pub calls: Vec<CallState>,
    /// Where the next page starts; `None` when this was the last.
    pub next: Option<StaleCursor>,
}

#[cfg(test)]
mod tests {
    use crate::store::{
        fixtures::{execute, insert_call},
        test_stores,
    };

    #[tokio::test]
    async fn stale_calls_page_through_every_one_in_order_on_both_stores() {
        let (stores, _dir) = test_stores().await;
        for store in stores {
            for n in 0..7 {
                insert_call(&store, &format!("RM_page{n}"), 1).await;
            }
            // A valid state, the same updated_at for all but the last: ties are broken
            // by id, so no call is skipped or seen twice.
            execute(
                &store,
                "UPDATE calls SET state = '{\"call_id\":0,\"call_slug\":\"s\",\"workflow_id\":1,\"workflow_slug\":\"wf\",\"organization_id\":1,\"room_sid\":\"x\",\"room_name\":\"r\",\"room_created_at_ms\":null,\"metadata_phone\":null,\"sip_phone\":null,\"present\":[],\"last_left_at_ms\":null,\"started_at_ms\":null,\"ended_at_ms\":null,\"duration_seconds\":null,\"egress_ids\":[],\"egress\":null,\"finalized\":false}',
                                 updated_at = CASE WHEN room_sid = 'RM_page6' THEN 5 ELSE 3 END",
                &[],
            )
            .await;
            let mut seen = 0;
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store.stale_calls(&["waiting"], 10, after, 3).await.unwrap();
                seen += page.calls.len();
                pages += 1;
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, 7);
            assert_eq!(pages, 3);
            assert_eq!(
                store
                    .stale_calls(&["waiting"], 4, None, 10)
                    .await
                    .unwrap()
                    .calls
                    .len(),
                6,
                "a call touched at or after the cutoff is not stale"
            );
        }
    }
}
