//! IdP presets against the real test IdP (Google's missing `prompt=login` and second
//! issuer spelling, Entra ID's `claims`/`acrs`, Keycloak's levels), discovery ahead of
//! need with `/readyz` naming its failure, and egress through a `CONNECT` proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::idp::{self, Browser, Idp, REDIRECT_URI};
use crate::support::*;

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";
const COOKIE: &str = "session=preset-owner-cookie";
const HOME: &str = "127.0.0.1";
const VPN: &str = "127.0.2.10";

/// The whole config for tether with `[step_up]` as given; the owner is named by a
/// trusted auth layer (X-User from 127.0.0.1), as in the step-up tests.
fn config_text(certs: &Certs, upstream: std::net::SocketAddr, step_up: &str) -> String {
    let sections = with_step_up(&detector_sections("enforce", ""), step_up).replace("[session]\n", "[session]\nuser_header = \"x-user\"\n");
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntrusted_proxies = [\"127.0.0.1\"]\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{upstream}\"\n{sections}",
        certs.cert.display(),
        certs.key.display()
    )
}

fn step_up(issuer: &str, cert: &std::path::Path, client_id: &str, extra: &str) -> String {
    format!(
        "[step_up]\nissuer = \"{issuer}\"\nclient_id = \"{client_id}\"\nclient_secret = \"tether-secret\"\nca_file = \"{}\"\nredirect_uri = \"{REDIRECT_URI}\"\n{extra}\n",
        cert.display()
    )
}

async fn tether_with(idp: &Idp, client_id: &str, extra: &str) -> Tether {
    let certs = certs();
    let up = spawn_upstream(None).await;
    let text = config_text(&certs, up, &step_up(&idp.issuer, &idp.cert, client_id, extra));
    start_text(&text, certs).await
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

/// The owner binds at home, then is challenged from a VPN: the status and the redirect.
async fn challenge(t: &Tether) -> (u16, Option<String>) {
    let (parts, _) = h1_from(t, HOME, browser(t, "/")).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h1_from(t, VPN, browser(t, "/projects")).await;
    (parts.status.as_u16(), parts.headers.get("location").map(|v| v.to_str().unwrap().to_owned()))
}

async fn deliver(t: &Tether, callback: &str) -> u16 {
    let path = callback.strip_prefix("https://tether.test").unwrap();
    h1_from(t, VPN, browser(t, path)).await.0.status.as_u16()
}

async fn readyz(t: &Tether) -> (u16, String) {
    let tcp = TcpStream::connect(t.running.admin_addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/readyz").header("host", "admin").body(Full::new(Bytes::new())).unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

/// Polls until `f` holds, for at most `within`.
async fn until(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn google_a_step_up_without_prompt_login_and_the_bare_issuer() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    // The emulation is real: this client's IdP refuses prompt=login outright.
    let refused = Browser::default()
        .send(idp, "GET", "/auth?response_type=code&client_id=tether-google&redirect_uri=https%3A%2F%2Ftether.test%2F.tether%2Fcallback&scope=openid&prompt=login", None, None)
        .await;
    assert_eq!(refused.status, 400, "{}", String::from_utf8_lossy(&refused.body));

    let t = tether_with(idp, "tether-google", "provider = \"google\"").await;
    let (status, authorize) = challenge(&t).await;
    assert_eq!(status, 303);
    let authorize = authorize.unwrap();
    assert!(authorize.contains("max_age=0"), "{authorize}");
    // Google's tokens may name the issuer without its scheme.
    idp::mutate_next_id_token(idp, "bare_issuer").await;
    let callback = Browser::default().login_preset(idp, &authorize, None, "alice", "").await;
    assert_eq!(deliver(&t, &callback).await, 303, "completed");
    let (parts, _) = h1_from(&t, VPN, browser(&t, "/projects")).await;
    assert_eq!(parts.status, 200, "re-bound to the VPN");
    audit_event(&t, "step_up_completed", "user", "alice").await;
}

#[tokio::test]
async fn generic_refuses_the_bare_issuer() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with(idp, "tether", "").await;
    let (_, authorize) = challenge(&t).await;
    idp::mutate_next_id_token(idp, "bare_issuer").await;
    let callback = Browser::default().login_preset(idp, &authorize.unwrap(), Some("login"), "alice", "").await;
    assert_eq!(deliver(&t, &callback).await, 403);
    audit_event(&t, "step_up_failed", "detail", "wrong_issuer_or_audience").await;
}

#[tokio::test]
async fn entra_authentication_contexts_through_the_claims_parameter() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with(idp, "tether", "provider = \"entra\"\nacrs = [\"c1\"]\nmax_failures = 5").await;
    let (_, authorize) = challenge(&t).await;
    let authorize = authorize.unwrap();
    assert!(authorize.contains("claims=%7B%22id_token%22%3A%7B%22acrs%22"), "{authorize}");
    // A login that satisfied another context only.
    let callback = Browser::default().login_preset(idp, &authorize, Some("login"), "alice", "&acrs=c2").await;
    assert_eq!(deliver(&t, &callback).await, 403);
    audit_event(&t, "step_up_failed", "detail", "acr_missing").await;
    // The IdP puts acrs in the ID token only because tether asked for it.
    let (parts, _) = h1_from(&t, VPN, browser(&t, "/projects")).await;
    let authorize = parts.headers["location"].to_str().unwrap().to_owned();
    let callback = Browser::default().login_preset(idp, &authorize, Some("login"), "alice", "&acrs=c1,c2").await;
    assert_eq!(deliver(&t, &callback).await, 303, "every asked-for context satisfied");
}

#[tokio::test]
async fn keycloak_a_level_satisfies_the_name_mapped_to_it() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let t = tether_with(idp, "tether", "provider = \"keycloak\"\nacr_values = \"gold\"\nacr_levels = { silver = 1, gold = 2 }\nmax_failures = 5").await;
    let (_, authorize) = challenge(&t).await;
    let authorize = authorize.unwrap();
    assert!(authorize.contains("acr_values=gold"), "{authorize}");
    // Level 1 is below gold's.
    let callback = Browser::default().login_preset(idp, &authorize, Some("login"), "alice", "&acr=1").await;
    assert_eq!(deliver(&t, &callback).await, 403);
    audit_event(&t, "step_up_failed", "detail", "acr_missing").await;
    let (parts, _) = h1_from(&t, VPN, browser(&t, "/projects")).await;
    let authorize = parts.headers["location"].to_str().unwrap().to_owned();
    let callback = Browser::default().login_preset(idp, &authorize, Some("login"), "alice", "&acr=2").await;
    assert_eq!(deliver(&t, &callback).await, 303, "Keycloak reports the level reached");
}

/// A minimal `CONNECT` proxy: counts the tunnels it opened and keeps each request's
/// `Proxy-Authorization`; with `refuse`, answers that instead of tunnelling.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    tunnels: Arc<AtomicUsize>,
    auth: Arc<Mutex<Vec<String>>>,
}

async fn connect_proxy(refuse: Option<&'static str>) -> ConnectProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (t, a) = (tunnels.clone(), auth.clone());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (tunnels, auth) = (t.clone(), a.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.strip_prefix("CONNECT ").and_then(|r| r.split(' ').next()).unwrap_or("").to_owned();
                if let Some(v) = head.lines().find_map(|l| l.strip_prefix("Proxy-Authorization: ")) {
                    auth.lock().unwrap().push(v.to_owned());
                }
                if let Some(answer) = refuse {
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                let Ok(mut server) = TcpStream::connect(target.as_str()).await else { return };
                tunnels.fetch_add(1, Ordering::SeqCst);
                let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    ConnectProxy { addr, tunnels, auth }
}

#[tokio::test]
async fn a_step_up_through_a_connect_proxy() {
    let Some(idp) = idp::idp() else { return };
    let _flow = idp::FLOW.lock().await;
    let proxy = connect_proxy(None).await;
    let t = tether_with(idp, "tether", &format!("proxy = \"http://ops:s%40cret@{}\"", proxy.addr)).await;
    // Discovery and keys are fetched ahead of need, through the tunnel.
    assert!(until(Duration::from_secs(15), async || t.metric("tether_idp_ready").await == 1.0).await, "the IdP is ready");
    assert_eq!(readyz(&t).await, (200, "ready\n".to_owned()));
    let (_, authorize) = challenge(&t).await;
    let callback = Browser::default().login_preset(idp, &authorize.unwrap(), Some("login"), "alice", "").await;
    assert_eq!(deliver(&t, &callback).await, 303, "completed through the proxy");
    assert!(proxy.tunnels.load(Ordering::SeqCst) >= 1, "the proxy saw the tunnel");
    let auth = proxy.auth.lock().unwrap().clone();
    // "ops:s@cret" in Basic.
    assert!(!auth.is_empty() && auth.iter().all(|a| a == "Basic b3BzOnNAY3JldA=="), "{auth:?}");
}

#[tokio::test]
async fn a_proxy_that_refuses_is_named_in_readyz_and_no_step_up_is_offered() {
    let Some(idp) = idp::idp() else { return };
    let proxy = connect_proxy(Some("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")).await;
    let t = tether_with(idp, "tether", &format!("proxy = \"http://ops:hunter2@{}\"", proxy.addr)).await;
    let failing = until(Duration::from_secs(15), async || readyz(&t).await.1.contains("idp: discovery failing:")).await;
    let (status, body) = readyz(&t).await;
    assert!(failing, "{body}");
    assert_eq!(status, 200, "an IdP outage does not take the console down");
    assert!(body.starts_with("ready\n") && body.contains(&format!("proxy {} refused CONNECT", proxy.addr)) && body.contains("HTTP 407"), "{body}");
    assert!(!body.contains("hunter2"), "{body}");
    assert!(t.metric("tether_idp_discovery_failures_total").await >= 1.0);
    assert_eq!(t.metric("tether_idp_ready").await, 0.0);
    // Without discovery no redirect can be built: the RFC 9470 challenge, never "allow".
    assert_eq!(challenge(&t).await.0, 401);
}

#[tokio::test]
async fn discovery_never_delays_start_and_is_retried_after_a_reload() {
    // An IdP that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let certs = certs();
    let up = spawn_upstream(None).await;
    let started = Instant::now();
    let text = config_text(&certs, up, &step_up(&format!("https://127.0.0.1:{}", silent_addr.port()), &certs.cert, "tether", ""));
    let dir = certs.dir.path().to_path_buf();
    let t = start_text(&text, certs).await;
    assert!(started.elapsed() < Duration::from_secs(3), "start waited on the IdP: {:?}", started.elapsed());
    assert_eq!(t.metric("tether_idp_ready").await, 0.0);
    let failing = until(Duration::from_secs(20), async || readyz(&t).await.1.contains("idp: discovery failing:")).await;
    let body = readyz(&t).await.1;
    assert!(failing && body.contains(&format!("GET https://127.0.0.1:{}/.well-known/openid-configuration: no complete answer within", silent_addr.port())), "{body}");

    // A reload to a reachable IdP starts over at once.
    let Some(idp) = idp::idp() else { return };
    let path = dir.join("tether.toml");
    std::fs::write(&path, config_text(&t.certs, up, &step_up(&idp.issuer, &idp.cert, "tether", ""))).unwrap();
    t.running.reload(&path).unwrap();
    assert!(until(Duration::from_secs(15), async || t.metric("tether_idp_ready").await == 1.0).await, "ready after the reload");
    assert_eq!(readyz(&t).await, (200, "ready\n".to_owned()));
}

#[test]
fn check_config_never_contacts_the_idp_or_the_proxy() {
    let idp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    idp.set_nonblocking(true).unwrap();
    proxy.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.toml");
    let (i, p) = (idp.local_addr().unwrap(), proxy.local_addr().unwrap());
    std::fs::write(
        &path,
        format!("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[session]\nuser_header = \"x-user\"\n[step_up]\nissuer = \"https://{i}\"\nclient_id = \"tether\"\nproxy = \"http://{p}\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether")).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, l) in [("IdP", &idp), ("proxy", &proxy)] {
        assert_eq!(l.accept().map(|_| ()).unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "check-config contacted the {name}");
    }
}
