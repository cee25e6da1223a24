//! How the bridge sends: Standard Webhooks signatures (checked by an independent
//! verifier), `Retry-After`, 410 Gone, the circuit breaker, one slow endpoint not
//! holding up another workflow's deliveries, and a slow outcome commit not holding up
//! the next request. All over loopback against the real daemon.

use crate::support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::Connection;
use support::poll::DAEMON_REACTION;
use support::{
    Daemon, Receiver, Reply, TestConfig,
    config::{API_KEY, API_SECRET},
    lk::{self, Participant, Room},
    operator::api_get,
    poll,
};
use tokio::sync::Notify;

const OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn room(n: u32) -> Room {
    Room::new(
        &format!("RM_policy{n}"),
        &format!("VOICEKIT_workflow_call{n}_1"),
        1_761_234_567_000,
    )
}

/// A room of the `sales` workflow (picked by metadata).
fn sales_room(n: u32) -> Room {
    Room::new(
        &format!("RM_sales{n}"),
        &format!("sales-room-{n}"),
        1_761_234_567_000,
    )
    .with_metadata(r#"{"workflow_slug":"sales"}"#)
}

async fn post(daemon: &Daemon, body: &str) {
    let (status, text) = daemon.post_signed(body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "{text}");
}

/// Agent joins: call_started. With `finish`, the room closes too: call_ended.
async fn call(daemon: &Daemon, room: &Room, finish: bool) {
    let agent = Participant::agent("PA_agent", "agent", room.creation_time_ms + 1000);
    post(daemon, &lk::participant_joined(room, &agent, 1_761_234_568)).await;
    if finish {
        post(daemon, &lk::room_finished(room, 1_761_234_600)).await;
    }
}

#[tokio::test]
async fn deliveries_carry_standard_webhooks_signatures_for_every_secret() {
    let mut receiver = Receiver::start().await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.workflow_extra = format!(r#"signing_secrets = ["{OLD_SECRET}", "{NEW_SECRET}"]"#);
    let daemon = Daemon::start(&config.toml()).await;
    call(&daemon, &room(1), false).await;

    let got = receiver.next(DAEMON_REACTION).await;
    let signature = got.header("webhook-signature").unwrap_or_default();
    assert_eq!(
        signature.split(' ').count(),
        2,
        "one signature per secret: {signature}"
    );
    let timestamp: i64 = got.header("webhook-timestamp").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - timestamp).abs() < 60,
        "webhook-timestamp is the attempt's time"
    );
    for secret in [OLD_SECRET, NEW_SECRET] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&got.body, &got.headers)
            .unwrap_or_else(|e| panic!("{secret}: {e}"));
    }
    let wrong = standardwebhooks::Webhook::new("whsec_dGhpcyBpcyBub3QgdGhlIGtleQ==").unwrap();
    assert!(wrong.verify(&got.body, &got.headers).is_err());
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let mut receiver =
        Receiver::start_scripted(vec![Reply::status(429).header("Retry-After", "2")]).await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hooks/voicekit")).toml()).await;
    call(&daemon, &room(2), false).await;
    receiver.next(DAEMON_REACTION).await;
    let refused_at = Instant::now();
    // The schedule alone would retry after 0.2 s; the endpoint asked for 2 s.
    receiver.expect_nothing(Duration::from_millis(1500)).await;
    let retried = receiver.next(DAEMON_REACTION).await;
    assert!(refused_at.elapsed() >= Duration::from_millis(1900));
    assert_eq!(retried.json()["event"], "call_started");
}

#[tokio::test]
async fn gone_410_stops_every_pending_delivery_to_that_endpoint() {
    let mut receiver = Receiver::start_with(vec![410; 10]).await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.retry_schedule_secs = "[0.3, 0.3, 0.3]";
    let daemon = Daemon::start(&config.toml()).await;
    call(&daemon, &room(3), true).await;
    call(&daemon, &room(4), true).await;
    // Both calls' call_started are due at once; after the first 410 nothing more goes.
    receiver.next(DAEMON_REACTION).await;
    daemon.wait_for_stderr("410 Gone", DAEMON_REACTION).await;
    // A window in which retries (due every 0.3 s) and call_ended would show up.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = receiver.received();
    assert!(got.len() <= 2, "{} requests after 410", got.len());
    assert!(got.iter().all(|r| r.json()["event"] == "call_started"));
    let calls: std::collections::HashSet<_> = got
        .iter()
        .map(|r| r.json()["data"]["call_id"].clone())
        .collect();
    assert_eq!(calls.len(), got.len(), "no call_started was retried");
}

#[tokio::test]
async fn a_failing_endpoint_opens_its_circuit_and_a_later_success_closes_it() {
    let mut receiver = Receiver::start_with(vec![500, 500]).await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.retry_schedule_secs = "[0.1, 0.1, 0.1, 0.1, 0.1]";
    config.delivery_extra = "breaker_failures = 2\nbreaker_open_secs = 1.5".into();
    let daemon = Daemon::start(&config.toml()).await;
    call(&daemon, &room(5), false).await;
    receiver.next(DAEMON_REACTION).await;
    receiver.next(DAEMON_REACTION).await;
    daemon
        .wait_for_stderr("circuit opened", DAEMON_REACTION)
        .await;
    let opened = Instant::now();
    // Retries are due every 0.1 s, but the whole endpoint is paused.
    receiver.expect_nothing(Duration::from_millis(1000)).await;
    let probe = receiver.next(DAEMON_REACTION).await;
    assert!(opened.elapsed() >= Duration::from_millis(1400));
    assert_eq!(probe.json()["event"], "call_started");
    daemon
        .wait_for_stderr("circuit closed", DAEMON_REACTION)
        .await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_another_workflow() {
    let slow_replies = (0..8)
        .map(|_| Reply::status(200).delay(Duration::from_secs(4)))
        .collect();
    let mut slow = Receiver::start_scripted(slow_replies).await;
    let mut fast = Receiver::start().await;
    let mut config = TestConfig::new(&slow.url("/hooks/voicekit"));
    config.sales_webhook_url = Some(fast.url("/hooks/sales"));
    let daemon = Daemon::start(&config.toml()).await;
    for n in 0..6 {
        call(&daemon, &room(10 + n), false).await;
    }
    slow.next(DAEMON_REACTION).await;
    let started = Instant::now();
    call(&daemon, &sales_room(1), true).await;
    let first = fast.next(DAEMON_REACTION).await;
    let second = fast.next(DAEMON_REACTION).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fast endpoint waited {:?}",
        started.elapsed()
    );
    assert_eq!(first.json()["event"], "call_started");
    assert_eq!(second.json()["event"], "call_ended");
    assert_eq!(first.json()["data"]["workflow_slug"], "sales");
    // The slow endpoint gets at most per_endpoint_concurrency (4) at once.
    assert!(
        slow.count() <= 4,
        "{} in flight to the slow endpoint",
        slow.count()
    );
}

/// A backlog of several outbox windows, as after an endpoint outage: every event is
/// sent, each once, although each window is read while rows of the one before are
/// still in flight or having their outcome committed.
#[tokio::test]
async fn a_backlog_of_several_windows_is_sent_once_each() {
    const CALLS: u32 = 200;
    // The endpoint's four slots are held while the backlog queues behind them.
    let gates: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
    let mut receiver =
        Receiver::start_scripted(gates.iter().map(|g| Reply::status(200).until(g)).collect()).await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    // Held requests must not time out (and be retried) while the backlog is posted.
    config.timeout_secs = 60.0;
    let daemon = Daemon::start(&config.toml()).await;
    for n in 0..CALLS {
        call(&daemon, &room(1000 + n), false).await;
    }
    for _ in 0..4 {
        receiver.next(DAEMON_REACTION).await;
    }
    for gate in &gates {
        gate.notify_one();
    }
    poll::eventually(
        DAEMON_REACTION,
        "every call_started to arrive",
        async || receiver.count() >= CALLS as usize,
    )
    .await;
    let deliveries = poll::wait_for(DAEMON_REACTION, "the outbox to drain", async || {
        let (status, body) = api_get(&daemon, "/api/deliveries?limit=10000").await;
        assert_eq!(status, 200, "{body}");
        let all = body["deliveries"].as_array()?.clone();
        all.iter()
            .all(|d| d["status"] == "delivered")
            .then_some(all)
    })
    .await;
    assert_eq!(deliveries.len(), CALLS as usize);
    let resent: Vec<&serde_json::Value> =
        deliveries.iter().filter(|d| d["attempts"] != 1).collect();
    assert!(resent.is_empty(), "sent more than once: {resent:?}");
    // Every outcome is recorded: nothing more can be on its way.
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").expect("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), CALLS as usize, "requests beyond one per event");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), CALLS as usize, "an event was sent twice");
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let mut receiver = Receiver::start().await;
    let elsewhere = receiver.url("/elsewhere");
    let mut redirecting =
        Receiver::start_scripted(vec![Reply::status(302).header("Location", &elsewhere)]).await;
    let daemon = Daemon::start(&TestConfig::new(&redirecting.url("/hooks/voicekit")).toml()).await;
    call(&daemon, &room(6), false).await;
    let first = redirecting.next(DAEMON_REACTION).await;
    // Retried at the configured endpoint, never sent to the Location.
    let retry = redirecting.next(DAEMON_REACTION).await;
    assert_eq!(retry.path, "/hooks/voicekit");
    assert_eq!(retry.header("webhook-id"), first.header("webhook-id"));
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

/// Holds the store's commits of delivery outcomes, from a connection of the test's own:
/// on SQLite the file's write lock (the daemon's ingest writer commits outcomes there),
/// on PostgreSQL a lock on `delivery_attempts` that the outcome's insert waits for.
enum OutcomeLock {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

impl OutcomeLock {
    async fn take(daemon: &Daemon, store_url: &str) -> OutcomeLock {
        if store_url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(store_url)
                .await
                .expect("connect to the daemon's database");
            sqlx::raw_sql("BEGIN; LOCK TABLE delivery_attempts IN SHARE MODE")
                .execute(&mut conn)
                .await
                .expect("lock delivery_attempts");
            OutcomeLock::Postgres(conn)
        } else {
            let file = daemon.dir().join("voicekit-bridge.db");
            let conn = rusqlite::Connection::open(file).expect("open the daemon's SQLite file");
            conn.execute_batch("BEGIN IMMEDIATE")
                .expect("take the SQLite write lock");
            OutcomeLock::Sqlite(conn)
        }
    }

    async fn release(self) {
        match self {
            OutcomeLock::Sqlite(conn) => {
                conn.execute_batch("ROLLBACK").expect("unlock");
                conn.close().map_err(|(_, e)| e).expect("close");
            }
            OutcomeLock::Postgres(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
                conn.close().await.expect("close");
            }
        }
    }
}

#[tokio::test]
async fn while_outcomes_commit_the_next_requests_go_out_up_to_the_stores_bound() {
    const CALLS: usize = 6;
    let gate = Arc::new(Notify::new());
    let mut receiver = Receiver::start_scripted(vec![Reply::status(200).until(&gate)]).await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.delivery_extra = "concurrency = 1\nper_endpoint_concurrency = 1".into();
    // One request slot. On PostgreSQL a slot's deliveries awaiting their outcome's
    // commit are bounded at four more (the worker's `RECORDING_PER_SLOT`): five in all.
    // On a SQLite file the ingest writer commits outcomes, and a delivery keeps its
    // slot until its outcome is durable: one.
    let bound = if config.store_url.starts_with("postgres") {
        5
    } else {
        1
    };
    let daemon = Daemon::start(&config.toml()).await;
    for n in 0..CALLS {
        call(&daemon, &room(40 + n as u32), false).await;
    }
    // Every call_started is queued; the first is held at the endpoint, the others wait
    // for the one slot.
    let first = receiver.next(DAEMON_REACTION).await;
    let lock = OutcomeLock::take(&daemon, &config.store_url).await;
    gate.notify_one();

    // The first outcome cannot commit. On PostgreSQL its request is over, so the slot
    // goes to the next event, and so on up to the bound. (Under SQLite's 10 s wait for
    // its write lock, after which the outcome would fail and be sent again.)
    let mut calls = vec![first.json()["data"]["call_id"].clone()];
    for _ in 1..bound {
        let next = receiver.next(Duration::from_secs(5)).await;
        assert_eq!(next.json()["event"], "call_started");
        calls.push(next.json()["data"]["call_id"].clone());
    }
    receiver.expect_nothing(Duration::from_millis(500)).await;
    let (_, delivered) = api_get(&daemon, "/api/deliveries?status=delivered").await;
    assert_eq!(
        delivered["deliveries"],
        serde_json::json!([]),
        "no outcome committed yet"
    );

    lock.release().await;
    for _ in bound..CALLS {
        calls.push(receiver.next(DAEMON_REACTION).await.json()["data"]["call_id"].clone());
    }
    calls.sort_by_key(|c| c.as_i64());
    calls.dedup();
    assert_eq!(calls.len(), CALLS, "each call's event once: {calls:?}");
    poll::eventually(DAEMON_REACTION, "every outcome recorded", async || {
        let (status, body) = api_get(&daemon, "/api/deliveries?status=delivered").await;
        assert_eq!(status, 200, "{body}");
        body["deliveries"].as_array().map_or(0, Vec::len) == CALLS
    })
    .await;
    assert_eq!(receiver.count(), CALLS, "nothing sent twice");
}
