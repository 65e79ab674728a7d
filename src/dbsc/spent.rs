//! Answered challenges, so each is accepted once: a proof replayed (by a thief who read
//! it off the wire or out of a log) names a challenge already spent.
//!
//! With the shared store, the mark is a Redis key set only if absent, so a challenge is
//! single-use across replicas; the embedded store keeps a bounded table here, kept per
//! session: a challenge is bound to its session by its MAC, so only that session's
//! spends can collide, and a session that spends too much refuses only itself.

use std::collections::HashMap;
use std::sync::Mutex;

use super::token::Challenge;
use crate::session::{Secs, SessionKey, Store, StoreError};

/// Sessions with a live spent challenge remembered by one process. Only a judged,
/// allowed session (registration) or the holder of a registered key (refresh) spends,
/// and a challenge lives five minutes; this is far beyond a busy console's sessions
/// renewing at once; at most about 250 bytes a session (eight entries), some 25 MB.
pub const MAX_SESSIONS: usize = 100_000;

/// Live spent challenges one session may hold: a browser answers about one per
/// bound-cookie lifetime (at least two minutes), plus the retry the spec allows after a
/// race, so eight within a challenge's five minutes is several times an honest rate.
pub const PER_SESSION: usize = 8;

/// Share of the sessions dropped when the table is full of live entries (see
/// [`Spent::spend`]): a sixteenth, so the cost of the pass is spread over many spends.
const EVICT_SHARE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    #[error("the challenge was answered before")]
    Replayed,
    /// This session answered more challenges than any browser does: refusing is safer
    /// than forgetting one of its own (a forgotten entry would accept its replay).
    #[error("too many challenges answered for this session")]
    Full,
    #[error("the shared store could not record the challenge")]
    Store,
}

/// One session's live spent challenges: their ids and until when each could be answered.
type Slots = Vec<([u8; 16], Secs)>;

#[derive(Debug, Default)]
pub struct Spent {
    local: Mutex<HashMap<SessionKey, Slots>>,
}

impl Spent {
    /// Marks `c`, a challenge of `session`, spent; an error when it already was, or when
    /// that cannot be known.
    pub async fn spend(&self, store: &Store, session: &SessionKey, c: Challenge, now: Secs) -> Result<(), SpendError> {
        if let Some(redis) = store.as_redis() {
            let ttl = c.until.saturating_sub(now).saturating_add(1);
            return match redis.spend_device_challenge(&c.id, ttl).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(SpendError::Replayed),
                Err(StoreError::Degraded | StoreError::Unavailable | StoreError::Setup(_) | StoreError::Persist(_)) => Err(SpendError::Store),
            };
        }
        self.spend_local(session, c, now)
    }

    /// When the table is full of live sessions, the sixteenth whose entries lapse soonest
    /// give way: refusing would let whoever fills it lock every other session out of
    /// registering and refreshing, while a dropped entry is replayable only for what is
    /// left of its life, and only by someone holding a proof captured for it.
    fn spend_local(&self, session: &SessionKey, c: Challenge, now: Secs) -> Result<(), SpendError> {
        // A poisoned lock only means another thread panicked mid-insert; the map is
        // still a map.
        let mut map = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slots) = map.get_mut(session) {
            slots.retain(|(_, until)| *until >= now);
            if slots.iter().any(|(id, _)| *id == c.id) {
                return Err(SpendError::Replayed);
            }
            if slots.len() >= PER_SESSION {
                return Err(SpendError::Full);
            }
            slots.push((c.id, c.until));
            return Ok(());
        }
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, slots| slots.iter().any(|(_, until)| *until >= now));
        }
        if map.len() >= MAX_SESSIONS {
            let mut lapses: Vec<Secs> = map.values().map(|s| s.iter().map(|(_, u)| *u).max().unwrap_or(0)).collect();
            let nth = (lapses.len() / EVICT_SHARE).min(lapses.len().saturating_sub(1));
            let (_, cut, _) = lapses.select_nth_unstable(nth);
            let cut = *cut;
            map.retain(|_, slots| slots.iter().any(|(_, until)| *until > cut));
        }
        map.insert(*session, vec![(c.id, c.until)]);
        Ok(())
    }

    #[cfg(test)]
    fn sessions(&self) -> usize {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(i: u32) -> SessionKey {
        let mut k = [0u8; crate::session::key::SESSION_KEY_LEN];
        k[..4].copy_from_slice(&i.to_be_bytes());
        SessionKey(k)
    }

    #[test]
    fn a_challenge_is_spent_once_and_forgotten_after_its_life() {
        let s = Spent::default();
        let a = session(1);
        let c = Challenge { id: [1; 16], until: 100 };
        assert_eq!(s.spend_local(&a, c, 50), Ok(()));
        assert_eq!(s.spend_local(&a, c, 60), Err(SpendError::Replayed));
        assert_eq!(s.spend_local(&a, Challenge { id: [2; 16], until: 100 }, 60), Ok(()));
        // Past its life the challenge itself is refused as expired; the entry may go.
        assert_eq!(s.spend_local(&a, c, 101), Ok(()));
    }

    #[test]
    fn a_session_that_spends_too_much_refuses_only_itself() {
        let s = Spent::default();
        let (greedy, other) = (session(1), session(2));
        for i in 0..PER_SESSION {
            assert_eq!(s.spend_local(&greedy, Challenge { id: [i as u8; 16], until: 400 }, 100), Ok(()));
        }
        assert_eq!(s.spend_local(&greedy, Challenge { id: [99; 16], until: 400 }, 100), Err(SpendError::Full));
        assert_eq!(s.spend_local(&other, Challenge { id: [99; 16], until: 400 }, 100), Ok(()), "another session is not refused");
        // Once its entries lapse, the session spends again.
        assert_eq!(s.spend_local(&greedy, Challenge { id: [98; 16], until: 800 }, 401), Ok(()));
    }

    #[test]
    fn a_full_table_never_refuses_another_session() {
        let s = Spent::default();
        // A flood of sessions, each spending one live challenge.
        for i in 0..MAX_SESSIONS as u32 {
            assert_eq!(s.spend_local(&session(i), Challenge { id: [1; 16], until: 300 + i % 7 }, 100), Ok(()));
        }
        let late = session(u32::MAX);
        assert_eq!(s.spend_local(&late, Challenge { id: [1; 16], until: 400 }, 100), Ok(()), "a newcomer still spends");
        assert_eq!(s.spend_local(&late, Challenge { id: [1; 16], until: 400 }, 100), Err(SpendError::Replayed), "and its spend is remembered");
        assert!(s.sessions() <= MAX_SESSIONS, "still bounded: {}", s.sessions());
        // Only entries that lapse soonest gave way.
        assert_eq!(s.spend_local(&session(6), Challenge { id: [1; 16], until: 306 }, 100), Err(SpendError::Replayed), "a later-lapsing entry is kept");
    }
}
