//! The dashboard's queries in PostgreSQL's SQL (see `store/dashboard.rs`). Only the
//! filters an operator gave are in a statement's text, so each statement is planned
//! for the indexes its filters can use.

use sqlx::{PgPool, Row};

use crate::store::{
    CallSummary, DeliverySummary, StoreError,
    dashboard::{
        CallSearch, DeliverySearch, MinuteTraffic, Overview, WorkflowBacklog, like_escaped,
        phone_range,
    },
    operator::{CALL, DELIVERY},
};

/// The phone numbers in a call's state, exactly as the dashboard's migration indexes them.
const SIP_PHONE: &str =
    r#"(NULLIF(split_part(split_part(state, '"sip_phone":"', 2), '"', 1), '') COLLATE "C")"#;
const METADATA_PHONE: &str =
    r#"(NULLIF(split_part(split_part(state, '"metadata_phone":"', 2), '"', 1), '') COLLATE "C")"#;
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

/// A value bound to one placeholder.
enum Arg {
    Int(i64),
    Text(String),
}

/// A `WHERE` clause grown one condition at a time, with its arguments in `$N` order.
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Adds `condition`, each `?` of which is the placeholder of the next argument.
    fn push(&mut self, condition: &str, args: impl IntoIterator<Item = Arg>) {
        let mut sql = String::with_capacity(condition.len() + 4);
        let mut args = args.into_iter();
        for c in condition.chars() {
            if c == '?' {
                self.args
                    .push(args.next().expect("an argument for each placeholder"));
                sql.push_str(&format!("${}", self.args.len()));
            } else {
                sql.push(c);
            }
        }
        self.sql.push(sql);
    }

    /// `WHERE ... ORDER BY id DESC LIMIT $N`, the limit being the last argument.
    fn newest_first(mut self, limit: i64) -> (String, Vec<Arg>) {
        let filter = if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        };
        self.args.push(Arg::Int(limit));
        let sql = format!("{filter} ORDER BY id DESC LIMIT ${}", self.args.len());
        (sql, self.args)
    }
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
    let mut c = Conditions::default();
    if let Some(id) = search.call_id {
        c.push("id = ?", [Arg::Int(id)]);
    }
    if let Some(room) = &search.room {
        let pattern = format!("%{}%", like_escaped(room));
        c.push(r"room_name ILIKE ? ESCAPE '\'", [Arg::Text(pattern)]);
    }
    if let Some(phone) = &search.phone {
        // Each number has an index of its own (the dashboard's migration): a union of
        // two index ranges, where a pattern would read every call's state.
        let (from, to) = phone_range(phone);
        c.push(
            &format!(
                "id IN (SELECT id FROM calls WHERE {SIP_PHONE} >= ? AND {SIP_PHONE} < ?
                        UNION ALL
                        SELECT id FROM calls WHERE {METADATA_PHONE} >= ? AND {METADATA_PHONE} < ?)"
            ),
            [from.clone(), to.clone(), from, to].map(Arg::Text),
        );
    }
    if let Some(slug) = &search.slug {
        c.push("call_slug = ?", [Arg::Text(slug.clone())]);
    }
    if let Some(since) = search.since_ms {
        c.push("created_at >= ?", [Arg::Int(since)]);
    }
    if let Some(until) = search.until_ms {
        c.push("created_at < ?", [Arg::Int(until)]);
    }
    if let Some(before) = search.before_id {
        c.push("id < ?", [Arg::Int(before)]);
    }
    let (filter, args) = c.newest_first(search.limit);
    fetch(pool, format!("SELECT {CALL} FROM calls {filter}"), args).await
}

pub(crate) async fn search_deliveries(
    pool: &PgPool,
    search: &DeliverySearch,
) -> Result<Vec<DeliverySummary>, StoreError> {
    let mut c = Conditions::default();
    if let Some(status) = &search.status {
        c.push("status = ?", [Arg::Text(status.clone())]);
    }
    if let Some(workflow) = search.workflow_id {
        c.push("workflow_id = ?", [Arg::Int(workflow)]);
    }
    if let Some(since) = search.since_ms {
        c.push("created_at >= ?", [Arg::Int(since)]);
    }
    if let Some(until) = search.until_ms {
        c.push("created_at < ?", [Arg::Int(until)]);
    }
    if let Some(before) = search.before_id {
        c.push("id < ?", [Arg::Int(before)]);
    }
    let (filter, args) = c.newest_first(search.limit);
    fetch(
        pool,
        format!("SELECT {DELIVERY} FROM outbox {filter}"),
        args,
    )
    .await
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
