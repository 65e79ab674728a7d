//! The policy's table: each benign change from the field stays below the step-up
//! threshold; each replay shape reaches it.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::fingerprint::{Ja4, Os, TlsClass, UaFamily, UserAgent};
use crate::intel::{Asn, Category, CategorySource, Coordinates, Country, IocHits, NetInfo};
use crate::session::record::{Client, Ja4Digest, Moment, Place, SessionRecord, UserBaseline};

const T0: u32 = 1_800_000_000;

fn net(asn: u32, category: Category, country: &str, lat: f32, lon: f32, acc: u16) -> NetInfo {
    NetInfo {
        asn: Some(Asn(asn)),
        org: None,
        country: Country::new(country),
        location: Some(Coordinates { latitude: lat, longitude: lon, accuracy_km: acc }),
        category,
        source: CategorySource::Default,
        ioc: IocHits::default(),
    }
}

fn home() -> NetInfo {
    net(64496, Category::Other, "SE", 59.33, 18.07, 20)
}
fn mobile() -> NetInfo {
    net(64497, Category::Other, "SE", 57.71, 11.97, 100)
}
fn mullvad() -> NetInfo {
    net(39351, Category::Vpn, "SE", 59.33, 18.07, 100)
}
fn datacamp() -> NetInfo {
    net(60068, Category::Hosting, "GB", 51.51, -0.13, 50)
}
fn sydney() -> NetInfo {
    net(64510, Category::Other, "AU", -33.87, 151.21, 20)
}
fn relay() -> NetInfo {
    net(36183, Category::PrivacyRelay, "SE", 59.33, 18.07, 100)
}
fn corporate() -> NetInfo {
    net(64498, Category::Corporate, "US", 40.71, -74.0, 10)
}

fn ja4(s: &str) -> Option<Ja4Digest> {
    Ja4::parse(s.as_bytes()).as_ref().map(Ja4Digest::of)
}

const CHROME_JA4: &str = "t13d1516h2_8daaf6152771_d8a2da3f94cd";
const CHROME_NEXT_JA4: &str = "t13d1517h2_8daaf6152771_cb7bf5808d99";
const CURL_JA4: &str = "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6";

fn chrome(major: u16) -> Client {
    Client { ua: UserAgent { family: UaFamily::Chrome, major, os: Os::Windows }, ja4: ja4(CHROME_JA4), tls: TlsClass::Browser }
}
fn curl() -> Client {
    Client { ua: UserAgent { family: UaFamily::Curl, major: 7, os: Os::Other }, ja4: ja4(CURL_JA4), tls: TlsClass::Library }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A session bound at home in Chrome, last seen there a minute ago.
fn bound_home(user: bool) -> (SessionRecord, UserBaseline) {
    let place = Place::new(ip("192.0.2.10"), &home(), T0);
    let client = chrome(150);
    let rec = SessionRecord { user: user.then(|| Arc::from("alice")), authenticated_at: Moment::at(T0), ..SessionRecord::new(place, client) };
    let mut baseline = UserBaseline::default();
    baseline.learn(&place, client);
    (rec, baseline)
}

fn judge(rec: Option<&SessionRecord>, baseline: Option<&UserBaseline>, ip_s: &str, n: &NetInfo, client: Client, dt: u32) -> Verdict {
    let policy = Policy::default();
    let obs = Observed { now: T0 + dt, ip: ip(ip_s), net: n, client, jwt_invalid: false };
    let signals = derive(&obs, rec, baseline, &policy);
    evaluate(signals, &policy, None, rec.and_then(|r| r.authenticated_at.get()), obs.now)
}

fn assert_below(v: Verdict, case: &str) {
    assert!(v.score < Policy::default().step_up_threshold && v.action == Action::Allow, "{case}: {v:?} ({})", v.signals);
}

fn assert_reaches(v: Verdict, at_least: Action, case: &str, must: &[Signal]) {
    assert!(v.action >= at_least, "{case}: {v:?} ({})", v.signals);
    for s in must {
        assert!(v.signals.contains(*s), "{case}: missing {} in {}", s.as_str(), v.signals);
    }
}

#[test]
fn benign_changes_stay_below_step_up() {
    let (rec, base) = bound_home(true);
    let b = Some(&base);
    let r = Some(&rec);
    // Same address, same client: nothing at all.
    let v = judge(r, b, "192.0.2.10", &home(), chrome(150), 60);
    assert!(v.signals.is_empty() && v.score == 0);

    // IPv6 privacy-address rotation within a /64.
    let mut v6 = rec.clone();
    v6.bound = Place::new(ip("2001:db8:1:1::a"), &home(), T0);
    v6.last = v6.bound;
    let v = judge(Some(&v6), b, "2001:db8:1:1:8f3e::77", &home(), chrome(150), 60);
    assert!(v.signals.is_empty(), "{}", v.signals);

    // Carrier address change within the ASN (another /24).
    assert_below(judge(r, b, "192.0.3.9", &home(), chrome(150), 60), "carrier change within ASN");

    // Wi-Fi to cellular in the same country, a user the baseline has not seen on mobile.
    let v = judge(r, b, "198.51.100.7", &mobile(), chrome(150), 60);
    assert_below(v, "wifi to cellular");
    assert!(!v.signals.contains(Signal::ImpossibleTravel));

    // ...and back and forth within minutes: not "concurrent use".
    let mut flip = rec.clone();
    flip.previous = Some(rec.last.into());
    flip.last = Place::new(ip("198.51.100.7"), &mobile(), T0 + 60);
    let v = judge(Some(&flip), b, "192.0.2.10", &home(), chrome(150), 120);
    assert_below(v, "wifi/cellular alternation");
    assert!(!v.signals.contains(Signal::ConcurrentUse));

    // Browser major upgrade with a new JA4.
    let mut upgraded = chrome(151);
    upgraded.ja4 = ja4(CHROME_NEXT_JA4);
    let v = judge(r, b, "192.0.2.10", &home(), upgraded, 3600);
    assert_below(v, "browser upgrade");
    assert_eq!(v.signals.names(), vec!["ja4_change"]);

    // Resumption only changes the full JA4; the stable digest is identical.
    assert!(judge(r, b, "192.0.2.10", &home(), chrome(150), 60).signals.is_empty());

    // iCloud Private Relay.
    let v = judge(r, b, "172.224.226.5", &relay(), chrome(150), 60);
    assert_below(v, "private relay");
    assert!(!v.signals.contains(Signal::AnonymizerNetwork));

    // The allowlisted corporate VPN, exiting in another country.
    let v = judge(r, b, "203.0.113.5", &corporate(), chrome(150), 60);
    assert_below(v, "corporate VPN");
    assert!(!v.signals.contains(Signal::ImpossibleTravel) && !v.signals.contains(Signal::AsnChange));
}

#[test]
fn replay_shapes_reach_step_up() {
    let (rec, base) = bound_home(true);
    let (r, b) = (Some(&rec), Some(&base));

    let v = judge(r, b, "127.0.2.9", &mullvad(), chrome(150), 60);
    assert_reaches(v, Action::StepUp, "replay from Mullvad", &[Signal::AnonymizerNetwork, Signal::AsnChange]);
    assert_eq!(v.action, Action::StepUp, "a VPN alone is a step-up, not a block: the owner can prove themselves");

    let v = judge(r, b, "127.0.1.9", &datacamp(), chrome(150), 60);
    assert_reaches(v, Action::StepUp, "replay from Datacamp", &[Signal::AnonymizerNetwork, Signal::CountryChange]);
    assert!(!v.signals.contains(Signal::ImpossibleTravel), "a VPN exit does not locate a person");

    let mut ioc = home();
    ioc.ioc = IocHits(1);
    let v = judge(r, b, "192.0.2.99", &ioc, chrome(150), 60);
    assert_reaches(v, Action::Block, "IoC address", &[Signal::IocHit]);

    // The thief's library client, even from the victim's own network (malware on the laptop).
    let v = judge(r, b, "192.0.2.10", &home(), curl(), 60);
    assert_reaches(v, Action::StepUp, "library client", &[Signal::TlsClassChange, Signal::UserAgentChange]);

    // Library client from a VPN: blocked outright.
    let v = judge(r, b, "127.0.2.9", &mullvad(), curl(), 60);
    assert_reaches(v, Action::Block, "library client from VPN", &[Signal::AnonymizerNetwork, Signal::TlsClassChange]);

    let v = judge(r, b, "2001:db8:3::1", &sydney(), chrome(150), 600);
    assert_reaches(v, Action::StepUp, "impossible travel", &[Signal::ImpossibleTravel, Signal::CountryChange]);
    // The same trip over two days is travel, not impossible.
    let v = judge(r, b, "2001:db8:3::1", &sydney(), chrome(150), 2 * 86_400);
    assert!(!v.signals.contains(Signal::ImpossibleTravel));

    // Alternating between home and a VPN within minutes.
    let mut busy = rec.clone();
    busy.previous = Some(rec.last.into());
    busy.last = Place::new(ip("127.0.2.9"), &mullvad(), T0 + 30);
    let v = judge(Some(&busy), b, "192.0.2.10", &home(), chrome(150), 60);
    assert_reaches(v, Action::StepUp, "concurrent use", &[Signal::ConcurrentUse]);
}

/// The careful thief: the victim's city, residential ISP and /24, the victim's browser
/// build (user agent and JA4, as curl-impersonate gives them) — every context signal
/// scores zero, so without lineage the replay passes. With lineage on it is caught on its
/// first request, holding a stale companion or none.
#[test]
fn the_careful_thief_is_caught_with_lineage_and_missed_without() {
    use crate::session::lineage::{assess, digest, Lineage, LineageConfig, Presented};
    let (rec, base) = bound_home(true);
    let policy = Policy::default();
    let now = T0 + 900;
    let obs = Observed { now, ip: ip("192.0.2.77"), net: &home(), client: chrome(150), jwt_invalid: false };
    let context = derive(&obs, Some(&rec), Some(&base), &policy);
    assert!(context.is_empty(), "nothing about the context differs: {context}");
    let off = evaluate(context, &policy, None, rec.authenticated_at.get(), now);
    assert_eq!(off.action, Action::Allow, "missed with lineage off");

    // The victim's lineage: rotated since the theft, its current value back in use.
    let cfg = LineageConfig::default();
    let victim = Lineage::new(digest(b"now"), digest(b"before"), T0 + 600, Some(T0 + 601), true);
    // (what the thief presents, the signal it raises)
    let rows = [
        (Presented::One(digest(b"stolen at the start")), Signal::SessionForked),
        (Presented::One(digest(b"before")), Signal::SessionForked),
        (Presented::None, Signal::LineageMissing),
    ];
    for (presented, signal) in rows {
        let mut s = context;
        let raised = signals::lineage(assess(Some(&victim), presented, now, &cfg).0);
        assert_eq!(raised, Some(signal), "{presented:?}");
        s.insert(signal);
        let on = evaluate(s, &policy, None, rec.authenticated_at.get(), now);
        assert_reaches(on, Action::StepUp, "the careful thief, lineage on", &[signal]);
        assert!(on.action < Action::Block, "a step-up, which the owner passes if it is them");
    }
    // The victim's own browser, the same moment: nothing.
    assert_eq!(signals::lineage(assess(Some(&victim), Presented::One(digest(b"now")), now, &cfg).0), None);
}

#[test]
fn new_sessions_are_judged_against_the_user() {
    let (_, base) = bound_home(true);
    // A new app session minted with a stolen IdP session, from a VPN.
    let v = judge(None, Some(&base), "127.0.2.9", &mullvad(), chrome(150), 60);
    assert_reaches(v, Action::StepUp, "new session from VPN", &[Signal::FirstSeenAnonymizer, Signal::NewNetworkForUser]);
    // A new session at home for a known user: nothing.
    assert!(judge(None, Some(&base), "192.0.2.55", &home(), chrome(150), 60).signals.is_empty());
    // A brand-new user from an ordinary network: nothing to compare, allowed.
    assert!(judge(None, None, "198.51.100.1", &mobile(), chrome(150), 0).signals.is_empty());
}

#[test]
fn pending_step_up_and_revocation_stick() {
    let (mut rec, base) = bound_home(false);
    rec.step_up_pending = true;
    // The owner at home in their browser carries on...
    let v = judge(Some(&rec), Some(&base), "192.0.2.10", &home(), chrome(150), 60);
    assert_eq!(v.action, Action::Allow, "{}", v.signals);
    // ...while the thief stays challenged, even from an innocent-looking network.
    let v = judge(Some(&rec), Some(&base), "198.51.100.7", &mobile(), chrome(150), 60);
    assert_eq!(v.action, Action::StepUp);
    assert!(v.signals.contains(Signal::StepUpPending));
    // A session whose very binding was suspicious gets no owner exemption.
    rec.bound_suspect = true;
    let v = judge(Some(&rec), Some(&base), "192.0.2.10", &home(), chrome(150), 60);
    assert_eq!(v.signals.names(), vec!["step_up_pending"]);
    assert_eq!(v.action, Action::StepUp);
    let policy = Policy::default();
    let mut s = Signals::default();
    s.insert(Signal::Revoked);
    assert_eq!(evaluate(s, &policy, None, None, T0).action, Action::Block);
}

#[test]
fn routes_raise_sensitivity_and_demand_fresh_auth() {
    let policy = Policy { routes: vec![
        Route { name: Some("tokens".into()), path_prefix: "/api/tokens".into(), methods: vec![http::Method::POST], sensitivity: 1.0, fresh_auth: Some(std::time::Duration::from_secs(300)), fold_case: false },
        Route { name: None, path_prefix: "/admin".into(), methods: vec![], sensitivity: 2.0, fresh_auth: None, fold_case: false },
    ], ..Policy::default() };
    let post = http::Method::POST;
    let get = http::Method::GET;
    let token_route = policy.route(&post, "/api/tokens/new");
    assert!(token_route.is_some() && policy.route(&get, "/api/tokens").is_none());
    // No signal at all, but the last authentication is an hour old: step up anyway.
    let v = evaluate(Signals::default(), &policy, token_route, Some(T0 - 3600), T0);
    assert_eq!((v.action, v.signals.names()), (Action::StepUp, vec!["fresh_auth_required"]));
    // A fresh one passes.
    assert_eq!(evaluate(Signals::default(), &policy, token_route, Some(T0 - 60), T0).action, Action::Allow);
    // One medium signal (an ASN change, 25) is below the threshold; the admin route's
    // sensitivity doubles it past.
    let mut s = Signals::default();
    s.insert(Signal::AsnChange);
    assert_eq!(evaluate(s, &policy, None, None, T0).action, Action::Allow);
    assert_eq!(evaluate(s, &policy, policy.route(&get, "/admin/users"), None, T0).action, Action::StepUp);
}

#[test]
fn verdicts_name_their_route_by_config_name_never_by_path() {
    let policy = Policy { routes: vec![
        Route { name: Some("tokens".into()), path_prefix: "/api/tokens".into(), methods: vec![], sensitivity: 1.0, fresh_auth: None, fold_case: false },
        Route { name: None, path_prefix: "/admin".into(), methods: vec![], sensitivity: 1.0, fresh_auth: None, fold_case: false },
    ], ..Policy::default() };
    let get = http::Method::GET;
    let label = |path: &str| policy.route_label(&evaluate(Signals::default(), &policy, policy.route(&get, path), None, T0)).to_owned();
    assert_eq!(label("/api/tokens/new"), "tokens");
    assert_eq!(label("/admin/users"), "unnamed");
    assert_eq!(label("/elsewhere"), "none");
    assert_eq!(policy.route_labels().collect::<Vec<_>>(), ["none", "unnamed", "tokens"]);
    assert_eq!(Policy::default().route_labels().collect::<Vec<_>>(), ["none"]);
    // A rule that is not one of the policy's own (a copy) is no rule.
    let copy = policy.routes[0].clone();
    assert_eq!(policy.route_label(&evaluate(Signals::default(), &policy, Some(&copy), None, T0)), "none");
}

#[test]
fn monitor_mode_records_but_does_not_enforce() {
    let policy = Policy { mode: Mode::Monitor, ..Policy::default() };
    let mut s = Signals::default();
    s.insert(Signal::IocHit);
    let v = evaluate(s, &policy, None, None, T0);
    assert_eq!((v.action, v.effective()), (Action::Block, Action::Allow));
}

#[test]
fn haversine_sanity() {
    let sto = Coordinates { latitude: 59.33, longitude: 18.07, accuracy_km: 0 };
    let syd = Coordinates { latitude: -33.87, longitude: 151.21, accuracy_km: 0 };
    let d = signals::distance_km(&sto, &syd);
    assert!((15_500.0..15_700.0).contains(&d), "{d}");
    assert!(signals::distance_km(&sto, &sto) < 0.01);
}
