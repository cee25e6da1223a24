//! `calls ...`, `deliveries ...` and `endpoints ...`: the operator API, from a terminal.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::table::{self, Column};
use crate::{call::voicekit::rfc3339_ms, config::Config};

/// A client of the running daemon's operator API (`[api] listen`).
pub struct OperatorClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl OperatorClient {
    pub fn new(config: &Config) -> OperatorClient {
        let mut addr = config.api.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        OperatorClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client with only a timeout always builds"),
            base: format!("http://{addr}"),
            token: config.api.token.as_ref().map(|t| t.expose().to_owned()),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the daemon's operator API at {} (is it running?)",
                self.base
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("request failed")
            );
        }
        Ok(body)
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn list_calls(
        &self,
        phase: Option<String>,
        limit: i64,
        as_json: bool,
    ) -> anyhow::Result<()> {
        let mut query = vec![("limit", limit.to_string())];
        query.extend(phase.map(|p| ("phase", p)));
        let body = self.get("/api/calls", &query).await?;
        if as_json {
            return print_json(&body);
        }
        println!("{}", calls_table(&body));
        Ok(())
    }

    pub async fn show_call(&self, id: i64, as_json: bool) -> anyhow::Result<()> {
        let detail = self.get(&format!("/api/calls/{id}"), &[]).await?;
        if as_json {
            return print_json(&detail);
        }
        println!("{}", call_detail(&detail));
        Ok(())
    }

    pub async fn list_deliveries(
        &self,
        status: Option<String>,
        workflow: Option<String>,
        limit: i64,
        as_json: bool,
    ) -> anyhow::Result<()> {
        let mut query = vec![("limit", limit.to_string())];
        query.extend(status.map(|s| ("status", s)));
        query.extend(workflow.map(|w| ("workflow", w)));
        let body = self.get("/api/deliveries", &query).await?;
        if as_json {
            return print_json(&body);
        }
        println!("{}", deliveries_table(&body));
        Ok(())
    }

    pub async fn retry(&self, id: i64) -> anyhow::Result<()> {
        let body = self
            .post(&format!("/api/deliveries/{id}/retry"), json!({}))
            .await?;
        println!("delivery {id} queued to be sent now");
        print_enabled(&body);
        Ok(())
    }

    pub async fn replay(&self, workflow: &str, since: &str, until: &str) -> anyhow::Result<()> {
        let body = self
            .post(
                "/api/deliveries/replay",
                json!({ "workflow": workflow, "since": since, "until": until }),
            )
            .await?;
        println!(
            "{} failed deliveries of {workflow} queued to be sent again",
            body["replayed"]
        );
        print_enabled(&body);
        Ok(())
    }

    pub async fn list_endpoints(&self, as_json: bool) -> anyhow::Result<()> {
        let body = self.get("/api/endpoints", &[]).await?;
        if as_json {
            return print_json(&body);
        }
        println!(
            "{:<9}  {:<20}  {:<24}  URL",
            "STATE", "WORKFLOW", "DISABLED AT"
        );
        for e in body["endpoints"].as_array().into_iter().flatten() {
            let state = if e["disabled"].as_bool() == Some(true) {
                "disabled"
            } else {
                "enabled"
            };
            println!(
                "{:<9}  {:<20}  {:<24}  {}",
                state,
                text(&e["workflow"]),
                time(&e["disabled_at"]),
                text(&e["url"])
            );
        }
        Ok(())
    }

    pub async fn enable_endpoint(&self, url: &str) -> anyhow::Result<()> {
        self.post("/api/endpoints/enable", json!({ "url": url }))
            .await?;
        println!("{url} enabled: its held events are sent now");
        Ok(())
    }
}

fn print_enabled(body: &Value) {
    if let Some(url) = body["enabled"].as_str() {
        println!("{url} was disabled (it had answered 410 Gone) and is enabled again");
    }
}

const CALL_COLUMNS: [Column; 6] = [
    Column::number("CALL"),
    Column::text("PHASE"),
    Column::text("WORKFLOW"),
    Column::text("SLUG"),
    Column::text("CREATED"),
    Column::text("ROOM"),
];

const DELIVERY_COLUMNS: [Column; 7] = [
    Column::number("ID"),
    Column::number("CALL"),
    Column::text("EVENT"),
    Column::text("STATUS"),
    Column::number("ATTEMPTS"),
    Column::text("CREATED"),
    Column::text("LAST ERROR"),
];

const LIVEKIT_EVENT_COLUMNS: [Column; 3] = [
    Column::text("RECEIVED"),
    Column::text("EVENT"),
    Column::text("LIVEKIT ID"),
];

const VOICEKIT_EVENT_COLUMNS: [Column; 6] = [
    Column::number("DELIVERY"),
    Column::text("EVENT"),
    Column::text("STATUS"),
    Column::number("ATTEMPTS"),
    Column::text("WEBHOOK ID"),
    Column::text("LAST ERROR"),
];

const ATTEMPT_COLUMNS: [Column; 5] = [
    Column::number("DELIVERY"),
    Column::text("AT"),
    Column::number("LATENCY MS"),
    Column::text("ENDPOINT"),
    Column::text("OUTCOME"),
];

/// `calls list`: one row per call of `GET /api/calls`.
fn calls_table(body: &Value) -> String {
    table::render(
        &CALL_COLUMNS,
        items(&body["calls"]).map(|c| {
            vec![
                number(&c["id"]),
                text(&c["phase"]).to_owned(),
                text(&c["workflow_slug"]).to_owned(),
                text(&c["call_slug"]).to_owned(),
                time(&c["created_at"]),
                text(&c["room_name"]).to_owned(),
            ]
        }),
    )
}

/// `deliveries list`: one row per delivery of `GET /api/deliveries`.
fn deliveries_table(body: &Value) -> String {
    table::render(
        &DELIVERY_COLUMNS,
        items(&body["deliveries"]).map(|d| {
            vec![
                number(&d["id"]),
                number(&d["call_id"]),
                text(&d["event_type"]).to_owned(),
                text(&d["status"]).to_owned(),
                number(&d["attempts"]),
                time(&d["created_at"]),
                d["last_error"].as_str().unwrap_or("").to_owned(),
            ]
        }),
    )
}

/// `calls show`: the call, its repairs and runtime data, then a table each of its
/// LiveKit events, its VoiceKit events and every delivery attempt.
fn call_detail(detail: &Value) -> String {
    let c = &detail["call"];
    let mut out = format!(
        "call {}  {}  workflow {}  slug {}\nroom {} ({})  created {}\n",
        number(&c["id"]),
        text(&c["phase"]),
        text(&c["workflow_slug"]),
        text(&c["call_slug"]),
        text(&c["room_name"]),
        text(&c["room_sid"]),
        time(&c["created_at"])
    );
    for repair in items(&detail["state"]["repairs"]) {
        out += &format!("repaired: {}\n", text(repair));
    }
    if !detail["runtime_data"].is_null() {
        out += &format!("runtime data: {}\n", detail["runtime_data"]);
    }
    let livekit = table::render(
        &LIVEKIT_EVENT_COLUMNS,
        items(&detail["livekit_events"]).map(|e| {
            vec![
                time(&e["received_at"]),
                text(&e["event_type"]).to_owned(),
                text(&e["event_id"]).to_owned(),
            ]
        }),
    );
    let voicekit = table::render(
        &VOICEKIT_EVENT_COLUMNS,
        items(&detail["deliveries"]).map(|d| {
            vec![
                number(&d["id"]),
                text(&d["event_type"]).to_owned(),
                text(&d["status"]).to_owned(),
                number(&d["attempts"]),
                text(&d["webhook_id"]).to_owned(),
                d["last_error"].as_str().unwrap_or("").to_owned(),
            ]
        }),
    );
    let attempts = table::render(
        &ATTEMPT_COLUMNS,
        items(&detail["attempts"]).map(|a| {
            let outcome = match a["status_code"].as_i64() {
                Some(code) => format!("HTTP {code}"),
                None => a["error"].as_str().unwrap_or("?").to_owned(),
            };
            vec![
                number(&a["outbox_id"]),
                time(&a["attempted_at"]),
                number(&a["latency_ms"]),
                text(&a["endpoint"]).to_owned(),
                outcome,
            ]
        }),
    );
    out += &format!(
        "\nLiveKit events:\n{livekit}\n\nVoiceKit events:\n{voicekit}\n\nAttempts:\n{attempts}"
    );
    out
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn number(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn time(v: &Value) -> String {
    v.as_i64().map(rfc3339_ms).unwrap_or_else(|| "-".into())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::table::tests::assert_aligned;

    /// 2026-12-01T10:00:00.000Z in milliseconds.
    const T: i64 = 1_796_119_200_000;

    fn calls() -> Value {
        json!({"calls": [
            {"id": 7, "phase": "in_progress", "workflow_slug": "customer-support",
             "call_slug": "abc12345", "created_at": T, "room_name": "VOICEKIT_workflow_abc12345_8453"},
            {"id": 123456, "phase": "ended", "workflow_slug": "a-much-longer-workflow-slug-than-most",
             "call_slug": "x", "created_at": T + 1, "room_name": "r"},
        ]})
    }

    #[test]
    fn calls_list_lines_its_rows_up_under_the_header() {
        let rows = vec![
            vec![
                "7".into(),
                "in_progress".into(),
                "customer-support".into(),
                "abc12345".into(),
                "2026-12-01T10:00:00.000Z".into(),
                "VOICEKIT_workflow_abc12345_8453".into(),
            ],
            vec![
                "123456".into(),
                "ended".into(),
                "a-much-longer-workflow-slug-than-most".into(),
                "x".into(),
                "2026-12-01T10:00:00.001Z".into(),
                "r".into(),
            ],
        ];
        assert_aligned(&calls_table(&calls()), &CALL_COLUMNS, &rows);
    }

    #[test]
    fn deliveries_list_lines_its_rows_up_under_the_header() {
        let body = json!({"deliveries": [
            {"id": 1, "call_id": 7, "event_type": "call_started", "status": "delivered",
             "attempts": 1, "created_at": T, "last_error": null},
            {"id": 10_000, "call_id": 123_456, "event_type": "call_finalized", "status": "failed",
             "attempts": 12, "created_at": T, "last_error": "HTTP 500"},
        ]});
        let rows = vec![
            vec![
                "1".into(),
                "7".into(),
                "call_started".into(),
                "delivered".into(),
                "1".into(),
                "2026-12-01T10:00:00.000Z".into(),
                String::new(),
            ],
            vec![
                "10000".into(),
                "123456".into(),
                "call_finalized".into(),
                "failed".into(),
                "12".into(),
                "2026-12-01T10:00:00.000Z".into(),
                "HTTP 500".into(),
            ],
        ];
        assert_aligned(&deliveries_table(&body), &DELIVERY_COLUMNS, &rows);
    }

    #[test]
    fn calls_show_prints_each_section_as_an_aligned_table_and_the_repairs() {
        let detail = json!({
            "call": {"id": 7, "phase": "ended", "workflow_slug": "customer-support",
                     "call_slug": "abc12345", "room_name": "room", "room_sid": "RM_1", "created_at": T},
            "state": {"repairs": ["ended by the bridge: the room stayed empty and no room_finished came"]},
            "runtime_data": {"customer": "Ada"},
            "livekit_events": [
                {"received_at": T, "event_type": "participant_joined", "event_id": "EV_1"},
                {"received_at": T, "event_type": "room_finished", "event_id": "EV_22"},
            ],
            "deliveries": [
                {"id": 3, "event_type": "call_started", "status": "failed", "attempts": 8,
                 "webhook_id": "msg_a", "last_error": "HTTP 500"},
                {"id": 4, "event_type": "call_ended", "status": "pending", "attempts": 0,
                 "webhook_id": "msg_bb", "last_error": null},
            ],
            "attempts": [
                {"outbox_id": 3, "attempted_at": T, "latency_ms": 12, "endpoint": "http://127.0.0.1:9/hook",
                 "status_code": 500, "error": null},
                {"outbox_id": 3, "attempted_at": T, "latency_ms": 10_000, "endpoint": "http://127.0.0.1:9/hook",
                 "status_code": null, "error": "timeout"},
            ],
        });
        let text = call_detail(&detail);
        assert!(text.starts_with("call 7  ended  workflow customer-support  slug abc12345\n"));
        assert!(
            text.contains("repaired: ended by the bridge: the room stayed empty"),
            "{text}"
        );
        assert!(
            text.contains(r#"runtime data: {"customer":"Ada"}"#),
            "{text}"
        );
        let section = |title: &str| -> String {
            let start = text
                .find(title)
                .unwrap_or_else(|| panic!("{title} in {text}"));
            text[start + title.len()..]
                .lines()
                .take_while(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let at = "2026-12-01T10:00:00.000Z".to_owned();
        assert_aligned(
            &section("LiveKit events:\n"),
            &LIVEKIT_EVENT_COLUMNS,
            &[
                vec![at.clone(), "participant_joined".into(), "EV_1".into()],
                vec![at.clone(), "room_finished".into(), "EV_22".into()],
            ],
        );
        assert_aligned(
            &section("VoiceKit events:\n"),
            &VOICEKIT_EVENT_COLUMNS,
            &[
                vec![
                    "3".into(),
                    "call_started".into(),
                    "failed".into(),
                    "8".into(),
                    "msg_a".into(),
                    "HTTP 500".into(),
                ],
                vec![
                    "4".into(),
                    "call_ended".into(),
                    "pending".into(),
                    "0".into(),
                    "msg_bb".into(),
                    String::new(),
                ],
            ],
        );
        assert_aligned(
            &section("Attempts:\n"),
            &ATTEMPT_COLUMNS,
            &[
                vec![
                    "3".into(),
                    at.clone(),
                    "12".into(),
                    "http://127.0.0.1:9/hook".into(),
                    "HTTP 500".into(),
                ],
                vec![
                    "3".into(),
                    at,
                    "10000".into(),
                    "http://127.0.0.1:9/hook".into(),
                    "timeout".into(),
                ],
            ],
        );
    }
}
