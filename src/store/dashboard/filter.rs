//! The dashboard's list statements, built once for both backends. Only the filters an
//! operator gave are in a statement's text, so each statement is planned for the
//! indexes its filters can use. What differs by backend (how a room name matches, how
//! a phone number is read from a call's state, as its migration indexes it) comes in a
//! [`Dialect`]; each backend binds the [`Arg`]s its own way.

use super::{CallSearch, DeliverySearch, like_escaped, phone_range};
use crate::store::operator::{CALL, DELIVERY};

/// A value bound to one `$N` placeholder.
pub(crate) enum Arg {
    Int(i64),
    Text(String),
}

/// The parts of a call search that each backend writes in its own SQL.
pub(crate) struct Dialect {
    /// `LIKE` or `ILIKE`: how a part of a room name matches, case aside.
    pub(crate) room_match: &'static str,
    /// The SIP caller's number in a call's state, exactly as the index reads it.
    pub(crate) sip_phone: &'static str,
    /// The room metadata's number in a call's state, exactly as the index reads it.
    pub(crate) metadata_phone: &'static str,
}

/// The statement that finds the calls of `search`, with its arguments.
pub(crate) fn calls(search: &CallSearch, dialect: &Dialect) -> (String, Vec<Arg>) {
    let mut c = Conditions::default();
    if let Some(id) = search.call_id {
        c.push("id = ?", [Arg::Int(id)]);
    }
    if let Some(room) = &search.room {
        let pattern = format!("%{}%", like_escaped(room));
        let condition = format!(r"room_name {} ? ESCAPE '\'", dialect.room_match);
        c.push(&condition, [Arg::Text(pattern)]);
    }
    if let Some(phone) = &search.phone {
        // Each number has an index of its own (the dashboard's migration): a union of
        // two index ranges, where a pattern would read every call's state.
        let (from, to) = phone_range(phone);
        let (sip, metadata) = (dialect.sip_phone, dialect.metadata_phone);
        c.push(
            &format!(
                "id IN (SELECT id FROM calls WHERE {sip} >= ? AND {sip} < ?
                        UNION ALL
                        SELECT id FROM calls WHERE {metadata} >= ? AND {metadata} < ?)"
            ),
            [from.clone(), to.clone(), from, to].map(Arg::Text),
        );
    }
    if let Some(slug) = &search.slug {
        c.push("call_slug = ?", [Arg::Text(slug.clone())]);
    }
    c.created_between(search.since_ms, search.until_ms, search.before_id);
    let (filter, args) = c.newest_first(search.limit);
    (format!("SELECT {CALL} FROM calls {filter}"), args)
}

/// The statement that finds the deliveries of `search`, with its arguments.
pub(crate) fn deliveries(search: &DeliverySearch) -> (String, Vec<Arg>) {
    let mut c = Conditions::default();
    if let Some(status) = &search.status {
        c.push("status = ?", [Arg::Text(status.clone())]);
    }
    if let Some(workflow) = search.workflow_id {
        c.push("workflow_id = ?", [Arg::Int(workflow)]);
    }
    c.created_between(search.since_ms, search.until_ms, search.before_id);
    let (filter, args) = c.newest_first(search.limit);
    (format!("SELECT {DELIVERY} FROM outbox {filter}"), args)
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

    /// The time range and the page both lists share: created in `[since, until)`, and
    /// older than the last row of the page before.
    fn created_between(&mut self, since: Option<i64>, until: Option<i64>, before: Option<i64>) {
        if let Some(since) = since {
            self.push("created_at >= ?", [Arg::Int(since)]);
        }
        if let Some(until) = until {
            self.push("created_at < ?", [Arg::Int(until)]);
        }
        if let Some(before) = before {
            self.push("id < ?", [Arg::Int(before)]);
        }
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
