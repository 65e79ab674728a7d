//! Cookie lineage: a companion cookie tether issues beside the console's session cookie
//! and rotates every `lineage.rotate_every`, so that a second copy of a session — a
//! cloned cookie jar — shows itself by presenting a value the lineage has moved past,
//! whatever network or client it uses.
//!
//! The rules, decided per request by [`assess`] (pure, `now` passed in):
//!
//! - the current value is fine; when it is older than `rotate_every` it is replaced;
//! - the previous value is fine while the current one has never come back (its response
//!   may still be on the way, or lost), and for `grace` after it first came back (requests
//!   a browser sent before it stored the new value); after that it means another copy:
//!   `forked`. A current value that has not come back for a whole rotation is replaced
//!   beside the held one (a lost answer) — [`MAX_REISSUES`] time in a row; beyond that it
//!   is not believed: someone takes each new value and drops it to keep a copy alive,
//!   `forked`;
//! - any other value means another copy: `forked`; several values are a spliced jar;
//! - no value at all, once the lineage is *armed* (one of its values came back at least
//!   once), means a copy made without the companion: `missing`. Until then a browser
//!   that refuses the cookie is not flagged (it is offered a new value each
//!   `rotate_every`); the window this leaves is a theft before the first round trip;
//! - a bearer credential can carry no companion: once armed it is `missing` (a verified
//!   JWT keys the same session whatever header carries it), before that it changes
//!   nothing (there is no jar to set a value in).
//!
//! A value never travels anywhere but the response that sets it: the store keeps a
//! 6-byte digest of each (the values are 128 random bits, so the digest reveals
//! nothing), logs and audit lines never see it, and the upstream never receives it.

use http::header::{HeaderMap, COOKIE};
use sha2::{Digest as _, Sha256};

use super::Secs;

/// The companion cookie's default name. `__Host-` makes the browser keep it only when
/// set over HTTPS, with `Path=/` and no `Domain`: no sibling host can plant or read one.
pub const DEFAULT_COOKIE: &str = "__Host-tether-lineage";
/// The prefix every companion cookie name must carry (see [`DEFAULT_COOKIE`]).
pub const COOKIE_PREFIX: &str = "__Host-";
/// Bytes of a stored digest: a value is 128 random bits, so 48 bits of its hash cannot be
/// matched by anyone who does not hold the value (2^-48 per guess, and a wrong guess is a
/// fork), nor found from the stored digest before the value is rotated away. Six bytes
/// keep the whole lineage at 20 (see [`Lineage`]).
pub const DIGEST_LEN: usize = 6;
/// Lost answers in a row a lineage believes: a browser loses one now and then; two in a
/// row, each a whole rotation apart while the browser kept sending the value before, is
/// someone taking each new value and dropping it. One keeps such a thief's copy alive
/// for at most two rotations after the first one it raced.
pub const MAX_REISSUES: u8 = 1;
/// The longest `rotate_every`: a value comes back before it is due, so the time of its
/// first return fits 16 bits after its issue.
pub const MAX_ROTATE: Secs = 12 * 3600;
/// Random bytes in a value.
pub const VALUE_LEN: usize = 16;

/// `[lineage]`, compiled. Present only when lineage is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageConfig {
    /// A value older than this is replaced on the session's next ordinary request.
    pub rotate_every: Secs,
    /// How long the previous value stays good after the current one first came back.
    pub grace: Secs,
    pub cookie: String,
}

impl Default for LineageConfig {
    fn default() -> Self {
        // Five minutes: a clone is found within minutes, at one cookie write per session
        // per five minutes. Ten seconds covers requests in flight across a rotation.
        LineageConfig { rotate_every: 300, grace: 10, cookie: DEFAULT_COOKIE.to_owned() }
    }
}

/// A stored value: its digest only.
pub type Digest = [u8; DIGEST_LEN];

/// The digest of a value as the browser presents it.
pub fn digest(value: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"tether lineage\0");
    h.update(value);
    let full = h.finalize();
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&full[..DIGEST_LEN]);
    out
}

/// A freshly issued value, in the only place it exists in clear: the response that sets
/// it. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Value([u8; VALUE_LEN * 2]);

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Value(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no system randomness for a lineage value: {0}")]
pub struct RandomError(getrandom::Error);

impl Value {
    pub fn generate() -> Result<Value, RandomError> {
        let mut raw = [0u8; VALUE_LEN];
        getrandom::fill(&mut raw).map_err(RandomError)?;
        Ok(Value::from_bytes(raw))
    }

    fn from_bytes(raw: [u8; VALUE_LEN]) -> Value {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; VALUE_LEN * 2];
        for (i, b) in raw.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        Value(out)
    }

    /// The cookie value: 32 lower-case hex characters.
    pub fn as_str(&self) -> &str {
        // invariant: only hex digits are written.
        std::str::from_utf8(&self.0).expect("hex is ASCII")
    }

    pub fn digest(&self) -> Digest {
        digest(&self.0)
    }

    /// The `Set-Cookie` value that issues it, kept as long as tether remembers a session.
    ///
    /// `SameSite=None`: the companion must travel wherever the session cookie does (a
    /// cross-site form post, an embedded console, a credentialed fetch), or its absence
    /// there would read as `missing`. It grants nothing on its own, and `__Host-` with
    /// `Secure` keeps it bound to this host.
    pub fn set_cookie(&self, name: &str, max_age: Secs) -> String {
        format!("{name}={}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=None", self.as_str())
    }
}

/// What a session's lineage is now. 20 bytes, kept in every record of the embedded store
/// (a fixed field costs less than a box: one allocation bucket of the record, on or off)
/// or under its own key in the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lineage {
    pub current: Digest,
    /// All zero: none (a digest that happens to be zero only costs one false "none").
    pub previous: Digest,
    /// When `current` was issued.
    pub issued_at: Secs,
    /// When `current` first came back, as seconds after `issued_at` plus one (0: not yet).
    /// It comes back before it is due, within [`MAX_ROTATE`], so 16 bits hold it.
    seen: u16,
    /// One of this lineage's values has come back at least once: the browser keeps the
    /// cookie, so its absence now means a copy made without it.
    pub armed: bool,
    /// How many values in a row were issued in place of one that never came back (answers
    /// taken as lost); zero again when a value comes back.
    pub reissues: u8,
}

impl Lineage {
    pub fn new(current: Digest, previous: Digest, issued_at: Secs, seen_at: Option<Secs>, armed: bool) -> Lineage {
        let mut l = Lineage { current, previous, issued_at, seen: 0, armed, reissues: 0 };
        if let Some(at) = seen_at {
            l.see(at);
        }
        l
    }

    /// When `current` first came back.
    pub fn seen_at(&self) -> Option<Secs> {
        (self.seen != 0).then(|| self.issued_at.saturating_add(u32::from(self.seen - 1)))
    }

    fn see(&mut self, at: Secs) {
        let after = at.saturating_sub(self.issued_at).min(u32::from(u16::MAX - 1));
        // invariant: `after` is at most u16::MAX - 1, so this neither truncates nor wraps.
        self.seen = after as u16 + 1;
    }

    fn previous(&self) -> Option<Digest> {
        (self.previous != [0; DIGEST_LEN]).then_some(self.previous)
    }

    /// The lineage after `change`, with `fresh` as the digest of a newly issued value.
    pub fn after(state: Option<&Lineage>, change: Change, fresh: Digest, now: Secs) -> Option<Lineage> {
        match (change, state) {
            (Change::None, _) => None,
            (Change::Seen, Some(s)) => {
                let mut l = Lineage { armed: true, reissues: 0, ..*s };
                if l.seen == 0 {
                    l.see(now);
                }
                Some(l)
            }
            (Change::Seen, None) => None,
            (Change::Issue { previous, armed, reissued }, s) => {
                let reissues = if reissued { s.map_or(1, |s| s.reissues.saturating_add(1)) } else { 0 };
                Some(Lineage { current: fresh, previous: previous.unwrap_or([0; DIGEST_LEN]), issued_at: now, seen: 0, armed, reissues })
            }
        }
    }

    /// A new lineage after a completed step-up: the owner proved themselves, so every
    /// value issued before is void — but for the current one, kept as the previous value
    /// under the usual rules (good until the new one comes back, then for `grace`): the
    /// owner's other tabs hold it and have requests in flight. It stays armed if it was.
    pub fn restart(state: Option<&Lineage>, fresh: Digest, now: Secs) -> Lineage {
        let previous = state.map_or([0; DIGEST_LEN], |s| s.current);
        Lineage { current: fresh, previous, issued_at: now, seen: 0, armed: state.is_some_and(|s| s.armed), reissues: 0 }
    }
}

/// The companion values a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    None,
    One(Digest),
    /// A browser sends one `__Host-` cookie of a name; several are a spliced jar.
    Several,
    /// A bearer credential: no cookie jar, so no companion can come with it.
    Bearer,
}

impl Presented {
    pub fn one(self) -> Option<Digest> {
        match self {
            Presented::One(d) => Some(d),
            _ => None,
        }
    }
}

crate::labels::labels! {
    /// What lineage made of one request (the label of `tether_lineage_total`), and what
    /// it did: a value issued to a session without one, or rotated.
    pub enum Outcome {
        /// The current value.
        Current = "current",
        /// The previous value, while the current one is on its way or within grace.
        Previous = "previous",
        /// No value (or an unknown one) from a session none of whose values ever came
        /// back: a browser refusing the cookie, or the first round trip.
        Unconfirmed = "unconfirmed",
        /// A value the lineage moved past, or several: another copy of the session.
        Forked = "forked",
        /// No value from a session whose values came back before.
        Missing = "missing",
        /// A first value set for a session.
        Issued = "issued",
        /// The current value replaced.
        Rotated = "rotated",
    }
}

impl Outcome {
    /// Whether the request may use (and move) the lineage.
    pub fn ok(self) -> bool {
        !matches!(self, Outcome::Forked | Outcome::Missing)
    }
}

/// What a request does to the lineage (when its verdict allows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The current value came back for the first time.
    Seen,
    /// Issue a new current value, keeping `previous` as the one accepted beside it;
    /// `reissued` when it replaces one that never came back.
    Issue { previous: Option<Digest>, armed: bool, reissued: bool },
}

/// The request's verdict on the lineage and what it would change. `None` as the outcome
/// for a session that has no lineage yet (it is issued one).
pub fn assess(state: Option<&Lineage>, presented: Presented, now: Secs, cfg: &LineageConfig) -> (Option<Outcome>, Change) {
    let Some(s) = state else {
        // A bearer client has no jar to set a value in.
        if presented == Presented::Bearer {
            return (None, Change::None);
        }
        // First sight, or a session from before lineage was turned on: issue one. A
        // value it presents cannot be checked against anything, so it earns no trust.
        return (None, Change::Issue { previous: None, armed: false, reissued: false });
    };
    let due = now.saturating_sub(s.issued_at) >= cfg.rotate_every;
    match presented {
        Presented::Several => (Some(Outcome::Forked), Change::None),
        // The session's browser returns the companion, so this copy was made without it;
        // unarmed, nothing to compare with and nothing to offer.
        Presented::Bearer if s.armed => (Some(Outcome::Missing), Change::None),
        Presented::Bearer => (Some(Outcome::Unconfirmed), Change::None),
        Presented::One(d) if d == s.current => {
            let change = if due {
                Change::Issue { previous: Some(s.current), armed: true, reissued: false }
            } else if s.seen == 0 || !s.armed {
                Change::Seen
            } else {
                Change::None
            };
            (Some(Outcome::Current), change)
        }
        Presented::One(d) if s.previous() == Some(d) && s.seen_at().is_none_or(|seen| now <= seen.saturating_add(cfg.grace)) => {
            // The current value never came back within a whole rotation: its answer was
            // lost. Issue another, still beside the value the browser holds — once: a
            // second in a row is someone taking each new value and dropping it, so that
            // the copy they hold stays good.
            match (s.seen == 0 && due, s.reissues >= MAX_REISSUES) {
                (true, true) => (Some(Outcome::Forked), Change::None),
                (true, false) => (Some(Outcome::Previous), Change::Issue { previous: Some(d), armed: true, reissued: true }),
                (false, _) => (Some(Outcome::Previous), Change::None),
            }
        }
        // Never armed: nothing this browser holds was ever confirmed, so an unknown value
        // (one whose response was lost before the store forgot it, say) says no more than
        // no value. Offered a new one each rotation.
        Presented::None | Presented::One(_) if !s.armed => {
            let change = if due { Change::Issue { previous: s.previous(), armed: false, reissued: false } } else { Change::None };
            (Some(Outcome::Unconfirmed), change)
        }
        Presented::One(_) => (Some(Outcome::Forked), Change::None),
        Presented::None => (Some(Outcome::Missing), Change::None),
    }
}

/// The companion values in a request's `Cookie` headers: only pairs named exactly,
/// byte for byte. The browser sends the real one under that name, and `__Host-`
/// guarantees no sibling host set it; any other spelling (`%5F_Host-…`, another case) is
/// a cookie a sibling subdomain may have planted with `Domain=` to make every request
/// look spliced. Those are only stripped (see [`without`]), never counted.
pub fn read(headers: &HeaderMap, name: &str) -> Presented {
    let mut found = Presented::None;
    for pair in cookie_pairs(headers) {
        let Some((n, v)) = split_pair(pair) else { continue };
        if n != name.as_bytes() {
            continue;
        }
        let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
        found = match found {
            Presented::None => Presented::One(digest(v)),
            _ => Presented::Several,
        };
    }
    found
}

/// Every `name=value` pair of the `Cookie` headers, trimmed.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(COOKIE).into_iter().flat_map(|h| h.as_bytes().split(|&b| b == b';')).map(<[u8]>::trim_ascii).filter(|p| !p.is_empty())
}

fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
}

/// Whether a cookie's name spells `name`, without regard to case or percent-encoding.
pub fn names(spelled: &[u8], name: &str) -> bool {
    if spelled.contains(&b'%') {
        let decoded: Vec<u8> = percent_encoding::percent_decode(spelled).collect();
        decoded.eq_ignore_ascii_case(name.as_bytes())
    } else {
        spelled.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A `Cookie` header value without the companion's pairs; `None` when nothing else is
/// left. The rest is forwarded byte for byte, in order.
pub fn without(value: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    for pair in value.split(|&b| b == b';') {
        let trimmed = pair.trim_ascii();
        if trimmed.is_empty() || split_pair(trimmed).is_some_and(|(n, _)| names(n, name)) {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(trimmed);
    }
    (!out.is_empty()).then_some(out)
}

/// Whether a `Cookie` header value holds the companion at all (so the usual request
/// pays no copy).
pub fn carries(value: &[u8], name: &str) -> bool {
    value.split(|&b| b == b';').filter_map(|p| split_pair(p.trim_ascii())).any(|(n, _)| names(n, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Secs = 1_800_000_000;

    fn cfg() -> LineageConfig {
        LineageConfig { rotate_every: 300, grace: 10, cookie: DEFAULT_COOKIE.into() }
    }

    const C: Digest = [1; DIGEST_LEN];
    const P: Digest = [2; DIGEST_LEN];
    const X: Digest = [3; DIGEST_LEN];

    /// Current C issued at T (back at `seen_at`, 0: not yet); previous P.
    fn state(seen_at: Secs, armed: bool) -> Lineage {
        Lineage::new(C, P, T, (seen_at != 0).then_some(seen_at), armed)
    }

    #[test]
    fn the_verdict_table() {
        use Outcome::*;
        let seen = state(T + 2, true);
        let unseen = state(0, true);
        let unarmed = Lineage { previous: [0; DIGEST_LEN], ..state(0, false) };
        let issue = |previous, armed| Change::Issue { previous, armed, reissued: false };
        let reissue = |previous| Change::Issue { previous, armed: true, reissued: true };
        let reissued = Lineage { reissues: MAX_REISSUES, ..unseen };
        let once = Lineage { reissues: 1, ..unseen };
        // (state, presented, seconds after T, outcome, change, why)
        type Row = (Option<Lineage>, Presented, Secs, Option<Outcome>, Change, &'static str);
        let rows: Vec<Row> = vec![
            (None, Presented::None, 0, None, issue(None, false), "no lineage yet: issue one"),
            (None, Presented::One(X), 0, None, issue(None, false), "an unknown value without a lineage earns nothing"),
            (Some(seen), Presented::One(C), 5, Some(Current), Change::None, "the current value"),
            (Some(unseen), Presented::One(C), 5, Some(Current), Change::Seen, "the current value, back for the first time"),
            (Some(unarmed), Presented::One(C), 5, Some(Current), Change::Seen, "the first value back arms the lineage"),
            (Some(seen), Presented::One(C), 300, Some(Current), issue(Some(C), true), "the current value, due: rotate"),
            (Some(seen), Presented::One(P), 12, Some(Previous), Change::None, "the previous value within grace of the current one's return"),
            (Some(seen), Presented::One(P), 13, Some(Forked), Change::None, "the previous value after grace"),
            (Some(unseen), Presented::One(P), 200, Some(Previous), Change::None, "the previous value while the current one never came back"),
            (Some(unseen), Presented::One(P), 300, Some(Previous), reissue(Some(P)), "the current value lost a whole rotation: issue another beside the held one"),
            (Some(reissued), Presented::One(P), 200, Some(Previous), Change::None, "the previous value while the re-issued one is on its way"),
            (Some(once), Presented::One(P), 300, Some(Forked), Change::None, "a second lost answer in a row is not believed: a thief drops each new value"),
            (Some(unseen), Presented::One(P), 299, Some(Previous), Change::None, "a lost answer is believed until its rotation is over"),
            (Some(reissued), Presented::One(P), 300, Some(Forked), Change::None, "values never come back, rotation after rotation: someone drops them"),
            (Some(reissued), Presented::One(C), 5, Some(Current), Change::Seen, "the re-issued value came back"),
            (Some(seen), Presented::One(P), 300, Some(Forked), Change::None, "a due rotation never excuses an old value"),
            (Some(seen), Presented::One(X), 5, Some(Forked), Change::None, "an older or unknown value"),
            (Some(unseen), Presented::One(X), 5, Some(Forked), Change::None, "an unknown value, armed"),
            (Some(seen), Presented::Several, 5, Some(Forked), Change::None, "two values: a spliced jar"),
            (Some(seen), Presented::None, 5, Some(Missing), Change::None, "no value from an armed lineage"),
            (Some(unseen), Presented::None, 5, Some(Missing), Change::None, "no value, armed, current unseen"),
            (Some(unarmed), Presented::None, 5, Some(Unconfirmed), Change::None, "no value before the first round trip"),
            (Some(unarmed), Presented::None, 300, Some(Unconfirmed), issue(None, false), "a browser refusing the cookie is offered another each rotation"),
            (Some(unarmed), Presented::One(X), 5, Some(Unconfirmed), Change::None, "an unknown value before anything came back"),
            (Some(seen), Presented::Bearer, 5, Some(Missing), Change::None, "a bearer credential of an armed session: no companion possible"),
            (Some(unseen), Presented::Bearer, 300, Some(Missing), Change::None, "a bearer credential never moves an armed lineage"),
            (Some(unarmed), Presented::Bearer, 300, Some(Unconfirmed), Change::None, "a bearer credential of an unarmed session: nothing to offer it"),
            (None, Presented::Bearer, 0, None, Change::None, "a bearer-only session is issued nothing"),
        ];
        for (s, presented, dt, outcome, change, why) in rows {
            assert_eq!(assess(s.as_ref(), presented, T + dt, &cfg()), (outcome, change), "{why}");
        }
        // A clock moved back makes nothing due and keeps grace open.
        assert_eq!(assess(Some(&seen), Presented::One(C), T - 3600, &cfg()), (Some(Current), Change::None));
        assert_eq!(assess(Some(&seen), Presented::One(P), T - 3600, &cfg()), (Some(Previous), Change::None));
        assert!(Outcome::Current.ok() && Outcome::Previous.ok() && Outcome::Unconfirmed.ok());
        assert!(!Outcome::Forked.ok() && !Outcome::Missing.ok());
    }

    #[test]
    fn changes_apply_as_the_rules_say() {
        let s = state(0, false);
        let seen = Lineage::after(Some(&s), Change::Seen, X, T + 3).unwrap();
        assert_eq!((seen.current, seen.seen_at(), seen.armed), (C, Some(T + 3), true));
        let again = Lineage::after(Some(&seen), Change::Seen, X, T + 9).unwrap();
        assert_eq!(again.seen_at(), Some(T + 3), "the first return counts");
        let rotated = Lineage::after(Some(&seen), Change::Issue { previous: Some(C), armed: true, reissued: false }, X, T + 300).unwrap();
        let lost = Lineage::after(Some(&rotated), Change::Issue { previous: Some(C), armed: true, reissued: true }, P, T + 600).unwrap();
        let lost_again = Lineage::after(Some(&lost), Change::Issue { previous: Some(C), armed: true, reissued: true }, X, T + 900).unwrap();
        assert_eq!((lost.reissues, lost_again.reissues), (1, 2));
        assert_eq!(Lineage::after(Some(&lost_again), Change::Seen, X, T + 901).unwrap().reissues, 0, "a value back clears it");
        assert_eq!(rotated, Lineage::new(X, C, T + 300, None, true));
        // Back in the very second of its issue, or as late as a value can come back.
        assert_eq!(Lineage::new(C, P, T, Some(T), true).seen_at(), Some(T));
        assert_eq!(Lineage::new(C, P, T, Some(T + MAX_ROTATE), true).seen_at(), Some(T + MAX_ROTATE));
        assert_eq!(Lineage::new(C, P, T, Some(T - 60), true).seen_at(), Some(T), "a clock moved back saturates");
        assert_eq!(Lineage::after(Some(&seen), Change::None, X, T), None);
        let restarted = Lineage::restart(Some(&rotated), P, T + 400);
        assert_eq!((restarted.current, restarted.previous(), restarted.armed, restarted.seen_at()), (P, Some(X), true, None), "the owner's other tabs keep the value they hold, under the usual grace");
        assert_eq!(restarted.issued_at, T + 400);
        assert_eq!(assess(Some(&restarted), Presented::One(X), T + 401, &cfg()), (Some(Outcome::Previous), Change::None), "a tab's request in flight");
        assert_eq!(assess(Some(&restarted), Presented::One(C), T + 401, &cfg()).0, Some(Outcome::Forked), "anything older is void");
        assert!(!Lineage::restart(None, P, T).armed);
        assert_eq!(std::mem::size_of::<Option<Lineage>>(), 20, "the armed flag's niche holds the None");
    }

    /// A whole rotation cycle walked on a moving clock: a browser's jar (which applies
    /// each new value) never forks, a copy of it left behind does within one rotation.
    #[test]
    fn a_copy_left_behind_forks_within_one_rotation_on_a_moving_clock() {
        let cfg = cfg();
        let mut state: Option<Lineage> = None;
        let mut browser: Option<Value> = None;
        let mut issued = 0;
        let step = |held: &Option<Value>, now: Secs, state: &mut Option<Lineage>| -> (Option<Outcome>, Option<Value>) {
            let presented = held.as_ref().map_or(Presented::None, |v| Presented::One(v.digest()));
            let (outcome, change) = assess(state.as_ref(), presented, now, &cfg);
            let fresh = Value::generate().unwrap();
            let next = Lineage::after(state.as_ref(), change, fresh.digest(), now);
            let set = matches!(change, Change::Issue { .. }).then_some(fresh);
            if let Some(n) = next {
                *state = Some(n);
            }
            (outcome, set)
        };
        let mut now = T;
        let mut copy: Option<Value> = None;
        for i in 0..40u32 {
            let (outcome, set) = step(&browser, now, &mut state);
            assert!(outcome.is_none_or(Outcome::ok), "the browser at +{}s: {outcome:?}", now - T);
            if let Some(v) = set {
                browser = Some(v);
                issued += 1;
            }
            if i == 5 {
                copy = browser.clone();
            }
            now += 60;
        }
        assert!(issued >= 7, "rotated every five minutes: {issued}");
        // The copy taken at minute five is one rotation or more behind by now.
        let (outcome, _) = step(&copy, now, &mut state);
        assert_eq!(outcome, Some(Outcome::Forked));
        let (outcome, _) = step(&None, now, &mut state);
        assert_eq!(outcome, Some(Outcome::Missing));
    }

    #[test]
    fn reading_and_stripping_the_companion() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; __Host-tether-lineage=abc; b=2".parse().unwrap());
        assert_eq!(read(&h, DEFAULT_COOKIE), Presented::One(digest(b"abc")));
        // Cookies a sibling subdomain can toss in with `Domain=`: not the companion, so
        // never a spliced jar (they are stripped all the same).
        h.append(COOKIE, "__host-TETHER-lineage=\"def\"; %5F_Host-tether-lineage=ghi; __Host-tether-lineag%65=jkl".parse().unwrap());
        assert_eq!(read(&h, DEFAULT_COOKIE), Presented::One(digest(b"abc")), "only the exact name counts");
        assert_eq!(without(b"a=1; __host-TETHER-lineage=def; %5F_Host-tether-lineage=ghi", DEFAULT_COOKIE).as_deref(), Some(&b"a=1"[..]));
        h.append(COOKIE, "__Host-tether-lineage=\"def\"".parse().unwrap());
        assert_eq!(read(&h, DEFAULT_COOKIE), Presented::Several, "two values under the exact name: a spliced jar");
        assert_eq!(read(&HeaderMap::new(), DEFAULT_COOKIE), Presented::None);
        assert_eq!(without(b"a=1; __Host-tether-lineage=abc; b=2", DEFAULT_COOKIE).as_deref(), Some(&b"a=1; b=2"[..]));
        assert_eq!(without(b"%5F_Host-tether-lineage=abc", DEFAULT_COOKIE), None);
        assert!(carries(b"x=1;__Host-tether-lineage=1", DEFAULT_COOKIE) && !carries(b"x=1", DEFAULT_COOKIE));
        let v = Value::generate().unwrap();
        assert_eq!(v.as_str().len(), 32);
        assert!(!format!("{v:?}").contains(v.as_str()));
        let set = v.set_cookie(DEFAULT_COOKIE, 600);
        assert!(set.starts_with("__Host-tether-lineage=") && set.contains("; Path=/") && set.contains("; Secure") && set.contains("; HttpOnly") && set.contains("; SameSite=None"));
        assert_eq!(read(&[(COOKIE, format!("{DEFAULT_COOKIE}={}", v.as_str()).parse().unwrap())].into_iter().collect(), DEFAULT_COOKIE), Presented::One(v.digest()));
    }
}
