//! Device Bound Session Credentials end to end, with a scripted browser: it generates
//! an ES256 key, answers the registration tether offers and every refresh it demands,
//! and keeps the bound cookie as a cookie jar would. Against it, the thief holding only
//! the long-lived console cookie, and proofs that must not count.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const COOKIE: &str = "session=console-session-cookie";
const BOUND: &str = "__Host-tether-bound";
const HOME: &str = "127.0.0.1";
/// A VPN exit in the fixture databases: a step-up for a session bound at home.
const VPN: &str = "127.0.2.10";

async fn tether(dbsc_extra: &str) -> Tether {
    let up = spawn_upstream(None).await;
    let sections = format!("{}\n[dbsc]\nenabled = true\n{dbsc_extra}\n", detector_sections("enforce", ""));
    start_tls(&format!("http://{up}"), "", &sections).await
}

/// The browser side: its device key and the bound cookie it holds.
struct Browser {
    enc: EncodingKey,
    jwk: Jwk,
    /// The long-lived console cookie (`name=value`).
    console: String,
    bound: Option<String>,
    session_id: Option<String>,
}

impl Browser {
    fn new() -> Browser {
        Browser::with_console(COOKIE)
    }

    fn with_console(console: &str) -> Browser {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        Browser { enc, jwk, console: console.to_owned(), bound: None, session_id: None }
    }

    fn proof(&self, jti: &str, with_key: bool) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("dbsc+jwt".into());
        h.jwk = with_key.then(|| self.jwk.clone());
        jsonwebtoken::encode(&h, &serde_json::json!({ "jti": jti }), &self.enc).unwrap()
    }

    fn cookies(&self) -> String {
        match &self.bound {
            Some(b) => format!("{}; {BOUND}={b}", self.console),
            None => self.console.clone(),
        }
    }

    fn get(&self, t: &Tether, path: &str) -> Request<Full<Bytes>> {
        page(t, path, &self.cookies())
    }

    /// Takes the bound cookie a response sets (or expires).
    fn keep(&mut self, parts: &http::response::Parts) {
        for v in parts.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(rest) = v.strip_prefix(&format!("{BOUND}=")) {
                let value = rest.split(';').next().unwrap();
                self.bound = (!value.is_empty() && !v.contains("Max-Age=0")).then(|| value.to_owned());
            }
        }
    }

    /// Registers with the challenge a response offered; returns the status.
    async fn register(&mut self, t: &Tether, offered: &http::response::Parts) -> u16 {
        let challenge = offered_challenge(offered);
        let (parts, body) = h1(t, post(t, "/.tether/dbsc/register", &self.cookies(), &[("secure-session-response", format!("\"{}\"", self.proof(&challenge, true)))])).await;
        assert_eq!(parts.headers["x-frame-options"], "DENY");
        assert_eq!(parts.headers["cross-origin-resource-policy"], "same-origin");
        if parts.status == 200 {
            let config = json(&body);
            assert_eq!(config["refresh_url"], "/.tether/dbsc/refresh");
            assert_eq!(config["credentials"][0]["name"], BOUND);
            assert_eq!(config["scope"]["include_site"], false);
            self.session_id = config["session_identifier"].as_str().map(str::to_owned);
            self.keep(&parts);
        }
        parts.status.as_u16()
    }

    /// A refresh as the browser runs it: asks, signs the challenge it is given, and
    /// retries once; `seeded` is a challenge an earlier response already handed over.
    async fn refresh(&mut self, t: &Tether, src: &str, seeded: Option<String>) -> u16 {
        let id = self.session_id.clone().expect("registered");
        let challenge = match seeded {
            Some(c) => c,
            None => {
                let (parts, _) = h1_from(t, src, post(t, "/.tether/dbsc/refresh", &self.cookies(), &[("sec-secure-session-id", format!("\"{id}\""))])).await;
                assert_eq!(parts.status, 403, "a refresh without a proof is asked for one");
                challenge_of(&parts).0
            }
        };
        let proof = self.proof(&challenge, false);
        let (parts, _) = h1_from(t, src, post(t, "/.tether/dbsc/refresh", &self.cookies(), &[("sec-secure-session-id", format!("\"{id}\"")), ("secure-session-response", format!("\"{proof}\""))])).await;
        self.keep(&parts);
        parts.status.as_u16()
    }
}

fn page(t: &Tether, path: &str, cookies: &str) -> Request<Full<Bytes>> {
    get(t, path).header("cookie", cookies).header("user-agent", CHROME).header("accept", "text/html").body(Full::new(Bytes::new())).unwrap()
}

fn post(t: &Tether, path: &str, cookies: &str, headers: &[(&str, String)]) -> Request<Full<Bytes>> {
    let mut r = Request::post(path).header("host", format!("localhost:{}", t.addr().port())).header("cookie", cookies).header("user-agent", CHROME);
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(Bytes::new())).unwrap()
}

/// The challenge in a response's `Secure-Session-Registration`.
fn offered_challenge(parts: &http::response::Parts) -> String {
    let v = parts.headers.get("secure-session-registration").expect("registration offered").to_str().unwrap();
    assert!(v.starts_with("(ES256 RS256);path=\"/.tether/dbsc/register\";"), "{v}");
    v.split("challenge=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
}

/// `Secure-Session-Challenge: "challenge";id="session"`, as (challenge, session id).
fn challenge_of(parts: &http::response::Parts) -> (String, String) {
    let v = parts.headers.get("secure-session-challenge").expect("a challenge").to_str().unwrap();
    let challenge = v.split('"').nth(1).unwrap().to_owned();
    let id = v.split("id=\"").nth(1).unwrap().trim_end_matches('"').to_owned();
    (challenge, id)
}

/// A browser that visited, was offered registration and registered.
async fn registered(t: &Tether) -> Browser {
    let mut b = Browser::new();
    let (first, _) = h1_from(t, HOME, b.get(t, "/app")).await;
    assert_eq!(first.status, 200);
    assert_eq!(b.register(t, &first).await, 200);
    assert!(b.bound.is_some(), "a bound cookie was set");
    b
}

async fn dbsc_metric(t: &Tether, outcome: &str) -> f64 {
    t.metric(&format!("tether_dbsc_total{{outcome=\"{outcome}\"}}")).await
}

#[tokio::test]
async fn a_registered_browser_works_and_the_stolen_console_cookie_alone_is_refused() {
    let t = tether("").await;
    let b = registered(&t).await;
    // The browser, with its bound cookie: through, and the console never sees it.
    let (parts, body) = h1_from(&t, HOME, b.get(&t, "/app")).await;
    assert_eq!(parts.status, 200);
    let echo = json(&body);
    assert_eq!(seen(&echo, "cookie"), [COOKIE], "the bound cookie is tether's alone");
    assert!(parts.headers.get("secure-session-registration").is_none(), "a bound session is not offered again");

    // The thief: the long-lived console cookie, same place, same client, no key.
    let (parts, body) = h1_from(&t, HOME, page(&t, "/app", COOKIE)).await;
    assert_eq!(parts.status, 403, "{}", String::from_utf8_lossy(&body));
    let cleared: Vec<&str> = parts.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(cleared.iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")), "the console cookie is cleared: {cleared:?}");
    // Any other client too: enforcement does not depend on the user agent.
    let curl = get(&t, "/app").header("cookie", COOKIE).header("user-agent", "curl/8.5.0").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h1_from(&t, HOME, curl).await.0.status, 403);
    // A browser that says its refresh was skipped keeps its console cookie (reload retries).
    let skipped = get(&t, "/app").header("cookie", COOKIE).header("user-agent", CHROME).header("secure-session-skipped", "unreachable;session_identifier=\"x\"").body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = h1_from(&t, HOME, skipped).await;
    assert_eq!(parts.status, 403);
    assert!(parts.headers.get_all("set-cookie").iter().all(|v| !v.to_str().unwrap().starts_with("session=")));
    // A forged bound cookie is no better.
    let (parts, _) = h1_from(&t, HOME, page(&t, "/app", &format!("{COOKIE}; {BOUND}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))).await;
    assert_eq!(parts.status, 307, "an invalid bound cookie is expired so a DBSC browser refreshes");

    // The refusal is a decision line with its reason, for `hunt`.
    let lines = audit_until(&t, |l| l.iter().any(|e| e["event"] == "decision" && e["reasons"].as_array().is_some_and(|r| r.iter().any(|x| x == "dbsc_unproven")))).await;
    let refused = lines.iter().find(|e| e["event"] == "decision" && e["reasons"].as_array().is_some_and(|r| r.iter().any(|x| x == "dbsc_unproven"))).unwrap();
    assert_eq!(refused["action"], "block");
    assert!(lines.iter().any(|e| e["event"] == "dbsc_registered"));
    assert!(dbsc_metric(&t, "request_refused").await >= 3.0);
    assert_eq!(dbsc_metric(&t, "registered").await, 1.0);
    assert!(t.metric("tether_signals_total{signal=\"dbsc_unproven\"}").await >= 4.0);
}

#[tokio::test]
async fn an_expired_bound_cookie_is_refreshed_with_a_fresh_proof() {
    let t = tether("bound_lifetime = \"10m\"").await;
    let mut b = registered(&t).await;
    // A refresh ahead of time: 403 with a challenge, then a signed answer, a new cookie.
    let before = b.bound.clone();
    t.running.shared.clock.shift(5);
    assert_eq!(b.refresh(&t, HOME, None).await, 200);
    assert_ne!(b.bound, before, "a new bound cookie");
    assert_eq!(h1_from(&t, HOME, b.get(&t, "/app")).await.0.status, 200);

    // The bound cookie outlives its lifetime (a browser that slept): tether enforces its
    // expiry itself, expires it and seeds a challenge; the browser refreshes and retries.
    t.running.shared.clock.shift(11 * 60);
    // The re-proof redirect names only a path of this site, whatever the target says.
    for hostile in ["//evil.example/x", "/%2fevil.example/x"] {
        let (parts, _) = h1_from(&t, HOME, b.get(&t, hostile)).await;
        assert_eq!(parts.status, 307, "{hostile}");
        assert_eq!(parts.headers["location"], "/", "{hostile}");
    }
    let (parts, _) = h1_from(&t, HOME, b.get(&t, "/app?x=1")).await;
    assert_eq!(parts.status, 307);
    assert_eq!(parts.headers["location"], "/app?x=1");
    b.keep(&parts);
    assert!(b.bound.is_none(), "the stale bound cookie is expired");
    let (seeded, id) = challenge_of(&parts);
    assert_eq!(Some(id), b.session_id);
    assert_eq!(b.refresh(&t, HOME, Some(seeded.clone())).await, 200);
    assert_eq!(h1_from(&t, HOME, b.get(&t, "/app?x=1")).await.0.status, 200);

    // The same proof again: its challenge is spent.
    let id = b.session_id.clone().unwrap();
    let replay = post(&t, "/.tether/dbsc/refresh", &b.cookies(), &[("sec-secure-session-id", format!("\"{id}\"")), ("secure-session-response", format!("\"{}\"", b.proof(&seeded, false)))]);
    let (parts, _) = h1_from(&t, HOME, replay).await;
    assert_eq!(parts.status, 403);
    assert!(parts.headers.get("set-cookie").is_none(), "no cookie for a replayed proof");
    audit_event(&t, "dbsc_refused", "detail", "challenge_replayed").await;
    assert!(dbsc_metric(&t, "refreshed").await >= 2.0);
}

#[tokio::test]
async fn proofs_by_another_key_or_without_one_are_refused() {
    let t = tether("").await;
    let b = registered(&t).await;
    let id = b.session_id.clone().unwrap();
    let (parts, _) = h1_from(&t, HOME, post(&t, "/.tether/dbsc/refresh", &b.cookies(), &[("sec-secure-session-id", format!("\"{id}\""))])).await;
    let (challenge, _) = challenge_of(&parts);
    // A thief with the cookies and a key of their own: the signature does not verify.
    let thief = Browser::new();
    let forged = post(&t, "/.tether/dbsc/refresh", &b.cookies(), &[("sec-secure-session-id", format!("\"{id}\"")), ("secure-session-response", format!("\"{}\"", thief.proof(&challenge, false)))]);
    let (parts, _) = h1_from(&t, HOME, forged).await;
    assert_eq!(parts.status, 403);
    assert!(parts.headers.get("set-cookie").is_none());
    audit_event(&t, "dbsc_refused", "detail", "proof_bad_signature").await;
    // alg none, on registration of a fresh session: refused before any key is looked at.
    let (first, _) = h1_from(&t, HOME, page(&t, "/app", "session=another-session")).await;
    let offered = offered_challenge(&first);
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", part(serde_json::json!({"alg": "none", "typ": "dbsc+jwt"})), part(serde_json::json!({"jti": offered})));
    let (parts, _) = h1_from(&t, HOME, post(&t, "/.tether/dbsc/register", "session=another-session", &[("secure-session-response", format!("\"{none}\""))])).await;
    assert_eq!(parts.status, 400);
    audit_event(&t, "dbsc_refused", "detail", "proof_algorithm").await;
    // A second registration of a bound session (a thief's own key) is refused.
    let (first, _) = h1_from(&t, HOME, page(&t, "/app", "session=third-session")).await;
    let mut owner = Browser::with_console("session=third-session");
    assert_eq!(owner.register(&t, &first).await, 200);
    let again = post(&t, "/.tether/dbsc/register", &owner.cookies(), &[]);
    assert_eq!(h1_from(&t, HOME, again).await.0.status, 400, "no proof at all");
    let owner_id = owner.session_id.clone().unwrap();
    let (parts, _) = h1_from(&t, HOME, post(&t, "/.tether/dbsc/refresh", &owner.cookies(), &[("sec-secure-session-id", format!("\"{owner_id}\""))])).await;
    let (fresh, _) = challenge_of(&parts);
    let usurper = Browser::new();
    let again = post(&t, "/.tether/dbsc/register", "session=third-session", &[("secure-session-response", format!("\"{}\"", usurper.proof(&fresh, true)))]);
    assert_eq!(h1_from(&t, HOME, again).await.0.status, 403, "a bound session keeps its key");
    audit_event(&t, "dbsc_refused", "detail", "already_bound").await;
    // The refused registration spent nothing: the owner's refresh over that challenge counts.
    assert_eq!(owner.refresh(&t, HOME, Some(fresh)).await, 200, "a refused registration does not spend the challenge");
    // A registration over a challenge offered to another session.
    let other = Browser::new();
    let (parts, _) = h1_from(&t, HOME, post(&t, "/.tether/dbsc/register", "session=fourth-session", &[("secure-session-response", format!("\"{}\"", other.proof(&offered, true)))])).await;
    assert_eq!(parts.status, 400);
    audit_event(&t, "dbsc_refused", "detail", "challenge_forged").await;
}

#[tokio::test]
async fn on_risk_a_fresh_key_proof_rebinds_the_session_with_challenge() {
    let t = tether("on_risk = \"challenge\"").await;
    let mut b = registered(&t).await;
    // The owner travels to a VPN exit: instead of an OIDC step-up, a fresh key proof.
    let (parts, _) = h1_from(&t, VPN, b.get(&t, "/projects")).await;
    assert_eq!(parts.status, 307, "a fresh proof is demanded");
    b.keep(&parts);
    let (seeded, _) = challenge_of(&parts);
    // The old bound cookie (a thief's copy) no longer answers from there.
    let (stale, _) = h1_from(&t, VPN, page(&t, "/projects", &format!("{COOKIE}; {BOUND}=stale"))).await;
    assert_ne!(stale.status, 200);
    assert_eq!(b.refresh(&t, VPN, Some(seeded)).await, 200);
    let (parts, _) = h1_from(&t, VPN, b.get(&t, "/projects")).await;
    assert_eq!(parts.status, 200, "the proof re-bound the session where it was made");
    audit_event(&t, "dbsc_refreshed", "detail", "reproved").await;
    assert!(dbsc_metric(&t, "proof_demanded").await >= 1.0);
}

#[tokio::test]
async fn on_risk_step_up_demands_the_key_proof_before_the_oidc_step_up() {
    let t = tether("on_risk = \"step_up\"").await;
    let mut b = registered(&t).await;
    let (parts, _) = h1_from(&t, VPN, b.get(&t, "/projects")).await;
    assert_eq!(parts.status, 307);
    b.keep(&parts);
    let (seeded, _) = challenge_of(&parts);
    assert_eq!(b.refresh(&t, VPN, Some(seeded)).await, 200);
    let (parts, _) = h1_from(&t, VPN, b.get(&t, "/projects")).await;
    assert_eq!(parts.status, 303, "then the OIDC step-up");
    assert!(parts.headers["location"].to_str().unwrap().starts_with("https://sso.example/authorize"));
}

#[tokio::test]
async fn registration_is_offered_only_where_and_to_whom_it_is_configured() {
    let t = tether("routes = [\"/admin\"]\nlogin_route = \"/admin/login\"").await;
    // Outside the routes: nothing offered.
    let (parts, _) = h1_from(&t, HOME, page(&t, "/public", "session=a")).await;
    assert!(parts.headers.get("secure-session-registration").is_none());
    // Inside, to a client not opted in: nothing offered.
    let curl = get(&t, "/admin").header("cookie", "session=b").header("user-agent", "curl/8.5.0").body(Full::new(Bytes::new())).unwrap();
    assert!(h1_from(&t, HOME, curl).await.0.headers.get("secure-session-registration").is_none());
    // The login route's response that sets the session cookie: offered for the new
    // session, which registers with it.
    let login = get(&t, "/admin/login").header("user-agent", CHROME).header("x-test-set-cookie", "session=fresh-login; Path=/; Secure; HttpOnly").body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = h1_from(&t, HOME, login).await;
    let challenge = offered_challenge(&parts);
    let b = Browser::new();
    let reg = post(&t, "/.tether/dbsc/register", "session=fresh-login", &[("secure-session-response", format!("\"{}\"", b.proof(&challenge, true)))]);
    assert_eq!(h1_from(&t, HOME, reg).await.0.status, 200);
    // And that session is now bound.
    assert_eq!(h1_from(&t, HOME, page(&t, "/admin", "session=fresh-login")).await.0.status, 403);
    // A session cookie set percent-encoded is keyed as the browser's request reads it
    // back (decoded): the challenge offered names the session that registers.
    let login = get(&t, "/admin/login").header("user-agent", CHROME).header("x-test-set-cookie", "session=\"encoded%2Dlogin\"; Path=/; Secure").body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = h1_from(&t, HOME, login).await;
    let challenge = offered_challenge(&parts);
    let reg = post(&t, "/.tether/dbsc/register", "session=encoded%2Dlogin", &[("secure-session-response", format!("\"{}\"", b.proof(&challenge, true)))]);
    assert_eq!(h1_from(&t, HOME, reg).await.0.status, 200, "the offer keyed the decoded value");
}

#[tokio::test]
async fn a_bound_session_is_not_logged_out_by_another_site_nor_lost_to_a_foreign_byte() {
    let t = tether("").await;
    let b = registered(&t).await;
    // Another site's form posts to the console: the browser sends the console cookie but
    // not the SameSite=Lax bound cookie. Refused, and the console cookie stays.
    let forged = Request::post("/app")
        .header("host", format!("localhost:{}", t.addr().port()))
        .header("cookie", COOKIE)
        .header("user-agent", CHROME)
        .header("sec-fetch-site", "cross-site")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, _) = h1_from(&t, HOME, forged).await;
    assert_eq!(parts.status, 403);
    let set: Vec<&str> = parts.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(set.iter().all(|c| !c.starts_with("session=")), "the console cookie is not cleared: {set:?}");
    // The owner carries on.
    assert_eq!(h1_from(&t, HOME, b.get(&t, "/app")).await.0.status, 200);
    // Another cookie of the site holding a byte above ASCII hides neither the bound
    // cookie nor the rest of the header.
    let cookies = http::HeaderValue::from_bytes(format!("{}; theme=caf\u{e9}", b.cookies()).as_bytes()).unwrap();
    let req = get(&t, "/app").header("cookie", cookies).header("user-agent", CHROME).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h1_from(&t, HOME, req).await.0.status, 200, "the bound cookie is read");
}

#[tokio::test]
async fn a_refresh_on_a_clock_behind_the_demand_does_not_loop() {
    let t = tether("on_risk = \"step_up\"").await;
    let mut b = registered(&t).await;
    let (parts, _) = h1_from(&t, VPN, b.get(&t, "/projects")).await;
    assert_eq!(parts.status, 307, "a fresh proof is demanded");
    b.keep(&parts);
    let (seeded, _) = challenge_of(&parts);
    // The refresh lands on a replica whose clock runs a few seconds behind the demand's.
    t.running.shared.clock.shift(-5);
    assert_eq!(b.refresh(&t, VPN, Some(seeded)).await, 200);
    let (parts, _) = h1_from(&t, VPN, b.get(&t, "/projects")).await;
    assert_eq!(parts.status, 303, "the new cookie answers the demand: on to the OIDC step-up, not round the re-proof again");
}

/// Two replicas sharing one Redis and one hash key, with `[dbsc]` on.
async fn replicas(url: &str) -> (tempfile::TempDir, Tether, Tether) {
    replicas_with(url, "").await
}

/// [`replicas`], with more `[store]` keys.
async fn replicas_with(url: &str, store_extra: &str) -> (tempfile::TempDir, Tether, Tether) {
    let dir = tempfile::tempdir().unwrap();
    let key: String = (0..32).map(|_| format!("{:02x}", crate::redis::rand_u32() as u8)).collect();
    let key_file = dir.path().join("session.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"t{:08x}:dbsc:\"\n{store_extra}", crate::redis::rand_u32());
    let mut out = Vec::new();
    for _ in 0..2 {
        let up = spawn_upstream(None).await;
        let session = format!("[session]\ncookies = [\"session\"]\nhash_key_file = \"{}\"\n", key_file.display());
        let sections = detector_sections("enforce", "").replace("[session]\ncookies = [\"session\"]\n", &session);
        let t = start_tls(&format!("http://{up}"), "", &format!("{sections}\n{store}\n[dbsc]\nenabled = true\n")).await;
        if let Some(redis) = t.running.shared.store.as_redis() {
            let listening = crate::redis::eventually(std::time::Duration::from_secs(10), async || redis.is_listening()).await;
            assert!(listening.is_some(), "the replica hears the others' invalidations");
        }
        out.push(t);
    }
    let b = out.pop().unwrap();
    let a = out.pop().unwrap();
    (dir, a, b)
}

#[tokio::test]
async fn a_binding_made_at_one_replica_holds_at_the_other_and_challenges_are_spent_once() {
    let Some(r) = crate::redis::shared("DBSC replica test") else { return };
    let (_dir, a, b) = replicas(&r.url).await;
    let mut browser = Browser::new();
    let (first, _) = h1_from(&a, HOME, browser.get(&a, "/app")).await;
    // B has seen (and cached) the session before it is bound at A.
    assert_eq!(h1_from(&b, HOME, browser.get(&b, "/app")).await.0.status, 200);
    assert_eq!(browser.register(&a, &first).await, 200);
    // The thief at B: refused as soon as A's registration reaches B.
    let refused = crate::redis::eventually(std::time::Duration::from_secs(5), async || h1_from(&b, HOME, page(&b, "/app", COOKIE)).await.0.status == 403).await;
    assert!(refused.is_some(), "B enforces the binding made at A");
    // The browser refreshes at B and carries on at A.
    assert_eq!(browser.refresh(&b, HOME, None).await, 200);
    assert_eq!(h1_from(&a, HOME, browser.get(&a, "/app")).await.0.status, 200);
    // A proof answered at B is spent at A too.
    let id = browser.session_id.clone().unwrap();
    let (parts, _) = h1_from(&b, HOME, post(&b, "/.tether/dbsc/refresh", &browser.cookies(), &[("sec-secure-session-id", format!("\"{id}\""))])).await;
    let (challenge, _) = challenge_of(&parts);
    let proof = browser.proof(&challenge, false);
    let headers = [("sec-secure-session-id", format!("\"{id}\"")), ("secure-session-response", format!("\"{proof}\""))];
    assert_eq!(h1_from(&b, HOME, post(&b, "/.tether/dbsc/refresh", &browser.cookies(), &headers)).await.0.status, 200);
    let (parts, _) = h1_from(&a, HOME, post(&a, "/.tether/dbsc/refresh", &browser.cookies(), &headers)).await;
    assert_eq!(parts.status, 403, "the replayed proof is refused at the other replica");
    assert!(parts.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_websocket_opened_with_a_bound_cookie_outlives_it_across_a_reload() {
    use futures_util::{SinkExt, StreamExt};
    const ALLOW: &str = "tether_decisions_total{action=\"allow\",mode=\"enforce\"}";
    let up = spawn_upstream(None).await;
    let c = certs();
    let path = c.dir.path().join("tether.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n{}\n[dbsc]\nenabled = true\n",
        detector_sections("enforce", "")
    );
    std::fs::write(&path, &text).unwrap();
    let t = start_text(&text, c).await;
    let b = registered(&t).await;
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!("wss://localhost:{}/ws", t.addr().port())).unwrap();
    req.headers_mut().insert("cookie", b.cookies().parse().unwrap());
    req.headers_mut().insert("user-agent", CHROME.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::client_async(req, tls)).await.unwrap().unwrap();
    // Past the bound cookie's lifetime, a reload judges the tunnel again: the proof it
    // opened with stands for the tunnel's life.
    t.running.shared.clock.shift(11 * 60);
    let before = t.metric(ALLOW).await;
    t.running.reload(&path).unwrap();
    let deadline = std::time::Instant::now() + HANG_GUARD;
    while t.metric(ALLOW).await <= before {
        assert!(std::time::Instant::now() < deadline, "the tunnel was not judged again");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");
}

#[tokio::test]
async fn a_bound_session_that_idles_out_is_a_lost_history_not_a_new_registration() {
    let t = tether("").await;
    let _owner = registered(&t).await;
    // A day and more without a request: the record idles out. The stolen long-lived
    // cookie, back from the same place, is no first sight to be offered a key of its own.
    t.running.shared.clock.shift(25 * 3600);
    let (parts, _) = h1_from(&t, HOME, page(&t, "/app", COOKIE)).await;
    assert!(parts.headers.get("secure-session-registration").is_none(), "no registration offered");
    let lines = audit_until(&t, |l| l.iter().any(|e| e["event"] == "decision" && e["reasons"].as_array().is_some_and(|r| r.iter().any(|x| x == "history_lost")))).await;
    assert!(lines.iter().any(|e| e["event"] == "decision" && e["reasons"].as_array().is_some_and(|r| r.iter().any(|x| x == "history_lost"))));
}

#[tokio::test]
async fn a_refresh_redis_cannot_record_is_unavailable_not_a_new_challenge() {
    let Some(r) = crate::redis::private("DBSC store fault test", &[]) else { return };
    let server = r._server.as_ref().unwrap();
    let (_dir, a, _b) = replicas_with(&r.url, "command_timeout = \"200ms\"\n").await;
    let mut browser = Browser::new();
    let (first, _) = h1_from(&a, HOME, browser.get(&a, "/app")).await;
    assert_eq!(browser.register(&a, &first).await, 200);
    let id = browser.session_id.clone().unwrap();
    let (parts, _) = h1_from(&a, HOME, post(&a, "/.tether/dbsc/refresh", &browser.cookies(), &[("sec-secure-session-id", format!("\"{id}\""))])).await;
    let (challenge, _) = challenge_of(&parts);
    let proof = browser.proof(&challenge, false);
    // Redis freezes: the binding is still known here, but whether the challenge was
    // answered before cannot be.
    server.signal("-STOP");
    let headers = [("sec-secure-session-id", format!("\"{id}\"")), ("secure-session-response", format!("\"{proof}\""))];
    let (parts, _) = h1_from(&a, HOME, post(&a, "/.tether/dbsc/refresh", &browser.cookies(), &headers)).await;
    server.signal("-CONT");
    assert_eq!(parts.status, 503, "unavailable: a new challenge would have the browser sign again for nothing");
    assert!(parts.headers.get("secure-session-challenge").is_none());
}
