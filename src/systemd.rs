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

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `READY=1`: the daemon serves webhooks on `addr`.
pub(crate) fn ready(addr: SocketAddr, workflows: usize) {
    let status = format!("listening on {addr}; {workflows} workflow(s)");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`: shutdown has begun.
pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight requests and deliveries"),
    ]);
}

/// `RELOADING=1` (with the `MONOTONIC_USEC` systemd asks for): a reload has begun.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `READY=1` again after a reload, with what is now in force.
pub(crate) fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub(crate) fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// `WATCHDOG=1`: the daemon is alive (`jobs::watchdog` sends it only after the store
/// answered).
pub(crate) fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}
