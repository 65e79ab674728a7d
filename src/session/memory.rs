//! The embedded store: sessions, user baselines and revocations in sharded concurrent
//! maps, bounded by count and by idle and absolute lifetimes.
//!
//! Lock discipline: a map guard (`Ref`, `RefMut`, an entry) never lives across another
//! call on the same map, nor across an `.await` (this store has none). Read what is
//! needed into a value and let the guard drop at the end of that statement; remove with
//! `remove_if`, bulk-remove with `retain`. A guard held while touching the same shard
//! deadlocks the worker thread and, with it, every later request on that shard.
//!
//! Eviction: when the session map is full, the least recently used sessions go first,
//! and sessions without history (seen within one minute, no known user: what a flood of
//! fresh cookies creates) before sessions with history. Every evicted session leaves a
//! tombstone, so its next sighting is reported as `history_lost` instead of passing as a
//! first sight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::lineage::Lineage;
use super::record::{Secs, SessionRecord, UserBaseline, USER_SESSIONS};
use super::tombstone::{Tombstones, Worth};
use super::device::DeviceBinding;
use super::{Bind, Loaded, SessionKey, StoreLimits};

/// A session seen across less than this, with no known user, is "ephemeral": evicted
/// before any session with history.
const EPHEMERAL_SECS: Secs = 60;

/// Share of a full table evicted at once (1 %): eviction walks the table, so it runs
/// once per this many new entries, not once per entry.
const EVICT_SHARE: usize = 100;

/// The sessions' share (5 %): their walk reads every record, so at 1 % a flood of fresh
/// cookies paid about 200 record reads per new session (a third of a first sight's
/// cost in its profile); at 5 %, 40.
const EVICT_SESSION_SHARE: usize = 20;

/// Records read to find the eviction cut: enough for a 5 % quantile within a fraction of
/// a percent, few enough to cost microseconds.
const EVICT_SAMPLE: usize = 4096;

pub struct MemoryStore {
    /// Boxed: the map's table then holds a pointer per slot, so its power-of-two growth
    /// wastes 8 bytes per empty slot instead of a whole record.
    sessions: DashMap<SessionKey, Box<SessionRecord>>,
    users: DashMap<Arc<str>, UserBaseline>,
    /// Each user's sessions (bounded), for revoking them all.
    user_sessions: DashMap<Arc<str>, Vec<SessionKey>>,
    /// Revoked sessions and when their revocation may be forgotten.
    revoked: DashMap<SessionKey, Secs>,
    /// Users revoked as a whole, and when: every session or token of theirs from before
    /// is revoked. Kept `absolute_ttl`, bounded by `max_users`.
    revoked_users: DashMap<Arc<str>, Secs>,
    tombstones: Tombstones,
    /// One eviction at a time; the others go on (the bound overshoots by at most the
    /// requests in flight).
    evicting: AtomicBool,
    evictions: AtomicU64,
    limits: StoreLimits,
}

/// Counters the store keeps for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCounts {
    pub sessions: usize,
    pub users: usize,
    pub revocations: usize,
    pub evictions: u64,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> MemoryStore {
        MemoryStore {
            sessions: DashMap::new(),
            users: DashMap::new(),
            user_sessions: DashMap::new(),
            revoked: DashMap::new(),
            revoked_users: DashMap::new(),
            tombstones: Tombstones::new(limits.max_sessions),
            evicting: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            limits,
        }
    }

    fn expired(&self, r: &SessionRecord, now: Secs) -> bool {
        now.saturating_sub(r.last.at) > self.limits.idle_ttl || now.saturating_sub(r.created) > self.limits.absolute_ttl
    }

    /// A session bound to a device key (DBSC) that idles out leaves a tombstone, as an
    /// evicted one does: its long-lived cookie, back later (a thief's copy), is then
    /// `history_lost`, never the first sight that would be offered a registration of
    /// its own. One past its absolute lifetime is over for the console too.
    fn bury(&self, key: &SessionKey, r: &SessionRecord, now: Secs) {
        if r.device().is_some() && now.saturating_sub(r.created) <= self.limits.absolute_ttl {
            self.tombstones.insert(key, Worth::Established);
        }
    }

    /// Registers a device key on a live session unless it has one: checked and written
    /// under the entry's lock, so of two registrations racing, the first key stays.
    pub fn bind_device(&self, key: &SessionKey, binding: DeviceBinding, now: Secs) -> Bind {
        match self.sessions.get_mut(key) {
            Some(r) if self.expired(&r, now) => Bind::Gone,
            Some(r) if r.device().is_some() => Bind::Kept,
            Some(mut r) => {
                r.set_device(Some(binding));
                Bind::Written
            }
            None => Bind::Gone,
        }
    }

    pub fn load(&self, key: &SessionKey, user: Option<&str>, now: Secs) -> Loaded {
        let revoked = self.revoked.get(key).is_some_and(|until| *until > now);
        // The guard lives only inside this statement (see the module comment).
        let record = self.sessions.get(key).and_then(|r| (!self.expired(&r, now)).then(|| (**r).clone()));
        let history_lost = record.is_none() && {
            // Expired: forget it now, unless a concurrent request stored it afresh.
            if let Some((k, r)) = self.sessions.remove_if(key, |_, r| self.expired(r, now)) {
                self.bury(&k, &r, now);
            }
            self.tombstones.contains(key)
        };
        let user = user.or(record.as_ref().and_then(|r| r.user.as_deref()));
        let baseline = user.and_then(|u| self.users.get(u).map(|b| *b));
        let user_revoked_at = user.and_then(|u| self.revoked_users.get(u).map(|at| *at));
        // A session of a revoked user that began before the revocation.
        let revoked = revoked || matches!((&record, user_revoked_at), (Some(r), Some(at)) if r.created < at);
        Loaded { record, baseline, revoked, history_lost, user_revoked_at }
    }

    pub fn store(&self, key: SessionKey, record: SessionRecord, learned: Option<(&Arc<str>, &UserBaseline)>) {
        let now = record.last.at;
        let updated = match self.sessions.get_mut(&key) {
            // Overwrite in place: no allocation on the steady path. The lineage is the
            // lineage operations' own: what a judgement loaded may be a rotation behind.
            // A device binding is never taken away by a write: a judgement that loaded the
            // record before the key was registered writes back a record without it.
            // (The binding lives in the record's shared part: carrying it over copies that
            // part, on this rare path only.)
            Some(mut slot) => {
                let lineage = slot.lineage;
                let device = if record.device().is_none() { slot.device().cloned() } else { None };
                **slot = record;
                slot.lineage = lineage;
                if device.is_some() {
                    slot.set_device(device);
                }
                None
            }
            None => Some(record),
        };
        if let Some(record) = updated {
            if self.sessions.len() >= self.limits.max_sessions {
                self.make_room(now);
            }
            self.tombstones.remove(&key);
            self.sessions.insert(key, Box::new(record));
        }
        if let Some((user, baseline)) = learned {
            if self.users.len() >= self.limits.max_users && !self.users.contains_key(user) {
                self.evict_users();
            }
            self.users.insert(user.clone(), *baseline);
        }
    }
    /// The session's lineage now.
    pub fn lineage(&self, key: &SessionKey) -> Option<Lineage> {
        self.sessions.get(key).and_then(|r| r.lineage)
    }

    /// Replaces the lineage `expected` by `next` in one step under the shard's lock; false
    /// when it changed meanwhile (another request rotated it) or the session is gone.
    pub fn swap_lineage(&self, key: &SessionKey, expected: Option<&Lineage>, next: Lineage) -> bool {
        match self.sessions.get_mut(key) {
            Some(mut r) if r.lineage.as_ref() == expected => {
                r.lineage = Some(next);
                true
            }
            _ => false,
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

    /// Sweeps expired sessions; if the map is still full, evicts the least recently used
    /// share, sessions without history first, leaving a tombstone for each.
    fn make_room(&self, now: Secs) {
        if self.evicting.swap(true, Ordering::Acquire) {
            return;
        }
        let excess = (self.sessions.len() + (self.limits.max_sessions / EVICT_SESSION_SHARE).max(1)).saturating_sub(self.limits.max_sessions);
        if excess > 0 {
            self.evict(excess, now);
        }
        self.evicting.store(false, Ordering::Release);
    }

    /// Makes room for `count` sessions in one pass over the map: expired sessions go,
    /// and then sessions at or below a cut — ephemeral ones first, each class least
    /// recently used first — each leaving a tombstone. The cut comes from a sample of the
    /// map, so finding it reads a few thousand records, not every one; records are read
    /// once, by the `retain` that removes them.
    fn evict(&self, count: usize, now: Secs) {
        // Rank: ephemeral sessions rank below every session with history.
        let rank = |r: &SessionRecord| -> u64 {
            let history = r.user.is_some() || r.last.at.saturating_sub(r.created) >= EPHEMERAL_SECS;
            (u64::from(history) << 32) | u64::from(r.last.at.min(now))
        };
        let len = self.sessions.len().max(1);
        let stride = (len / EVICT_SAMPLE).max(1);
        let mut sample: Vec<u64> = self.sessions.iter().step_by(stride).map(|e| rank(e.value())).collect();
        if sample.is_empty() {
            return;
        }
        // The whole map sampled: the exact cut. Else twice the share wanted, so that the
        // cut holds at least `count` despite sampling; `left` stops the eviction at `count`.
        let wanted = if stride == 1 { count } else { (count * 2 * sample.len()).div_ceil(len) };
        let nth = wanted.clamp(1, sample.len()) - 1;
        let (_, cut, _) = sample.select_nth_unstable(nth);
        let cut = *cut;
        drop(sample);
        let mut left = count;
        let mut evicted = 0u64;
        self.sessions.retain(|k, r| {
            let r: &SessionRecord = r;
            if self.expired(r, now) {
                self.bury(k, r, now);
                left = left.saturating_sub(1);
                return false;
            }
            if left == 0 || rank(r) > cut {
                return true;
            }
            left -= 1;
            evicted += 1;
            let worth = if rank(r) >> 32 == 1 { Worth::Established } else { Worth::Ephemeral };
            self.tombstones.insert(k, worth);
            false
        });
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    /// Users are far fewer than sessions; the least recently updated share goes.
    fn evict_users(&self) {
        let mut ages: Vec<Secs> = self.users.iter().map(|e| e.value().updated).collect();
        if ages.is_empty() {
            return;
        }
        let nth = (self.limits.max_users / EVICT_SHARE).min(ages.len() - 1);
        let (_, cut, _) = ages.select_nth_unstable(nth);
        let cut = *cut;
        let mut gone: Vec<Arc<str>> = Vec::new();
        let mut left = nth + 1;
        self.users.retain(|u, b| {
            if left == 0 || b.updated > cut {
                return true;
            }
            left -= 1;
            gone.push(u.clone());
            false
        });
        for u in gone {
            self.user_sessions.remove(&u);
        }
    }

    /// Removes expired sessions and revocations; returns how many sessions went.
    pub fn sweep(&self, now: Secs) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|k, r| {
            let expired = self.expired(r, now);
            if expired {
                self.bury(k, r, now);
            }
            !expired
        });
        self.revoked.retain(|_, until| *until > now);
        let horizon = now.saturating_sub(self.limits.absolute_ttl);
        self.revoked_users.retain(|_, at| *at > horizon);
        // Concurrent inserts may outnumber what the sweep removed.
        before.saturating_sub(self.sessions.len())
    }

    pub fn revoke(&self, key: SessionKey, now: Secs) -> bool {
        if self.revoked.len() >= self.limits.max_sessions && !self.revoked.contains_key(&key) {
            self.make_room_for_revocation(now);
        }
        self.revoked.insert(key, now.saturating_add(self.limits.absolute_ttl));
        self.sessions.remove(&key).is_some()
    }

    /// Revocations are bounded like sessions: expired ones go first; if the map is still
    /// full, the oldest share (the ones that expire soonest) is forgotten.
    fn make_room_for_revocation(&self, now: Secs) {
        self.revoked.retain(|_, until| *until > now);
        if self.revoked.len() < self.limits.max_sessions {
            return;
        }
        let mut untils: Vec<Secs> = self.revoked.iter().map(|e| *e.value()).collect();
        let nth = (self.limits.max_sessions / EVICT_SHARE).min(untils.len().saturating_sub(1));
        let (_, cut, _) = untils.select_nth_unstable(nth);
        let cut = *cut;
        let mut left = nth + 1;
        self.revoked.retain(|_, until| {
            if left == 0 || *until > cut {
                return true;
            }
            left -= 1;
            false
        });
    }

    /// Revokes every session indexed under `user`; returns their keys.
    pub fn revoke_user(&self, user: &str, now: Secs) -> Vec<SessionKey> {
        if self.revoked_users.len() >= self.limits.max_users && !self.revoked_users.contains_key(user) {
            let horizon = now.saturating_sub(self.limits.absolute_ttl);
            self.revoked_users.retain(|_, at| *at > horizon);
        }
        if self.revoked_users.len() < self.limits.max_users || self.revoked_users.contains_key(user) {
            self.revoked_users.insert(Arc::from(user), now);
        }
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

    pub fn counts(&self) -> StoreCounts {
        StoreCounts {
            sessions: self.sessions.len(),
            users: self.users.len(),
            revocations: self.revoked.len(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Bytes the tombstone filter holds.
    pub fn tombstone_bytes(&self) -> usize {
        self.tombstones.bytes()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::fingerprint::{Os, TlsClass, UaFamily, UserAgent};
    use crate::intel::NetInfo;
    use crate::session::record::{Client, Place};

    const T0: Secs = 1_700_000_000;

    fn key(i: u32) -> SessionKey {
        let mut k = [0u8; 16];
        let x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        k[..8].copy_from_slice(&x.to_le_bytes());
        k[8..].copy_from_slice(&x.rotate_left(17).wrapping_mul(0xbf58_476d_1ce4_e5b9).to_le_bytes());
        SessionKey(k)
    }

    fn record(created: Secs, last: Secs, user: Option<&str>) -> SessionRecord {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let net = NetInfo::unknown();
        let client = Client { ua: UserAgent { family: UaFamily::Chrome, major: 150, os: Os::Windows }, ja4: None, tls: TlsClass::Browser };
        SessionRecord { last: Place::new(ip, &net, last), user: user.map(Arc::from), ..SessionRecord::new(Place::new(ip, &net, created), client) }
    }

    #[test]
    fn the_first_device_key_stays_and_a_bound_session_that_idles_out_is_lost() {
        use crate::session::device::{DeviceAlg, DeviceBinding, DeviceKey};
        let store = MemoryStore::new(limits(10));
        let binding = |b: u8| DeviceBinding { key: DeviceKey { alg: DeviceAlg::Es256, bytes: vec![b; 64].into(), split: 32 }, registered: 100, demanded: 0 };
        assert_eq!(store.bind_device(&key(1), binding(1), 100), Bind::Gone, "no session, no binding");
        store.store(key(1), record(100, 100, None), None);
        assert_eq!(store.bind_device(&key(1), binding(1), 100), Bind::Written);
        assert_eq!(store.bind_device(&key(1), binding(2), 100), Bind::Kept, "a racing registration does not replace it");
        assert_eq!(store.load(&key(1), None, 100).record.and_then(|r| r.device().map(|d| d.key.bytes[0])), Some(1));
        // Idled out (limits: an hour), on a load and on a sweep alike: lost, not unknown.
        store.store(key(2), record(100, 100, None), None);
        store.bind_device(&key(2), binding(3), 100);
        store.store(key(3), record(100, 100, None), None);
        let later = 100 + 3601;
        let l = store.load(&key(1), None, later);
        assert!(l.record.is_none() && l.history_lost);
        store.sweep(later);
        assert!(store.load(&key(2), None, later).history_lost);
        assert!(!store.load(&key(3), None, later).history_lost, "an unbound session's expiry is no loss");
    }

    #[test]
    fn a_write_from_an_older_read_never_takes_a_device_binding_away() {
        use crate::session::device::{DeviceAlg, DeviceBinding, DeviceKey};
        let store = MemoryStore::new(limits(10));
        let stale = record(100, 100, Some("alice"));
        store.store(key(1), stale.clone(), None);
        let mut bound = stale.clone();
        let device = DeviceBinding { key: DeviceKey { alg: DeviceAlg::Es256, bytes: vec![4; 64].into(), split: 32 }, registered: 101, demanded: 0 };
        bound.set_device(Some(device.clone()));
        store.store(key(1), bound, None);
        // A request that loaded the record before the registration writes it back.
        let mut later = stale;
        later.last.at = 102;
        store.store(key(1), later, None);
        let now = store.load(&key(1), None, 102).record.unwrap();
        assert_eq!(now.device(), Some(&device), "the binding survives");
        assert_eq!(now.last.at, 102, "the rest of the write lands");
    }

    fn limits(max_sessions: usize) -> StoreLimits {
        StoreLimits { idle_ttl: 3600, absolute_ttl: 7 * 86_400, max_sessions, max_users: 1000 }
    }

    /// Runs `f` on its own thread and fails instead of hanging if it never returns: the
    /// regression this guards is a worker wedged on a shard lock.
    fn finishes(name: &str, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        assert!(rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok(), "{name}: the store wedged");
    }

    #[test]
    fn a_session_back_after_its_lifetimes_is_forgotten_without_wedging() {
        // (case, seconds after creation of the last sighting, seconds of the return)
        let cases: &[(&str, Secs, Secs)] = &[
            ("idle lifetime passed, before any sweep", 0, 3601),
            ("absolute lifetime crossed while in use", 7 * 86_400 - 10, 7 * 86_400 + 1),
            ("just inside the idle lifetime", 0, 3600),
        ];
        for &(case, last, back) in cases {
            let store = Arc::new(MemoryStore::new(limits(100)));
            store.store(key(1), record(T0, T0 + last, None), None);
            let s = store.clone();
            finishes(case, move || {
                let loaded = s.load(&key(1), None, T0 + back);
                let expect_record = back - last <= 3600 && back <= 7 * 86_400;
                assert_eq!(loaded.record.is_some(), expect_record, "{case}");
                assert!(!loaded.history_lost, "{case}: expiry is not eviction");
                // And the shard is free again.
                s.store(key(1), record(T0 + back, T0 + back, None), None);
                assert!(s.load(&key(1), None, T0 + back).record.is_some(), "{case}");
            });
        }
    }

    #[test]
    fn many_threads_with_sessions_expiring_and_returning_all_finish() {
        let store = Arc::new(MemoryStore::new(limits(2_000)));
        for i in 0..500 {
            store.store(key(i), record(T0, T0, None), None);
        }
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for round in 0..200u32 {
                        // Time jumps forward past the idle lifetime, and back again.
                        let now = if round % 3 == 2 { T0 + 100 } else { T0 + 4000 * (round + 1) };
                        for i in (t * 60)..(t * 60 + 60) {
                            let loaded = s.load(&key(i), None, now);
                            let created = loaded.record.map_or(now, |r| r.created);
                            s.store(key(i), record(created, now, None), None);
                        }
                        if round % 50 == 0 {
                            s.sweep(now);
                        }
                    }
                })
            })
            .collect();
        finishes("concurrent expiry", move || {
            for t in threads {
                t.join().unwrap();
            }
        });
    }

    /// Prints the resident memory one stored session costs: boxed record, key and map
    /// slot (run by hand: `cargo test --lib memory_per_session -- --ignored --nocapture`;
    /// the layout is the same in a debug build). A lineage is a fixed field of the record,
    /// so a session costs the same with `[lineage]` on or off.
    #[test]
    #[ignore]
    fn memory_per_session() {
        const N: u32 = 1_000_000;
        let rss = || {
            let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
            statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
        };
        let store = MemoryStore::new(StoreLimits { max_sessions: 2 * N as usize, ..limits(0) });
        let before = rss();
        for i in 0..N {
            store.store(key(i), record(T0, T0, None), None);
        }
        let after = rss();
        println!("{} sessions, {} bytes each (record {} bytes)", store.len(), after.saturating_sub(before) / u64::from(N), std::mem::size_of::<SessionRecord>());
    }

    #[test]
    fn a_record_written_back_never_undoes_a_rotation() {
        let store = MemoryStore::new(limits(100));
        let l = |b: u8| Lineage::new([b; crate::session::lineage::DIGEST_LEN], [0; crate::session::lineage::DIGEST_LEN], T0, None, true);
        assert!(!store.swap_lineage(&key(1), None, l(1)), "no session, no lineage");
        store.store(key(1), record(T0, T0, None), None);
        assert!(store.swap_lineage(&key(1), None, l(1)));
        // Two requests judged on l(1): one rotates, the other loses the race.
        assert!(store.swap_lineage(&key(1), Some(&l(1)), l(2)));
        assert!(!store.swap_lineage(&key(1), Some(&l(1)), l(3)));
        // A judgement that loaded the record before the rotation writes it back.
        let mut stale = record(T0, T0 + 5, None);
        stale.lineage = Some(l(1));
        store.store(key(1), stale, None);
        assert_eq!(store.lineage(&key(1)), Some(l(2)));
        assert_eq!(store.load(&key(1), None, T0 + 6).record.and_then(|r| r.lineage), Some(l(2)));
    }

    #[test]
    fn a_clock_jump_backwards_expires_nothing() {
        let store = MemoryStore::new(limits(100));
        store.store(key(1), record(T0, T0, None), None);
        assert!(store.load(&key(1), None, T0 - 86_400 * 30).record.is_some());
        assert_eq!(store.sweep(0), 0);
        assert!(store.load(&key(1), None, T0).record.is_some());
    }

    #[test]
    fn a_flood_of_fresh_cookies_cannot_make_a_bound_session_unknown() {
        let store = MemoryStore::new(limits(200));
        // The victim: bound an hour ago, a user known, last seen ten minutes ago.
        let victim = key(1_000_000);
        store.store(victim, record(T0, T0 + 3000, Some("alice")), None);
        // 600 fresh cookies, one request each, all newer than the victim's last sighting.
        for i in 0..600 {
            store.store(key(i), record(T0 + 3100 + i, T0 + 3100 + i, None), None);
        }
        assert!(store.len() <= 200, "the bound holds: {}", store.len());
        let loaded = store.load(&victim, None, T0 + 3700);
        assert!(loaded.record.is_some() || loaded.history_lost, "the victim became a first sight");
        // Sessions without history went first: the victim is still there.
        assert!(loaded.record.is_some());
        assert!(store.counts().evictions >= 400);
    }

    #[test]
    fn evicted_sessions_with_history_leave_a_tombstone() {
        let store = MemoryStore::new(limits(100));
        // A hundred established sessions fill the store; a hundred more push them out.
        for i in 0..100 {
            store.store(key(i), record(T0, T0 + 120 + i, Some("u")), None);
        }
        for i in 100..200 {
            store.store(key(i), record(T0, T0 + 1000 + i, Some("u")), None);
        }
        let now = T0 + 1300;
        let lost = (0..200).filter(|i| store.load(&key(*i), None, now).history_lost).count();
        let kept = (0..200).filter(|i| store.load(&key(*i), None, now).record.is_some()).count();
        assert_eq!(lost + kept, 200, "every session is either kept or tombstoned");
        // Least recently used first: the oldest sessions are the ones evicted.
        assert!(store.load(&key(0), None, now).history_lost);
        assert!(store.load(&key(199), None, now).record.is_some());
        // Stored again, the tombstone goes.
        store.store(key(0), record(now, now, Some("u")), None);
        assert!(!store.load(&key(0), None, now).history_lost);
        assert!(!store.load(&key(1_000_000), None, now).history_lost, "never stored, never tombstoned");
    }

    #[test]
    fn user_baselines_age_out_least_recently_updated_first() {
        let store = MemoryStore::new(StoreLimits { max_users: 100, ..limits(1000) });
        for i in 0..150u32 {
            let user: Arc<str> = Arc::from(format!("user{i}"));
            let baseline = UserBaseline { updated: T0 + i, ..UserBaseline::default() };
            store.store(key(i), record(T0 + i, T0 + i, Some(&user)), Some((&user, &baseline)));
        }
        assert!(store.counts().users <= 100, "{}", store.counts().users);
        // The most recently updated users are kept, the stalest went first.
        let baseline_of = |u: &str| store.load(&key(9999), Some(u), T0 + 200).baseline;
        assert!(baseline_of("user149").is_some());
        assert!(baseline_of("user0").is_none());
    }

    #[test]
    fn revocations_are_bounded_and_survive_session_eviction() {
        let store = MemoryStore::new(limits(50));
        store.store(key(1), record(T0, T0, Some("u")), None);
        store.revoke(key(1), T0);
        for i in 100..400 {
            store.store(key(i), record(T0 + i, T0 + i, None), None);
        }
        assert!(store.load(&key(1), None, T0 + 500).revoked);
        for i in 1000..1200 {
            store.revoke(key(i), T0 + i);
        }
        assert!(store.counts().revocations <= 51);
        // Revocation expiry follows the clock.
        assert!(!store.load(&key(1100), None, T0 + 1100 + 7 * 86_400 + 1).revoked);
    }
}
