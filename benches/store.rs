//! One request's store work — load a session, write it back — with the embedded store,
//! and with the shared store on a cache hit (no round trip) and a cache miss (a load and
//! a write, two round trips).
//!
//! `cargo bench --bench store` uses the Redis named by `TETHER_TEST_REDIS_URL`, else
//! starts `redis-server` on a free port for the run; without either, only the embedded
//! store is measured. A benchmark prints figures; it asserts nothing about them.

use std::hint::black_box;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use tether::fingerprint::{Os, TlsClass, UaFamily, UserAgent};
use tether::intel::{Asn, Country, NetInfo};
use tether::session::record::{Client, Place};
use tether::session::redis::RedisConfig;
use tether::session::{SessionKey, SessionRecord, Store, StoreLimits};

fn record(at: u32) -> SessionRecord {
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let net = NetInfo { asn: Some(Asn(64496)), country: Country::new("SE"), ..NetInfo::unknown() };
    let client = Client { ua: UserAgent { family: UaFamily::Chrome, major: 150, os: Os::Windows }, ja4: None, tls: TlsClass::Browser };
    SessionRecord { user: Some(Arc::from("alice")), ..SessionRecord::new(Place::new(ip, &net, at), client) }
}

/// A private redis-server, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_url() -> Option<(String, Option<Server>)> {
    if let Ok(url) = std::env::var("TETHER_TEST_REDIS_URL") {
        return Some((url, None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..200 {
        if redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).is_ok() {
            return Some((url, Some(server)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Loads and writes back one session, as the detector does per request.
async fn request(store: &Store, key: &SessionKey, at: u32) {
    let loaded = store.load(key, None, at).await.unwrap_or_default();
    let mut r = loaded.record.unwrap_or_else(|| record(at));
    r.last.at = at;
    store.store(*key, r, None).await.ok();
}

fn store_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t0 = tether::session::now();
    let key = SessionKey([7; 16]);
    let mut g = c.benchmark_group("store");

    let memory = Store::memory(StoreLimits::default());
    let mut at = t0;
    g.bench_function("memory load+store", |b| {
        b.iter(|| {
            at = if at >= t0 + 3000 { t0 } else { at + 1 };
            rt.block_on(request(&memory, black_box(&key), at));
        })
    });

    let Some((url, _server)) = redis_url() else {
        eprintln!("no Redis (TETHER_TEST_REDIS_URL or redis-server): shared-store figures skipped");
        return;
    };
    let prefix = format!("bench{}:", std::process::id());
    let hit = rt
        .block_on(Store::redis(RedisConfig { url: url.clone(), key_prefix: prefix.clone(), cache_ttl: Duration::from_secs(3600), ..RedisConfig::default() }, StoreLimits::default()))
        .unwrap();
    // Wait until it hears invalidations (before that, the cache is not trusted).
    for _ in 0..500 {
        if hit.as_redis().is_some_and(|r| r.is_listening()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rt.block_on(request(&hit, &key, t0));
    // Steady use: the same second over and over, so the write is skipped too.
    g.bench_function("redis cache hit load+store", |b| b.iter(|| rt.block_on(request(&hit, black_box(&key), t0))));

    let miss = rt
        .block_on(Store::redis(RedisConfig { url, key_prefix: prefix, cache_ttl: Duration::ZERO, ..RedisConfig::default() }, StoreLimits::default()))
        .unwrap();
    let mut at = t0;
    g.bench_function("redis cache miss load+store", |b| {
        b.iter(|| {
            // A minute on each time: past the write interval, so every store writes.
            at += 61;
            rt.block_on(request(&miss, black_box(&key), at));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    targets = store_path
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
