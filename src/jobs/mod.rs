//! The daemon's background jobs, in one place: the repairs (`reconcile`), pruning, WAL
//! checkpoints, vacuums, systemd's watchdog and the log summary.
//!
//! A job only schedules: what it runs is the store's API (`Store::prune`,
//! `Store::checkpoint`, `Store::vacuum`, ...), and each backend's mechanism stays in
//! `store::sqlite` or `store::postgres`. Every job ends when the stop token is cancelled.

pub(crate) mod checkpoint;
pub(crate) mod log_summary;
pub(crate) mod prune;
pub(crate) mod reconcile;
pub(crate) mod vacuum;
pub(crate) mod watchdog;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{config::Config, store::Store};

/// Starts the housekeeping on `tasks`: the log summary, WAL checkpoints, vacuums and
/// pruning (the repairs are essential and supervised, the watchdog waits for `READY=1`:
/// the daemon starts those itself).
pub(crate) fn spawn_housekeeping(
    tasks: &TaskTracker,
    config: &Config,
    store: &Store,
    stop: &CancellationToken,
) {
    tasks.spawn(log_summary::run(config.log.summary_interval, stop.clone()));
    tasks.spawn(checkpoint::run(store.clone(), stop.clone()));
    tasks.spawn(vacuum::run(store.clone(), stop.clone()));
    tasks.spawn(prune::run(
        store.clone(),
        config.store.retention,
        config.store.prune_interval,
        stop.clone(),
    ));
}
