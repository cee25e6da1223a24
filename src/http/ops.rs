//! `GET /readyz` and `GET /metrics`: what a load balancer and Prometheus ask.
//!
//! `/healthz` (in `mod.rs`) only says the process answers HTTP; `/readyz` says it can
//! take webhooks now: the store answers, its migrations are all applied and shutdown has
//! not begun. Each check is bounded, so a hung store makes it say 503, not hang.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::AppState;
use crate::{metrics, shutdown::Shutdown, store::Store};

/// How long a store query made for `/readyz` or `/metrics` may take.
const STORE_CHECK: Duration = Duration::from_secs(2);

pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    match readiness(&app.store, &app.shutdown).await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        )
            .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready", "reason": reason })),
        )
            .into_response(),
    }
}

/// Why the daemon cannot take webhooks now, if it cannot.
async fn readiness(store: &Store, shutdown: &Shutdown) -> Result<(), String> {
    if shutdown.is_shutdown() {
        return Err("shutting down".into());
    }
    let slow = || format!("store did not answer within {STORE_CHECK:?}");
    match tokio::time::timeout(STORE_CHECK, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("store unreachable: {e}")),
        Err(_) => return Err(slow()),
    }
    match tokio::time::timeout(STORE_CHECK, store.pending_migrations()).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(n)) => Err(format!("{n} store migration(s) not applied")),
        Ok(Err(e)) => Err(format!("cannot read the migration state: {e}")),
        Err(_) => Err(slow()),
    }
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let gauges = match tokio::time::timeout(STORE_CHECK, app.store.gauges()).await {
        Ok(Ok(gauges)) => Some(gauges),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: store gauges unavailable");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: store gauges timed out");
            None
        }
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(gauges.as_ref()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_while_serving_not_once_shutdown_began() {
        let (store, _dir) = crate::store::test_sqlite_store().await;
        let (trigger, shutdown) = crate::shutdown::channel();
        assert_eq!(readiness(&store, &shutdown).await, Ok(()));
        trigger.fire();
        assert_eq!(
            readiness(&store, &shutdown).await,
            Err("shutting down".to_owned())
        );
    }

    #[tokio::test]
    async fn not_ready_when_the_store_does_not_answer() {
        let (store, _dir) = crate::store::test_sqlite_store().await;
        let (_trigger, shutdown) = crate::shutdown::channel();
        store.close().await;
        let reason = readiness(&store, &shutdown).await.unwrap_err();
        assert!(reason.starts_with("store unreachable"), "{reason}");
    }

    #[tokio::test]
    async fn not_ready_when_a_migration_is_missing() {
        let (store, _dir) = crate::store::test_sqlite_store().await;
        let (_trigger, shutdown) = crate::shutdown::channel();
        crate::store::fixtures::execute(
            &store,
            "DELETE FROM _sqlx_migrations WHERE version = 1",
            &[],
        )
        .await;
        assert_eq!(
            readiness(&store, &shutdown).await,
            Err("1 store migration(s) not applied".to_owned())
        );
    }
}
