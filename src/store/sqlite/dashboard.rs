//! The dashboard's queries in SQLite's SQL (see `store/dashboard.rs`). Only the filters
//! an operator gave are in a statement's text: the pool's connections plan a statement
//! once whatever is bound to it, so a `$1 IS NULL OR ...` would keep SQLite off the
//! index that filter could use.

use rusqlite::types::Value;

use super::{Pool, args};
use crate::store::{
    CallSummary, DeliverySummary, StoreError,
    dashboard::{
        CallSearch, DeliverySearch, MinuteTraffic, Overview, WorkflowBacklog,
        filter::{self, Arg, Dialect},
    },
};

/// `LIKE` already ignores ASCII case; the phone numbers in a call's state are read
/// exactly as the dashboard's migration indexes them.
const DIALECT: Dialect = Dialect {
    room_match: "LIKE",
    sip_phone: "CASE WHEN json_valid(state) THEN json_extract(state, '$.sip_phone') END",
    metadata_phone: "CASE WHEN json_valid(state) THEN json_extract(state, '$.metadata_phone') END",
};
const COUNTS: &str = "SELECT
    (SELECT count(*) FROM calls WHERE phase IN ('waiting', 'in_progress')),
    (SELECT count(*) FROM calls WHERE phase = 'ended' AND updated_at >= $1),
    (SELECT count(*) FROM calls WHERE phase = 'finalized' AND updated_at >= $1),
    (SELECT count(*) FROM outbox WHERE status = 'pending'),
    (SELECT count(*) FROM outbox WHERE status = 'failed'),
    (SELECT min(created_at) FROM outbox WHERE status = 'pending')";
const WEBHOOKS_PER_MINUTE: &str = "SELECT received_at / 60000 * 60000 AS minute, count(*)
    FROM inbound_events WHERE received_at >= $1 GROUP BY minute";
const ATTEMPTS_PER_MINUTE: &str = "SELECT attempted_at / 60000 * 60000 AS minute, count(*)
    FROM delivery_attempts WHERE attempted_at >= $1 GROUP BY minute";
const BACKLOG: &str = "SELECT workflow_id, status, count(*), min(created_at) FROM outbox
    WHERE status IN ('pending', 'failed') GROUP BY workflow_id, status";
const COUNT_FAILED: &str = "SELECT count(*) FROM outbox
    WHERE status = 'failed' AND workflow_id = $1 AND created_at >= $2 AND created_at < $3";

pub(crate) async fn overview(pool: &Pool, since: i64) -> Result<Overview, StoreError> {
    let mut overview = pool
        .first(COUNTS, args![since], |r| {
            Ok(Overview {
                calls_live: r.get(0)?,
                calls_ended: r.get(1)?,
                calls_finalized: r.get(2)?,
                deliveries_pending: r.get(3)?,
                deliveries_failed: r.get(4)?,
                oldest_pending_at: r.get(5)?,
                traffic: Vec::new(),
                backlog: Vec::new(),
            })
        })
        .await?
        .unwrap_or_default();
    let webhooks = pool
        .all(WEBHOOKS_PER_MINUTE, args![since], |r| {
            Ok(MinuteTraffic {
                minute_ms: r.get(0)?,
                webhooks_in: r.get(1)?,
                events_out: 0,
            })
        })
        .await?;
    let attempts = pool
        .all(ATTEMPTS_PER_MINUTE, args![since], |r| {
            Ok(MinuteTraffic {
                minute_ms: r.get(0)?,
                webhooks_in: 0,
                events_out: r.get(1)?,
            })
        })
        .await?;
    overview.traffic = webhooks.into_iter().chain(attempts).collect();
    let rows = pool
        .all(BACKLOG, args![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .await?;
    for row in rows {
        WorkflowBacklog::add(&mut overview.backlog, row);
    }
    Ok(overview)
}

pub(crate) async fn search_calls(
    pool: &Pool,
    search: &CallSearch,
) -> Result<Vec<CallSummary>, StoreError> {
    let (sql, args) = calls_statement(search);
    pool.all(&sql, args, CallSummary::from_sqlite).await
}

/// The statement that finds the calls of `search`, with its arguments.
fn calls_statement(search: &CallSearch) -> (String, Vec<Value>) {
    values(filter::calls(search, &DIALECT))
}

pub(crate) async fn search_deliveries(
    pool: &Pool,
    search: &DeliverySearch,
) -> Result<Vec<DeliverySummary>, StoreError> {
    let (sql, args) = deliveries_statement(search);
    pool.all(&sql, args, DeliverySummary::from_sqlite).await
}

/// The statement that finds the deliveries of `search`, with its arguments.
fn deliveries_statement(search: &DeliverySearch) -> (String, Vec<Value>) {
    values(filter::deliveries(search))
}

fn values((sql, args): (String, Vec<Arg>)) -> (String, Vec<Value>) {
    let args = args
        .into_iter()
        .map(|arg| match arg {
            Arg::Int(v) => Value::from(v),
            Arg::Text(v) => Value::from(v),
        })
        .collect();
    (sql, args)
}

pub(crate) async fn count_failed(
    pool: &Pool,
    workflow_id: i64,
    since_ms: i64,
    until_ms: i64,
) -> Result<i64, StoreError> {
    let args = args![workflow_id, since_ms, until_ms];
    Ok(pool
        .first(COUNT_FAILED, args, |r| r.get(0))
        .await?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sql::numbered, test_sqlite_store};

    /// SQLite's plan of `sql`, one step a line.
    async fn plan(pool: &Pool, (sql, args): (String, Vec<Value>)) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {}", numbered(&sql));
        pool.run(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let steps =
                stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?;
            Ok(steps.collect::<Result<Vec<_>, _>>()?.join("\n"))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn every_filter_is_an_index_search_and_no_list_is_sorted_apart() {
        let (store, _dir) = test_sqlite_store().await;
        let pool = store.sqlite();
        let calls = |search: CallSearch| {
            calls_statement(&CallSearch {
                limit: 50,
                ..search
            })
        };
        let deliveries = |search: DeliverySearch| {
            deliveries_statement(&DeliverySearch {
                limit: 50,
                ..search
            })
        };
        let cases = [
            (
                calls(CallSearch {
                    phone: Some("+1555".into()),
                    ..CallSearch::default()
                }),
                &["INDEX calls_sip_phone", "INDEX calls_metadata_phone"][..],
            ),
            (
                calls(CallSearch {
                    slug: Some("abc".into()),
                    ..CallSearch::default()
                }),
                &["INDEX calls_call_slug"][..],
            ),
            (
                deliveries(DeliverySearch {
                    status: Some("failed".into()),
                    ..DeliverySearch::default()
                }),
                &["INDEX outbox_status"][..],
            ),
            (
                deliveries(DeliverySearch {
                    status: Some("failed".into()),
                    workflow_id: Some(1),
                    since_ms: Some(0),
                    until_ms: Some(1),
                    ..DeliverySearch::default()
                }),
                &["INDEX outbox_workflow_status"][..],
            ),
            (
                deliveries(DeliverySearch {
                    workflow_id: Some(1),
                    ..DeliverySearch::default()
                }),
                &["USING INDEX outbox_"][..],
            ),
        ];
        for (statement, uses) in cases {
            let sql = statement.0.clone();
            let plan = plan(pool, statement).await;
            for index in uses {
                assert!(plan.contains(index), "{index} not in\n{plan}\nof {sql}");
            }
            assert!(!plan.contains("TEMP B-TREE"), "a sort in\n{plan}\nof {sql}");
        }
    }
}
