//! Proves the command line works as README documents it, by running the built binary:
//! `check-config` accepts valid files (the bundled `config.toml` included) and rejects
//! bad ones naming the key at fault, `--config` falls back to `$VOICEKIT_BRIDGE_CONFIG`,
//! `run` refuses an invalid config before starting anything, and `simulate` plays a
//! whole call against a running daemon and prints the three VoiceKit events it caused.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::{Daemon, TestConfig};

const BIN: &str = env!("CARGO_BIN_EXE_voicekit-bridge");
/// The exit status README documents for an invalid configuration.
const INVALID_CONFIG: i32 = 2;

/// A valid config whose workflow endpoint nothing listens on (check-config never calls it).
fn valid_config() -> String {
    TestConfig::new("http://127.0.0.1:9/hook").toml()
}

/// `text` written as `config.toml` in a fresh temporary directory (kept alive by the
/// returned guard).
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

/// `text` with `from` replaced by `to` exactly once (so a test cannot silently edit
/// nothing).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in:\n{text}");
    text.replacen(from, to, 1)
}

/// `text` with the `listen` key of its `[server]` table set to `addr` (other tables may
/// have a `listen` of their own, which stays as it is).
fn with_server_listen(text: &str, addr: &str) -> String {
    let mut table = String::new();
    let mut replaced = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim();
            if trimmed.starts_with('[') {
                table = trimmed.to_owned();
            } else if table == "[server]"
                && trimmed.split('=').next().map(str::trim) == Some("listen")
            {
                replaced += 1;
                return format!("listen = \"{addr}\"");
            }
            line.to_owned()
        })
        .collect();
    assert_eq!(replaced, 1, "one server.listen in:\n{text}");
    lines.join("\n") + "\n"
}

/// `voicekit-bridge <args>`, with `VOICEKIT_BRIDGE_CONFIG` unset, run to completion.
fn bridge(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("VOICEKIT_BRIDGE_CONFIG")
        .output()
        .expect("run voicekit-bridge")
}

fn check_config(path: &Path) -> Output {
    bridge(&[
        "check-config",
        "--config",
        path.to_str().expect("UTF-8 path"),
    ])
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the process exited 0.
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "expected exit 0, got {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Asserts the process failed as for an invalid config and its stderr contains every
/// one of `needles`.
fn assert_rejected(output: &Output, needles: &[&str]) {
    assert_eq!(
        output.status.code(),
        Some(INVALID_CONFIG),
        "expected exit {INVALID_CONFIG}, got {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
}

// ---- check-config ----

#[test]
fn check_config_exits_0_for_a_valid_file() {
    let (_dir, path) = write_config(&valid_config());

    let output = check_config(&path);

    assert_success(&output);
    assert!(stdout(&output).contains("OK"), "{}", stdout(&output));
}

#[test]
fn check_config_exits_0_for_the_bundled_config_toml() {
    let bundled = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"));

    assert_success(&check_config(bundled));
}

#[test]
fn check_config_rejects_an_unknown_key_naming_it() {
    let text = replace_once(
        &valid_config(),
        "[recordings]\n",
        "[recordings]\nbukket = \"x\"\n",
    );
    let (_dir, path) = write_config(&text);

    assert_rejected(&check_config(&path), &["bukket"]);
}

#[test]
fn check_config_rejects_a_bad_room_pattern_regex_naming_workflows_0_room_pattern() {
    let text = replace_once(
        &valid_config(),
        r"room_pattern = '^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+)_\d+$'",
        r"room_pattern = '^VOICEKIT_workflow_(?P<call_slug>[A-Za-z0-9]+_\d+$'",
    );
    let (_dir, path) = write_config(&text);

    assert_rejected(
        &check_config(&path),
        &["workflows[0].room_pattern", "invalid regex"],
    );
}

#[test]
fn check_config_rejects_a_missing_file_saying_it_cannot_read_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-config.toml");

    let output = check_config(&path);

    assert_rejected(
        &output,
        &["cannot read", path.to_str().expect("UTF-8 path")],
    );
}

#[test]
fn check_config_rejects_recordings_without_bucket_naming_bucket() {
    let text = replace_once(&valid_config(), "bucket = \"voicekit-recordings\"\n", "");
    let (_dir, path) = write_config(&text);

    assert_rejected(&check_config(&path), &["bucket"]);
}

#[test]
fn check_config_reads_voicekit_bridge_config_when_no_config_flag_is_given() {
    let (_good_dir, good) = write_config(&valid_config());
    let bad_text = replace_once(
        &valid_config(),
        "[recordings]\n",
        "[recordings]\nbukket = \"x\"\n",
    );
    let (_bad_dir, bad) = write_config(&bad_text);
    let with_env = |path: &Path| {
        Command::new(BIN)
            .arg("check-config")
            .env("VOICEKIT_BRIDGE_CONFIG", path)
            .output()
            .expect("run voicekit-bridge")
    };

    let output = with_env(&good);
    assert_success(&output);
    assert!(
        stdout(&output).contains(good.to_str().expect("UTF-8 path")),
        "check-config should name the file it read: {}",
        stdout(&output)
    );
    // And it really is that file that is read: a bad one fails naming its bad key.
    assert_rejected(&with_env(&bad), &["bukket"]);
}

// ---- run ----

#[tokio::test]
async fn run_with_an_invalid_config_exits_non_zero_naming_the_key_without_starting() {
    let text = replace_once(
        &valid_config(),
        "[recordings]\n",
        "[recordings]\nbukket = \"x\"\n",
    );
    let (dir, path) = write_config(&text);

    let child = tokio::process::Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("VOICEKIT_BRIDGE_CONFIG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("run with an invalid config exits instead of serving")
        .expect("run voicekit-bridge");

    assert_rejected(&output, &["bukket"]);
    assert!(
        !stdout(&output).contains("listening on"),
        "it started: {}",
        stdout(&output)
    );
    // Nothing was opened either: the SQLite store would be created in the working dir.
    let created: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read tempdir")
        .map(|e| e.expect("dir entry").file_name())
        .filter(|name| name != "config.toml")
        .collect();
    assert!(created.is_empty(), "run created {created:?} before failing");
}

// ---- simulate ----

#[tokio::test]
async fn simulate_plays_a_whole_call_against_the_daemon_and_prints_the_three_events() {
    // A loopback port nothing listens on: simulate listens there itself, as the
    // workflow's endpoint, and the daemon delivers to it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local addr").port()
    };
    let endpoint = format!("http://127.0.0.1:{port}/webhooks/voicekit");
    let daemon = Daemon::start(&TestConfig::new(&endpoint).toml()).await;

    // The daemon's file says `listen = "127.0.0.1:0"`; simulate posts to `server.listen`,
    // so it gets a copy naming the address the daemon really took.
    let daemon_config = std::fs::read_to_string(daemon.config_path()).expect("daemon config");
    let sim_config = with_server_listen(&daemon_config, &daemon.addr().to_string());
    let (sim_dir, sim_path) = write_config(&sim_config);

    let child = tokio::process::Command::new(BIN)
        .arg("simulate")
        .arg("--config")
        .arg(&sim_path)
        .args(["--timeout-secs", "30"])
        .current_dir(sim_dir.path())
        .env_remove("VOICEKIT_BRIDGE_CONFIG")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "simulate did not finish within 60 s\n--- daemon stderr ---\n{}",
                daemon.stderr_text()
            )
        })
        .expect("run voicekit-bridge simulate");

    let out = stdout(&output);
    assert!(
        output.status.success(),
        "simulate exited with {}\n--- stdout ---\n{out}\n--- stderr ---\n{}\n--- daemon stderr ---\n{}",
        output.status,
        stderr(&output),
        daemon.stderr_text()
    );
    for event in ["call_started", "call_ended", "call_finalized"] {
        let arrival = format!("<- {event}");
        assert!(
            out.lines().any(|line| line.trim() == arrival),
            "no {arrival:?} line in simulate's stdout:\n{out}"
        );
        assert!(
            out.contains(&format!("{{\"event\":\"{event}\"")),
            "no {event} body in simulate's stdout:\n{out}"
        );
    }
    assert!(out.contains("\"duration_seconds\":93"), "{out}");
    assert!(out.contains("\"duration_minutes\":2"), "{out}");
}
