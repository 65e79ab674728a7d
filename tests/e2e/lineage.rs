//! Cookie lineage end to end: browsers modelled as cookie jars that apply each answer's
//! `Set-Cookie`, against a running tether (and two replicas on one Redis). A copy of a
//! jar used beside the original is caught within one rotation, a thief holding only the
//! session cookie on the first request, and the owner's own tabs — in parallel, across
//! many rotations, losing some answers — never.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use super::redis::{eventually, rand_u32, shared};
use super::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const NAME: &str = "__Host-tether-lineage";
/// The owner's home network in the fixtures; the thief uses it too (the careful thief).
const HOME: &str = "127.0.0.1";
/// Short, so a test spans several rotations in seconds.
const LINEAGE: &str = "[lineage]\nenabled = true\nrotate_every = \"2s\"\ngrace = \"1s\"\n";

/// A browser's cookie jar: the console's session cookie, and the companion value the
/// last answer that set one set (shared by every tab of the browser).
#[derive(Clone)]
struct Jar {
    session: String,
    lineage: Arc<Mutex<Option<String>>>,
}

impl Jar {
    fn new(session: &str) -> Jar {
        Jar { session: session.to_owned(), lineage: Arc::new(Mutex::new(None)) }
    }

    /// Another jar holding the same cookies (a stolen copy).
    fn copy(&self) -> Jar {
        Jar { session: self.session.clone(), lineage: Arc::new(Mutex::new(self.value())) }
    }

    fn value(&self) -> Option<String> {
        self.lineage.lock().unwrap().clone()
    }

    fn cookie(&self) -> String {
        match self.value() {
            Some(v) => format!("session={}; {NAME}={v}", self.session),
            None => format!("session={}", self.session),
        }
    }

    /// Stores the companion an answer sets, as a browser does.
    fn apply(&self, headers: &http::HeaderMap) {
        for c in headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            if let Some(rest) = c.strip_prefix(&format!("{NAME}=")) {
                assert!(c.contains("; Secure") && c.contains("; HttpOnly") && c.contains("; SameSite=None") && c.contains("; Path=/"), "{c}");
                *self.lineage.lock().unwrap() = Some(rest.split(';').next().unwrap().to_owned());
            }
        }
    }
}

/// One API request of the jar's browser from `src`; the answer's companion is applied
/// unless `lose` (an answer lost on the way). Returns the status.
async fn visit(t: &Tether, src: &str, jar: &Jar, lose: bool) -> u16 {
    let req = get(t, "/app")
        .header("cookie", jar.cookie())
        .header("user-agent", CHROME)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = h1_from(t, src, req).await;
    if parts.status == 200 {
        let echo = json(&body);
        let cookies = seen(&echo, "cookie");
        assert_eq!(cookies, [format!("session={}", jar.session)], "the upstream never sees the companion");
    }
    if !lose {
        jar.apply(&parts.headers);
    }
    parts.status.as_u16()
}

async fn lineage_total(t: &Tether, outcome: &str) -> f64 {
    t.metric(&format!("tether_lineage_total{{outcome=\"{outcome}\"}}")).await
}

async fn start() -> Tether {
    let up = spawn_upstream(None).await;
    start_tls(&format!("http://{up}"), "", &format!("{}{LINEAGE}", detector_sections("enforce", ""))).await
}

/// The owner's first two requests: a value issued, then back (the lineage is armed).
async fn arm(t: &Tether, jar: &Jar) {
    assert_eq!(visit(t, HOME, jar, false).await, 200);
    assert!(jar.value().is_some(), "a first value is issued with the first answer");
    assert_eq!(visit(t, HOME, jar, false).await, 200);
}

#[tokio::test]
async fn a_thief_with_only_the_session_cookie_is_caught_on_the_first_request() {
    let t = start().await;
    let owner = Jar::new("victim-cookie-1");
    arm(&t, &owner).await;
    // Same address, same client, no companion.
    let thief = Jar::new("victim-cookie-1");
    assert_eq!(visit(&t, HOME, &thief, false).await, 401);
    let lines = audit_until(&t, |l| l.iter().any(|e| e["event"] == "decision" && e["action"] == "step_up")).await;
    let decision = lines.iter().find(|e| e["event"] == "decision").unwrap();
    assert_eq!(decision["reasons"], serde_json::json!(["lineage_missing"]));
    let text = std::fs::read_to_string(t.certs.dir.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains(owner.value().unwrap().as_str()), "no companion value reaches the audit log");
    // The owner is not disturbed.
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    assert_eq!(lineage_total(&t, "missing").await, 1.0);

    // `hunt` finds the session by the signal, though no address gives it away.
    let audit = t.certs.dir.path().join("audit.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether")).args(["hunt", "--json", "--signal", "session_forked", "--signal", "lineage_missing"]).arg(&audit).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sessions"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["sessions"][0]["signals"], serde_json::json!(["lineage_missing"]));
    // `replay` of the audit log carries the verdict (its value is never logged).
    let snap = t.running.shared.snapshot();
    let mut replayer = tether::offline::replay::Replayer::new(&snap.detector, snap.intel.as_deref(), tether::session::StoreLimits::default());
    let mut replayed = Vec::new();
    for (n, line) in std::fs::read_to_string(&audit).unwrap().lines().enumerate() {
        replayed.extend(replayer.line(n + 1, line).await);
    }
    assert!(replayed.iter().any(|o| o.action == "step_up" && o.reasons == ["lineage_missing"]), "{replayed:?}");
}

#[tokio::test]
async fn a_copy_of_the_jar_is_caught_within_one_rotation_on_a_moving_clock() {
    let t = start().await;
    let clock = &t.running.shared.clock;
    let owner = Jar::new("victim-cookie-2");
    arm(&t, &owner).await;
    let thief = owner.copy();
    // Both use it; nothing to tell them apart yet.
    assert_eq!(visit(&t, HOME, &thief, false).await, 200);
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    // A rotation: the owner's request carries it, the thief's copy is now the previous value,
    // still good while the new one has not come back.
    clock.shift(3);
    let before = owner.value();
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    assert_ne!(owner.value(), before, "rotated");
    assert_eq!(visit(&t, HOME, &thief, false).await, 200, "the previous value, the new one not yet back");
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    // Grace after the new value came back: the copy is caught.
    clock.shift(2);
    assert_eq!(visit(&t, HOME, &thief, false).await, 401);
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    assert_eq!(lineage_total(&t, "forked").await, 1.0);
    assert!(lineage_total(&t, "rotated").await >= 1.0);
    audit_until(&t, |l| l.iter().any(|e| e["event"] == "decision" && e["reasons"] == serde_json::json!(["session_forked"]))).await;

    // An answer lost on the way: the owner keeps presenting the value it holds, which
    // stays good, and is offered another once a whole rotation has gone by.
    let lost = Jar::new("victim-cookie-3");
    arm(&t, &lost).await;
    clock.shift(3);
    let held = lost.value();
    assert_eq!(visit(&t, HOME, &lost, true).await, 200, "rotated, but the answer is lost");
    assert_eq!(lost.value(), held);
    assert_eq!(visit(&t, HOME, &lost, false).await, 200, "the held value, its successor never back");
    clock.shift(3);
    assert_eq!(visit(&t, HOME, &lost, false).await, 200);
    assert_ne!(lost.value(), held, "a new value issued beside the held one");
    assert_eq!(visit(&t, HOME, &lost, false).await, 200);
    assert_eq!(lineage_total(&t, "forked").await, 1.0, "no false fork");

    // A thief who races each rotation and drops the new value, so that both copies keep
    // the old one: a rotation and one re-issue are believed as lost answers, a second
    // re-issue in a row is not.
    let owner = Jar::new("victim-cookie-5");
    arm(&t, &owner).await;
    let thief = owner.copy();
    for round in 0..2 {
        clock.shift(3);
        assert_eq!(visit(&t, HOME, &thief, true).await, 200, "round {round}: a rotation, then a re-issue, dropped");
        assert_eq!(visit(&t, HOME, &owner, false).await, 200, "round {round}: the owner's held value stays good meanwhile");
    }
    clock.shift(3);
    assert_eq!(visit(&t, HOME, &thief, true).await, 401, "a second lost answer in a row is not believed");
    // Both copies hold the old value now: the owner is challenged too, and the step-up
    // starts a new lineage only the owner gets.
    assert_eq!(visit(&t, HOME, &owner, false).await, 401);
    assert_eq!(lineage_total(&t, "forked").await, 3.0);
}

#[tokio::test]
async fn a_cloned_jar_used_in_parallel_with_the_original_is_caught_within_one_rotation() {
    let t = Arc::new(start().await);
    let owner = Jar::new("victim-cookie-4");
    arm(&t, &owner).await;
    let thief = owner.copy();
    let started = Instant::now();
    let caught = Arc::new(Mutex::new(None::<(&'static str, Duration)>));
    let run = |who: &'static str, jar: Jar| {
        let (t, caught) = (t.clone(), caught.clone());
        tokio::spawn(async move {
            while caught.lock().unwrap().is_none() && started.elapsed() < Duration::from_secs(15) {
                if visit(&t, HOME, &jar, false).await == 401 {
                    caught.lock().unwrap().get_or_insert((who, started.elapsed()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (a, b) = (run("owner", owner), run("thief", thief));
    let _ = tokio::join!(a, b);
    let caught = *caught.lock().unwrap();
    let (who, after) = caught.expect("the copy was never told apart");
    // One rotation (2 s) plus grace (1 s) and the time both need to come back.
    assert!(after < Duration::from_secs(6), "{who} caught after {after:?}");
    // Whichever copy lost the race is the one challenged; the step-up is what tells the
    // owner from the thief.
    eprintln!("lineage: the {who}'s copy was caught {after:?} after the clone was first used");
    assert!(lineage_total(&t, "forked").await >= 1.0);
}

/// Several tabs of one browser: requests in parallel across many rotations, some of
/// their answers lost. Never a fork, never a missing value.
async fn tabs(replicas: &[Arc<Tether>], jar: &Jar, tabs: usize, run_for: Duration) -> (usize, Vec<u16>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut handles = Vec::new();
    for tab in 0..tabs {
        let replica = replicas[tab % replicas.len()].clone();
        let (jar, sent, refused) = (jar.clone(), sent.clone(), refused.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0usize;
            while started.elapsed() < run_for {
                n += 1;
                // One answer in twenty is lost (a tab closed, a network drop).
                let lose = (n + tab) % 20 == 3;
                let status = visit(&replica, HOME, &jar, lose).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    refused.lock().unwrap().push(status);
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    (sent.load(Ordering::Relaxed), refused)
}

#[tokio::test]
async fn parallel_tabs_across_many_rotations_never_fork() {
    let t = Arc::new(start().await);
    let jar = Jar::new("owner-cookie-tabs");
    arm(&t, &jar).await;
    let (sent, refused) = tabs(std::slice::from_ref(&t), &jar, 8, Duration::from_secs(9)).await;
    assert!(refused.is_empty(), "{} of {sent} requests refused: {refused:?}", refused.len());
    assert!(sent >= 300, "hundreds of requests: {sent}");
    let rotated = lineage_total(&t, "rotated").await;
    assert!(rotated >= 3.0, "many rotations: {rotated}");
    assert_eq!((lineage_total(&t, "forked").await, lineage_total(&t, "missing").await), (0.0, 0.0));
    eprintln!("lineage: {sent} requests from 8 tabs, {rotated} rotations, {} answered from the previous value", lineage_total(&t, "previous").await);
}

#[tokio::test]
async fn two_replicas_on_redis_share_one_lineage() {
    let Some(redis) = shared("lineage replica test") else { return };
    let dir = tempfile::tempdir().unwrap();
    let key: String = (0..32).map(|_| format!("{:02x}", rand_u32() as u8)).collect();
    std::fs::write(dir.path().join("session.key"), format!("{key}\n")).unwrap();
    let prefix = format!("t{:08x}:lineage:", rand_u32());
    let replica = async || {
        let up = spawn_upstream(None).await;
        let session = format!("[session]\ncookies = [\"session\"]\nhash_key_file = \"{}\"\n", dir.path().join("session.key").display());
        let sections = detector_sections("enforce", "").replace("[session]\ncookies = [\"session\"]\n", &session);
        let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\n", redis.url);
        let t = start_tls(&format!("http://{up}"), "", &format!("{sections}{LINEAGE}{store}")).await;
        let r = t.running.shared.store.as_redis().expect("the shared store");
        assert!(eventually(Duration::from_secs(10), async || r.is_listening()).await.is_some());
        t
    };
    let (a, b) = (Arc::new(replica().await), Arc::new(replica().await));

    // One browser whose tabs land on either replica: no false fork across rotations.
    let jar = Jar::new("owner-cookie-replicas");
    arm(&a, &jar).await;
    let (sent, refused) = tabs(&[a.clone(), b.clone()], &jar, 6, Duration::from_secs(7)).await;
    assert!(refused.is_empty(), "{} of {sent} requests refused: {refused:?}", refused.len());
    let rotated = lineage_total(&a, "rotated").await + lineage_total(&b, "rotated").await;
    assert!(rotated >= 2.0, "rotations at either replica: {rotated}");
    for t in [&a, &b] {
        assert_eq!((lineage_total(t, "forked").await, lineage_total(t, "missing").await), (0.0, 0.0));
    }

    // A copy used at the other replica than the owner: caught within one rotation.
    let thief = jar.copy();
    let started = Instant::now();
    let mut caught = None;
    while caught.is_none() && started.elapsed() < Duration::from_secs(10) {
        if visit(&a, HOME, &jar, false).await == 401 {
            caught = Some("owner");
        }
        if visit(&b, HOME, &thief, false).await == 401 {
            caught = caught.or(Some("thief"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let who = caught.expect("the copy at the other replica was never told apart");
    assert!(started.elapsed() < Duration::from_secs(7), "{who} caught after {:?}", started.elapsed());
    // And one holding only the session cookie, at either replica, on its first request.
    let bare = Jar::new("owner-cookie-replicas");
    assert_eq!(visit(&b, HOME, &bare, false).await, 401);
}

/// A browser navigation of the jar's browser, its user named by the trusted auth layer
/// (so a step-up can unlock the session); the answer's companion is applied.
async fn navigate(t: &Tether, jar: &Jar, path: &str) -> http::response::Parts {
    let req = get(t, path)
        .header("cookie", jar.cookie())
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .header("x-user", "alice")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, _) = h1_from(t, HOME, req).await;
    jar.apply(&parts.headers);
    parts
}

#[tokio::test]
async fn a_completed_step_up_starts_a_new_lineage_only_the_owner_holds() {
    let Some(idp) = super::idp::idp() else { return };
    let _flow = super::idp::FLOW.lock().await;
    let up = spawn_upstream(None).await;
    let sections = with_step_up(&detector_sections("enforce", ""), &super::idp::step_up_section(idp, super::idp::SECRET_CLIENT, ""))
        .replace("[session]\n", "[session]\nuser_header = \"x-user\"\n");
    let t = start_tls(&format!("http://{up}"), "trusted_proxies = [\"127.0.0.1\"]", &format!("{sections}{LINEAGE}")).await;
    let clock = &t.running.shared.clock;
    let owner = Jar::new("victim-cookie-6");
    for _ in 0..2 {
        assert_eq!(navigate(&t, &owner, "/").await.status, 200);
    }
    // The thief wins the race to the next rotation: the owner is the copy left behind.
    let thief = owner.copy();
    clock.shift(3);
    assert_eq!(navigate(&t, &thief, "/").await.status, 200);
    assert_eq!(navigate(&t, &thief, "/").await.status, 200);
    clock.shift(2);
    let parts = navigate(&t, &owner, "/projects").await;
    assert_eq!(parts.status, 303, "the owner's copy is the forked one");
    let authorize = parts.headers["location"].to_str().unwrap().to_owned();
    // The owner proves themselves; the callback's answer carries a new value.
    let callback = super::idp::Browser::default().login(idp, &authorize, "alice", None, None).await;
    let before = owner.value();
    let parts = navigate(&t, &owner, callback.strip_prefix("https://tether.test").unwrap()).await;
    assert_eq!(parts.status, 303, "callback");
    assert_ne!(owner.value(), before, "a new lineage, set on the callback's redirect");
    // The owner's other tabs still hold the value the thief had raced to: good until the
    // new one is back, and for grace after.
    let tab = owner.copy();
    *tab.lineage.lock().unwrap() = thief.value();
    assert_eq!(navigate(&t, &tab, "/projects").await.status, 200, "a tab's request in flight across the step-up");
    assert_eq!(navigate(&t, &owner, "/projects").await.status, 200);
    assert_eq!(navigate(&t, &owner, "/projects").await.status, 200);
    // Once grace is over every earlier value is void: the thief's is caught again.
    clock.shift(2);
    assert_eq!(navigate(&t, &thief, "/projects").await.status, 303);
    assert_eq!(lineage_total(&t, "forked").await, 2.0);
}

#[tokio::test]
async fn two_replicas_racing_one_change_in_redis_one_wins() {
    use tether::session::lineage::{Lineage, DIGEST_LEN};
    use tether::session::redis::RedisConfig;
    use tether::session::{SessionKey, Store, StoreLimits};
    let Some(redis) = shared("lineage swap test") else { return };
    let prefix = format!("t{:08x}:swap:", rand_u32());
    let cfg = RedisConfig { url: redis.url.clone(), key_prefix: prefix.clone(), ..RedisConfig::default() };
    let limits = StoreLimits { idle_ttl: 3600, absolute_ttl: 86_400, max_sessions: 1000, max_users: 100 };
    let (a, b) = (Store::redis(cfg.clone(), limits).await.unwrap(), Store::redis(cfg, limits).await.unwrap());
    let key = SessionKey([7; 16]);
    let now = tether::session::now();
    let l = |x: u8| Lineage::new([x; DIGEST_LEN], [0; DIGEST_LEN], now, None, true);
    assert!(a.swap_lineage(&key, now, None, l(1), now).await.unwrap());
    assert!(!b.swap_lineage(&key, now, None, l(9), now).await.unwrap(), "a first issue races too");
    assert_eq!(b.lineage(&key, None).await.unwrap(), Some(l(1)));
    // Both judged on l(1), each rotating it at its own replica at once.
    for round in 0..20u8 {
        let from = a.lineage(&key, None).await.unwrap().unwrap();
        let (x, y) = tokio::join!(a.swap_lineage(&key, now, Some(&from), l(2 * round + 10), now), b.swap_lineage(&key, now, Some(&from), l(2 * round + 11), now));
        assert_eq!(u8::from(x.unwrap()) + u8::from(y.unwrap()), 1, "round {round}: exactly one rotation wins");
        let held = b.lineage(&key, None).await.unwrap().unwrap();
        assert!(held == l(2 * round + 10) || held == l(2 * round + 11));
        assert_eq!(a.lineage(&key, None).await.unwrap(), Some(held), "both replicas read the winner");
    }
    // The key lives as long as the session may: the record's idle lifetime slides with
    // every write, the lineage changes once a rotation, so an idle deadline set at the
    // last change could drop a live session's lineage.
    let mut raw = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(format!("{prefix}l:{}", "07".repeat(16))).query_async(&mut raw).await.unwrap();
    assert!(ttl > 3600 && ttl <= 86_400, "the session's absolute deadline, not its idle one: {ttl}");
}

/// A WebSocket of the jar's browser through tether, open and echoing.
async fn open_ws(t: &Tether, jar: &Jar) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("wss://localhost:{}/ws", t.addr().port())).unwrap();
    req.headers_mut().insert("cookie", jar.cookie().parse().unwrap());
    req.headers_mut().insert("user-agent", CHROME.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(req, tls)).await.unwrap().unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    ws
}

/// Whether the tunnel ends (a close, an error or the end of the stream) within `within`.
async fn ends_within(ws: &mut tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, within: Duration) -> bool {
    use futures_util::StreamExt;
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_fork_verdict_closes_the_sessions_open_tunnels() {
    let t = start().await;
    let owner = Jar::new("victim-cookie-ws");
    arm(&t, &owner).await;
    // A tunnel opened with the jar's value (the other copy's, for all tether can tell).
    let mut ws = open_ws(&t, &owner).await;
    assert!(!ends_within(&mut ws, Duration::from_millis(300)).await, "an allowed tunnel stays open");
    // A copy without the companion shows a second copy is alive: the tunnel goes too.
    assert_eq!(visit(&t, HOME, &Jar::new("victim-cookie-ws"), false).await, 401);
    assert!(ends_within(&mut ws, HANG_GUARD).await, "the tunnel outlived the fork verdict");
    assert_eq!(t.metric("tether_tunnels_closed_total{reason=\"revoked\"}").await, 1.0);
}

#[tokio::test]
async fn a_rotation_whose_store_answer_is_lost_still_sets_the_value_the_store_holds() {
    let Some(redis) = shared("lineage lost swap answer test") else { return };
    let up = spawn_upstream(None).await;
    // One connection, so the read after a lost answer queues behind the command whose
    // answer was lost; a cache that answers the session's loads meanwhile.
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"t{:08x}:lost:\"\ncommand_timeout = \"1s\"\npool_size = 1\ncache_ttl = \"30s\"\n", redis.url, rand_u32());
    let t = start_tls(&format!("http://{up}"), "", &format!("{}{LINEAGE}{store}", detector_sections("enforce", ""))).await;
    let r = t.running.shared.store.as_redis().expect("the shared store");
    assert!(eventually(Duration::from_secs(10), async || r.is_listening()).await.is_some());
    let owner = Jar::new("owner-cookie-lost-swap");
    arm(&t, &owner).await;
    t.running.shared.clock.shift(3);
    // Redis holds every write for longer than tether waits for one: the rotation's swap
    // times out here, and is applied when the pause ends.
    let mut raw = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("WRITE").query_async(&mut raw).await.unwrap();
    let before = owner.value();
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    assert_ne!(owner.value(), before, "the store holds the new value, so the answer carries it");
    assert_eq!(visit(&t, HOME, &owner, false).await, 200);
    assert_eq!(lineage_total(&t, "current").await, 3.0, "the new value is the current one");
}
