//! Answered challenges, so each is accepted once: a proof replayed (by a thief who read
//! it off the wire or out of a log) names a challenge already spent.
//!
//! With the shared store, the mark is a Redis key set only if absent, so a challenge is
//! single-use across replicas; the embedded store keeps a bounded table here.

use std::collections::HashMap;
use std::sync::Mutex;

use super::token::Challenge;
use crate::session::{Secs, Store, StoreError};

/// Answered challenges remembered by one process. A challenge lives five minutes, and a
/// browser answers about one per bound-cookie lifetime; this is far beyond a busy
/// console's rate, and at 24 bytes an entry, a few megabytes at most.
pub const MAX_SPENT: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    #[error("the challenge was answered before")]
    Replayed,
    /// The table is full of live entries: refusing is safer than forgetting one (a
    /// forgotten entry would accept its replay).
    #[error("too many challenges answered at once")]
    Full,
    #[error("the shared store could not record the challenge")]
    Store,
}

#[derive(Debug, Default)]
pub struct Spent {
    local: Mutex<HashMap<[u8; 16], Secs>>,
}

impl Spent {
    /// Marks `c` spent; an error when it already was, or when that cannot be known.
    pub async fn spend(&self, store: &Store, c: Challenge, now: Secs) -> Result<(), SpendError> {
        if let Some(redis) = store.as_redis() {
            let ttl = c.until.saturating_sub(now).saturating_add(1);
            return match redis.spend_device_challenge(&c.id, ttl).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(SpendError::Replayed),
                Err(StoreError::Degraded | StoreError::Unavailable | StoreError::Setup(_) | StoreError::Persist(_)) => Err(SpendError::Store),
            };
        }
        self.spend_local(c, now)
    }

    fn spend_local(&self, c: Challenge, now: Secs) -> Result<(), SpendError> {
        // A poisoned lock only means another thread panicked mid-insert; the map is
        // still a map.
        let mut map = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&c.id).is_some_and(|until| *until >= now) {
            return Err(SpendError::Replayed);
        }
        if map.len() >= MAX_SPENT {
            map.retain(|_, until| *until >= now);
            if map.len() >= MAX_SPENT {
                return Err(SpendError::Full);
            }
        }
        map.insert(c.id, c.until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_spent_once_and_forgotten_after_its_life() {
        let s = Spent::default();
        let c = Challenge { id: [1; 16], until: 100 };
        assert_eq!(s.spend_local(c, 50), Ok(()));
        assert_eq!(s.spend_local(c, 60), Err(SpendError::Replayed));
        assert_eq!(s.spend_local(Challenge { id: [2; 16], until: 100 }, 60), Ok(()));
        // Past its life the challenge itself is refused as expired; the entry may go.
        assert_eq!(s.spend_local(c, 101), Ok(()));
    }
}
