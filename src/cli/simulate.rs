//! `voicekit-bridge simulate`: one complete call, played as LiveKit would play it.
//!
//! A newcomer (or an operator checking an install) sees the whole flow in a minute:
//! signed room, SIP caller, agent and egress webhooks go to the running daemon, and when
//! the workflow's endpoint is on loopback we listen there and print the VoiceKit events
//! as they arrive. Timing is compressed: the timestamps describe a 93-second call, but
//! the webhooks are posted at once.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use axum::{Router, body::Bytes, routing::post};
use base64::Engine;
use livekit_api::access_token::AccessToken;
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::{Config, Workflow};

/// Plays the call and, when possible, waits for `call_finalized`.
pub async fn run(config: &Config, workflow: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    let wf = match workflow {
        Some(slug) => config
            .workflows
            .iter()
            .find(|w| w.slug == slug)
            .with_context(|| format!("no workflow with slug {slug:?} in the config"))?,
        None => &config.workflows[0],
    };
    let mut listen = config.server.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip([127, 0, 0, 1].into());
    }
    let target = format!("http://{listen}{}", config.server.webhook_path);

    let mut arrivals = listen_on_loopback(&wf.events_webhook_url).await?;
    let call = SimulatedCall::new(wf, config);
    let key = &config.livekit.keys[0];
    let http = reqwest::Client::new();
    println!(
        "simulating a call in room {} (workflow {:?}) against {target}",
        call.room_name, wf.slug
    );
    for (label, body) in call.webhooks() {
        let token = sign(&key.key, key.secret.expose(), body.as_bytes())?;
        let response = http
            .post(&target)
            .header("Content-Type", "application/webhook+json")
            .header("Authorization", token)
            .body(body)
            .send()
            .await
            .with_context(|| format!("posting to {target}: is the daemon running?"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!("  -> {label:<40} {} {text}", status.as_u16());
        if !status.is_success() {
            bail!("the daemon answered {status} to {label}");
        }
    }

    let Some(rx) = arrivals.as_mut() else {
        println!(
            "the workflow's endpoint {} is not on loopback: check it for the three events",
            wf.events_webhook_url
        );
        return Ok(());
    };
    println!(
        "waiting for VoiceKit events on {} ...",
        wf.events_webhook_url
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let body = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .context("timed out waiting for the VoiceKit events (see the daemon's log)")?
            .context("the listener stopped")?;
        // Printed as the bytes arrived: that is exactly what the customer receives.
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let event = value["event"].as_str().unwrap_or("?").to_owned();
        println!("  <- {event}\n     {}", String::from_utf8_lossy(&body));
        if event == "call_finalized" {
            return Ok(());
        }
    }
}

/// Listens where the workflow's endpoint is, when that is on this machine.
async fn listen_on_loopback(url: &str) -> anyhow::Result<Option<mpsc::UnboundedReceiver<Bytes>>> {
    let parsed = url::Url::parse(url)?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !loopback {
        return Ok(None);
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addr: SocketAddr = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => (ip, port).into(),
        Some(url::Host::Ipv4(ip)) => (ip, port).into(),
        _ => ([127, 0, 0, 1], port).into(),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for the workflow's events"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        parsed.path(),
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Some(rx))
}

fn sign(key: &str, secret: &str, body: &[u8]) -> anyhow::Result<String> {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    Ok(AccessToken::with_api_key(key, secret)
        .with_ttl(Duration::from_secs(300))
        .with_sha256(&hash)
        .to_jwt()?)
}

fn random_id(prefix: &str) -> String {
    let s: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(12)
        .map(char::from)
        .collect();
    format!("{prefix}{s}")
}

/// The timeline of one call, in LiveKit's protojson shapes.
struct SimulatedCall {
    room_sid: String,
    room_name: String,
    metadata: String,
    bucket: String,
    location_base: String,
    /// Room creation, on a whole second so the durations are easy to check by eye.
    t0: i64,
}

impl SimulatedCall {
    fn new(wf: &Workflow, config: &Config) -> SimulatedCall {
        let t0 = crate::store::now_ms() / 1000 - 100;
        let slug: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(8)
            .map(|b| (b as char).to_ascii_lowercase())
            .collect();
        let room_name = format!(
            "VOICEKIT_workflow_{slug}_{}",
            rand::rng().random_range(1000..9999)
        );
        let bucket = config.recordings.bucket.clone();
        let location_base = match &config.recordings.endpoint {
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.amazonaws.com"),
        };
        SimulatedCall {
            room_sid: random_id("RM_"),
            room_name,
            metadata: json!({ "workflow_slug": wf.slug }).to_string(),
            bucket,
            location_base,
            t0,
        }
    }

    fn room(&self) -> Value {
        json!({ "sid": self.room_sid, "name": self.room_name, "emptyTimeout": 300,
                "departureTimeout": 20, "creationTime": self.t0.to_string(),
                "creationTimeMs": (self.t0 * 1000).to_string(), "metadata": self.metadata })
    }

    fn event(&self, event: &str, at_s: i64, extra: Value) -> String {
        let mut body = json!({ "event": event, "room": self.room() });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body["id"] = json!(random_id("EV_"));
        body["createdAt"] = json!(at_s.to_string());
        body.to_string()
    }

    fn participant(
        sid: &str,
        identity: &str,
        kind: &str,
        joined_ms: i64,
        attributes: Value,
    ) -> Value {
        json!({ "sid": sid, "identity": identity, "state": "ACTIVE",
                "joinedAt": (joined_ms / 1000).to_string(), "joinedAtMs": joined_ms.to_string(),
                "kind": kind, "attributes": attributes })
    }

    fn webhooks(&self) -> Vec<(String, String)> {
        let t0 = self.t0;
        let phone = "+15551230001";
        let sip = Self::participant(
            "PA_simcaller",
            &format!("sip_{phone}"),
            "SIP",
            t0 * 1000 + 1_200,
            json!({ "sip.phoneNumber": phone, "sip.trunkPhoneNumber": "+15557650002",
                    "sip.callID": "SCL_simulated", "sip.callStatus": "active" }),
        );
        let agent = Self::participant(
            "PA_simagent",
            "agent-simulated",
            "AGENT",
            t0 * 1000 + 2_000,
            json!({}),
        );
        let egress_id = random_id("EG_");
        let key = format!("recordings/{}/{}.ogg", self.room_name, egress_id);
        let egress = |status: Option<&str>, ended: bool| {
            let mut info = json!({ "egressId": egress_id, "roomId": self.room_sid,
                "roomName": self.room_name, "startedAt": ((t0 + 3) * 1_000_000_000).to_string() });
            if let Some(s) = status {
                info["status"] = json!(s);
            }
            if ended {
                let file = json!({ "filename": key, "startedAt": ((t0 + 3) * 1_000_000_000).to_string(),
                    "endedAt": ((t0 + 96) * 1_000_000_000).to_string(), "duration": "93000000000",
                    "size": "1442477", "location": format!("{}/{key}", self.location_base) });
                info["endedAt"] = json!(((t0 + 97) * 1_000_000_000).to_string());
                info["fileResults"] = json!([file]);
                info["file"] = file;
            }
            json!({ "egressInfo": info, "room": { "sid": self.room_sid, "name": self.room_name } })
        };
        let mut out = vec![
            (
                "room_started".to_owned(),
                self.event("room_started", t0, json!({})),
            ),
            (
                format!("participant_joined (SIP caller {phone})"),
                self.event("participant_joined", t0 + 1, json!({ "participant": sip })),
            ),
            (
                "participant_joined (agent)".to_owned(),
                self.event(
                    "participant_joined",
                    t0 + 2,
                    json!({ "participant": agent }),
                ),
            ),
            (
                "egress_started".to_owned(),
                self.event("egress_started", t0 + 3, egress(None, false)),
            ),
            (
                "participant_left (SIP caller)".to_owned(),
                self.event("participant_left", t0 + 94, json!({ "participant": sip })),
            ),
            (
                "participant_left (agent)".to_owned(),
                self.event("participant_left", t0 + 95, json!({ "participant": agent })),
            ),
            (
                "room_finished".to_owned(),
                self.event("room_finished", t0 + 96, json!({})),
            ),
        ];
        let mut ended = self.event(
            "egress_ended",
            t0 + 97,
            egress(Some("EGRESS_COMPLETE"), true),
        );
        // Egress events carry only the room's sid and name.
        if let Ok(mut v) = serde_json::from_str::<Value>(&ended) {
            v["room"] = json!({ "sid": self.room_sid, "name": self.room_name });
            ended = v.to_string();
        }
        out.push((format!("egress_ended (s3://{}/{key})", self.bucket), ended));
        out
    }
}
