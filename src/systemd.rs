//! systemd's notify protocol, for `Type=notify` and `WatchdogSec=`.
//!
//! systemd starts the units ordered after ours only once we say `READY=1`, and restarts
//! us when the watchdog pings stop, so both must mean something: `READY=1` goes out once
//! the store is open, its migrations ran and the listener is bound, and a `WATCHDOG=1`
//! ping only after the store answered a query. It uses the pure-Rust `sd-notify` crate
//! (no libsystemd); every call is a no-op when `NOTIFY_SOCKET` is unset (run by hand, in
//! tests, under another supervisor), and a failed send is logged, never fatal.

use std::{net::SocketAddr, time::Duration};

use sd_notify::NotifyState;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::store::Store;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `READY=1`: the daemon serves webhooks on `addr`.
pub fn ready(addr: SocketAddr, workflows: usize) {
    let status = format!("listening on {addr}; {workflows} workflow(s)");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight requests and deliveries"),
    ]);
}

/// `RELOADING=1` (with the `MONOTONIC_USEC` systemd asks for): a reload has begun.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `READY=1` again after a reload, with what is now in force.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// When systemd asked for watchdog pings (`WATCHDOG_USEC`, for this process), starts a
/// task that pings twice per period, each time only after `store` answered within half
/// a period. A store that hangs or fails therefore stops the pings, and systemd
/// restarts the service. Pings end with shutdown (systemd stops watching after
/// `STOPPING=1`; `TimeoutStopSec=` bounds the stop instead).
pub fn spawn_watchdog(tasks: &TaskTracker, store: Store, shutdown: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
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
                _ = shutdown.cancelled() => return,
            }
            match tokio::time::timeout(every, store.ping()).await {
                Ok(Ok(())) => send(&[NotifyState::Watchdog]),
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
