//! Proves that the real daemon answers every bad or unusual LiveKit webhook exactly as
//! README's "What LiveKit gets back" table says, and that nothing it refuses or ignores
//! ever reaches the customer's endpoint.
//!
//! Each test starts the built binary on loopback with a [`Receiver`] as the workflow
//! endpoint, posts one kind of input and checks the status, the JSON answer, the log
//! line naming the reason (for 401s) and that nothing was delivered. The few positive
//! cases (`Bearer `, the rotation key, Go's extra spaces, unknown fields) check that the
//! event really took effect: `call_started` arrives.

use crate::support;

use std::time::Duration;

use serde_json::{Value, json};
use support::config::{API_KEY, API_SECRET, OLD_API_KEY, OLD_API_SECRET, WORKFLOW_SLUG};
use support::lk::{self, Participant, Room};
use support::poll::DAEMON_REACTION;
use support::{Daemon, Receiver, TestConfig, poll, signer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a negative check waits for a delivery that must not come.
const QUIET: Duration = Duration::from_millis(500);
/// Chunk size of [`post_chunked`]'s hand-made chunked requests.
const CHUNK: usize = 128;

/// A daemon delivering to a fresh receiver, with the default test config.
async fn start() -> (Daemon, Receiver) {
    start_with(|_| {}).await
}

/// Like [`start`], with the config adjusted by `tweak` first.
async fn start_with(tweak: impl FnOnce(&mut TestConfig)) -> (Daemon, Receiver) {
    let receiver = Receiver::start().await;
    let mut config = TestConfig::new(&receiver.url("/hook"));
    tweak(&mut config);
    let daemon = Daemon::start(&config.toml()).await;
    (daemon, receiver)
}

/// The response body as JSON; panics showing it if it is not JSON.
fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body:?}"))
}

/// Asserts a 401 with exactly `{"error":"unauthorized"}`.
fn assert_unauthorized((status, body): (u16, String)) {
    assert_eq!(status, 401, "answer body: {body}");
    assert_eq!(json_body(&body), json!({"error": "unauthorized"}));
}

/// Asserts a 200 with exactly `{"status": <status>}`.
fn assert_ok((code, body): &(u16, String), status: &str) {
    assert_eq!(*code, 200, "answer body: {body}");
    assert_eq!(json_body(body), json!({ "status": status }));
}

/// The `reason` values on the daemon's "webhook rejected: unauthorized" log lines,
/// whether the text format quotes them (`reason="expired"`) or not.
fn rejection_reasons(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|line| line.contains("webhook rejected: unauthorized"))
        .filter_map(|line| {
            let rest = &line[line.find("reason=")? + "reason=".len()..];
            let rest = rest.strip_prefix('"').unwrap_or(rest);
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        })
        .collect()
}

/// Waits for the daemon to log the rejection, then asserts it logged exactly one, that
/// it names `reason`, and that no configured secret appears anywhere on stderr.
async fn assert_logged_reason(daemon: &Daemon, reason: &str) {
    let reasons = poll::within(DAEMON_REACTION, async || {
        let reasons = rejection_reasons(&daemon.stderr_text());
        (!reasons.is_empty()).then_some(reasons)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no \"webhook rejected: unauthorized\" line with reason= on stderr within {DAEMON_REACTION:?}\n\
             --- stderr ---\n{}",
            daemon.stderr_text()
        )
    });
    assert_eq!(
        reasons,
        [reason],
        "--- stderr ---\n{}",
        daemon.stderr_text()
    );
    // The needle as the brief words it, checked on the real text too.
    let stderr = daemon.stderr_text();
    assert!(
        stderr.contains(&format!("reason={reason}"))
            || stderr.contains(&format!("reason=\"{reason}\"")),
        "{stderr}"
    );
    assert_no_secret_logged(daemon);
}

fn assert_no_secret_logged(daemon: &Daemon) {
    let stderr = daemon.stderr_text();
    for secret in [API_SECRET, OLD_API_SECRET] {
        assert!(
            !stderr.contains(secret),
            "stderr contains an API secret:\n{stderr}"
        );
    }
}

/// POSTs `body` to the daemon's webhook route with `Transfer-Encoding: chunked` and no
/// `Content-Length`, over a plain TCP connection (reqwest's streaming bodies need a
/// feature this crate does not enable). Returns status and response body.
async fn post_chunked(daemon: &Daemon, token: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(daemon.addr())
        .await
        .expect("connect to the daemon");
    let mut request = format!(
        "POST /livekit/webhook HTTP/1.1\r\n\
         Host: {}\r\n\
         Content-Type: application/webhook+json\r\n\
         Authorization: {token}\r\n\
         Transfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        daemon.addr()
    )
    .into_bytes();
    for chunk in body.chunks(CHUNK) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The daemon may answer (and stop reading) before the last chunk; what matters is
    // its answer, so a failed write is not an error here.
    let _ = stream.write_all(&request).await;

    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the daemon answered within 10 s");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("incomplete HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let content_length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let body = match content_length {
        Some(len) => rest.get(..len).unwrap_or(rest).to_owned(),
        None => rest.to_owned(),
    };
    (status, body)
}

// ---- 401: the token ----

#[tokio::test]
async fn missing_authorization_is_401_unauthorized_logged_as_missing_token_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    assert_unauthorized(daemon.post_webhook(&body, None).await);

    assert_logged_reason(&daemon, "missing_token").await;
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn token_signed_with_the_wrong_secret_is_401_logged_as_bad_signature_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    let wrong = "not-the-secret-0123456789abcdef0123456789";
    assert_unauthorized(daemon.post_signed(&body, API_KEY, wrong).await);

    assert_logged_reason(&daemon, "bad_signature").await;
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn token_of_an_unknown_api_key_is_401_logged_as_unknown_key_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    assert_unauthorized(
        daemon
            .post_signed(&body, "strangerkey", "stranger-secret-0123456789abcdef")
            .await,
    );

    assert_logged_reason(&daemon, "unknown_key").await;
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn expired_token_is_401_logged_as_expired_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    let token = signer::expired_token(API_KEY, API_SECRET, body.as_bytes());
    assert_unauthorized(daemon.post_webhook(&body, Some(&token)).await);

    assert_logged_reason(&daemon, "expired").await;
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn body_tampered_after_signing_is_401_logged_as_hash_mismatch_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let signed = lk::agent_joined(&lk::mapped_room());
    let posted = lk::agent_joined(&lk::mapped_room());
    assert_ne!(signed, posted);

    let token = signer::sign(API_KEY, API_SECRET, signed.as_bytes());
    assert_unauthorized(daemon.post_webhook(&posted, Some(&token)).await);

    assert_logged_reason(&daemon, "hash_mismatch").await;
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn token_whose_sha256_claim_is_for_other_bytes_is_401_logged_as_hash_mismatch_and_not_delivered()
 {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    let other = signer::body_sha256(b"some other bytes entirely");
    let token = signer::sign_with_sha256(API_KEY, API_SECRET, &other, signer::TTL);
    assert_unauthorized(daemon.post_webhook(&body, Some(&token)).await);

    assert_logged_reason(&daemon, "hash_mismatch").await;
    receiver.expect_nothing(QUIET).await;
}

// ---- 200: tokens LiveKit (or a proxy) may send ----

/// The webhook got 200, its `call_started` reached the endpoint, and no secret was logged.
async fn accepted_and_delivered(daemon: &Daemon, receiver: &mut Receiver, answer: &(u16, String)) {
    assert_ok(answer, "accepted");
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
    assert_no_secret_logged(daemon);
}

#[tokio::test]
async fn bearer_prefixed_token_is_accepted_and_delivers_call_started() {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());
    let answer = daemon
        .post_webhook(&body, Some(&format!("Bearer {token}")))
        .await;

    accepted_and_delivered(&daemon, &mut receiver, &answer).await;
}

#[tokio::test]
async fn token_of_the_second_configured_key_is_accepted_and_delivers_call_started() {
    let (daemon, mut receiver) = start().await;
    let body = lk::agent_joined(&lk::mapped_room());

    let answer = daemon.post_signed(&body, OLD_API_KEY, OLD_API_SECRET).await;

    accepted_and_delivered(&daemon, &mut receiver, &answer).await;
}

// ---- 400: the body is not an event ----

#[tokio::test]
async fn malformed_json_signed_correctly_is_400_with_a_json_error_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let body = r#"{"event":"participant_joined","room":{"sid":"RM_broken","#;

    let (status, answer) = daemon.post_signed(body, API_KEY, API_SECRET).await;

    assert_eq!(status, 400, "answer body: {answer}");
    let error = &json_body(&answer)["error"];
    assert!(
        error.as_str().is_some_and(|e| !e.is_empty()),
        "expected a non-empty string `error`, got {answer}"
    );
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn json_without_an_event_field_is_400_with_a_json_error_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let room = lk::mapped_room();
    let body = format!(
        r#"{{"room":{{"sid":"{}","name":"{}"}},"id":"{}","createdAt":"1761234569"}}"#,
        room.sid,
        room.name,
        lk::new_event_id()
    );

    let (status, answer) = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_eq!(status, 400, "answer body: {answer}");
    let error = &json_body(&answer)["error"];
    assert!(
        error.as_str().is_some_and(|e| !e.is_empty()),
        "expected a non-empty string `error`, got {answer}"
    );
    receiver.expect_nothing(QUIET).await;
}

// ---- 413: too large ----

/// A correctly signed agent join of about 4 KB (padded room metadata), over a 2048
/// byte limit; under a larger limit it would cause `call_started`.
fn oversized_agent_joined() -> String {
    let metadata = json!({ "workflow_slug": WORKFLOW_SLUG, "pad": "x".repeat(4000) });
    let room = lk::mapped_room().with_metadata(&metadata.to_string());
    let body = lk::agent_joined(&room);
    assert!((4000..6000).contains(&body.len()), "{} bytes", body.len());
    body
}

#[tokio::test]
async fn body_over_max_body_bytes_with_content_length_is_413_and_not_delivered() {
    let (daemon, mut receiver) = start_with(|c| c.max_body_bytes = 2048).await;
    let body = oversized_agent_joined();

    let (status, answer) = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_eq!(status, 413, "answer body: {answer}");
    assert_eq!(json_body(&answer), json!({"error": "body too large"}));
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn chunked_body_over_max_body_bytes_without_content_length_is_413_and_not_delivered() {
    let (daemon, mut receiver) = start_with(|c| c.max_body_bytes = 2048).await;
    let body = oversized_agent_joined();
    let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());

    let (status, answer) = post_chunked(&daemon, &token, body.as_bytes()).await;

    assert_eq!(status, 413, "answer body: {answer}");
    assert_eq!(json_body(&answer), json!({"error": "body too large"}));
    receiver.expect_nothing(QUIET).await;
}

/// The control for the chunked 413: the same hand-made chunked request, with a body
/// under the limit, is read whole and accepted, so the 413 above is about size.
#[tokio::test]
async fn chunked_body_under_max_body_bytes_is_accepted_and_delivers_call_started() {
    let (daemon, mut receiver) = start_with(|c| c.max_body_bytes = 2048).await;
    let body = lk::agent_joined(&lk::mapped_room());
    assert!(
        body.len() < 2048 && body.len() > 2 * CHUNK,
        "{} bytes",
        body.len()
    );
    let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());

    let answer = post_chunked(&daemon, &token, body.as_bytes()).await;

    assert_ok(&answer, "accepted");
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
}

// ---- 200: what a newer LiveKit may send ----

#[tokio::test]
async fn unknown_event_type_is_200_ignored_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let body = format!(
        r#"{{"event":"something_new","id":"{}","createdAt":"1761234569"}}"#,
        lk::new_event_id()
    );

    let answer = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_ok(&answer, "ignored");
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn unknown_event_type_about_a_mapped_room_is_200_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let room = lk::mapped_room();
    let body = lk::room_started(&room, 1_761_234_567).replacen(
        r#"{"event":"room_started","#,
        r#"{"event":"something_new","#,
        1,
    );
    assert!(body.starts_with(r#"{"event":"something_new","#), "{body}");

    let (status, answer) = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_eq!(status, 200, "answer body: {answer}");
    let answered = json_body(&answer)["status"].clone();
    assert!(
        answered == "ignored" || answered == "accepted",
        "expected ignored or accepted, got {answer}"
    );
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn participant_of_an_unknown_kind_with_unknown_fields_is_200_accepted_and_not_delivered() {
    let (daemon, mut receiver) = start().await;
    let room = lk::mapped_room();
    let hologram = Participant::agent("PA_holo", "holo-1", 1_761_234_569_000);
    let body = lk::participant_joined(&room, &hologram, 1_761_234_569)
        .replacen(r#""kind":"AGENT""#, r#""kind":"HOLOGRAM""#, 1)
        .replacen(
            r#"{"event":"participant_joined","#,
            r#"{"event":"participant_joined","futureTopLevel":{"nested":[1,"two",null,{"x":true}]},"#,
            1,
        );
    assert!(body.contains(r#""kind":"HOLOGRAM""#), "{body}");

    let answer = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_ok(&answer, "accepted");
    // A HOLOGRAM is not the agent: no call_started.
    receiver.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn agent_join_with_unknown_fields_and_enum_values_is_200_and_delivers_call_started() {
    let (daemon, mut receiver) = start().await;
    let room = lk::mapped_room();
    let body = lk::agent_joined(&room)
        .replacen(
            r#"{"event":"participant_joined","#,
            r#"{"event":"participant_joined","futureTopLevel":{"nested":[1,"two",null]},"#,
            1,
        )
        .replacen(
            r#""room":{"#,
            r#""room":{"futureRoomField":"STATE_QUANTUM","futureNumber":"123456789012","#,
            1,
        )
        .replacen(
            r#""state":"ACTIVE""#,
            r#""state":"SUPERPOSED","permission":{"canTeleport":true},"futureEnum":"VALUE_FROM_2030""#,
            1,
        );
    assert!(
        body.contains("SUPERPOSED") && body.contains("futureRoomField"),
        "{body}"
    );

    let answer = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_ok(&answer, "accepted");
    let started = receiver.next(DAEMON_REACTION).await.json();
    assert_eq!(started["event"], "call_started");
    assert_eq!(started["data"]["workflow_slug"], WORKFLOW_SLUG);
}

// ---- 200: rooms that are no call ----

#[tokio::test]
async fn room_mapping_to_no_workflow_is_200_ignored_for_a_whole_call_and_nothing_delivered() {
    let (daemon, mut receiver) = start().await;
    let room = Room::new("RM_nocall0000001", "standup-daily", 1_761_234_567_123);
    let agent = Participant::agent("PA_agent", "agent-1", 1_761_234_569_000);
    let bodies = [
        lk::room_started(&room, 1_761_234_567),
        lk::participant_joined(&room, &agent, 1_761_234_569),
        lk::room_finished(&room, 1_761_234_660),
    ];

    for body in &bodies {
        let answer = daemon.post_signed(body, API_KEY, API_SECRET).await;
        assert_ok(&answer, "ignored");
    }

    receiver.expect_nothing(QUIET).await;
}

// ---- 200: LiveKit retries and Go's formatting ----

#[tokio::test]
async fn same_event_id_twice_is_200_then_200_duplicate_and_call_started_delivered_once() {
    let (daemon, mut receiver) = start().await;
    let body = lk::with_id(&lk::agent_joined(&lk::mapped_room()), "EV_dupl1cate0001");

    let first = daemon.post_signed(&body, API_KEY, API_SECRET).await;
    let second = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_ok(&first, "accepted");
    assert_ok(&second, "duplicate");
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
    receiver.expect_nothing(QUIET).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn body_with_gos_extra_spaces_after_commas_is_accepted_and_delivers_call_started() {
    let (daemon, mut receiver) = start().await;
    let body = lk::with_extra_spaces(&lk::agent_joined(&lk::mapped_room()));
    assert!(body.contains(", \""), "{body}");

    let answer = daemon.post_signed(&body, API_KEY, API_SECRET).await;

    assert_ok(&answer, "accepted");
    let started = receiver.next(DAEMON_REACTION).await.json();
    assert_eq!(started["event"], "call_started");
    assert_eq!(started["data"]["workflow_slug"], WORKFLOW_SLUG);
}
