//! The open tunnels (WebSocket and other upgrades) and the session each carries, so that
//! a revocation — by the admin API, a back-channel logout, a failed step-up, the policy,
//! or another replica — closes them at once instead of at the next reload.
//!
//! Lock discipline: closing collects the matching tunnels' signals first and notifies
//! them after the map's guards are gone; a tunnel's registration is removed by its own
//! guard when the tunnel ends, whatever the reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

use super::SessionKey;

#[derive(Default)]
pub struct OpenTunnels {
    next: AtomicU64,
    open: DashMap<u64, (SessionKey, Arc<Notify>)>,
}

/// A tunnel's registration: resolves [`Registration::closed`] when its session is
/// revoked, and unregisters when dropped.
pub struct Registration<'a> {
    id: u64,
    signal: Arc<Notify>,
    tunnels: &'a OpenTunnels,
}

impl Registration<'_> {
    /// Completes when the tunnel's session is revoked.
    pub async fn closed(&self) {
        self.signal.notified().await;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.tunnels.open.remove(&self.id);
    }
}

impl OpenTunnels {
    pub fn register(&self, session: SessionKey) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Notify::new());
        self.open.insert(id, (session, signal.clone()));
        Registration { id, signal, tunnels: self }
    }

    /// Closes every open tunnel of `session`; returns how many.
    pub fn close(&self, session: &SessionKey) -> usize {
        let signals: Vec<Arc<Notify>> = self.open.iter().filter(|e| e.value().0 == *session).map(|e| e.value().1.clone()).collect();
        for s in &signals {
            // A stored permit: the tunnel sees it even if it is not waiting right now.
            s.notify_one();
        }
        signals.len()
    }

    /// Whether `session` has an open tunnel here.
    pub fn contains(&self, session: &SessionKey) -> bool {
        self.open.iter().any(|e| e.value().0 == *session)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revocation_reaches_only_that_sessions_tunnels() {
        let t = OpenTunnels::default();
        let (a, b) = (SessionKey([1; 16]), SessionKey([2; 16]));
        let ra1 = t.register(a);
        let ra2 = t.register(a);
        let rb = t.register(b);
        assert_eq!(t.close(&a), 2);
        // Both of a's tunnels see it, even though nobody was waiting when it was sent.
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            ra1.closed().await;
            ra2.closed().await;
        })
        .await
        .expect("a's tunnels closed");
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), rb.closed()).await.is_err(), "b's tunnel stays");
        drop((ra1, ra2));
        assert_eq!(t.len(), 1);
    }
}
