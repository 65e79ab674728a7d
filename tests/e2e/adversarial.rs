//! Spellings a thief uses to walk around the judgement: every row of the table is sent
//! as raw bytes at a running tether, in front of an upstream that echoes exactly what it
//! received. For every row the thief is refused, or judged as the victim's session; the
//! upstream never receives the victim's credential or a sensitive path unjudged.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

use super::support::*;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const HOME: &str = "127.0.0.1";
const MULLVAD: &str = "127.0.2.10";
const SYDNEY: &str = "127.0.4.20";

/// Routes a console would protect: token minting (any method), deletion (DELETE only),
/// and Django-style object pages with the id in the middle.
const ROUTES: &str = "[[policy.routes]]\npath_prefix = \"/console/tokens\"\nfresh_auth = \"5m\"\n\
[[policy.routes]]\npath_prefix = \"/console/items\"\nmethods = [\"DELETE\"]\nfresh_auth = \"5m\"\n\
[[policy.routes]]\npath = \"/admin/*/*/*/delete/\"\nfresh_auth = \"5m\"\n\
[[policy.routes]]\npath = \"/admin/**/password/\"\nfresh_auth = \"5m\"\n";

async fn start() -> Tether {
    let up = spawn_upstream(None).await;
    start_tls(&format!("http://{up}"), "", &detector_sections("enforce", ROUTES)).await
}

/// One raw HTTP/1.1 request from `src`; the status and the body.
async fn raw(addr: SocketAddr, certs: &Certs, src: &str, head: &str) -> (u16, String) {
    let mut tls = tls_connect_from(src.parse().unwrap(), addr, certs, "localhost", &[b"http/1.1"]).await;
    tls.write_all(head.as_bytes()).await.unwrap();
    let bytes = tokio::time::timeout(HANG_GUARD, read_to_close(&mut tls)).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn request(t: &Tether, method: &str, target: &str, extra: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nhost: localhost:{}\r\nuser-agent: {CHROME}\r\naccept: text/html\r\nconnection: close\r\n{extra}\r\n",
        t.addr().port()
    )
}

/// The victim binds `cookie` at home with a plain request.
async fn bind(t: &Tether, value: &str) {
    let (status, _) = raw(t.addr(), &t.certs, HOME, &request(t, "GET", "/app", &format!("cookie: session={value}\r\n"))).await;
    assert_eq!(status, 200, "binding {value}");
}

/// Refused or stepped up; if anything reached the upstream it was judged, so it must not
/// be a 200 carrying the victim's value.
fn judged_or_refused(case: &str, status: u16, body: &str, victim: &str) {
    assert!(matches!(status, 303 | 400 | 401 | 403), "{case}: status {status}, body {body}");
    assert!(!(status == 200 && body.contains(victim)), "{case}: the upstream received the victim's credential");
}

#[tokio::test]
async fn credential_spellings_are_refused_or_judged_as_the_victim() {
    let t = start().await;
    // (case, source, extra header lines with {V} for the victim's value, expected refusal)
    let rows: &[(&str, &str, &str, bool)] = &[
        ("comma before the session cookie", MULLVAD, "cookie: x=1, session={V}\r\n", true),
        ("space before the session cookie", MULLVAD, "cookie: x=1 session={V}\r\n", true),
        ("Basic then Bearer", MULLVAD, "authorization: Basic eDp5\r\nauthorization: Bearer {V}\r\n", true),
        ("dummy then the victim's cookie", MULLVAD, "cookie: session=DUMMY; session={V}\r\n", true),
        ("two Cookie headers", MULLVAD, "cookie: session=DUMMY\r\ncookie: session={V}\r\n", true),
        ("dummy cookie and the stolen bearer", MULLVAD, "cookie: session=DUMMY\r\nauthorization: Bearer {V}\r\n", true),
        ("two session cookies of one name, case apart", MULLVAD, "cookie: session=DUMMY; SESSION={V}\r\n", true),
        ("value with a comma tail", MULLVAD, "cookie: session={V}, x=1\r\n", true),
        ("bearer after a tab", MULLVAD, "authorization: Bearer\t{V}\r\n", false),
        ("percent-encoded value from abroad", SYDNEY, "cookie: session=%{HEX}\r\n", false),
        ("quoted value from abroad", SYDNEY, "cookie: session=\"{V}\"\r\n", false),
        ("encoded name from abroad", SYDNEY, "cookie: %73ession={V}\r\n", false),
        ("upper-case name from abroad", SYDNEY, "cookie: SESSION={V}\r\n", false),
    ];
    for (i, &(case, src, extra, refused)) in rows.iter().enumerate() {
        let victim = format!("victim{i}");
        bind(&t, &victim).await;
        let hex: String = victim.bytes().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join("%");
        let extra = extra.replace("{V}", &victim).replace("{HEX}", &hex);
        let (status, body) = raw(t.addr(), &t.certs, src, &request(&t, "GET", "/app", &extra)).await;
        judged_or_refused(case, status, &body, &victim);
        if refused {
            assert_eq!(status, 400, "{case}");
        } else {
            assert_ne!(status, 400, "{case}: judged, not refused");
        }
    }
    // Every refusal is in the audit log, with its reason.
    let lines = audit_until(&t, |l| l.iter().filter(|x| x["event"] == "request_refused").count() >= 8).await;
    assert!(lines.iter().filter(|l| l["event"] == "request_refused").all(|l| l["detail"].is_string()));
}

#[tokio::test]
async fn path_spellings_of_a_sensitive_route_are_stepped_up() {
    let t = start().await;
    bind(&t, "owner").await;
    let cookie = "cookie: session=owner\r\n";
    let (status, _) = raw(t.addr(), &t.certs, HOME, &request(&t, "GET", "/console/other", cookie)).await;
    assert_eq!(status, 200, "control: an ordinary page");
    for target in [
        "/console/tokens",
        "/console/%74okens",
        "/console/%2574okens",
        "//console/tokens",
        "/console//tokens",
        "/./console/tokens",
        "/console/x/../tokens",
        "/console/tokens;v=1",
        "/console%2Ftokens",
        "/console%2ftokens",
        "\\console\\tokens",
        "/console\\tokens",
        "/console/tokens/..;/tokens",
        "/admin/auth/%75ser/2/password/",
        "/admin/auth/user/2/password/",
        "/admin/inventory/widget/%31/delete/",
        "/admin/inventory/widget/1/delete/",
    ] {
        let (status, body) = raw(t.addr(), &t.certs, HOME, &request(&t, "GET", target, cookie)).await;
        // A target that is not origin-form (`\console`) is refused by the HTTP parser
        // itself; everything else is judged on the route it names.
        if target.starts_with('\\') {
            assert_eq!(status, 400, "{target}: {body}");
        } else {
            assert_eq!(status, 303, "{target}: {body}");
        }
    }
}

#[tokio::test]
async fn method_overrides_are_judged_as_the_overriding_method() {
    let t = start().await;
    bind(&t, "owner").await;
    let cookie = "cookie: session=owner\r\ncontent-length: 0\r\n";
    let (status, _) = raw(t.addr(), &t.certs, HOME, &request(&t, "POST", "/console/items/1", cookie)).await;
    assert_eq!(status, 200, "control: a POST the route does not cover");
    for (case, method, target, extra) in [
        ("DELETE", "DELETE", "/console/items/1", ""),
        ("X-HTTP-Method-Override", "POST", "/console/items/1", "x-http-method-override: DELETE\r\n"),
        ("X-Method-Override", "POST", "/console/items/1", "x-method-override: delete\r\n"),
        ("X-HTTP-Method", "POST", "/console/items/1", "x-http-method: DELETE\r\n"),
        ("_method", "POST", "/console/items/1?_method=DELETE", ""),
    ] {
        let (status, body) = raw(t.addr(), &t.certs, HOME, &request(&t, method, target, &format!("{cookie}{extra}"))).await;
        assert_eq!(status, 401, "{case}: {body}");
    }
    let (status, _) = raw(t.addr(), &t.certs, HOME, &request(&t, "delete", "/console/items/1", cookie)).await;
    assert_eq!(status, 400, "a lower-case method is refused");
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_the_upstream_as_one_header() {
    let t = start().await;
    bind(&t, "crumbs").await;
    let req = get(&t, "/app")
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .header("cookie", "a=1")
        .header("cookie", "session=crumbs")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = h2(&t, req).await;
    assert_eq!(parts.status, 200);
    let echo = json(&body);
    assert_eq!(seen(&echo, "cookie"), vec!["a=1; session=crumbs; b=2"]);
}

/// Raw HTTP/1.1 over plain TCP from `src`; the status and the whole answer.
async fn raw_plain(addr: SocketAddr, src: &str, head: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src.parse().unwrap(), 0)).unwrap();
    let mut tcp = socket.connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let bytes = read_to_close(&mut tcp).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

/// The step-up callback a redirect names is a host tether really serves: one
/// `step_up.public_hosts` lists or the listener's certificate names, never whatever Host
/// the client sent.
#[tokio::test]
async fn the_step_up_callback_never_names_a_host_the_client_chose() {
    let up = spawn_upstream(None).await;
    let c = certs();
    let sections = detector_sections("enforce", "").replace("client_id = \"tether\"\n", "client_id = \"tether\"\npublic_hosts = [\"admin.example\"]\n");
    let text = format!("[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n{sections}");
    let t = start_text(&text, c).await;
    let get = |host: &str| format!("GET /app HTTP/1.1\r\nhost: {host}\r\nuser-agent: {CHROME}\r\naccept: text/html\r\ncookie: session=fresh-{host}\r\nconnection: close\r\n\r\n");
    // A first sight from a VPN exit: a step-up.
    let (status, answer) = raw_plain(t.addr(), MULLVAD, &get("admin.example")).await;
    assert_eq!(status, 303, "{answer}");
    assert!(answer.contains("redirect_uri=http%3A%2F%2Fadmin.example%2F.tether%2Fcallback"), "{answer}");
    let (status, answer) = raw_plain(t.addr(), MULLVAD, &get("evil.example")).await;
    assert_eq!(status, 401, "a client-chosen Host got a redirect: {answer}");
    assert!(!answer.contains("evil.example"));

    // check-config warns when a plaintext listener has neither setting.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    std::fs::write(&path, format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n{}", detector_sections("enforce", ""))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether")).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: step_up.redirect_uri"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The upstream receives the path as the client sent it: an encoded slash in an object id
/// keeps working, while the route was judged on the normalised form.
#[tokio::test]
async fn the_upstream_receives_the_path_as_sent() {
    let t = start().await;
    bind(&t, "ids").await;
    let (status, body) = raw(t.addr(), &t.certs, HOME, &request(&t, "GET", "/items/a%2Fb?x=1", "cookie: session=ids\r\n")).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(body.trim_start_matches(|c: char| c != '{')).unwrap_or_default();
    assert_eq!(echo["path"], "/items/a%2Fb?x=1", "{body}");
}
