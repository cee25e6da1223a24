//! LiveKit as it really behaves, and as a hostile sender might, through the real
//! daemon: times at the edges of int64, events the store could not keep sent among
//! good ones, lost joins, egress results without an end, and a recording in another
//! bucket. Every webhook is signed as LiveKit signs it; the customer is a real HTTP
//! receiver and S3 a real S3-compatible server (moto).

use crate::support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{
    Daemon, Moto, Receiver, TestConfig,
    config::{API_KEY, API_SECRET, BUCKET},
    lk::{self, FileResult, Participant, Room},
};

use support::poll::DAEMON_REACTION as WAIT;
const ROOM_NAME: &str = "VOICEKIT_workflow_abc12345_8453";

async fn post(daemon: &Daemon, body: &str) {
    let (status, text) = daemon.post_signed(body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "webhook answered {status}: {text}");
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Unix ms of a VoiceKit timestamp (`2024-01-15T10:30:00.000Z`).
fn parse_timestamp(stamp: &str) -> i64 {
    let t = time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("timestamp {stamp:?}: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The hostile webhook, signed as LiveKit signs: `creationTime` and `joinedAt`
/// of 9999999999999999 (they overflow in the conversion to ms) and a `createdAt` of
/// i64::MIN. The customer, who bills from these events, sees the times they were
/// received instead: never 1970, never a negative duration.
#[tokio::test]
async fn int64_edge_times_become_times_of_receipt() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    let sid = lk::new_event_id().replacen("EV_", "RM_", 1);
    let body = |event: &str| {
        json!({
            "event": event,
            "room": {"sid": sid, "name": ROOM_NAME, "creationTime": "9999999999999999",
                     "creationTimeMs": "9223372036854775807"},
            "participant": {"sid": "PA_agent", "identity": "agent-1", "kind": "AGENT",
                            "state": "ACTIVE", "joinedAt": "9999999999999999"},
            "id": lk::new_event_id(),
            "createdAt": "-9223372036854775808",
        })
        .to_string()
    };
    let before = unix_ms();
    post(&daemon, &body("participant_joined")).await;
    post(&daemon, &body("participant_left")).await;
    post(&daemon, &body("room_finished")).await;
    let after = unix_ms();

    let started = receiver.next(WAIT).await.json();
    let ended = receiver.next(WAIT).await.json();
    assert_eq!(started["event"], "call_started");
    assert_eq!(ended["event"], "call_ended");
    for event in [&started, &ended] {
        let at = parse_timestamp(event["timestamp"].as_str().unwrap());
        // Milliseconds: the daemon's clock read at receipt is within the test's.
        assert!(
            (before - 1..=after + 1).contains(&at),
            "{event} is not stamped at its receipt ({before}..{after})"
        );
    }
    let seconds = ended["data"]["duration_seconds"].as_i64().unwrap();
    assert!(seconds >= 0, "{ended}");
    assert_eq!(
        ended["data"]["duration_minutes"].as_i64().unwrap(),
        ((seconds + 59) / 60).max(1)
    );
}

/// An event no store can keep (a NUL in a string, a 5 KB id) is refused with 400
/// before it reaches the store, so it never fails the webhooks committed in the same
/// transaction: sent at once with good ones, every good one is accepted and delivered.
#[tokio::test]
async fn an_event_the_store_cannot_keep_fails_alone() {
    const GOOD: usize = 40;
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;

    let long = "X".repeat(5 * 1024);
    let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
    let mut bad = vec![
        // A NUL in the room's metadata, escaped as JSON escapes it.
        lk::agent_joined(&lk::mapped_room().with_metadata("{\"note\":\"a\u{0}b\"}")),
        // A NUL in the participant's identity.
        lk::participant_joined(
            &lk::mapped_room(),
            &Participant::agent("PA_agent", "agent\u{0}1", 1_761_234_569_000),
            1_761_234_569,
        ),
        // A 5 KB event id and a 5 KB room sid.
        lk::with_id(&lk::agent_joined(&lk::mapped_room()), &format!("EV_{long}")),
        lk::participant_joined(
            &Room::new(&format!("RM_{long}"), ROOM_NAME, 1_761_234_567_123),
            &agent,
            1_761_234_569,
        ),
    ];
    assert!(bad[0].contains("\\u0000") && bad[1].contains("\\u0000"));
    let good: Vec<String> = (0..GOOD)
        .map(|_| lk::agent_joined(&lk::mapped_room()))
        .collect();

    // Interleaved and all in flight at once, so that they share the writer's batches.
    let mut sends = tokio::task::JoinSet::new();
    let mut bodies: Vec<(bool, String)> = good.iter().map(|b| (true, b.clone())).collect();
    for (i, b) in bad.drain(..).enumerate() {
        bodies.insert(i * 10, (false, b));
    }
    for (good, body) in bodies {
        let poster = daemon.poster();
        sends.spawn(async move {
            let response = poster.post_signed(body).await.expect("the daemon answers");
            let status = response.status().as_u16();
            (good, status, response.text().await.unwrap_or_default())
        });
    }
    let mut refused = Vec::new();
    while let Some(answer) = sends.join_next().await {
        let (good, status, text) = answer.unwrap();
        if good {
            assert_eq!(status, 200, "a good webhook answered {status}: {text}");
        } else {
            assert_eq!(status, 400, "a bad webhook answered {status}: {text}");
            refused.push(text);
        }
    }
    assert_eq!(refused.len(), 4);
    assert_eq!(
        refused.iter().filter(|t| t.contains("NUL")).count(),
        2,
        "{refused:?}"
    );
    assert_eq!(
        refused
            .iter()
            .filter(|t| t.contains("at most 1024"))
            .count(),
        2,
        "{refused:?}"
    );

    support::poll::eventually(WAIT, "a call_started for every good webhook", async || {
        receiver.count() >= GOOD
    })
    .await;
    let rooms: std::collections::BTreeSet<i64> = receiver
        .received()
        .iter()
        .map(|r| {
            let body = r.json();
            assert_eq!(body["event"], "call_started", "{body}");
            body["data"]["call_id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(rooms.len(), GOOD, "one call per good webhook");
}

/// livekit#1130: the caller's `participant_joined` is lost; its `participant_left`,
/// which carries `sip.phoneNumber`, gives the call its number.
#[tokio::test]
async fn a_caller_whose_join_was_lost_is_given_its_phone_number() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    let room = lk::mapped_room();
    let caller = Participant::sip(
        "PA_caller",
        "+15551230001",
        "+15557650002",
        1_761_234_568_456,
    );
    post(&daemon, &lk::agent_joined(&room)).await;
    post(
        &daemon,
        &lk::participant_left(&room, &caller, 1_761_234_719),
    )
    .await;
    let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
    post(&daemon, &lk::participant_left(&room, &agent, 1_761_234_720)).await;
    post(&daemon, &lk::room_finished(&room, 1_761_234_740)).await;

    let started = receiver.next(WAIT).await.json();
    assert_eq!(
        started["data"]["phone_number"],
        Value::Null,
        "not known yet"
    );
    let ended = receiver.next(WAIT).await.json();
    assert_eq!(ended["event"], "call_ended");
    assert_eq!(ended["data"]["phone_number"], "+15551230001");
    assert_eq!(ended["data"]["duration_seconds"], 151);
}

/// egress#809: `egress_ended` without `endedAt` and with a file duration of -1 (the
/// legacy `file` only, node-sdks#625). `egress_info` carries the egress's last update
/// as `ended_at` and the time between start and end as `duration`: no "0", no "-1".
#[tokio::test]
async fn an_egress_without_an_end_reports_the_times_it_has() {
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    let room = lk::mapped_room();
    post(&daemon, &lk::agent_joined(&room)).await;
    post(&daemon, &lk::room_finished(&room, 1_761_234_740)).await;
    let body = json!({
        "event": "egress_ended",
        "room": {"sid": room.sid, "name": room.name},
        "egressInfo": {
            "egressId": "EG_noend", "roomId": room.sid, "roomName": room.name,
            "status": "EGRESS_COMPLETE", "startedAt": "1761234569000000000",
            "updatedAt": "1761234741250000000", "fileResults": [],
            "file": {"filename": "recordings/a.ogg", "duration": "-1", "size": "1442477",
                     "location": format!("https://{BUCKET}.s3.amazonaws.com/recordings/a.ogg")},
        },
        "id": lk::new_event_id(),
        "createdAt": "1761234741",
    })
    .to_string();
    post(&daemon, &body).await;

    let _started = receiver.next(WAIT).await;
    let _ended = receiver.next(WAIT).await;
    let finalized = receiver.next(WAIT).await.json();
    assert_eq!(finalized["event"], "call_finalized");
    assert_eq!(finalized["timestamp"], "2025-10-23T15:52:21.250Z");
    let info = &finalized["data"]["egress_info"];
    assert_eq!(info["started_at"], "1761234569000000000");
    assert_eq!(info["ended_at"], "1761234741250000000");
    assert_eq!(info["duration"], "172250000000");
    assert_eq!(info["file_size"], "1442477");
    assert_eq!(info["file_type"], "ogg");
    assert_eq!(
        finalized["data"]["recording_url"],
        "https://recordings.example.com/recordings/a.ogg"
    );
}

/// A location in another bucket than `[recordings] bucket` is not signed as if it were
/// ours, even though an object of that key exists in our bucket: `call_finalized` says
/// `recording_url: null` and the operator gets a warning.
#[tokio::test]
async fn a_recording_in_another_bucket_is_published_as_null() {
    const KEY: &str = "recordings/VOICEKIT_workflow_abc12345_8453/other.ogg";
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put_object(BUCKET, KEY, b"OggS not the caller's recording".to_vec())
        .await;
    let mut receiver = Receiver::start().await;
    let config = TestConfig::new(&receiver.url("/hooks/voicekit")).with_s3(&moto.endpoint());
    let daemon = Daemon::start(&config.toml()).await;
    let room = lk::mapped_room();
    post(&daemon, &lk::agent_joined(&room)).await;
    post(&daemon, &lk::room_finished(&room, 1_761_234_740)).await;
    let file = FileResult {
        filename: KEY.into(),
        duration_ns: 150_000_000_000,
        size: 31,
        location: format!("{}/someone-elses-bucket/{KEY}", moto.endpoint()),
    };
    let ended = lk::egress_ended(
        &room,
        "EG_elsewhere",
        "EGRESS_COMPLETE",
        1_761_234_569_000_000_000,
        1_761_234_721_000_000_000,
        Some(&file),
    );
    post(&daemon, &ended).await;

    let _started = receiver.next(WAIT).await;
    let _ended = receiver.next(WAIT).await;
    let finalized = receiver.next(WAIT).await.json();
    assert_eq!(finalized["event"], "call_finalized");
    assert_eq!(finalized["data"]["recording_url"], Value::Null);
    assert_eq!(finalized["data"]["egress_info"]["file_type"], "ogg");
    daemon
        .wait_for_stderr("another bucket than [recordings] bucket", WAIT)
        .await;
    assert!(daemon.stderr_text().contains("someone-elses-bucket"));
}
