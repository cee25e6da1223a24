//! Readiness and metrics: what a load balancer and Prometheus ask.
//!
//! `/healthz` only says the process answers HTTP; `/readyz` says it can take webhooks
//! now: the store answers, its migrations are all applied and shutdown has not begun.
//! Each check is bounded, so a hung store makes it say 503, not hang. The public
//! listener answers `ok` / `not ready` and nothing else; the operator listener says why
//! (as a reason code: the store's own error text goes to the log, not to the client)
//! and serves `/metrics`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::{sync::Mutex, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{AppState, operator::OperatorState, plain};
use crate::{
    metrics::{self, StoreGauges},
    store::Store,
};

/// How long a store query made for `/readyz` or `/metrics` may take.
const STORE_CHECK: Duration = Duration::from_secs(2);

/// Why the daemon cannot take webhooks now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NotReady {
    /// A stable code: `shutting_down`, `store_write_failed`, `store_disk_full`,
    /// `store_unreachable`, `store_slow`, `migrations_pending`, `migrations_unreadable`.
    pub reason: &'static str,
    /// What an operator reads; never the store's own error text.
    pub detail: String,
}

fn not_ready(reason: &'static str, detail: impl Into<String>) -> NotReady {
    NotReady {
        reason,
        detail: detail.into(),
    }
}

/// Whether the daemon can take webhooks now; store errors are logged here.
pub(super) async fn readiness(store: &Store, shutdown: &CancellationToken) -> Result<(), NotReady> {
    if shutdown.is_cancelled() {
        return Err(not_ready("shutting_down", "shutdown has begun"));
    }
    // The latest write failed: not ready until one succeeds. A probe write finds out
    // when nothing else writes.
    if store.health().failing() {
        let probe = tokio::time::timeout(STORE_CHECK, store.probe_write()).await;
        if !matches!(probe, Ok(Ok(()))) {
            if let Ok(Err(e)) = probe {
                tracing::debug!(error = %e, "readiness: the store still refuses writes");
            }
            return Err(not_ready(
                "store_write_failed",
                "the store refused the latest write (the daemon's log says why)",
            ));
        }
    }
    // Small commits may still fit on a nearly full disk while a burst's do not: not
    // ready until there is room, rather than flipping with each write's luck.
    if let Err(e) = store.check_headroom() {
        tracing::debug!(error = %e, "readiness: the store's disk is nearly full");
        return Err(not_ready(
            "store_disk_full",
            "the disk under the store is nearly full (less than 1 MiB free)",
        ));
    }
    let slow = || {
        not_ready(
            "store_slow",
            format!("the store did not answer within {STORE_CHECK:?}"),
        )
    };
    match tokio::time::timeout(STORE_CHECK, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store does not answer");
            return Err(not_ready(
                "store_unreachable",
                "the store does not answer (the daemon's log says why)",
            ));
        }
        Err(_) => return Err(slow()),
    }
    match tokio::time::timeout(STORE_CHECK, store.pending_migrations()).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(n)) => Err(not_ready(
            "migrations_pending",
            format!("{n} store migration(s) not applied"),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: cannot read the migration state");
            Err(not_ready(
                "migrations_unreadable",
                "cannot read the store's migration state (the daemon's log says why)",
            ))
        }
        Err(_) => Err(slow()),
    }
}

/// `GET /readyz` on the public listener: `ok` or `not ready`, nothing more.
pub(super) async fn public_readyz(State(app): State<Arc<AppState>>) -> Response {
    match readiness(&app.store, &app.shutdown).await {
        Ok(()) => plain(StatusCode::OK, "ok\n"),
        Err(why) => {
            tracing::debug!(reason = why.reason, "readiness probe: not ready");
            plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }
}

/// `GET /readyz` on the operator listener: the same answer, with the reason.
pub(super) async fn operator_readyz(State(s): State<Arc<OperatorState>>) -> Response {
    match readiness(&s.store, &s.shutdown).await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        )
            .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "not_ready",
                "reason": why.reason,
                "detail": why.detail,
            })),
        )
            .into_response(),
    }
}

/// The store's counts for `/metrics`, read at most once per `refresh`: counting the
/// calls table on every scrape (several Prometheus servers, a short interval) would
/// cost the store more than the numbers are worth.
pub(crate) struct GaugeCache {
    refresh: Duration,
    last: Mutex<Option<(Instant, StoreGauges)>>,
}

impl GaugeCache {
    pub(crate) fn new(refresh: Duration) -> GaugeCache {
        GaugeCache {
            refresh,
            last: Mutex::new(None),
        }
    }

    /// The counts, read again if the last reading is older than `refresh`; `None` when
    /// the store did not answer. The age of the oldest pending event grows with the
    /// time since the reading.
    pub(crate) async fn get(&self, store: &Store) -> Option<StoreGauges> {
        // One reading at a time: concurrent scrapes wait for it instead of each querying.
        let mut last = self.last.lock().await;
        let now = Instant::now();
        if let Some((at, gauges)) = &*last
            && now.duration_since(*at) < self.refresh
        {
            let mut gauges = gauges.clone();
            if gauges.outbox_pending > 0 {
                gauges.oldest_pending_age_seconds += now.duration_since(*at).as_secs_f64();
            }
            return Some(gauges);
        }
        match tokio::time::timeout(STORE_CHECK, store.gauges()).await {
            Ok(Ok(gauges)) => {
                *last = Some((now, gauges.clone()));
                Some(gauges)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: store gauges unavailable");
                None
            }
            Err(_) => {
                tracing::warn!("metrics: store gauges timed out");
                None
            }
        }
    }
}

/// `GET /metrics` on the operator listener.
pub(super) async fn metrics(State(s): State<Arc<OperatorState>>) -> Response {
    let gauges = s.gauges.get(&s.store).await;
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
        let shutdown = CancellationToken::new();
        assert_eq!(readiness(&store, &shutdown).await, Ok(()));
        shutdown.cancel();
        assert_eq!(
            readiness(&store, &shutdown).await.unwrap_err().reason,
            "shutting_down"
        );
    }

    #[tokio::test]
    async fn not_ready_when_the_store_does_not_answer_without_its_error_text() {
        let (store, _dir) = crate::store::test_sqlite_store().await;
        let shutdown = CancellationToken::new();
        store.close().await;
        let why = readiness(&store, &shutdown).await.unwrap_err();
        assert_eq!(why.reason, "store_unreachable");
        assert!(!why.detail.contains("closed"), "{why:?}");
    }

    #[tokio::test]
    async fn not_ready_when_a_migration_is_missing() {
        let (store, _dir) = crate::store::test_sqlite_store().await;
        let shutdown = CancellationToken::new();
        crate::store::fixtures::execute(
            &store,
            "DELETE FROM _sqlx_migrations WHERE version = 1",
            &[],
        )
        .await;
        assert_eq!(
            readiness(&store, &shutdown).await,
            Err(not_ready(
                "migrations_pending",
                "1 store migration(s) not applied"
            ))
        );
    }

    #[tokio::test]
    async fn the_store_is_counted_once_per_refresh_however_often_it_is_scraped() {
        let (store, _dir) = crate::store::test_sqlite_store().await;
        let cache = GaugeCache::new(Duration::from_secs(3600));
        let first = cache.get(&store).await.expect("gauges");
        // Closed, the store could not answer: a second reading would fail.
        store.close().await;
        assert_eq!(cache.get(&store).await, Some(first));
        let uncached = GaugeCache::new(Duration::ZERO);
        assert_eq!(uncached.get(&store).await, None);
    }
}
