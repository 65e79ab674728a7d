//! The per-request security path (identity, store read and write, signals, policy) and
//! the memory each tracked session costs.
//!
//! `cargo bench --bench detector` prints criterion's figures for the path, then a
//! bytes-per-session figure measured from the process's resident memory after binding
//! one million sessions.

use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use tether::config::Config;
use tether::detector::{Detector, Request};
use tether::fingerprint::{Fingerprint, Ja4};
use tether::intel::{Asn, Category, CategorySource, Coordinates, Country, IocHits, NetInfo};
use tether::session::{HashKey, Store, StoreLimits};

/// The in-memory store never waits, so its futures finish on the first poll.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the memory store does not wait"),
    }
}

fn detector() -> Detector {
    let text = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[session]\ncookies = [\"session\"]\n";
    let config = Config::parse(text, std::path::Path::new(".")).unwrap();
    Detector::build(&config, &HashKey::new([9; 32], None)).unwrap()
}

fn home() -> NetInfo {
    NetInfo {
        asn: Some(Asn(64496)),
        org: None,
        country: Country::new("SE"),
        location: Some(Coordinates { latitude: 59.33, longitude: 18.07, accuracy_km: 20 }),
        category: Category::Other,
        source: CategorySource::Default,
        ioc: IocHits::default(),
    }
}

fn headers(cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("cookie", HeaderValue::from_str(&format!("theme=dark; session={cookie}; lang=en")).unwrap());
    h.insert("user-agent", HeaderValue::from_static("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36"));
    h.insert("accept", HeaderValue::from_static("text/html"));
    h
}

fn security_path(c: &mut Criterion) {
    let det = detector();
    let store = Store::memory(StoreLimits::default());
    let net = home();
    let ja4 = Ja4::parse(b"t13d1516h2_8daaf6152771_d8a2da3f94cd").unwrap();
    let fp = Fingerprint { ja4, ja4_stable: ja4 };
    let method = Method::GET;
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let h = headers("9f8e7d6c5b4a39281706f5e4d3c2b1a0-session-cookie-value");
    let req = |now| Request { now, ip, net: &net, method: &method, path: "/dashboard", query: None, headers: &h, fingerprint: Some(&fp), peer_trusted: false, asserted_user: None, identify: false, recheck: false };
    ready(det.decide(&store, &req(1_800_000_000))).unwrap();

    let mut group = c.benchmark_group("detector");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    group.bench_function("known_session_allow", |b| {
        let mut now = 1_800_000_001;
        b.iter(|| {
            now += 1;
            black_box(ready(det.decide(&store, &req(now))).unwrap())
        })
    });
    let vpn = NetInfo { asn: Some(Asn(39351)), category: Category::Vpn, ..home() };
    let vpn_ip: IpAddr = "127.0.2.10".parse().unwrap();
    group.bench_function("known_session_from_vpn", |b| {
        b.iter(|| {
            let r = Request { ip: vpn_ip, net: &vpn, ..req(1_800_000_100) };
            black_box(ready(det.decide(&store, &r)).unwrap())
        })
    });
    let mut n: u64 = 0;
    // The request's headers are built outside the timing: hyper has parsed them before
    // the security path starts.
    group.bench_function("first_sight_binding", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                headers(&format!("fresh-{n}"))
            },
            |h| {
                let r = Request { headers: h, ..req(1_800_000_200) };
                black_box(ready(det.decide(&store, &r)).unwrap())
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Binds one million sessions and reports resident memory per session.
fn memory_per_session() {
    const N: u64 = 1_000_000;
    let det = detector();
    let store = Store::memory(StoreLimits { max_sessions: 2_000_000, ..StoreLimits::default() });
    let net = home();
    let method = Method::GET;
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let ja4 = Ja4::parse(b"t13d1516h2_8daaf6152771_d8a2da3f94cd").unwrap();
    let fp = Fingerprint { ja4, ja4_stable: ja4 };
    let before = resident_bytes();
    for i in 0..N {
        let h = headers(&format!("s{i:016x}"));
        let r = Request { now: 1_800_000_000, ip, net: &net, method: &method, path: "/", query: None, headers: &h, fingerprint: Some(&fp), peer_trusted: false, asserted_user: None, identify: false, recheck: false };
        ready(det.decide(&store, &r)).unwrap();
    }
    let after = resident_bytes();
    println!(
        "memory: {} sessions, {:.0} bytes of resident memory per session (record {} bytes + key {} bytes + map overhead)",
        store.len(),
        (after.saturating_sub(before)) as f64 / N as f64,
        std::mem::size_of::<tether::session::SessionRecord>(),
        std::mem::size_of::<tether::session::SessionKey>(),
    );
}

criterion_group!(benches, security_path);

fn main() {
    // The memory figure is taken first, in a process that has allocated little else.
    if std::env::args().any(|a| a == "--bench") {
        memory_per_session();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
