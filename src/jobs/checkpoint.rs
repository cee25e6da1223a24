//! WAL checkpoints on a schedule, for a store that needs them from the bridge (SQLite:
//! its connections never checkpoint on commit).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often the WAL is copied back when the ingest writer is not writing (deliveries'
/// outcomes, repairs, an idle store).
pub(crate) const INTERVAL: Duration = Duration::from_millis(500);

/// Checkpoints every [`INTERVAL`] until shutdown, and once more on the way out.
pub(crate) async fn run(store: Store, stop: CancellationToken) {
    if !store.needs_own_checkpoints() {
        return;
    }
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => false,
            _ = stop.cancelled() => true,
        };
        if let Err(e) = store.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint failed; will try again");
        }
        if stopping {
            return;
        }
    }
}
