//! Proves the daemon behaves as a systemd service should, by running the built binary:
//! it speaks the notify protocol (READY=1 once serving, WATCHDOG=1 pings, STOPPING=1 on
//! SIGTERM) to a real unix datagram socket standing in for systemd; SIGTERM finishes an
//! in-flight request and an in-flight delivery and exits 0; SIGHUP swaps in the
//! workflows of a rewritten config file without dropping a request and keeps the old
//! ones when the file is bad, and warns when a reload leaves pending deliveries without
//! their workflow; `api_secret_file` may name `${CREDENTIALS_DIRECTORY}`
//! (where systemd puts `LoadCredential=` files); and `[log] format = "json"` writes one
//! JSON object per line with no secret in it.

use crate::support;

use std::time::Duration;

use support::config::{API_KEY, API_SECRET, WORKFLOW_ID};
use support::lk;
use support::poll::DAEMON_REACTION;
use support::{Daemon, Receiver, Reply, TestConfig, poll, signer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixDatagram;

/// How long the daemon may take to exit after SIGTERM (the unit's TimeoutStopSec).
const STOP: Duration = Duration::from_secs(30);

async fn post_ok(daemon: &Daemon, body: &str) {
    let (status, text) = daemon.post_signed(body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "webhook answered {status}: {text}");
}

/// Sends `signal` (e.g. `HUP`) to the daemon with kill(1).
fn send_signal(daemon: &Daemon, signal: &str) {
    let pid = daemon.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill(1)");
    assert!(sent.success(), "kill -{signal} {pid} failed");
}

/// How often `needle` occurs on the daemon's stderr so far.
fn log_count(daemon: &Daemon, needle: &str) -> usize {
    daemon.stderr_text().matches(needle).count()
}

/// Sends SIGHUP and waits until the daemon logged one more line containing `outcome`.
async fn reload(daemon: &Daemon, outcome: &str) {
    let before = log_count(daemon, outcome);
    send_signal(daemon, "HUP");
    let done = poll::within(DAEMON_REACTION, async || {
        (log_count(daemon, outcome) > before).then_some(())
    });
    if done.await.is_none() {
        panic!(
            "no new {outcome:?} log line within {DAEMON_REACTION:?} of SIGHUP\n--- stderr ---\n{}",
            daemon.stderr_text()
        );
    }
}

/// Reads notify datagrams until one has the line `wanted`; returns every line read,
/// in order, up to and including that datagram.
async fn read_until(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + DAEMON_REACTION;
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(received) => received.expect("read the notify socket"),
            Err(_) => {
                panic!("no {wanted:?} on NOTIFY_SOCKET within {DAEMON_REACTION:?}; got {seen:?}")
            }
        };
        let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = datagram.lines().any(|l| l == wanted);
        seen.extend(datagram.lines().map(str::to_owned));
        if found {
            return;
        }
    }
}

#[tokio::test]
async fn notify_socket_gets_ready_then_watchdog_pings_then_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::launch(&TestConfig::new(&receiver.url("/hook")).toml())
        .env("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))
        .env("WATCHDOG_USEC", "200000")
        .start()
        .await;

    let mut seen = Vec::new();
    read_until(&socket, "READY=1", &mut seen).await;
    assert_eq!(
        seen[0], "READY=1",
        "READY=1 is the first thing sent: {seen:?}"
    );
    // READY=1 means serving: the store is open and migrated, the listener bound.
    let (status, body) = daemon.get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    // 200 ms watchdog: a ping every 100 ms, each after the store answered.
    for _ in 0..3 {
        read_until(&socket, "WATCHDOG=1", &mut seen).await;
    }

    let status = daemon.terminate(STOP).await;
    read_until(&socket, "STOPPING=1", &mut seen).await;
    assert!(
        status.success(),
        "exit status {status}\n--- stderr ---\n{}",
        daemon.stderr_text()
    );
}

#[tokio::test]
async fn sigterm_finishes_an_in_flight_request_and_exits_zero() {
    let receiver = Receiver::start().await;
    let mut daemon = Daemon::start(&TestConfig::new(&receiver.url("/hook")).toml()).await;
    let body = lk::agent_joined(&lk::mapped_room());
    let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());

    // Headers first, asking to continue: the 100 proves the handler is reading the body.
    let mut stream = tokio::net::TcpStream::connect(daemon.addr())
        .await
        .expect("connect to the daemon");
    let head = format!(
        "POST /livekit/webhook HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/webhook+json\r\nAuthorization: {token}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        daemon.addr(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(DAEMON_REACTION, stream.read(&mut buf))
        .await
        .expect("100 Continue within the wait")
        .expect("read 100 Continue");
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");

    send_signal(&daemon, "TERM");
    daemon
        .wait_for_stderr(
            "shutting down: finishing in-flight requests",
            DAEMON_REACTION,
        )
        .await;
    stream
        .write_all(body.as_bytes())
        .await
        .expect("send the body after SIGTERM");
    let mut response = Vec::new();
    tokio::time::timeout(DAEMON_REACTION, stream.read_to_end(&mut response))
        .await
        .expect("the answer within the wait")
        .expect("read the answer");
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"accepted"}"#), "{response}");

    let status = daemon.terminate(STOP).await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        daemon.stderr_text()
    );
    assert!(daemon.stderr_text().contains("stopped"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_delivery_finish_and_exits_zero() {
    const HELD: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::start_scripted(vec![Reply::status(200).delay(HELD)]).await;
    let config = TestConfig::new(&receiver.url("/hook")).toml();
    let mut daemon = Daemon::start_in(dir.path(), &config).await;
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    let first = receiver.next(DAEMON_REACTION).await;
    assert_eq!(first.json()["event"], "call_started");

    // The receiver holds its 200 back for HELD: the delivery is in flight now, and
    // SIGTERM must wait for its answer rather than cut it off.
    let started = std::time::Instant::now();
    let status = daemon.terminate(STOP).await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        daemon.stderr_text()
    );
    assert!(
        started.elapsed() >= HELD - Duration::from_millis(500),
        "stopped after {:?}, before the in-flight delivery was answered",
        started.elapsed()
    );

    // It finished and was recorded as delivered: a restart on the same store sends
    // nothing again.
    let _again = Daemon::start_in(dir.path(), &config).await;
    receiver.expect_nothing(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sighup_swaps_the_workflow_endpoint_and_a_bad_file_keeps_the_old_one() {
    let mut one = Receiver::start().await;
    let mut two = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&one.url("/hook")).toml()).await;

    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    assert_eq!(
        one.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );

    std::fs::write(
        daemon.config_path(),
        TestConfig::new(&two.url("/hook")).toml(),
    )
    .expect("rewrite the config");
    reload(&daemon, "configuration reloaded").await;
    let line = daemon
        .stderr_text()
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .map(str::to_owned)
        .expect("reload line");
    assert!(line.contains("workflows=2"), "{line}");

    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    assert_eq!(
        two.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );

    // A file that does not parse is refused, saying why, and the workflows stay.
    std::fs::write(daemon.config_path(), "[server\nlisten = ").expect("break the config");
    reload(&daemon, "configuration reload failed").await;
    let line = daemon
        .stderr_text()
        .lines()
        .find(|l| l.contains("configuration reload failed"))
        .map(str::to_owned)
        .expect("failure line");
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("line 1"),
        "the reason names the place: {line}"
    );

    // A file that parses but does not validate is refused too.
    std::fs::write(
        daemon.config_path(),
        TestConfig::new("ftp://nowhere/hook").toml(),
    )
    .expect("write an invalid config");
    reload(&daemon, "configuration reload failed").await;
    assert!(
        daemon
            .stderr_text()
            .contains("workflows[0].events_webhook_url"),
        "{}",
        daemon.stderr_text()
    );

    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    assert_eq!(
        two.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
    one.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_reload_that_drops_a_workflow_with_pending_deliveries_says_so() {
    let mut receiver = Receiver::start_with(vec![503]).await;
    let mut config = TestConfig::new(&receiver.url("/hook"));
    config.retry_schedule_secs = "[600]";
    let daemon = Daemon::start(&config.toml()).await;
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );

    // The workflow's id changes: its pending call_started has no workflow any more.
    let renumbered = config
        .toml()
        .replace(&format!("id = {WORKFLOW_ID}\n"), "id = 999\n");
    assert_ne!(renumbered, config.toml());
    std::fs::write(daemon.config_path(), renumbered).expect("rewrite the config");
    reload(&daemon, "configuration reloaded").await;
    daemon
        .wait_for_stderr(
            "belong to a workflow that is not configured",
            DAEMON_REACTION,
        )
        .await;
    let line = daemon
        .stderr_text()
        .lines()
        .find(|l| l.contains("not configured"))
        .map(str::to_owned)
        .expect("warning line");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("workflow_id={WORKFLOW_ID}")),
        "{line}"
    );
    assert!(line.contains("pending=1"), "{line}");
}

#[tokio::test]
async fn sighup_during_a_burst_of_webhooks_drops_none() {
    const BURST: usize = 60;
    const RELOADS: usize = 5;
    let mut receiver = Receiver::start().await;
    let daemon = Daemon::start(&TestConfig::new(&receiver.url("/hook")).toml()).await;

    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let poster = daemon.poster();
        let body = lk::agent_joined(&lk::mapped_room());
        posts.spawn(async move {
            let response = poster.post_signed(body).await.expect("post during reloads");
            response.status().as_u16()
        });
    }
    for _ in 0..RELOADS {
        reload(&daemon, "configuration reloaded").await;
    }
    let mut statuses = Vec::new();
    while let Some(status) = posts.join_next().await {
        statuses.push(status.expect("post task"));
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for _ in 0..BURST {
        assert_eq!(
            receiver.next(DAEMON_REACTION).await.json()["event"],
            "call_started"
        );
    }
    assert_eq!(log_count(&daemon, "configuration reloaded"), RELOADS);
}

#[tokio::test]
async fn sighup_applies_a_new_log_level_when_rust_log_is_unset() {
    let mut receiver = Receiver::start().await;
    let base = TestConfig::new(&receiver.url("/hook")).toml();
    let daemon = Daemon::launch(&format!("{base}\n[log]\nlevel = \"info\"\n"))
        .env("RUST_LOG", "")
        .start()
        .await;
    // "webhook accepted" is a debug line: logged before the answer, if at all.
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    receiver.next(DAEMON_REACTION).await;
    assert!(!daemon.stderr_text().contains("webhook accepted"));

    std::fs::write(
        daemon.config_path(),
        format!("{base}\n[log]\nlevel = \"debug\"\n"),
    )
    .expect("rewrite the config");
    reload(&daemon, "configuration reloaded").await;
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    daemon
        .wait_for_stderr("webhook accepted", DAEMON_REACTION)
        .await;
}

#[tokio::test]
async fn livekit_secret_file_may_name_the_systemd_credentials_directory() {
    let credentials = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        credentials.path().join("livekit-api-secret"),
        format!("{API_SECRET}\n"),
    )
    .expect("write the credential");
    let mut receiver = Receiver::start().await;
    let inline = format!("api_secret = \"{API_SECRET}\"");
    let config = TestConfig::new(&receiver.url("/hook")).toml().replacen(
        &inline,
        "api_secret_file = \"${CREDENTIALS_DIRECTORY}/livekit-api-secret\"",
        1,
    );
    assert!(!config.contains(&inline));
    let daemon = Daemon::launch(&config)
        .env(
            "CREDENTIALS_DIRECTORY",
            credentials.path().to_str().expect("utf-8 path"),
        )
        .start()
        .await;
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    assert_eq!(
        receiver.next(DAEMON_REACTION).await.json()["event"],
        "call_started"
    );
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line_and_no_secret() {
    let mut receiver = Receiver::start().await;
    let base = TestConfig::new(&receiver.url("/hook")).toml();
    let mut daemon = Daemon::start(&format!("{base}\n[log]\nformat = \"json\"\n")).await;
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    receiver.next(DAEMON_REACTION).await;
    let (status, _) = daemon
        .post_signed(
            &lk::agent_joined(&lk::mapped_room()),
            API_KEY,
            "not-the-secret-but-long-enough",
        )
        .await;
    assert_eq!(status, 401);
    daemon
        .wait_for_stderr("webhook rejected: unauthorized", DAEMON_REACTION)
        .await;
    assert!(daemon.terminate(STOP).await.success());

    let stderr = daemon.stderr_text();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        !stderr.contains(API_SECRET),
        "a secret was logged:\n{stderr}"
    );
}

#[tokio::test]
async fn text_log_format_is_for_people_and_has_no_secret() {
    let mut receiver = Receiver::start().await;
    let mut daemon = Daemon::start(&TestConfig::new(&receiver.url("/hook")).toml()).await;
    post_ok(&daemon, &lk::agent_joined(&lk::mapped_room())).await;
    receiver.next(DAEMON_REACTION).await;
    assert!(daemon.terminate(STOP).await.success());
    let stderr = daemon.stderr_text();
    let first = stderr.lines().next().expect("a log line");
    assert!(!first.starts_with('{'), "{first}");
    assert!(first.contains("INFO"), "{first}");
    assert!(
        !stderr.contains(API_SECRET),
        "a secret was logged:\n{stderr}"
    );
}
