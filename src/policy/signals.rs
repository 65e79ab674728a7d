//! Each signal a named, pure test of one kind of change.

use std::net::IpAddr;

use crate::fingerprint::{TlsClass, UserAgent};
use crate::intel::{Category, Coordinates, NetInfo};
use crate::session::lineage::Outcome as LineageOutcome;
use crate::session::record::{address_tag, Client, Ja4Digest, Place, Secs, SessionRecord, UserBaseline};

use super::Policy;

crate::labels::labels! {
    /// Every signal tether can raise: its name (the metric label, the audit reason and the
    /// key under `[policy.weights]`) and its default weight, in one row each. The step-up
    /// threshold is 50 and block is 150.
    #[repr(u8)]
    pub enum Signal {
        /// The request comes from a VPN, hosting, Tor or proxy network the session was not
        /// bound in.
        AnonymizerNetwork = "anonymizer_network" => 60,
        /// A session's first sight is already from an anonymizer.
        FirstSeenAnonymizer = "first_seen_anonymizer" => 60,
        /// The address or its ASN is on an IoC list.
        IocHit = "ioc_hit" => 150,
        AsnChange = "asn_change" => 25,
        /// A different /24 (IPv4) or /64 (IPv6).
        PrefixChange = "prefix_change" => 5,
        CountryChange = "country_change" => 20,
        /// Faster than `max_travel_kmh` between two countries, after accuracy radii.
        ImpossibleTravel = "impossible_travel" => 50,
        /// Browser family or OS changed, or the version went backwards.
        UserAgentChange = "user_agent_change" => 30,
        /// A browser-like TLS client became a library-like one.
        TlsClassChange = "tls_class_change" => 50,
        /// The resumption-stable JA4 changed.
        Ja4Change = "ja4_change" => 10,
        /// Alternating between two networks within the window (not a phone moving between
        /// home Wi-Fi and its carrier in one country).
        ConcurrentUse = "concurrent_use" => 50,
        /// An ASN this user's baseline does not know.
        NewNetworkForUser = "new_network_for_user" => 15,
        /// A JWT that failed verification.
        JwtInvalid = "jwt_invalid" => 30,
        /// No record, but the store evicted this session when it was full: its history
        /// was lost, so this is no first sight. At the step-up threshold: at worst the
        /// owner steps up once after a flood.
        HistoryLost = "history_lost" => 50,
        /// `[lineage]`: the session presented a companion value its lineage has moved past
        /// (or several): a second copy of the session is alive. Strong: alone it demands a
        /// step-up, which the owner passes and a thief cannot, wherever either is.
        SessionForked = "session_forked" => 80,
        /// `[lineage]`: no companion value from a session whose values came back before: a
        /// copy taken without it (the thief holding only the session cookie). Strong, as
        /// a fork.
        LineageMissing = "lineage_missing" => 80,
        // The last four are structural: they force an action whatever their weight.
        /// A session bound to a device key (DBSC) came without a valid bound cookie: the
        /// long-lived cookie alone, replayed away from the key. Forces a block.
        DbscUnproven = "dbsc_unproven" => 0,
        /// A step-up demanded earlier has not been completed.
        StepUpPending = "step_up_pending" => 0,
        /// The route demands a recent authentication and there is none.
        FreshAuthRequired = "fresh_auth_required" => 0,
        /// The session was revoked.
        Revoked = "revoked" => 0,
    }
    /// The weight a signal has unless `[policy.weights]` says otherwise.
    pub const fn default_weight(self) -> u16;
}

// A set is a `u32` bit mask indexed by discriminant.
const _: () = assert!(Signal::COUNT <= 32, "Signals holds at most 32 signals");

/// A set of signals as a bit mask: copying it costs nothing and it never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Signals(u32);

impl Signals {
    pub fn insert(&mut self, s: Signal) {
        self.0 |= 1 << s as u32;
    }

    pub fn contains(self, s: Signal) -> bool {
        self.0 & (1 << s as u32) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Signal::as_str).collect()
    }
}

/// What tether observed about one request.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub now: Secs,
    pub ip: IpAddr,
    pub net: &'a NetInfo,
    pub client: Client,
    pub jwt_invalid: bool,
}

impl Observed<'_> {
    pub fn place(&self) -> Place {
        Place::new(self.ip, self.net, self.now)
    }

    pub fn address_tag(&self) -> u32 {
        address_tag(self.ip)
    }
}

/// Every signal that fires for this request.
pub fn derive(obs: &Observed<'_>, prior: Option<&SessionRecord>, baseline: Option<&UserBaseline>, policy: &Policy) -> Signals {
    let mut s = Signals::default();
    let now = obs.place();
    if obs.net.ioc.any() {
        s.insert(Signal::IocHit);
    }
    if obs.jwt_invalid {
        s.insert(Signal::JwtInvalid);
    }
    // A context the session was proven in (its clean birth, a completed step-up) is no
    // change, whatever it is bound to now.
    let proven = prior.is_some_and(|p| p.proven().covers(&now, obs.client.tls));
    if !proven && new_network_for_user(&now, prior, baseline) {
        s.insert(Signal::NewNetworkForUser);
    }
    let Some(prior) = prior else {
        if now.category.is_anonymizer() {
            s.insert(Signal::FirstSeenAnonymizer);
        }
        return s;
    };
    if step_up_pending(&now, &obs.client, prior) {
        s.insert(Signal::StepUpPending);
    }
    if !proven {
        if anonymizer_network(&now, &prior.bound) {
            s.insert(Signal::AnonymizerNetwork);
        }
        if asn_change(&now, &prior.bound) {
            s.insert(Signal::AsnChange);
        }
        if now.prefix != prior.bound.prefix {
            s.insert(Signal::PrefixChange);
        }
        if matches!((now.country(), prior.bound.country()), (Some(a), Some(b)) if a != b) {
            s.insert(Signal::CountryChange);
        }
    }
    if impossible_travel(&prior.last, &now, policy.max_travel_kmh) {
        s.insert(Signal::ImpossibleTravel);
    }
    if user_agent_change(&prior.client.ua, &obs.client.ua) {
        s.insert(Signal::UserAgentChange);
    }
    if prior.client.tls == TlsClass::Browser && obs.client.tls == TlsClass::Library {
        s.insert(Signal::TlsClassChange);
    }
    if ja4_change(prior.client.ja4, obs.client.ja4) {
        s.insert(Signal::Ja4Change);
    }
    // Moving between two proven contexts (an owner switching a VPN on and off) is not
    // two people at once.
    let between_proven = proven && prior.proven().covers(&prior.last, prior.client.tls);
    if !between_proven && concurrent_use(&now, prior, policy.concurrent_window_secs) {
        s.insert(Signal::ConcurrentUse);
    }
    s
}

/// The signal a lineage verdict raises: a value moved past is a fork, no value from an
/// armed lineage is a missing one (see `session::lineage`).
pub fn lineage(outcome: Option<LineageOutcome>) -> Option<Signal> {
    match outcome? {
        LineageOutcome::Forked => Some(Signal::SessionForked),
        LineageOutcome::Missing => Some(Signal::LineageMissing),
        LineageOutcome::Current | LineageOutcome::Previous | LineageOutcome::Unconfirmed | LineageOutcome::Issued | LineageOutcome::Rotated => None,
    }
}

/// A step-up is outstanding and this request is not the session's owner carrying on as
/// before (the bound network, the same class of client, a binding that was itself
/// clean). The owner keeps working; anyone elsewhere must prove themselves.
pub fn step_up_pending(now: &Place, client: &Client, prior: &SessionRecord) -> bool {
    let owner = !prior.bound_suspect && now.same_network(&prior.bound) && client.tls == prior.client.tls;
    prior.step_up_pending && !owner
}

/// An anonymizer the session was not bound in. (A session bound in one is caught at
/// first sight, and stays caught through `step_up_pending` until someone proves
/// themselves.) Bound on an anonymizer, only its exit prefix counts as the same place:
/// proving oneself on one VPN exit vouches for no other exit of that VPN.
pub fn anonymizer_network(now: &Place, bound: &Place) -> bool {
    let same = if bound.category.is_anonymizer() { now.prefix == bound.prefix } else { now.same_network(bound) };
    now.category.is_anonymizer() && !same
}

/// A change of ASN, except into the organisation's own corporate egress.
pub fn asn_change(now: &Place, bound: &Place) -> bool {
    matches!((now.asn(), bound.asn()), (Some(a), Some(b)) if a != b) && now.category != Category::Corporate
}

/// Great-circle distance in km.
pub fn distance_km(a: &Coordinates, b: &Coordinates) -> f32 {
    const EARTH_KM: f32 = 6371.0;
    let (la1, la2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dla = la2 - la1;
    let dlo = (b.longitude - a.longitude).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_KM * h.sqrt().min(1.0).asin()
}

/// Travel between countries faster than `max_kmh` once both accuracy radii are given
/// the benefit of the doubt. Within one country, carrier geolocation is too coarse to
/// judge speed, so only a country change can be "impossible"; and only between places
/// that locate a person: a VPN exit, relay or corporate gateway says where the network
/// is, not where its user is (the anonymizer signal covers the former).
pub fn impossible_travel(last: &Place, now: &Place, max_kmh: f32) -> bool {
    let locates_person = |p: &Place| matches!(p.category, Category::Other);
    if !locates_person(last) || !locates_person(now) {
        return false;
    }
    let (Some(a), Some(b)) = (last.location(), now.location()) else { return false };
    if last.country().is_none() || last.country() == now.country() {
        return false;
    }
    let slack = f32::from(a.accuracy_km) + f32::from(b.accuracy_km);
    let effective = (distance_km(&a, &b) - slack).max(0.0);
    // At least a minute: clocks and sightings are not that precise.
    let hours = (now.at.saturating_sub(last.at).max(60)) as f32 / 3600.0;
    effective / hours > max_kmh
}

/// A different browser family or OS, or a version going backwards. An upgrade is not a
/// change.
pub fn user_agent_change(bound: &UserAgent, now: &UserAgent) -> bool {
    bound.family != now.family || bound.os != now.os || (now.major != 0 && bound.major != 0 && now.major < bound.major)
}

pub fn ja4_change(bound: Option<Ja4Digest>, now: Option<Ja4Digest>) -> bool {
    matches!((bound, now), (Some(a), Some(b)) if a != b)
}

/// Back to the network before the last one, within the window: the session is being used
/// from two places at once. A phone moving between home Wi-Fi and its carrier in the same
/// country does this too, so that pair is excluded.
pub fn concurrent_use(now: &Place, prior: &SessionRecord, window: u32) -> bool {
    let Some(previous) = prior.previous.map(|p| p.place()) else { return false };
    let last = &prior.last;
    let alternating = !now.same_network(last) && now.same_network(&previous) && now.at.saturating_sub(previous.at) <= window;
    let benign_pair = now.country().is_some()
        && now.country() == last.country()
        && !now.category.is_anonymizer()
        && !last.category.is_anonymizer();
    alternating && !benign_pair
}

/// A network this user has not been allowed in before (when tether knows the user and
/// has a baseline for them).
pub fn new_network_for_user(now: &Place, prior: Option<&SessionRecord>, baseline: Option<&UserBaseline>) -> bool {
    let (Some(baseline), Some(asn)) = (baseline, now.asn()) else { return false };
    if baseline.is_empty() || baseline.knows_network(asn) {
        return false;
    }
    // The session's own binding network is known even if the baseline has not learned it.
    prior.is_none_or(|p| p.bound.asn() != Some(asn))
}
