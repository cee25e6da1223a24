//! Proves that slow and abusive clients cannot hold the real daemon's webhook listener:
//! stalled connections (silent, half-sent headers, a body that stops, a keep-alive
//! connection that says nothing) are closed by the `[server]` timeouts, even with every descriptor
//! taken a real webhook gets through as soon as they free one, the connection cap holds
//! stalled clients back while the operator API still answers, a forged webhook is
//! refused before its body is read, and a flood of forged webhooks is counted in full
//! but logged in a handful of lines.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use support::config::{API_KEY, API_SECRET};
use support::operator::api_url;
use support::{Daemon, Receiver, TestConfig, lk, poll, signer};

const WAIT: Duration = Duration::from_secs(20);

/// `toml` with `lines` added to its `[server]` table.
fn with_server(toml: &str, lines: &str) -> String {
    assert_eq!(toml.matches("[server]\n").count(), 1, "{toml}");
    toml.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1)
}

/// Two-second timeouts, so a test sees them fire.
const SHORT_TIMEOUTS: &str =
    "header_timeout_secs = 2\nbody_timeout_secs = 2\nidle_timeout_secs = 2";

/// The value of exactly `series` (name and labels as printed) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

/// `/metrics` from the operator listener.
async fn scrape(daemon: &Daemon) -> String {
    let response = daemon
        .http()
        .get(api_url(daemon, "/metrics"))
        .send()
        .await
        .expect("GET /metrics on the operator API");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics body")
}

/// A shell script that runs the daemon under an open-file limit of `limit` (soft and
/// hard), as `LimitNOFILE=` would.
fn under_open_file_limit(dir: &std::path::Path, limit: u64) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("voicekit-bridge-nofile");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec prlimit --nofile={limit}:{limit} -- {} \"$@\"\n",
            env!("CARGO_BIN_EXE_voicekit-bridge")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The ways a client can hold a connection without finishing a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stall {
    /// A connection, and not a byte.
    Silent,
    /// Half a request head, then nothing.
    HalfHeader,
    /// A request with a valid (replayed) token whose body stops halfway.
    HalfBody,
    /// A finished request on a keep-alive connection, then nothing.
    Idle,
}

async fn stall(daemon: &Daemon, how: Stall) -> TcpStream {
    let mut stream = TcpStream::connect(daemon.addr()).await.expect("connect");
    let bytes = match how {
        Stall::Silent => String::new(),
        Stall::HalfHeader => {
            "POST /livekit/webhook HTTP/1.1\r\nHost: bridge\r\nContent-Ty".to_owned()
        }
        Stall::HalfBody => {
            let body = lk::room_started(&lk::mapped_room(), 1_761_234_567);
            let token = signer::sign(API_KEY, API_SECRET, body.as_bytes());
            format!(
                "POST /livekit/webhook HTTP/1.1\r\nHost: bridge\r\nAuthorization: {token}\r\n\
                 Content-Type: application/webhook+json\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                &body[..body.len() / 2]
            )
        }
        Stall::Idle => "GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n".to_owned(),
    };
    stream.write_all(bytes.as_bytes()).await.expect("write");
    stream
}

/// Everything the daemon sends on `stream` until it closes it; panics if it does not
/// close it within `WAIT`.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut seen)).await;
    match read {
        Ok(Ok(_)) | Ok(Err(_)) => String::from_utf8_lossy(&seen).into_owned(),
        Err(_) => panic!(
            "the daemon kept a stalled connection open for {WAIT:?}; it sent {:?}",
            String::from_utf8_lossy(&seen)
        ),
    }
}

#[tokio::test]
async fn with_every_descriptor_held_by_stalled_clients_a_webhook_gets_through_once_the_timeouts_free_one()
 {
    let receiver = Receiver::start().await;
    let scripts = tempfile::tempdir().unwrap();
    let toml = with_server(
        &TestConfig::new(&receiver.url("/hook")).toml(),
        // A cap above the descriptor limit: descriptors run out first.
        &format!("{SHORT_TIMEOUTS}\nmax_connections = 100000"),
    );
    let daemon = Daemon::launch(&toml)
        .program(&under_open_file_limit(scripts.path(), 160))
        .start()
        .await;
    daemon
        .wait_for_stderr("server.max_connections = 100000 leaves fewer", WAIT)
        .await;

    // Stalled clients of every kind, in batches, until accepting fails for want of
    // descriptors.
    let kinds = [
        Stall::Silent,
        Stall::HalfHeader,
        Stall::HalfBody,
        Stall::Idle,
    ];
    let mut stalled = Vec::new();
    while !daemon
        .stderr_text()
        .contains("cannot accept connections; retrying with backoff")
    {
        assert!(
            stalled.len() < 600,
            "600 stalled connections and the daemon still accepts\n{}",
            daemon.stderr_text()
        );
        for _ in 0..20 {
            let how = kinds[stalled.len() % kinds.len()];
            stalled.push((how, stall(&daemon, how).await));
        }
        // Gives the daemon a moment to accept the batch before looking again.
        tokio::task::yield_now().await;
        let _ = poll::within(Duration::from_millis(200), async || {
            daemon
                .stderr_text()
                .contains("cannot accept connections")
                .then_some(())
        })
        .await;
    }
    let full = Instant::now();
    let cpu_before = cpu_time(daemon.pid());

    // A real webhook, on a connection of its own, waits in the kernel's queue until the
    // timeouts close stalled connections and the daemon can accept again.
    let body = lk::room_started(&lk::mapped_room(), 1_761_234_567);
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap();
    let answer = fresh
        .post(daemon.webhook_url())
        .header("content-type", "application/webhook+json")
        .header(
            "authorization",
            signer::sign(API_KEY, API_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the webhook got no answer: {e}\n{}", daemon.stderr_text()));
    let waited = full.elapsed();
    assert_eq!(answer.status(), 200, "{}", daemon.stderr_text());
    // Two seconds of header timeout, at most one of accept backoff, and some slack.
    assert!(
        waited < Duration::from_secs(8),
        "the webhook waited {waited:?}"
    );
    // While full, the daemon backed off instead of spinning on accept.
    let cpu = cpu_time(daemon.pid()) - cpu_before;
    assert!(
        cpu < waited / 2,
        "the daemon used {cpu:?} of CPU in {waited:?} while its descriptors were held"
    );

    // Each kind of stalled connection was closed by its timeout: a silent one and a half
    // header without an answer, a half body with 408, the idle one after its 200.
    for how in kinds {
        let (_, stream) = stalled.iter_mut().find(|(k, _)| *k == how).unwrap();
        let seen = read_until_closed(stream).await;
        match how {
            Stall::Silent | Stall::HalfHeader => assert_eq!(seen, "", "{how:?}"),
            Stall::HalfBody => assert!(seen.starts_with("HTTP/1.1 408"), "{how:?}: {seen}"),
            Stall::Idle => assert!(seen.starts_with("HTTP/1.1 200"), "{how:?}: {seen}"),
        }
    }

    let text = scrape(&daemon).await;
    let counted =
        |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series} in:\n{text}"));
    assert!(
        counted(r#"voicekit_bridge_accept_errors_total{listener="webhook",kind="descriptors"}"#)
            >= 1.0,
        "{text}"
    );
    for phase in ["header", "body", "idle"] {
        let series = format!(
            r#"voicekit_bridge_connection_timeouts_total{{listener="webhook",phase="{phase}"}}"#
        );
        assert!(counted(&series) >= 1.0, "{series} in:\n{text}");
    }
    assert!(
        counted(r#"voicekit_bridge_webhooks_rejected_total{reason="body_timeout"}"#) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn the_connection_cap_keeps_stalled_clients_waiting_while_the_operator_api_answers() {
    let receiver = Receiver::start().await;
    let toml = with_server(
        &TestConfig::new(&receiver.url("/hook")).toml(),
        &format!("{SHORT_TIMEOUTS}\nmax_connections = 20"),
    );
    let daemon = Daemon::start(&toml).await;
    let mut stalled = Vec::new();
    for _ in 0..30 {
        stalled.push(stall(&daemon, Stall::HalfHeader).await);
    }
    let full = poll::wait_for(
        WAIT,
        "20 open connections and the cap reached",
        async || {
            let text = scrape(&daemon).await;
            let open = value(
                &text,
                r#"voicekit_bridge_connections_open{listener="webhook"}"#,
            )?;
            let reached = value(
                &text,
                r#"voicekit_bridge_connection_limit_reached_total{listener="webhook"}"#,
            )?;
            (open == 20.0 && reached >= 1.0).then_some(text)
        },
    )
    .await;
    assert_eq!(
        value(
            &full,
            r#"voicekit_bridge_accept_errors_total{listener="webhook",kind="descriptors"}"#
        ),
        Some(0.0),
        "{full}"
    );
    daemon
        .wait_for_stderr("connection cap reached: new clients wait", WAIT)
        .await;

    let started = Instant::now();
    let body = lk::room_started(&lk::mapped_room(), 1_761_234_567);
    let (status, answer) = daemon.post_signed(&body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    for stream in &mut stalled[..3] {
        assert_eq!(read_until_closed(stream).await, "");
    }
}

/// Sends a webhook's head with `authorization` and a body length, but no body, and
/// returns what the daemon answers and how long it took to close the connection.
async fn head_without_body(daemon: &Daemon, authorization: &str) -> (String, Duration) {
    let mut stream = TcpStream::connect(daemon.addr()).await.unwrap();
    let head = format!(
        "POST /livekit/webhook HTTP/1.1\r\nHost: bridge\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/webhook+json\r\nContent-Length: 500000\r\n\r\n"
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let seen = read_until_closed(&mut stream).await;
    (seen, started.elapsed())
}

#[tokio::test]
async fn a_forged_webhook_is_refused_before_its_body_is_read() {
    let toml = with_server(
        &TestConfig::new("http://127.0.0.1:9/hook").toml(),
        "body_timeout_secs = 3",
    );
    let daemon = Daemon::start(&toml).await;
    let body = lk::room_started(&lk::mapped_room(), 1_761_234_567);

    // No body ever comes: a refusal before the body timeout was decided on the head.
    let forged = signer::sign(API_KEY, "not-the-secret-but-just-as-long", body.as_bytes());
    let (seen, took) = head_without_body(&daemon, &forged).await;
    assert!(seen.starts_with("HTTP/1.1 401"), "{seen}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (seen, took) = head_without_body(&daemon, "").await;
    assert!(seen.starts_with("HTTP/1.1 401"), "{seen}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A valid token (as a replayed one would be) gets as far as waiting for the body,
    // and no further than the body timeout.
    let valid = signer::sign(API_KEY, API_SECRET, body.as_bytes());
    let (seen, took) = head_without_body(&daemon, &valid).await;
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

/// The numbers `N` of "N webhooks refused" in the daemon's summary lines.
fn summarised(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter_map(|line| {
            let before = &line[..line.find(" webhooks refused")?];
            before.rsplit(' ').next()?.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn three_thousand_forged_webhooks_make_a_handful_of_log_lines_and_are_all_counted() {
    let toml = format!(
        "{}\n[log]\nsummary_interval_secs = 3\n",
        TestConfig::new("http://127.0.0.1:9/hook").toml()
    );
    let daemon = Daemon::start(&toml).await;
    let body = lk::room_started(&lk::mapped_room(), 1_761_234_567);
    let forged = signer::sign(API_KEY, "not-the-secret-but-just-as-long", body.as_bytes());

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..30 {
        let http = daemon.http().clone();
        let url = daemon.webhook_url();
        let (body, forged) = (body.clone(), forged.clone());
        tasks.spawn(async move {
            for _ in 0..100 {
                let status = http
                    .post(&url)
                    .header("content-type", "application/webhook+json")
                    .header("authorization", &forged)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("worker {worker}: {e}"))
                    .status();
                assert_eq!(status, 401);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let sending = started.elapsed();

    let text = scrape(&daemon).await;
    assert_eq!(
        value(
            &text,
            r#"voicekit_bridge_webhooks_rejected_total{reason="bad_signature"}"#
        ),
        Some(3000.0),
        "{text}"
    );
    // The last summary comes within an interval of the last request.
    poll::eventually(
        WAIT,
        "the summary to account for 3000 refusals",
        async || {
            let stderr = daemon.stderr_text();
            let first_lines = stderr.matches("webhook rejected: unauthorized").count() as u64;
            summarised(&stderr).iter().sum::<u64>() + first_lines >= 3000
        },
    )
    .await;
    let stderr = daemon.stderr_text();
    let lines = stderr
        .lines()
        .filter(|l| l.contains("webhook rejected") || l.contains("webhooks refused"))
        .count();
    // One line at the first refusal of an interval and one summary at its end.
    let intervals = (sending.as_secs_f64() / 3.0).ceil() as usize + 1;
    assert!(
        lines <= 2 * intervals && lines <= 12,
        "{lines} lines for 3000 refusals in {sending:?}:\n{stderr}"
    );
    assert!(summarised(&stderr).iter().sum::<u64>() <= 3000, "{stderr}");
}

#[tokio::test]
async fn event_names_livekit_does_not_send_share_one_metric_label() {
    let daemon = Daemon::start(&TestConfig::new("http://127.0.0.1:9/hook").toml()).await;
    let body = lk::room_started(&lk::mapped_room(), 1_761_234_567).replacen(
        "\"room_started\"",
        "\"made_up_event\"",
        1,
    );
    assert!(body.contains("made_up_event"), "{body}");
    let (status, answer) = daemon.post_signed(&body, API_KEY, API_SECRET).await;
    assert_eq!(status, 200, "{answer}");
    let text = scrape(&daemon).await;
    assert!(!text.contains("made_up_event"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"voicekit_bridge_webhooks_received_total{event="other""#)),
        "{text}"
    );
}
