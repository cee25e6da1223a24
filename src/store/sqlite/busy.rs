//! Waiting for SQLite's write lock: short polls instead of SQLite's own sleeps.
//!
//! One SQLite file has one writer at a time. The writer thread holds the lock for a
//! batch (about a millisecond); the pool's connections for a prune step or an
//! operator's change. With `busy_timeout`, a connection that finds the lock taken
//! sleeps 1, 2, 5, 10, 15, 20, 25 ms and on, for locks released within a millisecond,
//! and the writer would spend much of a burst asleep. [`wait`], the busy handler of
//! every connection of the store (`Connection::busy_handler`), polls at 20 µs, then
//! 100 µs, then 1 ms, for the same 10 s in all.

use std::{ffi::c_int, time::Duration};

/// Polls at the first steps' intervals (`(tries, sleep)` each), then at `LAST`.
const STEPS: [(c_int, Duration); 2] = [
    (20, Duration::from_micros(20)),
    (200, Duration::from_micros(100)),
];
const LAST: Duration = Duration::from_millis(1);

/// Roughly 10 s of waiting (as `busy_timeout = 10 s` gave) before SQLITE_BUSY.
const GIVE_UP_AFTER: c_int = 10_000;

/// How long to sleep before the `tries`-th retry; `None` once the wait is over.
pub(super) fn pause(tries: c_int) -> Option<Duration> {
    if tries >= GIVE_UP_AFTER {
        return None;
    }
    let mut from = 0;
    for (count, sleep) in STEPS {
        if tries < from + count {
            return Some(sleep);
        }
        from += count;
    }
    Some(LAST)
}

/// The handler: sleeps and retries (`true`), or gives up.
pub(super) fn wait(tries: c_int) -> bool {
    match pause(tries) {
        Some(sleep) => {
            std::thread::sleep(sleep);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_sqlite_store;

    #[tokio::test]
    async fn every_connection_of_a_sqlite_store_waits_with_the_handler() {
        let (store, _dir) = test_sqlite_store().await;
        let own = store.ingest_connection();
        // Setting a handler clears `busy_timeout` (SQLite keeps one or the other): 0 on
        // both means the handler, not SQLite's sleeps, is what waits.
        let (pool_timeout,): (i64,) =
            crate::store::fixtures::row(&store, "PRAGMA busy_timeout", &[]).await;
        assert_eq!(pool_timeout, 0, "the pool's connections kept busy_timeout");
        assert_eq!(
            own.busy_timeout_ms(),
            0,
            "the writer's connection kept busy_timeout"
        );

        // And it waits: a write on the pool, begun while the writer holds the lock,
        // goes through once the writer commits.
        let mut own = own;
        let holding = own.begin().unwrap();
        let mut write = tokio::spawn({
            let pool = store.sqlite().clone();
            async move {
                pool.execute("DELETE FROM inbound_events WHERE event_id = 'none'", vec![])
                    .await
            }
        });
        // Without a handler SQLite answers SQLITE_BUSY at once; this one must still wait.
        let early = tokio::time::timeout(Duration::from_millis(200), &mut write).await;
        assert!(
            early.is_err(),
            "the write did not wait for the lock: {early:?}"
        );
        holding.commit().unwrap();
        write
            .await
            .unwrap()
            .expect("the write went through once the lock was free");
    }

    #[test]
    fn the_wait_polls_finely_first_and_lasts_about_ten_seconds() {
        assert_eq!(pause(0), Some(Duration::from_micros(20)));
        assert_eq!(pause(19), Some(Duration::from_micros(20)));
        assert_eq!(pause(20), Some(Duration::from_micros(100)));
        assert_eq!(pause(219), Some(Duration::from_micros(100)));
        assert_eq!(pause(220), Some(LAST));
        assert_eq!(pause(GIVE_UP_AFTER), None);
        let total: Duration = (0..GIVE_UP_AFTER).filter_map(pause).sum();
        assert!(
            (Duration::from_secs(9)..=Duration::from_secs(11)).contains(&total),
            "{total:?}"
        );
    }
}
