//! An essential task dies (a fail point makes it panic): the daemon names the task and
//! why, and exits non-zero so the service manager restarts it, rather than answering
//! 503 forever or accepting events nobody sends while its health looks green. What it
//! accepted before is delivered after the restart.
//!
//! Only with the `failpoints` feature, which `scripts/test.sh` turns on.

use crate::support;

use support::{
    Daemon, Receiver, TestConfig,
    config::{API_KEY, API_SECRET},
    lk,
    poll::DAEMON_REACTION as WAIT,
};

/// Arms `fail_point` to panic with `message` in a daemon on `config`.
async fn start_armed(
    config: &TestConfig,
    dir: &std::path::Path,
    fail_point: &str,
    message: &str,
) -> Daemon {
    Daemon::launch(&config.toml())
        .in_dir(dir)
        .env("FAILPOINTS", &format!("{fail_point}=panic({message})"))
        .start()
        .await
}

#[tokio::test]
async fn a_dead_store_writer_exits_non_zero_naming_it() {
    let receiver = Receiver::start().await;
    let config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start_armed(&config, dir.path(), "store-writer-batch", "writer died").await;
    assert_eq!(daemon.get("/readyz").await.0, 200);

    // The webhook that wakes the writer is not acknowledged: LiveKit keeps it and retries.
    let body = lk::agent_joined(&lk::mapped_room());
    if let Ok(response) = daemon.poster().post_signed(body).await {
        assert_ne!(
            response.status().as_u16(),
            200,
            "a webhook the writer never committed was acknowledged"
        );
    }

    let status = daemon.wait_exit(WAIT).await;
    assert!(!status.success(), "exited {status} after its writer died");
    let log = daemon.stderr_text();
    assert!(
        log.contains("the store's writer panicked: writer died"),
        "{log}"
    );
    assert!(log.contains("restarts the bridge"), "{log}");
}

#[tokio::test]
async fn a_dead_delivery_worker_exits_non_zero_and_its_events_are_sent_after_the_restart() {
    let mut receiver = Receiver::start().await;
    let config = TestConfig::new(&receiver.url("/hooks/voicekit"));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start_armed(&config, dir.path(), "delivery-row", "worker died").await;

    // Accepted and committed before the worker takes it up, and dies.
    let (code, text) = daemon
        .post_signed(&lk::agent_joined(&lk::mapped_room()), API_KEY, API_SECRET)
        .await;
    assert_eq!(code, 200, "{text}");
    let status = daemon.wait_exit(WAIT).await;
    assert!(
        !status.success(),
        "exited {status} after its delivery worker died"
    );
    let log = daemon.stderr_text();
    assert!(
        log.contains("the delivery worker panicked: worker died"),
        "{log}"
    );

    // As the service manager would: the same binary on the same store, unarmed.
    let _restarted = Daemon::start_in(dir.path(), &config.toml()).await;
    let started = receiver.next(WAIT).await;
    assert_eq!(
        started.json()["event"],
        "call_started",
        "{}",
        started.text()
    );
}
