//! Whole calls through the real daemon: LiveKit-signed webhooks in over loopback, the
//! three VoiceKit events out to a real HTTP listener, the recording in a real
//! S3-compatible server (moto). Checks every byte that reaches the customer, order
//! under retries and early egress, and that a crash in the middle of a call loses
//! nothing.

use crate::support;

use std::time::Duration;

use support::poll::DAEMON_REACTION;
use support::{
    Daemon, Moto, Received, Receiver, TestConfig,
    config::{API_KEY, API_SECRET, BUCKET, WORKFLOW_SLUG},
    lk::{self, FileResult, Participant, Room},
};

// One call's timeline, in LiveKit's clocks (fixed, so expected bytes are literal).
const ROOM_SID: &str = "RM_kfWfYGzHvVYy";
const ROOM_NAME: &str = "VOICEKIT_workflow_abc12345_8453";
const CREATED_MS: i64 = 1_761_234_567_123;
const SIP_JOINED_MS: i64 = 1_761_234_568_456;
const AGENT_JOINED_MS: i64 = 1_761_234_569_000;
const SIP_LEFT_S: i64 = 1_761_234_719;
const AGENT_LEFT_S: i64 = 1_761_234_720;
const FINISHED_S: i64 = 1_761_234_740;
const EGRESS_ID: &str = "EG_dmi8xHQYNX6r";
const EGRESS_STARTED_NS: i64 = 1_761_234_569_012_345_678;
const EGRESS_ENDED_NS: i64 = 1_761_234_721_987_654_321;
const KEY: &str = "recordings/VOICEKIT_workflow_abc12345_8453/2025-10-23T154929.ogg";
const RECORDING: &[u8] = b"OggS fake opus audio for the test";

fn room() -> Room {
    Room::new(ROOM_SID, ROOM_NAME, CREATED_MS)
}

fn sip() -> Participant {
    Participant::sip(
        "PA_sipcaller",
        "+15551230001",
        "+15557650002",
        SIP_JOINED_MS,
    )
}

fn agent() -> Participant {
    Participant::agent("PA_agent", "agent-1", AGENT_JOINED_MS)
}

fn file(location: &str) -> FileResult {
    FileResult {
        filename: KEY.into(),
        duration_ns: 150_123_456_789,
        size: RECORDING.len() as i64,
        location: location.into(),
    }
}

async fn post(daemon: &Daemon, body: &str) {
    let (status, text) = daemon.post_signed(body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "webhook answered {status}: {text}");
}

/// The call up to and including `room_finished`.
fn call_until_finished() -> Vec<String> {
    let room = room();
    vec![
        lk::room_started(&room, CREATED_MS / 1000),
        lk::participant_joined(&room, &sip(), SIP_JOINED_MS / 1000),
        lk::participant_joined(&room, &agent(), AGENT_JOINED_MS / 1000),
        lk::egress_started(&room, EGRESS_ID, EGRESS_STARTED_NS, KEY),
        lk::participant_left(&room, &sip(), SIP_LEFT_S),
        lk::participant_left(&room, &agent(), AGENT_LEFT_S),
        lk::room_finished(&room, FINISHED_S),
    ]
}

fn egress_ended(status: &str, file: Option<&FileResult>) -> String {
    lk::egress_ended(
        &room(),
        EGRESS_ID,
        status,
        EGRESS_STARTED_NS,
        EGRESS_ENDED_NS,
        file,
    )
}

const CALL_STARTED: &str = r#"{"event":"call_started","timestamp":"2025-10-23T15:49:29.000Z","data":{"call_id":1,"workflow_slug":"customer-support","phone_number":"+15551230001"}}"#;
// The agent joined at 15:49:29.000, the last participant left at 15:52:00: 151 s.
const CALL_ENDED: &str = r#"{"event":"call_ended","timestamp":"2025-10-23T15:52:00.000Z","data":{"call_id":1,"workflow_slug":"customer-support","phone_number":"+15551230001","duration_seconds":151,"duration_minutes":3}}"#;

fn call_finalized(recording_url: &str, status: &str, file_size: &str) -> String {
    format!(
        r#"{{"event":"call_finalized","timestamp":"2025-10-23T15:52:01.987Z","data":{{"call_id":1,"call_slug":"abc12345","recording_url":{recording_url},"workflow_id":456,"organization_id":789,"egress_info":{{"egress_id":"EG_dmi8xHQYNX6r","room_id":"RM_kfWfYGzHvVYy","room_name":"VOICEKIT_workflow_abc12345_8453","status":"{status}","started_at":"1761234569012345678","ended_at":"1761234721987654321","duration":"150123456789","file_size":"{file_size}","file_type":"ogg"}}}}}}"#
    )
}

fn assert_delivery_headers(r: &Received) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hooks/voicekit");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let agent = r.header("user-agent").unwrap_or_default();
    assert!(
        agent.starts_with("voicekit-bridge/"),
        "user-agent {agent:?}"
    );
    let id = r.header("webhook-id").unwrap_or_default();
    assert!(id.starts_with("msg_"), "webhook-id {id:?}");
}

async fn s3_with_recording() -> Moto {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put_object(BUCKET, KEY, RECORDING).await;
    moto
}

#[tokio::test]
async fn full_call_delivers_the_three_events_byte_for_byte_with_a_working_recording_url() {
    let moto = s3_with_recording().await;
    let mut receiver = Receiver::start().await;
    let config = TestConfig::new(&receiver.url("/hooks/voicekit")).with_s3(&moto.endpoint());
    let daemon = Daemon::start(&config.toml()).await;

    for body in call_until_finished() {
        post(&daemon, &body).await;
    }
    // Path-style location, as egress reports it for an S3-compatible endpoint.
    let location = format!("{}/{BUCKET}/{KEY}", moto.endpoint());
    post(
        &daemon,
        &egress_ended("EGRESS_COMPLETE", Some(&file(&location))),
    )
    .await;

    let started = receiver.next(DAEMON_REACTION).await;
    let ended = receiver.next(DAEMON_REACTION).await;
    let finalized = receiver.next(DAEMON_REACTION).await;
    for r in [&started, &ended, &finalized] {
        assert_delivery_headers(r);
    }
    let ids: std::collections::HashSet<_> = [&started, &ended, &finalized]
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "each event has its own webhook-id");

    assert_eq!(started.text(), CALL_STARTED);
    assert_eq!(ended.text(), CALL_ENDED);

    let url = finalized.json()["data"]["recording_url"]
        .as_str()
        .expect("recording_url is a string")
        .to_owned();
    assert!(
        url.starts_with(&format!("{location}?")) && url.contains("X-Amz-Signature="),
        "presigned GET of the object: {url}"
    );
    assert_eq!(
        finalized.text(),
        call_finalized(
            &serde_json::to_string(&url).unwrap(),
            "EGRESS_COMPLETE",
            &RECORDING.len().to_string()
        )
    );
    let fetched = reqwest::get(&url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), RECORDING);
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn each_new_call_and_each_queued_event_is_logged_exactly_once() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    for body in call_until_finished() {
        post(&daemon, &body).await;
    }
    post(&daemon, &egress_ended("EGRESS_FAILED", None)).await;

    let lines = |what: &str| -> Vec<String> {
        let text = daemon.stderr_text();
        text.lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    };
    // Each line is written before its webhook's 200; the test's reader of the
    // daemon's stderr may not have read the last ones yet.
    support::poll::eventually(
        DAEMON_REACTION,
        "three queued events in the log",
        async || lines("queued VoiceKit event").len() >= 3,
    )
    .await;
    let queued = lines("queued VoiceKit event");
    assert_eq!(queued.len(), 3, "{queued:#?}");
    for (line, event) in queued
        .iter()
        .zip(["call_started", "call_ended", "call_finalized"])
    {
        assert!(line.contains("call_id=1") && line.contains(event), "{line}");
    }
    let created = lines("new call");
    assert_eq!(created.len(), 1, "{created:#?}");
    assert!(
        [ROOM_SID, ROOM_NAME, WORKFLOW_SLUG, "call_id=1"]
            .iter()
            .all(|part| created[0].contains(part)),
        "{}",
        created[0]
    );
}

#[tokio::test]
async fn egress_ended_before_room_finished_still_arrives_after_call_ended() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    let mut bodies = call_until_finished();
    let finished = bodies.pop().unwrap();
    for body in &bodies {
        post(&daemon, body).await;
    }
    let location = format!("https://{BUCKET}.s3.amazonaws.com/{KEY}");
    post(
        &daemon,
        &egress_ended("EGRESS_COMPLETE", Some(&file(&location))),
    )
    .await;
    assert_eq!(receiver.next(DAEMON_REACTION).await.text(), CALL_STARTED);
    // Nothing may overtake call_ended.
    receiver.expect_nothing(Duration::from_millis(500)).await;
    post(&daemon, &finished).await;
    assert_eq!(receiver.next(DAEMON_REACTION).await.text(), CALL_ENDED);
    // Public URL mode: base URL + key.
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.text(),
        call_finalized(
            &format!("\"https://recordings.example.com/{KEY}\""),
            "EGRESS_COMPLETE",
            &RECORDING.len().to_string()
        )
    );
}

/// A whole call against a daemon using `moto`, its egress ending with `status` and the
/// recording at `KEY`; returns the daemon and the `call_finalized` body that arrived.
async fn finalized_with(moto: &Moto, status: &str) -> (Daemon, String) {
    let mut receiver = Receiver::start().await;
    let config = TestConfig::new(&receiver.url("/hooks/voicekit")).with_s3(&moto.endpoint());
    let daemon = Daemon::start(&config.toml()).await;
    for body in call_until_finished() {
        post(&daemon, &body).await;
    }
    let location = format!("{}/{BUCKET}/{KEY}", moto.endpoint());
    post(&daemon, &egress_ended(status, Some(&file(&location)))).await;
    assert_eq!(receiver.next(DAEMON_REACTION).await.text(), CALL_STARTED);
    assert_eq!(receiver.next(DAEMON_REACTION).await.text(), CALL_ENDED);
    let finalized = receiver.next(DAEMON_REACTION).await.text();
    (daemon, finalized)
}

#[tokio::test]
async fn failed_egress_is_finalized_with_a_null_url_and_its_status() {
    let moto = s3_with_recording().await;
    let (_daemon, finalized) = finalized_with(&moto, "EGRESS_FAILED").await;
    assert_eq!(
        finalized,
        call_finalized("null", "EGRESS_FAILED", &RECORDING.len().to_string())
    );
}

#[tokio::test]
async fn recording_missing_from_s3_is_finalized_with_a_null_url() {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let (daemon, finalized) = finalized_with(&moto, "EGRESS_COMPLETE").await;
    assert_eq!(
        finalized,
        call_finalized("null", "EGRESS_COMPLETE", &RECORDING.len().to_string())
    );
    daemon
        .wait_for_stderr("recording not found in S3", DAEMON_REACTION)
        .await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id_and_bytes_and_order_holds() {
    let mut receiver = Receiver::start_with(vec![500, 503]).await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    for body in call_until_finished() {
        post(&daemon, &body).await;
    }
    let first = receiver.next(DAEMON_REACTION).await;
    let second = receiver.next(DAEMON_REACTION).await;
    let third = receiver.next(DAEMON_REACTION).await;
    for retry in [&second, &third] {
        assert_eq!(retry.header("webhook-id"), first.header("webhook-id"));
        assert_eq!(retry.body, first.body);
    }
    assert_eq!(third.text(), CALL_STARTED);
    // call_ended only after call_started finally succeeded.
    let ended = receiver.next(DAEMON_REACTION).await;
    assert_eq!(ended.text(), CALL_ENDED);
    assert_ne!(ended.header("webhook-id"), first.header("webhook-id"));
}

#[tokio::test]
async fn an_endpoint_that_never_answers_2xx_gets_a_bounded_number_of_attempts() {
    let mut receiver = Receiver::start_with(vec![500; 10]).await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    post(
        &daemon,
        &lk::participant_joined(&room(), &agent(), AGENT_JOINED_MS / 1000),
    )
    .await;
    // The schedule has three retries: four attempts, then the delivery is failed.
    for _ in 0..4 {
        receiver.next(DAEMON_REACTION).await;
    }
    daemon
        .wait_for_stderr("delivery failed for the last time", DAEMON_REACTION)
        .await;
    receiver.expect_nothing(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_call_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // First life: the customer endpoint is down, so call_started stays pending.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hooks/voicekit", down.local_addr().unwrap());
    drop(down);
    let mut config = TestConfig::new(&dead_url);
    config.retry_schedule_secs = "[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]";
    let mut first = Daemon::start_in(dir.path(), &config.toml()).await;
    let bodies = call_until_finished();
    for body in &bodies[..3] {
        post(&first, body).await;
    }
    first
        .wait_for_stderr("delivery failed; will retry", DAEMON_REACTION)
        .await;
    first.kill().await;

    // Second life, same store; the workflow's URL fixed meanwhile.
    let mut receiver = Receiver::start().await;
    config.events_webhook_url = receiver.url("/hooks/voicekit");
    let second = Daemon::start_in(dir.path(), &config.toml()).await;
    assert_eq!(receiver.next(DAEMON_REACTION).await.text(), CALL_STARTED);
    // LiveKit retries what it did not get a 200 for; what was accepted is not redone.
    post(&second, &bodies[2]).await;
    for body in &bodies[3..] {
        post(&second, body).await;
    }
    assert_eq!(receiver.next(DAEMON_REACTION).await.text(), CALL_ENDED);
    let location = format!("https://{BUCKET}.s3.amazonaws.com/{KEY}");
    post(
        &second,
        &egress_ended("EGRESS_COMPLETE", Some(&file(&location))),
    )
    .await;
    let finalized = receiver.next(DAEMON_REACTION).await;
    assert_eq!(finalized.json()["data"]["call_id"], 1);
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_reused_room_name_is_a_new_call_and_metadata_picks_the_workflow() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    let first = room();
    post(
        &daemon,
        &lk::participant_joined(&first, &agent(), AGENT_JOINED_MS / 1000),
    )
    .await;
    post(&daemon, &lk::room_finished(&first, FINISHED_S)).await;
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["data"]["call_id"],
        1
    );
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["data"]["call_id"],
        1
    );

    // Same name, new instance; metadata names the other workflow, no phone anywhere.
    let again = Room::new("RM_secondInstance", ROOM_NAME, CREATED_MS + 3_600_000)
        .with_metadata(r#"{"workflow_slug":"sales"}"#);
    let later_agent = Participant::agent("PA_agent2", "agent-2", CREATED_MS + 3_601_000);
    post(&daemon, &lk::participant_joined(&again, &later_agent, 0)).await;
    let started = receiver.next(DAEMON_REACTION).await.json();
    assert_eq!(
        started["data"],
        serde_json::json!({"call_id": 2, "workflow_slug": "sales", "phone_number": null})
    );
}

#[tokio::test]
async fn a_room_that_finishes_without_an_agent_still_gets_call_started_first() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    let room = room();
    post(&daemon, &lk::room_started(&room, CREATED_MS / 1000)).await;
    post(
        &daemon,
        &lk::participant_joined(&room, &sip(), SIP_JOINED_MS / 1000),
    )
    .await;
    post(&daemon, &lk::participant_left(&room, &sip(), SIP_LEFT_S)).await;
    post(&daemon, &lk::room_finished(&room, FINISHED_S)).await;
    let started = receiver.next(DAEMON_REACTION).await.json();
    assert_eq!(started["event"], "call_started");
    assert_eq!(started["timestamp"], "2025-10-23T15:49:27.123Z");
    let ended = receiver.next(DAEMON_REACTION).await.json();
    assert_eq!(ended["event"], "call_ended");
    // From room creation (…27.123) to the caller leaving (…15:51:59): 151.877 s.
    assert_eq!(ended["data"]["duration_seconds"], 151);
    assert_eq!(ended["data"]["duration_minutes"], 3);
}
