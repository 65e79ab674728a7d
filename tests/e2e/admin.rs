//! The admin API: authenticated, GET never mutates, revocations take effect at once.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::*;

const TOKEN: &str = "0123456789abcdef-admin-token";

async fn tether_with_admin() -> Tether {
    let up = spawn_upstream(None).await;
    let c = certs();
    std::fs::write(c.dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(c.dir.path().join("client.secret"), "super-secret-value\n").unwrap();
    let sections = detector_sections("enforce", "")
        .replace("[session]\n", "[session]\nuser_header = \"x-user\"\n")
        .replace("client_id = \"tether\"\n", "client_id = \"tether\"\nclient_secret_file = \"client.secret\"\n");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\ntrusted_proxies = [\"127.0.0.1\"]\n[admin]\naddr = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n[upstream]\nurl = \"http://{up}\"\n{sections}"
    );
    std::fs::write(c.dir.path().join("tether.toml"), &text).unwrap();
    let t = start_text(&text, c).await;
    let _ = t.running.shared.config_path.set(t.certs.dir.path().join("tether.toml"));
    t
}

fn as_user(t: &Tether, cookie: &str, user: &str) -> http::Request<Full<Bytes>> {
    get(t, "/").header("cookie", format!("session={cookie}")).header("x-user", user.to_owned()).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let t = tether_with_admin().await;
    assert_eq!(t.admin("GET", "/api/policy", None).await.0, 401);
    assert_eq!(t.admin("GET", "/api/policy", Some("0123456789abcdef-admin-tokeX")).await.0, 401);
    assert_eq!(t.admin("GET", "/api/policy", Some("short")).await.0, 401);
    let (status, policy) = t.admin("GET", "/api/policy", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(policy["mode"], "enforce");
    assert_eq!(policy["weights"]["anonymizer_network"], 60);
    assert_eq!(policy["step_up"]["client_secret"], "<redacted>");
    assert!(!policy.to_string().contains("super-secret-value"));
    // Health and metrics stay open to probes and scrapers.
    assert_eq!(t.admin("GET", "/healthz", None).await.0, 200);
    assert!(t.metrics().await.contains("tether_sessions"));

    // Without a token file the API is off altogether.
    let up = spawn_upstream(None).await;
    let plain = start_tls(&format!("http://{up}"), "", "").await;
    assert_eq!(plain.admin("GET", "/api/policy", Some(TOKEN)).await.0, 404);
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_and_get_never_mutates() {
    let t = tether_with_admin().await;
    for cookie in ["alice-laptop", "alice-phone"] {
        let (parts, _) = h1_from(&t, "127.0.0.1", as_user(&t, cookie, "alice")).await;
        assert_eq!(parts.status, 200);
    }
    let (parts, _) = h1_from(&t, "127.0.0.1", as_user(&t, "bob-laptop", "bob")).await;
    assert_eq!(parts.status, 200);

    let (status, list) = t.admin("GET", "/api/sessions?user=alice", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["bound"]["country"], "SE");
    // The owner's source and where the session was proven (its clean birth at home).
    assert_eq!(sessions[0]["owner_source"], "user_header");
    assert_eq!(sessions[0]["proven"][0]["country"], "SE");
    assert_eq!(sessions[0]["proven"].as_array().unwrap().len(), 1);
    let first = sessions[0]["session"].as_str().unwrap().to_owned();
    assert!(!list.to_string().contains("alice-laptop"), "raw cookies never leave tether");

    // GET on a mutating path: refused, and nothing changed.
    for path in [format!("/api/sessions/{first}/revoke"), "/api/users/alice/revoke".into(), "/api/reload".into()] {
        assert_eq!(t.admin("GET", &path, Some(TOKEN)).await.0, 405, "{path}");
    }
    assert_eq!(t.admin("POST", "/api/sessions?user=alice", Some(TOKEN)).await.0, 405);
    for cookie in ["alice-laptop", "alice-phone"] {
        assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, cookie, "alice")).await.0.status, 200);
    }
    // Unauthenticated POSTs do nothing either.
    assert_eq!(t.admin("POST", "/api/users/alice/revoke", None).await.0, 401);
    assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, "alice-phone", "alice")).await.0.status, 200);

    // Revoke one session, then the whole user.
    let (status, body) = t.admin("POST", &format!("/api/sessions/{first}/revoke"), Some(TOKEN)).await;
    assert_eq!((status, body["was_tracked"].as_bool()), (200, Some(true)));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for cookie in ["alice-laptop", "alice-phone"] {
            v.push(h1_from(&t, "127.0.0.1", as_user(&t, cookie, "alice")).await.0.status.as_u16());
        }
        v
    };
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 1, "{statuses:?}");
    let (status, body) = t.admin("POST", "/api/users/alice/revoke", Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(!body["revoked"].as_array().unwrap().is_empty());
    for cookie in ["alice-laptop", "alice-phone"] {
        assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, cookie, "alice")).await.0.status, 403);
    }
    assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, "bob-laptop", "bob")).await.0.status, 200, "bob is untouched");
    assert_eq!(t.admin("POST", "/api/sessions/not-hex/revoke", Some(TOKEN)).await.0, 400);
    audit_until(&t, |lines| lines.iter().filter(|l| l["event"] == "session_revoked" && l["detail"] == "admin").count() >= 2).await;
}

#[tokio::test]
async fn a_plus_in_a_user_name_is_a_plus() {
    let t = tether_with_admin().await;
    // Two users a decoder could confuse: `+` in a path is a plus sign, in a query a space.
    for (cookie, user) in [("plus-laptop", "a+b@example.com"), ("space-laptop", "a b@example.com")] {
        assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, cookie, user)).await.0.status, 200);
    }
    let (status, list) = t.admin("GET", "/api/sessions?user=a%2Bb%40example.com", Some(TOKEN)).await;
    assert_eq!((status, list["user"].as_str(), list["sessions"].as_array().map(Vec::len)), (200, Some("a+b@example.com"), Some(1)));
    let (_, list) = t.admin("GET", "/api/sessions?user=a+b@example.com", Some(TOKEN)).await;
    assert_eq!(list["user"], "a b@example.com");

    let (status, body) = t.admin("POST", "/api/users/a+b@example.com/revoke", Some(TOKEN)).await;
    assert_eq!((status, body["user"].as_str()), (200, Some("a+b@example.com")), "{body}");
    assert_eq!(body["revoked"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, "plus-laptop", "a+b@example.com")).await.0.status, 403);
    assert_eq!(h1_from(&t, "127.0.0.1", as_user(&t, "space-laptop", "a b@example.com")).await.0.status, 200, "the other user is untouched");
    // The escaped spelling names the same user; a malformed escape is kept as written.
    let (status, body) = t.admin("POST", "/api/users/a%2Bb%40example.com/revoke", Some(TOKEN)).await;
    assert_eq!((status, body["user"].as_str()), (200, Some("a+b@example.com")));
    let (status, body) = t.admin("POST", "/api/users/a%+5b/revoke", Some(TOKEN)).await;
    assert_eq!((status, body["user"].as_str()), (200, Some("a%+5b")));
}

#[tokio::test]
async fn reload_through_the_api() {
    let t = tether_with_admin().await;
    let (status, body) = t.admin("POST", "/api/reload", Some(TOKEN)).await;
    assert_eq!((status, body["generation"].as_u64()), (200, Some(2)));
    let path = t.certs.dir.path().join("tether.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("mode = \"enforce\"", "mode = \"sometimes\"")).unwrap();
    let (status, body) = t.admin("POST", "/api/reload", Some(TOKEN)).await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("policy.mode"), "{body}");
    assert_eq!(body["generation"], 2);
    std::fs::write(&path, good.replace("mode = \"enforce\"", "mode = \"monitor\"")).unwrap();
    assert_eq!(t.admin("POST", "/api/reload", Some(TOKEN)).await.0, 200);
    assert_eq!(t.admin("GET", "/api/policy", Some(TOKEN)).await.1["mode"], "monitor");
}

/// One plain-text GET to an admin listener.
async fn admin_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let code = resp.status().as_u16();
    (code, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
}

#[tokio::test]
async fn the_api_can_have_a_listener_of_its_own() {
    let up = spawn_upstream(None).await;
    let c = certs();
    std::fs::write(c.dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n[admin]\naddr = \"127.0.0.1:0\"\napi_addr = \"127.0.0.2:0\"\ntoken_file = \"admin.token\"\n[upstream]\nurl = \"http://{up}\"\n"
    );
    let t = start_text(&text, c).await;
    let (observe, api) = (t.running.admin_addr, t.running.api_addr.expect("a listener for the API"));
    assert_ne!(observe, api);
    // (listener, path, token, status)
    let rows = [
        (observe, "/metrics", None, 200),
        (observe, "/readyz", None, 200),
        (observe, "/api/policy", Some(TOKEN), 404),
        (api, "/api/policy", Some(TOKEN), 200),
        (api, "/api/policy", None, 401),
        (api, "/metrics", None, 404),
        (api, "/readyz", None, 404),
    ];
    for (addr, path, token, status) in rows {
        assert_eq!(admin_get(addr, path, token).await.0, status, "{addr} {path}");
    }
    // The same address twice is refused by the config.
    let same = "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:9090\"\napi_addr = \"127.0.0.1:9090\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let err = tether::config::Config::parse(same, std::path::Path::new("/")).unwrap_err();
    assert!(err.to_string().contains("admin.api_addr"), "{err}");
}

#[tokio::test]
async fn readyz_answers_503_while_draining() {
    let up = spawn_upstream(None).await;
    let t = start_tls(&format!("http://{up}"), "", "").await;
    let admin = t.running.admin_addr;
    assert_eq!(admin_get(admin, "/readyz", None).await, (200, "ready\n".to_owned()));
    // A request in flight keeps the drain going for a moment.
    let slow = get(&t, "/").header("x-test-delay-ms", "1500").body(Full::new(Bytes::new())).unwrap();
    let Tether { running, certs } = t;
    let addr = running.proxy_addr;
    let in_flight = tokio::spawn(async move {
        let tls = tls_connect(addr, &certs, "localhost", &[b"http/1.1"]).await;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(slow).await.unwrap().status().as_u16()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stopping = tokio::spawn(running.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(admin_get(admin, "/readyz", None).await, (503, "draining\n".to_owned()));
    assert_eq!(admin_get(admin, "/healthz", None).await.0, 200, "alive all the same");
    assert_eq!(in_flight.await.unwrap(), 200, "the request in flight finished");
    stopping.await.unwrap();
}
