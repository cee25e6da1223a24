//! Proves the operator tools work against the real, running daemon: the operator API
//! lists failed deliveries with their attempts and last error, shows a call with its
//! LiveKit events, VoiceKit events and every attempt (status, latency, the first 4 KiB
//! of the response), retries one delivery and replays a workflow's failed ones in a time
//! range (same `webhook-id` and bytes as before, nothing outside the range), answers bad
//! input with 400/404/422, and wants the bearer token when one is configured (a non-loopback
//! listener without one is refused by `check-config`). The `calls` and `deliveries`
//! commands do the same through that API and say so when the daemon is not running, and
//! `send-test-event` posts a VoiceKit envelope that an independent Standard Webhooks
//! verifier accepts with each of the workflow's signing secrets.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use support::config::{API_KEY, API_SECRET, free_port};
use support::lk::{self, Participant, Room};
use support::operator::{api_get, api_post, api_url, with_api_token};
use support::{Daemon, Received, Receiver, Reply, TestConfig, poll};

const BIN: &str = env!("CARGO_BIN_EXE_voicekit-bridge");
const WAIT: Duration = Duration::from_secs(20);
/// Longest a CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// One retry, soon: each event gets `1 + RETRIES` attempts and is then failed.
const SCHEDULE: &str = "[0.1]";
const RETRIES: usize = 1;
/// One call below causes two VoiceKit events (call_started, call_ended).
const EVENTS: usize = 2;
/// Requests the endpoint sees before both events of the call are failed.
const FAILING_REQUESTS: usize = EVENTS * (1 + RETRIES);
/// How long the failing endpoint takes to answer, so latency has something to measure.
const FAILURE_DELAY: Duration = Duration::from_millis(40);
/// Enough 500s that the endpoint never succeeds within a test.
const ALWAYS: usize = 1000;
/// The attempt log keeps this much of a response body.
const SNIPPET: usize = 4096;

const ROOM_SID: &str = "RM_operatorCall1";
const ROOM_NAME: &str = "VOICEKIT_workflow_abc12345_8453";
const CREATED_MS: i64 = 1_761_234_567_123;
const AGENT_JOINED_MS: i64 = 1_761_234_569_000;
const FINISHED_S: i64 = 1_761_234_740;

const SECRET_OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SECRET_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "t0ken-0123456789abcdef0123456789abcdef";
/// Where the customer endpoint takes VoiceKit events.
const HOOK_PATH: &str = "/hooks/voicekit";

/// What the failing endpoint says: longer than the snippet the attempt log keeps.
fn failure_body() -> String {
    let mut body = String::from("endpoint down for maintenance; ");
    while body.len() < SNIPPET + 1000 {
        body.push_str("0123456789abcdef");
    }
    body
}

/// `n` slow 500s with [`failure_body`].
fn failures(n: usize) -> Vec<Reply> {
    vec![
        Reply::status(500)
            .body(&failure_body())
            .delay(FAILURE_DELAY);
        n
    ]
}

// ---- one call whose deliveries fail ----

fn room() -> Room {
    Room::new(ROOM_SID, ROOM_NAME, CREATED_MS)
}

/// The call: the agent joins (call_started), the room finishes (call_ended).
fn call_webhooks() -> Vec<String> {
    let agent = Participant::agent("PA_agent", "agent-1", AGENT_JOINED_MS);
    vec![
        lk::participant_joined(&room(), &agent, AGENT_JOINED_MS / 1000),
        lk::room_finished(&room(), FINISHED_S),
    ]
}

/// The test config: fast schedule, no circuit breaker in the way.
fn config(endpoint_url: &str, api_listen: &str) -> TestConfig {
    let mut config = TestConfig::new(endpoint_url);
    config.retry_schedule_secs = SCHEDULE;
    config.delivery_extra = "breaker_failures = 100".into();
    config.api_listen = api_listen.into();
    config
}

/// A loopback address for the operator API that the CLI can find in the config.
fn fixed_api_listen() -> String {
    format!("127.0.0.1:{}", free_port())
}

struct FailedCall {
    /// Answers with [`failures`], then 200 with an empty body.
    endpoint: Receiver,
    daemon: Daemon,
    /// The LiveKit event ids posted.
    event_ids: Vec<String>,
    /// The failed deliveries, oldest first (call_started, call_ended).
    deliveries: Vec<Value>,
    /// The first request of each delivery, in the same order.
    first_requests: Vec<Received>,
}

/// Starts a daemon whose endpoint answers `failing` slow 500s (then empty 200s), posts one
/// call and waits until both its deliveries are failed.
async fn failed_call(failing: usize, api_listen: &str) -> FailedCall {
    let mut endpoint = Receiver::start_scripted(failures(failing)).await;
    let daemon = Daemon::start(&config(&endpoint.url(HOOK_PATH), api_listen).toml()).await;
    let mut event_ids = Vec::new();
    for body in call_webhooks() {
        event_ids.push(lk::event_id(&body));
        let (status, text) = daemon.post_signed(&body, API_KEY, API_SECRET).await;
        assert_eq!(status, 200, "webhook answered {status}: {text}");
    }
    let mut requests = Vec::new();
    for _ in 0..FAILING_REQUESTS {
        requests.push(endpoint.next(WAIT).await);
    }
    let deliveries = poll::wait_for(WAIT, "both deliveries failed", async || {
        let (status, body) = api_get(&daemon, "/api/deliveries?status=failed").await;
        assert_eq!(status, 200, "{body}");
        let list = body["deliveries"].as_array().cloned().unwrap_or_default();
        (list.len() == EVENTS).then_some(list)
    })
    .await;
    let mut deliveries = deliveries;
    deliveries.sort_by_key(|d| d["id"].as_i64());
    let first_requests = deliveries
        .iter()
        .map(|d| {
            requests
                .iter()
                .find(|r| r.header("webhook-id") == d["webhook_id"].as_str())
                .unwrap_or_else(|| panic!("no request carried delivery {d}"))
                .clone()
        })
        .collect();
    FailedCall {
        endpoint,
        daemon,
        event_ids,
        deliveries,
        first_requests,
    }
}

fn id(delivery: &Value) -> i64 {
    delivery["id"].as_i64().expect("delivery id")
}

/// Unix milliseconds as RFC 3339 (UTC, with the fraction).
fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a valid time")
        .format(&Rfc3339)
        .expect("RFC 3339 formats")
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Waits until delivery `id` has `status`; returns it.
async fn wait_for_status(daemon: &Daemon, id: i64, status: &str) -> Value {
    poll::wait_for(WAIT, &format!("delivery {id} {status}"), async || {
        let (code, body) = api_get(daemon, &format!("/api/deliveries?status={status}")).await;
        assert_eq!(code, 200, "{body}");
        body["deliveries"]
            .as_array()?
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
    })
    .await
}

/// Asserts `request` is the same event as `original`: same webhook-id, same bytes.
fn assert_same_event(request: &Received, original: &Received) {
    assert_eq!(
        request.header("webhook-id"),
        original.header("webhook-id"),
        "webhook-id changed"
    );
    assert_eq!(request.body, original.body, "body bytes changed");
}

// ---- HTTP API ----

#[tokio::test]
async fn failed_deliveries_are_listed_with_their_attempts_and_last_error() {
    let call = failed_call(ALWAYS, "127.0.0.1:0").await;
    let types: Vec<&str> = call
        .deliveries
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["call_started", "call_ended"]);
    for (d, first) in call.deliveries.iter().zip(&call.first_requests) {
        assert_eq!(d["status"], "failed", "{d}");
        assert_eq!(d["attempts"], 1 + RETRIES, "{d}");
        assert_eq!(d["last_error"], "HTTP 500", "{d}");
        assert_eq!(d["call_id"], 1, "{d}");
        assert!(d["delivered_at"].is_null(), "{d}");
        assert_eq!(d["payload"].as_str().unwrap().as_bytes(), first.body);
    }
    for other in ["pending", "delivered"] {
        let (status, body) =
            api_get(&call.daemon, &format!("/api/deliveries?status={other}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["deliveries"], json!([]), "{other}: {body}");
    }
    // The workflow filter: all of them are customer-support's, none sales'.
    let (_, mine) = api_get(
        &call.daemon,
        "/api/deliveries?status=failed&workflow=customer-support",
    )
    .await;
    assert_eq!(mine["deliveries"].as_array().unwrap().len(), EVENTS);
    let (_, sales) = api_get(&call.daemon, "/api/deliveries?status=failed&workflow=sales").await;
    assert_eq!(sales["deliveries"], json!([]));
    let (_, one) = api_get(&call.daemon, "/api/deliveries?status=failed&limit=1").await;
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_call_shows_its_livekit_events_voicekit_events_and_every_attempt() {
    let before_ms = now_ms();
    let call = failed_call(ALWAYS, "127.0.0.1:0").await;
    let (status, detail) = api_get(&call.daemon, "/api/calls/1").await;
    assert_eq!(status, 200, "{detail}");

    let c = &detail["call"];
    assert_eq!(c["id"], 1);
    assert_eq!(c["phase"], "ended");
    assert_eq!(c["room_sid"], ROOM_SID);
    assert_eq!(c["room_name"], ROOM_NAME);
    assert_eq!(c["workflow_slug"], "customer-support");
    assert_eq!(c["workflow_id"], 456);
    assert_eq!(c["call_slug"], "abc12345");

    let livekit: BTreeSet<(String, String)> = detail["livekit_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_owned(),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let posted: BTreeSet<(String, String)> = ["participant_joined", "room_finished"]
        .into_iter()
        .map(String::from)
        .zip(call.event_ids.iter().cloned())
        .collect();
    assert_eq!(livekit, posted);

    let deliveries = detail["deliveries"].as_array().unwrap();
    assert_eq!(deliveries, &call.deliveries, "the call's VoiceKit events");

    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), FAILING_REQUESTS, "{detail:#}");
    let snippet = &failure_body()[..SNIPPET];
    for d in &call.deliveries {
        let mine: Vec<&Value> = attempts
            .iter()
            .filter(|a| a["outbox_id"] == d["id"])
            .collect();
        assert_eq!(mine.len(), 1 + RETRIES, "attempts of {d}");
    }
    let after_ms = now_ms();
    for a in attempts {
        assert_eq!(a["status_code"], 500, "{a}");
        assert!(a["error"].is_null(), "{a}");
        assert_eq!(a["endpoint"], call.endpoint.url(HOOK_PATH), "{a}");
        let latency = a["latency_ms"].as_i64().expect("latency_ms");
        assert!(
            latency >= FAILURE_DELAY.as_millis() as i64 && latency < 5_000,
            "latency {latency} ms, the endpoint took {FAILURE_DELAY:?}"
        );
        let at = a["attempted_at"].as_i64().expect("attempted_at");
        assert!((before_ms..=after_ms).contains(&at), "attempted_at {at}");
        let body = a["response_body"].as_str().expect("response_body");
        assert_eq!(body, snippet, "the first 4 KiB of the response");
    }

    // The list of calls has it too.
    let (status, list) = api_get(&call.daemon, "/api/calls").await;
    assert_eq!(status, 200);
    assert_eq!(list["calls"], json!([c]));
    let (_, ended) = api_get(&call.daemon, "/api/calls?phase=ended").await;
    assert_eq!(ended["calls"].as_array().unwrap().len(), 1);
    let (_, waiting) = api_get(&call.daemon, "/api/calls?phase=waiting").await;
    assert_eq!(waiting["calls"], json!([]));
}

#[tokio::test]
async fn retrying_a_failed_delivery_sends_it_again_and_it_becomes_delivered() {
    // The endpoint fails exactly the requests the schedule makes, then succeeds.
    let mut call = failed_call(FAILING_REQUESTS, "127.0.0.1:0").await;
    let started = &call.deliveries[0];
    let (status, body) = api_post(
        &call.daemon,
        &format!("/api/deliveries/{}/retry", id(started)),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"], id(started));

    let again = call.endpoint.next(WAIT).await;
    assert_same_event(&again, &call.first_requests[0]);
    let delivered = wait_for_status(&call.daemon, id(started), "delivered").await;
    assert_eq!(delivered["attempts"], 2 + RETRIES);
    assert!(delivered["delivered_at"].is_i64(), "{delivered}");

    // Only that one: call_ended stays failed and is not sent.
    let (_, failed) = api_get(&call.daemon, "/api/deliveries?status=failed").await;
    let failed: Vec<i64> = failed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(failed, [id(&call.deliveries[1])]);
    call.endpoint
        .expect_nothing(Duration::from_millis(500))
        .await;
    assert_eq!(call.endpoint.count(), FAILING_REQUESTS + 1);
}

#[tokio::test]
async fn replay_puts_every_failed_delivery_of_the_workflow_back_with_the_same_webhook_ids() {
    let mut call = failed_call(FAILING_REQUESTS, "127.0.0.1:0").await;
    let hour = 3_600_000;
    // `until` with an offset: any RFC 3339 time will do.
    let until = OffsetDateTime::from_unix_timestamp((now_ms() + hour) / 1000)
        .unwrap()
        .to_offset(time::macros::offset!(+02:00))
        .format(&Rfc3339)
        .unwrap();
    let (status, body) = api_post(
        &call.daemon,
        "/api/deliveries/replay",
        &json!({"workflow": "customer-support", "since": rfc3339(now_ms() - hour), "until": until}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], EVENTS);

    // In order, each with its webhook-id and bytes of before.
    for original in &call.first_requests {
        let again = call.endpoint.next(WAIT).await;
        assert_same_event(&again, original);
    }
    for d in &call.deliveries {
        wait_for_status(&call.daemon, id(d), "delivered").await;
    }
    call.endpoint
        .expect_nothing(Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn replay_outside_the_time_range_or_of_another_workflow_puts_nothing_back() {
    let mut call = failed_call(FAILING_REQUESTS, "127.0.0.1:0").await;
    let created: Vec<i64> = call
        .deliveries
        .iter()
        .map(|d| d["created_at"].as_i64().expect("created_at"))
        .collect();
    let (first, last) = (
        *created.iter().min().unwrap(),
        *created.iter().max().unwrap(),
    );
    let replay = async |workflow: &str, since: i64, until: i64| {
        let (status, body) = api_post(
            &call.daemon,
            "/api/deliveries/replay",
            &json!({"workflow": workflow, "since": rfc3339(since), "until": rfc3339(until)}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["replayed"].as_u64().expect("replayed count")
    };
    // Before them (`until` is exclusive), after them, and the right range for the
    // other workflow.
    assert_eq!(
        replay("customer-support", first - 86_400_000, first).await,
        0
    );
    assert_eq!(
        replay("customer-support", last + 1, last + 86_400_000).await,
        0
    );
    assert_eq!(replay("sales", first, last + 1).await, 0);
    let (_, failed) = api_get(&call.daemon, "/api/deliveries?status=failed").await;
    assert_eq!(failed["deliveries"].as_array().unwrap().len(), EVENTS);
    call.endpoint
        .expect_nothing(Duration::from_millis(500))
        .await;

    // `since` is inclusive: exactly their range brings both back.
    assert_eq!(
        replay("customer-support", first, last + 1).await,
        EVENTS as u64
    );
    for original in &call.first_requests {
        assert_same_event(&call.endpoint.next(WAIT).await, original);
    }
}

#[tokio::test]
async fn bad_operator_requests_get_400_404_or_422_with_an_error() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&config(&receiver.url(HOOK_PATH), "127.0.0.1:0").toml()).await;
    let ok_range = |workflow: &str| json!({"workflow": workflow, "since": "2025-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"});
    let cases: Vec<(&str, u16, (u16, Value))> = vec![
        (
            "unknown status",
            400,
            api_get(&daemon, "/api/deliveries?status=dead").await,
        ),
        (
            "unknown workflow in the list",
            404,
            api_get(&daemon, "/api/deliveries?workflow=no-such-workflow").await,
        ),
        (
            "unknown workflow in a replay",
            404,
            api_post(&daemon, "/api/deliveries/replay", &ok_range("no-such-workflow")).await,
        ),
        (
            "since not RFC 3339",
            400,
            api_post(
                &daemon,
                "/api/deliveries/replay",
                &json!({"workflow": "customer-support", "since": "yesterday", "until": "2030-01-01T00:00:00Z"}),
            )
            .await,
        ),
        (
            "until not RFC 3339",
            400,
            api_post(
                &daemon,
                "/api/deliveries/replay",
                &json!({"workflow": "customer-support", "since": "2025-01-01T00:00:00Z", "until": "2030-13-01T00:00:00Z"}),
            )
            .await,
        ),
        ("unknown call", 404, api_get(&daemon, "/api/calls/999").await),
        ("call id not a number", 400, api_get(&daemon, "/api/calls/abc").await),
        ("limit not a number", 400, api_get(&daemon, "/api/calls?limit=many").await),
        (
            "delivery id not a number",
            400,
            api_post(&daemon, "/api/deliveries/abc/retry", &json!({})).await,
        ),
        (
            "replay body without a workflow",
            422,
            api_post(&daemon, "/api/deliveries/replay", &json!({"since": "2025-01-01T00:00:00Z"})).await,
        ),
        (
            "unknown delivery",
            404,
            api_post(&daemon, "/api/deliveries/999/retry", &json!({})).await,
        ),
    ];
    for (what, expected, (status, body)) in cases {
        assert_eq!(status, expected, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no error message in {body}"
        );
    }
    let (_, body) = api_get(&daemon, "/api/deliveries?status=dead").await;
    assert!(
        body["error"].as_str().unwrap().contains("pending"),
        "{body}"
    );
    let (_, body) = api_post(
        &daemon,
        "/api/deliveries/replay",
        &json!({"workflow": "customer-support", "since": "yesterday", "until": "2030-01-01T00:00:00Z"}),
    )
    .await;
    assert!(body["error"].as_str().unwrap().contains("since"), "{body}");
}

// ---- the bearer token ----

#[tokio::test]
async fn with_a_token_configured_requests_without_the_right_bearer_token_get_401() {
    let receiver = Receiver::start().await;
    let toml = with_api_token(
        &config(&receiver.url(HOOK_PATH), &fixed_api_listen()).toml(),
        TOKEN,
    );
    let daemon = Daemon::start(&toml).await;
    let http = daemon.http();
    let get = |auth: Option<&str>| {
        let mut request = http.get(api_url(&daemon, "/api/calls"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.expect("GET /api/calls").status() }
    };
    assert_eq!(get(None).await, 401, "no token");
    assert_eq!(get(Some("Bearer wrong")).await, 401, "wrong token");
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    assert_eq!(get(Some(&prefix)).await, 401, "a prefix of the token");
    let more = format!("Bearer {TOKEN}2");
    assert_eq!(get(Some(&more)).await, 401, "the token and more");
    assert_eq!(get(Some(TOKEN)).await, 401, "the token without Bearer");
    let right = format!("Bearer {TOKEN}");
    assert_eq!(get(Some(&right)).await, 200, "the token");

    // Changes want it too.
    let replay = json!({"workflow": "customer-support", "since": "2025-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"});
    let url = api_url(&daemon, "/api/deliveries/replay");
    let without = http.post(&url).json(&replay).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let body: Value = without.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let with = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&replay)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);

    // The CLI takes the token from the same config.
    let out = bridge(&["calls", "list"], daemon.config_path()).await;
    assert_success(&out);
}

#[tokio::test]
async fn check_config_refuses_a_non_loopback_api_without_a_token_naming_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let open = config("http://127.0.0.1:9/hook", "0.0.0.0:8789").toml();
    std::fs::write(&path, &open).unwrap();
    let out = bridge(&["check-config"], &path).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(stderr(&out).contains("api.token"), "{}", describe(&out));

    // With a token the same listener is fine.
    std::fs::write(&path, with_api_token(&open, TOKEN)).unwrap();
    assert_success(&bridge(&["check-config"], &path).await);
}

// ---- the command line ----

/// `voicekit-bridge <args> --config <config>`, run to completion.
async fn bridge(args: &[&str], config: &Path) -> Output {
    let run = tokio::process::Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VOICEKIT_BRIDGE_CONFIG")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(CLI_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("voicekit-bridge {args:?} did not finish in {CLI_TIMEOUT:?}"))
        .expect("run voicekit-bridge")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

fn assert_success(out: &Output) {
    assert!(out.status.success(), "expected exit 0: {}", describe(out));
}

#[tokio::test]
async fn cli_calls_list_and_show_print_the_call_its_events_and_attempts() {
    let call = failed_call(ALWAYS, &fixed_api_listen()).await;
    let config = call.daemon.config_path();

    let list = bridge(&["calls", "list"], config).await;
    assert_success(&list);
    let text = stdout(&list);
    let row = text
        .lines()
        .find(|l| l.contains(ROOM_NAME))
        .unwrap_or_else(|| panic!("no row for the call: {}", describe(&list)));
    for needle in ["1", "ended", "customer-support", "abc12345"] {
        assert!(row.contains(needle), "{needle:?} not in {row:?}");
    }

    let show = bridge(&["calls", "show", "1"], config).await;
    assert_success(&show);
    let text = stdout(&show);
    let mut needles = vec![
        "call 1".to_owned(),
        "ended".into(),
        ROOM_SID.into(),
        "participant_joined".into(),
        "room_finished".into(),
        "call_started".into(),
        "call_ended".into(),
        "failed".into(),
        "HTTP 500".into(),
        call.endpoint.url(HOOK_PATH),
    ];
    needles.extend(call.event_ids.iter().cloned());
    needles.extend(
        call.deliveries
            .iter()
            .map(|d| d["webhook_id"].as_str().unwrap().to_owned()),
    );
    for needle in &needles {
        assert!(text.contains(needle.as_str()), "{needle:?} not in:\n{text}");
    }
    assert_eq!(
        text.matches("HTTP 500").count(),
        // One per attempt, and each delivery's last error.
        FAILING_REQUESTS + EVENTS,
        "{text}"
    );

    // --json is the API's answer.
    let json_out = bridge(&["calls", "show", "1", "--json"], config).await;
    assert_success(&json_out);
    let printed: Value = serde_json::from_str(&stdout(&json_out)).expect("calls show --json");
    assert_eq!(printed, api_get(&call.daemon, "/api/calls/1").await.1);

    let missing = bridge(&["calls", "show", "999"], config).await;
    assert!(!missing.status.success(), "{}", describe(&missing));
    assert!(stderr(&missing).contains("404"), "{}", describe(&missing));
}

#[tokio::test]
async fn cli_deliveries_list_failed_json_is_valid_json_listing_them() {
    let call = failed_call(ALWAYS, &fixed_api_listen()).await;
    let config = call.daemon.config_path();
    let out = bridge(
        &["deliveries", "list", "--status", "failed", "--json"],
        config,
    )
    .await;
    assert_success(&out);
    let printed: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(&out)));
    let mut listed = printed["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone();
    listed.sort_by_key(|d| d["id"].as_i64());
    assert_eq!(listed, call.deliveries);
    for d in &listed {
        assert_eq!(d["status"], "failed");
        assert_eq!(d["attempts"], 1 + RETRIES);
        assert_eq!(d["last_error"], "HTTP 500");
    }

    let mine = bridge(
        &[
            "deliveries",
            "list",
            "--status",
            "failed",
            "--workflow",
            "customer-support",
            "--json",
        ],
        config,
    )
    .await;
    assert_success(&mine);
    let mine: Value = serde_json::from_str(&stdout(&mine)).unwrap();
    assert_eq!(mine["deliveries"].as_array().unwrap().len(), EVENTS);
    let sales = bridge(
        &[
            "deliveries",
            "list",
            "--status",
            "failed",
            "--workflow",
            "sales",
            "--json",
        ],
        config,
    )
    .await;
    assert_success(&sales);
    let sales: Value = serde_json::from_str(&stdout(&sales)).unwrap();
    assert_eq!(sales["deliveries"], json!([]));

    // The table for people.
    let table = bridge(&["deliveries", "list", "--status", "failed"], config).await;
    assert_success(&table);
    let text = stdout(&table);
    for d in &call.deliveries {
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", id(d))))
            .unwrap_or_else(|| panic!("no row for delivery {}:\n{text}", id(d)));
        for needle in [d["event_type"].as_str().unwrap(), "failed", "HTTP 500"] {
            assert!(row.contains(needle), "{needle:?} not in {row:?}");
        }
    }

    let bad = bridge(&["deliveries", "list", "--status", "dead"], config).await;
    assert!(!bad.status.success(), "{}", describe(&bad));
    assert!(stderr(&bad).contains("400"), "{}", describe(&bad));
}

#[tokio::test]
async fn cli_deliveries_retry_sends_one_again_and_it_arrives() {
    let mut call = failed_call(FAILING_REQUESTS, &fixed_api_listen()).await;
    let started = id(&call.deliveries[0]);
    let out = bridge(
        &["deliveries", "retry", &started.to_string()],
        call.daemon.config_path(),
    )
    .await;
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("delivery {started}")),
        "{}",
        describe(&out)
    );
    assert_same_event(&call.endpoint.next(WAIT).await, &call.first_requests[0]);
    wait_for_status(&call.daemon, started, "delivered").await;

    let missing = bridge(&["deliveries", "retry", "999"], call.daemon.config_path()).await;
    assert!(!missing.status.success(), "{}", describe(&missing));
    assert!(stderr(&missing).contains("404"), "{}", describe(&missing));
}

#[tokio::test]
async fn cli_deliveries_replay_sends_the_failed_ones_again_and_they_arrive() {
    let mut call = failed_call(FAILING_REQUESTS, &fixed_api_listen()).await;
    let since = rfc3339(now_ms() - 3_600_000);
    let until = rfc3339(now_ms() + 3_600_000);
    let out = bridge(
        &[
            "deliveries",
            "replay",
            "--workflow",
            "customer-support",
            "--since",
            &since,
            "--until",
            &until,
        ],
        call.daemon.config_path(),
    )
    .await;
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("{EVENTS} failed deliveries")),
        "{}",
        describe(&out)
    );
    for original in &call.first_requests {
        assert_same_event(&call.endpoint.next(WAIT).await, original);
    }
    for d in &call.deliveries {
        wait_for_status(&call.daemon, id(d), "delivered").await;
    }

    let bad = bridge(
        &[
            "deliveries",
            "replay",
            "--workflow",
            "customer-support",
            "--since",
            "last tuesday",
            "--until",
            &until,
        ],
        call.daemon.config_path(),
    )
    .await;
    assert!(!bad.status.success(), "{}", describe(&bad));
    assert!(stderr(&bad).contains("since"), "{}", describe(&bad));
}

#[tokio::test]
async fn cli_says_it_cannot_reach_the_operator_api_when_the_daemon_is_stopped() {
    let receiver = Receiver::start().await;
    let mut daemon =
        Daemon::start(&config(&receiver.url(HOOK_PATH), &fixed_api_listen()).toml()).await;
    let config = daemon.config_path().to_owned();
    assert_success(&bridge(&["calls", "list"], &config).await);
    daemon.kill().await;
    for args in [
        &["calls", "list"][..],
        &["calls", "show", "1"],
        &["deliveries", "list", "--status", "failed"],
        &["deliveries", "retry", "1"],
    ] {
        let out = bridge(args, &config).await;
        assert!(!out.status.success(), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("cannot reach the daemon's operator API"),
            "{args:?}: {}",
            describe(&out)
        );
    }
}

// ---- send-test-event ----

/// A config whose first workflow signs with both secrets (a rotation), in a tempdir.
fn signed_config(url: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut config = TestConfig::new(url);
    config.workflow_extra = format!(r#"signing_secrets = ["{SECRET_OLD}", "{SECRET_NEW}"]"#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.toml()).unwrap();
    (dir, path)
}

/// Asserts `request` verifies with `secret` (the `standardwebhooks` crate).
fn verifies(request: &Received, secret: &str) -> bool {
    standardwebhooks::Webhook::new(secret)
        .expect("a valid secret")
        .verify(&request.body, &request.headers)
        .is_ok()
}

/// The object's keys, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Runs `send-test-event` for `event` against a 200 endpoint; checks it succeeded, the
/// request verifies with each secret, and returns the envelope it posted.
async fn send_test_event(event: &str) -> Value {
    let mut receiver = Receiver::start().await;
    let (_dir, path) = signed_config(&receiver.url(HOOK_PATH));
    let out = bridge(
        &[
            "send-test-event",
            "--workflow",
            "customer-support",
            "--event",
            event,
        ],
        &path,
    )
    .await;
    assert_success(&out);
    assert!(stdout(&out).contains("HTTP 200"), "{}", describe(&out));

    let request = receiver.next(WAIT).await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/voicekit");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(
        request
            .header("webhook-id")
            .is_some_and(|id| id.starts_with("msg_")),
        "{:?}",
        request.headers
    );
    let signature = request.header("webhook-signature").unwrap_or_default();
    assert_eq!(
        signature.split(' ').count(),
        2,
        "one per secret: {signature}"
    );
    for secret in [SECRET_OLD, SECRET_NEW] {
        assert!(verifies(&request, secret), "does not verify with {secret}");
    }
    // The verifier is not a rubber stamp: another secret, or other bytes, fail.
    assert!(!verifies(
        &request,
        "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGw="
    ));
    let mut tampered = request.clone();
    tampered.body = Bytes::from(format!("{} ", request.text()));
    assert!(!verifies(&tampered, SECRET_OLD));
    // What it printed is what it sent.
    assert!(stdout(&out).contains(&request.text()), "{}", describe(&out));
    receiver.expect_nothing(Duration::from_millis(200)).await;

    let envelope = request.json();
    assert_eq!(
        keys(&envelope),
        ["data", "event", "timestamp"],
        "{envelope}"
    );
    assert_eq!(envelope["event"], event);
    let timestamp = envelope["timestamp"].as_str().expect("timestamp");
    let parsed = OffsetDateTime::parse(timestamp, &Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {timestamp:?} not RFC 3339: {e}"));
    assert!(
        timestamp.ends_with('Z') && timestamp.len() == "2024-01-15T10:30:00.000Z".len(),
        "{timestamp}"
    );
    let age = (OffsetDateTime::now_utc() - parsed).whole_seconds().abs();
    assert!(age < 120, "timestamp {timestamp} is not now");
    envelope
}

#[tokio::test]
async fn send_test_event_posts_a_call_started_envelope_that_verifies_with_each_secret() {
    let envelope = send_test_event("call_started").await;
    let data = &envelope["data"];
    assert_eq!(keys(data), ["call_id", "phone_number", "workflow_slug"]);
    assert!(data["call_id"].is_i64(), "{data}");
    assert_eq!(data["workflow_slug"], "customer-support");
    assert!(
        data["phone_number"].is_string() || data["phone_number"].is_null(),
        "{data}"
    );
}

#[tokio::test]
async fn send_test_event_posts_a_call_finalized_envelope_that_verifies_with_each_secret() {
    let envelope = send_test_event("call_finalized").await;
    let data = &envelope["data"];
    assert_eq!(
        keys(data),
        [
            "call_id",
            "call_slug",
            "egress_info",
            "organization_id",
            "recording_url",
            "workflow_id"
        ]
    );
    assert!(data["call_id"].is_i64(), "{data}");
    assert!(data["call_slug"].is_string(), "{data}");
    assert!(data["recording_url"].is_string(), "{data}");
    // This workflow's ids, from the config.
    assert_eq!(data["workflow_id"], 456);
    assert_eq!(data["organization_id"], 789);
    let egress = &data["egress_info"];
    assert_eq!(
        keys(egress),
        [
            "duration",
            "egress_id",
            "ended_at",
            "file_size",
            "file_type",
            "room_id",
            "room_name",
            "started_at",
            "status"
        ]
    );
    for key in ["started_at", "ended_at", "duration", "file_size"] {
        let text = egress[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {egress}"));
        assert!(
            text.parse::<u64>().is_ok(),
            "{key} is an integer string: {egress}"
        );
    }
}

#[tokio::test]
async fn send_test_event_exits_non_zero_when_the_endpoint_answers_500() {
    let mut receiver = Receiver::start_with(vec![500]).await;
    let (_dir, path) = signed_config(&receiver.url(HOOK_PATH));
    let out = bridge(
        &["send-test-event", "--workflow", "customer-support"],
        &path,
    )
    .await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("HTTP 500"), "{}", describe(&out));
    let request = receiver.next(WAIT).await;
    assert_eq!(request.json()["event"], "call_started");
}
