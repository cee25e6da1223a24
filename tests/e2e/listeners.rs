//! Proves what each of the real daemon's listeners shows: the public webhook listener
//! serves the webhook route, `/healthz` and `/readyz` (ok / not ready, nothing else);
//! `/metrics` and a readiness that says why are on the operator listener, which without
//! a token refuses foreign `Host:` names, cross-site and non-JSON changes, and never
//! echoes a store error. The configuration's checks on secrets are proved here too:
//! a short `api.token` is an error, a weak LiveKit secret or a readable file of inline
//! secrets a warning.

use crate::support;

use serde_json::{Value, json};

use support::config::{API_SECRET, WORKFLOW_SLUG};
use support::operator::{api_addr, api_url, with_api_token};
use support::{Daemon, TestConfig};

use support::poll::DAEMON_REACTION as WAIT;

fn config() -> TestConfig {
    TestConfig::new("http://127.0.0.1:9/hook")
}

/// Status, headers' content type and body of a request.
async fn send(request: reqwest::RequestBuilder) -> (u16, String, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_public_listener_serves_the_webhook_healthz_and_readyz_and_nothing_else() {
    let daemon = Daemon::start(&config().toml()).await;
    assert_eq!(daemon.get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(daemon.get("/readyz").await, (200, "ok\n".to_owned()));
    for path in [
        "/metrics",
        "/api/calls",
        "/api/deliveries",
        "/livekit/webhook/../metrics",
    ] {
        assert_eq!(daemon.get(path).await, (404, String::new()), "{path}");
    }
    let replay = daemon
        .http()
        .post(daemon.url("/api/deliveries/replay"))
        .json(&json!({}));
    assert_eq!(send(replay).await.0, 404);
}

#[tokio::test]
async fn the_operator_listener_serves_metrics_and_a_readiness_that_says_why() {
    let mut daemon = Daemon::start(&config().toml()).await;
    let http = daemon.http().clone();
    let (status, content_type, text) = send(http.get(api_url(&daemon, "/metrics"))).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.contains("voicekit_bridge_outbox_pending "), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (status, _, body) = send(http.get(api_url(&daemon, "/readyz"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ready"})
    );
    daemon.terminate(WAIT).await;
}

#[tokio::test]
async fn without_a_token_the_operator_api_refuses_foreign_hosts_cross_site_and_non_json_changes() {
    // A fixed port, so the CLI finds the API from the config file.
    let mut config = config();
    config.api_listen = format!("127.0.0.1:{}", support::config::free_port());
    let daemon = Daemon::start(&config.toml()).await;
    let http = daemon.http();
    let port = api_addr(&daemon).port();
    let calls = api_url(&daemon, "/api/calls");

    // DNS rebinding: a page's own host name pointed at 127.0.0.1.
    for host in ["evil.example", &format!("evil.example:{port}"), "10.1.2.3"] {
        let (status, _, body) = send(http.get(&calls).header("host", host)).await;
        assert_eq!(status, 421, "Host: {host}: {body}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
    ] {
        let (status, _, body) = send(http.get(&calls).header("host", &host)).await;
        assert_eq!(status, 200, "Host: {host}: {body}");
    }
    let metrics = api_url(&daemon, "/metrics");
    assert_eq!(
        send(http.get(&metrics).header("host", "evil.example"))
            .await
            .0,
        421
    );

    // CSRF: a cross-site form posts text/plain, and any page's fetch carries its Origin.
    let replay = api_url(&daemon, "/api/deliveries/replay");
    let body = json!({"workflow": WORKFLOW_SLUG, "since": "2025-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z"});
    let (status, _, answer) = send(
        http.post(&replay)
            .header("content-type", "text/plain")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
    let (status, _, answer) = send(http.post(&replay).body(body.to_string())).await;
    assert_eq!(status, 415, "no content type: {answer}");
    let (status, _, answer) = send(
        http.post(&replay)
            .header("origin", "https://evil.example")
            .json(&body),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, _, answer) = send(http.post(&replay).header("origin", "null").json(&body)).await;
    assert_eq!(status, 403, "{answer}");
    let (status, _, answer) = send(
        http.post(&replay)
            .header("origin", format!("http://127.0.0.1:{port}"))
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "same origin: {answer}");
    let (status, _, answer) = send(http.post(&replay).json(&body)).await;
    assert_eq!(status, 200, "{answer}");

    // The CLI sends JSON to a loopback Host: it keeps working.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_voicekit-bridge"))
        .args(["deliveries", "replay", "--config"])
        .arg(daemon.config_path())
        .args([
            "--workflow",
            WORKFLOW_SLUG,
            "--since",
            "2025-01-01T00:00:00Z",
            "--until",
            "2030-01-01T00:00:00Z",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn with_a_token_the_operator_api_takes_any_host_but_still_wants_json_changes() {
    let token = "0123456789abcdef0123456789abcdef";
    let daemon = Daemon::start(&with_api_token(&config().toml(), token)).await;
    let http = daemon.http();
    let calls = api_url(&daemon, "/api/calls");
    let (status, _, body) = send(
        http.get(&calls)
            .bearer_auth(token)
            .header("host", "bridge.internal:8789"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = send(http.get(api_url(&daemon, "/metrics"))).await;
    assert_eq!(status, 401, "metrics want the token too");
    let (status, _, _) = send(http.get(api_url(&daemon, "/metrics")).bearer_auth(token)).await;
    assert_eq!(status, 200);
    let (status, _, answer) = send(
        http.post(api_url(&daemon, "/api/deliveries/1/retry"))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(status, 415, "{answer}");
}

/// Renames the `calls` table behind the daemon's back, so every query of it fails.
async fn break_the_calls_table(daemon: &Daemon, store_url: &str) {
    use sqlx::Connection;
    let rename = "ALTER TABLE calls RENAME TO calls_gone";
    if store_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(store_url).await.unwrap();
        sqlx::query(rename).execute(&mut db).await.unwrap();
    } else {
        let path = daemon.dir().join("voicekit-bridge.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        db.execute(rename, []).unwrap();
    }
}

#[tokio::test]
async fn a_store_error_is_logged_with_an_id_and_answered_without_its_text() {
    let config = config();
    let daemon = Daemon::start(&config.toml()).await;
    break_the_calls_table(&daemon, &config.store_url).await;

    let (status, _, body) = send(daemon.http().get(api_url(&daemon, "/api/calls"))).await;
    assert_eq!(status, 500, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    let message = json["error"].as_str().unwrap();
    for leak in ["calls", "relation", "no such table", "sqlite", "postgres"] {
        assert!(!message.to_lowercase().contains(leak), "{message}");
    }
    let id = message
        .split("error id ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no error id in {message:?}"))
        .to_owned();
    daemon.wait_for_stderr(&id, WAIT).await;
    let logged = daemon
        .stderr_text()
        .lines()
        .find(|l| l.contains(&id))
        .unwrap()
        .to_owned();
    assert!(
        logged.contains("calls"),
        "the log says what failed: {logged}"
    );
}

/// Runs `check-config` on `text` written with file mode `mode`.
async fn check_config(text: &str, mode: u32) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_voicekit-bridge"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_api_token_shorter_than_32_bytes_is_a_config_error_naming_api_token() {
    let out = check_config(
        &with_api_token(&config().toml(), "t0ken-of-31-bytes-0123456789abc"),
        0o600,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api.token: must be at least 32 bytes"),
        "{stderr}"
    );
    let out = check_config(
        &with_api_token(&config().toml(), "t0ken-of-32-bytes-0123456789abcd"),
        0o600,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no warning at mode 600"
    );
}

#[tokio::test]
async fn the_daemon_warns_at_start_of_a_weak_livekit_secret_and_inline_secrets_others_can_read() {
    let toml = config()
        .toml()
        .replace(API_SECRET, "secret-for-local-development-only");
    let daemon = Daemon::start(&toml).await;
    daemon
        .wait_for_stderr("is the example configuration's", WAIT)
        .await;
    // The harness writes the file with mode 644.
    daemon
        .wait_for_stderr("holds secrets inline (livekit.api_secret", WAIT)
        .await;
    let stderr = daemon.stderr_text();
    assert!(stderr.contains("readable by everyone"), "{stderr}");
    assert!(
        !stderr.contains("secret-for-local-development-only"),
        "the secret itself is never logged:\n{stderr}"
    );

    let short = config().toml().replace(API_SECRET, "short-secret");
    let out = check_config(&short, 0o640).await;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shorter than 32 characters"), "{stderr}");
    assert!(stderr.contains("readable by its group"), "{stderr}");
    assert!(!stderr.contains("short-secret"), "{stderr}");
}
