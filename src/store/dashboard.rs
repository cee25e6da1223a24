//! What the operator's dashboard asks of the store: a summary of the last hour, calls
//! searched by what an operator knows of them, deliveries filtered, and how many a
//! replay would send. Each backend answers in its own SQL (`sqlite/dashboard.rs`,
//! `postgres/dashboard.rs`); the lists page by id, newest first, so a page is an index
//! walk that stops at its limit whatever the table's size.

use serde::Serialize;

use super::{Backend, CallSummary, DeliverySummary, Store, StoreError, now_ms, postgres, sqlite};

/// One minute of traffic: LiveKit webhooks accepted and VoiceKit delivery attempts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MinuteTraffic {
    /// The minute's start, unix milliseconds.
    pub minute_ms: i64,
    pub webhooks_in: i64,
    pub events_out: i64,
}

/// The state of the bridge at a glance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    /// Calls not ended yet (waiting for the agent, or in progress).
    pub calls_live: i64,
    /// Calls that ended, or were finalized, within the last hour.
    pub calls_ended: i64,
    pub calls_finalized: i64,
    pub deliveries_pending: i64,
    pub deliveries_failed: i64,
    /// When the oldest pending delivery was queued.
    pub oldest_pending_at: Option<i64>,
    /// The last hour, one entry a minute, oldest first.
    pub traffic: Vec<MinuteTraffic>,
    /// Each workflow's pending and failed deliveries, of workflows that have any.
    pub backlog: Vec<WorkflowBacklog>,
}

/// How many of a workflow's deliveries wait or failed, and since when.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WorkflowBacklog {
    pub workflow_id: i64,
    pub pending: i64,
    pub oldest_pending_at: Option<i64>,
    pub failed: i64,
    pub oldest_failed_at: Option<i64>,
}

impl WorkflowBacklog {
    /// Adds one `(workflow, status, count, oldest)` row to the backlogs.
    pub(crate) fn add(backlog: &mut Vec<WorkflowBacklog>, row: (i64, String, i64, i64)) {
        let (workflow_id, status, count, oldest) = row;
        let at = match backlog.iter().position(|b| b.workflow_id == workflow_id) {
            Some(at) => at,
            None => {
                backlog.push(WorkflowBacklog {
                    workflow_id,
                    ..WorkflowBacklog::default()
                });
                backlog.len() - 1
            }
        };
        let entry = &mut backlog[at];
        match status.as_str() {
            "pending" => (entry.pending, entry.oldest_pending_at) = (count, Some(oldest)),
            _ => (entry.failed, entry.oldest_failed_at) = (count, Some(oldest)),
        }
    }
}

/// How far back the overview looks.
pub const OVERVIEW_WINDOW_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// Calls an operator looks for: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct CallSearch {
    pub call_id: Option<i64>,
    /// Part of the room name.
    pub room: Option<String>,
    /// The start of the caller's phone number (the SIP caller's or the metadata's); a
    /// leading `+` may be left out.
    pub phone: Option<String>,
    /// The call's slug.
    pub slug: Option<String>,
    /// Created within `[since, until)`, unix milliseconds.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Only calls with a smaller id: the page after one that ended there.
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Deliveries an operator filters: every given field must match.
#[derive(Debug, Clone, Default)]
pub struct DeliverySearch {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    pub workflow_id: Option<i64>,
    /// Created within `[since, until)`, unix milliseconds.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// The last hour: calls, the outbox's backlog, and traffic per minute.
    pub async fn overview(&self) -> Result<Overview, StoreError> {
        let now = now_ms();
        let since = (now - OVERVIEW_WINDOW_MS) / MINUTE_MS * MINUTE_MS + MINUTE_MS;
        let mut overview = match self.backend() {
            Backend::Sqlite(db) => sqlite::dashboard::overview(&db.pool, since).await?,
            Backend::Postgres(db) => postgres::dashboard::overview(&db.pool, since).await?,
        };
        overview.traffic = every_minute(since, now, overview.traffic);
        Ok(overview)
    }

    /// The calls matching `search`, newest first.
    pub async fn search_calls(&self, search: &CallSearch) -> Result<Vec<CallSummary>, StoreError> {
        match self.backend() {
            Backend::Sqlite(db) => sqlite::dashboard::search_calls(&db.pool, search).await,
            Backend::Postgres(db) => postgres::dashboard::search_calls(&db.pool, search).await,
        }
    }

    /// The deliveries matching `search`, newest first.
    pub async fn search_deliveries(
        &self,
        search: &DeliverySearch,
    ) -> Result<Vec<DeliverySummary>, StoreError> {
        match self.backend() {
            Backend::Sqlite(db) => sqlite::dashboard::search_deliveries(&db.pool, search).await,
            Backend::Postgres(db) => postgres::dashboard::search_deliveries(&db.pool, search).await,
        }
    }

    /// How many deliveries [`Store::replay_failed`] would put back in line now.
    pub async fn count_failed(
        &self,
        workflow_id: i64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<i64, StoreError> {
        match self.backend() {
            Backend::Sqlite(db) => {
                sqlite::dashboard::count_failed(&db.pool, workflow_id, since_ms, until_ms).await
            }
            Backend::Postgres(db) => {
                postgres::dashboard::count_failed(&db.pool, workflow_id, since_ms, until_ms).await
            }
        }
    }
}

/// Every minute from `since` to `now`, with the counts of the minutes that had traffic.
fn every_minute(since: i64, now: i64, counted: Vec<MinuteTraffic>) -> Vec<MinuteTraffic> {
    let mut minutes = Vec::new();
    let mut minute = since;
    while minute <= now {
        let mut traffic = MinuteTraffic {
            minute_ms: minute,
            ..MinuteTraffic::default()
        };
        for c in counted.iter().filter(|c| c.minute_ms == minute) {
            traffic.webhooks_in += c.webhooks_in;
            traffic.events_out += c.events_out;
        }
        minutes.push(traffic);
        minute += MINUTE_MS;
    }
    minutes
}

/// The phone numbers that start with `prefix`, as the half-open range `[from, to)` in
/// byte order: stored numbers are E.164 (`+15551230001`), so a prefix typed without its
/// `+` gets one.
pub(crate) fn phone_range(prefix: &str) -> (String, String) {
    let prefix = prefix.trim();
    let from = if prefix.starts_with('+') {
        prefix.to_owned()
    } else {
        format!("+{prefix}")
    };
    // No character sorts after U+10FFFF: every number that starts with `from` is below.
    let to = format!("{from}\u{10FFFF}");
    (from, to)
}

/// `text` for a `LIKE ... ESCAPE '\'` pattern: its `%`, `_` and `\` match themselves.
pub(crate) fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(crate) mod filter;
#[cfg(test)]
mod tests;
