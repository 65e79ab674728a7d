//! Lifetimes under load: sessions that come back after their idle or absolute lifetime,
//! through `replay` (whose clock is the trace's) and through the live proxy.

use std::time::Duration;

use super::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";

/// A trace line for `session` at `ts`.
fn line(ts: &str, session: u32) -> String {
    format!(
        r#"{{"ts":"{ts}","ip":"192.0.2.10","method":"GET","path":"/","headers":{{"user-agent":"{CHROME}","cookie":"session=s{session}","accept":"text/html"}}}}"#
    )
}

#[tokio::test]
async fn replay_finishes_when_sessions_return_after_their_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tether.toml");
    std::fs::write(&config, format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{}", detector_sections("enforce", ""))).unwrap();
    // Fifty sessions born on day 1; each comes back two days later (idle lifetime passed,
    // no sweep in replay), then one is used continuously across its absolute lifetime.
    let mut lines = Vec::new();
    for s in 0..50 {
        lines.push(line("2026-01-01T09:00:00Z", s));
    }
    for s in 0..50 {
        lines.push(line("2026-01-03T09:00:00Z", s));
    }
    for day in 3..=9 {
        for hour in [8, 14, 20] {
            lines.push(line(&format!("2026-01-{day:02}T{hour:02}:00:00Z"), 0));
        }
    }
    let n = lines.len();
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(&trace, lines.join("\n")).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["replay", "--json", "--config"])
        .arg(&config)
        .arg(&trace)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run).await.expect("replay wedged on a returning session").unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let decisions: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(decisions.len(), n + 1, "one line per input and a summary");
    // Back after the idle lifetime: a new binding, at home, allowed.
    assert!(decisions[50..100].iter().all(|d| d["action"] == "allow"), "{:?}", &decisions[50..100]);
}

const TOKEN: &str = "0123456789abcdef-admin-token";

/// tether with the detector, short connection and tunnel lifetimes, an admin token, and
/// `extra_limits` added to `[limits]`.
async fn tether_with(extra_limits: &str) -> Tether {
    let up = spawn_upstream(None).await;
    let c = certs();
    std::fs::write(c.dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n[upstream]\nurl = \"http://{up}\"\n[limits]\n{extra_limits}\n{}",
        detector_sections("enforce", "")
    );
    start_text(&text, c).await
}

fn browser(t: &Tether, cookie: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    get(t, "/app")
        .header("cookie", format!("session={cookie}"))
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap()
}

/// Many sessions at once, while the clock moves past the idle lifetime, then past the
/// absolute lifetime while they are in use: every request is answered.
#[tokio::test]
async fn sessions_crossing_their_lifetimes_under_concurrent_load_never_wedge_the_proxy() {
    let t = std::sync::Arc::new(tether_with("").await);
    let round = |t: std::sync::Arc<Tether>, tag: &'static str| async move {
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let t = t.clone();
                tokio::spawn(async move {
                    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, &format!("s{i}"))).await;
                    parts.status.as_u16()
                })
            })
            .collect();
        for task in tasks {
            let status = tokio::time::timeout(HANG_GUARD, task).await.unwrap_or_else(|_| panic!("{tag}: a request never completed")).unwrap();
            assert_eq!(status, 200, "{tag}");
        }
    };
    round(t.clone(), "first sight").await;
    // Past the idle lifetime (a day), before any sweep: each comes back.
    t.running.shared.clock.shift(25 * 3600);
    round(t.clone(), "back after the idle lifetime").await;
    // In use across the absolute lifetime (a week): requests every few hours.
    for _ in 0..45 {
        t.running.shared.clock.shift(4 * 3600);
        round(t.clone(), "across the absolute lifetime").await;
    }
    // Backwards: nothing expires, nothing wedges.
    t.running.shared.clock.shift(-30 * 86_400);
    round(t.clone(), "clock moved back").await;
}

#[tokio::test]
async fn an_http2_connection_that_never_sends_a_request_is_closed() {
    let t = tether_with("h2_idle_timeout = \"1s\"\n").await;
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"h2"]).await;
    let (_send, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    // The client answers PINGs and sends nothing else; tether closes with a GOAWAY.
    tokio::time::timeout(HANG_GUARD, conn).await.expect("the idle HTTP/2 connection stayed open").ok();
    assert_eq!(t.metric("tether_connections_closed_total{reason=\"h2_idle\"}").await, 1.0);
    // A connection in use is not idle: a request on a fresh one is answered.
    let (parts, _) = h2(&t, browser(&t, "h2-user")).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let t = tether_with("max_connections_per_peer = 2\n").await;
    let a = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let b = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    // The third from the same address is closed at accept: its handshake fails.
    let tcp = tokio::net::TcpStream::connect(t.addr()).await.unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates({
            let mut roots = rustls::RootCertStore::empty();
            roots.add(t.certs.der.clone()).unwrap();
            roots
        })
        .with_no_client_auth();
    let third = tokio::time::timeout(
        HANG_GUARD,
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap();
    assert!(third.is_err(), "a third connection from one address was served");
    assert_eq!(t.metric("tether_connections_closed_total{reason=\"peer_cap\"}").await, 1.0);
    drop((a, b));
}

async fn open_ws(t: &Tether, cookie: &str) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("wss://localhost:{}/ws", t.addr().port())).unwrap();
    req.headers_mut().insert("cookie", format!("session={cookie}").parse().unwrap());
    req.headers_mut().insert("user-agent", CHROME.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(req, tls)).await.unwrap().unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    ws
}

/// Waits until the tunnel ends (a close, an error or the end of the stream).
async fn ends(ws: &mut tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>) {
    use futures_util::StreamExt;
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if !m.is_close() => continue,
                _ => return,
            }
        }
    })
    .await
    .expect("the tunnel stayed open");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_an_absolute_lifetime_holds() {
    let t = tether_with("tunnel_idle_timeout = \"2s\"\n").await;
    let mut ws = open_ws(&t, "ws-idle").await;
    ends(&mut ws).await;
    assert_eq!(t.metric("tether_tunnels_closed_total{reason=\"idle\"}").await, 1.0);

    let t = tether_with("tunnel_max_lifetime = \"2s\"\n").await;
    let mut ws = open_ws(&t, "ws-lifetime").await;
    ends(&mut ws).await;
    assert_eq!(t.metric("tether_tunnels_closed_total{reason=\"lifetime\"}").await, 1.0);
}

#[tokio::test]
async fn revoking_a_session_closes_its_open_tunnels_at_once() {
    use futures_util::{SinkExt, StreamExt};
    let t = tether_with("").await;
    let mut victim = open_ws(&t, "ws-victim").await;
    let mut other = open_ws(&t, "ws-other").await;
    // The session's key as the audit log names it.
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"] == "session_bound").count() >= 2).await;
    let _ = lines;
    let key = t.running.shared.snapshot().detector.hash_key.session_key(b"session", b"ws-victim");
    let (status, _) = t.admin("POST", &format!("/api/sessions/{}/revoke", key.hex().as_str()), Some(TOKEN)).await;
    assert_eq!(status, 200);
    ends(&mut victim).await;
    assert_eq!(t.metric("tether_tunnels_closed_total{reason=\"revoked\"}").await, 1.0);
    // The other session's tunnel carries on.
    other.send(tokio_tungstenite::tungstenite::Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, other.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");
}

#[tokio::test]
async fn a_flood_of_challenges_from_one_address_is_answered_429() {
    let t = tether_with("").await;
    let mut statuses = Vec::new();
    // Fresh cookies from a VPN exit: each first sight is a step-up challenge.
    for i in 0..30 {
        let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, &format!("flood{i}"))).await;
        statuses.push(parts.status.as_u16());
        if parts.status == 429 {
            assert!(parts.headers.get("retry-after").is_some());
        }
    }
    assert!(statuses.iter().all(|s| *s == 303 || *s == 429), "{statuses:?}");
    // A burst of 20, then one every 3 s: a slow run may earn a token or two back.
    let redirects = statuses.iter().filter(|s| **s == 303).count();
    assert!((20..=23).contains(&redirects), "{statuses:?}");
    assert!(statuses[..20].iter().all(|s| *s == 303), "{statuses:?}");
    assert!(t.running.shared.challenges.len() <= redirects);
}

/// A flood of cookies against a small store: a binding in use is kept; one that went
/// quiet may be evicted, but its return raises `history_lost` (a step-up), never a clean
/// first sight — even when the flooder ages its cookies so that they look established.
#[tokio::test]
async fn a_flood_of_fresh_cookies_cannot_wash_out_a_binding() {
    let up = spawn_upstream(None).await;
    let sections = detector_sections("enforce", "").replace("[session]\n", "[session]\nmax_sessions = 20\n");
    let t = start_tls(&format!("http://{up}"), "", &sections).await;
    // Two victims who worked at home for a couple of minutes; then one goes quiet.
    for _ in 0..2 {
        for v in ["victim-quiet", "victim-active"] {
            let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, v)).await;
            assert_eq!(parts.status, 200);
        }
        t.running.shared.clock.shift(90);
    }
    // The flooder fills the store with aged cookies (each used twice, a minute apart, so
    // they look like sessions with history), then adds fresh ones: with only aged
    // sessions left to evict, the least recently used goes — the quiet victim.
    for pass in 0..2 {
        for i in 0..18 {
            // The flooder's own evicted cookies come back as history lost (303, or 429 once
            // this address has had its share of challenges).
            let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, &format!("flood-{i}"))).await;
            assert!(matches!(parts.status.as_u16(), 200 | 303 | 429), "pass {pass}: {}", parts.status);
        }
        t.running.shared.clock.shift(61);
        let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "victim-active")).await;
        assert_eq!(parts.status, 200);
    }
    for i in 0..3 {
        let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, &format!("fresh-{i}"))).await;
        assert!(matches!(parts.status.as_u16(), 200 | 303 | 429), "{}", parts.status);
    }
    assert!(t.running.shared.store.len() <= 21, "{}", t.running.shared.store.len());
    // The thief replays both victims' cookies from abroad (Sydney, residential).
    for v in ["victim-quiet", "victim-active"] {
        let (parts, _) = h1_from(&t, "127.0.4.20", browser(&t, v)).await;
        assert_eq!(parts.status, 303, "{v}: the thief got a clean first sight");
    }
    // The quiet victim was evicted and came back as history lost; the active one was kept.
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"] == "decision" && x["ip"] == "127.0.4.20").count() >= 2).await;
    let reasons: Vec<String> = lines.iter().filter(|x| x["event"] == "decision" && x["ip"] == "127.0.4.20").map(|x| x["reasons"].to_string()).collect();
    assert!(reasons[0].contains("history_lost"), "{reasons:?}");
    assert!(reasons[1].contains("impossible_travel") && !reasons[1].contains("history_lost"), "{reasons:?}");
    t.running.shared.observe_state();
    assert!(t.metric("tether_store_evictions_total").await >= 1.0);
}

/// Delivers a step-up callback with `query` for session `cookie`, from the VPN exit.
async fn callback(t: &Tether, cookie: &str, query: &str) -> http::response::Parts {
    let req = get(t, &format!("/.tether/callback?{query}"))
        .header("cookie", format!("session={cookie}"))
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    h1_from(t, "127.0.2.10", req).await.0
}

/// The state parameter of a step-up redirect.
fn state_of(location: &str) -> String {
    location.split(['?', '&']).find_map(|kv| kv.strip_prefix("state=")).unwrap().to_owned()
}

/// An IdP that cannot be reached, or says it is down, is not the user's failure: the
/// owner retries as often as it takes and the session is never revoked for it.
#[tokio::test]
async fn an_idp_outage_never_counts_against_the_user() {
    // The static endpoints in these sections point at a host that does not resolve.
    let t = tether_with("").await;
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "owner")).await;
    assert_eq!(parts.status, 200);
    for attempt in 0..5 {
        let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "owner")).await;
        assert_eq!(parts.status, 303, "attempt {attempt}");
        let state = state_of(parts.headers["location"].to_str().unwrap());
        // Alternately: the code exchange fails in transport, and the IdP says it is down.
        let query = if attempt % 2 == 0 { format!("code=abc&state={state}") } else { format!("error=temporarily_unavailable&state={state}") };
        let parts = callback(&t, "owner", &query).await;
        assert_eq!(parts.status, 503, "attempt {attempt}: the user is asked to retry");
    }
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"] == "step_up_failed").count() >= 5).await;
    assert!(lines.iter().filter(|x| x["event"] == "step_up_failed").all(|x| x["detail"] == "idp_unavailable"));
    assert!(!lines.iter().any(|x| x["event"] == "session_revoked"), "an IdP outage revoked the owner's session");
    // An IdP error that is the user's own (access_denied) still counts.
    let mut revoked = false;
    for _ in 0..5 {
        let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "owner")).await;
        if parts.status != 303 {
            revoked = true;
            break;
        }
        let state = state_of(parts.headers["location"].to_str().unwrap());
        let parts = callback(&t, "owner", &format!("error=access_denied&state={state}")).await;
        assert_eq!(parts.status, 403);
    }
    assert!(revoked, "failures of the user's own never revoked the session");
}

/// A challenge answered after its lifetime, with the clock moved past it, is refused as
/// expired; one answered in time reaches the IdP exchange.
#[tokio::test]
async fn a_challenge_answered_after_its_lifetime_is_expired() {
    let t = tether_with("").await;
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "late")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "late")).await;
    assert_eq!(parts.status, 303);
    let state = state_of(parts.headers["location"].to_str().unwrap());
    t.running.shared.clock.shift(601);
    let parts = callback(&t, "late", &format!("code=abc&state={state}")).await;
    assert_eq!(parts.status, 403);
    audit_event(&t, "step_up_failed", "detail", "state_expired").await;
}

/// Reloads asked for at once (SIGHUP and the file watcher both see one change) run one
/// after the other: each takes its own generation and none is lost.
#[tokio::test]
async fn concurrent_reloads_take_one_generation_each() {
    let t = tether_with("").await;
    let path = t.certs.dir.path().join("tether.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{}",
        detector_sections("enforce", "")
    );
    std::fs::write(&path, text).unwrap();
    let first = t.running.shared.snapshot().generation;
    let reloads: Vec<_> = (0..8).map(|_| tether::reload::reload_in_background(t.running.shared.clone(), path.clone())).collect();
    let mut generations = Vec::new();
    for r in futures_util::future::join_all(reloads).await {
        generations.push(r.expect("reload"));
    }
    generations.sort();
    generations.dedup();
    assert_eq!(generations.len(), 8, "two reloads shared a generation: {generations:?}");
    assert_eq!(t.running.shared.snapshot().generation, first + 8);
}
