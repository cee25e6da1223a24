//! One small type every long-running task listens to, so SIGTERM stops them together.

use tokio::sync::watch;

/// Fires [`Shutdown`] in every clone when triggered (or dropped).
pub struct Trigger(watch::Sender<bool>);

/// Resolves `wait` once shutdown has begun.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}
