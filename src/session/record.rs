//! What tether remembers: per session, the context it was bound in and where it was last
//! seen; per user, the networks, countries and clients they normally use.
//!
//! Kept small on purpose (184 bytes a record, about 245 bytes per session in the embedded
//! store at a million sessions): addresses and fingerprints are stored as the few bytes
//! comparisons need, never as text, and what few sessions have (proven contexts after
//! step-ups, a device binding) lives out of line behind one shared pointer.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::fingerprint::{Ja4, TlsClass, UserAgent};
use crate::intel::{Asn, Category, Coordinates, Country, NetInfo};

use super::device::DeviceBinding;
use super::lineage::Lineage;

/// Seconds since the Unix epoch, as stored (u32 lasts until 2106).
pub type Secs = u32;

/// An IPv4 /24 or IPv6 /64: the unit in which address changes are judged, since IPv6
/// privacy addresses and carrier NAT rotate within it. Two u32 halves keep the
/// containing records 4-byte aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix([u32; 2]);

impl Prefix {
    pub fn of(ip: IpAddr) -> Prefix {
        let bits: u64 = match ip.to_canonical() {
            IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
            // The top bit marks IPv6 so a v4 /24 and a v6 /64 never collide.
            IpAddr::V6(v6) => ((u128::from(v6) >> 64) as u64) | (1 << 63),
        };
        Prefix([(bits >> 32) as u32, bits as u32])
    }
}

/// A short digest of a stable JA4 for equality tests (4 bytes instead of 36; a
/// coincidence between two given fingerprints is a one-in-four-billion event). Never
/// zero, so an absent one costs no extra bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja4Digest(NonZeroU32);

impl Ja4Digest {
    pub fn of(ja4: &Ja4) -> Ja4Digest {
        // FNV-1a: not for secrecy, only to compare two fingerprints compactly.
        let mut h: u32 = 0x811c_9dc5;
        for b in ja4.as_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        Ja4Digest::from_bits(h)
    }
}

/// A moment that may not have come: `Option<Secs>` in four bytes, zero standing for none
/// (no session is authenticated in the epoch's first second; a claim that says so is as
/// stale as none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moment(Option<NonZeroU32>);

impl Moment {
    pub const NEVER: Moment = Moment(None);

    pub fn at(at: Secs) -> Moment {
        Moment(NonZeroU32::new(at))
    }

    pub fn get(self) -> Option<Secs> {
        self.0.map(NonZeroU32::get)
    }
}

impl From<Option<Secs>> for Moment {
    fn from(at: Option<Secs>) -> Moment {
        at.map_or(Moment::NEVER, Moment::at)
    }
}

/// Where a request came from, reduced for comparison: 28 bytes, so a million sessions
/// fit in a few hundred megabytes. Unknown values are stored as zero (AS0 is reserved
/// and no country code or radius is zero).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    pub prefix: Prefix,
    asn: u32,
    pub category: Category,
    country: [u8; 2],
    /// Latitude and longitude in hundredths of a degree (about a kilometre), radius in km.
    lat: i16,
    lon: i16,
    accuracy_km: u16,
    pub at: Secs,
}

impl Place {
    pub fn new(ip: IpAddr, net: &NetInfo, at: Secs) -> Place {
        let (lat, lon, accuracy_km) = match net.location {
            Some(c) => ((c.latitude * 100.0).round() as i16, (c.longitude * 100.0).round() as i16, c.accuracy_km.max(1)),
            None => (0, 0, 0),
        };
        let country = net.country.map_or([0, 0], |c| {
            let b = c.as_str().as_bytes();
            [b[0], b[1]]
        });
        Place { prefix: Prefix::of(ip), asn: net.asn.map_or(0, |a| a.0), category: net.category, country, lat, lon, accuracy_km, at }
    }

    pub fn asn(&self) -> Option<Asn> {
        stored_asn(self.asn)
    }

    pub fn country(&self) -> Option<Country> {
        stored_country(self.country)
    }

    pub fn location(&self) -> Option<Coordinates> {
        (self.accuracy_km != 0).then(|| Coordinates {
            latitude: f32::from(self.lat) / 100.0,
            longitude: f32::from(self.lon) / 100.0,
            accuracy_km: self.accuracy_km,
        })
    }

    /// Same network for "have we seen this before": the ASN when known, else the prefix.
    pub fn same_network(&self, other: &Place) -> bool {
        match (self.asn(), other.asn()) {
            (Some(a), Some(b)) => a == b,
            _ => self.prefix == other.prefix,
        }
    }
}

/// An ASN as stored: zero (AS0 is reserved) means unknown.
fn stored_asn(asn: u32) -> Option<Asn> {
    (asn != 0).then_some(Asn(asn))
}

/// A country code as stored: two zero bytes mean unknown.
fn stored_country(code: [u8; 2]) -> Option<Country> {
    if code == [0, 0] {
        return None;
    }
    std::str::from_utf8(&code).ok().and_then(Country::new)
}

/// Where a session was seen before its last sighting, for alternation: a [`Place`]
/// without its location (20 bytes instead of 28), which nothing reads of an earlier
/// network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sighting {
    pub prefix: Prefix,
    asn: u32,
    pub at: Secs,
    country: [u8; 2],
    pub category: Category,
}

impl Sighting {
    pub fn of(place: &Place) -> Sighting {
        Sighting { prefix: place.prefix, asn: place.asn, at: place.at, country: place.country, category: place.category }
    }

    /// The place it was, its location unknown.
    pub fn place(&self) -> Place {
        Place { prefix: self.prefix, asn: self.asn, category: self.category, country: self.country, lat: 0, lon: 0, accuracy_km: 0, at: self.at }
    }

    pub fn asn(&self) -> Option<Asn> {
        stored_asn(self.asn)
    }

    pub fn country(&self) -> Option<Country> {
        stored_country(self.country)
    }
}

impl From<Place> for Sighting {
    fn from(place: Place) -> Sighting {
        Sighting::of(&place)
    }
}

/// How the client presents itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ua: UserAgent,
    pub ja4: Option<Ja4Digest>,
    pub tls: TlsClass,
}

/// One session's memory: 184 bytes, so that with malloc's 8-byte header it fills a
/// 192-byte chunk (`a_record_stays_small` holds it there). Cloned on every load of the
/// embedded store, so cloning never allocates: what is out of line is shared.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// Where the session was bound (first sight, or the last completed step-up).
    pub bound: Place,
    pub client: Client,
    /// Where it was last seen, and the network before that (for alternation).
    pub last: Place,
    pub previous: Option<Sighting>,
    pub created: Secs,
    pub user: Option<Arc<str>>,
    /// Latest proof of authentication: a verified `auth_time` or a completed step-up.
    pub authenticated_at: Moment,
    /// Set when tether demanded a step-up in enforce mode; cleared only by one completing,
    /// so a thief cannot wait for a benign-looking request to slip through.
    pub step_up_pending: bool,
    /// The binding itself was suspicious (first sight already demanded a step-up), so
    /// its context earns no exemption until someone proves themselves.
    pub bound_suspect: bool,
    pub step_up_failures: u8,
    /// Recently used addresses (compact hashes), to record each new one in the audit log.
    pub recent_addresses: [u32; RECENT_ADDRESSES],
    /// Where `user` was learned from.
    pub owner_source: OwnerSource,
    /// When a silent identification was last attempted (0: never).
    pub identify_at: Secs,
    /// The first of the contexts the session was proven in, inline: most sessions have
    /// one (a clean birth) and no other. Read and written through
    /// [`SessionRecord::proven`], which sees them all.
    pub first_proven: Option<ProvenContext>,
    /// What few sessions have: further proven contexts and a device binding. Read and
    /// written through the record's methods, which keep it `None` when empty.
    pub extra: Option<Arc<Extra>>,
    /// The companion cookie's lineage (`[lineage]`), in the embedded store. Owned by the
    /// lineage operations ([`super::Store::swap_lineage`]): a record written back after
    /// a judgement never changes it, so a rotation made meanwhile is never undone.
    pub lineage: Option<Lineage>,
}

crate::labels::labels! {
    /// Where a session's owner was learned. The last three are strong: the console or its
    /// auth layer vouches for them. The first two are weak: a prompt=none identification
    /// or a step-up adopted by an owner-less session names whoever holds the browser.
    #[derive(Default)]
    pub enum OwnerSource {
        #[default]
        Unknown = "unknown",
        Silent = "silent",
        StepUp = "step_up",
        ResponseHeader = "response_header",
        UserHeader = "user_header",
        Jwt = "jwt",
    }
}

impl OwnerSource {
    /// Vouched for by the console or its auth layer.
    pub fn is_strong(self) -> bool {
        matches!(self, OwnerSource::ResponseHeader | OwnerSource::UserHeader | OwnerSource::Jwt)
    }
}

/// What naming a session's owner did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerChange {
    /// The same owner, or no owner named.
    Unchanged,
    /// The first owner the session has.
    Learned,
    /// A strong source replaced a weakly learned, different owner (who is given).
    Overrode(Arc<str>),
    /// A different owner was named but the session keeps its own (the refused name).
    Refused(Arc<str>),
}

/// Names `user` (learned from `source`) as the owner of `record`, by the rule: a first
/// owner is taken; the same owner keeps the stronger source; a different one replaces
/// the current owner only when it is strong and the current one weak, and is refused
/// otherwise. Contexts proven under an owner who is replaced are forgotten, with the
/// authentication they rested on.
pub fn name_owner(record: &mut SessionRecord, user: &Arc<str>, source: OwnerSource) -> OwnerChange {
    match &record.user {
        None => {
            record.user = Some(user.clone());
            record.owner_source = source;
            OwnerChange::Learned
        }
        Some(current) if current == user => {
            if source.is_strong() && !record.owner_source.is_strong() {
                record.owner_source = source;
            }
            OwnerChange::Unchanged
        }
        Some(current) if source.is_strong() && !record.owner_source.is_strong() => {
            let previous = current.clone();
            record.user = Some(user.clone());
            record.owner_source = source;
            record.set_proven(Proven::default());
            record.authenticated_at = Moment::NEVER;
            OwnerChange::Overrode(previous)
        }
        Some(_) => OwnerChange::Refused(user.clone()),
    }
}

/// Contexts a session keeps as proven.
pub const PROVEN_CONTEXTS: usize = 3;
/// A proven context is forgotten this long after it was proven (or last refreshed by a
/// step-up there).
pub const PROVEN_TTL: Secs = 7 * 24 * 3600;

/// A context a session was proven in: its birth (when clean) or a completed step-up.
/// An ordinary network is judged by its ASN and country; an anonymizer only by its exit
/// prefix, so proving oneself on one VPN exit does not vouch for all of the VPN's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvenContext {
    pub prefix: Prefix,
    asn: u32,
    pub at: Secs,
    country: [u8; 2],
    pub category: Category,
    pub tls: TlsClass,
}

impl ProvenContext {
    pub fn new(place: &Place, tls: TlsClass) -> ProvenContext {
        ProvenContext { prefix: place.prefix, asn: place.asn, at: place.at, country: place.country, category: place.category, tls }
    }

    pub fn asn(&self) -> Option<Asn> {
        stored_asn(self.asn)
    }

    pub fn country(&self) -> Option<Country> {
        stored_country(self.country)
    }

    /// Whether `place`, reached by a `tls` client, is this context.
    pub fn covers(&self, place: &Place, tls: TlsClass) -> bool {
        let network = if self.category.is_anonymizer() || place.category.is_anonymizer() {
            self.prefix == place.prefix && self.category == place.category
        } else {
            match (self.asn, place.asn) {
                (0, _) | (_, 0) => self.prefix == place.prefix,
                (a, b) => a == b,
            }
        };
        let country = self.country == [0, 0] || place.country == [0, 0] || self.country == place.country;
        network && country && self.tls == tls
    }

    /// Raw parts for the shared store's encoding.
    pub(crate) fn parts(&self) -> (u64, u32, [u8; 2]) {
        (self.prefix.to_bits(), self.asn, self.country)
    }

    pub(crate) fn from_parts(prefix: u64, asn: u32, at: Secs, country: [u8; 2], category: Category, tls: TlsClass) -> ProvenContext {
        ProvenContext { prefix: Prefix::from_bits(prefix), asn, at, country, category, tls }
    }
}

/// A session's proven contexts: a few, each expiring; a new one takes the place of the
/// same context or of the oldest. A value: a record stores the first inline and the
/// others out of line (see [`SessionRecord::proven`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proven([Option<ProvenContext>; PROVEN_CONTEXTS]);

impl Proven {
    /// Records that the session was proven at `place` by a `tls` client.
    pub fn add(&mut self, place: &Place, tls: TlsClass) {
        let new = ProvenContext::new(place, tls);
        let slot = match self.0.iter().position(|c| c.is_some_and(|c| c.covers(place, tls) && c.prefix == new.prefix)) {
            Some(same) => same,
            None => match self.0.iter().position(Option::is_none) {
                Some(free) => free,
                None => self.0.iter().enumerate().min_by_key(|(_, c)| c.map_or(0, |c| c.at)).map_or(0, |(i, _)| i),
            },
        };
        self.0[slot] = Some(new);
    }

    /// The contexts still in force at `now`.
    pub fn live(&self, now: Secs) -> impl Iterator<Item = &ProvenContext> {
        self.0.iter().flatten().filter(move |c| now.saturating_sub(c.at) <= PROVEN_TTL)
    }

    /// Whether `place`, reached by a `tls` client, is a context this session was proven in.
    pub fn covers(&self, place: &Place, tls: TlsClass) -> bool {
        self.live(place.at).any(|c| c.covers(place, tls))
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProvenContext> {
        self.0.iter().flatten()
    }

    /// Rebuilds the set from stored contexts (at most [`PROVEN_CONTEXTS`] are kept).
    pub fn from_contexts(contexts: impl IntoIterator<Item = ProvenContext>) -> Proven {
        let mut p = Proven::default();
        for (slot, c) in p.0.iter_mut().zip(contexts) {
            *slot = Some(c);
        }
        p
    }
}

/// Distinct recent addresses remembered per session.
pub const RECENT_ADDRESSES: usize = 4;

/// A compact hash of a full address (not a prefix): IoC lists arrive after the fact, so
/// every new address a session uses is audited, and this says which ones are new.
pub fn address_tag(ip: IpAddr) -> u32 {
    let bits: u128 = match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    // Zero marks an empty slot.
    ((folded ^ (folded >> 32)) as u32).max(1)
}

impl SessionRecord {
    /// A session first seen at `place` by `client`: bound and last seen there, nothing
    /// else known yet.
    pub fn new(place: Place, client: Client) -> SessionRecord {
        SessionRecord {
            bound: place,
            client,
            last: place,
            previous: None,
            created: place.at,
            user: None,
            authenticated_at: Moment::NEVER,
            step_up_pending: false,
            bound_suspect: false,
            step_up_failures: 0,
            recent_addresses: [0; RECENT_ADDRESSES],
            owner_source: OwnerSource::Unknown,
            identify_at: 0,
            first_proven: None,
            extra: None,
            lineage: None,
        }
    }

    pub fn knows_address(&self, tag: u32) -> bool {
        self.recent_addresses.contains(&tag)
    }

    pub fn remember_address(&mut self, tag: u32) {
        if !self.knows_address(tag) {
            self.recent_addresses.rotate_right(1);
            self.recent_addresses[0] = tag;
        }
    }

    /// Where the session was born and where it completed step-ups: returning to one of
    /// them is not a change.
    pub fn proven(&self) -> Proven {
        let [second, third] = self.extra.as_ref().map_or([None; PROVEN_CONTEXTS - 1], |e| e.proven);
        Proven([self.first_proven, second, third])
    }

    /// Records that the session was proven at `place` by a `tls` client.
    pub fn prove(&mut self, place: &Place, tls: TlsClass) {
        let mut proven = self.proven();
        proven.add(place, tls);
        self.set_proven(proven);
    }

    pub fn set_proven(&mut self, proven: Proven) {
        let [first, rest @ ..] = proven.0;
        self.first_proven = first;
        // Most writes change only the first context (or nothing): the shared part is
        // copied only when it changes.
        if self.extra.as_ref().map_or([None; PROVEN_CONTEXTS - 1], |e| e.proven) != rest {
            self.edit_extra(|e| e.proven = rest);
        }
    }

    /// The device key the session is bound to (DBSC), once registered.
    pub fn device(&self) -> Option<&DeviceBinding> {
        self.extra.as_ref().and_then(|e| e.device.as_ref())
    }

    /// The binding to change in place (a demanded re-proof); copies the shared part if
    /// another clone of the record holds it.
    pub fn device_mut(&mut self) -> Option<&mut DeviceBinding> {
        self.device()?;
        self.extra.as_mut().and_then(|e| Arc::make_mut(e).device.as_mut())
    }

    pub fn set_device(&mut self, device: Option<DeviceBinding>) {
        if device.is_some() || self.device().is_some() {
            self.edit_extra(|e| e.device = device);
        }
    }

    /// Copy-on-write: a clone of the record shares `extra` until one of them changes it.
    fn edit_extra(&mut self, f: impl FnOnce(&mut Extra)) {
        let extra = self.extra.get_or_insert_with(Default::default);
        f(Arc::make_mut(extra));
        if **extra == Extra::default() {
            self.extra = None;
        }
    }
}

/// The part of a record few sessions have, out of line so that the others do not pay for
/// it: proven contexts beyond the first (after step-ups) and the device binding
/// (DBSC). Behind an `Arc`, so that cloning a record stays free of allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    proven: [Option<ProvenContext>; PROVEN_CONTEXTS - 1],
    device: Option<DeviceBinding>,
}

/// Bounds on a user's baseline; the oldest entry gives way to a new one.
pub const BASELINE_NETWORKS: usize = 16;
pub const BASELINE_COUNTRIES: usize = 8;
pub const BASELINE_CLIENTS: usize = 8;
/// Sessions indexed per user, for "revoke all of a user's sessions".
pub const USER_SESSIONS: usize = 64;
/// A known entry is re-stamped at most this often, so steady use does not rewrite the
/// baseline on every request.
const RESTAMP_SECS: Secs = 3600;

/// The most recent `N` distinct items with when each was last seen; fixed size, so
/// copying it never allocates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent<T: Copy, const N: usize> {
    items: [Option<(T, Secs)>; N],
}

impl<T: Copy, const N: usize> Default for Recent<T, N> {
    fn default() -> Self {
        Recent { items: [None; N] }
    }
}

impl<T: Copy + PartialEq, const N: usize> Recent<T, N> {
    pub fn contains(&self, item: &T) -> bool {
        self.items.iter().flatten().any(|(x, _)| x == item)
    }

    pub fn len(&self) -> usize {
        self.items.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.iter().all(Option::is_none)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(T, Secs)> {
        self.items.iter().flatten()
    }

    /// Records `item` at `at`; returns whether anything changed worth storing.
    pub fn note(&mut self, item: T, at: Secs) -> bool {
        if let Some((_, seen)) = self.items.iter_mut().flatten().find(|(x, _)| *x == item) {
            if at.saturating_sub(*seen) >= RESTAMP_SECS {
                *seen = at;
                return true;
            }
            return false;
        }
        let slot = match self.items.iter().position(Option::is_none) {
            Some(free) => free,
            // invariant: N > 0 and every slot is full here, so a minimum exists.
            None => self.items.iter().enumerate().min_by_key(|(_, e)| e.map_or(0, |(_, t)| t)).map_or(0, |(i, _)| i),
        };
        self.items[slot] = Some((item, at));
        true
    }
}

/// A user's usual contexts, across all their sessions: a thief with a stolen IdP session
/// can mint a *new* app session, which per-session history alone would not judge.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UserBaseline {
    pub networks: Recent<Asn, BASELINE_NETWORKS>,
    pub countries: Recent<Country, BASELINE_COUNTRIES>,
    pub clients: Recent<Client, BASELINE_CLIENTS>,
    pub updated: Secs,
}

impl UserBaseline {
    pub fn knows_network(&self, asn: Asn) -> bool {
        self.networks.contains(&asn)
    }

    pub fn knows_country(&self, c: Country) -> bool {
        self.countries.contains(&c)
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.countries.is_empty()
    }

    /// Adds a context the user was allowed (or proved themselves) in; returns whether the
    /// baseline changed.
    /// An anonymizer's network and country are never learned: a VPN exit says nothing
    /// about where its user is, and all of a VPN must not become "usual" for a user
    /// (a session keeps the exit it was proven on in its own proven contexts instead).
    pub fn learn(&mut self, place: &Place, client: Client) -> bool {
        let mut changed = false;
        if !place.category.is_anonymizer() {
            if let Some(asn) = place.asn() {
                changed |= self.networks.note(asn, place.at);
            }
            if let Some(c) = place.country() {
                changed |= self.countries.note(c, place.at);
            }
        }
        changed |= self.clients.note(client, place.at);
        if changed {
            self.updated = place.at;
        }
        changed
    }
}

impl UserBaseline {
    /// Teaches the baseline a session's proven contexts (once its owner is known); the
    /// anonymizer ones stay the session's own. Returns whether it changed.
    pub fn learn_proven(&mut self, proven: &Proven, now: Secs) -> bool {
        let mut changed = false;
        for c in proven.live(now).filter(|c| !c.category.is_anonymizer()) {
            if let Some(asn) = c.asn() {
                changed |= self.networks.note(asn, c.at);
            }
            if let Some(country) = c.country() {
                changed |= self.countries.note(country, c.at);
            }
        }
        if changed {
            self.updated = self.updated.max(now);
        }
        changed
    }
}

/// Raw forms for the shared store's wire encoding (`session::redis`): the in-memory
/// types stay opaque to everything else.
impl Prefix {
    pub(crate) fn to_bits(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }

    pub(crate) fn from_bits(bits: u64) -> Prefix {
        Prefix([(bits >> 32) as u32, bits as u32])
    }
}

impl Ja4Digest {
    pub(crate) fn to_bits(self) -> u32 {
        self.0.get()
    }

    /// Zero (a digest no stored value carries) reads as one: a one-in-four-billion
    /// coincidence between two fingerprints, as any other.
    pub(crate) fn from_bits(bits: u32) -> Ja4Digest {
        Ja4Digest(NonZeroU32::new(bits).unwrap_or(NonZeroU32::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_round_trip_what_comparisons_need() {
        let net = NetInfo {
            asn: Some(Asn(64496)),
            country: Country::new("SE"),
            location: Some(Coordinates { latitude: 59.3293, longitude: 18.0686, accuracy_km: 20 }),
            ..NetInfo::unknown()
        };
        let p = Place::new("192.0.2.1".parse().unwrap(), &net, 7);
        assert_eq!((p.asn(), p.country()), (Some(Asn(64496)), Country::new("SE")));
        let c = p.location().unwrap();
        assert!((c.latitude - 59.33).abs() < 0.01 && (c.longitude - 18.07).abs() < 0.01 && c.accuracy_km == 20);
        let unknown = Place::new("192.0.2.1".parse().unwrap(), &NetInfo::unknown(), 7);
        assert_eq!((unknown.asn(), unknown.country(), unknown.location()), (None, None, None));
        assert_eq!(std::mem::size_of::<Place>(), 28);
    }

    #[test]
    fn prefixes_group_v4_24_and_v6_64() {
        let p = |s: &str| Prefix::of(s.parse().unwrap());
        assert_eq!(p("192.0.2.1"), p("192.0.2.254"));
        assert_ne!(p("192.0.2.1"), p("192.0.3.1"));
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:2:ffff::9"));
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert_eq!(p("::ffff:192.0.2.9"), p("192.0.2.1"));
        assert_ne!(p("0.0.0.1"), p("::1"));
    }

    #[test]
    fn baseline_is_bounded_and_keeps_recent() {
        let mut b = UserBaseline::default();
        let client = Client { ua: UserAgent::UNKNOWN, ja4: None, tls: TlsClass::Unknown };
        let place = |asn: u32, at: u32| {
            let net = NetInfo { asn: Some(Asn(asn)), country: Country::new("SE"), ..NetInfo::unknown() };
            Place::new("192.0.2.1".parse().unwrap(), &net, at)
        };
        for i in 1..=40u32 {
            b.learn(&place(i, 1000 + i), client);
        }
        assert_eq!(b.networks.len(), BASELINE_NETWORKS);
        assert!(!b.learn(&place(39, 1041), client), "known and recent: no write");
        assert!(b.knows_network(Asn(39)) && !b.knows_network(Asn(1)));
        assert_eq!(b.countries.len(), 1);
    }

    #[test]
    fn recent_addresses_ring() {
        let mut r = [0u32; RECENT_ADDRESSES];
        let mut rec_addresses = |tag| {
            if !r.contains(&tag) {
                r.rotate_right(1);
                r[0] = tag;
            }
        };
        for t in 1..=6 {
            rec_addresses(t);
        }
        assert_eq!(r, [6, 5, 4, 3]);
        assert_ne!(address_tag("192.0.2.1".parse().unwrap()), address_tag("192.0.2.2".parse().unwrap()));
        assert_eq!(address_tag("::ffff:192.0.2.1".parse().unwrap()), address_tag("192.0.2.1".parse().unwrap()));
    }

    fn place_in(ip: &str, asn: u32, country: &str, category: Category, at: Secs) -> Place {
        let net = NetInfo { asn: Some(Asn(asn)), country: Country::new(country), category, ..NetInfo::unknown() };
        Place::new(ip.parse().unwrap(), &net, at)
    }

    #[test]
    fn owners_are_named_by_the_strength_of_their_source() {
        use OwnerSource::*;
        let a: Arc<str> = Arc::from("alice");
        let b: Arc<str> = Arc::from("bob");
        // (owner before, its source, named, by, owner after, its source, change)
        type Row<'a> = (Option<&'a Arc<str>>, OwnerSource, &'a Arc<str>, OwnerSource, &'a str, OwnerSource, &'a str);
        let rows: [Row<'_>; 10] = [
            (None, Unknown, &a, Silent, "alice", Silent, "learned"),
            (None, Unknown, &a, Jwt, "alice", Jwt, "learned"),
            (Some(&a), Silent, &a, ResponseHeader, "alice", ResponseHeader, "unchanged"),
            (Some(&a), ResponseHeader, &a, Silent, "alice", ResponseHeader, "unchanged"),
            (Some(&a), Silent, &b, ResponseHeader, "bob", ResponseHeader, "overrode"),
            (Some(&a), StepUp, &b, UserHeader, "bob", UserHeader, "overrode"),
            (Some(&a), Silent, &b, Silent, "alice", Silent, "refused"),
            (Some(&a), Silent, &b, StepUp, "alice", Silent, "refused"),
            (Some(&a), ResponseHeader, &b, Jwt, "alice", ResponseHeader, "refused"),
            (Some(&a), UserHeader, &b, ResponseHeader, "alice", UserHeader, "refused"),
        ];
        let base = {
            let mut r = SessionRecord { authenticated_at: Moment::at(1000), ..bound_record() };
            let bound = r.bound;
            r.prove(&bound, TlsClass::Browser);
            r
        };
        for (before, before_source, named, by, after, after_source, change) in rows {
            let mut r = SessionRecord { user: before.cloned(), owner_source: before_source, ..base.clone() };
            let got = name_owner(&mut r, named, by);
            let label = match &got {
                OwnerChange::Learned => "learned",
                OwnerChange::Unchanged => "unchanged",
                OwnerChange::Overrode(previous) => {
                    assert_eq!(Some(previous), before);
                    // Whatever was proven under the replaced owner is forgotten.
                    assert_eq!((r.proven().iter().count(), r.authenticated_at), (0, Moment::NEVER));
                    "overrode"
                }
                OwnerChange::Refused(n) => {
                    assert_eq!(n, named);
                    "refused"
                }
            };
            assert_eq!((r.user.as_deref(), r.owner_source, label), (Some(after), after_source, change), "{before:?} {before_source:?} named {named} by {by:?}");
        }
    }

    #[test]
    fn proven_contexts_are_narrow_for_anonymizers_bounded_and_expire() {
        let home = place_in("192.0.2.1", 64496, "SE", Category::Other, 1000);
        let exit = place_in("198.51.100.7", 9009, "NL", Category::Vpn, 2000);
        let mut p = Proven::default();
        p.add(&home, TlsClass::Browser);
        p.add(&exit, TlsClass::Browser);
        // (place, client class, covered?, why)
        let rows = [
            (place_in("192.0.2.200", 64496, "SE", Category::Other, 3000), TlsClass::Browser, true, "home, another address in its ASN"),
            (place_in("203.0.113.9", 64496, "SE", Category::Other, 3000), TlsClass::Browser, true, "home ISP, another prefix"),
            (place_in("192.0.2.1", 64496, "SE", Category::Other, 3000), TlsClass::Library, false, "home, but a library client"),
            (place_in("192.0.2.1", 64496, "DE", Category::Other, 3000), TlsClass::Browser, false, "the ASN in another country"),
            (place_in("198.51.100.9", 9009, "NL", Category::Vpn, 3000), TlsClass::Browser, true, "the same VPN exit prefix"),
            (place_in("203.0.113.77", 9009, "NL", Category::Vpn, 3000), TlsClass::Browser, false, "another exit of the same VPN"),
            (place_in("192.0.2.9", 64500, "SE", Category::Other, 3000), TlsClass::Browser, false, "another network"),
            (place_in("192.0.2.1", 64496, "SE", Category::Other, 1000 + PROVEN_TTL + 1), TlsClass::Browser, false, "home, once expired"),
            (place_in("198.51.100.9", 9009, "NL", Category::Vpn, 2000 + PROVEN_TTL), TlsClass::Browser, true, "the exit, on its last second"),
        ];
        for (place, tls, covered, why) in rows {
            assert_eq!(p.covers(&place, tls), covered, "{why}");
        }
        // Bounded: the oldest gives way; the same context is refreshed in place.
        for (i, at) in [(1u8, 4000), (2, 5000), (3, 6000)] {
            p.add(&place_in(&format!("203.0.{i}.1"), 64600 + u32::from(i), "SE", Category::Other, at), TlsClass::Browser);
        }
        assert_eq!(p.iter().count(), PROVEN_CONTEXTS);
        assert!(!p.covers(&place_in("192.0.2.1", 64496, "SE", Category::Other, 7000), TlsClass::Browser), "home was the oldest");
        p.add(&place_in("203.0.3.1", 64603, "SE", Category::Other, 8000), TlsClass::Browser);
        assert_eq!(p.iter().count(), PROVEN_CONTEXTS);
        assert!(p.covers(&place_in("203.0.1.1", 64601, "SE", Category::Other, 8000), TlsClass::Browser));
    }

    #[test]
    fn a_baseline_never_learns_an_anonymizer() {
        let client = Client { ua: UserAgent::UNKNOWN, ja4: None, tls: TlsClass::Browser };
        let mut b = UserBaseline::default();
        b.learn(&place_in("198.51.100.7", 9009, "NL", Category::Vpn, 1000), client);
        assert!(b.is_empty(), "a VPN is never usual");
        let mut p = Proven::default();
        p.add(&place_in("198.51.100.7", 9009, "NL", Category::Vpn, 1000), TlsClass::Browser);
        p.add(&place_in("192.0.2.1", 64496, "SE", Category::Other, 1000), TlsClass::Browser);
        assert!(b.learn_proven(&p, 1000));
        assert!(b.knows_network(Asn(64496)) && !b.knows_network(Asn(9009)));
        assert!(b.knows_country(Country::new("SE").unwrap()) && !b.knows_country(Country::new("NL").unwrap()));
    }

    #[test]
    fn a_record_stays_small() {
        // The budget per tracked session (store overhead included) is 256 bytes, 320 at
        // most; the record itself is most of it.
        assert_eq!(std::mem::size_of::<Option<ProvenContext>>(), 20, "the category's niche holds the None");
        assert_eq!(std::mem::size_of::<Option<Sighting>>(), 20);
        assert_eq!(std::mem::size_of::<Option<Ja4Digest>>(), 4);
        assert_eq!(std::mem::size_of::<Moment>(), 4);
        // 184 + malloc's 8-byte header fills a 192-byte chunk; one byte more costs a
        // 208-byte one.
        let size = std::mem::size_of::<SessionRecord>();
        assert!(size <= 184, "{size} bytes");
        // The shared part, where a session has one: 16 bytes of counts + 72 in a 96-byte
        // chunk (and the device key's bytes in their own).
        assert!(std::mem::size_of::<Extra>() <= 72, "{} bytes", std::mem::size_of::<Extra>());
        eprintln!("SessionRecord: {size} bytes");
    }

    fn bound_record() -> SessionRecord {
        let p = place_in("192.0.2.1", 64496, "SE", Category::Other, 1000);
        SessionRecord::new(p, Client { ua: UserAgent::UNKNOWN, ja4: None, tls: TlsClass::Browser })
    }

    #[test]
    fn a_record_keeps_one_proven_context_inline_and_the_rest_shared() {
        let mut r = bound_record();
        let birth = r.bound;
        r.prove(&birth, TlsClass::Browser);
        assert!(r.first_proven.is_some() && r.extra.is_none(), "a clean birth allocates nothing");
        // A step-up elsewhere goes out of line; clones share it until one changes it.
        r.prove(&place_in("198.51.100.7", 9009, "NL", Category::Vpn, 2000), TlsClass::Browser);
        let copy = r.clone();
        assert!(Arc::ptr_eq(r.extra.as_ref().unwrap(), copy.extra.as_ref().unwrap()));
        r.prove(&place_in("203.0.113.1", 64601, "SE", Category::Other, 3000), TlsClass::Browser);
        assert_eq!((r.proven().iter().count(), copy.proven().iter().count()), (3, 2), "copy-on-write");
        // The set behaves as the value it is: the oldest gives way.
        let mut expected = copy.proven();
        expected.add(&place_in("203.0.113.1", 64601, "SE", Category::Other, 3000), TlsClass::Browser);
        assert_eq!(r.proven(), expected);
        r.prove(&place_in("203.0.114.1", 64602, "SE", Category::Other, 4000), TlsClass::Browser);
        assert!(!r.proven().covers(&place_in("192.0.2.1", 64496, "SE", Category::Other, 4000), TlsClass::Browser), "birth was the oldest");
        // Forgetting them all frees the shared part; a device binding keeps it alive.
        r.set_proven(Proven::default());
        assert_eq!((r.first_proven, r.extra.is_none()), (None, true));
        use super::super::device::{DeviceAlg, DeviceKey};
        let device = DeviceBinding { key: DeviceKey { alg: DeviceAlg::Es256, bytes: vec![1; 64].into(), split: 32 }, registered: 5, demanded: 0 };
        r.set_device(Some(device.clone()));
        r.prove(&place_in("192.0.2.1", 64496, "SE", Category::Other, 5000), TlsClass::Browser);
        r.prove(&place_in("198.51.100.7", 9009, "NL", Category::Vpn, 5000), TlsClass::Browser);
        r.set_proven(Proven::default());
        assert_eq!(r.device(), Some(&device));
        let shared = r.clone();
        if let Some(d) = r.device_mut() {
            d.demanded = 6;
        }
        assert_eq!((r.device().map(|d| d.demanded), shared.device().map(|d| d.demanded)), (Some(6), Some(0)));
        r.set_device(None);
        assert!(r.extra.is_none());
    }

    #[test]
    fn an_earlier_network_keeps_what_alternation_reads() {
        let home = place_in("192.0.2.1", 64496, "SE", Category::Other, 1000);
        let s = Sighting::of(&home);
        let back = s.place();
        assert!(back.same_network(&home) && back.prefix == home.prefix && back.at == home.at);
        assert_eq!((back.asn(), back.country(), back.category, back.location()), (home.asn(), home.country(), home.category, None));
        assert_eq!(Ja4Digest::from_bits(0), Ja4Digest::from_bits(1));
        assert_eq!((Moment::at(0), Moment::from(Some(7)).get()), (Moment::NEVER, Some(7)));
    }
}
