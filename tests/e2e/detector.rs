//! The detector end to end: a session bound at home, replayed from VPN and datacenter
//! addresses, through the running proxy.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const COOKIE: &str = "session=s3cr3t-cookie-value-1234";

fn browser(t: &Tether, path: &str) -> Request<Full<Bytes>> {
    get(t, path)
        .header("cookie", COOKIE)
        .header("user-agent", CHROME)
        .header("accept", "text/html,application/xhtml+xml")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn api(t: &Tether, path: &str) -> Request<Full<Bytes>> {
    get(t, path).header("cookie", COOKIE).header("user-agent", CHROME).header("accept", "application/json").body(Full::new(Bytes::new())).unwrap()
}

fn query(location: &str) -> Vec<(String, String)> {
    let q = location.split_once('?').unwrap().1;
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            let v = v.replace("%3A", ":").replace("%2F", "/").replace("%40", "@");
            (k.to_owned(), v)
        })
        .collect()
}

#[tokio::test]
async fn stolen_cookie_from_vpn_and_datacenter_is_stepped_up_while_the_owner_works_on() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", &detector_sections("enforce", "")).await;
    let port = t.addr().port();

    // The owner, at home (127.0.0.1 is the fixture's Stockholm ISP).
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "/dashboard")).await;
    assert_eq!(parts.status, 200);

    // The thief, replaying the cookie from a Mullvad exit: a browser navigation is
    // redirected to the IdP with a challenge the cookie cannot answer.
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/dashboard?tab=keys")).await;
    assert_eq!(parts.status, 303);
    let location = parts.headers["location"].to_str().unwrap();
    assert!(location.starts_with("https://sso.example/authorize?"), "{location}");
    let q = query(location);
    let get = |k: &str| q.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    assert_eq!(get("response_type"), Some("code"));
    assert_eq!(get("client_id"), Some("tether"));
    assert_eq!(get("redirect_uri"), Some(format!("https://localhost:{port}/.tether/callback").as_str()));
    assert_eq!(get("prompt"), Some("login"));
    assert_eq!(get("max_age"), Some("0"));
    assert_eq!(get("acr_values"), Some("urn:example:mfa"));
    assert_eq!(get("code_challenge_method"), Some("S256"));
    for k in ["state", "nonce", "code_challenge"] {
        assert!(get(k).is_some_and(|v| v.len() >= 20), "{k} in {location}");
    }
    assert_eq!(parts.headers["cache-control"], "no-store");

    // The same cookie from Datacamp as an API call: the RFC 9470 challenge.
    let (parts, _) = h1_from(&t, "127.0.1.10", api(&t, "/api/keys")).await;
    assert_eq!(parts.status, 401);
    assert_eq!(
        parts.headers["www-authenticate"],
        r#"Bearer error="insufficient_user_authentication", error_description="A fresh authentication is required", max_age="0", acr_values="urn:example:mfa""#
    );

    // The owner is not disturbed.
    let (parts, body) = h1_from(&t, "127.0.0.1", browser(&t, "/dashboard")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(json(&body)["path"], "/dashboard");

    // A library client with the cookie, from an innocent network: still challenged.
    let req = get_req(&t, "/api/keys", "curl/7.88.1");
    let (parts, _) = h1_from(&t, "127.0.3.10", req).await;
    assert_eq!(parts.status, 401);

    // Metrics and audit record all of it, with the session as a keyed hash only.
    assert!(t.metric("tether_decisions_total{action=\"step_up\",mode=\"enforce\"}").await >= 3.0);
    assert!(t.metric("tether_signals_total{signal=\"anonymizer_network\"}").await >= 2.0);
    let lines = audit_until(&t, |l| l.len() >= 5 && l.iter().any(|x| x["event"] == "decision" && x["ip"] == "127.0.3.10")).await;
    let raw = std::fs::read_to_string(t.certs.dir.path().join("audit.jsonl")).unwrap();
    assert!(!raw.contains("s3cr3t"), "raw cookie in the audit log");
    let bound: Vec<_> = lines.iter().filter(|l| l["event"] == "session_bound").collect();
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0]["ip"], "127.0.0.1");
    assert_eq!(bound[0]["country"], "SE");
    let decisions: Vec<_> = lines.iter().filter(|l| l["event"] == "decision").collect();
    let mullvad = decisions.iter().find(|l| l["ip"] == "127.0.2.10").expect("decision for the VPN replay");
    assert_eq!(mullvad["action"], "step_up");
    assert_eq!(mullvad["asn"], 39351);
    assert_eq!(mullvad["mode"], "enforce");
    assert!(mullvad["reasons"].as_array().unwrap().iter().any(|r| r == "anonymizer_network"));
    for key in ["ts", "session", "ip", "asn", "country", "ja4", "ua", "method", "path", "action", "score", "reasons", "mode"] {
        assert!(mullvad.get(key).is_some(), "{key} missing: {mullvad}");
    }
    assert_eq!(mullvad["session"], bound[0]["session"]);
}

fn get_req(t: &Tether, path: &str, ua: &str) -> Request<Full<Bytes>> {
    get(t, path).header("cookie", COOKIE).header("user-agent", ua.to_owned()).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn monitor_mode_lets_both_through_and_records_the_would_be_action() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", &detector_sections("monitor", "")).await;
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h1_from(&t, "127.0.2.10", browser(&t, "/")).await;
    assert_eq!(parts.status, 200, "monitor mode proxies");
    let (parts, _) = h1_from(&t, "127.0.0.1", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
    // Monitor mode records what enforce would do: the VPN request would have been
    // stepped up, so it does not move the session, and the owner carrying on at home is
    // not mistaken for alternation (enforce would not have let the thief in either).
    assert_eq!(t.metric("tether_decisions_total{action=\"step_up\",mode=\"monitor\"}").await, 1.0);
    assert_eq!(t.metric("tether_decisions_total{action=\"step_up\",mode=\"enforce\"}").await, 0.0);
    assert_eq!(t.metric("tether_signals_total{signal=\"concurrent_use\"}").await, 0.0);
    let lines = audit_until(&t, |l| l.iter().any(|x| x["event"] == "decision" && x["ip"] == "127.0.2.10")).await;
    let d = lines.iter().find(|l| l["event"] == "decision" && l["ip"] == "127.0.2.10").unwrap();
    assert_eq!((d["action"].as_str(), d["mode"].as_str()), (Some("step_up"), Some("monitor")));
}

#[tokio::test]
async fn ioc_addresses_are_blocked_and_new_addresses_are_always_audited() {
    let up = spawn_upstream(None).await;
    let dir_certs = certs();
    std::fs::write(dir_certs.dir.path().join("iocs.txt"), "127.0.3.66\n").unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\nforward_decision = true\n{}",
        detector_sections("enforce", "").replace("[session]", "ioc_files = [\"iocs.txt\"]\n[session]")
    );
    let t = start_text(&text, dir_certs).await;
    let (parts, body) = h1_from(&t, "127.0.0.1", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(seen(&json(&body), "x-tether-decision"), vec!["allow"]);
    // An allowed move to the owner's phone network is still recorded: IoC lists come later.
    let (parts, _) = h1_from(&t, "127.0.3.5", browser(&t, "/")).await;
    assert_eq!(parts.status, 200);
    let (parts, body) = h1_from(&t, "127.0.3.66", api(&t, "/")).await;
    assert_eq!(parts.status, 403);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\"reference\"") && !text.contains("ioc"), "{text}");
    let lines = audit_until(&t, |l| {
        l.iter().any(|x| x["event"] == "new_address" && x["ip"] == "127.0.3.5") && l.iter().any(|x| x["event"] == "decision" && x["action"] == "block")
    })
    .await;
    assert!(lines.iter().any(|l| l["event"] == "new_address" && l["ip"] == "127.0.3.5" && l["action"] == "allow"));
    let block = lines.iter().find(|l| l["event"] == "decision" && l["action"] == "block").unwrap();
    assert!(block["reasons"].as_array().unwrap().iter().any(|r| r == "ioc_hit"));
    assert!(block["ref"].as_str().is_some_and(|r| text.contains(r)));
}

fn run_replay(config: &std::path::Path, trace: &std::path::Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["replay", "--json", "--config"])
        .arg(config)
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = lines.pop().unwrap();
    (lines, summary["summary"].clone())
}

#[tokio::test]
async fn replay_of_the_audit_log_matches_the_live_decisions() {
    let up = spawn_upstream(None).await;
    let sections = detector_sections("enforce", "").replace("[audit]\n", "[audit]\nallowed = true\n");
    let t = start_tls(&format!("http://{up}"), "", &sections).await;
    // A small day: the owner at home and on the phone, a thief from a VPN, a datacenter,
    // and with a library client; the owner carries on.
    let steps: [(&str, bool); 7] = [
        ("127.0.0.1", true),
        ("127.0.3.4", true),
        ("127.0.0.1", true),
        ("127.0.2.10", true),
        ("127.0.1.10", false),
        ("127.0.5.5", false),
        ("127.0.0.1", true),
    ];
    let mut live_status = Vec::new();
    for (src, as_browser) in steps {
        let req = if as_browser { browser(&t, "/app") } else { get_req(&t, "/api", "python-requests/2.32") };
        let (parts, _) = h1_from(&t, src, req).await;
        live_status.push(parts.status.as_u16());
    }
    assert_eq!(live_status, vec![200, 200, 200, 303, 401, 401, 200]);
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"] == "decision").count() >= 7).await;
    let live: Vec<_> = lines.iter().filter(|l| l["event"] == "decision").collect();
    assert_eq!(live.len(), 7);

    // The same config, pointed at the audit log.
    let dir = t.certs.dir.path();
    let config = dir.join("tether.toml");
    std::fs::write(
        &config,
        format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{sections}"),
    )
    .unwrap();
    let (replayed, summary) = run_replay(&config, &dir.join("audit.jsonl"));
    assert_eq!(replayed.len(), 7, "{replayed:?}");
    for (l, r) in live.iter().zip(&replayed) {
        assert_eq!((&l["ip"], &l["action"], &l["score"], &l["reasons"]), (&r["ip"], &r["action"], &r["score"], &r["reasons"]), "live {l}\nreplay {r}");
    }
    assert_eq!(summary["step_up"], 3);
    assert_eq!(summary["allow"], 4);
}

#[tokio::test]
async fn the_ecs_audit_format_is_ecs_and_replay_and_hunt_read_it() {
    let up = spawn_upstream(None).await;
    let sections = detector_sections("enforce", "").replace("[audit]\n", "[audit]\nallowed = true\nformat = \"ecs\"\n");
    let t = start_tls(&format!("http://{up}"), "", &sections).await;
    for (src, as_browser) in [("127.0.0.1", true), ("127.0.2.10", true), ("127.0.1.10", false), ("127.0.0.1", true)] {
        let req = if as_browser { browser(&t, "/app") } else { get_req(&t, "/api", "python-requests/2.32") };
        h1_from(&t, src, req).await;
    }
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"]["action"] == "decision").count() >= 4).await;
    let decisions: Vec<_> = lines.iter().filter(|l| l["event"]["action"] == "decision").collect();
    for l in &decisions {
        assert!(l["@timestamp"].is_string() && l["source"]["ip"].is_string() && l["tls"]["client"]["ja4"].is_string(), "{l}");
        assert!(l["tether"]["session"].as_str().is_some_and(|s| s.len() == 32), "{l}");
    }
    assert_eq!(decisions[1]["event"]["outcome"], "failure");
    assert_eq!(decisions[1]["source"]["as"]["number"], 39351);

    let dir = t.certs.dir.path();
    let config = dir.join("tether.toml");
    std::fs::write(&config, format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{sections}")).unwrap();
    let (replayed, _) = run_replay(&config, &dir.join("audit.jsonl"));
    assert_eq!(replayed.len(), decisions.len());
    for (l, r) in decisions.iter().zip(&replayed) {
        assert_eq!((&l["tether"]["session"], &l["tether"]["action"], &l["tether"]["reasons"]), (&r["session"], &r["action"], &r["reasons"]), "live {l}\nreplay {r}");
    }
    // hunt reads it too: the Mullvad exit as an indicator finds the session.
    let ioc = dir.join("iocs.txt");
    std::fs::write(&ioc, "127.0.2.10\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether")).args(["hunt", "--json", "--ioc"]).arg(&ioc).arg(dir.join("audit.jsonl")).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sessions"][0]["session"], decisions[0]["tether"]["session"], "{report}");
}

#[tokio::test]
async fn replay_reads_the_trace_format() {
    let dir = tempfile::tempdir().unwrap();
    let g = geolite();
    let config = dir.path().join("tether.toml");
    std::fs::write(&config, format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{}", detector_sections("enforce", "")))
        .unwrap();
    let _ = g;
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(
        &trace,
        [
            r#"{"ts":"2022-12-16T09:00:00Z","ip":"192.0.2.10","method":"GET","path":"/","headers":{"user-agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Chrome/108.0.0.0 Safari/537.36","cookie":"session=abc","accept":"text/html"},"ja4":"t13d1516h2_8daaf6152771_d8a2da3f94cd"}"#,
            r#"{"ts":"2022-12-16T09:05:00Z","ip":"178.249.214.10","method":"GET","path":"/api/v2/projects","headers":{"user-agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Chrome/108.0.0.0 Safari/537.36","cookie":"session=abc"}}"#,
            r#"{"ts":"2022-12-16T09:06:00Z","ip":"89.36.78.75","method":"POST","path":"/api/v2/tokens","session":"abc"}"#,
            r#"{"ts":"2022-12-16T09:07:00Z","ip":"192.0.2.10","method":"GET","path":"/"}"#,
            "this is not json",
        ]
        .join("\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["replay", "--json", "--config"])
        .arg(&config)
        .arg(&trace)
        .output()
        .unwrap();
    // A bad line is reported in place and makes the exit status non-zero.
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["action"], "allow");
    assert_eq!(lines[1]["action"], "step_up");
    assert!(lines[1]["reasons"].as_array().unwrap().iter().any(|r| r == "anonymizer_network"));
    assert_eq!(lines[1]["session"], lines[0]["session"]);
    // "session" instead of a cookie names the same session.
    assert_eq!(lines[2]["session"], lines[0]["session"]);
    assert_ne!(lines[2]["action"], "allow");
    assert_eq!(lines[3]["session"], serde_json::Value::Null);
    assert_eq!(lines[4]["action"], "error");
    assert_eq!(lines[5]["summary"]["errors"], 1);
    assert_eq!(lines[5]["summary"]["unjudged"], 1);
}

#[tokio::test]
async fn hunt_finds_the_sessions_that_touched_indicators_in_real_traffic() {
    let up = spawn_upstream(None).await;
    // A balancer on 127.0.0.1 passes the client address; the IoC addresses arrive that way.
    let sections = detector_sections("monitor", "").replace("[session]\n", "[session]\nuser_header = \"x-user\"\n");
    let t = start_tls(&format!("http://{up}"), "trusted_proxies = [\"127.0.0.1\"]", &sections).await;
    let via = |xff: &str, cookie: &str, user: &str, path: &str| {
        get(&t, path)
            .header("x-forwarded-for", xff.to_owned())
            .header("cookie", format!("session={cookie}"))
            .header("x-user", user.to_owned())
            .header("user-agent", CHROME)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // The engineer at home; the thief on the engineer's cookie from the incident's
    // networks (monitor mode: everything is allowed, which is exactly the case a hunt is for).
    for (xff, path) in [("192.0.2.10", "/"), ("178.249.214.10", "/api/v2/me"), ("89.36.78.109", "/api/v2/tokens"), ("192.0.2.10", "/projects")] {
        let (parts, _) = h1_from(&t, "127.0.0.1", via(xff, "engineer", "eve", path)).await;
        assert_eq!(parts.status, 200);
    }
    // Another user who never touched an indicator.
    let (parts, _) = h1_from(&t, "127.0.0.1", via("198.51.100.20", "other", "olga", "/")).await;
    assert_eq!(parts.status, 200);
    // Everything the hunt will read is written.
    audit_until(&t, |l| l.iter().any(|x| x["ip"] == "198.51.100.20")).await;
    audit_event(&t, "new_address", "ip", "178.249.214.10").await;

    let dir = t.certs.dir.path();
    let ioc = dir.join("circleci-2023.txt");
    std::fs::write(&ioc, "# published after the incident\n178.249.214.10\n89.36.78.75\n89.36.78.109\n89.36.78.135\n178.249.214.25\n72.18.132.58\n188.68.229.52\n111.90.149.55\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["hunt", "--json", "--ioc"])
        .arg(&ioc)
        .args(["--since", "2020-01-01T00:00:00Z"])
        .arg(dir.join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sessions = report["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{report}");
    let s = &sessions[0];
    assert_eq!(s["users"], serde_json::json!(["eve"]));
    assert_eq!(s["addresses"], serde_json::json!(["178.249.214.10", "89.36.78.109"]));
    assert!(s["routes"].as_array().unwrap().iter().any(|r| r == "GET /api/v2/tokens"));
    assert_eq!(report["users"][0]["user"], "eve");
    // A window before the traffic finds nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["hunt", "--ioc"])
        .arg(&ioc)
        .args(["--until", "2020-01-01T00:00:00Z"])
        .arg(dir.join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no session touched an indicator"));
}
