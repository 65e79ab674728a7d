//! `tether demo`: tether in front of a small built-in "admin console", on the embedded
//! fixture databases and a generated certificate, playing a short theft story before it
//! is left running for you to poke with curl. Needs nothing but the binary.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpSocket};

use crate::app::{self, Running, StartError};
use crate::config::{Config, ConfigErrors};

const ASN_DB: &[u8] = include_bytes!("../GeoLite-fixtures/GeoLite2-ASN.mmdb");
const CITY_DB: &[u8] = include_bytes!("../GeoLite-fixtures/GeoLite2-City.mmdb");
const ANON_DB: &[u8] = include_bytes!("../GeoLite-fixtures/GeoIP2-Anonymous-IP.mmdb");
/// The indicators published after the incident tether is built against.
const INCIDENT_IOCS: &str = "# published indicators of the December 2022 session-theft incident\n178.249.214.10\n89.36.78.75\n89.36.78.109\n89.36.78.135\n178.249.214.25\n72.18.132.58\n188.68.229.52\n111.90.149.55\n";
/// The demo's stand-in for a load balancer that passes client addresses.
const BALANCER: &str = "127.0.0.9";
const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo's files: {0}")]
    Files(#[from] std::io::Error),
    #[error("cannot generate the demo certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("demo config rejected: {0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the story's client failed: {0}")]
    Client(String),
}

/// Where the demo listens.
pub struct DemoAddrs {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

pub struct Demo {
    pub running: Running,
    cert: CertificateDer<'static>,
}

/// Writes the demo's files into `dir`, starts the built-in console and tether.
pub async fn start(dir: &Path, addrs: &DemoAddrs) -> Result<Demo, DemoError> {
    let upstream = start_console().await?;
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])?;
    std::fs::write(dir.join("demo.crt"), key.cert.pem())?;
    std::fs::write(dir.join("demo.key"), key.signing_key.serialize_pem())?;
    std::fs::write(dir.join("GeoLite2-ASN.mmdb"), ASN_DB)?;
    std::fs::write(dir.join("GeoLite2-City.mmdb"), CITY_DB)?;
    std::fs::write(dir.join("GeoIP2-Anonymous-IP.mmdb"), ANON_DB)?;
    std::fs::write(dir.join("incident-iocs.txt"), INCIDENT_IOCS)?;
    let text = format!(
        r#"[listen]
addr = "{proxy}"
tls_cert = "demo.crt"
tls_key = "demo.key"
trusted_proxies = ["{BALANCER}"]
[admin]
addr = "{admin}"
[upstream]
url = "http://{upstream}"
forward_fingerprint = true
forward_decision = true
[intel]
asn_db = "GeoLite2-ASN.mmdb"
city_db = "GeoLite2-City.mmdb"
anonymous_ip_db = "GeoIP2-Anonymous-IP.mmdb"
ioc_files = ["incident-iocs.txt"]
[session]
cookies = ["session"]
[policy]
mode = "enforce"
[step_up]
authorization_endpoint = "https://sso.example.com/authorize"
token_endpoint = "https://sso.example.com/token"
jwks_uri = "https://sso.example.com/jwks"
client_id = "tether"
acr_values = "urn:example:mfa"
[audit]
path = "audit.jsonl"
"#,
        proxy = addrs.proxy,
        admin = addrs.admin,
    );
    std::fs::write(dir.join("tether.toml"), &text)?;
    let config = Config::parse(&text, dir)?;
    let running = app::start(config).await?;
    Ok(Demo { running, cert: key.cert.der().clone() })
}

/// The built-in upstream: an "admin console" that shows what tether told it.
async fn start_console() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service_fn(console)).await;
            });
        }
    });
    Ok(addr)
}

async fn console(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let body = format!(
        "admin console (demo upstream)\npath: {}\nclient ip (from tether): {}\nja4 (from tether): {}\ndecision (from tether): {} (score {})\n",
        req.uri().path(),
        header("x-tether-client-ip"),
        header("x-tether-ja4"),
        header("x-tether-decision"),
        header("x-tether-score"),
    );
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

struct Step {
    title: &'static str,
    from: &'static str,
    forwarded_for: Option<&'static str>,
    user_agent: &'static str,
    accept: &'static str,
    path: &'static str,
}

impl Demo {
    /// One request through tether from a chosen loopback source (the fixture databases
    /// place 127.0.N.0/24 on different networks).
    async fn request(&self, step: &Step) -> Result<(u16, http::HeaderMap, String), DemoError> {
        let err = |e: &dyn std::fmt::Display| DemoError::Client(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).map_err(|e| err(&e))?;
        let cfg = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let src: IpAddr = step.from.parse().map_err(|e| err(&e))?;
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(src, 0))?;
        let tcp = socket.connect(self.running.proxy_addr).await?;
        let sni = ServerName::try_from("localhost").map_err(|e| err(&e))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(sni, tcp).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| err(&e))?;
        tokio::spawn(conn);
        let mut req = Request::get(step.path)
            .header("host", format!("localhost:{}", self.running.proxy_addr.port()))
            .header("cookie", "session=the-engineers-sso-session")
            .header("user-agent", step.user_agent)
            .header("accept", step.accept);
        if let Some(xff) = step.forwarded_for {
            req = req.header("x-forwarded-for", xff);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| err(&e))?;
        let resp = send.send_request(req).await.map_err(|e| err(&e))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| err(&e))?.to_bytes();
        Ok((parts.status.as_u16(), parts.headers, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Plays the theft story; returns the statuses seen, in order.
    pub async fn story(&self, out: &mut impl std::io::Write) -> Result<Vec<u16>, DemoError> {
        let steps = [
            Step { title: "09:00  The engineer opens the console from home (Stockholm ISP).", from: "127.0.0.1", forwarded_for: None, user_agent: CHROME, accept: "text/html", path: "/console" },
            Step { title: "09:05  Malware has stolen the SSO cookie. The thief replays it from a Mullvad VPN exit.", from: "127.0.2.10", forwarded_for: None, user_agent: CHROME, accept: "text/html", path: "/console/tokens" },
            Step { title: "09:06  The thief tries the API from a Datacamp server with curl.", from: "127.0.1.10", forwarded_for: None, user_agent: "curl/7.88.1", accept: "*/*", path: "/api/v2/tokens" },
            Step { title: "09:07  ...and from an address on the incident's IoC list (via the balancer).", from: BALANCER, forwarded_for: Some("178.249.214.10"), user_agent: CHROME, accept: "text/html", path: "/console" },
            Step { title: "09:08  The engineer keeps working from home, undisturbed.", from: "127.0.0.1", forwarded_for: None, user_agent: CHROME, accept: "text/html", path: "/console" },
        ];
        let mut statuses = Vec::new();
        for step in &steps {
            let (status, headers, body) = self.request(step).await?;
            statuses.push(status);
            writeln!(out, "\n{}", step.title)?;
            let outcome = match status {
                200 => format!("200: proxied. The console saw: {}", body.lines().filter(|l| l.starts_with("decision")).collect::<Vec<_>>().join(" ")),
                303 => {
                    let loc = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("");
                    format!("303: step-up. Sent to the IdP with prompt=login, max_age=0, PKCE:\n         {}…", &loc[..loc.len().min(110)])
                }
                401 => format!(
                    "401: step-up for an API client.\n         WWW-Authenticate: {}",
                    headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("")
                ),
                403 => "403: blocked (an indicator of compromise).".to_owned(),
                other => format!("{other}"),
            };
            writeln!(out, "  ->  {outcome}")?;
        }
        Ok(statuses)
    }
}
