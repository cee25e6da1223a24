//! One delivery attempt: the recording published into the body, the signed POST, what
//! its answer means for the retry policy, the breaker and a 410'd endpoint, and the
//! outcome recorded (patiently, while the store refuses writes).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{
    headers::delivery_headers,
    recording::{Published, RecordingError},
    worker::{Inner, Target},
};
use crate::{
    call::{machine::RecordingFile, voicekit},
    livekit::api::{LiveKitApiError, merge_metadata},
    metrics,
    store::{Attempt, AttemptOutcome, HOOK_EVENT, OutboxRow, StoreError, WriteError, now_ms},
};

/// The first wait before recording an outcome again after the store refused it; it
/// doubles up to [`RECORD_RETRY_MAX`]. The request is not sent again meanwhile.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(250);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(10);

/// The most response body kept with an attempt.
const RESPONSE_SNIPPET: usize = 4096;

/// Why a delivery's outcome was not recorded (it is then sent again).
#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Write(#[from] WriteError),
}

/// Why one attempt did not get a 2xx. It stays this type until the attempt is recorded:
/// the retry policy, the breaker and the 410 handling read its variants, and only the
/// log and the attempt's stored `error` read its text.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The endpoint answered; `retry_after` from 429/503.
    #[error("HTTP {code}")]
    Status {
        code: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// The endpoint could not be reached, or timed out.
    #[error("{}", describe(.0))]
    Network(reqwest::Error),
    /// Nothing was sent.
    #[error("{0}")]
    NotSent(#[from] NotSent),
}

impl Failure {
    /// Whether the endpoint itself failed (which counts against its circuit breaker).
    fn reached_endpoint(&self) -> bool {
        matches!(self, Failure::Status { .. } | Failure::Network(_))
    }
}

/// Why an attempt sent nothing.
#[derive(Debug, thiserror::Error)]
enum NotSent {
    #[error("workflow {workflow_id} has no {missing} configured")]
    NoEndpoint {
        workflow_id: i64,
        missing: &'static str,
    },
    #[error("stored recording is corrupt: {0}")]
    CorruptRecording(serde_json::Error),
    #[error("recording: {0}")]
    Recording(RecordingError),
    #[error("stored payload is corrupt: {0}")]
    CorruptPayload(serde_json::Error),
    #[error("saving the published URL: {0}")]
    SavingUrl(WriteError),
    #[error("stored webhook id is not a header value")]
    BadWebhookId,
}

/// Why a hook's 2xx answer gave the call no runtime data (recorded with the attempt;
/// the call's events are not affected).
#[derive(Debug, thiserror::Error)]
enum RuntimeDataError {
    #[error("the hook's 2xx answer is not a JSON object: no runtime data")]
    NotAnObject,
    #[error("storing runtime data: {0}")]
    Storing(StoreError),
    #[error("loading the call: {0}")]
    Loading(StoreError),
    #[error("the call is gone")]
    CallGone,
    #[error("runtime data stored, but not written to the room: {0}")]
    Room(LiveKitApiError),
}

impl Inner {
    /// Sends one row and records the outcome. The endpoint's slot is given back as soon
    /// as the request is over, so the next request overlaps this one's commit; the row
    /// itself stays in flight until its outcome is durable.
    pub(super) async fn deliver(
        &self,
        mut row: OutboxRow,
        target: Option<Target>,
        slot: &str,
    ) -> Result<(), DeliveryError> {
        let attempted_at = now_ms();
        let started = Instant::now();
        let is_hook = row.event_type == HOOK_EVENT;
        let result = match &target {
            None => Err(Failure::NotSent(NotSent::NoEndpoint {
                workflow_id: row.workflow_id,
                missing: if is_hook {
                    "call_started_hook"
                } else {
                    "events_webhook_url"
                },
            })),
            Some(t) => match self.prepare(&mut row).await {
                Err(e) => Err(e.into()),
                Ok(()) => self.post(t, &row).await,
            },
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        self.release_slot(slot);
        let endpoint = target.map(|t| t.url).unwrap_or_default();
        let failures = row.attempts as usize + 1;

        let mut attempt = Attempt {
            outbox_id: row.id,
            attempted_at,
            endpoint: endpoint.clone(),
            status_code: None,
            error: None,
            latency_ms,
            response_body: None,
        };
        let outcome = match result {
            Ok((code, body)) => {
                attempt.status_code = Some(code);
                if is_hook {
                    attempt.error = self
                        .apply_runtime_data(&row, &body)
                        .await
                        .err()
                        .map(|e| e.to_string());
                }
                attempt.response_body = Some(body);
                self.endpoint_succeeded(&endpoint);
                tracing::info!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id, latency_ms, "delivered");
                AttemptOutcome::Delivered
            }
            Err(failure) => {
                if failure.reached_endpoint() {
                    self.endpoint_failed(&endpoint);
                }
                let outcome = self
                    .failure_outcome(&row, &endpoint, &failure, failures, is_hook)
                    .await?;
                match failure {
                    Failure::Status { code, body, .. } => {
                        attempt.status_code = Some(code);
                        attempt.response_body = Some(body);
                    }
                    other => attempt.error = Some(other.to_string()),
                }
                outcome
            }
        };
        if !is_hook {
            let metric = match &outcome {
                AttemptOutcome::Delivered => metrics::DeliveryOutcome::Delivered,
                AttemptOutcome::RetryAt(_) => metrics::DeliveryOutcome::Retry,
                AttemptOutcome::Dead => metrics::DeliveryOutcome::Failed,
            };
            let slug = self
                .workflows
                .load()
                .iter()
                .find(|w| w.id == row.workflow_id)
                .map_or_else(|| row.workflow_id.to_string(), |w| w.slug.clone());
            metrics::delivery_finished(&slug, metric, started.elapsed().as_secs_f64());
        }
        self.record(attempt, outcome, &row).await
    }

    /// Records an attempt's outcome. While the store refuses writes (a full disk) the
    /// row stays in flight, so it is not sent again, and the same outcome is recorded
    /// again with a growing wait until the store takes it: the customer sees the
    /// webhook-id once more at most (after a restart), not once per dispatch round.
    async fn record(
        &self,
        attempt: Attempt,
        outcome: AttemptOutcome,
        row: &OutboxRow,
    ) -> Result<(), DeliveryError> {
        let mut wait = RECORD_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let stopped = self.stopped.notified();
            let error = match self.writer.record(attempt.clone(), outcome).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(outbox_id = row.id, webhook_id = %row.webhook_id, failures,
                            "delivery outcome recorded after the store took writes again");
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return Err(error.into());
            }
            failures += 1;
            if failures == 1 {
                tracing::error!(outbox_id = row.id, webhook_id = %row.webhook_id, error = %error,
                    "cannot record a delivery's outcome; not sending it again, recording it once the store takes writes");
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped => return Err(error.into()),
            }
            wait = (wait * 2).min(RECORD_RETRY_MAX);
        }
    }

    /// Decides what a failed attempt leads to, and logs it once.
    async fn failure_outcome(
        &self,
        row: &OutboxRow,
        endpoint: &str,
        failure: &Failure,
        failures: usize,
        is_hook: bool,
    ) -> Result<AttemptOutcome, StoreError> {
        let retry_after = match failure {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        };
        if is_hook {
            // Runtime data only helps while the call is starting: one try, then the
            // call goes on without it (its events never wait for the hook).
            tracing::warn!(call_id = row.call_id, endpoint, error = %failure, "call_started_hook failed; the call continues without runtime data");
            return Ok(AttemptOutcome::Dead);
        }
        if matches!(failure, Failure::Status { code: 410, .. }) {
            // The customer says the URL is gone: disable it, for every bridge and across
            // restarts, and hold this event and the endpoint's others (pending, not
            // sent) until an operator enables it again.
            let newly = self
                .store
                .disable_endpoint(endpoint, "answered 410 Gone")
                .await?;
            self.disabled
                .lock()
                .expect("disabled lock")
                .urls
                .insert(endpoint.to_owned());
            if newly {
                tracing::error!(endpoint, call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                    "endpoint answered 410 Gone: disabled; its events are held until `voicekit-bridge endpoints enable` (or a new URL for the workflow)");
            }
            return Ok(AttemptOutcome::RetryAt(now_ms()));
        }
        let scheduled = self.policy.delay_after(failures);
        let delay = match (scheduled, retry_after) {
            (None, _) => None,
            (Some(d), None) => Some(d),
            // The endpoint said when: honour it, within reason.
            (Some(_), Some(asked)) => Some(asked.min(self.config.max_retry_after)),
        };
        Ok(match delay {
            Some(delay) => {
                tracing::warn!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                    endpoint, attempt = failures, error = %failure, retry_in_secs = delay.as_secs_f64(),
                    "delivery failed; will retry");
                AttemptOutcome::RetryAt(now_ms() + delay.as_millis() as i64)
            }
            None => {
                tracing::error!(call_id = row.call_id, event = %row.event_type, webhook_id = %row.webhook_id,
                    endpoint, attempts = failures, error = %failure,
                    "delivery failed for the last time; marked failed");
                AttemptOutcome::Dead
            }
        })
    }

    /// Publishes the recording URL into a `call_finalized` body before its first send.
    async fn prepare(&self, row: &mut OutboxRow) -> Result<(), NotSent> {
        let Some(recording) = row.recording.take() else {
            return Ok(());
        };
        let file: RecordingFile =
            serde_json::from_str(&recording).map_err(NotSent::CorruptRecording)?;
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
            Ok(Published::OtherBucket { bucket, key }) => {
                tracing::warn!(
                    call_id = row.call_id,
                    bucket,
                    key,
                    "the egress uploaded the recording to another bucket than [recordings] bucket; call_finalized carries no URL"
                );
                None
            }
            Err(e) => {
                row.recording = Some(recording);
                return Err(NotSent::Recording(e));
            }
        };
        let payload = voicekit::with_recording_url(&row.payload, url.as_deref())
            .map_err(NotSent::CorruptPayload)?;
        self.writer
            .publish(row.id, payload.clone())
            .await
            .map_err(NotSent::SavingUrl)?;
        row.payload = payload;
        Ok(())
    }

    async fn post(&self, target: &Target, row: &OutboxRow) -> Result<(u16, String), Failure> {
        let headers = delivery_headers(
            &row.webhook_id,
            now_ms() / 1000,
            &target.keys,
            row.payload.as_bytes(),
        )
        .ok_or(NotSent::BadWebhookId)?;
        let response = self
            .http
            .post(&target.url)
            .timeout(target.timeout)
            .headers(headers)
            .body(row.payload.clone())
            .send()
            .await
            .map_err(Failure::Network)?;
        let code = response.status().as_u16();
        let retry_after = matches!(code, 429 | 503)
            .then(|| retry_after(response.headers()))
            .flatten();
        let body = snippet(response).await;
        if (200..300).contains(&code) {
            Ok((code, body))
        } else {
            Err(Failure::Status {
                code,
                body,
                retry_after,
            })
        }
    }

    /// Stores a hook's JSON object as the call's runtime data and writes it into the
    /// LiveKit room's metadata, so the agent can read it. An error is recorded with the
    /// attempt; the call's events are not affected.
    async fn apply_runtime_data(
        &self,
        row: &OutboxRow,
        body: &str,
    ) -> Result<(), RuntimeDataError> {
        let Ok(serde_json::Value::Object(data)) = serde_json::from_str(body) else {
            return Err(RuntimeDataError::NotAnObject);
        };
        let text = serde_json::Value::Object(data.clone()).to_string();
        self.store
            .set_runtime_data(row.call_id, &text)
            .await
            .map_err(RuntimeDataError::Storing)?;
        let call = self
            .store
            .call_state(row.call_id)
            .await
            .map_err(RuntimeDataError::Loading)?
            .ok_or(RuntimeDataError::CallGone)?;
        let metadata = merge_metadata(&call.room_metadata, &data);
        self.livekit
            .update_room_metadata(&call.room_name, &metadata)
            .await
            .map_err(|e| {
                tracing::warn!(call_id = row.call_id, room = %call.room_name, error = %e, "could not write runtime data into the room's metadata");
                RuntimeDataError::Room(e)
            })?;
        tracing::info!(call_id = row.call_id, room = %call.room_name, "runtime data written to the room's metadata");
        Ok(())
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from webhook receivers and is
/// treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
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

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 120 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
