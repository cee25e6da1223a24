//! The daemon's operator API as tests reach it: where it listens (the line the daemon
//! prints on stdout), a config with a bearer token, and JSON requests to it.

use std::net::SocketAddr;

use serde_json::Value;

use super::Daemon;

/// The line the daemon prints on stdout, before its ready line, naming the API address.
pub const API_LINE_PREFIX: &str = "voicekit-bridge operator API on ";

/// Where the daemon's operator API listens, as it announced on stdout.
pub fn api_addr(daemon: &Daemon) -> SocketAddr {
    let stdout = daemon.stdout_text();
    let addr = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix(API_LINE_PREFIX))
        .unwrap_or_else(|| panic!("no {API_LINE_PREFIX:?} line on stdout:\n{stdout}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("bad operator API address {addr:?}: {e}"))
}

/// `path` on the operator API, e.g. `api_url(&daemon, "/api/calls")`.
pub fn api_url(daemon: &Daemon, path: &str) -> String {
    format!("http://{}{path}", api_addr(daemon))
}

/// `toml` (as `TestConfig::toml` renders it) with `token = "<token>"` in its `[api]`
/// table.
pub fn with_api_token(toml: &str, token: &str) -> String {
    assert_eq!(
        toml.matches("\n[api]\n").count(),
        1,
        "one [api] table in:\n{toml}"
    );
    toml.replacen("\n[api]\n", &format!("\n[api]\ntoken = \"{token}\"\n"), 1)
}

/// Status and body (JSON, or the text as a JSON string when it is not JSON).
async fn answer(daemon: &Daemon, request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap_or_else(|e| {
        panic!(
            "operator API request failed: {e}\n--- stderr ---\n{}",
            daemon.stderr_text()
        )
    });
    let status = response.status().as_u16();
    let text = response.text().await.expect("operator API response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// `GET path` on the operator API, without a token.
pub async fn api_get(daemon: &Daemon, path: &str) -> (u16, Value) {
    answer(daemon, daemon.http().get(api_url(daemon, path))).await
}

/// `POST path` with a JSON body on the operator API, without a token.
pub async fn api_post(daemon: &Daemon, path: &str, body: &Value) -> (u16, Value) {
    answer(daemon, daemon.http().post(api_url(daemon, path)).json(body)).await
}
