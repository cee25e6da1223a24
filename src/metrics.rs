//! Prometheus metrics: what the daemon counts while it runs, rendered for `GET /metrics`
//! on the operator listener.
//!
//! Counters and histograms live in one process-wide registry, so any module records with
//! a plain function call (`metrics::webhook_rejected("expired")`) and nothing has to be
//! threaded through constructors. Gauges that describe stored state (calls by phase,
//! outbox depth and age) are not kept here at all: `/metrics` reads them from the store
//! ([`StoreGauges`], at most once per `api.metrics_refresh_secs`), so they are right
//! after a restart too.
//!
//! The output is the OpenMetrics text format (`# EOF`-terminated), which Prometheus
//! scrapes natively; names follow Prometheus conventions (`_total`, `_seconds`).

use std::sync::{LazyLock, atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this (and `_`).
const PREFIX: &str = "voicekit_bridge";

/// What became of one webhook LiveKit sent (`result` label of `webhooks_received_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebhookResult {
    /// Committed with everything it caused.
    Accepted,
    /// Its event id was accepted before.
    Duplicate,
    /// Stored as seen, but it concerns no call.
    Ignored,
    /// Refused with a 4xx; `webhooks_rejected_total{reason}` says why.
    Rejected,
    /// The store could not commit it; LiveKit got a 503 and retries.
    Error,
}

impl WebhookResult {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Rejected => "rejected",
            WebhookResult::Error => "error",
        }
    }
}

/// How one delivery attempt ended (`outcome` label of `deliveries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryOutcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// It did not; another attempt is scheduled.
    Retry,
    /// It did not, and that was the last attempt: the row is marked failed.
    Failed,
}

impl DeliveryOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Failed => "failed",
        }
    }
}

/// The rejection reasons known in advance; they are exported as 0 before the first one,
/// so `rate()` and alerts work from the start.
pub(crate) const REJECT_REASONS: &[&str] = &[
    "missing_token",
    "malformed_token",
    "unknown_key",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "missing_hash",
    "hash_mismatch",
    "invalid_token",
    "malformed_json",
    "missing_event",
    "too_large",
    "body_timeout",
    "body_unreadable",
];

/// The event types LiveKit sends; any other `event` is counted as `other`, so a label
/// set can never grow from odd input.
const LIVEKIT_EVENTS: &[&str] = &[
    "room_started",
    "room_finished",
    "participant_joined",
    "participant_left",
    "participant_connection_aborted",
    "track_published",
    "track_unpublished",
    "egress_started",
    "egress_updated",
    "egress_ended",
    "ingress_started",
    "ingress_ended",
    "agent_job_started",
    "agent_job_ended",
];

/// Which listener a connection came to (`listener` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Listener {
    /// `[server] listen`: LiveKit's webhooks, `/healthz`, `/readyz`.
    Webhook,
    /// `[api] listen`: the operator API and `/metrics`.
    Operator,
}

impl Listener {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Listener::Webhook => "webhook",
            Listener::Operator => "operator",
        }
    }
}

/// Why the daemon closed a connection it had accepted (`phase` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ConnectionTimeout {
    /// The request's headers did not arrive in time.
    Header,
    /// The request's body did not arrive in time (answered 408).
    Body,
    /// A keep-alive connection sent no new request in time (normal operation).
    Idle,
}

impl ConnectionTimeout {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnectionTimeout::Header => "header",
            ConnectionTimeout::Body => "body",
            ConnectionTimeout::Idle => "idle",
        }
    }
}

/// Why `accept` failed (`kind` label): out of descriptors (`EMFILE`, `ENFILE`), out
/// of memory (`ENOBUFS`, `ENOMEM`), or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AcceptError {
    Descriptors,
    Memory,
    Other,
}

impl AcceptError {
    pub(crate) fn of(e: &std::io::Error) -> AcceptError {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => AcceptError::Descriptors,
            Some(libc::ENOBUFS | libc::ENOMEM) => AcceptError::Memory,
            _ => AcceptError::Other,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AcceptError::Descriptors => "descriptors",
            AcceptError::Memory => "memory",
            AcceptError::Other => "other",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    event: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    workflow: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    listener: &'static str,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcceptErrorLabels {
    listener: &'static str,
    kind: &'static str,
}

struct Metrics {
    registry: Registry,
    webhooks_received: Family<WebhookLabels, Counter>,
    webhooks_rejected: Family<ReasonLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_duration: Histogram,
    s3_errors: Counter,
    store_write_failures: Counter,
    store_commit: Histogram,
    wal_sync: Histogram,
    connections_open: Family<ListenerLabels, Gauge>,
    connection_timeouts: Family<TimeoutLabels, Counter>,
    accept_errors: Family<AcceptErrorLabels, Counter>,
    connection_limit_reached: Family<ListenerLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix(PREFIX);
    let webhooks_received = Family::<WebhookLabels, Counter>::default();
    registry.register(
        "webhooks_received",
        "LiveKit webhooks received, by event type and result",
        webhooks_received.clone(),
    );
    let webhooks_rejected = Family::<ReasonLabels, Counter>::default();
    for reason in REJECT_REASONS {
        webhooks_rejected
            .get_or_create(&ReasonLabels {
                reason: (*reason).to_owned(),
            })
            .inc_by(0);
    }
    registry.register(
        "webhooks_rejected",
        "LiveKit webhooks refused with a 4xx, by reason",
        webhooks_rejected.clone(),
    );
    let deliveries = Family::<DeliveryLabels, Counter>::default();
    registry.register(
        "deliveries",
        "Delivery attempts of VoiceKit events, by workflow slug and outcome",
        deliveries.clone(),
    );
    // 5 ms .. ~41 s: the delivery timeout is 10 s by default.
    let delivery_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
    registry.register_with_unit(
        "delivery_duration",
        "Time of one delivery attempt, from the start of the request to the answer",
        Unit::Seconds,
        delivery_duration.clone(),
    );
    let s3_errors = Counter::default();
    registry.register(
        "s3_errors",
        "S3 requests (HeadObject, presigning) that failed",
        s3_errors.clone(),
    );
    let store_write_failures = Counter::default();
    registry.register(
        "store_write_failures",
        "Writes (accepted webhooks, delivery outcomes, published bodies) the store could not commit",
        store_write_failures.clone(),
    );
    // 0.5 ms .. ~4 s: one transaction per batch of webhooks.
    let store_commit = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
    registry.register_with_unit(
        "store_commit_duration",
        "Time to write and commit one batch of accepted webhooks (on a SQLite file, its fsync is wal_sync_duration)",
        Unit::Seconds,
        store_commit.clone(),
    );
    // The same range: one fdatasync of the SQLite WAL, after one or more commits.
    let wal_sync = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
    registry.register_with_unit(
        "wal_sync_duration",
        "Time to fsync the SQLite WAL after the ingest writer's commits; webhooks are answered after it",
        Unit::Seconds,
        wal_sync.clone(),
    );
    let connections_open = Family::<ListenerLabels, Gauge>::default();
    let connection_timeouts = Family::<TimeoutLabels, Counter>::default();
    let accept_errors = Family::<AcceptErrorLabels, Counter>::default();
    let connection_limit_reached = Family::<ListenerLabels, Counter>::default();
    for listener in [Listener::Webhook, Listener::Operator] {
        let listener = listener.as_str();
        connections_open
            .get_or_create(&ListenerLabels { listener })
            .set(0);
        connection_limit_reached
            .get_or_create(&ListenerLabels { listener })
            .inc_by(0);
        for phase in [
            ConnectionTimeout::Header,
            ConnectionTimeout::Body,
            ConnectionTimeout::Idle,
        ] {
            connection_timeouts
                .get_or_create(&TimeoutLabels {
                    listener,
                    phase: phase.as_str(),
                })
                .inc_by(0);
        }
        for kind in [
            AcceptError::Descriptors,
            AcceptError::Memory,
            AcceptError::Other,
        ] {
            accept_errors
                .get_or_create(&AcceptErrorLabels {
                    listener,
                    kind: kind.as_str(),
                })
                .inc_by(0);
        }
    }
    registry.register(
        "connections_open",
        "HTTP connections open now, by listener",
        connections_open.clone(),
    );
    registry.register(
        "connection_timeouts",
        "Connections closed because a request's headers or body, or the next request, did not come in time",
        connection_timeouts.clone(),
    );
    registry.register(
        "accept_errors",
        "Failed accepts of new connections (descriptors: the open-file limit), by listener and kind",
        accept_errors.clone(),
    );
    registry.register(
        "connection_limit_reached",
        "Times a listener reached its connection cap and stopped accepting until one closed",
        connection_limit_reached.clone(),
    );
    Metrics {
        registry,
        connections_open,
        connection_timeouts,
        accept_errors,
        connection_limit_reached,
        webhooks_received,
        webhooks_rejected,
        deliveries,
        delivery_duration,
        s3_errors,
        store_write_failures,
        store_commit,
        wal_sync,
    }
});

/// The `event` label for a LiveKit event type: one of [`LIVEKIT_EVENTS`] (or `unknown`,
/// a webhook refused before its body was read), else `other`.
fn event_label(event: &str) -> String {
    if event == "unknown" || LIVEKIT_EVENTS.contains(&event) {
        event.to_owned()
    } else {
        "other".to_owned()
    }
}

/// Counts a webhook: `event` is LiveKit's event type (`unknown` when it was refused
/// before the body was parsed).
pub(crate) fn webhook_received(event: &str, result: WebhookResult) {
    METRICS
        .webhooks_received
        .get_or_create(&WebhookLabels {
            event: event_label(event),
            result: result.as_str(),
        })
        .inc();
}

/// Counts a webhook refused with a 4xx: `webhooks_rejected_total{reason}` and
/// `webhooks_received_total{event="unknown",result="rejected"}`.
pub(crate) fn webhook_rejected(reason: &str) {
    METRICS
        .webhooks_rejected
        .get_or_create(&ReasonLabels {
            reason: reason.to_owned(),
        })
        .inc();
    webhook_received("unknown", WebhookResult::Rejected);
}

/// One more (`opened`) or one fewer open connection on `listener`.
pub(crate) fn connection_open(listener: Listener, opened: bool) {
    let gauge = METRICS.connections_open.get_or_create(&ListenerLabels {
        listener: listener.as_str(),
    });
    if opened {
        gauge.inc();
    } else {
        gauge.dec();
    }
}

/// Counts a connection closed by one of the listener's timeouts.
pub(crate) fn connection_timed_out(listener: Listener, phase: ConnectionTimeout) {
    METRICS
        .connection_timeouts
        .get_or_create(&TimeoutLabels {
            listener: listener.as_str(),
            phase: phase.as_str(),
        })
        .inc();
}

/// Counts a failed `accept`.
pub(crate) fn accept_failed(listener: Listener, kind: AcceptError) {
    METRICS
        .accept_errors
        .get_or_create(&AcceptErrorLabels {
            listener: listener.as_str(),
            kind: kind.as_str(),
        })
        .inc();
}

/// Counts a listener reaching its connection cap.
pub(crate) fn connection_limit_reached(listener: Listener) {
    METRICS
        .connection_limit_reached
        .get_or_create(&ListenerLabels {
            listener: listener.as_str(),
        })
        .inc();
}

/// Records one finished delivery attempt of an event of workflow `workflow_slug`, which
/// took `seconds` (request start to answer or error).
pub(crate) fn delivery_finished(workflow_slug: &str, outcome: DeliveryOutcome, seconds: f64) {
    METRICS
        .deliveries
        .get_or_create(&DeliveryLabels {
            workflow: workflow_slug.to_owned(),
            outcome: outcome.as_str(),
        })
        .inc();
    METRICS.delivery_duration.observe(seconds);
}

/// Counts one failed S3 request.
pub(crate) fn s3_error() {
    METRICS.s3_errors.inc();
}

/// Counts one write the store could not commit.
pub(crate) fn store_write_failed() {
    METRICS.store_write_failures.inc();
}

/// Records one committed store transaction that took `seconds`.
pub(crate) fn store_commit(seconds: f64) {
    METRICS.store_commit.observe(seconds);
}

/// Records one fsync of the SQLite WAL by the ingest writer's sync thread.
pub(crate) fn wal_sync(seconds: f64) {
    METRICS.wal_sync.observe(seconds);
}

/// What `/metrics` reads from the store at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StoreGauges {
    /// Calls per `calls.phase` value.
    pub calls_by_state: Vec<(String, i64)>,
    /// Outbox rows still `pending`.
    pub outbox_pending: i64,
    /// Age of the oldest pending row, 0 when there is none.
    pub oldest_pending_age_seconds: f64,
}

/// The whole exposition: the process-wide metrics and, when the store answered, the
/// gauges read from it.
pub(crate) fn render(store: Option<&StoreGauges>) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = text::encode_registry(&mut out, &METRICS.registry);
    if let Some(gauges) = store {
        let _ = text::encode_registry(&mut out, &store_registry(gauges));
    }
    let _ = text::encode_eof(&mut out);
    out
}

fn store_registry(gauges: &StoreGauges) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let calls = Family::<StateLabels, Gauge>::default();
    for (state, count) in &gauges.calls_by_state {
        calls
            .get_or_create(&StateLabels {
                state: state.clone(),
            })
            .set(*count);
    }
    registry.register("calls", "Calls in the store, by state", calls);
    let pending = Gauge::<i64>::default();
    pending.set(gauges.outbox_pending);
    registry.register(
        "outbox_pending",
        "VoiceKit events waiting in the outbox to be delivered",
        pending,
    );
    let age = Gauge::<f64, AtomicU64>::default();
    age.set(gauges.oldest_pending_age_seconds);
    registry.register_with_unit(
        "outbox_oldest_pending_age",
        "How long the oldest pending VoiceKit event has waited (0 when none)",
        Unit::Seconds,
        age,
    );
    registry
}

/// A rejection counter's current value, to assert on increments without parsing.
#[cfg(test)]
fn rejected_count(reason: &str) -> u64 {
    METRICS
        .webhooks_rejected
        .get_or_create(&ReasonLabels {
            reason: reason.to_owned(),
        })
        .get()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        webhook_received("room_started", WebhookResult::Accepted);
        delivery_finished("support", DeliveryOutcome::Delivered, 0.02);
        s3_error();
        store_commit(0.003);
        let text = render(Some(&StoreGauges {
            calls_by_state: vec![("ended".into(), 2)],
            outbox_pending: 3,
            oldest_pending_age_seconds: 1.5,
        }));
        for name in [
            "voicekit_bridge_webhooks_received_total{event=\"room_started\",result=\"accepted\"}",
            "voicekit_bridge_webhooks_rejected_total{reason=\"bad_signature\"}",
            "voicekit_bridge_deliveries_total{workflow=\"support\",outcome=\"delivered\"}",
            "voicekit_bridge_delivery_duration_seconds_bucket{le=\"0.04\"}",
            "voicekit_bridge_delivery_duration_seconds_count",
            "voicekit_bridge_s3_errors_total",
            "voicekit_bridge_store_commit_duration_seconds_count",
            "voicekit_bridge_calls{state=\"ended\"}",
            "voicekit_bridge_outbox_pending",
            "voicekit_bridge_outbox_oldest_pending_age_seconds",
        ] {
            assert!(sample(&text, name).is_some(), "{name} missing in:\n{text}");
        }
        assert_eq!(sample(&text, "voicekit_bridge_outbox_pending"), Some("3"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn rejection_counts_by_reason_and_as_received() {
        let before = rejected_count("hash_mismatch");
        webhook_rejected("hash_mismatch");
        assert_eq!(rejected_count("hash_mismatch"), before + 1);
        let text = render(None);
        assert!(
            sample(
                &text,
                "voicekit_bridge_webhooks_received_total{event=\"unknown\",result=\"rejected\"}"
            )
            .is_some(),
            "{text}"
        );
        assert!(!text.contains("voicekit_bridge_outbox_pending"), "{text}");
    }

    #[test]
    fn odd_event_names_share_one_label() {
        assert_eq!(event_label("egress_ended"), "egress_ended");
        assert_eq!(event_label("unknown"), "unknown");
        assert_eq!(event_label("made_up_event"), "other");
        assert_eq!(event_label("Room\"Started"), "other");
        assert_eq!(event_label(&"a".repeat(100)), "other");
        assert_eq!(event_label(""), "other");
    }
}
