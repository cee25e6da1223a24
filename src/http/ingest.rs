//! `POST {webhook_path}`: where LiveKit delivers its webhooks.
//!
//! The answer tells LiveKit whether to retry: 401/400/408/413 are final (LiveKit does
//! not retry 4xx), 503 means "not stored, try again", and 200 only comes after the event
//! and everything it causes are committed. The token in `Authorization` is checked
//! before the body is read, so a forged request costs a header parse and one HMAC, and
//! refusals are counted by reason and logged as a periodic summary, not a line each.

use std::sync::Arc;

use axum::{
    body::{Body, to_bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha256};

use http_body_util::LengthLimitError;

use super::{
    AppState, error,
    listener::BodyTimedOut,
    summary::{self, Event},
};
use crate::{
    ingest::Accepted,
    livekit::event::WebhookEvent,
    metrics::{self, WebhookResult},
};

pub(super) async fn receive(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = app.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        refused(
            Refusal::TooLarge,
            "too_large",
            &format_args!("{declared:?} bytes declared, limit {limit}"),
        );
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }

    // The token first: a forged request is refused before its body is read.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let hash = match app.verifier.verify_token(authorization) {
        Ok(hash) => hash,
        Err(e) => {
            refused(Refusal::Unauthorized, e.reason(), &e);
            return error(StatusCode::UNAUTHORIZED, "unauthorized");
        }
    };

    let body = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => return unread_body(&app, e),
    };
    if let Err(e) = hash.check(&body) {
        refused(Refusal::Unauthorized, e.reason(), &e);
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }

    let event = match WebhookEvent::parse(&body) {
        Ok(event) => event,
        Err(e) => {
            refused(Refusal::BadBody, e.reason(), &e);
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

/// What a webhook was refused for, as the log says it; `reason` (the metric's label)
/// says it in detail.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TooLarge,
    TooSlow,
    BadBody,
    Unauthorized,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::TooLarge => "body too large",
            Refusal::TooSlow => "body too slow",
            Refusal::BadBody => "bad body",
            Refusal::Unauthorized => "unauthorized",
        }
    }
}

/// Counts a refused webhook and logs it: at once when it is the first with this reason
/// in the summary interval, else only in the summary line (see `summary`).
fn refused(refusal: Refusal, reason: &'static str, detail: &dyn std::fmt::Display) {
    metrics::webhook_rejected(reason);
    let what = refusal.as_str();
    if summary::note(Event::Rejected(reason)) {
        tracing::warn!(
            reason,
            %detail,
            "webhook rejected: {what} (more like it are summarised every log.summary_interval_secs)"
        );
    } else {
        tracing::debug!(reason, %detail, "webhook rejected: {what}");
    }
}

/// The answer when the body could not be read: 408 when it did not arrive in time,
/// 413 when it is longer than allowed, 400 when the connection broke.
fn unread_body(app: &AppState, e: axum::Error) -> Response {
    let inner = e.into_inner();
    if caused_by::<BodyTimedOut>(&*inner) {
        refused(Refusal::TooSlow, "body_timeout", &inner);
        let mut answer = error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the body did not arrive within {:?}", app.body_timeout),
        );
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return answer;
    }
    if caused_by::<LengthLimitError>(&*inner) {
        refused(Refusal::TooLarge, "too_large", &inner);
        return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    }
    refused(Refusal::BadBody, "body_unreadable", &inner);
    error(StatusCode::BAD_REQUEST, "the body could not be read")
}

/// Whether `e` or one of its sources is a `T` (the body's errors come wrapped by axum).
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<T>() {
            return true;
        }
        next = e.source();
    }
    false
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
