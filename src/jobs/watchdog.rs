//! systemd's watchdog, fed only while the store answers.
//!
//! When systemd asked for pings (`WatchdogSec=`), they go out twice per period, each
//! only after the store answered a query within half a period. A store that hangs or
//! fails therefore stops the pings, and systemd restarts the service. Pings end with
//! shutdown (systemd stops watching after `STOPPING=1`; `TimeoutStopSec=` bounds the
//! stop instead).

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{store::Store, systemd};

/// Starts the pings on `tasks` when systemd asked for them; nothing otherwise.
pub(crate) fn spawn(tasks: &TaskTracker, store: Store, stop: CancellationToken) {
    let Some(period) = systemd::watchdog_period() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(1));
    tracing::info!(
        watchdog_secs = period.as_secs_f64(),
        "systemd watchdog enabled"
    );
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match tokio::time::timeout(every, store.ping()).await {
                Ok(Ok(())) => systemd::watchdog_ping(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "store unhealthy: withholding the watchdog ping")
                }
                Err(_) => tracing::warn!(
                    timeout_secs = every.as_secs_f64(),
                    "store did not answer in time: withholding the watchdog ping"
                ),
            }
        }
    });
}
