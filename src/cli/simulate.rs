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
use rand::{Rng, distr::Alphanumeric};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::{Config, Workflow};
use crate::testkit::call::{Call, Step, WHOLE_CALL};
use crate::testkit::token;
use crate::testkit::webhook::{self, Room};

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
    let call = simulated_call(wf, config);
    let key = &config.livekit.keys[0];
    let http = reqwest::Client::new();
    println!(
        "simulating a call in room {} (workflow {:?}) against {target}",
        call.room.name, wf.slug
    );
    for step in WHOLE_CALL {
        let label = label(&call, step, &config.recordings.bucket);
        let body = call.webhook(step);
        let token = token::sign(&key.key, key.secret.expose(), body.as_bytes())?;
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

/// A call in a fresh room the workflow claims (by name and by metadata), started 100 s
/// ago on a whole second so the durations are easy to check by eye, recorded where
/// the configured bucket would hold it.
fn simulated_call(wf: &Workflow, config: &Config) -> Call {
    let t0_ms = crate::store::now_ms() / 1000 * 1000 - 100_000;
    let slug: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(8)
        .map(|b| (b as char).to_ascii_lowercase())
        .collect();
    let room_name = format!(
        "VOICEKIT_workflow_{slug}_{}",
        rand::rng().random_range(1000..9999)
    );
    let room_sid = webhook::new_event_id().replacen("EV_", "RM_", 1);
    let room = Room::new(&room_sid, &room_name, t0_ms)
        .with_metadata(&json!({ "workflow_slug": wf.slug }).to_string());
    let bucket = &config.recordings.bucket;
    let location_base = match &config.recordings.endpoint {
        Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        None => format!("https://{bucket}.s3.amazonaws.com"),
    };
    Call::new(room, "+15551230001", "+15557650002", &location_base)
}

/// What `step` is, as the simulation prints it.
fn label(call: &Call, step: Step, bucket: &str) -> String {
    let phone = call
        .caller
        .attributes
        .iter()
        .find(|(k, _)| k == "sip.phoneNumber")
        .map_or("", |(_, v)| v.as_str());
    match step {
        Step::RoomStarted => "room_started".into(),
        Step::CallerJoined => format!("participant_joined (SIP caller {phone})"),
        Step::AgentJoined => "participant_joined (agent)".into(),
        Step::EgressStarted => "egress_started".into(),
        Step::CallerLeft => "participant_left (SIP caller)".into(),
        Step::AgentLeft => "participant_left (agent)".into(),
        Step::RoomFinished => "room_finished".into(),
        Step::EgressEnded => format!("egress_ended (s3://{bucket}/{})", call.recording.filename),
    }
}
