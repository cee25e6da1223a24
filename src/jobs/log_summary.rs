//! The summary line of refused webhooks, slow clients and failed accepts
//! (`http::summary`), logged once per `log.summary_interval_secs`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http::summary::{render, take};

/// Logs the summary every `interval` until shutdown, and once more then.
pub(crate) async fn run(interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.cancelled() => true,
        };
        if let Some(line) = render(&take(), interval) {
            tracing::warn!("{line}");
        }
        if stopping {
            return;
        }
    }
}
