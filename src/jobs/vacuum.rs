//! Vacuums on a schedule, for a store whose server does not vacuum by itself
//! (PostgreSQL with autovacuum off).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often the tables are vacuumed when the server does not.
pub(crate) const INTERVAL: Duration = Duration::from_secs(20);

/// Vacuums every [`INTERVAL`] until shutdown, if the store needs it.
pub(crate) async fn run(store: Store, stop: CancellationToken) {
    match store.needs_own_vacuum().await {
        Ok(false) => return,
        Ok(true) => tracing::warn!(
            "PostgreSQL runs with autovacuum off: the bridge vacuums and analyses its own tables every {}s",
            INTERVAL.as_secs()
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not read PostgreSQL's autovacuum setting");
            return;
        }
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = store.vacuum().await {
            tracing::warn!(error = %e, "VACUUM failed; will try again");
        }
    }
}
