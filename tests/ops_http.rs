//! Proves the operator endpoints of the real daemon answer as README documents: `/healthz`
//! and `/readyz` say 200 while serving, and `/metrics` (on the operator listener) is a
//! Prometheus (OpenMetrics) text
//! exposition whose counters move with the webhooks sent — by event and result, rejections
//! by reason — and whose gauges show what the store holds (calls by state, the outbox
//! backlog and its age).

mod support;

use std::time::Duration;

use support::config::{API_KEY, API_SECRET};
use support::lk::{self, Room};
use support::{Daemon, Receiver, TestConfig, poll};

const WAIT: Duration = Duration::from_secs(15);

/// The value of exactly `series` (name and labels as printed) in a scrape, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// Scrapes `/metrics`, checking the status and content type.
async fn scrape(daemon: &Daemon) -> String {
    let response = daemon
        .http()
        .get(support::operator::api_url(daemon, "/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("metrics body")
}

async fn post(daemon: &Daemon, body: &str, secret: &str) -> u16 {
    daemon.post_signed(body, API_KEY, secret).await.0
}

#[tokio::test]
async fn healthz_and_readyz_say_ok_while_serving() {
    let daemon = Daemon::start(&TestConfig::new("http://127.0.0.1:9/hook").toml()).await;
    assert_eq!(daemon.get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(daemon.get("/readyz").await, (200, "ok\n".to_owned()));
    let (status, json) = support::operator::api_get(&daemon, "/readyz").await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "ready");
}

#[tokio::test]
async fn metrics_count_webhooks_by_event_and_result_and_rejections_by_reason() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hook")).toml()).await;
    let rejected = r#"voicekit_bridge_webhooks_rejected_total{reason="bad_signature"}"#;
    let before = scrape(&daemon).await;
    assert_eq!(value(&before, rejected), Some(0.0), "{before}");

    let room = lk::mapped_room();
    let started = lk::room_started(&room, 1_761_234_567);
    assert_eq!(post(&daemon, &started, API_SECRET).await, 200);
    assert_eq!(post(&daemon, &started, API_SECRET).await, 200); // the same id again
    assert_eq!(
        post(&daemon, &lk::agent_joined(&room), API_SECRET).await,
        200
    );
    let elsewhere = Room::new("RM_unmapped1", "not-a-voicekit-room", 1_761_234_567_123);
    let ignored = lk::room_started(&elsewhere, 1_761_234_567);
    assert_eq!(post(&daemon, &ignored, API_SECRET).await, 200);
    let forged = lk::room_started(&lk::mapped_room(), 1_761_234_567);
    assert_eq!(
        post(&daemon, &forged, "not-the-secret-but-long-enough").await,
        401
    );
    let (status, _) = daemon.post_webhook(&forged, None).await;
    assert_eq!(status, 401);
    receiver.next(WAIT).await;

    let after = scrape(&daemon).await;
    let expect = [
        (
            r#"voicekit_bridge_webhooks_received_total{event="room_started",result="accepted"}"#,
            1.0,
        ),
        (
            r#"voicekit_bridge_webhooks_received_total{event="room_started",result="duplicate"}"#,
            1.0,
        ),
        (
            r#"voicekit_bridge_webhooks_received_total{event="participant_joined",result="accepted"}"#,
            1.0,
        ),
        (
            r#"voicekit_bridge_webhooks_received_total{event="room_started",result="ignored"}"#,
            1.0,
        ),
        (
            r#"voicekit_bridge_webhooks_received_total{event="unknown",result="rejected"}"#,
            2.0,
        ),
        (rejected, 1.0),
        (
            r#"voicekit_bridge_webhooks_rejected_total{reason="missing_token"}"#,
            1.0,
        ),
    ];
    for (series, wanted) in expect {
        assert_eq!(value(&after, series), Some(wanted), "{series} in:\n{after}");
    }
    let commits = value(
        &after,
        "voicekit_bridge_store_commit_duration_seconds_count",
    )
    .expect("store commit histogram");
    assert!(commits >= 1.0, "{after}");
    for name in [
        "# TYPE voicekit_bridge_delivery_duration_seconds histogram",
        "voicekit_bridge_s3_errors_total ",
        "voicekit_bridge_calls{state=\"in_progress\"} ",
        "voicekit_bridge_outbox_pending ",
        "voicekit_bridge_outbox_oldest_pending_age_seconds ",
    ] {
        assert!(after.contains(name), "{name} missing in:\n{after}");
    }
    assert!(after.ends_with("# EOF\n"), "{after}");
}

#[tokio::test]
async fn metrics_show_calls_by_state_and_the_outbox_backlog() {
    // The endpoint fails once and the retry is an hour away: the event stays pending.
    let mut receiver = Receiver::start_with(vec![500]).await;
    let mut config = TestConfig::new(&receiver.url("/hook"));
    config.retry_schedule_secs = "[3600]";
    // The store's counts are read again at most this often.
    let toml = config
        .toml()
        .replacen("\n[api]\n", "\n[api]\nmetrics_refresh_secs = 0.2\n", 1);
    let daemon = Daemon::start(&toml).await;

    let empty = scrape(&daemon).await;
    assert_eq!(value(&empty, "voicekit_bridge_outbox_pending"), Some(0.0));
    assert_eq!(
        value(&empty, "voicekit_bridge_outbox_oldest_pending_age_seconds"),
        Some(0.0)
    );
    assert_eq!(
        value(&empty, r#"voicekit_bridge_calls{state="waiting"}"#),
        Some(0.0)
    );

    let room = lk::mapped_room();
    assert_eq!(
        post(&daemon, &lk::agent_joined(&room), API_SECRET).await,
        200
    );
    let other = lk::mapped_room();
    assert_eq!(
        post(
            &daemon,
            &lk::room_started(&other, 1_761_234_567),
            API_SECRET
        )
        .await,
        200
    );
    receiver.next(WAIT).await;

    let text = poll::wait_for(WAIT, "a pending event with an age", async || {
        let text = scrape(&daemon).await;
        let age = value(&text, "voicekit_bridge_outbox_oldest_pending_age_seconds")?;
        (age > 0.0).then_some(text)
    })
    .await;
    assert_eq!(
        value(&text, "voicekit_bridge_outbox_pending"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"voicekit_bridge_calls{state="in_progress"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"voicekit_bridge_calls{state="waiting"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"voicekit_bridge_calls{state="ended"}"#),
        Some(0.0),
        "{text}"
    );
}
