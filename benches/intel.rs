//! Network intelligence lookups against the fixture databases: uncached (three MaxMind
//! lookups, lists, catalogue) and cached (the per-address cache).

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tether::intel::{Intel, IntelConfig};

fn config() -> IntelConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures");
    IntelConfig {
        asn_db: dir.join("GeoLite2-ASN.mmdb"),
        city_db: Some(dir.join("GeoLite2-City.mmdb")),
        anonymous_ip_db: Some(dir.join("GeoIP2-Anonymous-IP.mmdb")),
        ioc_files: Vec::new(),
        catalogue: true,
        networks: Vec::new(),
        allow: Vec::new(),
        privacy_relay_files: Vec::new(),
        cache_entries: 65_536,
    }
}

fn lookups(c: &mut Criterion) {
    let errors = prometheus::IntCounter::new("bench_errors", "bench").unwrap();
    let intel = Intel::load(&config(), errors).unwrap();
    let addrs: Vec<IpAddr> = ["192.0.2.10", "127.0.1.7", "127.0.8.1", "2001:db8:1::5", "::ffff:127.0.2.9"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut group = c.benchmark_group("intel");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1));
    group.bench_function("uncached", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(intel.lookup_uncached(black_box(addrs[i])))
        })
    });
    for a in &addrs {
        intel.lookup(*a);
    }
    group.bench_function("cached", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(intel.lookup(black_box(addrs[i])))
        })
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
