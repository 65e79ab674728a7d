//! The pending-challenge table: what tether remembers between a step-up challenge and its
//! callback, bounded against floods.
//!
//! - At most `per_session` pending challenges per session (several tabs may each start
//!   one); a further one replaces that session's oldest, so one cookie cannot pile them up.
//!   A successful callback clears its siblings; a failed one clears only itself.
//! - At most `max_pending` in all; beyond it the oldest goes. Age order is kept by a queue
//!   in issue order, so expiry and eviction pop from its front in O(1) amortised time
//!   instead of scanning the table under its lock.
//! - Issuing is rate-limited per client address (IPv6 by /64) and globally: over a rate
//!   the caller answers 429 with `Retry-After`, never lets the request through.
//! - The stored return URL is bounded (`max_return` bytes); a longer one is not kept.
//!
//! Lock discipline: one mutex around the whole table; it is never held across an
//! `.await` or a call outside this module. Time is an input (`now`): a clock moved
//! backwards expires nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::challenge::{Kind, mint, verify_state, Issued, Pending, StateError, CHALLENGE_TTL, STATE_ID};
use super::wire::{decode_pending, encode_pending};
use crate::session::redis::RedisChallenges;
use crate::session::{HashKey, Secs, SessionKey};

/// A challenge answered after its lifetime is refused, wherever it was kept.
fn expired(pending: Pending, now: Secs) -> Result<Pending, StateError> {
    if now.saturating_sub(pending.created) > CHALLENGE_TTL {
        return Err(StateError::Expired);
    }
    Ok(pending)
}

type Id = [u8; STATE_ID];

/// A token-bucket rate: `per_minute` sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// Bounds on the challenge table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChallengeLimits {
    pub max_pending: usize,
    pub per_session: usize,
    pub max_return: usize,
    pub per_address: Rate,
    pub global: Rate,
}

impl Default for ChallengeLimits {
    fn default() -> Self {
        ChallengeLimits {
            // About 20 MiB at the bound with every return URL at its maximum (see README).
            max_pending: 20_000,
            // Several tabs, each challenged once.
            per_session: 4,
            max_return: 1024,
            // A person steps up a few times a minute at most; a tab storm stays under it.
            per_address: Rate { per_minute: 20, burst: 20 },
            // The IdP's own login rate is the real ceiling; this keeps a flood from
            // costing more than the table's bound.
            global: Rate { per_minute: 6000, burst: 1000 },
        }
    }
}

/// Why no challenge was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BeginError {
    #[error("too many step-up challenges; retry after {retry_after} s")]
    RateLimited { retry_after: Secs },
    #[error("system randomness unavailable")]
    NoRandomness,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f32,
    at: Secs,
}

impl Bucket {
    fn full(rate: Rate, now: Secs) -> Bucket {
        Bucket { tokens: rate.burst as f32, at: now }
    }

    fn refill(&mut self, rate: Rate, now: Secs) {
        let elapsed = now.saturating_sub(self.at) as f32;
        self.tokens = (self.tokens + elapsed * rate.per_minute as f32 / 60.0).min(rate.burst as f32);
        // A clock moved backwards keeps the later stamp: it never mints tokens.
        self.at = self.at.max(now);
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Secs) -> Result<(), Secs> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let per_sec = (rate.per_minute as f32 / 60.0).max(f32::MIN_POSITIVE);
        Err(((1.0 - self.tokens) / per_sec).ceil().max(1.0) as Secs)
    }
}

/// Per-address buckets tracked at once; past it, new addresses share one bucket, so a
/// flood of fresh addresses costs a fixed amount of memory.
const MAX_ADDRESSES: usize = 65_536;

/// The address a rate is kept for: IPv4 /32, IPv6 /64 (one subscriber's allocation).
fn rate_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
    }
}

#[derive(Default)]
struct Table {
    pending: HashMap<Id, Pending>,
    /// Issue order: the front is the oldest. Entries already taken are skipped lazily.
    order: VecDeque<Id>,
    by_session: HashMap<SessionKey, Vec<Id>>,
    addresses: HashMap<u128, Bucket>,
    overflow: Option<Bucket>,
    global: Option<Bucket>,
}

/// What a new challenge is for: the session, its user when known, where the browser
/// goes back to, the callback the IdP returns to, who asked and when.
pub struct ChallengeRequest<'a> {
    pub kind: Kind,
    pub key: &'a HashKey,
    pub session: SessionKey,
    pub user: Option<Arc<str>>,
    pub return_to: Option<String>,
    pub redirect_uri: String,
    pub client: IpAddr,
    pub now: Secs,
}

pub struct Challenges {
    table: Mutex<Table>,
    limits: ChallengeLimits,
    /// The shared store's challenges, when replicas share one.
    shared: Option<RedisChallenges>,
}

impl Default for Challenges {
    fn default() -> Self {
        Challenges::new(ChallengeLimits::default())
    }
}

impl Challenges {
    pub fn new(limits: ChallengeLimits) -> Challenges {
        Challenges { table: Mutex::new(Table::default()), limits, shared: None }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps pending challenges in the shared store (a callback may land on any
    /// replica); this table then holds only those issued while the store could not
    /// answer. Rates stay per replica.
    pub fn sharing(mut self, shared: RedisChallenges) -> Challenges {
        self.shared = Some(shared);
        self
    }

    /// Issues a challenge into this replica's table.
    pub fn begin(&self, req: ChallengeRequest<'_>) -> Result<Issued, BeginError> {
        let now = req.now;
        let (id, pending, issued) = self.mint_pending(req)?;
        self.keep(id, pending, now);
        Ok(issued)
    }

    /// Issues a challenge where a callback will find it: the shared store when there is
    /// one and it answers, else this replica's table.
    pub async fn issue(&self, req: ChallengeRequest<'_>) -> Result<Issued, BeginError> {
        let Some(shared) = &self.shared else {
            return self.begin(req);
        };
        let now = req.now;
        let (id, pending, issued) = self.mint_pending(req)?;
        if let Ok(value) = encode_pending(&pending) {
            if shared.put(&id, &pending.session, value, CHALLENGE_TTL, self.limits.per_session).await.is_ok() {
                return Ok(issued);
            }
        }
        // The store could not take it: this replica keeps it, so a callback that comes
        // back here still completes.
        self.keep(id, pending, now);
        Ok(issued)
    }

    /// Rate-limits and mints a challenge without keeping it.
    fn mint_pending(&self, req: ChallengeRequest<'_>) -> Result<(Id, Pending, Issued), BeginError> {
        let limits = self.limits;
        // Secrets are minted outside the lock.
        let (id, verifier, issued) = mint(req.key).ok_or(BeginError::NoRandomness)?;
        let return_to = req.return_to.filter(|r| r.len() <= limits.max_return);
        self.lock().admit(req.client, &limits, req.now).map_err(|retry_after| BeginError::RateLimited { retry_after })?;
        let pending = Pending {
            kind: req.kind,
            session: req.session,
            user: req.user,
            verifier,
            nonce: issued.nonce.clone(),
            return_to,
            redirect_uri: req.redirect_uri,
            created: req.now,
        };
        Ok((id, pending, issued))
    }

    /// Keeps a minted challenge in this replica's table.
    fn keep(&self, id: Id, pending: Pending, now: Secs) {
        let limits = self.limits;
        let session = pending.session;
        let mut t = self.lock();
        t.expire(now);
        // This session's oldest challenge gives way to the new one.
        let siblings = t.by_session.entry(session).or_default();
        let replaced = (siblings.len() >= limits.per_session.max(1)).then(|| siblings.remove(0));
        siblings.push(id);
        if let Some(old) = replaced {
            t.pending.remove(&old);
        }
        while t.pending.len() >= limits.max_pending.max(1) {
            if !t.pop_oldest() {
                break;
            }
        }
        t.pending.insert(id, pending);
        t.order.push_back(id);
        t.compact();
    }

    /// Checks the state's signature, then takes the challenge from this replica's table
    /// (once: a replay finds nothing). Its siblings stay until one succeeds
    /// ([`Challenges::clear_session`]).
    pub fn take(&self, key: &HashKey, state: &str, now: Secs) -> Result<Pending, StateError> {
        let id = verify_state(key, state)?;
        self.take_id(&id, now)
    }

    fn take_id(&self, id: &Id, now: Secs) -> Result<Pending, StateError> {
        let mut t = self.lock();
        let pending = t.pending.remove(id).ok_or(StateError::Unknown)?;
        t.unlink(&pending.session, id);
        drop(t);
        expired(pending, now)
    }

    /// Checks the state's signature, then takes the challenge wherever it was kept: the
    /// shared store (once across every replica), else this replica's table.
    pub async fn redeem(&self, key: &HashKey, state: &str, now: Secs) -> Result<Pending, StateError> {
        let Some(shared) = &self.shared else {
            return self.take(key, state, now);
        };
        let id = verify_state(key, state)?;
        match shared.take(&id).await {
            // A value this version cannot read is as good as unknown.
            Ok(Some(value)) => decode_pending(&value).map_err(|_| StateError::Unknown).and_then(|p| expired(p, now)),
            // Issued here while the store could not take it, or not at all.
            Ok(None) | Err(_) => self.take_id(&id, now),
        }
    }

    /// A step-up of `session` succeeded: its other pending challenges are void, here and
    /// in the shared store (best effort: they expire within `CHALLENGE_TTL` anyway).
    pub async fn clear(&self, session: &SessionKey) {
        self.clear_session(session);
        if let Some(shared) = &self.shared {
            let _ = shared.clear_session(session).await;
        }
    }

    /// A step-up of `session` succeeded: its other pending challenges are void.
    pub fn clear_session(&self, session: &SessionKey) {
        let mut t = self.lock();
        if let Some(ids) = t.by_session.remove(session) {
            for id in ids {
                t.pending.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    fn admit(&mut self, client: IpAddr, limits: &ChallengeLimits, now: Secs) -> Result<(), Secs> {
        let global = self.global.get_or_insert(Bucket::full(limits.global, now));
        // Check the global rate without spending, so a refused address costs nothing.
        global.refill(limits.global, now);
        if global.tokens < 1.0 {
            return global.take(limits.global, now);
        }
        let k = rate_key(client);
        if !self.addresses.contains_key(&k) && self.addresses.len() >= MAX_ADDRESSES {
            // Buckets that have refilled completely carry no information.
            let rate = limits.per_address;
            self.addresses.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < rate.burst as f32
            });
        }
        let bucket = if self.addresses.contains_key(&k) || self.addresses.len() < MAX_ADDRESSES {
            self.addresses.entry(k).or_insert(Bucket::full(limits.per_address, now))
        } else {
            self.overflow.get_or_insert(Bucket::full(limits.per_address, now))
        };
        bucket.take(limits.per_address, now)?;
        self.global.get_or_insert(Bucket::full(limits.global, now)).take(limits.global, now)
    }

    /// Drops expired challenges from the front of the queue.
    fn expire(&mut self, now: Secs) {
        while let Some(id) = self.order.front().copied() {
            match self.pending.get(&id) {
                Some(p) if now.saturating_sub(p.created) <= CHALLENGE_TTL => break,
                _ => {
                    self.order.pop_front();
                    if let Some(p) = self.pending.remove(&id) {
                        self.unlink(&p.session, &id);
                    }
                }
            }
        }
    }

    /// Removes the oldest pending challenge; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        while let Some(id) = self.order.pop_front() {
            if let Some(p) = self.pending.remove(&id) {
                self.unlink(&p.session, &id);
                return true;
            }
        }
        false
    }

    fn unlink(&mut self, session: &SessionKey, id: &Id) {
        if let Some(ids) = self.by_session.get_mut(session) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.by_session.remove(session);
            }
        }
    }

    /// The queue keeps ids of challenges already taken until they reach its front; when
    /// those outnumber the live ones, drop them in one pass (amortised O(1) per issue).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            self.order.retain(|id| pending.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::{Digest, Sha256};

    use super::*;

    const CB: &str = "https://h/.tether/callback";

    fn key() -> HashKey {
        HashKey::new([7; 32], None)
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xC000_0200 + i))
    }

    fn session(i: u32) -> SessionKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        SessionKey(k)
    }

    fn begin(c: &Challenges, s: u32, from: u32, ret: Option<&str>, now: Secs) -> Result<Issued, BeginError> {
        let key = key();
        c.begin(ChallengeRequest { kind: Kind::StepUp, key: &key, session: session(s), user: None, return_to: ret.map(String::from), redirect_uri: CB.into(), client: ip(from), now })
    }

    fn begin_from(c: &Challenges, s: u32, from: IpAddr, now: Secs) -> Result<Issued, BeginError> {
        let key = key();
        c.begin(ChallengeRequest { kind: Kind::StepUp, key: &key, session: session(s), user: None, return_to: None, redirect_uri: CB.into(), client: from, now })
    }

    #[test]
    fn state_is_signed_single_use_and_short_lived() {
        let key = key();
        let c = Challenges::default();
        let s = session(1);
        let issued = begin(&c, 1, 1, Some("/x"), 1000).unwrap();
        assert_eq!(issued.code_challenge.len(), 43);
        let pending = c.take(&key, &issued.state, 1010).unwrap();
        assert_eq!(pending.session, s);
        assert_eq!(pending.return_to.as_deref(), Some("/x"));
        assert_eq!(URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes())), issued.code_challenge);
        // Replayed.
        assert_eq!(c.take(&key, &issued.state, 1010).unwrap_err(), StateError::Unknown);
        // Forged: another key's signature, garbage, a flipped byte.
        let other = HashKey::new([8; 32], None);
        let issued = begin(&c, 1, 1, None, 1000).unwrap();
        assert_eq!(c.take(&other, &issued.state, 1000).unwrap_err(), StateError::Forged);
        assert_eq!(c.take(&key, "not-base64!", 1000).unwrap_err(), StateError::Forged);
        let mut raw = URL_SAFE_NO_PAD.decode(&issued.state).unwrap();
        raw[0] ^= 1;
        assert_eq!(c.take(&key, &URL_SAFE_NO_PAD.encode(raw), 1000).unwrap_err(), StateError::Forged);
        // Expired.
        assert_eq!(c.take(&key, &issued.state, 1000 + CHALLENGE_TTL + 1).unwrap_err(), StateError::Expired);
    }

    #[test]
    fn one_session_cannot_pile_up_challenges() {
        let c = Challenges::default();
        let states: Vec<String> = (0..10).map(|i| begin(&c, 1, i, Some("/tab"), 1000).unwrap().state).collect();
        assert_eq!(c.len(), ChallengeLimits::default().per_session);
        // The oldest were replaced, the newest still complete.
        assert_eq!(c.take(&key(), &states[0], 1001).unwrap_err(), StateError::Unknown);
        assert!(c.take(&key(), &states[9], 1001).is_ok());
    }

    #[test]
    fn a_failure_keeps_the_siblings_a_success_clears_them() {
        let c = Challenges::default();
        let a = begin(&c, 1, 1, None, 1000).unwrap();
        let b = begin(&c, 1, 1, None, 1000).unwrap();
        let d = begin(&c, 1, 1, None, 1000).unwrap();
        // Taking one (its callback then fails) leaves the other tabs' challenges.
        c.take(&key(), &a.state, 1001).unwrap();
        assert_eq!(c.len(), 2);
        // Another completes: the session's remaining challenge is void.
        c.take(&key(), &b.state, 1001).unwrap();
        c.clear_session(&session(1));
        assert_eq!(c.take(&key(), &d.state, 1001).unwrap_err(), StateError::Unknown);
        assert!(c.is_empty());
    }

    #[test]
    fn over_long_return_urls_are_not_kept() {
        let c = Challenges::default();
        let long = format!("/{}", "a".repeat(5000));
        let i = begin(&c, 1, 1, Some(&long), 1000).unwrap();
        assert_eq!(c.take(&key(), &i.state, 1000).unwrap().return_to, None);
    }

    #[test]
    fn rates_are_enforced_per_address_and_globally() {
        let limits = ChallengeLimits {
            per_address: Rate { per_minute: 60, burst: 3 },
            global: Rate { per_minute: 600, burst: 10 },
            ..ChallengeLimits::default()
        };
        let c = Challenges::new(limits);
        // Per address: three at once, then refused with a retry hint, then one a second.
        for s in 0..3 {
            assert!(begin(&c, s, 1, None, 1000).is_ok());
        }
        assert_eq!(begin(&c, 9, 1, None, 1000).unwrap_err(), BeginError::RateLimited { retry_after: 1 });
        assert!(begin(&c, 9, 1, None, 1001).is_ok());
        // IPv6: one /64 is one address.
        let v6 = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, n));
        for n in 0..3 {
            begin_from(&c, 100 + u32::from(n), v6(n), 2000).unwrap();
        }
        assert!(matches!(begin_from(&c, 200, v6(77), 2000), Err(BeginError::RateLimited { .. })));
        // Globally: a flood from fresh addresses hits the global bucket.
        let refused = (0..100).filter(|i| begin(&c, 1000 + i, 1000 + i, None, 3000).is_err()).count();
        assert!(refused >= 85, "{refused}");
        // A clock moved backwards mints no tokens.
        assert!(begin(&c, 5000, 5000, None, 10).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let limits = ChallengeLimits {
            max_pending: 100,
            global: Rate { per_minute: 1_000_000, burst: 1_000_000 },
            ..ChallengeLimits::default()
        };
        let c = Challenges::new(limits);
        let states: Vec<String> = (0..1000).map(|i| begin(&c, i, i, None, 1000 + i / 100).unwrap().state).collect();
        assert_eq!(c.len(), 100);
        assert_eq!(c.take(&key(), &states[0], 1010).unwrap_err(), StateError::Unknown);
        assert!(c.take(&key(), &states[999], 1010).is_ok());
        // Past the lifetime, the next issue sweeps them out.
        begin(&c, 5000, 5000, None, 1010 + CHALLENGE_TTL + 1).unwrap();
        assert_eq!(c.len(), 1);
    }
}

#[cfg(test)]
mod measure {
    use super::*;

    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
    }

    /// Prints the resident memory one pending challenge costs (run by hand with
    /// `cargo test --release --lib memory_per_challenge -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn memory_per_challenge() {
        let limits = ChallengeLimits { global: Rate { per_minute: u32::MAX, burst: u32::MAX }, ..ChallengeLimits::default() };
        let n = limits.max_pending as u32;
        for (label, ret) in [("short return URL", "/console/tokens".to_owned()), ("return URL at the bound", format!("/{}", "a".repeat(1023)))] {
            let c = Challenges::new(limits);
            let key = HashKey::new([7; 32], None);
            let before = rss();
            for i in 0..n {
                let mut k = [0u8; 16];
                k[..4].copy_from_slice(&i.to_le_bytes());
                let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
                let req = ChallengeRequest {
                    kind: Kind::StepUp,
                    key: &key,
                    session: SessionKey(k),
                    user: None,
                    return_to: Some(ret.clone()),
                    redirect_uri: "https://admin.example/.tether/callback".into(),
                    client: ip,
                    now: 1000,
                };
                c.begin(req).unwrap();
            }
            let after = rss();
            println!("{label}: {} challenges, {} bytes each", c.len(), (after - before) / c.len());
        }
    }
}
