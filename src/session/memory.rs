//! The embedded store: sessions, user baselines and revocations in sharded concurrent
//! maps, bounded by count and by idle and absolute lifetimes.

use std::sync::Arc;

use dashmap::DashMap;

use super::record::{Secs, SessionRecord, UserBaseline, USER_SESSIONS};
use super::{Loaded, SessionKey, StoreLimits};

pub struct MemoryStore {
    /// Boxed: the map's table then holds a pointer per slot, so its power-of-two growth
    /// wastes 8 bytes per empty slot instead of a whole record.
    sessions: DashMap<SessionKey, Box<SessionRecord>>,
    users: DashMap<Arc<str>, UserBaseline>,
    /// Each user's sessions (bounded), for revoking them all.
    user_sessions: DashMap<Arc<str>, Vec<SessionKey>>,
    /// Revoked sessions and when their revocation may be forgotten.
    revoked: DashMap<SessionKey, Secs>,
    limits: StoreLimits,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> MemoryStore {
        MemoryStore {
            sessions: DashMap::new(),
            users: DashMap::new(),
            user_sessions: DashMap::new(),
            revoked: DashMap::new(),
            limits,
        }
    }

    fn expired(&self, r: &SessionRecord, now: Secs) -> bool {
        now.saturating_sub(r.last.at) > self.limits.idle_ttl || now.saturating_sub(r.created) > self.limits.absolute_ttl
    }

    pub fn load(&self, key: &SessionKey, user: Option<&str>, now: Secs) -> Loaded {
        let revoked = self.revoked.get(key).is_some_and(|until| *until > now);
        let record = match self.sessions.get(key) {
            Some(r) if !self.expired(&r, now) => Some((**r).clone()),
            Some(_) => {
                self.sessions.remove(key);
                None
            }
            None => None,
        };
        let user = user.or(record.as_ref().and_then(|r| r.user.as_deref()));
        let baseline = user.and_then(|u| self.users.get(u).map(|b| *b));
        Loaded { record, baseline, revoked }
    }

    pub fn store(&self, key: SessionKey, record: SessionRecord, learned: Option<(&Arc<str>, &UserBaseline)>) {
        if self.sessions.len() >= self.limits.max_sessions && !self.sessions.contains_key(&key) {
            self.make_room(record.last.at);
        }
        match self.sessions.get_mut(&key) {
            // Overwrite in place: no allocation on the steady path.
            Some(mut slot) => **slot = record,
            None => {
                self.sessions.insert(key, Box::new(record));
            }
        }
        if let Some((user, baseline)) = learned {
            if self.users.len() >= self.limits.max_users && !self.users.contains_key(user) {
                // Users are far fewer than sessions; dropping the stalest few is enough.
                let stale: Vec<Arc<str>> = self.users.iter().take(self.limits.max_users / 100 + 1).map(|e| e.key().clone()).collect();
                for u in stale {
                    self.users.remove(&u);
                    self.user_sessions.remove(&u);
                }
            }
            self.users.insert(user.clone(), *baseline);
        }
    }

    /// Indexes a newly bound session under its user.
    pub fn index_session(&self, user: &Arc<str>, key: SessionKey) {
        let mut list = self.user_sessions.entry(user.clone()).or_default();
        if !list.contains(&key) {
            if list.len() >= USER_SESSIONS {
                list.remove(0);
            }
            list.push(key);
        }
    }

    /// Sweeps expired sessions; if the map is still full, drops an arbitrary 1 %.
    fn make_room(&self, now: Secs) {
        self.sweep(now);
        if self.sessions.len() >= self.limits.max_sessions {
            let victims: Vec<SessionKey> =
                self.sessions.iter().take(self.limits.max_sessions / 100 + 1).map(|e| *e.key()).collect();
            for k in victims {
                self.sessions.remove(&k);
            }
        }
    }

    /// Removes expired sessions and revocations; returns how many sessions went.
    pub fn sweep(&self, now: Secs) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, r| !self.expired(r, now));
        self.revoked.retain(|_, until| *until > now);
        before - self.sessions.len()
    }

    pub fn revoke(&self, key: SessionKey, now: Secs) -> bool {
        self.revoked.insert(key, now.saturating_add(self.limits.absolute_ttl));
        self.sessions.remove(&key).is_some()
    }

    /// Revokes every session indexed under `user`; returns their keys.
    pub fn revoke_user(&self, user: &str, now: Secs) -> Vec<SessionKey> {
        let mut keys: Vec<SessionKey> = self.user_sessions.get(user).map(|l| l.clone()).unwrap_or_default();
        // Also sessions whose record names the user but fell out of the bounded index.
        keys.extend(self.sessions.iter().filter(|e| e.user.as_deref() == Some(user)).map(|e| *e.key()));
        keys.sort();
        keys.dedup();
        for k in &keys {
            self.revoke(*k, now);
        }
        keys
    }

    pub fn sessions_of(&self, user: &str) -> Vec<(SessionKey, SessionRecord)> {
        self.sessions.iter().filter(|e| e.user.as_deref() == Some(user)).map(|e| (*e.key(), (**e.value()).clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
