//! The tasks the daemon cannot live without: the store's writer, the delivery worker
//! and the repairs. Each runs until shutdown; one that ends before (a panic, a thread
//! that died) would leave a process that answers 503 forever, or accepts events
//! nobody sends, while its health looks green. The daemon watches them and exits
//! non-zero, naming the task and why, so the service manager restarts it.

use std::{
    future::{Future as _, poll_fn},
    pin::Pin,
    task::Poll,
};

use tokio::task::{JoinError, JoinHandle};

/// Which essential task ended, and how.
#[derive(Debug)]
pub(crate) struct Ended {
    pub task: &'static str,
    pub how: String,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}; exiting so the service manager restarts the bridge",
            self.task, self.how
        )
    }
}

impl std::error::Error for Ended {}

/// Waits until one of `tasks` ends and says which and how. The handles stay usable
/// when this future is dropped before (the graceful stop awaits them itself).
pub(crate) async fn first_to_end(tasks: &mut [(&'static str, &mut JoinHandle<()>)]) -> Ended {
    poll_fn(|cx| {
        for (name, handle) in tasks.iter_mut() {
            if let Poll::Ready(result) = Pin::new(&mut **handle).poll(cx) {
                return Poll::Ready(Ended {
                    task: name,
                    how: describe(result),
                });
            }
        }
        Poll::Pending
    })
    .await
}

fn describe(result: Result<(), JoinError>) -> String {
    match result {
        Ok(()) => "stopped before shutdown".into(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("panicked: {message}")
        }
        Err(_) => "was cancelled".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_named_with_its_panic() {
        let mut idle = tokio::spawn(async { tokio::time::sleep(Duration::from_secs(3600)).await });
        let mut dying = tokio::spawn(async { panic!("the writer thread died") });
        let ended = first_to_end(&mut [
            ("the delivery worker", &mut idle),
            ("the store's writer", &mut dying),
        ])
        .await;
        assert_eq!(ended.task, "the store's writer");
        assert_eq!(ended.how, "panicked: the writer thread died");
        assert!(ended.to_string().contains("restarts the bridge"), "{ended}");
        // The others are untouched.
        assert!(!idle.is_finished());
        idle.abort();
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_named_too() {
        let mut done = tokio::spawn(async {});
        let ended = first_to_end(&mut [("the repairs", &mut done)]).await;
        assert_eq!(ended.task, "the repairs");
        assert_eq!(ended.how, "stopped before shutdown");
    }
}
