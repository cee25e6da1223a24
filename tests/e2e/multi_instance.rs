//! Two bridge processes on one PostgreSQL store. Either takes any LiveKit webhook (a
//! call's events and LiveKit's retries land on both), each VoiceKit event is created
//! once however many instances see its webhook, and deliveries are claimed with a lease:
//! while both run, no event is sent twice; when one is SIGKILLed mid-delivery, the other
//! sends what it had claimed once the lease runs out, so every event still arrives, under
//! the one `webhook-id` it was created with.
//!
//! PostgreSQL only (SQLite is one process's store), so it runs in the suite's PostgreSQL
//! pass (`VOICEKIT_TEST_STORE=postgres`, as `scripts/test.sh` runs it) and says it is
//! skipped otherwise.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use support::config::{API_KEY, API_SECRET, postgres_requested, postgres_test_url};
use support::lk;
use support::operator::api_get;
use support::poll::BURST_SETTLED;
use support::timeline::Timeline;
use support::{Daemon, Received, Receiver, Reply, TestConfig, poll, signer};

/// Calls in the burst: the first half posted while both instances run, the second half
/// while the first instance is killed.
const CALLS: usize = 40;
const PHASE_ONE: usize = CALLS / 2;
/// Each call: `call_started` (the agent joins) and `call_ended` (the room finishes).
const EVENTS: usize = 2 * CALLS;
/// Calls being posted at once.
const CONCURRENCY: usize = 4;
/// How long the customer endpoint takes to answer each delivery, so the kill finds
/// deliveries in flight.
const SLOW_REPLY: Duration = Duration::from_millis(400);
/// The lease on a claimed delivery: longer than any attempt (`timeout_secs`), short
/// enough that the survivor takes over the dead instance's claims quickly.
const LEASE_SECS: f64 = 2.0;

/// Each VoiceKit timestamp names exactly one call and event.
const TIMELINE: Timeline = Timeline::new(1_761_400_000_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Started,
    Ended,
}

/// Which call and event a delivered body is, by its timestamp; `None` for a body no
/// posted webhook could have caused.
fn identify(body: &Value) -> Option<(usize, Kind)> {
    let at = OffsetDateTime::parse(body["timestamp"].as_str()?, &Rfc3339).ok()?;
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    let event = body["event"].as_str()?;
    (0..CALLS).find_map(|call| match event {
        "call_started" if at_ms == TIMELINE.agent_joined_ms(call) => Some((call, Kind::Started)),
        "call_ended" if at_ms == TIMELINE.finished_s(call) * 1000 => Some((call, Kind::Ended)),
        _ => None,
    })
}

/// What the endpoint got, grouped by event; panics on a body no posted webhook explains,
/// on copies of one event with different webhook-ids or bytes, on two events sharing a
/// webhook-id, and on calls sharing a call_id.
fn group(received: &[Received]) -> BTreeMap<(usize, Kind), Vec<Received>> {
    support::receiver::group_by_event(received, identify)
}

fn webhook_id(r: &Received) -> String {
    r.header("webhook-id")
        .unwrap_or_else(|| panic!("no webhook-id on {}", r.text()))
        .to_owned()
}

/// What became of one webhook post.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    /// The connection was refused: the instance never saw it.
    Refused,
    /// Sent, but no answer came (the instance died meanwhile).
    Unanswered,
    /// The status and the body's `status` (`accepted`, `duplicate`, ...).
    Answered(u16, String),
}

/// The two instances as LiveKit (behind a load balancer) reaches them.
struct Cluster {
    http: reqwest::Client,
    urls: [String; 2],
    /// Set just before instance A is killed: the load balancer sends nothing more there.
    a_dead: AtomicBool,
    /// Webhooks answered 200 since phase two began.
    answered_in_phase_two: AtomicUsize,
    phase_two: AtomicBool,
    /// Signalled once enough phase-two webhooks were answered: time to kill A.
    kill_now: Notify,
    /// Every answer: (call, step, instance, status), for the checks at the end.
    log: Mutex<Vec<(usize, &'static str, usize, Sent)>>,
}

const A: usize = 0;
const B: usize = 1;
const KILL_AFTER: usize = 6;

impl Cluster {
    /// Where a post meant for `instance` goes: not to A once A is dead.
    fn route(&self, instance: usize) -> usize {
        if instance == A && self.a_dead.load(Ordering::SeqCst) {
            B
        } else {
            instance
        }
    }

    async fn post_once(&self, instance: usize, body: &str) -> Sent {
        let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());
        let sent = self
            .http
            .post(&self.urls[instance])
            .header("content-type", "application/webhook+json")
            .header("authorization", token)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let answer = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                Sent::Answered(status, answer)
            }
            Err(e) if e.is_connect() => Sent::Refused,
            Err(_) => Sent::Unanswered,
        }
    }

    /// Posts `body` to `instance` (or B once A is dead) as LiveKit does, retrying at B a
    /// post that A could not answer because it died. Returns the final answer and
    /// whether it is a retry's (so `duplicate` is a fair answer: A may have committed).
    async fn post(
        &self,
        call: usize,
        step: &'static str,
        instance: usize,
        body: &str,
    ) -> (Sent, bool) {
        let mut target = self.route(instance);
        let mut retried = false;
        loop {
            let sent = self.post_once(target, body).await;
            self.log
                .lock()
                .unwrap()
                .push((call, step, target, sent.clone()));
            match &sent {
                Sent::Answered(200, _) => {
                    if self.phase_two.load(Ordering::SeqCst)
                        && self.answered_in_phase_two.fetch_add(1, Ordering::SeqCst) + 1
                            == KILL_AFTER
                    {
                        self.kill_now.notify_one();
                    }
                    return (sent, retried);
                }
                // A post A could not answer because it is dying or dead: LiveKit retries,
                // and the load balancer sends the retry to B.
                _ if target == A && self.a_dead.load(Ordering::SeqCst) => {
                    target = B;
                    retried = true;
                }
                other => panic!(
                    "call {call} {step} to instance {}: {other:?}",
                    ["A", "B"][target]
                ),
            }
        }
    }

    /// `body` posted to `instance` and, at the same moment, the very same bytes (same
    /// event id: a LiveKit retry) to the other instance. Returns both answers.
    async fn post_twice(
        &self,
        call: usize,
        step: &'static str,
        instance: usize,
        body: &str,
    ) -> ((Sent, bool), (Sent, bool)) {
        tokio::join!(
            self.post(call, step, instance, body),
            self.post(call, step, 1 - instance, body)
        )
    }

    /// Call `i`: room_started, the agent joining, room_finished, alternating between the
    /// instances per call and within the call; some webhooks also go to the other
    /// instance at once, as a retry would. Returns the answers to the duplicated step.
    async fn call(&self, i: usize) -> Option<Answers> {
        let room = TIMELINE.room("multi", i);
        let agent = TIMELINE.agent(i);
        let started = lk::room_started(&room, TIMELINE.created_ms(i) / 1000);
        let joined = lk::participant_joined(&room, &agent, TIMELINE.agent_joined_ms(i) / 1000);
        let finished = lk::room_finished(&room, TIMELINE.finished_s(i));
        let (first, second) = (i % 2, 1 - i % 2);
        let mut duplicated = None;
        let (sent, retried) = self.post(i, "room_started", first, &started).await;
        assert_step(i, "room_started", &sent, retried);
        if i % 4 == 1 {
            duplicated = Some(
                self.post_twice(i, "participant_joined", second, &joined)
                    .await,
            );
        } else {
            let (sent, retried) = self.post(i, "participant_joined", second, &joined).await;
            assert_step(i, "participant_joined", &sent, retried);
        }
        if i % 4 == 3 {
            duplicated = Some(self.post_twice(i, "room_finished", first, &finished).await);
        } else {
            let (sent, retried) = self.post(i, "room_finished", first, &finished).await;
            assert_step(i, "room_finished", &sent, retried);
        }
        duplicated
    }

    /// Posts calls `range`, `CONCURRENCY` at a time; returns each duplicated step's answers.
    async fn burst(self: &Arc<Self>, range: std::ops::Range<usize>) -> Vec<(usize, Answers)> {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let mut calls = JoinSet::new();
        for i in range {
            let (cluster, permits) = (Arc::clone(self), Arc::clone(&permits));
            calls.spawn(async move {
                let _permit = permits.acquire().await.expect("semaphore");
                cluster.call(i).await.map(|answers| (i, answers))
            });
        }
        let mut duplicated = Vec::new();
        while let Some(done) = calls.join_next().await {
            duplicated.extend(done.expect("a call's posts"));
        }
        duplicated
    }
}

/// The answers to one webhook posted to both instances at once (see `post`).
type Answers = ((Sent, bool), (Sent, bool));

/// A webhook answered 200 and, unless it may have been seen before (`retried`),
/// accepted.
fn assert_step(call: usize, step: &str, sent: &Sent, retried: bool) {
    match sent {
        Sent::Answered(200, status) if status == "accepted" => {}
        Sent::Answered(200, status) if retried && status == "duplicate" => {}
        other => panic!("call {call} {step}: {other:?}"),
    }
}

/// Waits until every delivery in the shared store is delivered (none pending, none
/// failed), as instance `daemon` sees it; returns them.
async fn wait_until_drained(daemon: &Daemon) -> Vec<Value> {
    poll::wait_for(BURST_SETTLED, "the shared outbox to drain", async || {
        let (status, body) = api_get(daemon, "/api/deliveries?limit=10000").await;
        assert_eq!(status, 200, "{body}");
        let all = body["deliveries"].as_array()?.clone();
        let failed: Vec<&Value> = all.iter().filter(|d| d["status"] == "failed").collect();
        assert!(failed.is_empty(), "failed deliveries: {failed:?}");
        all.iter()
            .all(|d| d["status"] == "delivered")
            .then_some(all)
    })
    .await
}

/// Says on the terminal, past the test harness's capture, that `test` did not run.
fn skipped(test: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "multi_instance::{test}: skipped, it needs PostgreSQL: set VOICEKIT_TEST_STORE=postgres \
         (scripts/test.sh runs the suite again with it)"
    );
}

/// Best effort: drops the test's database once every instance is gone.
async fn drop_database(url: &str) {
    use sqlx::Connection;
    let Some((server, name)) = url.rsplit_once('/') else {
        return;
    };
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_store_and_the_survivor_delivers_a_killed_ones_claims() {
    if !postgres_requested() {
        return skipped(
            "two_instances_share_the_store_and_the_survivor_delivers_a_killed_ones_claims",
        );
    }
    let mut receiver =
        Receiver::start_scripted(vec![Reply::status(200).delay(SLOW_REPLY); 1000]).await;
    let store_url = postgres_test_url();
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.store_url = store_url.clone();
    // The lease must outlast any attempt: 1 s timeouts, a 2 s lease.
    config.timeout_secs = 1.0;
    config.delivery_extra = format!("hook_timeout_secs = 1.0\nclaim_lease_secs = {LEASE_SECS:.1}");
    let toml = config.toml();
    // A creates the database and migrates it; B then joins the same store.
    let mut a = Daemon::start(&toml).await;
    let b = Daemon::start(&toml).await;

    let cluster = Arc::new(Cluster {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        urls: [a.webhook_url(), b.webhook_url()],
        a_dead: AtomicBool::new(false),
        answered_in_phase_two: AtomicUsize::new(0),
        phase_two: AtomicBool::new(false),
        kill_now: Notify::new(),
        log: Mutex::new(Vec::new()),
    });

    // Phase one: both instances up, the first half of the burst spread across both.
    // A webhook and its retry hitting both instances at once: one accepts, the other
    // answers duplicate.
    for (call, (one, other)) in cluster.burst(0..PHASE_ONE).await {
        let mut statuses = [one, other].map(|sent| match sent {
            (Sent::Answered(200, status), false) => status,
            other => panic!("call {call}: duplicate post answered {other:?}"),
        });
        statuses.sort();
        assert_eq!(
            statuses,
            ["accepted".to_owned(), "duplicate".to_owned()],
            "call {call}: the same webhook at both instances at once"
        );
    }

    // Deliveries under way (the endpoint is slow), not all done.
    poll::eventually(BURST_SETTLED, "deliveries in flight", async || {
        receiver.count() >= 6
    })
    .await;

    // Phase two: the second half, with A SIGKILLed a few webhooks in.
    cluster.phase_two.store(true, Ordering::SeqCst);
    let poster = {
        let cluster = Arc::clone(&cluster);
        tokio::spawn(async move { cluster.burst(PHASE_ONE..CALLS).await })
    };
    tokio::time::timeout(BURST_SETTLED, cluster.kill_now.notified())
        .await
        .expect("phase two under way");
    cluster.a_dead.store(true, Ordering::SeqCst);
    let before_kill = receiver.received();
    a.kill().await;

    let delivered_before = group(&before_kill).len();
    assert!(
        delivered_before < 2 * PHASE_ONE,
        "all of phase one's events were delivered before the kill: not mid-delivery"
    );
    // While both ran, each event was sent by one instance at a time: no copies.
    let mut ids_before: HashMap<String, usize> = HashMap::new();
    for r in &before_kill {
        *ids_before.entry(webhook_id(r)).or_default() += 1;
    }
    let sent_twice: Vec<_> = ids_before.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        sent_twice.is_empty(),
        "sent twice while both instances ran: {sent_twice:?}\n--- A ---\n{}\n--- B ---\n{}",
        a.stderr_text(),
        b.stderr_text()
    );

    // Phase two's webhooks all end up answered (at B when A died on them).
    let duplicated = tokio::time::timeout(BURST_SETTLED, poster)
        .await
        .expect("phase two's posts end")
        .expect("phase two poster");
    // Posted twice, so `duplicate` is a fair answer to either post.
    for (call, ((one, _), (other, _))) in duplicated {
        assert_step(call, "duplicated step", &one, true);
        assert_step(call, "duplicated step", &other, true);
    }
    let log = cluster.log.lock().unwrap().clone();
    let failed_at_a = log
        .iter()
        .filter(|(_, _, at, sent)| *at == A && !matches!(sent, Sent::Answered(200, _)))
        .count();
    let after_kill_at_a = log
        .iter()
        .filter(|(call, _, at, _)| *at == A && *call >= PHASE_ONE)
        .count();
    eprintln!(
        "phase two: {after_kill_at_a} posts reached A, {failed_at_a} of them failed and were \
         retried at B; {delivered_before} of {EVENTS} events delivered before the kill"
    );

    // Every event of every call arrives: B sends what A had claimed once the lease ends.
    let every: BTreeSet<(usize, Kind)> = (0..CALLS)
        .flat_map(|i| [(i, Kind::Started), (i, Kind::Ended)])
        .collect();
    let arrived = poll::within(BURST_SETTLED, async || {
        let got = group(&receiver.received());
        every.iter().all(|e| got.contains_key(e)).then_some(())
    })
    .await;
    if arrived.is_none() {
        let got = group(&receiver.received());
        let missing: Vec<_> = every.iter().filter(|e| !got.contains_key(e)).collect();
        panic!(
            "never delivered: {missing:?}\n--- B's stderr ---\n{}",
            b.stderr_text()
        );
    }
    let outbox = wait_until_drained(&b).await;

    let received = receiver.received();
    let got = group(&received);
    assert_eq!(
        got.len(),
        EVENTS,
        "events at the endpoint: {:?}",
        got.keys()
    );
    // Nothing created twice: exactly one webhook-id per (call, event).
    let ids: BTreeSet<String> = received.iter().map(webhook_id).collect();
    assert_eq!(ids.len(), EVENTS, "distinct webhook-ids at the endpoint");
    // The store holds exactly those events, one delivery each, all delivered.
    assert_eq!(outbox.len(), EVENTS, "deliveries in the store: {outbox:?}");
    let stored: BTreeSet<String> = outbox
        .iter()
        .map(|d| d["webhook_id"].as_str().expect("webhook_id").to_owned())
        .collect();
    assert_eq!(
        stored, ids,
        "the store's webhook-ids are the ones delivered"
    );
    let copies = received.len() - EVENTS;
    eprintln!("{copies} event(s) delivered again after the kill (at least once, same id)");
    // What A had in flight when it died (the endpoint got it, A never recorded it) was
    // sent again by B once A's lease ran out.
    assert!(
        copies > 0,
        "no event was sent again after A's death: did the kill find nothing in flight?"
    );

    // Nothing more comes: everything is delivered and settled.
    for _ in 0..receiver.count() {
        receiver.next(BURST_SETTLED).await;
    }
    receiver.expect_nothing(Duration::from_millis(300)).await;

    drop(b);
    drop(a);
    drop_database(&store_url).await;
}
