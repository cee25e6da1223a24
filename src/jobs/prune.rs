//! Pruning on a schedule: the store deletes what is settled and older than the
//! retention (`Store::prune`); this job asks it to every `store.prune_interval_secs`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Pruned, Store, now_ms};

/// Rows each delete statement takes at most, so ingest never waits long behind one.
const BATCH: i64 = 1000;

/// Prunes now and every `interval` until shutdown.
pub(crate) async fn run(
    store: Store,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let cutoff = now_ms() - retention.as_millis() as i64;
        match store.prune(cutoff, BATCH).await {
            Ok(p) if p != Pruned::default() => tracing::info!(
                attempts = p.attempts,
                deliveries = p.deliveries,
                calls = p.calls,
                inbound_events = p.inbound_events,
                "pruned rows older than the retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
