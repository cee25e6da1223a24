//! A bridge restarted after a crash sends what it had claimed at once: on PostgreSQL
//! it comes back under the same instance id (`[store] instance_id`, by default the
//! host and the config file's path), so the claims its first life held on in-flight
//! deliveries are its own again, not another bridge's to wait out (60 s here). Other
//! bridges still take a dead one's claims after the lease (`multi_instance.rs`).

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Daemon, Receiver, Reply, TestConfig,
    config::{API_KEY, API_SECRET},
    lk::{self, Participant, Room},
    operator::api_get,
    poll,
};

const CALLS: usize = 3;
/// The claim lease: what a restart must not wait for.
const LEASE_SECS: f64 = 60.0;
/// Well before the lease: how soon the restarted bridge must have delivered everything.
const RESUMED_WITHIN: Duration = Duration::from_secs(15);

fn instance_line(daemon: &Daemon) -> String {
    daemon
        .stderr_text()
        .lines()
        .find(|l| l.contains("delivery claims are taken under this instance id"))
        .and_then(|l| l.split("instance_id=").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no instance id logged:\n{}", daemon.stderr_text()))
}

#[tokio::test]
async fn a_bridge_restarted_after_sigkill_sends_its_own_claimed_deliveries_well_before_the_lease() {
    // The first answers take 4 s (under the 5 s timeout): the kill finds them in flight.
    let held = Reply::status(200).delay(Duration::from_secs(4));
    let receiver = Receiver::start_scripted(vec![held; CALLS]).await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.delivery_extra = format!("claim_lease_secs = {LEASE_SECS:.1}");
    let toml = config.toml();
    let dir = tempfile::tempdir().unwrap();
    let mut first = Daemon::start_in(dir.path(), &toml).await;
    for i in 0..CALLS {
        let room = Room::new(
            &format!("RM_restart{i}"),
            &format!("VOICEKIT_workflow_restart{i}_1"),
            1_761_234_567_000,
        );
        let agent = Participant::agent("PA_agent", "agent", room.creation_time_ms + 1000);
        let body = lk::participant_joined(&room, &agent, 1_761_234_568);
        let (status, text) = first.post_signed(&body, API_KEY, API_SECRET).await;
        assert_eq!(status, 200, "{text}");
    }
    poll::eventually(
        Duration::from_secs(20),
        "every delivery in flight",
        async || receiver.count() >= CALLS,
    )
    .await;
    let first_id = instance_line(&first);
    first.kill().await;
    let killed_at = Instant::now();

    let second = Daemon::start_in(dir.path(), &toml).await;
    assert_eq!(instance_line(&second), first_id, "the same instance id");
    let delivered: Vec<Value> =
        poll::wait_for(RESUMED_WITHIN, "every delivery delivered", async || {
            let (status, body) = api_get(&second, "/api/deliveries").await;
            assert_eq!(status, 200, "{body}");
            let all = body["deliveries"].as_array()?.clone();
            (all.len() == CALLS && all.iter().all(|d| d["status"] == "delivered")).then_some(all)
        })
        .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs_f64(LEASE_SECS / 2.0),
        "resumed after {:?}",
        killed_at.elapsed()
    );
    // Each was sent again after the kill (the first life never recorded an outcome).
    let got = receiver.received();
    for d in &delivered {
        let id = d["webhook_id"].as_str().unwrap();
        let copies = got
            .iter()
            .filter(|r| r.header("webhook-id") == Some(id))
            .count();
        assert_eq!(copies, 2, "{id}: sent before the kill and once after");
    }
}
