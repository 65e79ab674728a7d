//! The real OpenID provider for step-up tests (`tests/idp`, the npm package
//! oidc-provider), started once per test binary, and a scripted browser that logs in.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The callback URL registered at the IdP; the scripted browser delivers it to tether.
pub const REDIRECT_URI: &str = "https://tether.test/.tether/callback";

pub struct Idp {
    pub issuer: String,
    pub cert: PathBuf,
    /// The PEM key of the `tether-pkjwt` client.
    pub client_key: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
    // Held open: the IdP exits when its standard input closes, i.e. with this process.
    _stdin: ChildStdin,
}

static IDP: OnceLock<Option<Idp>> = OnceLock::new();
/// The IdP's test hooks are global, so flows that use them run one at a time.
pub static FLOW: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The shared IdP, or `None` (with a message) when its packages are not installed and
/// this is not CI. Under `CI=true` a missing IdP fails the test.
pub fn idp() -> Option<&'static Idp> {
    IDP.get_or_init(start).as_ref()
}

fn start() -> Option<Idp> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !root.join("node_modules/oidc-provider").exists() {
        assert!(!ci, "tests/idp/node_modules is missing: the test command installs it (npm ci --prefix tests/idp)");
        eprintln!("skipping step-up tests: run `npm ci --prefix tests/idp` to install the test IdP");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("idp.crt");
    let key = dir.path().join("idp.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    // The private_key_jwt client's key pair.
    let client = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let client_key = dir.path().join("client.key");
    std::fs::write(&client_key, client.serialize_pem()).unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(client.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("client-1".into());
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();

    let mut child = Command::new("node")
        .arg(root.join("idp.mjs"))
        .env("IDP_CERT", &cert)
        .env("IDP_KEY", &key)
        .env("REDIRECT_URIS", REDIRECT_URI)
        .env("CLIENT_JWKS", jwks)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node for the test IdP: {e}"));
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // A hang guard, not a timing: node starts in a second or two, but a loaded 2-core
    // machine running the whole suite in parallel has been seen to need far longer.
    let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(180)) else {
        // Not left running: it would hold whatever this process inherited.
        let _ = child.kill();
        let _ = child.wait();
        panic!("the test IdP did not start within 180 s");
    };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("unexpected IdP output {line:?}"));
    let issuer = v["issuer"].as_str().unwrap().to_owned();
    Some(Idp { issuer, cert, client_key, _dir: dir, _child: child, _stdin: stdin })
}

/// A `[step_up]` section against the test IdP (discovery, its CA, the tests' callback)
/// for the client in `client` (its `client_id` and credentials), plus `extra` keys.
pub fn step_up_section(idp: &Idp, client: &str, extra: &str) -> String {
    format!("[step_up]\nissuer = \"{}\"\n{client}\nca_file = \"{}\"\nredirect_uri = \"{REDIRECT_URI}\"\n{extra}\n", idp.issuer, idp.cert.display())
}

/// The tests' confidential client at the test IdP.
pub const SECRET_CLIENT: &str = "client_id = \"tether\"\nclient_secret = \"tether-secret\"";

/// A scripted browser for the IdP side: a path-aware cookie jar and manual redirects.
#[derive(Default)]
pub struct Browser {
    jar: Vec<(String, String, String)>,
}

pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Browser {
    fn cookie_header(&self, path: &str) -> String {
        self.jar
            .iter()
            .filter(|(_, _, p)| path.starts_with(p.as_str()))
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else { return };
        let mut path = "/".to_owned();
        let mut expired = value.is_empty();
        for attr in parts {
            let attr = attr.trim();
            let lower = attr.to_ascii_lowercase();
            if let Some(p) = lower.strip_prefix("path=") {
                path = attr[5..5 + p.len()].to_owned();
            }
            if lower.starts_with("expires=thu, 01 jan 1970") || lower == "max-age=0" {
                expired = true;
            }
        }
        self.jar.retain(|(n, _, p)| !(n == name && *p == path));
        if !expired {
            self.jar.push((name.to_owned(), value.to_owned(), path));
        }
    }

    /// One request to the IdP.
    pub async fn send(&mut self, idp: &Idp, method: &str, url: &str, form: Option<String>, json: Option<String>) -> Reply {
        let uri: http::Uri = if url.starts_with('/') { format!("{}{url}", idp.issuer).parse().unwrap() } else { url.parse().unwrap() };
        let port = uri.port_u16().unwrap();
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut roots = rustls::RootCertStore::empty();
        for c in tether::net::tls::load_certs(&idp.cert).unwrap() {
            roots.add(c).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(tether::net::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let tls = TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(&path).header("host", format!("localhost:{port}"));
        let cookies = self.cookie_header(uri.path());
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        let body = match (form, json) {
            (Some(f), _) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                f
            }
            (None, Some(j)) => {
                req = req.header("content-type", "application/json");
                j
            }
            _ => String::new(),
        };
        let resp = send.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
        for v in resp.headers().get_all("set-cookie") {
            self.remember(v.to_str().unwrap());
        }
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply { status, location, body }
    }

    /// Follows an authorization URL through a scripted login to the callback URL.
    pub async fn login(&mut self, idp: &Idp, authorize: &str, login: &str, acr: Option<&str>, auth_time: Option<u64>) -> String {
        let mut form = format!("login={login}&amr=pwd,otp");
        if let Some(acr) = acr {
            form.push_str(&format!("&acr={acr}"));
        }
        if let Some(t) = auth_time {
            form.push_str(&format!("&auth_time={t}"));
        }
        self.login_with_form(idp, authorize, form).await
    }

    /// [`Browser::login`] for an IdP preset's authorization URL, which carries `prompt`
    /// (`None`: no prompt at all, as for Google) and must still bring the IdP to ask for
    /// a fresh login; `extra` is more of the login form (`&acrs=c1,c2`).
    pub async fn login_preset(&mut self, idp: &Idp, authorize: &str, prompt: Option<&str>, login: &str, extra: &str) -> String {
        let query = authorize.split_once('?').map_or("", |(_, q)| q);
        let sent = query.split('&').find_map(|kv| kv.strip_prefix("prompt="));
        assert_eq!(sent, prompt, "the prompt parameter of {authorize}");
        self.login_with_form(idp, authorize, format!("login={login}&amr=pwd,otp{extra}")).await
    }

    async fn login_with_form(&mut self, idp: &Idp, authorize: &str, form: String) -> String {
        let r = self.send(idp, "GET", authorize, None, None).await;
        assert_eq!(r.status, 303, "authorization request: {}", String::from_utf8_lossy(&r.body));
        let interaction = r.location.unwrap();
        let r = self.send(idp, "GET", &interaction, None, None).await;
        assert_eq!(r.status, 200);
        let details: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(details["prompt"], "login", "prompt=login forces a fresh login");
        let mut r = self.send(idp, "POST", &format!("{interaction}/login"), Some(form), None).await;
        loop {
            assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
            let next = r.location.clone().unwrap();
            if next.starts_with(REDIRECT_URI) {
                return next;
            }
            r = self.send(idp, "GET", &next, None, None).await;
        }
    }
}

impl Browser {
    /// Follows an authorization URL without logging in: a `prompt=none` request is
    /// answered from the IdP's own session (or with an error). Returns the URL the IdP
    /// finally sends the browser to (tether's callback).
    pub async fn follow(&mut self, idp: &Idp, authorize: &str) -> String {
        let mut url = authorize.to_owned();
        for _ in 0..8 {
            if url.starts_with(REDIRECT_URI) {
                return url;
            }
            let r = self.send(idp, "GET", &url, None, None).await;
            assert!((300..400).contains(&r.status), "{url}: {} {}", r.status, String::from_utf8_lossy(&r.body));
            let next = r.location.clone().unwrap();
            assert!(!next.contains("/interaction/"), "a login page was shown: {next}");
            url = if next.starts_with('/') { format!("{}{next}", idp.issuer) } else { next };
        }
        panic!("too many redirects from {authorize}");
    }
}

/// Asks the IdP to tamper with its next ID token.
pub async fn mutate_next_id_token(idp: &Idp, mode: &str) {
    let r = Browser::default().send(idp, "POST", "/test/mutate-next-id-token", None, Some(format!("{{\"mode\":\"{mode}\"}}"))).await;
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
}

/// A back-channel logout token signed by the IdP.
pub async fn logout_token(idp: &Idp, sub: Option<&str>, sid: Option<&str>) -> String {
    let mut m = serde_json::Map::new();
    m.insert("aud".into(), "tether".into());
    if let Some(s) = sub {
        m.insert("sub".into(), s.into());
    }
    if let Some(s) = sid {
        m.insert("sid".into(), s.into());
    }
    let body = serde_json::Value::Object(m).to_string();
    let r = Browser::default().send(idp, "POST", "/test/logout-token", None, Some(body)).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["logout_token"].as_str().unwrap().to_owned()
}
