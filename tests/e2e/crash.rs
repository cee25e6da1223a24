//! Proves nothing is lost across a SIGKILL of the daemon, and nothing invented: killed
//! while LiveKit webhooks are being accepted, or while deliveries are in flight, then
//! restarted on the same store, every VoiceKit event whose webhook got a 200 reaches the
//! customer endpoint at least once, every event that arrives comes from a webhook that
//! was posted, and all copies of one event carry one `webhook-id` and the same bytes.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::{Notify, Semaphore};

use support::config::{API_KEY, API_SECRET};
use support::lk;
use support::operator::api_get;
use support::poll::BURST_SETTLED;
use support::timeline::Timeline;
use support::{Daemon, Received, Receiver, Reply, TestConfig, poll, signer};

/// Each VoiceKit timestamp below names exactly one call and event.
const TIMELINE: Timeline = Timeline::new(1_761_300_000_000);

/// Call `i`'s webhooks: the agent joins (call_started), the room finishes (call_ended).
fn call_webhooks(i: usize, tag: &str) -> [String; 2] {
    let room = TIMELINE.room(tag, i);
    [
        lk::participant_joined(
            &room,
            &TIMELINE.agent(i),
            TIMELINE.agent_joined_ms(i) / 1000,
        ),
        lk::room_finished(&room, TIMELINE.finished_s(i)),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Started,
    Ended,
}

/// Which of our calls, and which event, a delivered body is, by its timestamp; `None`
/// for a body no posted webhook could have caused. `by_agent`: call_started was timed
/// by the agent joining (else by the room's creation: no agent event was accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identified {
    call: usize,
    kind: Kind,
    by_agent: bool,
}

fn identify(body: &Value, calls: usize) -> Option<Identified> {
    let at = OffsetDateTime::parse(body["timestamp"].as_str()?, &Rfc3339).ok()?;
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    (0..calls).find_map(|call| {
        let (kind, by_agent) = match (body["event"].as_str()?, at_ms) {
            ("call_started", t) if t == TIMELINE.agent_joined_ms(call) => (Kind::Started, true),
            ("call_started", t) if t == TIMELINE.created_ms(call) => (Kind::Started, false),
            ("call_ended", t) if t == TIMELINE.finished_s(call) * 1000 => (Kind::Ended, false),
            _ => return None,
        };
        Some(Identified {
            call,
            kind,
            by_agent,
        })
    })
}

/// What the endpoint got, grouped by event; panics on a body no posted webhook explains,
/// on an event arriving under two webhook-ids or with different bytes, and on two events
/// sharing a webhook-id.
fn group(received: &[Received], calls: usize) -> BTreeMap<(usize, Kind), Vec<Received>> {
    support::receiver::group_by_event(received, |body| {
        identify(body, calls).map(|who| (who.call, who.kind))
    })
}

/// Waits until the daemon has no pending delivery; panics if one failed.
async fn wait_until_drained(daemon: &Daemon) -> Vec<Value> {
    poll::wait_for(BURST_SETTLED, "the outbox to drain", async || {
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

/// Panics if the endpoint gets another request soon (nothing left to send).
async fn expect_no_more(receiver: &mut Receiver) {
    // Everything so far is already queued for `next`; take it, then wait for more.
    for _ in 0..receiver.count() {
        receiver.next(BURST_SETTLED).await;
    }
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

/// What became of one webhook post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// The connection was refused: the daemon never saw it.
    Refused,
    /// Sent, but no answer came (the daemon died meanwhile).
    Unanswered,
    Answered(u16),
}

/// Posts `body` signed as LiveKit does.
async fn post(http: &reqwest::Client, url: &str, body: &str) -> Sent {
    let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());
    let sent = http
        .post(url)
        .header("content-type", "application/webhook+json")
        .header("authorization", token)
        .body(body.to_owned())
        .send()
        .await;
    match sent {
        Ok(response) => Sent::Answered(response.status().as_u16()),
        Err(e) if e.is_connect() => Sent::Refused,
        Err(_) => Sent::Unanswered,
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Posted {
    /// `None`: not (yet) posted.
    joined: Option<Sent>,
    finished: Option<Sent>,
}

fn accepted(sent: Option<Sent>) -> bool {
    sent == Some(Sent::Answered(200))
}

/// Whether the daemon may have seen it (and so may act on it).
fn reached(sent: Option<Sent>) -> bool {
    matches!(sent, Some(Sent::Unanswered | Sent::Answered(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_webhooks_are_accepted_loses_no_accepted_event_and_invents_none() {
    const CALLS: usize = 40;
    const WEBHOOKS: usize = 2 * CALLS;
    const CONCURRENCY: usize = 6;
    let mut receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let toml = TestConfig::new(&receiver.url("/hooks/voicekit")).toml();
    let mut first = Daemon::start_in(dir.path(), &toml).await;

    let posted = Arc::new(Mutex::new(vec![Posted::default(); CALLS]));
    let answered = Arc::new(AtomicUsize::new(0));
    let a_third = Arc::new(Notify::new());
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let poster = {
        let (posted, answered, a_third) = (posted.clone(), answered.clone(), a_third.clone());
        let url = first.webhook_url();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(CONCURRENCY));
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..CALLS {
                let (posted, answered, a_third) =
                    (posted.clone(), answered.clone(), a_third.clone());
                let (permits, http, url) = (permits.clone(), http.clone(), url.clone());
                calls.spawn(async move {
                    let _permit = permits.acquire().await.expect("semaphore");
                    let [joined, finished] = call_webhooks(i, "crashA");
                    for (n, body) in [joined, finished].iter().enumerate() {
                        let mark = |sent: Sent| {
                            let mut all = posted.lock().unwrap();
                            let p = &mut all[i];
                            let slot = if n == 0 {
                                &mut p.joined
                            } else {
                                &mut p.finished
                            };
                            *slot = Some(sent);
                        };
                        mark(Sent::Unanswered);
                        let sent = post(&http, &url, body).await;
                        mark(sent);
                        if sent == Sent::Answered(200)
                            && answered.fetch_add(1, Ordering::SeqCst) + 1 == WEBHOOKS / 3
                        {
                            a_third.notify_one();
                        }
                    }
                });
            }
            while calls.join_next().await.is_some() {}
        })
    };

    tokio::time::timeout(BURST_SETTLED, a_third.notified())
        .await
        .expect("a third of the webhooks answered");
    first.kill().await;
    tokio::time::timeout(BURST_SETTLED, poster)
        .await
        .expect("the posts end once the daemon is gone")
        .expect("poster task");
    let posted = posted.lock().unwrap().clone();
    let ok = answered.load(Ordering::SeqCst);
    assert!(ok >= WEBHOOKS / 3, "{ok} answered");
    assert!(
        ok < WEBHOOKS,
        "the kill came after all {WEBHOOKS} webhooks were answered: not in the middle"
    );

    // Second life on the same store; nothing is posted again.
    let second = Daemon::start_in(dir.path(), &toml).await;
    let mut must: BTreeSet<(usize, Kind)> = BTreeSet::new();
    for (i, p) in posted.iter().enumerate() {
        if accepted(p.joined) || accepted(p.finished) {
            must.insert((i, Kind::Started));
        }
        if accepted(p.finished) {
            must.insert((i, Kind::Ended));
        }
    }
    poll::eventually(
        BURST_SETTLED,
        "every accepted event at the endpoint",
        async || {
            let got = group(&receiver.received(), CALLS);
            must.iter().all(|e| got.contains_key(e))
        },
    )
    .await;
    // Once nothing is pending, everything the store holds has reached the endpoint.
    let outbox = wait_until_drained(&second).await;

    let received = receiver.received();
    let got = group(&received, CALLS);
    let missing: Vec<_> = must.iter().filter(|e| !got.contains_key(e)).collect();
    assert!(
        missing.is_empty(),
        "accepted but never delivered: {missing:?}"
    );
    // Nothing invented: each event comes from a webhook that was posted.
    for ((call, kind), copies) in &got {
        let p = posted[*call];
        let who = identify(&copies[0].json(), CALLS).unwrap();
        let explained = match (kind, who.by_agent) {
            (Kind::Started, true) => reached(p.joined),
            (Kind::Started, false) | (Kind::Ended, _) => reached(p.finished),
        };
        assert!(explained, "call {call} {kind:?} without its webhook: {p:?}");
    }
    // The store knows exactly the events that arrived, all delivered.
    let stored: BTreeSet<String> = outbox
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap().to_owned())
        .collect();
    let delivered: BTreeSet<String> = got
        .values()
        .map(|copies| copies[0].header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(stored, delivered);
    expect_no_more(&mut receiver).await;
}

#[tokio::test]
async fn sigkill_while_deliveries_are_in_flight_loses_none_and_duplicates_share_id_and_bytes() {
    const CALLS: usize = 5;
    const EVENTS: usize = 2 * CALLS;
    // The first answers are slow, so the kill finds deliveries in flight; the rest fast.
    let slow = Reply::status(200).delay(Duration::from_millis(300));
    let mut receiver = Receiver::start_scripted(vec![slow; 8]).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = TestConfig::new(&receiver.url("/hooks/voicekit")).toml();
    let mut first = Daemon::start_in(dir.path(), &toml).await;
    for i in 0..CALLS {
        for body in call_webhooks(i, "crashB") {
            let (status, text) = first.post_signed(&body, API_KEY, API_SECRET).await;
            assert_eq!(status, 200, "webhook answered {status}: {text}");
        }
    }
    poll::eventually(BURST_SETTLED, "deliveries in flight", async || {
        receiver.count() >= 2
    })
    .await;
    first.kill().await;

    // Second life on the same store, the same endpoint (answering fast by now).
    let second = Daemon::start_in(dir.path(), &toml).await;
    let outbox = wait_until_drained(&second).await;
    assert_eq!(outbox.len(), EVENTS, "{outbox:?}");
    poll::eventually(BURST_SETTLED, "every event at the endpoint", async || {
        group(&receiver.received(), CALLS).len() == EVENTS
    })
    .await;

    let got = group(&receiver.received(), CALLS);
    for i in 0..CALLS {
        for kind in [Kind::Started, Kind::Ended] {
            assert!(
                got.contains_key(&(i, kind)),
                "call {i} {kind:?} never arrived"
            );
        }
        let started = identify(&got[&(i, Kind::Started)][0].json(), CALLS).unwrap();
        assert!(started.by_agent, "call {i} started when its agent joined");
    }
    let duplicated = got.values().filter(|copies| copies.len() > 1).count();
    assert!(
        duplicated > 0,
        "no event was in flight at the kill and sent again after it"
    );
    // Each delivery's last attempt got a 2xx from the endpoint.
    for d in &outbox {
        let call_id = d["call_id"].as_i64().unwrap();
        let (status, detail) = api_get(&second, &format!("/api/calls/{call_id}")).await;
        assert_eq!(status, 200, "{detail}");
        let last = detail["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|a| a["outbox_id"] == d["id"])
            .unwrap_or_else(|| panic!("no attempt recorded for {d}"))
            .clone();
        let code = last["status_code"].as_i64().unwrap_or(0);
        assert!((200..300).contains(&code), "{d}: last attempt {last}");
    }
    expect_no_more(&mut receiver).await;
}
