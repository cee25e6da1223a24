//! An endpoint that answers `410 Gone` is disabled in the store: its events, and those
//! created while it stays disabled, are held (pending, not sent) across a restart,
//! listed by `endpoints list`, and delivered once an operator enables it again with
//! `endpoints enable`, `deliveries retry` or `deliveries replay`. Against the real
//! daemon and a real receiver answering 410 and then 200, on the suite's store.

use crate::support;

use std::{collections::HashSet, path::Path, time::Duration};

use serde_json::{Value, json};
use support::{
    Daemon, Receiver, TestConfig,
    config::{API_KEY, API_SECRET, WORKFLOW_SLUG, free_port},
    lk::{self, Participant, Room},
    operator::{api_get, api_post},
    poll,
};

use support::poll::DAEMON_REACTION as WAIT;
/// How long nothing may arrive at a disabled endpoint: several retry periods.
const QUIET: Duration = Duration::from_millis(1500);

fn room(n: u32) -> Room {
    Room::new(
        &format!("RM_gone{n}"),
        &format!("VOICEKIT_workflow_gone{n}_1"),
        1_761_234_567_000,
    )
}

/// Agent joins (call_started), the room finishes (call_ended).
async fn call(daemon: &Daemon, n: u32) {
    let room = room(n);
    let agent = Participant::agent("PA_agent", "agent", room.creation_time_ms + 1000);
    for body in [
        lk::participant_joined(&room, &agent, 1_761_234_568),
        lk::room_finished(&room, 1_761_234_600),
    ] {
        let (status, text) = daemon.post_signed(&body, API_KEY, API_SECRET).await;
        assert_eq!(status, 200, "{text}");
    }
}

fn config(endpoint: &str) -> TestConfig {
    let mut config = TestConfig::new(endpoint);
    config.retry_schedule_secs = "[0.2, 0.2, 0.2]";
    config.delivery_extra = "breaker_failures = 100".into();
    config.api_listen = format!("127.0.0.1:{}", free_port());
    config
}

async fn deliveries(daemon: &Daemon) -> Vec<Value> {
    let (status, body) = api_get(daemon, "/api/deliveries?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

async fn endpoint_state(daemon: &Daemon, url: &str) -> Value {
    let (status, body) = api_get(daemon, "/api/endpoints").await;
    assert_eq!(status, 200, "{body}");
    body["endpoints"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["url"] == url).cloned())
        .unwrap_or_else(|| panic!("{url} not listed: {body}"))
}

async fn wait_disabled(daemon: &Daemon, url: &str) {
    poll::eventually(WAIT, "the endpoint to be disabled", async || {
        endpoint_state(daemon, url).await["disabled"] == true
    })
    .await;
}

/// `voicekit-bridge <args> --config <the daemon's config>`; its stdout, after asserting
/// success.
async fn cli(config: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voicekit-bridge"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VOICEKIT_BRIDGE_CONFIG")
        .output()
        .await
        .expect("run voicekit-bridge");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "voicekit-bridge {args:?} failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until every delivery is delivered and none failed; then checks that each
/// webhook-id was answered 200 and each call's events came in order.
async fn all_delivered(daemon: &Daemon, receiver: &Receiver, expected: usize) {
    let rows = poll::wait_for(WAIT, "every delivery delivered", async || {
        let rows = deliveries(daemon).await;
        assert!(
            rows.iter().all(|d| d["status"] != "failed"),
            "a delivery failed: {rows:?}"
        );
        (rows.len() == expected && rows.iter().all(|d| d["status"] == "delivered")).then_some(rows)
    })
    .await;
    let got = receiver.received();
    // The receiver answers its first request 410, the rest 200.
    let answered: Vec<_> = got.iter().skip(1).collect();
    let ids: HashSet<&str> = answered
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    for d in &rows {
        let id = d["webhook_id"].as_str().unwrap();
        assert!(ids.contains(id), "{id} never answered 200");
    }
    // Per call, call_started before anything else.
    let mut started = HashSet::new();
    for r in &answered {
        let j = r.json();
        let call = j["data"]["call_id"].to_string();
        if j["event"] == "call_started" {
            started.insert(call);
        } else {
            assert!(started.contains(&call), "{j} before its call_started");
        }
    }
}

#[tokio::test]
async fn an_endpoint_that_answered_410_holds_its_events_across_a_restart_until_enabled() {
    let mut receiver = Receiver::start_with(vec![410]).await;
    let url = receiver.url("/hooks/voicekit");
    let toml = config(&url).toml();
    let dir = tempfile::tempdir().unwrap();
    let mut first = Daemon::start_in(dir.path(), &toml).await;

    call(&first, 1).await;
    let refused = receiver.next(WAIT).await;
    assert_eq!(refused.json()["event"], "call_started");
    wait_disabled(&first, &url).await;
    // Created while the endpoint is disabled: kept, held with the rest.
    call(&first, 2).await;
    receiver.expect_nothing(QUIET).await;
    let held = deliveries(&first).await;
    assert!(held.len() >= 4, "{held:?}");
    assert!(
        held.iter().all(|d| d["status"] == "pending"),
        "held, not failed: {held:?}"
    );

    let listed = cli(first.config_path(), &["endpoints", "list"]).await;
    let line = listed
        .lines()
        .find(|l| l.contains(&url))
        .unwrap_or_else(|| panic!("{url} not in:\n{listed}"));
    assert!(line.starts_with("disabled"), "{listed}");
    assert!(line.contains(WORKFLOW_SLUG), "{listed}");

    // A restart does not forget it.
    first.terminate(WAIT).await;
    let second = Daemon::start_in(dir.path(), &toml).await;
    assert_eq!(endpoint_state(&second, &url).await["disabled"], true);
    receiver.expect_nothing(QUIET).await;

    let enabled = cli(second.config_path(), &["endpoints", "enable", &url]).await;
    assert!(enabled.contains("enabled"), "{enabled}");
    all_delivered(&second, &receiver, held.len()).await;
    assert_eq!(endpoint_state(&second, &url).await["disabled"], false);
    // Enabling what is not disabled is a clear error.
    let (status, body) = api_post(&second, "/api/endpoints/enable", &json!({ "url": url })).await;
    assert_eq!(status, 404, "{body}");
}

/// A daemon whose endpoint answered call 1's `call_started` with 410 and is now
/// disabled; the receiver has that request taken, and its URL.
async fn disabled_by_a_410() -> (Daemon, Receiver, String) {
    let mut receiver = Receiver::start_with(vec![410]).await;
    let url = receiver.url("/hooks/voicekit");
    let daemon = Daemon::start(&config(&url).toml()).await;
    call(&daemon, 1).await;
    receiver.next(WAIT).await;
    wait_disabled(&daemon, &url).await;
    (daemon, receiver, url)
}

#[tokio::test]
async fn deliveries_retry_enables_the_disabled_endpoint_of_that_delivery() {
    let (daemon, mut receiver, _) = disabled_by_a_410().await;
    call(&daemon, 2).await;
    receiver.expect_nothing(QUIET).await;
    let rows = deliveries(&daemon).await;
    let refused = rows
        .iter()
        .find(|d| d["attempts"] == 1)
        .unwrap_or_else(|| panic!("no attempted delivery: {rows:?}"));
    let id = refused["id"].to_string();

    let out = cli(daemon.config_path(), &["deliveries", "retry", &id]).await;
    assert!(out.contains("enabled again"), "{out}");
    all_delivered(&daemon, &receiver, rows.len()).await;
}

#[tokio::test]
async fn deliveries_replay_enables_the_disabled_endpoint_of_that_workflow() {
    let (daemon, mut receiver, url) = disabled_by_a_410().await;
    receiver.expect_nothing(QUIET).await;
    let rows = deliveries(&daemon).await;

    let replay = json!({
        "workflow": WORKFLOW_SLUG,
        "since": "2020-01-01T00:00:00Z",
        "until": "2100-01-01T00:00:00Z",
    });
    let (status, body) = api_post(&daemon, "/api/deliveries/replay", &replay).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], url.as_str(), "{body}");
    all_delivered(&daemon, &receiver, rows.len()).await;
}
