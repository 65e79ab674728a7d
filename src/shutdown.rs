//! The stop signal every long-running task takes: listeners stop accepting, connections
//! finish what is in flight, the watcher and the sweeper return. Its own module so that
//! the tasks below `app` never reach up into the wiring to learn that they should stop.

use tokio::sync::watch;

/// The sending half: flipping it asks every task holding a [`Shutdown`] to stop.
pub type Trigger = watch::Sender<bool>;

/// A new stop signal, not yet flipped.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (tx, Shutdown(rx))
}

/// The receiving half, cloned into each task.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once the stop flag is set (or its sender is gone).
    pub async fn stopped(&mut self) {
        // The guard `wait_for` returns is dropped at once so no lock is held across awaits.
        let _ = self.0.wait_for(|stop| *stop).await.map(|_| ());
    }
}

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Self {
        Shutdown(rx)
    }
}
