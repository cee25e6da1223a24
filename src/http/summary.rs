//! Refused webhooks, slow clients and failed accepts, logged as one summary line per
//! interval instead of one line each: a flood of forged requests must not push the
//! lines that matter out of journald's rate limit.
//!
//! The first event of each kind in an interval is logged at once, with its detail, so a
//! misconfigured LiveKit shows up without waiting; the rest are only counted, and the
//! interval ends with one line of counts by kind when anything was left unsaid. The
//! Prometheus counters (`metrics`) count every event regardless.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use crate::metrics::{AcceptError, ConnectionTimeout, Listener};

/// One kind of event the summary counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    /// A webhook refused, by reason (`metrics::REJECT_REASONS`).
    Rejected(&'static str),
    /// A connection closed because headers or a body did not come in time.
    TimedOut(Listener, ConnectionTimeout),
    /// `accept` failed.
    AcceptFailed(Listener, AcceptError),
    /// A listener reached its connection cap.
    LimitReached(Listener),
}

static TALLY: LazyLock<Mutex<BTreeMap<Event, u64>>> = LazyLock::new(Default::default);

/// Counts `event`; true when it is the first of its kind this interval, so the caller
/// logs it (with whatever detail it has) at once.
pub(crate) fn note(event: Event) -> bool {
    let mut tally = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    let count = tally.entry(event).or_insert(0);
    *count += 1;
    *count == 1
}

/// Takes the counts so far and starts a new interval (`jobs::log_summary` calls it once
/// per interval).
pub(crate) fn take() -> BTreeMap<Event, u64> {
    std::mem::take(&mut *TALLY.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The summary line for `tally`, or `None` when every event was already logged at once.
pub(crate) fn render(tally: &BTreeMap<Event, u64>, interval: Duration) -> Option<String> {
    if tally.values().all(|&n| n <= 1) {
        return None;
    }
    let mut refused = Vec::new();
    let mut timed_out = Vec::new();
    let mut accept = Vec::new();
    let mut full = Vec::new();
    for (event, &n) in tally {
        match event {
            Event::Rejected(reason) => refused.push((reason.to_string(), n)),
            Event::TimedOut(listener, phase) => {
                timed_out.push((format!("{} {}", listener.as_str(), phase.as_str()), n))
            }
            Event::AcceptFailed(listener, kind) => {
                accept.push((format!("{} {}", listener.as_str(), kind.as_str()), n))
            }
            Event::LimitReached(listener) => full.push((listener.as_str().to_owned(), n)),
        }
    }
    let mut line = format!("in the last {:?}:", interval);
    let mut part = |what: &str, items: Vec<(String, u64)>| {
        if items.is_empty() {
            return;
        }
        let total: u64 = items.iter().map(|(_, n)| n).sum();
        let items: Vec<String> = items.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let _ = write!(line, " {total} {what} ({});", items.join(", "));
    };
    part("webhooks refused", refused);
    part("connections timed out", timed_out);
    part("failed accepts", accept);
    part("times at the connection cap", full);
    Some(line.trim_end_matches(';').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_counts_every_kind_and_nothing_is_said_twice() {
        let mut tally = BTreeMap::new();
        tally.insert(Event::Rejected("bad_signature"), 2998);
        tally.insert(Event::Rejected("missing_token"), 2);
        tally.insert(
            Event::TimedOut(Listener::Webhook, ConnectionTimeout::Header),
            4,
        );
        tally.insert(
            Event::AcceptFailed(Listener::Webhook, AcceptError::Descriptors),
            7,
        );
        let line = render(&tally, Duration::from_secs(60)).unwrap();
        assert_eq!(
            line,
            "in the last 60s: 3000 webhooks refused (bad_signature: 2998, missing_token: 2); \
             4 connections timed out (webhook header: 4); \
             7 failed accepts (webhook descriptors: 7)"
        );
        let mut once = BTreeMap::new();
        once.insert(Event::Rejected("expired"), 1);
        assert_eq!(render(&once, Duration::from_secs(60)), None);
    }
}
