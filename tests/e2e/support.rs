//! Shared test support: generated certificates, an in-process upstream, tether started on
//! port 0, and TLS/HTTP clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tether::app::Running;
use tether::config::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A guard against a hung test, not a timing assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

pub struct Certs {
    pub dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

pub fn certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    Certs { der: ck.cert.der().clone(), cert, key, dir }
}

/// The upstream echoes what it received as JSON; `/ws` is a WebSocket echo; `/leaky`
/// answers with hop-by-hop headers that must not reach the client. A request carrying
/// `x-test-respond-user` is answered with each `|`-separated name in its own
/// `x-auth-request-user` header, as a console naming the session's user would; each
/// `x-test-set-cookie` is answered as a `Set-Cookie`; `x-test-delay-ms` delays the answer.
pub async fn spawn_upstream(tls: Option<&Certs>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|c| {
        let cfg = tether::net::tls::server_config(&c.cert, &c.key).unwrap();
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(upstream_handler);
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        let Ok(tls) = a.accept(tcp).await else { return };
                        let _ = builder.serve_connection(TokioIo::new(tls), svc).with_upgrades().await;
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), svc).with_upgrades().await;
                    }
                }
            });
        }
    });
    addr
}

async fn upstream_handler(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    if req.uri().path() == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned().unwrap_or(http::HeaderValue::from_static(""));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    let _ = ws.send(msg).await;
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let entry = headers.entry(name.as_str()).or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(a) = entry {
            a.push(String::from_utf8_lossy(value.as_bytes()).into());
        }
    }
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let req_path = req.uri().path().to_owned();
    let respond_user = req.headers().get("x-test-respond-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let delay = req.headers().get("x-test-delay-ms").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let set_cookies: Vec<String> = req.headers().get_all("x-test-set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let body = req.into_body().collect().await?.to_bytes();
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let json = serde_json::json!({"method": method, "path": path, "version": version, "headers": headers, "body_len": body.len()});
    let mut resp = Response::builder().header("content-type", "application/json");
    for c in &set_cookies {
        resp = resp.header("set-cookie", c.as_str());
    }
    for user in respond_user.iter().flat_map(|u| u.split('|')) {
        resp = resp.header("x-auth-request-user", user);
    }
    if req_path == "/leaky" {
        resp = resp.header("connection", "x-up-secret").header("x-up-secret", "1").header("keep-alive", "timeout=5").header("x-kept", "1");
    }
    Ok(resp.body(Full::new(Bytes::from(json.to_string()))).unwrap())
}

pub struct Tether {
    pub running: Running,
    pub certs: Certs,
}

impl Tether {
    pub fn addr(&self) -> SocketAddr {
        self.running.proxy_addr
    }

    pub async fn metrics(&self) -> String {
        let tcp = TcpStream::connect(self.running.admin_addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("/metrics").header("host", "admin").body(Full::new(Bytes::new())).unwrap();
        let resp = send.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// One admin API call; returns the status and the JSON body.
    pub async fn admin(&self, method: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let tcp = TcpStream::connect(self.running.admin_addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", "admin");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = send.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// The value of one metric sample line, e.g. `tether_client_hello_total{result="parsed"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// Starts tether with TLS in front of `upstream`, plus extra config lines per section.
pub async fn start_tls(upstream: &str, listen_extra: &str, rest: &str) -> Tether {
    let certs = certs();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{listen_extra}\n[admin]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"{upstream}\"\n{rest}\n",
        certs.cert.display(),
        certs.key.display()
    );
    start_text(&text, certs).await
}

pub async fn start_text(text: &str, certs: Certs) -> Tether {
    let config = Config::parse(text, certs.dir.path()).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let running = tether::app::start(config).await.unwrap();
    Tether { running, certs }
}

pub async fn tls_connect(addr: SocketAddr, certs: &Certs, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    tls_connect_from("127.0.0.1".parse().unwrap(), addr, certs, sni, alpn).await
}

/// Connects from a chosen loopback source address: the fixture databases map 127.0.N.0/24
/// to different networks, so a test can "arrive from" Mullvad or Datacamp.
pub async fn tls_connect_from(src: std::net::IpAddr, addr: SocketAddr, certs: &Certs, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.der.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(tether::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp).await.unwrap()
}

/// One HTTP/1.1 request over a fresh TLS connection.
pub async fn h1(t: &Tether, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(HANG_GUARD, send.send_request(req)).await.unwrap().unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// One HTTP/1.1 request over a fresh TLS connection from `src`.
pub async fn h1_from(t: &Tether, src: &str, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let tls = tls_connect_from(src.parse().unwrap(), t.addr(), &t.certs, "localhost", &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(HANG_GUARD, send.send_request(req)).await.unwrap().unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

/// The fixture databases' directory.
pub fn geolite() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures")
}

/// Config sections for the detector: fixture intel, a session cookie, static IdP
/// endpoints, and an audit log in the certs directory.
pub fn detector_sections(mode: &str, extra_policy: &str) -> String {
    let g = geolite();
    format!(
        "[intel]\nasn_db = \"{}\"\ncity_db = \"{}\"\nanonymous_ip_db = \"{}\"\n\
         [session]\ncookies = [\"session\"]\n\
         [policy]\nmode = \"{mode}\"\n{extra_policy}\n\
         [step_up]\nauthorization_endpoint = \"https://sso.example/authorize\"\ntoken_endpoint = \"https://sso.example/token\"\njwks_uri = \"https://sso.example/jwks\"\nclient_id = \"tether\"\nacr_values = \"urn:example:mfa\"\n\
         [audit]\npath = \"audit.jsonl\"\n",
        g.join("GeoLite2-ASN.mmdb").display(),
        g.join("GeoLite2-City.mmdb").display(),
        g.join("GeoIP2-Anonymous-IP.mmdb").display(),
    )
}

/// `sections` (from [`detector_sections`]) with its `[step_up]` section replaced by
/// `step_up` (a whole section, header included).
pub fn with_step_up(sections: &str, step_up: &str) -> String {
    let start = sections.find("[step_up]").expect("a [step_up] section");
    let end = sections.find("[audit]").expect("an [audit] section after it");
    format!("{}{step_up}\n{}", &sections[..start], &sections[end..])
}

/// Reads the audit log as JSON values once the writer (a separate task) has written
/// what `ready` looks for; bounded by the hang guard.
pub async fn audit_until(t: &Tether, ready: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let path = t.certs.dir.path().join("audit.jsonl");
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // A line still being written is not JSON yet; read it next time.
        let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if ready(&lines) {
            return lines;
        }
        if std::time::Instant::now() > deadline {
            panic!("the audit log never showed what was expected:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for an audit line of `event` whose `key` is `value`.
pub async fn audit_event(t: &Tether, event: &str, key: &str, value: &str) -> Vec<serde_json::Value> {
    audit_until(t, |lines| lines.iter().any(|l| l["event"] == event && l[key] == value)).await
}

/// One HTTP/2 request over a fresh TLS connection.
pub async fn h2(t: &Tether, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let tls = tls_connect(t.addr(), &t.certs, "localhost", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(HANG_GUARD, send.send_request(req)).await.unwrap().unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

pub fn get(t: &Tether, path: &str) -> http::request::Builder {
    Request::get(path).header("host", format!("localhost:{}", t.addr().port()))
}

pub fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// The values the upstream saw for a header.
pub fn seen<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect()).unwrap_or_default()
}

/// Reads until EOF or error; returns what arrived.
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, s.read_to_end(&mut out)).await.expect("connection was not closed");
    out
}

/// Reads until a whole response head has arrived (or the peer closed); returns it.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(HANG_GUARD, s.read(&mut buf)).await.expect("no response") {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

pub fn fixture_hello(n: u8) -> Vec<u8> {
    let path = format!("{}/../shared/fixtures/clienthello/hello-{n}.hex", env!("CARGO_MANIFEST_DIR"));
    let hex = std::fs::read_to_string(path).unwrap();
    let hex: String = hex.split_whitespace().collect();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}
