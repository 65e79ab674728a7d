//! Whole tether replicas sharing one Redis (from `TETHER_TEST_REDIS_URL`, or a private
//! `redis-server` where a test freezes it): a binding, a revocation and a step-up made at
//! one replica hold at the other and across restarts; a frozen Redis degrades to
//! network-only judgement without failing a request. And the embedded store's
//! revocations across a restart, through `session.state_dir`.

use std::time::{Duration, Instant};

use super::redis::{eventually, private, rand_u32, shared};
use super::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const TOKEN: &str = "0123456789abcdef-admin-token";
const HOME: &str = "127.0.0.1";
const MULLVAD: &str = "127.0.2.10";
const SYDNEY: &str = "127.0.4.20";

/// What replicas of one deployment share: the session hash key (so a cookie has one key
/// everywhere and a state signed at one replica verifies at another) and the admin token.
struct Deployment {
    dir: tempfile::TempDir,
    /// `[store]` lines, or `[session]` extras for the embedded store.
    store: String,
    session_extra: String,
}

impl Deployment {
    fn new(store: String, session_extra: String) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let key: String = (0..32).map(|_| format!("{:02x}", rand_u32() as u8)).collect();
        std::fs::write(dir.path().join("session.key"), format!("{key}\n")).unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        Deployment { dir, store, session_extra }
    }

    /// Replicas on Redis, under a key prefix of this test's own.
    fn redis(url: &str, test: &str, extra: &str) -> Deployment {
        let store = format!("[store]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"t{:08x}:{test}:\"\n{extra}\n", rand_u32());
        Deployment::new(store, String::new())
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Starts one replica (its own listeners, certificates and audit log).
    async fn replica(&self) -> Tether {
        let up = spawn_upstream(None).await;
        let session = format!("[session]\ncookies = [\"session\"]\nhash_key_file = \"{}\"\n{}", self.path("session.key"), self.session_extra);
        let sections = detector_sections("enforce", "").replace("[session]\ncookies = [\"session\"]\n", &session);
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[upstream]\nurl = \"http://{up}\"\n{sections}{}",
            self.path("admin.token"),
            self.store
        );
        let t = start_text(&text, certs()).await;
        if let Some(redis) = t.running.shared.store.as_redis() {
            let listening = eventually(Duration::from_secs(10), async || redis.is_listening()).await;
            assert!(listening.is_some(), "the replica hears the others' invalidations");
        }
        t
    }
}

fn browser(t: &Tether, cookie: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    get(t, "/app")
        .header("cookie", format!("session={cookie}"))
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap()
}

async fn status(t: &Tether, src: &str, cookie: &str) -> u16 {
    h1_from(t, src, browser(t, cookie)).await.0.status.as_u16()
}

fn key_hex(t: &Tether, cookie: &str) -> String {
    t.running.shared.snapshot().detector.hash_key.session_key(b"session", cookie.as_bytes()).hex().as_str().to_owned()
}

async fn revoke(t: &Tether, cookie: &str) {
    let (code, body) = t.admin("POST", &format!("/api/sessions/{}/revoke", key_hex(t, cookie)), Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
}

async fn admin_text(t: &Tether, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(t.running.admin_addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", "admin").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let code = resp.status().as_u16();
    (code, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

#[tokio::test]
async fn a_session_bound_at_one_replica_is_challenged_from_abroad_at_the_other() {
    let Some(r) = shared("replica binding test") else { return };
    let d = Deployment::redis(&r.url, "bind", "");
    let (a, b) = (d.replica().await, d.replica().await);
    assert_eq!(status(&a, HOME, "bound-at-a").await, 200);
    // At B the session is not new: a replay from Sydney is a new country for it.
    assert_eq!(status(&b, SYDNEY, "bound-at-a").await, 303);
    // The owner at home carries on at either replica.
    assert_eq!(status(&b, HOME, "bound-at-a").await, 200);
    assert_eq!(status(&a, HOME, "bound-at-a").await, 200);
}

#[tokio::test]
async fn a_revocation_at_one_replica_refuses_at_the_other_and_survives_restarting_both() {
    let Some(r) = shared("replica revocation test") else { return };
    let d = Deployment::redis(&r.url, "revoke", "");
    let (a, b) = (d.replica().await, d.replica().await);
    assert_eq!(status(&a, HOME, "victim").await, 200);
    // B has it cached: the revocation must reach B's cache, not only Redis.
    assert_eq!(status(&b, HOME, "victim").await, 200);
    assert_eq!(status(&b, HOME, "bystander").await, 200);
    let start = Instant::now();
    revoke(&a, "victim").await;
    let took = eventually(Duration::from_secs(10), async || status(&b, HOME, "victim").await == 403).await;
    let took = took.expect("the revocation reached the other replica");
    eprintln!("revocation at A refused at B after {took:?} ({:?} including the admin call)", start.elapsed());
    assert_eq!(status(&b, HOME, "bystander").await, 200, "only the revoked session is refused");

    a.running.shutdown().await;
    b.running.shutdown().await;
    let (a, b) = (d.replica().await, d.replica().await);
    assert_eq!(status(&a, HOME, "victim").await, 403, "still revoked after a restart");
    assert_eq!(status(&b, HOME, "victim").await, 403, "still revoked after a restart");
    assert_eq!(status(&b, HOME, "bystander").await, 200);
}

#[tokio::test]
async fn a_step_up_started_at_one_replica_completes_at_the_other() {
    let Some(r) = shared("replica step-up test") else { return };
    let d = Deployment::redis(&r.url, "stepup", "");
    let (a, b) = (d.replica().await, d.replica().await);
    assert_eq!(status(&a, HOME, "travelling").await, 200);
    let (parts, _) = h1_from(&a, MULLVAD, browser(&a, "travelling")).await;
    assert_eq!(parts.status, 303);
    let location = parts.headers["location"].to_str().unwrap();
    let state = location.split_once('?').unwrap().1.split('&').find_map(|kv| kv.strip_prefix("state=")).expect("state in the redirect").to_owned();
    let callback = |t: &Tether| {
        get(t, &format!("/.tether/callback?code=abc&state={state}"))
            .header("cookie", "session=travelling")
            .header("user-agent", CHROME)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    // B finds the challenge A issued and goes on to the code exchange, which fails only
    // because the IdP's endpoints are unreachable here (not state_replayed_or_unknown).
    let (parts, body) = h1_from(&b, MULLVAD, callback(&b)).await;
    assert_eq!(parts.status, 503, "{}", String::from_utf8_lossy(&body));
    let lines = audit_until(&b, |l| l.iter().any(|x| x["event"] == "step_up_failed")).await;
    let failed = lines.iter().find(|x| x["event"] == "step_up_failed").unwrap();
    assert_eq!(failed["detail"], "idp_unavailable", "{failed}");
    // Taken once: the same state at A now names nothing.
    let (parts, _) = h1_from(&a, MULLVAD, callback(&a)).await;
    assert_eq!(parts.status, 403);
    let lines = audit_until(&a, |l| l.iter().any(|x| x["event"] == "step_up_failed")).await;
    let failed = lines.iter().find(|x| x["event"] == "step_up_failed").unwrap();
    assert_eq!(failed["detail"], "state_replayed_or_unknown", "{failed}");
}

#[tokio::test]
async fn the_embedded_store_keeps_revocations_across_a_restart() {
    let d = Deployment::new(String::new(), String::new());
    let state_dir = d.path("state");
    let d = Deployment { session_extra: format!("state_dir = \"{state_dir}\"\n"), ..d };
    let t = d.replica().await;
    assert_eq!(status(&t, HOME, "kept").await, 200);
    assert_eq!(status(&t, HOME, "other").await, 200);
    revoke(&t, "kept").await;
    assert_eq!(status(&t, HOME, "kept").await, 403);
    t.running.shutdown().await;
    let t = d.replica().await;
    assert_eq!(status(&t, HOME, "kept").await, 403, "still revoked after a restart");
    assert_eq!(status(&t, HOME, "other").await, 200, "what was not revoked binds afresh");
}

#[tokio::test]
async fn a_frozen_redis_fails_no_request_and_still_challenges_a_vpn() {
    let Some(r) = private("replica fault test", &[]) else { return };
    let server = r._server.as_ref().unwrap();
    let d = Deployment::redis(&r.url, "fault", "command_timeout = \"200ms\"\ncache_ttl = \"100ms\"\n");
    let (a, b) = (d.replica().await, d.replica().await);
    for i in 0..4 {
        assert_eq!(status(&a, HOME, &format!("owner{i}")).await, 200);
    }
    assert_eq!(status(&b, HOME, "owner0").await, 200, "cached at B");
    let degraded_before = b.metric("tether_store_degraded_total").await;

    server.signal("-STOP");
    let mut latencies = Vec::new();
    let mut timed = async |t: &Tether, src: &str, cookie: &str| {
        let s = Instant::now();
        let code = status(t, src, cookie).await;
        latencies.push((s.elapsed(), src.to_owned(), cookie.to_owned()));
        code
    };
    // Mid-traffic: owners at home, cached or not, at either replica, all work.
    for round in 0..3 {
        for i in 0..4 {
            let cookie = format!("owner{i}");
            assert_eq!(timed(&a, HOME, &cookie).await, 200, "round {round}: {cookie} at A");
            assert_eq!(timed(&b, HOME, &cookie).await, 200, "round {round}: {cookie} at B");
        }
        assert_eq!(timed(&b, HOME, &format!("newcomer{round}")).await, 200, "a first sight at home");
    }
    // A thief with a cookie B has never seen, from a VPN: network rules still challenge.
    assert_eq!(timed(&b, MULLVAD, "owner3").await, 303, "the VPN replay is still challenged");
    assert_eq!(timed(&a, MULLVAD, "owner2").await, 303);
    for (took, src, cookie) in &latencies {
        eprintln!("frozen Redis: {cookie} from {src} answered in {took:?}");
    }
    assert!(b.metric("tether_store_degraded_total").await > degraded_before, "degraded decisions counted");
    let (code, body) = admin_text(&b, "/readyz").await;
    assert_eq!(code, 200, "a store outage does not take the replica out of the balancer");
    assert!(body.contains("degraded"), "{body}");

    server.signal("-CONT");
    // Shared again: a session bound at A from now on is known at B.
    let back = eventually(Duration::from_secs(15), async || {
        let cookie = format!("after{}", rand_u32());
        status(&a, HOME, &cookie).await == 200 && status(&b, SYDNEY, &cookie).await == 303
    })
    .await;
    eprintln!("shared again after SIGCONT: {back:?}");
    assert!(back.is_some(), "state shared again once Redis answers");
    let (code, body) = admin_text(&b, "/readyz").await;
    assert_eq!(code, 200);
    assert!(body.starts_with("ready\n") && !body.contains("degraded"), "{body}");

    // Then Redis goes away for good: still no request fails, the VPN is still challenged.
    server.signal("-KILL");
    for i in 0..4 {
        let s = Instant::now();
        assert_eq!(status(&b, HOME, &format!("owner{i}")).await, 200, "owner{i} with Redis gone");
        eprintln!("Redis gone: owner{i} answered in {:?}", s.elapsed());
    }
    assert_eq!(status(&b, HOME, "newcomer-after").await, 200);
    assert_eq!(status(&a, MULLVAD, "owner1").await, 303);
}

#[tokio::test]
async fn with_on_error_refuse_a_session_redis_cannot_give_is_answered_503() {
    let Some(r) = private("replica refuse test", &[]) else { return };
    let server = r._server.as_ref().unwrap();
    let d = Deployment::redis(&r.url, "refuse", "command_timeout = \"200ms\"\non_error = \"refuse\"\n");
    let a = d.replica().await;
    assert_eq!(status(&a, HOME, "known").await, 200);
    server.signal("-STOP");
    assert_eq!(status(&a, HOME, "stranger").await, 503, "no history, refused as chosen");
    assert_eq!(status(&a, HOME, "known").await, 200, "what the cache knows still holds");
    assert!(a.metric("tether_store_degraded_total").await >= 1.0);
    let (code, body) = admin_text(&a, "/readyz").await;
    assert_eq!(code, 200);
    assert!(body.contains("refused"), "{body}");
    server.signal("-CONT");
    let back = eventually(Duration::from_secs(15), async || status(&a, HOME, "stranger").await == 200).await;
    assert!(back.is_some(), "answered again once Redis is back");
}

#[tokio::test]
async fn a_revocation_at_one_replica_closes_the_sessions_tunnel_at_the_other() {
    use futures_util::{SinkExt, StreamExt};
    let Some(r) = shared("replica tunnel test") else { return };
    let d = Deployment::redis(&r.url, "tunnel", "");
    let (a, b) = (d.replica().await, d.replica().await);
    let tls = tls_connect(b.addr(), &b.certs, "localhost", &[b"http/1.1"]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("wss://localhost:{}/ws", b.addr().port())).unwrap();
    req.headers_mut().insert("cookie", "session=tunnelled".parse().unwrap());
    req.headers_mut().insert("user-agent", CHROME.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(req, tls)).await.unwrap().unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok(), "the tunnel works");
    let start = Instant::now();
    revoke(&a, "tunnelled").await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel at B stayed open after a revocation at A");
    eprintln!("revocation at A closed the tunnel at B after {:?}", start.elapsed());
    assert_eq!(b.metric("tether_tunnels_closed_total{reason=\"revoked\"}").await, 1.0);
}
