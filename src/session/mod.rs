//! Sessions: who is making a request (a keyed hash of their cookie or token, and what a
//! verified JWT says about them), and what tether remembers about each session and
//! user between requests.

pub mod jwt;
pub mod key;
pub mod lineage;
pub mod memory;
pub mod credential;
pub mod device;
pub mod persist;
pub mod record;
pub mod redis;
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
    /// When the session's user was last revoked as a whole: a token of that user issued
    /// before it is revoked too, even one tether never saw.
    pub user_revoked_at: Option<Secs>,
}

/// The session store. An enum rather than a trait object so the hot path stays static
/// dispatch: the embedded store (its revocations optionally kept on disk) or the shared
/// one in Redis/Valkey.
// One store per process, built once: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Memory(memory::MemoryStore, Option<persist::RevocationLog>),
    Redis(redis::RedisStore),
}

/// What registering a device key on a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    Written,
    /// Another key was bound first (a registration racing this one): it stays.
    Kept,
    /// The session is no longer live (or was revoked meanwhile).
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable")]
    Unavailable,
    /// The shared store could not answer within its bound: judge by network-only rules
    /// (or refuse, per `store.on_error`), and write nothing back for this session.
    #[error("shared session store unreachable or too slow")]
    Degraded,
    #[error("cannot set up the shared session store")]
    Setup(#[source] redis::SetupError),
    #[error("cannot restore revocations")]
    Persist(#[source] persist::PersistError),
}

impl Store {
    pub fn memory(limits: StoreLimits) -> Store {
        Store::Memory(memory::MemoryStore::new(limits), None)
    }

    /// The embedded store with its revocations kept in `state_dir` across restarts:
    /// those still in force are restored now.
    pub fn memory_persistent(limits: StoreLimits, state_dir: &std::path::Path, now: Secs) -> Result<Store, StoreError> {
        let (log, live) = persist::RevocationLog::open(state_dir, limits.max_sessions, limits.absolute_ttl, now).map_err(StoreError::Persist)?;
        let m = memory::MemoryStore::new(limits);
        for (key, until) in live {
            // The embedded store remembers a revocation for `absolute_ttl` from `now`.
            m.revoke(key, until.saturating_sub(limits.absolute_ttl));
        }
        Ok(Store::Memory(m, Some(log)))
    }

    /// The shared store. Connects lazily: it starts (degraded) while Redis is down.
    pub async fn redis(cfg: redis::RedisConfig, limits: StoreLimits) -> Result<Store, StoreError> {
        redis::RedisStore::connect(cfg, limits).await.map(Store::Redis).map_err(StoreError::Setup)
    }

    /// The shared store, when this is one (its invalidations, challenges, health).
    pub fn as_redis(&self) -> Option<&redis::RedisStore> {
        match self {
            Store::Redis(r) => Some(r),
            Store::Memory(..) => None,
        }
    }

    // The shared store's calls are boxed: their futures are large, and a request's future,
    // copied whole at every hand-off, would otherwise carry them with the embedded store.
    pub async fn load(&self, key: &SessionKey, user: Option<&str>, now: Secs) -> Result<Loaded, StoreError> {
        match self {
            Store::Memory(m, _) => Ok(m.load(key, user, now)),
            Store::Redis(r) => Box::pin(r.load(key, user, now)).await,
        }
    }

    pub async fn store(
        &self,
        key: SessionKey,
        record: SessionRecord,
        learned: Option<(&Arc<str>, &UserBaseline)>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m, _) => {
                m.store(key, record, learned);
                Ok(())
            }
            Store::Redis(r) => Box::pin(r.store(key, record, learned)).await,
        }
    }

    /// Registers a device key (DBSC) on `record`, the session as its caller loaded it:
    /// written only if no other key is bound by then, and an error when the write is not
    /// known to be shared (a binding held in one replica's cache alone would answer
    /// for the session there and nowhere else).
    pub async fn bind_device(&self, key: SessionKey, mut record: SessionRecord, binding: device::DeviceBinding, now: Secs) -> Result<Bind, StoreError> {
        match self {
            Store::Memory(m, _) => Ok(m.bind_device(&key, binding, now)),
            Store::Redis(r) => {
                record.set_device(Some(binding));
                Box::pin(r.bind_device(key, record, now)).await
            }
        }
    }

    /// The session's lineage as the store holds it now (the shared store may answer from
    /// its cache when what was presented settles the verdict: see `redis::cache`).
    /// `presented` is the one value a request carries, if it carries exactly one.
    pub async fn lineage(&self, key: &SessionKey, presented: Option<lineage::Digest>) -> Result<Option<lineage::Lineage>, StoreError> {
        match self {
            Store::Memory(m, _) => Ok(m.lineage(key)),
            Store::Redis(r) => r.lineage(key, presented).await,
        }
    }

    /// Replaces the session's lineage `expected` by `next` atomically: false when another
    /// request (at any replica) changed it meanwhile, so two never both rotate it and
    /// strand each other's value. `created` bounds how long the shared store keeps it.
    pub async fn swap_lineage(&self, key: &SessionKey, created: Secs, expected: Option<&lineage::Lineage>, next: lineage::Lineage, now: Secs) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m, _) => Ok(m.swap_lineage(key, expected, next)),
            Store::Redis(r) => r.swap_lineage(key, created, expected, next, now).await,
        }
    }

    pub async fn index_session(&self, user: &Arc<str>, key: SessionKey) -> Result<(), StoreError> {
        match self {
            Store::Memory(m, _) => {
                m.index_session(user, key);
                Ok(())
            }
            Store::Redis(r) => Box::pin(r.index_session(user, key)).await,
        }
    }

    pub async fn revoke(&self, key: SessionKey, now: Secs) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m, log) => {
                let existed = m.revoke(key, now);
                if let Some(log) = log {
                    persist(log, &key, now);
                }
                Ok(existed)
            }
            Store::Redis(r) => Box::pin(r.revoke(key, now)).await,
        }
    }

    pub async fn revoke_user(&self, user: &str, now: Secs) -> Result<Vec<SessionKey>, StoreError> {
        match self {
            Store::Memory(m, log) => {
                let keys = m.revoke_user(user, now);
                if let Some(log) = log {
                    for k in &keys {
                        persist(log, k, now);
                    }
                }
                Ok(keys)
            }
            Store::Redis(r) => r.revoke_user(user, now).await,
        }
    }

    pub async fn sessions_of(&self, user: &str) -> Result<Vec<(SessionKey, SessionRecord)>, StoreError> {
        match self {
            Store::Memory(m, _) => Ok(m.sessions_of(user)),
            Store::Redis(r) => r.sessions_of(user).await,
        }
    }

    pub async fn sweep(&self, now: Secs) -> usize {
        match self {
            Store::Memory(m, _) => m.sweep(now),
            Store::Redis(r) => r.sweep(now).await,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Store::Memory(m, _) => m.len(),
            Store::Redis(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counts(&self) -> memory::StoreCounts {
        match self {
            Store::Memory(m, _) => m.counts(),
            Store::Redis(r) => r.counts(),
        }
    }
}

/// Writes a revocation through to disk. A failure is logged, not returned: the revocation
/// holds in memory, and failing the request would not make the disk work.
fn persist(log: &persist::RevocationLog, key: &SessionKey, now: Secs) {
    if let Err(e) = log.revoked(key, now) {
        tracing::error!(error = %e, "revocation not written to the state directory; it will not survive a restart");
    }
}
