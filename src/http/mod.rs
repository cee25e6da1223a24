//! The daemon's HTTP face: LiveKit's webhook route, health, readiness and metrics.

mod ingest;
pub mod operator;
mod ops;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::{ingest::Ingestor, livekit::auth::WebhookVerifier, shutdown::Shutdown, store::Store};

/// What request handlers share.
pub struct AppState {
    pub verifier: WebhookVerifier,
    pub ingestor: Ingestor,
    pub max_body_bytes: usize,
    /// For `/readyz` and the scrape-time gauges of `/metrics`.
    pub store: Store,
    /// `/readyz` answers 503 once shutdown has begun.
    pub shutdown: Shutdown,
}

pub fn router(webhook_path: &str, state: Arc<AppState>) -> Router {
    Router::new()
        .route(webhook_path, post(ingest::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        // The ingest handler enforces the configured limit itself, to answer 413 in JSON.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A short JSON error body: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
