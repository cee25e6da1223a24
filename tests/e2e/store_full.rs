//! The disk under the SQLite store fills while a delivery is in flight. Webhooks that
//! cannot be committed get 503 and `/readyz` says not ready within seconds, and stays
//! so while the disk is full; the
//! delivery whose outcome cannot be recorded is not sent again in a loop; a metric
//! counts the failed writes. When space comes back, without a restart, LiveKit's
//! retries are accepted, readiness returns, and everything accepted is delivered.
//!
//! The store lives on a small tmpfs the test mounts (the tests run as root) and
//! unmounts when it ends, however it ends. It is a SQLite file in both passes of the
//! suite: a PostgreSQL server's disk is not the bridge's to fill.

use crate::support;

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use support::{
    Daemon, Receiver, Reply, TestConfig,
    config::{API_KEY, API_SECRET},
    lk::{self, Participant, Room},
    operator::{api_get, api_url},
    poll,
};
use tokio::sync::Notify;

use support::poll::DAEMON_REACTION as WAIT;
/// How many times the customer may see one webhook-id: sent, and at most a couple of
/// resends around the failure, never one per dispatch round.
const MOST_COPIES: usize = 3;

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed (the tests run as root)"
        );
        Tmpfs { path, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system under `path` with the file `fill`, to its last byte.
fn fill(path: &Path) -> PathBuf {
    let file = path.join("fill");
    let mut out = std::fs::File::create(&file).unwrap();
    let block = vec![0u8; 64 * 1024];
    while out.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while out.write_all(&small).is_ok() {}
    while out.write_all(&small[..1]).is_ok() {}
    let _ = out.sync_all();
    file
}

fn joined(n: usize) -> String {
    let room = Room::new(
        &format!("RM_full{n}"),
        &format!("VOICEKIT_workflow_full{n}_1"),
        1_761_234_567_000,
    );
    let agent = Participant::agent("PA_agent", "agent", room.creation_time_ms + 1000);
    lk::participant_joined(&room, &agent, 1_761_234_568)
}

async fn status(daemon: &Daemon, path: &str) -> u16 {
    daemon.get(path).await.0
}

fn copies(receiver: &Receiver) -> HashMap<String, usize> {
    let mut copies = HashMap::new();
    for r in receiver.received() {
        if let Some(id) = r.header("webhook-id") {
            *copies.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    copies
}

#[tokio::test]
async fn a_full_disk_refuses_webhooks_turns_readyz_and_delivers_everything_once_space_returns() {
    let tmpfs = Tmpfs::mount("4m");
    let gate = Arc::new(Notify::new());
    let mut receiver = Receiver::start_scripted(vec![Reply::status(200).until(&gate)]).await;
    let mut config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    config.store_url = format!("sqlite://{}", tmpfs.path.join("bridge.db").display());
    config.timeout_secs = 30.0;
    config.delivery_extra = "breaker_failures = 1000".into();
    let daemon = Daemon::start(&config.toml()).await;

    // A delivery in flight: its answer waits for the gate.
    let (code, text) = daemon.post_signed(&joined(0), API_KEY, API_SECRET).await;
    assert_eq!(code, 200, "{text}");
    let in_flight = receiver.next(WAIT).await;
    let in_flight_id = in_flight.header("webhook-id").unwrap().to_owned();

    // The disk fills. Webhooks go on until one cannot be committed.
    let filler = fill(&tmpfs.path);
    let mut accepted = vec![0];
    let mut refused = None;
    for n in 1..3000 {
        let (code, text) = daemon.post_signed(&joined(n), API_KEY, API_SECRET).await;
        match code {
            200 => accepted.push(n),
            503 => {
                refused = Some(n);
                break;
            }
            other => panic!("webhook {n} answered {other}: {text}"),
        }
    }
    let refused = refused.expect("a webhook refused with 503 once the disk is full");
    let failed_at = Instant::now();
    poll::eventually(
        Duration::from_secs(5),
        "/readyz to say not ready",
        async || status(&daemon, "/readyz").await == 503,
    )
    .await;
    assert!(failed_at.elapsed() < Duration::from_secs(5));
    let (code, detail) = api_get(&daemon, "/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(detail["reason"], "store_write_failed", "{detail}");
    let metrics = daemon
        .http()
        .get(api_url(&daemon, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("voicekit_bridge_store_write_failures_total "))
        .unwrap_or_else(|| panic!("no store failure counter:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(failures >= 1.0, "{failures}");

    // The in-flight delivery is answered, but its outcome cannot be recorded: it is
    // not sent again and again meanwhile.
    gate.notify_one();
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let most = copies(&receiver).into_values().max().unwrap_or(0);
        assert!(
            most <= MOST_COPIES,
            "a webhook-id sent {most} times while the disk is full"
        );
        assert_eq!(
            status(&daemon, "/readyz").await,
            503,
            "ready again while the disk is still full"
        );
    }

    // Space comes back: LiveKit's retry is accepted, readiness returns.
    std::fs::remove_file(&filler).unwrap();
    poll::eventually(WAIT, "LiveKit's retry accepted", async || {
        daemon
            .post_signed(&joined(refused), API_KEY, API_SECRET)
            .await
            .0
            == 200
    })
    .await;
    accepted.push(refused);
    poll::eventually(Duration::from_secs(5), "/readyz ready again", async || {
        status(&daemon, "/readyz").await == 200
    })
    .await;

    // Everything accepted is delivered, each webhook-id a handful of times at most.
    let delivered = poll::wait_for(
        WAIT,
        "every accepted call's call_started delivered",
        async || {
            let (code, body) = api_get(&daemon, "/api/deliveries?limit=10000").await;
            assert_eq!(code, 200, "{body}");
            let all = body["deliveries"].as_array()?.clone();
            (all.len() == accepted.len() && all.iter().all(|d| d["status"] == "delivered"))
                .then_some(all)
        },
    )
    .await;
    let copies = copies(&receiver);
    for d in &delivered {
        let id = d["webhook_id"].as_str().unwrap();
        let n = copies.get(id).copied().unwrap_or(0);
        assert!((1..=MOST_COPIES).contains(&n), "{id} sent {n} times");
    }
    assert!(copies.contains_key(&in_flight_id));
    drop(daemon);
    drop(tmpfs);
}
