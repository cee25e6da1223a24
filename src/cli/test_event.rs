//! `send-test-event`: a signed sample event to a workflow's endpoint, and what it said.
//!
//! What VoiceKit's document sends customers to webhook.site and Postman for: checking
//! that an endpoint is reachable, answers 2xx and verifies our signature.

use anyhow::{Context, bail};
use rand::{Rng, distr::Alphanumeric};

use crate::{
    call::voicekit::{
        CallEndedData, CallFinalizedData, CallStartedData, EgressInfoData, EventKind, VoiceKitEvent,
    },
    config::Config,
    delivery::headers::delivery_headers,
    store::now_ms,
};

/// The sample values of VoiceKit's document, timed now.
pub(crate) fn sample(
    kind: EventKind,
    workflow_slug: &str,
    workflow_id: i64,
    organization_id: i64,
) -> VoiceKitEvent {
    let at_ms = now_ms();
    match kind {
        EventKind::CallStarted => VoiceKitEvent::CallStarted {
            at_ms,
            data: CallStartedData {
                call_id: 123,
                workflow_slug: workflow_slug.into(),
                phone_number: Some("+1234567890".into()),
            },
        },
        EventKind::CallEnded => VoiceKitEvent::CallEnded {
            at_ms,
            data: CallEndedData {
                call_id: 123,
                workflow_slug: workflow_slug.into(),
                phone_number: Some("+1234567890".into()),
                duration_seconds: 150,
                duration_minutes: 3,
            },
        },
        EventKind::CallFinalized => VoiceKitEvent::CallFinalized {
            at_ms,
            data: CallFinalizedData {
                call_id: 123,
                call_slug: "abc12345".into(),
                recording_url: Some("https://recordings.voicekit.com/path/to/audio.ogg".into()),
                workflow_id,
                organization_id,
                egress_info: EgressInfoData {
                    egress_id: "EG_dmi8xHQYNX6r".into(),
                    room_id: "RM_kfWfYGzHvVYy".into(),
                    room_name: "VOICEKIT_workflow_abc12345_8453".into(),
                    status: "EGRESS_COMPLETE".into(),
                    started_at: "1749599674369480049".into(),
                    ended_at: "1749599765791839485".into(),
                    duration: "88756989820".into(),
                    file_size: "1442477".into(),
                    file_type: Some("ogg".into()),
                },
            },
        },
    }
}

pub async fn run(config: &Config, workflow: &str, event: &str) -> anyhow::Result<()> {
    let kind = EventKind::parse(event).with_context(|| {
        format!("unknown event {event:?}: call_started, call_ended or call_finalized")
    })?;
    let wf = config
        .workflows
        .iter()
        .find(|w| w.slug == workflow)
        .with_context(|| format!("no workflow with slug {workflow:?} in the config"))?;
    let body = sample(kind, &wf.slug, wf.id, wf.organization_id).to_json();
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    let id = format!("msg_test_{suffix}");
    let headers = delivery_headers(&id, now_ms() / 1000, &wf.signing_keys, body.as_bytes())
        .context("building the request headers")?;
    println!("POST {}", wf.events_webhook_url);
    for (name, value) in &headers {
        println!("{name}: {}", value.to_str().unwrap_or("?"));
    }
    println!("\n{body}\n");
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.delivery.timeout)
        .build()?
        .post(&wf.events_webhook_url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .with_context(|| format!("sending to {}", wf.events_webhook_url))?;
    let status = response.status();
    println!("HTTP {}", status);
    for (name, value) in response.headers() {
        println!("{name}: {}", value.to_str().unwrap_or("?"));
    }
    println!("\n{}", response.text().await.unwrap_or_default());
    if !status.is_success() {
        bail!("the endpoint answered {status}: VoiceKit events to it would be retried");
    }
    Ok(())
}
