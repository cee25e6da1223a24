//! The delivery worker: takes due events from the outbox and POSTs them.
//!
//! Every attempt is recorded, every failure is rescheduled by the retry policy, and a
//! call's later events wait while an earlier one is still pending (the outbox query
//! enforces that), so order per call holds across retries and restarts.

use std::{sync::Arc, time::Duration};

use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use tokio::{sync::Notify, task::JoinSet, time::Instant};

use super::policy::RetryPolicy;
use crate::{
    call::{machine::RecordingFile, voicekit},
    config::{DeliveryConfig, SharedWorkflows},
    recording::{Published, Recordings},
    shutdown::Shutdown,
    store::{Attempt, AttemptOutcome, OutboxRow, Store, StoreError, now_ms},
};

/// `voicekit-bridge/0.1.0`: lets a customer's logs tell our requests from others.
pub const USER_AGENT_VALUE: &str = concat!("voicekit-bridge/", env!("CARGO_PKG_VERSION"));

/// The most response body kept with an attempt.
const RESPONSE_SNIPPET: usize = 4096;

/// Longest idle sleep: a safety net only, wake-ups come from ingest and due times.
const IDLE_POLL: Duration = Duration::from_secs(30);

pub struct Worker {
    store: Store,
    http: reqwest::Client,
    recordings: Recordings,
    policy: RetryPolicy,
    workflows: SharedWorkflows,
    wake: Arc<Notify>,
    concurrency: usize,
}

/// Why one attempt did not get a 2xx.
enum Failure {
    Status(u16, String),
    Error(String),
}

impl Worker {
    pub fn new(
        store: Store,
        recordings: Recordings,
        config: &DeliveryConfig,
        workflows: SharedWorkflows,
        wake: Arc<Notify>,
    ) -> Result<Worker, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout())
            // Standard Webhooks practice: a redirect is not a delivery.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Worker {
            store,
            http,
            recordings,
            policy: RetryPolicy::new(&config.retry_schedule_secs),
            workflows,
            wake,
            concurrency: config.concurrency,
        })
    }

    /// Delivers until shutdown; in-flight deliveries finish first (bounded by the timeout).
    pub async fn run(self, mut shutdown: Shutdown) {
        let worker = Arc::new(self);
        while !shutdown.is_shutdown() {
            let due = match worker
                .store
                .due_deliveries(now_ms(), worker.concurrency as i64 * 4)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait() => {}
                    }
                    continue;
                }
            };
            if due.is_empty() {
                let sleep = worker.idle_sleep().await;
                tokio::select! {
                    _ = worker.wake.notified() => {}
                    _ = tokio::time::sleep(sleep) => {}
                    _ = shutdown.wait() => {}
                }
                continue;
            }
            worker.deliver_all(due).await;
        }
        tracing::info!("delivery worker stopped");
    }

    async fn idle_sleep(&self) -> Duration {
        match self.store.next_due_at().await {
            Ok(Some(at)) => {
                Duration::from_millis((at - now_ms()).clamp(0, IDLE_POLL.as_millis() as i64) as u64)
            }
            _ => IDLE_POLL,
        }
    }

    async fn deliver_all(self: &Arc<Self>, due: Vec<OutboxRow>) {
        let mut tasks = JoinSet::new();
        for row in due {
            if tasks.len() >= self.concurrency {
                tasks.join_next().await;
            }
            let worker = self.clone();
            tasks.spawn(async move {
                let id = row.id;
                if let Err(e) = worker.deliver(row).await {
                    tracing::error!(outbox_id = id, error = %e, "could not record a delivery attempt; it will be retried");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn deliver(&self, mut row: OutboxRow) -> Result<(), StoreError> {
        let attempted_at = now_ms();
        let started = Instant::now();
        let endpoint = self
            .workflows
            .load()
            .iter()
            .find(|w| w.id == row.workflow_id)
            .map(|w| w.events_webhook_url.clone());

        let result = match (&endpoint, self.prepare(&mut row).await) {
            (None, _) => Err(Failure::Error(format!(
                "workflow {} is no longer configured",
                row.workflow_id
            ))),
            (_, Err(e)) => Err(Failure::Error(e)),
            (Some(url), Ok(())) => self.post(url, &row).await,
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let (status_code, error, response_body, ok) = match result {
            Ok((code, body)) => (Some(code), None, Some(body), true),
            Err(Failure::Status(code, body)) => (Some(code), None, Some(body), false),
            Err(Failure::Error(e)) => (None, Some(e), None, false),
        };
        let outcome = if ok {
            tracing::info!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id, latency_ms, "delivered");
            AttemptOutcome::Delivered
        } else {
            let failures = row.attempts as usize + 1;
            let why = error
                .clone()
                .unwrap_or_else(|| format!("HTTP {}", status_code.unwrap_or_default()));
            match self.policy.delay_after(failures) {
                Some(delay) => {
                    tracing::warn!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                        endpoint = endpoint.as_deref().unwrap_or("-"), attempt = failures, error = %why,
                        retry_in_secs = delay.as_secs_f64(), "delivery failed; will retry");
                    AttemptOutcome::RetryAt(now_ms() + delay.as_millis() as i64)
                }
                None => {
                    tracing::error!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                        endpoint = endpoint.as_deref().unwrap_or("-"), attempts = failures, error = %why,
                        "delivery failed for the last time; marked failed");
                    AttemptOutcome::Dead
                }
            }
        };
        let attempt = Attempt {
            outbox_id: row.id,
            attempted_at,
            endpoint: endpoint.unwrap_or_default(),
            status_code,
            error,
            latency_ms,
            response_body,
        };
        self.store.finish_attempt(&attempt, outcome).await
    }

    /// Publishes the recording URL into a `call_finalized` body before its first send.
    async fn prepare(&self, row: &mut OutboxRow) -> Result<(), String> {
        let Some(recording) = row.recording.take() else {
            return Ok(());
        };
        let file: RecordingFile = serde_json::from_str(&recording)
            .map_err(|e| format!("stored recording is corrupt: {e}"))?;
        let url = match self.recordings.publish(&file).await {
            Ok(Published::Url(url)) => Some(url),
            Ok(Published::Missing { bucket, key }) => {
                tracing::warn!(
                    call_id = row.call_id,
                    bucket,
                    key,
                    "recording not found in S3; call_finalized carries no URL"
                );
                None
            }
            Err(e) => {
                row.recording = Some(recording);
                return Err(format!("recording: {e}"));
            }
        };
        let payload = voicekit::with_recording_url(&row.payload, url.as_deref())
            .map_err(|e| format!("stored payload is corrupt: {e}"))?;
        self.store
            .set_payload(row.id, &payload)
            .await
            .map_err(|e| format!("saving the published URL: {e}"))?;
        row.payload = payload;
        Ok(())
    }

    async fn post(&self, url: &str, row: &OutboxRow) -> Result<(u16, String), Failure> {
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header("webhook-id", &row.webhook_id)
            .body(row.payload.clone())
            .send()
            .await
            .map_err(|e| Failure::Error(describe(&e)))?;
        let status = response.status().as_u16();
        let body = snippet(response).await;
        if (200..300).contains(&status) {
            Ok((status, body))
        } else {
            Err(Failure::Status(status, body))
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The first 4 KiB of a response body, without reading the rest.
async fn snippet(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < RESPONSE_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(RESPONSE_SNIPPET);
    String::from_utf8_lossy(&buf).into_owned()
}
