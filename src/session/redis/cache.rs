//! The replica-local cache in front of Redis: recently loaded sessions (so the hot path
//! usually pays no round trip), the revocations this replica has learned (held for their
//! whole lifetime, so they still refuse while Redis is unreachable), and the sessions
//! whose history could not be read (never written back, so a first-sight judgement made
//! blind does not overwrite real history).
//!
//! Lock discipline as in the embedded store: no map guard lives across another call on
//! the same map or an `.await`; values are copied out within the statement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::session::lineage::{Digest, Lineage};
use crate::session::{Loaded, Secs, SessionKey, SessionRecord, UserBaseline};

#[derive(Clone)]
pub(super) struct Entry {
    pub record: SessionRecord,
    /// Whose baseline was loaded (`record.user` or the user the load named), and that
    /// baseline (`None`: they have none yet).
    pub owner: Option<Arc<str>>,
    pub baseline: Option<UserBaseline>,
    pub fetched: Instant,
    /// The cache epoch it was loaded in; an entry from an earlier epoch is stale.
    pub epoch: u64,
    /// `record.last.at` as last written to Redis: steady use re-writes at most every
    /// [`super::WRITE_EVERY`] seconds.
    pub written_at: Secs,
}

pub(super) struct Cache {
    sessions: DashMap<SessionKey, Entry>,
    /// Lineages as Redis last confirmed them (read, or swapped by this replica), and when.
    lineages: DashMap<SessionKey, (Lineage, Instant, u64)>,
    revoked: DashMap<SessionKey, Secs>,
    /// Sessions whose last load could not read Redis, and since when.
    blind: DashMap<SessionKey, Instant>,
    /// Bumped when invalidations may have been missed: every entry becomes stale (still
    /// an outage fallback, never again a fresh answer).
    epoch: AtomicU64,
    pub ttl: Duration,
    pub stale_for: Duration,
    capacity: usize,
}

/// How a cached entry answers a load.
pub(super) enum Hit {
    Fresh(Loaded),
    /// Older than the cache lifetime: used only when Redis cannot be read.
    Stale(Loaded),
    Miss,
}

impl Cache {
    pub fn new(ttl: Duration, stale_for: Duration, capacity: usize) -> Cache {
        Cache { sessions: DashMap::new(), lineages: DashMap::new(), revoked: DashMap::new(), blind: DashMap::new(), epoch: AtomicU64::new(0), ttl, stale_for, capacity: capacity.max(1) }
    }

    pub fn revoked(&self, key: &SessionKey, now: Secs) -> bool {
        self.revoked.get(key).is_some_and(|until| *until > now)
    }

    pub fn revoke(&self, key: SessionKey, until: Secs) {
        self.sessions.remove(&key);
        if self.revoked.len() >= self.capacity && !self.revoked.contains_key(&key) {
            // Redis keeps every revocation; this copy is the outage fallback, so when it
            // is full the ones that expire soonest matter least. Amortised: expired ones go first.
            let now = crate::session::now();
            self.revoked.retain(|_, u| *u > now);
            if self.revoked.len() >= self.capacity {
                let soonest = self.revoked.iter().map(|e| (*e.value(), *e.key())).min();
                if let Some((_, k)) = soonest {
                    self.revoked.remove(&k);
                }
            }
        }
        self.revoked.insert(key, until);
    }

    pub fn lookup(&self, key: &SessionKey, user: Option<&str>) -> Hit {
        let Some(e) = self.sessions.get(key).map(|e| e.clone()) else { return Hit::Miss };
        let want = user.or(e.record.user.as_deref());
        let baseline = match (&e.owner, want) {
            (Some(u), Some(w)) if &**u == w => e.baseline,
            // The cached baseline is someone else's (or none was loaded for this user).
            (_, Some(_)) => return Hit::Miss,
            (_, None) => None,
        };
        let loaded = Loaded { record: Some(e.record), baseline, revoked: false, history_lost: false, user_revoked_at: None };
        let age = e.fetched.elapsed();
        if age <= self.ttl && e.epoch == self.epoch() {
            Hit::Fresh(loaded)
        } else if age <= self.stale_for {
            Hit::Stale(loaded)
        } else {
            Hit::Miss
        }
    }

    /// Whether an entry still reflects Redis (read within the cache lifetime, and no
    /// invalidation missed since): only then may a write be skipped.
    pub fn confirmed(&self, e: &Entry) -> bool {
        e.fetched.elapsed() <= self.ttl && e.epoch == self.epoch()
    }

    pub fn entry(&self, key: &SessionKey) -> Option<Entry> {
        self.sessions.get(key).map(|e| e.clone())
    }

    pub fn put(&self, key: SessionKey, entry: Entry) {
        if self.sessions.len() >= self.capacity && !self.sessions.contains_key(&key) {
            // Drop what is past even its outage use first; if that frees too little, start
            // over (a refill costs one round trip per session).
            let stale_for = self.stale_for;
            self.sessions.retain(|_, e| e.fetched.elapsed() <= stale_for);
            if self.sessions.len() >= self.capacity * 9 / 10 {
                self.sessions.clear();
            }
        }
        self.sessions.insert(key, entry);
    }

    /// Updates the cached record after a write, keeping its baseline unless given one.
    pub fn wrote(&self, key: SessionKey, record: SessionRecord, learned: Option<(&Arc<str>, &UserBaseline)>, fresh: bool) {
        let previous = self.entry(&key);
        let (owner, baseline) = match learned {
            Some((u, b)) => (Some(u.clone()), Some(*b)),
            None => previous.as_ref().map_or((None, None), |e| (e.owner.clone(), e.baseline)),
        };
        let (fetched, epoch) = match (&previous, fresh) {
            (Some(e), false) => (e.fetched, e.epoch),
            // Not confirmed by Redis and nothing before it: stale from the start.
            (None, false) => (Instant::now(), self.epoch().wrapping_sub(1)),
            (_, true) => (Instant::now(), self.epoch()),
        };
        let written_at = if fresh { record.last.at } else { previous.as_ref().map_or(0, |e| e.written_at) };
        self.put(key, Entry { record, owner, baseline, fetched, epoch, written_at });
    }

    /// A lineage confirmed within `trust` (and no invalidation missed since) that answers
    /// the request with "fine, nothing to change" — its current value presented after it
    /// came back, or no value to a lineage never armed — is judged without a round trip.
    /// Anything else is read from Redis, so a stale copy can only delay a verdict by
    /// `trust` (another replica's rotation or arming), never make a false one.
    pub fn lineage(&self, key: &SessionKey, presented: Option<Digest>, trust: Duration) -> Option<Lineage> {
        let (l, at, epoch) = self.lineages.get(key).map(|e| *e)?;
        let settled = match presented {
            Some(p) => l.current == p && l.seen_at().is_some() && l.armed,
            None => !l.armed,
        };
        (settled && at.elapsed() <= trust && epoch == self.epoch()).then_some(l)
    }

    pub fn put_lineage(&self, key: SessionKey, l: Option<Lineage>) {
        let Some(l) = l else {
            self.lineages.remove(&key);
            return;
        };
        if self.lineages.len() >= self.capacity && !self.lineages.contains_key(&key) {
            // Each entry is worth one round trip at most: start over rather than rank.
            self.lineages.clear();
        }
        self.lineages.insert(key, (l, Instant::now(), self.epoch()));
    }

    pub fn forget(&self, key: &SessionKey) {
        self.sessions.remove(key);
    }

    /// Forgets every cached session of `user`; with `revoke_until`, also revokes them
    /// locally (the fallback when the user's revocation could not reach Redis).
    pub fn forget_user(&self, user: &str, revoke_until: Option<Secs>) -> Vec<SessionKey> {
        let mut gone = Vec::new();
        self.sessions.retain(|k, e| {
            let theirs = e.record.user.as_deref() == Some(user);
            if theirs {
                gone.push(*k);
            }
            !theirs
        });
        if let Some(until) = revoke_until {
            for k in &gone {
                self.revoke(*k, until);
            }
        }
        gone
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// After a (re)connect to the invalidation channel: anything cached may have missed
    /// a message, so it is read again before it is trusted. Revocations stay (they only
    /// ever refuse).
    pub fn expire_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn mark_blind(&self, key: SessionKey) {
        if self.blind.len() >= self.capacity {
            let stale_for = self.stale_for;
            self.blind.retain(|_, at| at.elapsed() <= stale_for);
            if self.blind.len() >= self.capacity {
                // Past the bound a blind write can slip through; it is bounded by the
                // merge rules in the store script (a newer binding is refused there).
                return;
            }
        }
        self.blind.insert(key, Instant::now());
    }

    pub fn is_blind(&self, key: &SessionKey) -> bool {
        let stale_for = self.stale_for;
        self.blind.get(key).is_some_and(|at| at.elapsed() <= stale_for)
    }

    pub fn see(&self, key: &SessionKey) {
        self.blind.remove(key);
    }

    /// Drops entries past every use and expired revocations.
    pub fn sweep(&self, now: Secs) {
        let stale_for = self.stale_for;
        self.sessions.retain(|_, e| e.fetched.elapsed() <= stale_for);
        let ttl = self.ttl;
        self.lineages.retain(|_, (_, at, _)| at.elapsed() <= ttl);
        self.blind.retain(|_, at| at.elapsed() <= stale_for);
        self.revoked.retain(|_, until| *until > now);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn revocations(&self) -> usize {
        self.revoked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::lineage::DIGEST_LEN;

    #[test]
    fn only_a_settled_lineage_is_answered_from_the_cache() {
        let cache = Cache::new(Duration::from_secs(2), Duration::from_secs(60), 10);
        let key = SessionKey([1; 16]);
        let (c, p) = ([1; DIGEST_LEN], [2; DIGEST_LEN]);
        let back = Lineage::new(c, p, 1000, Some(1001), true);
        let trust = Duration::from_secs(1);
        cache.put_lineage(key, Some(back));
        // (presented, answered from the cache?, why)
        let rows = [
            (Some(c), true, "the current value, back before"),
            (Some(p), false, "the previous value: Redis decides"),
            (Some([9; DIGEST_LEN]), false, "an unknown value: Redis decides"),
            (None, false, "no value to an armed lineage: Redis decides"),
        ];
        for (presented, hit, why) in rows {
            assert_eq!(cache.lineage(&key, presented, trust).is_some(), hit, "{why}");
        }
        cache.put_lineage(key, Some(Lineage::new(c, p, 1000, None, true)));
        assert!(cache.lineage(&key, Some(c), trust).is_none(), "the current value before its first return: Redis records it");
        cache.put_lineage(key, Some(Lineage::new(c, [0; DIGEST_LEN], 1000, None, false)));
        assert!(cache.lineage(&key, None, trust).is_some(), "no value to a lineage never armed");
        assert!(cache.lineage(&key, None, Duration::ZERO).is_none(), "past its trust");
        cache.expire_all();
        assert!(cache.lineage(&key, None, trust).is_none(), "invalidations may have been missed");
        cache.put_lineage(key, None);
        assert!(cache.lineage(&key, None, trust).is_none());
    }
}
