//! A real console behind tether: a Django admin (tests/console, from PyPI), configured as
//! docs/consoles.md says, naming its signed-in user in a response header. The
//! flows that matter, against it and the real OpenID provider: signing in through tether,
//! the owner learned from the console, a thief with the stolen `sessionid` who steps up as
//! someone else, and the owner who steps up from a VPN and keeps working.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::idp::{self, Browser, Idp};
use crate::support::*;

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const HOME: &str = "127.0.0.1";
const MULLVAD: &str = "127.0.2.10";

struct Console {
    port: u16,
    _dir: tempfile::TempDir,
    _child: Child,
    // Held open: the console exits when its standard input closes.
    _stdin: ChildStdin,
}

/// The Django admin, or `None` (with a message) when its virtualenv is not installed and
/// this is not CI. The test command installs it (tests/console/.venv).
fn console() -> Option<Console> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let python = std::env::var_os("TETHER_TEST_DJANGO_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
    if !python.exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{} is missing: the test command installs Django there", python.display());
        eprintln!("skipping the console tests: run scripts/test.sh once to install Django");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&python)
        .arg(root.join("console.py"))
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let stdin = child.stdin.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("unexpected console output {line:?}"));
    Some(Console { port: v["port"].as_u64().unwrap() as u16, _dir: dir, _child: child, _stdin: stdin })
}

async fn tether_before(console: &Console, idp: &Idp) -> Tether {
    let sections = detector_sections("enforce", "").replace("cookies = [\"session\"]", "cookies = [\"sessionid\"]");
    let sections = with_step_up(&sections, &idp::step_up_section(idp, idp::SECRET_CLIENT, ""));
    let rest = format!("user_response_header = \"x-auth-request-user\"\n{sections}");
    start_tls(&format!("http://127.0.0.1:{}", console.port), "", &rest).await
}

/// `name=value` of each `Set-Cookie` in `parts`.
fn set_cookies(parts: &http::response::Parts) -> Vec<(String, String)> {
    parts
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next()?.split_once('=').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
        .collect()
}

fn cookie<'a>(jar: &'a [(String, String)], name: &str) -> &'a str {
    jar.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name} cookie in {jar:?}"))
}

/// Signs `user` in to the Django admin through tether from home: the login form, then its
/// POST (which Django refuses unless it knows the request was HTTPS). Returns the
/// `sessionid`.
async fn sign_in(t: &Tether, user: &str) -> String {
    let port = t.addr().port();
    let (parts, body) = h1_from(t, HOME, get(t, "/admin/login/?next=/admin/").header("user-agent", CHROME).header("accept", "text/html").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(parts.status, 200);
    let jar = set_cookies(&parts);
    let csrf_cookie = cookie(&jar, "csrftoken").to_owned();
    let html = String::from_utf8_lossy(&body);
    let at = html.find("name=\"csrfmiddlewaretoken\" value=\"").expect("the login form") + "name=\"csrfmiddlewaretoken\" value=\"".len();
    let token = &html[at..at + html[at..].find('"').unwrap()];
    let form = format!("csrfmiddlewaretoken={token}&username={user}&password=correct+horse&next=%2Fadmin%2F");
    let post = Request::post("/admin/login/?next=/admin/")
        .header("host", format!("localhost:{port}"))
        .header("user-agent", CHROME)
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", format!("https://localhost:{port}"))
        .header("referer", format!("https://localhost:{port}/admin/login/?next=/admin/"))
        .header("cookie", format!("csrftoken={csrf_cookie}"))
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let (parts, body) = h1_from(t, HOME, post).await;
    assert_eq!(parts.status, 302, "the login POST: {}", String::from_utf8_lossy(&body));
    assert_eq!(parts.headers["location"], "/admin/");
    let session = parts.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).find(|v| v.starts_with("sessionid=")).expect("a session cookie").to_owned();
    assert!(session.contains("Secure") && session.contains("HttpOnly"), "{session}");
    cookie(&set_cookies(&parts), "sessionid").to_owned()
}

fn admin_page(t: &Tether, sessionid: &str, path: &str) -> Request<Full<Bytes>> {
    get(t, path).header("cookie", format!("sessionid={sessionid}")).header("user-agent", CHROME).header("accept", "text/html").body(Full::new(Bytes::new())).unwrap()
}

async fn deliver(t: &Tether, src: &str, sessionid: &str, callback: &str) -> http::response::Parts {
    h1_from(t, src, admin_page(t, sessionid, callback.strip_prefix("https://tether.test").unwrap())).await.0
}

#[tokio::test]
async fn a_django_admin_behind_tether_names_its_owner_and_a_thief_who_steps_up_as_someone_else_is_revoked() {
    let (Some(idp), Some(console)) = (idp::idp(), console()) else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_before(&console, idp).await;

    // Alice signs in at home; the admin names her, tether learns it and strips the header.
    let stolen = sign_in(&t, "alice").await;
    let (parts, body) = h1_from(&t, HOME, admin_page(&t, &stolen, "/admin/")).await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&body).contains("alice"), "the admin's own page");
    assert!(!parts.headers.contains_key("x-auth-request-user"), "stripped");
    audit_event(&t, "owner_learned", "user", "alice").await;

    // The thief replays the sessionid from Mullvad and signs in at the IdP as mallory.
    let (parts, _) = h1_from(&t, MULLVAD, admin_page(&t, &stolen, "/admin/auth/user/")).await;
    assert_eq!(parts.status, 303);
    let authorize = parts.headers["location"].to_str().unwrap().to_owned();
    assert!(authorize.contains("login_hint=alice"), "{authorize}");
    let callback = Browser::default().login(idp, &authorize, "mallory", None, None).await;
    assert_eq!(deliver(&t, MULLVAD, &stolen, &callback).await.status, 403);
    audit_event(&t, "session_revoked", "detail", "wrong_user").await;
    // The stolen session is dead everywhere; the admin never saw the thief.
    assert_eq!(h1_from(&t, MULLVAD, admin_page(&t, &stolen, "/admin/auth/user/")).await.0.status, 403);
    assert_eq!(h1_from(&t, HOME, admin_page(&t, &stolen, "/admin/")).await.0.status, 403);

    // Alice signs in again, travels, steps up from the VPN as herself, and keeps working
    // there and back home.
    let mine = sign_in(&t, "alice").await;
    assert_eq!(h1_from(&t, HOME, admin_page(&t, &mine, "/admin/")).await.0.status, 200);
    let (parts, _) = h1_from(&t, MULLVAD, admin_page(&t, &mine, "/admin/auth/user/")).await;
    assert_eq!(parts.status, 303);
    let callback = Browser::default().login(idp, parts.headers["location"].to_str().unwrap(), "alice", None, None).await;
    let parts = deliver(&t, MULLVAD, &mine, &callback).await;
    assert_eq!((parts.status.as_u16(), parts.headers["location"].to_str().unwrap()), (303, "/admin/auth/user/"));
    for from in [MULLVAD, HOME] {
        let (parts, body) = h1_from(&t, from, admin_page(&t, &mine, "/admin/auth/user/")).await;
        assert_eq!(parts.status, 200, "from {from}");
        assert!(String::from_utf8_lossy(&body).contains("mallory"), "the user list, served by the admin");
    }
}
