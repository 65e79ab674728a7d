//! Whose session it is, against the real OpenID provider: silent identification, the
//! console's response header, a step-up that completes only as the owner, and the
//! contexts a session was proven in.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::idp::{self, Browser, Idp};
use crate::support::*;

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const HOME: &str = "127.0.0.1";
const MULLVAD: &str = "127.0.2.10";

/// The config sections (after `[upstream] url`) for tether in enforce mode against the
/// test IdP, with `step_up_extra` and `upstream_extra` in their sections and no trusted
/// user header: owners come only from what the test configures.
fn sections(idp: &Idp, step_up_extra: &str, upstream_extra: &str) -> String {
    let sections = detector_sections("enforce", "").replace("[audit]\n", "[audit]\nallowed = true\n");
    let sections = with_step_up(&sections, &idp::step_up_section(idp, idp::SECRET_CLIENT, step_up_extra));
    // Keys right after start_tls's `[upstream] url` line belong to that section.
    format!("{upstream_extra}\n{sections}")
}

async fn tether(idp: &Idp, step_up_extra: &str, upstream_extra: &str) -> Tether {
    let up = spawn_upstream(None).await;
    start_tls(&format!("http://{up}"), "", &sections(idp, step_up_extra, upstream_extra)).await
}

fn page(t: &Tether, cookie: &str, path: &str) -> Request<Full<Bytes>> {
    get(t, path)
        .header("cookie", cookie)
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Delivers the IdP's redirect to tether from `src`, for the session in `cookie`.
async fn deliver(t: &Tether, src: &str, cookie: &str, callback: &str) -> http::response::Parts {
    let path = callback.strip_prefix("https://tether.test").unwrap();
    h1_from(t, src, page(t, cookie, path)).await.0
}

fn location(parts: &http::response::Parts) -> String {
    parts.headers["location"].to_str().unwrap().to_owned()
}

/// Gives `browser` a session at the IdP as `login`: a throwaway tether session's
/// identification, answered with a real login (prompt=login instead of none).
async fn sign_in_at_idp(t: &Tether, idp: &Idp, browser: &mut Browser, login: &str) {
    let cookie = format!("session=warm-up-{login}");
    let (parts, _) = h1_from(t, HOME, page(t, &cookie, "/")).await;
    assert_eq!(parts.status, 303, "identification redirect");
    let authorize = location(&parts).replace("prompt=none", "prompt=login");
    let callback = browser.login(idp, &authorize, login, None, None).await;
    assert_eq!(deliver(t, HOME, &cookie, &callback).await.status, 303);
}

/// A session born at home in a browser that holds alice's IdP session, identified
/// silently: no login page.
async fn identified_at_home(t: &Tether, idp: &Idp, browser: &mut Browser, cookie: &str) {
    let (parts, _) = h1_from(t, HOME, page(t, cookie, "/projects?tab=2")).await;
    assert_eq!(parts.status, 303);
    let authorize = location(&parts);
    assert!(authorize.contains("prompt=none"), "{authorize}");
    assert!(!authorize.contains("max_age") && !authorize.contains("prompt=login"), "{authorize}");
    let callback = browser.follow(idp, &authorize).await;
    assert!(callback.contains("code="), "{callback}");
    let parts = deliver(t, HOME, cookie, &callback).await;
    assert_eq!(parts.status, 303);
    assert_eq!(location(&parts), "/projects?tab=2", "back where it was");
    let lines = audit_until(t, |l| l.iter().any(|x| x["event"] == "owner_learned" && x["detail"] == "silent" && x["user"] == "alice")).await;
    assert!(lines.iter().all(|l| l["event"] != "step_up_completed"), "an identification is no step-up");
    let (parts, _) = h1_from(t, HOME, page(t, cookie, "/projects?tab=2")).await;
    assert_eq!(parts.status, 200, "identified, the owner carries on");
}

#[tokio::test]
async fn the_owner_is_identified_silently_steps_up_from_a_vpn_and_goes_home_unchallenged() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether(idp, "identify = \"silent\"", "").await;
    let mut owner = Browser::default();
    sign_in_at_idp(&t, idp, &mut owner, "alice").await;
    let cookie = "session=alice-laptop";
    identified_at_home(&t, idp, &mut owner, cookie).await;

    // From Mullvad: a step-up, with alice as the hint; she passes it.
    let (parts, _) = h1_from(&t, MULLVAD, page(&t, cookie, "/projects")).await;
    assert_eq!(parts.status, 303);
    let authorize = location(&parts);
    assert!(authorize.contains("prompt=login") && authorize.contains("max_age=0") && authorize.contains("login_hint=alice"), "{authorize}");
    let callback = owner.login(idp, &authorize, "alice", None, None).await;
    assert_eq!(deliver(&t, MULLVAD, cookie, &callback).await.status, 303);
    audit_event(&t, "step_up_completed", "user", "alice").await;

    // Both contexts are proven now: home, the VPN exit, home again, none challenged.
    for (from, what) in [(MULLVAD, "the exit it stepped up on"), (HOME, "where it was born"), (MULLVAD, "the exit again"), (HOME, "home again")] {
        let (parts, _) = h1_from(&t, from, page(&t, cookie, "/projects")).await;
        assert_eq!(parts.status, 200, "{what}");
    }
    let lines = audit_until(&t, |_| true).await;
    let after_step_up = lines.iter().skip_while(|l| l["event"] != "step_up_completed");
    let challenged: Vec<_> = after_step_up.filter(|l| l["event"] == "decision" && l["action"] != "allow").collect();
    assert!(challenged.is_empty(), "{challenged:?}");

    // An API client is never sent to the IdP: a new session of it is judged at once.
    let api = get(&t, "/api/v2/projects").header("cookie", "session=api-client").header("accept", "application/json").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h1_from(&t, HOME, api).await.0.status, 200);
    assert_eq!(t.metric("tether_step_ups_total{result=\"redirect\",stage=\"identify\"}").await, 2.0);
}

#[tokio::test]
async fn a_thief_who_steps_up_as_another_user_is_refused_and_the_session_revoked() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether(idp, "identify = \"silent\"", "").await;
    let mut owner = Browser::default();
    sign_in_at_idp(&t, idp, &mut owner, "alice").await;
    let cookie = "session=alice-stolen";
    identified_at_home(&t, idp, &mut owner, cookie).await;

    // The thief has only the cookie, and an account of their own at the same IdP.
    let mut thief = Browser::default();
    let (parts, _) = h1_from(&t, MULLVAD, page(&t, cookie, "/admin/users")).await;
    assert_eq!(parts.status, 303);
    let callback = thief.login(idp, &location(&parts), "mallory", None, None).await;
    let parts = deliver(&t, MULLVAD, cookie, &callback).await;
    assert_eq!(parts.status, 403);
    let lines = audit_event(&t, "session_revoked", "detail", "wrong_user").await;
    let failed = lines.iter().find(|l| l["event"] == "step_up_failed").expect("step_up_failed audited");
    assert_eq!((failed["detail"].as_str(), failed["user"].as_str(), failed["claimed_user"].as_str()), (Some("wrong_user"), Some("alice"), Some("mallory")));
    assert_eq!(t.metric("tether_revocations_total{source=\"wrong_user\"}").await, 1.0);
    assert_eq!(t.metric("tether_step_ups_total{result=\"wrong_user\",stage=\"callback\"}").await, 1.0);
    // Revoked for everyone: the thief and the owner at home alike.
    assert_eq!(h1_from(&t, MULLVAD, page(&t, cookie, "/admin/users")).await.0.status, 403);
    assert_eq!(h1_from(&t, HOME, page(&t, cookie, "/")).await.0.status, 403);
}

#[tokio::test]
async fn a_session_whose_owner_is_unknown_is_not_unlocked_unless_adopted() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    for (unknown_owner, unlocked) in [("", false), ("unknown_owner = \"refuse\"", false), ("unknown_owner = \"adopt\"", true)] {
        let t = tether(idp, unknown_owner, "").await;
        let cookie = "session=nobody-knows";
        assert_eq!(h1_from(&t, HOME, page(&t, cookie, "/")).await.0.status, 200, "no identification without identify = silent");
        let (parts, _) = h1_from(&t, MULLVAD, page(&t, cookie, "/")).await;
        assert_eq!(parts.status, 303);
        let callback = Browser::default().login(idp, &location(&parts), "mallory", None, None).await;
        let parts = deliver(&t, MULLVAD, cookie, &callback).await;
        let after = h1_from(&t, MULLVAD, page(&t, cookie, "/")).await.0.status;
        if unlocked {
            assert_eq!(parts.status, 303, "{unknown_owner}");
            assert_eq!(after, 200, "{unknown_owner}");
            audit_event(&t, "step_up_completed", "user", "mallory").await;
        } else {
            assert_eq!(parts.status, 403, "{unknown_owner}");
            assert_eq!(after, 303, "{unknown_owner}: still challenged");
            audit_event(&t, "step_up_failed", "detail", "unknown_owner").await;
            assert_eq!(t.metric("tether_revocations_total{source=\"wrong_user\"}").await, 0.0);
        }
    }
}

#[tokio::test]
async fn an_identification_without_an_idp_session_falls_back_to_the_policy() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether(idp, "identify = \"silent\"", "").await;
    let cookie = "session=not-signed-in";
    let (parts, _) = h1_from(&t, HOME, page(&t, cookie, "/reports")).await;
    assert_eq!(parts.status, 303);
    // No IdP session: the IdP answers login_required to the callback.
    let callback = Browser::default().follow(idp, &location(&parts)).await;
    assert!(callback.contains("error=login_required"), "{callback}");
    let parts = deliver(&t, HOME, cookie, &callback).await;
    assert_eq!((parts.status, location(&parts).as_str()), (http::StatusCode::SEE_OTHER, "/reports"));
    audit_event(&t, "identify_failed", "detail", "login_required").await;
    // Not sent again (no loop): judged by the policy, which allows home.
    assert_eq!(h1_from(&t, HOME, page(&t, cookie, "/reports")).await.0.status, 200);
    assert_eq!(t.metric("tether_step_ups_total{result=\"login_required\",stage=\"identify\"}").await, 1.0);
    // Nothing counted against the session: an identification is never a failure.
    assert_eq!(t.metric("tether_step_ups_total{result=\"login_required\",stage=\"callback\"}").await, 0.0);
}

#[tokio::test]
async fn the_consoles_response_header_names_the_owner_and_never_reaches_the_client() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether(idp, "", "user_response_header = \"x-auth-request-user\"").await;
    let cookie = "session=console-knows";
    let named = |user: &str| get(&t, "/").header("cookie", cookie).header("user-agent", CHROME).header("accept", "text/html").header("x-test-respond-user", user).body(Full::new(Bytes::new())).unwrap();
    let (parts, _) = h1_from(&t, HOME, named("alice")).await;
    assert_eq!(parts.status, 200);
    assert!(!parts.headers.contains_key("x-auth-request-user"), "stripped");
    audit_event(&t, "owner_learned", "detail", "response_header").await;
    // A second, different name for the same session is refused and audited.
    let (parts, _) = h1_from(&t, HOME, named("bob")).await;
    assert!(!parts.headers.contains_key("x-auth-request-user"));
    let lines = audit_event(&t, "owner_conflict", "claimed_user", "bob").await;
    let conflict = lines.iter().find(|l| l["event"] == "owner_conflict").unwrap();
    assert_eq!((conflict["detail"].as_str(), conflict["user"].as_str()), (Some("refused"), Some("alice")));
    // Two names in one response name nobody (and are stripped all the same).
    let (parts, _) = h1_from(&t, HOME, get(&t, "/").header("cookie", "session=two-names").header("x-test-respond-user", "carol|dave").body(Full::new(Bytes::new())).unwrap()).await;
    assert!(!parts.headers.contains_key("x-auth-request-user"));
    // The owner it named is the one a step-up must show.
    let (parts, _) = h1_from(&t, MULLVAD, page(&t, cookie, "/")).await;
    assert!(location(&parts).contains("login_hint=alice"));
    let callback = Browser::default().login(idp, &location(&parts), "alice", None, None).await;
    assert_eq!(deliver(&t, MULLVAD, cookie, &callback).await.status, 303);
    assert_eq!(h1_from(&t, MULLVAD, page(&t, cookie, "/")).await.0.status, 200);
    let lines = audit_until(&t, |_| true).await;
    assert!(!lines.iter().any(|l| l["user"] == "carol" || l["user"] == "dave"), "an ambiguous response names no owner");
}

#[tokio::test]
async fn a_form_post_that_needs_a_step_up_gets_a_page_that_returns_to_the_form() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether(idp, "", "user_response_header = \"x-auth-request-user\"").await;
    let cookie = "session=form-filler";
    let at_home = get(&t, "/").header("cookie", cookie).header("accept", "text/html").header("x-test-respond-user", "alice").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h1_from(&t, HOME, at_home).await.0.status, 200);
    let port = t.addr().port();
    let form = |content_type: &str, accept: &str| {
        Request::post("/projects/7/settings")
            .header("host", format!("localhost:{port}"))
            .header("cookie", cookie)
            .header("user-agent", CHROME)
            .header("accept", accept)
            .header("content-type", content_type)
            .header("referer", format!("https://localhost:{port}/projects/7/edit?step=2"))
            .body(Full::new(Bytes::from_static(b"name=x")))
            .unwrap()
    };
    // (content type, accept, a page?)
    let rows = [
        ("application/x-www-form-urlencoded", "text/html,application/xhtml+xml", true),
        ("multipart/form-data; boundary=x", "text/html", true),
        ("application/json", "text/html", false),
        ("application/x-www-form-urlencoded", "application/json", false),
    ];
    let mut link = None;
    for (content_type, accept, is_page) in rows {
        let (parts, body) = h1_from(&t, MULLVAD, form(content_type, accept)).await;
        assert_eq!(parts.status, 401, "{content_type} {accept}");
        assert!(parts.headers["www-authenticate"].to_str().unwrap().contains("insufficient_user_authentication"));
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(body.contains("<a href="), is_page, "{content_type} {accept}: {body}");
        if is_page {
            let start = body.find("<a href=\"").unwrap() + 9;
            link = Some(body[start..start + body[start..].find('"').unwrap()].replace("&amp;", "&"));
        }
    }
    let link = link.unwrap();
    assert!(link.starts_with(&idp.issuer) && link.contains("prompt=login"), "{link}");
    let callback = Browser::default().login(idp, &link, "alice", None, None).await;
    let parts = deliver(&t, MULLVAD, cookie, &callback).await;
    assert_eq!(parts.status, 303);
    assert_eq!(location(&parts), "/projects/7/edit?step=2", "back to the form's page");
}

#[tokio::test]
async fn replaying_the_audit_log_of_a_live_run_gives_its_decisions_back() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let upstream_extra = "user_response_header = \"x-auth-request-user\"";
    let t = tether(idp, "", upstream_extra).await;
    let cookie = "session=replayed-day";
    let named = |t: &Tether| get(t, "/projects").header("cookie", cookie).header("user-agent", CHROME).header("accept", "text/html").header("x-test-respond-user", "alice").body(Full::new(Bytes::new())).unwrap();
    // At home (the console names alice), from Mullvad (challenged), the step-up, then both
    // places allowed; a second session stolen and stepped up by mallory: revoked.
    assert_eq!(h1_from(&t, HOME, named(&t)).await.0.status, 200);
    audit_event(&t, "owner_learned", "user", "alice").await;
    let (parts, _) = h1_from(&t, MULLVAD, named(&t)).await;
    assert_eq!(parts.status, 303);
    let callback = Browser::default().login(idp, &location(&parts), "alice", None, None).await;
    assert_eq!(deliver(&t, MULLVAD, cookie, &callback).await.status, 303);
    for from in [MULLVAD, HOME, MULLVAD] {
        assert_eq!(h1_from(&t, from, named(&t)).await.0.status, 200);
    }
    let stolen = "session=stolen-one";
    let as_owner = get(&t, "/").header("cookie", stolen).header("user-agent", CHROME).header("accept", "text/html").header("x-test-respond-user", "alice").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(h1_from(&t, HOME, as_owner).await.0.status, 200);
    let (parts, _) = h1_from(&t, MULLVAD, page(&t, stolen, "/")).await;
    let callback = Browser::default().login(idp, &location(&parts), "mallory", None, None).await;
    assert_eq!(deliver(&t, MULLVAD, stolen, &callback).await.status, 403);
    assert_eq!(h1_from(&t, HOME, page(&t, stolen, "/")).await.0.status, 403);
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"] == "decision").count() >= 8).await;
    let live: Vec<_> = lines.iter().filter(|l| l["event"] == "decision").collect();

    let dir = t.certs.dir.path();
    let config = dir.join("replay.toml");
    std::fs::write(&config, format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{}", sections(idp, "", upstream_extra))).unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether")).args(["replay", "--json", "--config"]).arg(&config).arg(dir.join("audit.jsonl")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut v: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary = v.pop().unwrap();
        (v, summary)
    };
    let (replayed, summary) = run();
    assert_eq!(replayed.len(), live.len(), "{replayed:?}");
    for (l, r) in live.iter().zip(&replayed) {
        // The audit log's own session ids, and the live decisions.
        assert_eq!((&l["session"], &l["ip"], &l["action"], &l["reasons"]), (&r["session"], &r["ip"], &r["action"], &r["reasons"]), "live {l}\nreplay {r}");
    }
    assert!(summary["summary"]["applied"].as_u64().unwrap() >= 3, "{summary}");
    // Stable across runs.
    assert_eq!(run().0, replayed);
}
