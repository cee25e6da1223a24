//! `calls ...`, `deliveries ...` and `endpoints ...`: the operator API, from a terminal.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

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
        println!(
            "{:>8}  {:<11}  {:<20}  {:<10}  {:<24}  ROOM",
            "CALL", "PHASE", "WORKFLOW", "SLUG", "CREATED"
        );
        for c in body["calls"].as_array().into_iter().flatten() {
            println!(
                "{:>8}  {:<11}  {:<20}  {:<10}  {:<24}  {}",
                c["id"],
                text(&c["phase"]),
                text(&c["workflow_slug"]),
                text(&c["call_slug"]),
                time(&c["created_at"]),
                text(&c["room_name"])
            );
        }
        Ok(())
    }

    pub async fn show_call(&self, id: i64, as_json: bool) -> anyhow::Result<()> {
        let d = self.get(&format!("/api/calls/{id}"), &[]).await?;
        if as_json {
            return print_json(&d);
        }
        let c = &d["call"];
        println!(
            "call {}  {}  workflow {}  slug {}\nroom {} ({})  created {}",
            c["id"],
            text(&c["phase"]),
            text(&c["workflow_slug"]),
            text(&c["call_slug"]),
            text(&c["room_name"]),
            text(&c["room_sid"]),
            time(&c["created_at"])
        );
        if let Some(by) = d["state"]["repaired_by"].as_str() {
            println!("repaired: {by}");
        }
        if !d["runtime_data"].is_null() {
            println!("runtime data: {}", d["runtime_data"]);
        }
        println!("\nLiveKit events:");
        for e in d["livekit_events"].as_array().into_iter().flatten() {
            println!(
                "  {}  {:<32}  {}",
                time(&e["received_at"]),
                text(&e["event_type"]),
                text(&e["event_id"])
            );
        }
        println!("\nVoiceKit events:");
        for e in d["deliveries"].as_array().into_iter().flatten() {
            println!(
                "  #{:<6} {:<18} {:<10} attempts {:<3} {}  {}",
                e["id"],
                text(&e["event_type"]),
                text(&e["status"]),
                e["attempts"],
                text(&e["webhook_id"]),
                e["last_error"].as_str().unwrap_or("")
            );
        }
        println!("\nAttempts:");
        for a in d["attempts"].as_array().into_iter().flatten() {
            let outcome = match a["status_code"].as_i64() {
                Some(code) => format!("HTTP {code}"),
                None => a["error"].as_str().unwrap_or("?").to_owned(),
            };
            println!(
                "  #{:<6} {}  {:>6} ms  {}  {}",
                a["outbox_id"],
                time(&a["attempted_at"]),
                a["latency_ms"],
                text(&a["endpoint"]),
                outcome
            );
        }
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
        println!(
            "{:>8}  {:>8}  {:<18}  {:<10}  {:>8}  {:<24}  LAST ERROR",
            "ID", "CALL", "EVENT", "STATUS", "ATTEMPTS", "CREATED"
        );
        for d in body["deliveries"].as_array().into_iter().flatten() {
            println!(
                "{:>8}  {:>8}  {:<18}  {:<10}  {:>8}  {:<24}  {}",
                d["id"],
                d["call_id"],
                text(&d["event_type"]),
                text(&d["status"]),
                d["attempts"],
                time(&d["created_at"]),
                d["last_error"].as_str().unwrap_or("")
            );
        }
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
