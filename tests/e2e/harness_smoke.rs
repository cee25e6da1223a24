//! Checks the parts of the test harness that work without the daemon, so a failing
//! end-to-end test can be trusted to point at the bridge rather than at the harness.

use crate::support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use livekit_api::access_token::{AccessTokenError, TokenVerifier};
use sha2::{Digest, Sha256};
use support::lk::{self, Participant, Room};
use support::{Moto, Receiver, signer};

const KEY: &str = "APIsmoke";
const SECRET: &str = "smoke-secret-with-enough-bytes-for-hs256";

#[tokio::test]
async fn moto_stores_an_object_and_serves_it_back() {
    let moto = Moto::start().await;
    moto.create_bucket("recordings").await;
    moto.put_object("recordings", "calls/a b/1.ogg", b"OggS fake audio".to_vec())
        .await;

    assert_eq!(
        moto.get_object("recordings", "calls/a b/1.ogg").await,
        b"OggS fake audio"
    );
    let head = moto
        .client()
        .await
        .head_object()
        .bucket("recordings")
        .key("calls/a b/1.ogg")
        .send()
        .await
        .expect("head_object");
    assert_eq!(head.content_length(), Some(15));
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn receiver_answers_from_its_script_then_200_and_records_everything() {
    let mut receiver = Receiver::start_with(vec![500]).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let mut statuses = Vec::new();
    for n in 1..=2 {
        let response = http
            .post(receiver.url("/hooks/voicekit?try=1"))
            .header("webhook-id", format!("msg_{n}"))
            .body(format!(r#"{{"n":{n}}}"#))
            .send()
            .await
            .expect("post to receiver");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [500, 200]);

    for n in 1..=2 {
        let request = receiver.next(Duration::from_secs(5)).await;
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/voicekit");
        assert_eq!(request.query.as_deref(), Some("try=1"));
        assert_eq!(
            request.header("webhook-id"),
            Some(format!("msg_{n}").as_str())
        );
        assert_eq!(request.json()["n"], n);
    }
    assert_eq!(receiver.count(), 2);
    receiver.expect_nothing(Duration::from_millis(200)).await;
}

#[test]
fn signed_token_verifies_and_carries_the_hash_of_the_exact_body() {
    let room = Room::new(
        "RM_smoke",
        "VOICEKIT_workflow_abc12345_8453",
        1_761_234_567_123,
    );
    let body = lk::with_extra_spaces(&lk::room_started(&room, 1_761_234_567));
    let token = signer::sign(KEY, SECRET, body.as_bytes());

    let claims = TokenVerifier::with_api_key(KEY, SECRET)
        .verify(&token)
        .expect("valid token");
    assert_eq!(claims.iss, KEY);
    assert_eq!(
        claims.sha256,
        STANDARD.encode(Sha256::digest(body.as_bytes()))
    );
    assert!(
        (300..=301).contains(&(claims.exp - claims.nbf)),
        "5 minute TTL"
    );
    assert!(!token.starts_with("Bearer"));

    assert!(
        TokenVerifier::with_api_key(KEY, "another-secret")
            .verify(&token)
            .is_err()
    );
}

#[test]
fn expired_token_is_well_signed_but_rejected_as_expired() {
    let body = br#"{"event":"room_finished"}"#;
    let token = signer::expired_token(KEY, SECRET, body);

    match TokenVerifier::with_api_key(KEY, SECRET).verify(&token) {
        Err(AccessTokenError::Encoding(e)) => assert_eq!(
            e.kind(),
            &jsonwebtoken::errors::ErrorKind::ExpiredSignature,
            "{e:?}"
        ),
        other => panic!("expected an expired-signature error, got {other:?}"),
    }
    let claims = livekit_api::access_token::Claims::from_unverified(&token).expect("decodes");
    assert_eq!(claims.sha256, signer::body_sha256(body));
}

#[test]
fn livekit_bodies_look_like_the_fixtures() {
    let room = Room::new("RM_x", "VOICEKIT_workflow_abc12345_1", 1_761_234_567_123)
        .with_metadata(r#"{"a":1}"#);
    let caller = Participant::sip("PA_x", "+15551230001", "+15557650002", 1_761_234_568_456);
    let joined = lk::participant_joined(&room, &caller, 1_761_234_568);
    let value: serde_json::Value = serde_json::from_str(&joined).expect("JSON");
    assert!(joined.starts_with(r#"{"event":"participant_joined","room":{"sid":"RM_x","#));
    assert_eq!(value["createdAt"], "1761234568");
    assert_eq!(value["room"]["creationTimeMs"], "1761234567123");
    assert_eq!(value["room"]["metadata"], r#"{"a":1}"#);
    assert_eq!(value["participant"]["kind"], "SIP");
    assert_eq!(
        value["participant"]["attributes"]["sip.phoneNumber"],
        "+15551230001"
    );
    assert!(lk::event_id(&joined).starts_with("EV_"));
    assert_ne!(
        lk::event_id(&joined),
        lk::event_id(&lk::participant_joined(&room, &caller, 1))
    );
    assert_eq!(lk::event_id(&lk::with_id(&joined, "EV_fixed")), "EV_fixed");

    let web_user = Participant::standard("PA_y", "web-user", 1_761_234_568_000);
    let left: serde_json::Value =
        serde_json::from_str(&lk::participant_left(&room, &web_user, 1_761_234_600)).expect("JSON");
    assert!(
        left["participant"].get("kind").is_none(),
        "STANDARD is omitted"
    );

    let started = lk::egress_started(&room, "EG_x", 1_761_234_569_012_345_678, "rec/a.ogg");
    let started: serde_json::Value = serde_json::from_str(&started).expect("JSON");
    assert!(
        started["egressInfo"].get("status").is_none(),
        "EGRESS_STARTING is omitted"
    );
    assert_eq!(started["room"].as_object().map(|r| r.len()), Some(2));

    let file = lk::FileResult {
        filename: "rec/a.ogg".into(),
        duration_ns: 243_887_654_321,
        size: 1_948_211,
        location: "https://b.s3.amazonaws.com/rec/a.ogg".into(),
    };
    let ended = lk::egress_ended(
        &room,
        "EG_x",
        "EGRESS_COMPLETE",
        1_761_234_569_012_345_678,
        1_761_234_813_987_654_321,
        Some(&file),
    );
    let ended: serde_json::Value = serde_json::from_str(&ended).expect("JSON");
    assert_eq!(ended["egressInfo"]["status"], "EGRESS_COMPLETE");
    assert_eq!(ended["egressInfo"]["fileResults"][0]["size"], "1948211");
    assert_eq!(ended["createdAt"], "1761234814");

    let fixture = lk::fixture("egress_ended");
    assert_eq!(lk::event_id(&fixture), "EV_Gh5jK6lZ7xC8");
}
