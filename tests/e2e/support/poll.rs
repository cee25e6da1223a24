//! Waiting for a condition with a bounded deadline.
//!
//! Tests must not sleep a fixed time and hope: they wait for the condition they mean,
//! and fail with a message naming it when it does not come true in time.

use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is re-checked.
const INTERVAL: Duration = Duration::from_millis(25);

/// How long a test waits for the daemon to act on what the test did: a delivery to
/// reach the receiver, a line in its log, a state the operator API reports. Generous,
/// because the suite runs daemons side by side on small machines; a passing test waits
/// only as long as the daemon takes.
pub const DAEMON_REACTION: Duration = Duration::from_secs(20);

/// How long a test waits for a burst of calls to be worked off around a killed daemon:
/// a restart or a surviving instance taking over leases, then every delivery sent.
pub const BURST_SETTLED: Duration = Duration::from_secs(60);

/// Re-runs `check` until it returns `Some` (that value) or `timeout` passes (`None`).
pub async fn within<T>(timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Re-runs `check` until it returns `Some`, and returns that value; panics naming
/// `what` after `timeout`.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    within(timeout, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Re-runs `check` until it returns `true`; panics naming `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    wait_for(timeout, what, async || check().await.then_some(())).await
}
