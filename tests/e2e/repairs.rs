//! The call_started hook (runtime data into the LiveKit room, through a fake
//! RoomService that checks our token's grants) and the repairs for what LiveKit loses:
//! a room_finished that never comes (the sweeper) and an egress_ended that never comes
//! (ListEgress against a fake Egress API).

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::poll::DAEMON_REACTION;
use support::{
    Daemon, Receiver, Reply, TestConfig,
    config::{API_KEY, API_SECRET},
    livekit_server::FakeLiveKit,
    lk::{self, Participant, Room},
    poll,
};

const ROOM_NAME: &str = "VOICEKIT_workflow_hook1234_77";

fn room() -> Room {
    Room::new("RM_repairs1", ROOM_NAME, 1_761_234_567_000).with_metadata(r#"{"lang":"en"}"#)
}

fn agent() -> Participant {
    Participant::agent("PA_agent", "agent", 1_761_234_568_000)
}

async fn post(daemon: &Daemon, body: &str) {
    let (status, text) = daemon.post_signed(body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "{text}");
}

async fn call_detail(daemon: &Daemon, id: i64) -> Value {
    let api = daemon
        .stdout_text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("voicekit-bridge operator API on ")
                .map(str::to_owned)
        })
        .expect("the daemon prints its operator API address");
    let url = format!("http://{api}/api/calls/{id}");
    reqwest::get(&url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn call_started_hook_runtime_data_is_stored_and_written_into_the_room() {
    let livekit = FakeLiveKit::start().await;
    let mut events = Receiver::start().await;
    let mut hook = Receiver::start_scripted(vec![
        Reply::status(200)
            .header("Content-Type", "application/json")
            .body(r#"{"customer_tier":"gold","lang":"de"}"#),
    ])
    .await;
    let mut config = TestConfig::new(&events.url("/hooks/voicekit"));
    config.livekit_url = livekit.url();
    config.workflow_extra = format!(
        "call_started_hook = \"{}\"\nsigning_secret = \"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"",
        hook.url("/call-started")
    );
    let daemon = Daemon::start(&config.toml()).await;
    post(
        &daemon,
        &lk::participant_joined(&room(), &agent(), 1_761_234_568),
    )
    .await;

    let asked = hook.next(DAEMON_REACTION).await;
    assert_eq!(asked.json()["event"], "call_started");
    standardwebhooks::Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
        .unwrap()
        .verify(&asked.body, &asked.headers)
        .expect("the hook request is signed like any delivery");
    assert_eq!(events.next(DAEMON_REACTION).await.body, asked.body);

    poll::eventually(
        DAEMON_REACTION,
        "the room's metadata is updated",
        async || !livekit.metadata_updates().is_empty(),
    )
    .await;
    let (room_name, metadata) = livekit.metadata_updates().remove(0);
    assert_eq!(room_name, ROOM_NAME);
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(metadata, json!({"lang": "de", "customer_tier": "gold"}));
    assert!(livekit.rejected().is_empty(), "{:?}", livekit.rejected());

    let detail = call_detail(&daemon, 1).await;
    assert_eq!(
        detail["runtime_data"],
        json!({"customer_tier": "gold", "lang": "de"})
    );
}

#[tokio::test]
async fn a_failing_hook_is_recorded_and_never_holds_up_the_calls_events() {
    let mut events = Receiver::start().await;
    let mut hook = Receiver::start_scripted(vec![Reply::status(500).body("hook broke")]).await;
    let mut config = TestConfig::new(&events.url("/hooks/voicekit"));
    config.workflow_extra = format!("call_started_hook = \"{}\"", hook.url("/call-started"));
    let daemon = Daemon::start(&config.toml()).await;
    post(
        &daemon,
        &lk::participant_joined(&room(), &agent(), 1_761_234_568),
    )
    .await;
    post(&daemon, &lk::room_finished(&room(), 1_761_234_600)).await;
    hook.next(DAEMON_REACTION).await;
    assert_eq!(
        events.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
    assert_eq!(
        events.next(DAEMON_REACTION).await.json()["event"],
        "call_ended"
    );
    // One try only: runtime data is of no use once the call is under way.
    hook.expect_nothing(Duration::from_millis(600)).await;

    let detail = call_detail(&daemon, 1).await;
    let attempts = detail["attempts"].as_array().unwrap();
    let hook_attempt = attempts
        .iter()
        .find(|a| a["endpoint"].as_str().unwrap().ends_with("/call-started"))
        .expect("the hook attempt is recorded");
    assert_eq!(hook_attempt["status_code"], 500);
    assert_eq!(hook_attempt["response_body"], "hook broke");
}

#[tokio::test]
async fn a_room_whose_room_finished_never_comes_is_ended_by_the_sweeper() {
    let mut events = Receiver::start().await;
    let mut config = TestConfig::new(&events.url("/hooks/voicekit"));
    config.reconcile = "interval_secs = 0.2\nempty_room_timeout_secs = 0.5".into();
    let daemon = Daemon::start(&config.toml()).await;
    let room = room();
    post(
        &daemon,
        &lk::participant_joined(&room, &agent(), 1_761_234_568),
    )
    .await;
    // The agent leaves 61 s into the call; LiveKit's room_finished is lost.
    post(
        &daemon,
        &lk::participant_left(&room, &agent(), 1_761_234_629),
    )
    .await;
    assert_eq!(
        events.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
    let ended = events.next(DAEMON_REACTION).await.json();
    assert_eq!(ended["event"], "call_ended");
    assert_eq!(ended["data"]["duration_seconds"], 61);
    assert_eq!(ended["data"]["duration_minutes"], 2);
    daemon
        .wait_for_stderr("LiveKit never sent room_finished", DAEMON_REACTION)
        .await;
    let detail = call_detail(&daemon, 1).await;
    assert_eq!(detail["call"]["phase"], "ended");
    let repairs = detail["state"]["repairs"].as_array().unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:?}");

    // A late room_finished from LiveKit changes nothing.
    post(&daemon, &lk::room_finished(&room, 1_761_234_700)).await;
    events.expect_nothing(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn an_egress_whose_end_never_comes_is_settled_through_list_egress() {
    let livekit = FakeLiveKit::start().await;
    let mut events = Receiver::start().await;
    let mut config = TestConfig::new(&events.url("/hooks/voicekit"));
    config.livekit_url = livekit.url();
    config.reconcile = "interval_secs = 0.2\negress_timeout_secs = 0.5".into();
    let daemon = Daemon::start(&config.toml()).await;
    let room = room();
    let key = format!("recordings/{ROOM_NAME}/EG_lost.ogg");
    post(
        &daemon,
        &lk::participant_joined(&room, &agent(), 1_761_234_568),
    )
    .await;
    post(
        &daemon,
        &lk::egress_started(&room, "EG_lost", 1_761_234_568_500_000_000, &key),
    )
    .await;
    post(&daemon, &lk::room_finished(&room, 1_761_234_600)).await;
    assert_eq!(
        events.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
    assert_eq!(
        events.next(DAEMON_REACTION).await.json()["event"],
        "call_ended"
    );

    // LiveKit's egress_ended webhook was lost; its Egress API knows the outcome.
    livekit.set_egresses(vec![json!({
        "egressId": "EG_lost", "roomId": "RM_repairs1", "roomName": ROOM_NAME,
        "status": "EGRESS_COMPLETE", "startedAt": "1761234568500000000",
        "endedAt": "1761234601000000000",
        "fileResults": [{"filename": key, "duration": "32500000000", "size": "4242",
            "location": format!("https://voicekit-recordings.s3.amazonaws.com/{key}")}]
    })]);
    let finalized = events.next(DAEMON_REACTION).await.json();
    assert_eq!(finalized["event"], "call_finalized");
    assert_eq!(finalized["timestamp"], "2025-10-23T15:50:01.000Z");
    assert_eq!(
        finalized["data"]["recording_url"],
        format!("https://recordings.example.com/{key}")
    );
    assert_eq!(finalized["data"]["egress_info"]["file_size"], "4242");
    assert!(livekit.rejected().is_empty(), "{:?}", livekit.rejected());
    daemon
        .wait_for_stderr("LiveKit never sent egress_ended", DAEMON_REACTION)
        .await;
}
