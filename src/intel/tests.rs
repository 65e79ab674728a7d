//! Intel against the generated fixture databases in `GeoLite-fixtures/`.

use std::net::IpAddr;
use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures").join(name)
}

fn counter() -> IntCounter {
    IntCounter::new("test_lookup_errors", "test").unwrap()
}

fn base() -> IntelConfig {
    IntelConfig {
        asn_db: fixture("GeoLite2-ASN.mmdb"),
        city_db: Some(fixture("GeoLite2-City.mmdb")),
        anonymous_ip_db: Some(fixture("GeoIP2-Anonymous-IP.mmdb")),
        ioc_files: Vec::new(),
        catalogue: true,
        networks: Vec::new(),
        allow: Vec::new(),
        privacy_relay_files: Vec::new(),
        cache_entries: 1024,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn entry(s: &str) -> Entry {
    Entry::parse(s).unwrap()
}

#[test]
fn residential_ipv4_ipv6_and_mapped() {
    let intel = Intel::load(&base(), counter()).unwrap();
    let home = intel.lookup(ip("192.0.2.10"));
    assert_eq!(home.asn, Some(Asn(64496)));
    assert_eq!(home.org.as_deref(), Some("Example Home Broadband"));
    assert_eq!(home.country.unwrap().as_str(), "SE");
    let loc = home.location.unwrap();
    assert!((loc.latitude - 59.3293).abs() < 1e-3 && loc.accuracy_km == 20);
    assert_eq!((home.category, home.source), (Category::Other, CategorySource::Default));
    assert!(!home.anonymizer());

    let v6 = intel.lookup(ip("2001:db8:1::42"));
    assert_eq!(v6.asn, Some(Asn(64496)));
    let mapped = intel.lookup(ip("::ffff:127.0.2.9"));
    assert_eq!(mapped, intel.lookup(ip("127.0.2.9")));
    assert_eq!(mapped.category, Category::Vpn);
    let unknown = intel.lookup(ip("2001:db9::1"));
    assert_eq!((unknown.asn, unknown.category), (None, Category::Other));
}

#[test]
fn catalogue_categories_for_the_incident_networks() {
    let intel = Intel::load(&base(), counter()).unwrap();
    let datacamp = intel.lookup(ip("127.0.1.7"));
    assert_eq!((datacamp.category, datacamp.source), (Category::Hosting, CategorySource::Catalogue));
    assert!(datacamp.anonymizer());
    let mullvad = intel.lookup(ip("127.0.2.7"));
    assert_eq!((mullvad.category, mullvad.source), (Category::Vpn, CategorySource::Catalogue));
    let m247 = intel.lookup(ip("127.0.7.7"));
    assert_eq!(m247.category, Category::Hosting);
}

#[test]
fn anonymous_ip_flags_beat_the_catalogue() {
    let intel = Intel::load(&base(), counter()).unwrap();
    // Same ASN as 127.0.7.0/24 (catalogue: hosting), but the database says VPN.
    let flagged = intel.lookup(ip("127.0.8.1"));
    assert_eq!((flagged.category, flagged.source), (Category::Vpn, CategorySource::AnonymousIpDb));
    let tor = intel.lookup(ip("127.0.5.1"));
    assert_eq!((tor.category, tor.source), (Category::Tor, CategorySource::AnonymousIpDb));
    let hosting = intel.lookup(ip("203.0.113.200"));
    assert_eq!(hosting.category, Category::Hosting);
    // Without the Anonymous-IP database the catalogue answers.
    let mut cfg = base();
    cfg.anonymous_ip_db = None;
    let intel = Intel::load(&cfg, counter()).unwrap();
    assert_eq!(intel.lookup(ip("127.0.8.1")).category, Category::Hosting);
    assert_eq!(intel.lookup(ip("127.0.5.1")).category, Category::Other);
}

#[test]
fn operator_lists_and_allowlists_take_precedence() {
    let mut cfg = base();
    cfg.networks = vec![
        (Category::Proxy, entry("AS64497")),
        (Category::Vpn, entry("127.0.5.0/24")),
    ];
    cfg.allow = vec![
        (Category::Corporate, entry("AS64498")),
        (Category::Corporate, entry("127.0.7.0/24")),
        (Category::PrivacyRelay, entry("127.0.8.0/24")),
    ];
    let intel = Intel::load(&cfg, counter()).unwrap();
    let check = |addr: &str, cat: Category, src: CategorySource| {
        let n = intel.lookup(ip(addr));
        assert_eq!((n.category, n.source), (cat, src), "{addr}");
    };
    // Operator category list beats the Anonymous-IP database.
    check("127.0.5.1", Category::Vpn, CategorySource::OperatorList);
    check("198.51.100.1", Category::Proxy, CategorySource::OperatorList);
    // Allowlist beats the catalogue (a corporate VPN hosted at M247)...
    check("127.0.7.1", Category::Corporate, CategorySource::Allowlist);
    check("203.0.113.5", Category::Corporate, CategorySource::Allowlist);
    // ...and the Anonymous-IP database.
    check("127.0.8.1", Category::PrivacyRelay, CategorySource::Allowlist);
    // Privacy relay is not an anonymizer, and neither is corporate egress.
    assert!(!intel.lookup(ip("127.0.8.1")).anonymizer());
    assert!(!intel.lookup(ip("127.0.7.1")).anonymizer());
}

#[test]
fn iocs_are_always_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incident.txt");
    std::fs::write(&file, "# indicators\n127.0.6.66\nAS60068\n2001:db8:1::/64\n").unwrap();
    let mut cfg = base();
    cfg.ioc_files = vec![IocFile { path: file, label: "incident".into() }];
    cfg.allow = vec![(Category::Corporate, entry("AS64498"))];
    let intel = Intel::load(&cfg, counter()).unwrap();
    // Allowlisted corporate egress that is also an indicator: both facts stand.
    let corp = intel.lookup(ip("127.0.6.66"));
    assert_eq!(corp.category, Category::Corporate);
    assert!(corp.ioc.any());
    assert!(!intel.lookup(ip("127.0.6.67")).ioc.any());
    assert!(intel.lookup(ip("127.0.1.200")).ioc.any(), "ASN indicator");
    assert!(intel.lookup(ip("2001:db8:1::99")).ioc.any(), "IPv6 prefix indicator");
    assert!(!intel.lookup(ip("2001:db8:1:1::99")).ioc.any());
    let m = intel.ioc_matches(ip("127.0.1.200"), Some(Asn(60068)));
    assert_eq!(m, vec![IocMatch { label: "incident".into(), entry: "AS60068".into() }]);
}

#[test]
fn missing_corrupt_and_mistyped_databases_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = base();
    cfg.asn_db = dir.path().join("absent.mmdb");
    let err = Intel::load(&cfg, counter()).err().unwrap().to_string();
    assert!(err.contains("absent.mmdb"), "{err}");

    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"this is not a maxmind database at all").unwrap();
    cfg.asn_db = corrupt;
    let err = Intel::load(&cfg, counter()).err().unwrap().to_string();
    assert!(err.contains("corrupt.mmdb"), "{err}");

    // A truncated real database.
    let truncated = dir.path().join("truncated.mmdb");
    let bytes = std::fs::read(fixture("GeoLite2-ASN.mmdb")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    cfg.asn_db = truncated;
    let err = Intel::load(&cfg, counter()).err().unwrap().to_string();
    assert!(err.contains("truncated.mmdb"), "{err}");

    cfg.asn_db = fixture("GeoLite2-City.mmdb");
    let err = Intel::load(&cfg, counter()).err().unwrap().to_string();
    assert!(err.contains("GeoLite2-City.mmdb") && err.contains("asn"), "{err}");
}

#[test]
fn database_build_time_is_exposed() {
    let intel = Intel::load(&base(), counter()).unwrap();
    let epochs: Vec<_> = intel.databases().map(|d| (d.kind, d.build_epoch())).collect();
    assert_eq!(epochs.len(), 3);
    assert!(epochs.iter().all(|(_, e)| *e == 1_793_491_200));
}

#[test]
fn cache_is_bounded_and_consistent() {
    let mut cfg = base();
    cfg.cache_entries = 16;
    let intel = Intel::load(&cfg, counter()).unwrap();
    for i in 0..=255u8 {
        let a = IpAddr::from([192, 0, 2, i]);
        assert_eq!(intel.lookup(a), intel.lookup_uncached(a));
    }
    assert!(intel.cache.len() <= 16, "{}", intel.cache.len());
    // Cached answers equal fresh ones.
    let a = ip("127.0.2.3");
    assert_eq!(intel.lookup(a), intel.lookup(a));
}
