//! `POST {webhook_path}`: where LiveKit delivers its webhooks.
//!
//! The answer tells LiveKit whether to retry: 401/400/413 are final (LiveKit does not
//! retry 4xx), 503 means "not stored, try again", and 200 only comes after the event
//! and everything it causes are committed.

use std::sync::Arc;

use axum::{
    body::{Body, to_bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{AppState, error};
use crate::{
    ingest::Accepted,
    livekit::event::WebhookEvent,
    metrics::{self, WebhookResult},
};

pub async fn receive(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let limit = app.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        tracing::warn!(bytes = declared, limit, "webhook rejected: body too large");
        metrics::webhook_rejected("too_large");
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    let body = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // to_bytes fails on the limit or a broken connection; both mean "not accepted".
            tracing::warn!(limit, error = %e, "webhook rejected: body too large or unreadable");
            metrics::webhook_rejected("too_large");
            return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
        }
    };

    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(e) = app.verifier.verify(authorization, &body) {
        tracing::warn!(reason = e.reason(), detail = %e, "webhook rejected: unauthorized");
        metrics::webhook_rejected(e.reason());
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }

    let event = match WebhookEvent::parse(&body) {
        Ok(event) => event,
        Err(e) => {
            let reason = e.reason();
            tracing::warn!(reason, detail = %e, "webhook rejected: bad body");
            metrics::webhook_rejected(reason);
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };

    // LiveKit always sends an id; should one be missing, identical bodies are one event.
    let key = event
        .id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| {
            format!(
                "sha256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&body))
            )
        });
    let kind = event.event.clone();
    match app.ingestor.submit(event, key.clone()).await {
        Ok(accepted) => {
            let status = match &accepted {
                Accepted::Applied {
                    call_id, emitted, ..
                } => {
                    let emitted = emitted.len();
                    tracing::debug!(event = %kind, id = %key, call_id, emitted, "webhook accepted");
                    metrics::webhook_received(&kind, WebhookResult::Accepted);
                    ACCEPTED
                }
                Accepted::Duplicate => {
                    tracing::debug!(event = %kind, id = %key, "duplicate webhook ignored");
                    metrics::webhook_received(&kind, WebhookResult::Duplicate);
                    DUPLICATE
                }
                Accepted::Ignored(why) => {
                    tracing::info!(event = %kind, id = %key, why, "webhook ignored");
                    metrics::webhook_received(&kind, WebhookResult::Ignored);
                    IGNORED
                }
            };
            answered(status)
        }
        Err(e) => {
            tracing::error!(event = %kind, id = %key, error = %e, "webhook not stored; answering 503 so LiveKit retries");
            metrics::webhook_received(&kind, WebhookResult::Error);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily unable to store the event",
            )
        }
    }
}

// The bodies of the 200s, written as they are rather than built as a JSON value and
// serialized for every webhook.
const ACCEPTED: &str = r#"{"status":"accepted"}"#;
const DUPLICATE: &str = r#"{"status":"duplicate"}"#;
const IGNORED: &str = r#"{"status":"ignored"}"#;

/// A 200 with one of the fixed JSON bodies above.
fn answered(body: &'static str) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stored_webhook_is_answered_with_json_naming_what_became_of_it() {
        for (body, status) in [
            (ACCEPTED, "accepted"),
            (DUPLICATE, "duplicate"),
            (IGNORED, "ignored"),
        ] {
            let answer = answered(body);
            assert_eq!(answer.status(), StatusCode::OK);
            assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
            let bytes = to_bytes(answer.into_body(), 1024).await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json, serde_json::json!({ "status": status }));
        }
    }
}
