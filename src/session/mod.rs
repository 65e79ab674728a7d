//! Sessions: who is making a request (a keyed hash of their cookie or token, and what a
//! verified JWT says about them), and what tether remembers about each session and
//! user between requests.

pub mod jwt;
pub mod key;
pub mod memory;
pub mod credential;
pub mod record;
pub mod tombstone;
pub mod tunnels;

use std::sync::Arc;

pub use key::{HashKey, SessionKey};
pub use record::{Secs, SessionRecord, UserBaseline};

/// Seconds since the epoch, now.
pub fn now() -> Secs {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as Secs)
}

/// The clock every lifetime is measured by: the system's, shifted by an offset that
/// tests move to cross a lifetime without waiting for it. Arithmetic saturates, so a
/// jump either way never wraps.
#[derive(Debug, Default)]
pub struct Clock {
    offset: std::sync::atomic::AtomicI64,
}

impl Clock {
    pub fn now(&self) -> Secs {
        let shifted = i64::from(now()).saturating_add(self.offset.load(std::sync::atomic::Ordering::Relaxed));
        shifted.clamp(0, i64::from(Secs::MAX)) as Secs
    }

    /// Moves this clock by `secs` (negative: backwards).
    pub fn shift(&self, secs: i64) {
        let _ = self.offset.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |o| Some(o.saturating_add(secs)));
    }
}

/// Bounds on what the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// A session unseen for this long is forgotten (seconds).
    pub idle_ttl: Secs,
    /// A session older than this is forgotten and binds afresh (seconds); revocations are
    /// remembered this long.
    pub absolute_ttl: Secs,
    pub max_sessions: usize,
    pub max_users: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { idle_ttl: 24 * 3600, absolute_ttl: 7 * 24 * 3600, max_sessions: 1_000_000, max_users: 100_000 }
    }
}

/// What the store knows before a decision.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub record: Option<SessionRecord>,
    pub baseline: Option<UserBaseline>,
    pub revoked: bool,
    /// No record, but the store evicted this session when it was full: its history was
    /// lost, so this is not a first sight.
    pub history_lost: bool,
}

/// The session store. An enum rather than a trait object so the hot path stays static
/// dispatch; the shared (Redis) store joins as a second variant.
pub enum Store {
    Memory(memory::MemoryStore),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable")]
    Unavailable,
}

impl Store {
    pub fn memory(limits: StoreLimits) -> Store {
        Store::Memory(memory::MemoryStore::new(limits))
    }

    pub async fn load(&self, key: &SessionKey, user: Option<&str>, now: Secs) -> Result<Loaded, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.load(key, user, now)),
        }
    }

    pub async fn store(
        &self,
        key: SessionKey,
        record: SessionRecord,
        learned: Option<(&Arc<str>, &UserBaseline)>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.store(key, record, learned);
                Ok(())
            }
        }
    }

    pub async fn index_session(&self, user: &Arc<str>, key: SessionKey) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.index_session(user, key);
                Ok(())
            }
        }
    }

    pub async fn revoke(&self, key: SessionKey, now: Secs) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.revoke(key, now)),
        }
    }

    pub async fn revoke_user(&self, user: &str, now: Secs) -> Result<Vec<SessionKey>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.revoke_user(user, now)),
        }
    }

    pub async fn sessions_of(&self, user: &str) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.sessions_of(user)),
        }
    }

    pub async fn sweep(&self, now: Secs) -> usize {
        match self {
            Store::Memory(m) => m.sweep(now),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Store::Memory(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counts(&self) -> memory::StoreCounts {
        match self {
            Store::Memory(m) => m.counts(),
        }
    }
}
