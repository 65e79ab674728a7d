//! Step-up against a real OpenID provider: the whole browser flow, scripted.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::idp::{self, Browser, Idp};
use crate::support::*;

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const COOKIE: &str = "session=owner-session-cookie";

/// tether with discovery against the test IdP; the owner's user is named by a trusted
/// auth layer (the X-User header from 127.0.0.1).
async fn tether_with_idp(idp: &Idp, step_up_extra: &str, policy_extra: &str) -> Tether {
    tether_with_client(idp, idp::SECRET_CLIENT, step_up_extra, policy_extra).await
}

async fn tether_with_client(idp: &Idp, client: &str, step_up_extra: &str, policy_extra: &str) -> Tether {
    let up = spawn_upstream(None).await;
    let sections = with_step_up(&detector_sections("enforce", policy_extra), &idp::step_up_section(idp, client, step_up_extra))
        .replace("[session]\n", "[session]\nuser_header = \"x-user\"\n");
    start_tls(&format!("http://{up}"), "trusted_proxies = [\"127.0.0.1\"]", &sections).await
}

fn browser(t: &Tether, path: &str) -> Request<Full<Bytes>> {
    get(t, path)
        .header("cookie", COOKIE)
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .header("x-user", "alice")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The owner binds at home, then travels to a VPN and is challenged: the redirect URL.
async fn challenged(t: &Tether) -> String {
    let (parts, _) = h1_from(t, "127.0.0.1", browser(t, "/")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h1_from(t, "127.0.2.10", browser(t, "/projects?x=1")).await;
    assert_eq!(parts.status, 303);
    parts.headers["location"].to_str().unwrap().to_owned()
}

/// Delivers the IdP's redirect to tether from `src`.
async fn deliver(t: &Tether, src: &str, callback: &str) -> http::response::Parts {
    let path = callback.strip_prefix("https://tether.test").unwrap();
    let (parts, _) = h1_from(t, src, browser(t, path)).await;
    parts
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_stepped_up_session_continues_from_its_new_context() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with_idp(idp, "acr_values = \"urn:example:mfa\"", "").await;
    let authorize = challenged(&t).await;
    assert!(authorize.starts_with(&format!("{}/auth?", idp.issuer)), "{authorize}");
    assert!(authorize.contains("login_hint=alice") && authorize.contains("prompt=login") && authorize.contains("max_age=0"));

    let callback = Browser::default().login(idp, &authorize, "alice", Some("urn:example:mfa"), None).await;
    let parts = deliver(&t, "127.0.2.10", &callback).await;
    assert_eq!(parts.status, 303, "callback");
    assert_eq!(parts.headers["location"], "/projects?x=1", "a GET returns where it was");

    // Re-bound to the VPN: the owner works from there now.
    let (parts, body) = h1_from(&t, "127.0.2.10", browser(&t, "/projects")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(json(&body)["path"], "/projects");
    assert_eq!(t.metric("tether_step_ups_total{result=\"completed\",stage=\"callback\"}").await, 1.0);
    let lines = audit_until(&t, |l| l.iter().any(|x| x["event"] == "step_up_completed")).await;
    let done = lines.iter().find(|l| l["event"] == "step_up_completed").expect("step_up_completed audited");
    assert_eq!(done["user"], "alice");
    assert_eq!(done["ip"], "127.0.2.10");

    // The code and state are spent: the same callback again fails closed.
    let parts = deliver(&t, "127.0.2.10", &callback).await;
    assert_eq!(parts.status, 403);
    audit_event(&t, "step_up_failed", "detail", "state_replayed_or_unknown").await;
}

/// One failed step-up: the callback is refused with `reason` in the audit log and the
/// session stays challenged.
async fn fails_with(t: &Tether, idp: &Idp, login: &str, acr: Option<&str>, auth_time: Option<u64>, mutate: Option<&str>, reason: &str) {
    let (parts, _) = h1_from(t, "127.0.2.10", browser(t, "/projects")).await;
    assert_eq!(parts.status, 303);
    let authorize = parts.headers["location"].to_str().unwrap().to_owned();
    if let Some(m) = mutate {
        idp::mutate_next_id_token(idp, m).await;
    }
    let callback = Browser::default().login(idp, &authorize, login, acr, auth_time).await;
    let parts = deliver(t, "127.0.2.10", &callback).await;
    assert_eq!(parts.status, 403, "{reason}");
    audit_event(t, "step_up_failed", "detail", reason).await;
}

#[tokio::test]
async fn each_wrong_answer_fails_closed_with_its_reason() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    // Enough failures allowed to see each one; revocation is tested separately.
    let t = tether_with_idp(idp, "acr_values = \"urn:example:mfa\"\nmax_failures = 20", "").await;
    challenged(&t).await;
    let mfa = Some("urn:example:mfa");
    // (Another user revokes the session at once: tests/e2e/owner.rs.)
    fails_with(&t, idp, "alice", mfa, Some(now() - 3600), None, "stale_auth_time").await;
    fails_with(&t, idp, "alice", None, None, None, "acr_missing").await;
    fails_with(&t, idp, "alice", Some("urn:example:pwd"), None, None, "acr_missing").await;
    fails_with(&t, idp, "alice", mfa, None, Some("bad_signature"), "bad_signature").await;
    fails_with(&t, idp, "alice", mfa, None, Some("expired"), "expired").await;
    fails_with(&t, idp, "alice", mfa, None, Some("wrong_audience"), "wrong_issuer_or_audience").await;
    // A forged state never reaches the IdP.
    let parts = deliver(&t, "127.0.2.10", "https://tether.test/.tether/callback?code=x&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(parts.status, 403);
    audit_event(&t, "step_up_failed", "detail", "state_forged").await;
    // Still challenged after all of that.
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/projects")).await;
    assert_eq!(parts.status, 303);
    assert!(t.metric("tether_step_ups_total{result=\"acr_missing\",stage=\"callback\"}").await >= 2.0);
}

#[tokio::test]
async fn the_callback_must_come_from_the_challenged_session() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with_idp(idp, "", "").await;
    let authorize = challenged(&t).await;
    let callback = Browser::default().login(idp, &authorize, "alice", None, None).await;
    // Delivered by a browser holding another session: refused.
    let path = callback.strip_prefix("https://tether.test").unwrap();
    let req = get(&t, path).header("cookie", "session=someone-else").header("accept", "text/html").body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = h1_from(&t, "127.0.2.10", req).await;
    assert_eq!(parts.status, 403);
    audit_event(&t, "step_up_failed", "detail", "session_mismatch").await;
}

#[tokio::test]
async fn repeated_failures_revoke_the_session() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with_idp(idp, "max_failures = 2", "").await;
    challenged(&t).await;
    fails_with(&t, idp, "alice", None, Some(now() - 3600), None, "stale_auth_time").await;
    fails_with(&t, idp, "alice", None, Some(now() - 3600), None, "stale_auth_time").await;
    // Revoked everywhere, the owner's home included.
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "/")).await;
    assert_eq!(parts.status, 403);
    audit_event(&t, "session_revoked", "detail", "step_up_failures").await;
}

#[tokio::test]
async fn backchannel_logout_revokes_the_session() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with_idp(idp, "", "").await;
    let authorize = challenged(&t).await;
    let callback = Browser::default().login(idp, &authorize, "alice", None, None).await;
    assert_eq!(deliver(&t, "127.0.2.10", &callback).await.status, 303);
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);

    let post = |token: String| {
        Request::post("/.tether/backchannel-logout")
            .header("host", format!("localhost:{}", t.addr().port()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("logout_token={token}"))))
            .unwrap()
    };
    // A tampered token is refused and revokes nothing.
    let good = idp::logout_token(idp, Some("alice"), None).await;
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let (parts, _) = h1(&t, post(tampered)).await;
    assert_eq!(parts.status, 400);
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);

    // The IdP's logout of alice: every session of hers is revoked.
    let (parts, _) = h1(&t, post(good.clone())).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
    assert_eq!(parts.status, 403);
    // Replayed: refused.
    let (parts, _) = h1(&t, post(good)).await;
    assert_eq!(parts.status, 400);
    audit_event(&t, "session_revoked", "detail", "backchannel_logout").await;
}

#[tokio::test]
async fn token_routes_demand_a_fresh_authentication() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let route = "[[policy.routes]]\npath_prefix = \"/api/tokens\"\nmethods = [\"POST\"]\nfresh_auth = \"5m\"\n";
    let t = tether_with_idp(idp, "", route).await;
    let api_post = |t: &Tether| {
        Request::post("/api/tokens")
            .header("host", format!("localhost:{}", t.addr().port()))
            .header("cookie", COOKIE)
            .header("user-agent", CHROME)
            .header("x-user", "alice")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
    // A valid session at home, but no recent authentication: minting a token needs one.
    let (parts, _) = h1_from(&t, "127.0.0.1", api_post(&t)).await;
    assert_eq!(parts.status, 401);
    assert_eq!(parts.headers["connection"], "close", "the unread body must not be reused");
    // Sudo mode: the owner re-authenticates in the browser, then may mint.
    let (parts, _) = h1_from(&t, "127.0.0.1", Request::get("/api/tokens").header("host", format!("localhost:{}", t.addr().port())).header("cookie", COOKIE).header("user-agent", CHROME).header("accept", "text/html").header("x-user", "alice").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(parts.status, 200, "a GET of the route is not a credential-minting method");
    let authorize = {
        // Any step-up will do: a challenge from the VPN.
        let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
        parts.headers["location"].to_str().unwrap().to_owned()
    };
    let callback = Browser::default().login(idp, &authorize, "alice", None, None).await;
    assert_eq!(deliver(&t, "127.0.2.10", &callback).await.status, 303);
    let (parts, _) = h1_from(&t, "127.0.2.10", api_post(&t)).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn private_key_jwt_client_authentication() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let client = format!(
        "client_id = \"tether-pkjwt\"\nclient_auth = \"private_key_jwt\"\nclient_private_key_file = \"{}\"\nclient_key_id = \"client-1\"",
        idp.client_key.display()
    );
    let t = tether_with_client(idp, &client, "", "").await;
    let authorize = challenged(&t).await;
    assert!(authorize.contains("client_id=tether-pkjwt"));
    let callback = Browser::default().login(idp, &authorize, "alice", None, None).await;
    assert_eq!(deliver(&t, "127.0.2.10", &callback).await.status, 303, "the code exchange authenticated with a signed assertion");
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test]
async fn client_secret_post_authentication() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with_client(idp, "client_id = \"tether-post\"\nclient_secret = \"tether-secret\"\nclient_auth = \"client_secret_post\"", "", "").await;
    let authorize = challenged(&t).await;
    let callback = Browser::default().login(idp, &authorize, "alice", None, None).await;
    assert_eq!(deliver(&t, "127.0.2.10", &callback).await.status, 303);
}

#[tokio::test]
async fn an_unreachable_idp_fails_closed() {
    // Discovery against a closed port: browsers get the 401 challenge, never access.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let up = spawn_upstream(None).await;
    let sections = with_step_up(&detector_sections("enforce", ""), &format!("[step_up]\nissuer = \"https://localhost:{port}\"\nclient_id = \"tether\"\n"));
    let t = start_tls(&format!("http://{up}"), "", &sections).await;
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
    assert_eq!(parts.status, 401);
    assert!(parts.headers.contains_key("www-authenticate"));
}
