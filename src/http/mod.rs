//! The daemon's HTTP faces. The public webhook listener ([`router`]) serves LiveKit's
//! webhook route, `/healthz` and `/readyz`, and says nothing more than ok / not ready;
//! metrics, detailed readiness and the operator API are on the operator listener
//! ([`operator::router`]), loopback by default. Both are served by [`listener::serve`],
//! which bounds what a slow or hostile client can hold.

pub mod dashboard;
mod ingest;
pub(crate) mod listener;
pub(crate) mod operator;
mod ops;
pub(crate) mod summary;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

pub(crate) use ops::GaugeCache;

use tokio_util::sync::CancellationToken;

use crate::{ingest::Ingestor, livekit::auth::WebhookVerifier, store::Store};

/// What request handlers share.
pub(crate) struct AppState {
    pub verifier: WebhookVerifier,
    pub ingestor: Ingestor,
    pub max_body_bytes: usize,
    /// How long a webhook's body may take to arrive (for the 408's message).
    pub body_timeout: Duration,
    /// For `/readyz`.
    pub store: Store,
    /// `/readyz` answers 503 once shutdown has begun.
    pub shutdown: CancellationToken,
}

/// The public webhook listener's routes; anything else is an empty 404.
pub(crate) fn router(webhook_path: &str, state: Arc<AppState>) -> Router {
    Router::new()
        .route(webhook_path, post(ingest::receive))
        .route("/healthz", get(|| async { plain(StatusCode::OK, "ok\n") }))
        .route("/readyz", get(ops::public_readyz))
        // The ingest handler enforces the configured limit itself, to answer 413 in JSON.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A short JSON error body: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A plain-text answer.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}
