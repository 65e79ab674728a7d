//! The shared store against a real `redis-server`: two store instances on one Redis play
//! two replicas. The server comes from `TETHER_TEST_REDIS_URL` (what `scripts/test.sh`
//! starts), else each test starts its own from `redis-server` on the PATH; the fault and
//! memory tests always start their own (they freeze it or fill it). Without either the
//! tests skip with a notice, except under `CI=true`, where they fail.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tether::fingerprint::{Os, TlsClass, UaFamily, UserAgent};
use tether::intel::{Asn, Country, NetInfo};
use tether::session::record::{Client, Moment, Place};
use tether::session::redis::{Invalidation, RedisConfig};
use tether::session::{Secs, SessionKey, SessionRecord, Store, StoreError, StoreLimits, UserBaseline};

/// A private `redis-server`, stopped (and resumed first, if frozen) when dropped.
pub(super) struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Option<Server> {
        let bin = std::env::var("TETHER_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = tempfile::tempdir().ok()?;
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
            if let Some(mut server) = Server::on_port(&bin, port, &dir, extra) {
                if server.ready() {
                    server._dir = dir;
                    return Some(server);
                }
            }
        }
        None
    }

    fn on_port(bin: &str, port: u16, dir: &tempfile::TempDir, extra: &[&str]) -> Option<Server> {
        {
            let mut cmd = Command::new(bin);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let child = cmd.spawn().ok()?;
            let url = format!("redis://127.0.0.1:{port}");
            Some(Server { child, url, _dir: tempfile::tempdir().ok()? })
        }
    }

    fn ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut c) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub(super) fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's Redis is: the shared one, or a private one it owns.
pub(super) struct Target {
    pub(super) url: String,
    pub(super) _server: Option<Server>,
}

fn unavailable(what: &str) -> Option<Target> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: no Redis (set TETHER_TEST_REDIS_URL or install redis-server); CI=true requires it");
    }
    eprintln!("skipping {what}: no Redis (set TETHER_TEST_REDIS_URL or install redis-server)");
    None
}

pub(super) fn shared(what: &str) -> Option<Target> {
    if let Ok(url) = std::env::var("TETHER_TEST_REDIS_URL") {
        return Some(Target { url, _server: None });
    }
    private(what, &[])
}

pub(super) fn private(what: &str, extra: &[&str]) -> Option<Target> {
    match Server::start(extra) {
        Some(s) => Some(Target { url: s.url.clone(), _server: Some(s) }),
        None => unavailable(what),
    }
}

/// A prefix of its own per test, so tests share one server without meeting.
fn config(url: &str, test: &str) -> RedisConfig {
    let nonce: u32 = rand_u32();
    RedisConfig { url: url.to_owned(), key_prefix: format!("t{nonce:08x}:{test}:"), ..RedisConfig::default() }
}

pub(super) fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("randomness");
    u32::from_le_bytes(b)
}

fn limits() -> StoreLimits {
    StoreLimits { idle_ttl: 3600, absolute_ttl: 7 * 86_400, max_sessions: 100_000, max_users: 10_000 }
}

/// A replica, once it hears the others' invalidations.
async fn replica(cfg: &RedisConfig) -> Store {
    let store = Store::redis(cfg.clone(), limits()).await.expect("store set up");
    let listening = eventually(Duration::from_secs(10), async || store.as_redis().is_some_and(|r| r.is_listening())).await;
    assert!(listening.is_some(), "subscribed to invalidations");
    store
}

fn now() -> Secs {
    tether::session::now()
}

fn key(i: u32) -> SessionKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&i.to_be_bytes());
    k[4..8].copy_from_slice(&rand_u32().to_be_bytes());
    SessionKey(k)
}

fn record(at: Secs, user: Option<&str>, country: &str) -> SessionRecord {
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let net = NetInfo { asn: Some(Asn(64496)), country: Country::new(country), ..NetInfo::unknown() };
    let client = Client { ua: UserAgent { family: UaFamily::Chrome, major: 150, os: Os::Windows }, ja4: None, tls: TlsClass::Browser };
    SessionRecord { user: user.map(Arc::from), ..SessionRecord::new(Place::new(ip, &net, at), client) }
}

/// Polls `f` until it holds or `within` passes; returns how long it took.
pub(super) async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

#[tokio::test]
async fn a_session_bound_at_one_replica_is_known_at_the_other() {
    let Some(t) = shared("shared-store binding test") else { return };
    let cfg = config(&t.url, "bind");
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let k = key(1);
    let t0 = now();
    let rec = record(t0, Some("alice"), "SE");
    let mut baseline = UserBaseline::default();
    baseline.learn(&rec.last, rec.client);
    let alice: Arc<str> = Arc::from("alice");
    a.store(k, rec.clone(), Some((&alice, &baseline))).await.unwrap();
    a.index_session(&alice, k).await.unwrap();
    let seen = b.load(&k, None, t0).await.unwrap();
    assert_eq!(seen.record.as_ref(), Some(&rec), "B sees A's binding");
    assert_eq!(seen.baseline, Some(baseline), "and the user's baseline, through the record's user");
    assert!(!seen.revoked && !seen.history_lost);
    // A replay at B from abroad is judged against A's binding: B's view of it is A's.
    let listed = b.sessions_of("alice").await.unwrap();
    assert_eq!(listed.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![k]);
    // Never seen anywhere: a first sight, not a lost history.
    let fresh = b.load(&key(2), Some("alice"), t0).await.unwrap();
    assert!(fresh.record.is_none() && !fresh.history_lost && fresh.baseline == Some(baseline));
}

#[tokio::test]
async fn a_revocation_at_one_replica_refuses_at_the_other_within_a_second() {
    let Some(t) = shared("shared-store revocation test") else { return };
    let cfg = RedisConfig { cache_ttl: Duration::from_secs(60), ..config(&t.url, "revoke") };
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let k = key(1);
    let t0 = now();
    a.store(k, record(t0, Some("bob"), "SE"), None).await.unwrap();
    // B caches the session (a long cache lifetime: only the invalidation can reach it).
    assert!(b.load(&k, None, t0).await.unwrap().record.is_some());
    assert!(b.as_redis().unwrap().ping().await.is_ok());
    let mut events = b.as_redis().unwrap().subscribe();
    let revoking = a.revoke(k, t0);
    let start = Instant::now();
    assert!(revoking.await.unwrap(), "the record existed");
    let _ = eventually(Duration::from_secs(5), async || b.load(&k, None, t0).await.unwrap().revoked).await.expect("the revocation reached B");
    let took = start.elapsed();
    eprintln!("revocation propagation, revoke at A to refused at B: {took:?}");
    assert!(took < Duration::from_secs(1), "within a second: {took:?}");
    let got = eventually(Duration::from_secs(2), async || matches!(events.try_recv(), Ok(Invalidation::Revoked(x)) if x == k)).await;
    assert!(got.is_some(), "B's subscribers are told, to close the session's tunnels");

    // A user revocation reaches sessions not in the user's index, through the user mark.
    let (k2, k3) = (key(2), key(3));
    let carol: Arc<str> = Arc::from("carol");
    a.store(k2, record(t0 - 10, Some("carol"), "SE"), None).await.unwrap();
    a.index_session(&carol, k2).await.unwrap();
    a.store(k3, record(t0 - 10, Some("carol"), "SE"), None).await.unwrap();
    assert!(b.load(&k3, None, t0).await.unwrap().record.is_some());
    let revoked = a.revoke_user("carol", t0).await.unwrap();
    assert!(revoked.contains(&k2));
    for k in [k2, k3] {
        assert!(eventually(Duration::from_secs(5), async || b.load(&k, None, t0).await.unwrap().revoked).await.is_some(), "{k} revoked at B");
    }
    // A new session of theirs afterwards binds normally.
    let k4 = key(4);
    a.store(k4, record(t0 + 1, Some("carol"), "SE"), None).await.unwrap();
    let l = b.load(&k4, None, t0 + 1).await.unwrap();
    assert!(!l.revoked && l.record.is_some());
}

#[tokio::test]
async fn a_step_up_demand_from_one_replica_survives_a_plain_request_at_the_other() {
    let Some(t) = shared("shared-store merge test") else { return };
    let cfg = config(&t.url, "merge");
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let k = key(1);
    let t0 = now();
    let base = record(t0, Some("dan"), "SE");
    a.store(k, base.clone(), None).await.unwrap();
    let stale = b.load(&k, None, t0).await.unwrap().record.unwrap();
    // A demands a step-up (a request from abroad)...
    a.store(k, SessionRecord { step_up_pending: true, step_up_failures: 1, ..base.clone() }, None).await.unwrap();
    // ...while B, from what it loaded before, writes a plain request from another network.
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    let moved = SessionRecord { last: Place::new(ip, &NetInfo::unknown(), t0 + 1), previous: Some(stale.last.into()), ..stale };
    b.store(k, moved, None).await.unwrap();
    let c = replica(&cfg).await;
    let now_ = c.load(&k, None, t0 + 1).await.unwrap().record.unwrap();
    assert!(now_.step_up_pending, "the demand stands");
    assert_eq!(now_.step_up_failures, 1, "and the failure count");
    assert_eq!(now_.last.at, t0 + 1, "the rest of B's write landed");
    // A completed step-up (a newer authentication) clears it.
    let done = SessionRecord { authenticated_at: Moment::at(t0 + 2), step_up_pending: false, step_up_failures: 0, ..now_ };
    b.store(k, done, None).await.unwrap();
    let cleared = replica(&cfg).await.load(&k, None, t0 + 2).await.unwrap().record.unwrap();
    assert!(!cleared.step_up_pending && cleared.step_up_failures == 0);
    // An owner learned at one replica survives a write from what the other loaded before.
    let k2 = key(2);
    let nobody = record(t0, None, "SE");
    a.store(k2, nobody.clone(), None).await.unwrap();
    let stale = b.load(&k2, None, t0).await.unwrap().record.unwrap();
    a.store(k2, SessionRecord { user: Some("erin".into()), ..nobody }, None).await.unwrap();
    b.store(k2, SessionRecord { last: Place::new(ip, &NetInfo::unknown(), t0 + 1), ..stale }, None).await.unwrap();
    let owned = replica(&cfg).await.load(&k2, None, t0 + 1).await.unwrap().record.unwrap();
    assert_eq!((owned.user.as_deref(), owned.last.at), (Some("erin"), t0 + 1), "the owner stands, the write landed");
    // A replica that thought the session new cannot replace its binding.
    let newer = record(t0 + 5, Some("dan"), "BR");
    let d = replica(&cfg).await;
    d.store(k, newer, None).await.unwrap();
    let kept = replica(&cfg).await.load(&k, None, t0 + 5).await.unwrap().record.unwrap();
    assert_eq!(kept.created, t0, "the first binding stands");
}

#[tokio::test]
async fn a_device_binding_from_one_replica_survives_a_write_from_what_the_other_loaded_before() {
    use tether::session::device::{DeviceAlg, DeviceBinding, DeviceKey};
    let Some(t) = shared("shared-store device binding test") else { return };
    let cfg = config(&t.url, "device");
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let k = key(1);
    let t0 = now();
    let base = record(t0, None, "SE");
    a.store(k, base.clone(), None).await.unwrap();
    let stale = b.load(&k, None, t0).await.unwrap().record.unwrap();
    let device = DeviceBinding { key: DeviceKey { alg: DeviceAlg::Es256, bytes: vec![7; 64].into(), split: 32 }, registered: t0, demanded: 0 };
    let mut bound = base;
    bound.set_device(Some(device.clone()));
    a.store(k, bound, None).await.unwrap();
    // B, from what it loaded before the registration, writes a plain request.
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    b.store(k, SessionRecord { last: Place::new(ip, &NetInfo::unknown(), t0 + 1), ..stale }, None).await.unwrap();
    let got = replica(&cfg).await.load(&k, None, t0 + 1).await.unwrap().record.unwrap();
    assert_eq!(got.device(), Some(&device), "once bound, bound: the key stands");
    assert_eq!(got.last.at, t0 + 1, "the rest of B's write landed");
}

#[tokio::test]
async fn a_challenge_stored_at_one_replica_is_taken_once_at_the_other() {
    let Some(t) = shared("shared-store challenge test") else { return };
    let cfg = config(&t.url, "challenge");
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let (ca, cb) = (a.as_redis().unwrap().challenges(), b.as_redis().unwrap().challenges());
    let session = key(1);
    let pending = tether::stepup::Pending {
        kind: tether::stepup::challenge::Kind::StepUp,
        session,
        user: Some(Arc::from("erin")),
        verifier: "v".repeat(43),
        nonce: "n".repeat(22),
        return_to: Some("/admin".into()),
        redirect_uri: "https://admin.example/.tether/callback".into(),
        created: now(),
    };
    let value = tether::stepup::wire::encode_pending(&pending).unwrap();
    ca.put(&[1; 16], &session, value.clone(), 600, 2).await.unwrap();
    let got = cb.take(&[1; 16]).await.unwrap().expect("taken at B");
    let back = tether::stepup::wire::decode_pending(&got).unwrap();
    assert_eq!((back.session, back.nonce.as_str()), (session, pending.nonce.as_str()));
    assert!(ca.take(&[1; 16]).await.unwrap().is_none(), "single use, whichever replica asks");
    // The per-session bound: a third replaces the oldest.
    for id in 2..=4u8 {
        ca.put(&[id; 16], &session, value.clone(), 600, 2).await.unwrap();
    }
    assert!(cb.take(&[2; 16]).await.unwrap().is_none(), "the oldest gave way");
    assert!(cb.take(&[3; 16]).await.unwrap().is_some());
    // A success clears the siblings.
    cb.clear_session(&session).await.unwrap();
    assert!(ca.take(&[4; 16]).await.unwrap().is_none());
    // Back-channel logout ids: once across replicas.
    assert!(a.as_redis().unwrap().remember_logout("jti-1").await.unwrap());
    assert!(!b.as_redis().unwrap().remember_logout("jti-1").await.unwrap(), "a replay at the other replica");
}

#[tokio::test]
async fn revocations_survive_a_restart_of_every_replica() {
    let Some(t) = shared("shared-store restart test") else { return };
    let cfg = config(&t.url, "restart");
    let t0 = now();
    let (k, kept) = (key(1), key(2));
    {
        let (a, b) = (replica(&cfg).await, replica(&cfg).await);
        a.store(k, record(t0, None, "SE"), None).await.unwrap();
        b.store(kept, record(t0, Some("fay"), "SE"), None).await.unwrap();
        a.revoke(k, t0).await.unwrap();
    }
    let c = replica(&cfg).await;
    assert!(c.load(&k, None, t0 + 60).await.unwrap().revoked);
    assert!(c.load(&kept, None, t0 + 60).await.unwrap().record.is_some(), "and bindings");
    // A session the user index lists but whose record vanished early (evicted) is a
    // lost history, not a first sight.
    let fay: Arc<str> = Arc::from("fay");
    c.index_session(&fay, kept).await.unwrap();
    let mut conn = redis::Client::open(t.url.as_str()).unwrap().get_connection().unwrap();
    let _: i64 = redis::cmd("DEL").arg(format!("{}s:{}", cfg.key_prefix, kept)).query(&mut conn).unwrap();
    let d = replica(&cfg).await;
    let l = d.load(&kept, Some("fay"), t0 + 60).await.unwrap();
    assert!(l.record.is_none() && l.history_lost);
}

#[tokio::test]
async fn of_two_registrations_racing_at_two_replicas_the_first_key_stays_and_outlives_an_idle_out() {
    use tether::session::device::{DeviceAlg, DeviceBinding, DeviceKey};
    use tether::session::Bind;
    let Some(t) = shared("shared-store device race test") else { return };
    let cfg = config(&t.url, "devrace");
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let k = key(1);
    let t0 = now();
    let base = record(t0, None, "SE");
    a.store(k, base.clone(), None).await.unwrap();
    // Both replicas loaded the session unbound; each registers a key of its own.
    let seen_at_b = b.load(&k, None, t0).await.unwrap().record.unwrap();
    let binding = |byte: u8| DeviceBinding { key: DeviceKey { alg: DeviceAlg::Es256, bytes: vec![byte; 64].into(), split: 32 }, registered: t0, demanded: 0 };
    assert_eq!(a.bind_device(k, base, binding(1), t0).await.unwrap(), Bind::Written);
    assert_eq!(b.bind_device(k, seen_at_b, binding(2), t0).await.unwrap(), Bind::Kept, "the second registration is told it lost");
    let got = replica(&cfg).await.load(&k, None, t0).await.unwrap().record.unwrap();
    assert_eq!(got.device().map(|d| d.key.bytes[0]), Some(1), "the first key stands");
    // A demand recorded later is a write the binding allows.
    let mut demanded = got.clone();
    demanded.set_device(Some(DeviceBinding { demanded: t0 + 5, ..binding(1) }));
    b.store(k, demanded, None).await.unwrap();
    let got = replica(&cfg).await.load(&k, None, t0).await.unwrap().record.unwrap();
    assert_eq!(got.device().map(|d| (d.key.bytes[0], d.demanded)), Some((1, t0 + 5)));
    // Redis lets the bound session idle out: its cookie, back later, is a lost history.
    let mut conn = redis::Client::open(t.url.as_str()).unwrap().get_connection().unwrap();
    let _: i64 = redis::cmd("DEL").arg(format!("{}s:{}", cfg.key_prefix, k)).query(&mut conn).unwrap();
    let l = replica(&cfg).await.load(&k, None, t0 + 1).await.unwrap();
    assert!(l.record.is_none() && l.history_lost, "not a first sight");
}

#[tokio::test]
async fn a_binding_that_cannot_reach_redis_is_an_error() {
    use tether::session::device::{DeviceAlg, DeviceBinding, DeviceKey};
    let Some(t) = private("shared-store binding fault test", &[]) else { return };
    let server = t._server.as_ref().unwrap();
    let cfg = RedisConfig { command_timeout: Duration::from_millis(200), ..config(&t.url, "devfault") };
    let a = replica(&cfg).await;
    let k = key(1);
    let t0 = now();
    a.store(k, record(t0, None, "SE"), None).await.unwrap();
    let loaded = a.load(&k, None, t0).await.unwrap().record.unwrap();
    server.signal("-STOP");
    let binding = DeviceBinding { key: DeviceKey { alg: DeviceAlg::Es256, bytes: vec![1; 64].into(), split: 32 }, registered: t0, demanded: 0 };
    let r = a.bind_device(k, loaded, binding, t0).await;
    server.signal("-CONT");
    assert!(matches!(r, Err(StoreError::Degraded)), "a binding held in one cache alone is no binding: {r:?}");
}

#[tokio::test]
async fn a_frozen_redis_degrades_within_the_timeout_and_recovers() {
    let Some(t) = private("shared-store fault test", &[]) else { return };
    let server = t._server.as_ref().unwrap();
    let cfg = RedisConfig {
        command_timeout: Duration::from_millis(200),
        cache_ttl: Duration::from_millis(100),
        ..config(&t.url, "fault")
    };
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let t0 = now();
    let (known, revoked, unknown) = (key(1), key(2), key(3));
    a.store(known, record(t0, Some("gus"), "SE"), None).await.unwrap();
    a.store(revoked, record(t0, None, "SE"), None).await.unwrap();
    assert!(b.load(&known, None, t0).await.unwrap().record.is_some());
    assert!(b.load(&revoked, None, t0).await.unwrap().record.is_some());
    a.revoke(revoked, t0).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || b.load(&revoked, None, t0).await.unwrap().revoked).await.is_some());
    tokio::time::sleep(Duration::from_millis(150)).await;

    server.signal("-STOP");
    let before = b.as_redis().unwrap().degraded_operations();
    macro_rules! timed {
        ($what:expr, $body:expr) => {{
            let s = Instant::now();
            let out = $body;
            let took = s.elapsed();
            eprintln!("frozen Redis: {} answered in {took:?}", $what);
            assert!(took < Duration::from_millis(1500), "{} bounded: {took:?}", $what);
            out
        }};
    }
    let cached = timed!("cached session", b.load(&known, None, t0).await.unwrap());
    assert!(cached.record.is_some(), "what the cache knows holds");
    assert!(timed!("cached revocation", b.load(&revoked, None, t0).await.unwrap()).revoked, "a revocation still refuses");
    let blind = timed!("unknown session", b.load(&unknown, None, t0).await);
    assert!(matches!(blind, Err(StoreError::Degraded)), "judge by network-only rules");
    // What B decided blind is not written back.
    timed!("blind store", b.store(unknown, record(t0, None, "BR"), None).await.unwrap());
    let r = timed!("revoke", a.revoke(known, t0).await);
    assert!(matches!(r, Err(StoreError::Degraded)), "the revoke says it was not shared");
    assert!(a.load(&known, None, t0).await.unwrap().revoked, "a revoke that could not be shared holds here");
    assert!(b.as_redis().unwrap().degraded_operations() > before, "counted");
    assert!(b.as_redis().unwrap().health().degraded);

    server.signal("-CONT");
    let took = eventually(Duration::from_secs(10), async || b.load(&unknown, None, t0).await.is_ok()).await.expect("recovered");
    eprintln!("recovery after SIGCONT: {took:?}");
    assert!(b.load(&unknown, None, t0).await.unwrap().record.is_none(), "the blind judgement was never stored");
    // Shared again: a binding at B is seen at A.
    let k = key(4);
    b.store(k, record(t0, None, "SE"), None).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || a.load(&k, None, t0).await.is_ok_and(|l| l.record.is_some())).await.is_some());
    assert!(!b.as_redis().unwrap().health().degraded);
}

#[tokio::test]
async fn revocations_survive_redis_filling_up() {
    let Some(t) = private("shared-store maxmemory test", &["--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"]) else { return };
    let cfg = RedisConfig { command_timeout: Duration::from_secs(2), ..config(&t.url, "full") };
    let a = replica(&cfg).await;
    let t0 = now();
    let revoked: Vec<SessionKey> = (0..200).map(|i| key(1_000_000 + i)).collect();
    for k in &revoked {
        a.revoke(*k, t0).await.unwrap();
    }
    // Fill well past maxmemory with sessions (each with a TTL, so evictable).
    let mut conn = redis::Client::open(t.url.as_str()).unwrap().get_connection().unwrap();
    let evicted = |conn: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(conn).unwrap();
        info.lines().find_map(|l| l.strip_prefix("evicted_keys:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let mut i = 0u32;
    while evicted(&mut conn) < 1000 && i < 200_000 {
        for _ in 0..500 {
            a.store(key(i), record(t0, Some("filler"), "SE"), None).await.unwrap();
            i += 1;
        }
    }
    let n = evicted(&mut conn);
    eprintln!("maxmemory 4mb: {i} sessions written, {n} keys evicted");
    assert!(n >= 1000, "Redis evicted under pressure");
    let fresh = replica(&cfg).await;
    fresh.sweep(t0).await;
    assert_eq!(fresh.counts().revocations, 200);
    assert!(fresh.counts().evictions >= 1000, "evictions reported for metrics");
    for k in &revoked {
        assert!(fresh.load(k, None, t0).await.unwrap().revoked, "{k}: a revocation was evicted");
    }
}

#[tokio::test]
async fn tls_with_a_private_ca_a_password_file_and_an_acl_user() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, tls_key, password) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("password"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&tls_key, ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(&password, "s3cret\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = std::env::var("TETHER_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let child = Command::new(bin)
        .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&tls_key)
        .arg("--tls-ca-cert-file")
        .arg(&cert)
        .args(["--tls-auth-clients", "no", "--user", "tether", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        let _ = unavailable("shared-store TLS test");
        return;
    };
    let _server = Server { child, url: String::new(), _dir: tempfile::tempdir().unwrap() };
    let cfg = RedisConfig {
        url: format!("rediss://localhost:{port}"),
        ca_file: Some(cert.clone()),
        password_file: Some(password.clone()),
        username: Some("tether".into()),
        ..config("", "tls")
    };
    let store = Store::redis(cfg.clone(), limits()).await.unwrap();
    let r = store.as_redis().unwrap();
    assert!(eventually(Duration::from_secs(10), async || r.ping().await.is_ok()).await.is_some(), "TLS, ACL user and password accepted");
    let k = key(42);
    let t0 = now();
    store.store(k, record(t0, None, "SE"), None).await.unwrap();
    assert!(store.load(&k, None, t0).await.unwrap().record.is_some());
    // A wrong password is refused (and counted), not a crash.
    std::fs::write(&password, "wrong\n").unwrap();
    let bad = Store::redis(cfg, limits()).await.unwrap();
    assert!(bad.as_redis().unwrap().ping().await.is_err());
    assert!(matches!(bad.load(&k, None, t0).await, Err(StoreError::Degraded)));
}

#[tokio::test]
async fn a_redis_restart_is_survived_by_reconnecting_and_resubscribing() {
    let Some(mut t) = private("shared-store restart-of-Redis test", &[]) else { return };
    let cfg = RedisConfig { command_timeout: Duration::from_millis(200), ..config(&t.url, "bounce") };
    let (a, b) = (replica(&cfg).await, replica(&cfg).await);
    let t0 = now();
    let k = key(1);
    a.store(k, record(t0, None, "SE"), None).await.unwrap();
    assert!(b.load(&k, None, t0).await.unwrap().record.is_some());
    let port: u16 = t.url.rsplit(':').next().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    drop(t._server.take());
    let deaf = eventually(Duration::from_secs(3), async || !b.as_redis().unwrap().is_listening()).await;
    eprintln!("B noticed the lost subscription after {deaf:?}");
    // Stopped: unknown sessions degrade, within the bound; nothing panics.
    let s = Instant::now();
    assert!(matches!(a.load(&key(2), None, t0).await, Err(StoreError::Degraded)));
    eprintln!("stopped Redis: unknown session answered in {:?}", s.elapsed());
    let bin = std::env::var("TETHER_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut again = Server::on_port(&bin, port, &dir, &[]).expect("restarted");
    assert!(again.ready());
    let took = eventually(Duration::from_secs(15), async || {
        a.as_redis().unwrap().ping().await.is_ok() && b.as_redis().unwrap().is_listening()
    })
    .await
    .expect("both replicas reconnected and B listens again");
    eprintln!("reconnected after the Redis restart in {took:?}");
    // Shared again, invalidations included.
    b.store(k, record(t0, None, "SE"), None).await.unwrap();
    assert!(b.load(&k, None, t0).await.unwrap().record.is_some());
    a.revoke(k, t0).await.unwrap();
    assert!(eventually(Duration::from_secs(1), async || b.load(&k, None, t0).await.unwrap().revoked).await.is_some());
}
