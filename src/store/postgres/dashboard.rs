//! The dashboard's queries in PostgreSQL's SQL (see `store/dashboard.rs`). Only the
//! filters an operator gave are in a statement's text, so each statement is planned
//! for the indexes its filters can use.

use sqlx::{PgPool, Row};

use crate::store::{
    CallSummary, DeliverySummary, StoreError,
    dashboard::{
        CallSearch, DeliverySearch, MinuteTraffic, Overview, WorkflowBacklog,
        filter::{self, Arg, Dialect},
    },
};

/// Room names match case aside; the phone numbers in a call's state are read exactly as
/// the dashboard's migration indexes them.
const DIALECT: Dialect = Dialect {
    room_match: "ILIKE",
    sip_phone: r#"(NULLIF(split_part(split_part(state, '"sip_phone":"', 2), '"', 1), '') COLLATE "C")"#,
    metadata_phone: r#"(NULLIF(split_part(split_part(state, '"metadata_phone":"', 2), '"', 1), '') COLLATE "C")"#,
};
const COUNTS: &str = "SELECT
    (SELECT count(*) FROM calls WHERE phase IN ('waiting', 'in_progress')),
    (SELECT count(*) FROM calls WHERE phase = 'ended' AND updated_at >= $1),
    (SELECT count(*) FROM calls WHERE phase = 'finalized' AND updated_at >= $1),
    (SELECT count(*) FROM outbox WHERE status = 'pending'),
    (SELECT count(*) FROM outbox WHERE status = 'failed'),
    (SELECT min(created_at) FROM outbox WHERE status = 'pending')";
const TRAFFIC: &str = "SELECT received_at / 60000 * 60000 AS minute, count(*) AS webhooks_in,
           0::BIGINT AS events_out
    FROM inbound_events WHERE received_at >= $1 GROUP BY minute
    UNION ALL
    SELECT attempted_at / 60000 * 60000 AS minute, 0::BIGINT, count(*)
    FROM delivery_attempts WHERE attempted_at >= $1 GROUP BY minute";
const BACKLOG: &str = "SELECT workflow_id, status, count(*), min(created_at) FROM outbox
    WHERE status IN ('pending', 'failed') GROUP BY workflow_id, status";
const COUNT_FAILED: &str = "SELECT count(*) FROM outbox
    WHERE status = 'failed' AND workflow_id = $1 AND created_at >= $2 AND created_at < $3";

pub(crate) async fn overview(pool: &PgPool, since: i64) -> Result<Overview, StoreError> {
    let row = sqlx::query(COUNTS).bind(since).fetch_one(pool).await?;
    let traffic = sqlx::query(TRAFFIC)
        .bind(since)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|r| {
            Ok(MinuteTraffic {
                minute_ms: r.try_get(0)?,
                webhooks_in: r.try_get(1)?,
                events_out: r.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let mut backlog = Vec::new();
    for row in sqlx::query_as(BACKLOG).fetch_all(pool).await? {
        WorkflowBacklog::add(&mut backlog, row);
    }
    Ok(Overview {
        calls_live: row.try_get(0)?,
        calls_ended: row.try_get(1)?,
        calls_finalized: row.try_get(2)?,
        deliveries_pending: row.try_get(3)?,
        deliveries_failed: row.try_get(4)?,
        oldest_pending_at: row.try_get(5)?,
        traffic,
        backlog,
    })
}

async fn fetch<T>(pool: &PgPool, sql: String, args: Vec<Arg>) -> Result<Vec<T>, StoreError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut query = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(sql));
    for arg in args {
        query = match arg {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    Ok(query.fetch_all(pool).await?)
}

pub(crate) async fn search_calls(
    pool: &PgPool,
    search: &CallSearch,
) -> Result<Vec<CallSummary>, StoreError> {
    let (sql, args) = filter::calls(search, &DIALECT);
    fetch(pool, sql, args).await
}

pub(crate) async fn search_deliveries(
    pool: &PgPool,
    search: &DeliverySearch,
) -> Result<Vec<DeliverySummary>, StoreError> {
    let (sql, args) = filter::deliveries(search);
    fetch(pool, sql, args).await
}

pub(crate) async fn count_failed(
    pool: &PgPool,
    workflow_id: i64,
    since_ms: i64,
    until_ms: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(COUNT_FAILED)
        .bind(workflow_id)
        .bind(since_ms)
        .bind(until_ms)
        .fetch_one(pool)
        .await?)
}
