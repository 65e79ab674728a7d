//! How tether's requests reach the IdP: directly, or through an HTTP proxy's `CONNECT`
//! tunnel (`step_up.proxy`, else `HTTPS_PROXY` unless `NO_PROXY` names the IdP). The
//! tunnel is a connector under the IdP client's TLS: tether runs TLS to the IdP itself,
//! so the proxy sees a host name and ciphertext, never a code or a token.
//!
//! Proxy credentials go out as `Proxy-Authorization: Basic` and nowhere else: errors and
//! logs name the proxy by host and port only.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{EgressProxy, ProxyUrl, ProxyUrlError};

/// Longest `CONNECT` answer read: a status line and a few headers. A proxy that sends
/// more is not one tether trusts with the IdP's traffic.
const MAX_CONNECT_RESPONSE: usize = 8 << 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why tether cannot use the proxy the environment names.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {source}")]
pub struct EnvProxyError {
    pub var: &'static str,
    #[source]
    pub source: ProxyUrlError,
}

/// Why a tunnel could not be opened. Each names the proxy by host and port, never with
/// its credentials.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("the IdP URL names no host")]
    NoHost,
    #[error("proxy {proxy} unreachable: {source}")]
    Unreachable { proxy: String, source: BoxError },
    #[error("proxy {proxy}: {source}")]
    Io { proxy: String, source: std::io::Error },
    #[error("proxy {proxy} refused CONNECT to {target}: HTTP {status}")]
    Refused { proxy: String, target: String, status: u16 },
    #[error("proxy {proxy} answered CONNECT with something other than an HTTP response head")]
    Malformed { proxy: String },
    #[error("proxy {proxy} did not open the tunnel within {secs}s")]
    Timeout { proxy: String, secs: u64 },
}

/// Hosts the environment's proxy is not used for (`NO_PROXY`, as curl reads it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NoProxy {
    everything: bool,
    domains: Vec<String>,
    nets: Vec<IpNet>,
}

impl NoProxy {
    fn parse(text: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for entry in text.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                out.everything = true;
            } else if let Ok(net) = entry.parse::<IpNet>() {
                out.nets.push(net);
            } else if let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else {
                // A port on a NO_PROXY entry is ignored, as most clients do.
                let name = entry.rsplit_once(':').map_or(entry, |(h, _)| h);
                out.domains.push(name.trim_start_matches("*.").trim_start_matches('.').to_ascii_lowercase());
            }
        }
        out
    }

    fn covers(&self, host: &str) -> bool {
        if self.everything {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|n| n.contains(&ip));
        }
        self.domains.iter().any(|d| host == *d || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.')))
    }
}

/// Where requests to the IdP go: the decision made once per snapshot, applied per host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    proxy: Option<Arc<ProxyUrl>>,
    no_proxy: NoProxy,
}

impl Egress {
    /// From `step_up.proxy`, which wins, else from the environment (`env` reads a
    /// variable: the process's in production, a table in tests). The lower-case names are
    /// read first, as curl does.
    pub fn new(setting: &EgressProxy, env: impl Fn(&str) -> Option<String>) -> Result<Egress, EnvProxyError> {
        match setting {
            EgressProxy::Direct => Ok(Egress::default()),
            EgressProxy::Via(url) => Ok(Egress { proxy: Some(Arc::new(url.clone())), no_proxy: NoProxy::default() }),
            EgressProxy::Environment => {
                let pick = |names: [&'static str; 2]| names.into_iter().find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)));
                let proxy = match pick(["https_proxy", "HTTPS_PROXY"]) {
                    Some((var, v)) => Some(Arc::new(ProxyUrl::parse(&v).map_err(|source| EnvProxyError { var, source })?)),
                    None => None,
                };
                let no_proxy = pick(["no_proxy", "NO_PROXY"]).map_or_else(NoProxy::default, |(_, v)| NoProxy::parse(&v));
                Ok(Egress { proxy, no_proxy })
            }
        }
    }

    /// The proxy to tunnel through to `host`, or `None` for a direct connection.
    pub fn proxy_for(&self, host: &str) -> Option<&Arc<ProxyUrl>> {
        self.proxy.as_ref().filter(|_| !self.no_proxy.covers(host))
    }

    /// The proxy in use, when any (for logs: host and port only).
    pub fn proxy(&self) -> Option<&ProxyUrl> {
        self.proxy.as_deref()
    }
}

/// The IdP client's transport: a TCP connection to the IdP, or to a proxy that tunnels
/// to it. TLS runs on top of either.
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    egress: Arc<Egress>,
    /// Bound on opening a tunnel (the IdP exchange's own bound).
    timeout: Duration,
}

impl Connector {
    pub fn new(direct: HttpConnector, egress: Egress, timeout: Duration) -> Connector {
        Connector { direct, egress: Arc::new(egress), timeout }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.direct, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(host) = dst.host().map(str::to_owned) else { return Box::pin(async { Err(TunnelError::NoHost.into()) }) };
        let Some(proxy) = self.egress.proxy_for(&host).cloned() else {
            let connecting = tower_service::Service::call(&mut self.direct, dst);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let port = dst.port_u16().unwrap_or(if dst.scheme_str() == Some("http") { 80 } else { 443 });
        let target = if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let mut direct = self.direct.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let name = proxy.to_string();
            let work = async {
                let proxy_uri: Uri = format!("http://{name}").parse().map_err(|e: http::uri::InvalidUri| TunnelError::Unreachable { proxy: name.clone(), source: e.into() })?;
                let tcp = tower_service::Service::call(&mut direct, proxy_uri).await.map_err(|e| TunnelError::Unreachable { proxy: name.clone(), source: e.into() })?;
                let tcp = open_tunnel(tcp.into_inner(), &proxy, &name, &target).await?;
                Ok::<_, TunnelError>(TokioIo::new(tcp))
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(TunnelError::Timeout { proxy: name, secs: timeout.as_secs() }.into()),
            }
        })
    }
}

/// Asks the proxy to `CONNECT` to `target` and reads its answer; the stream is then a
/// byte pipe to the IdP.
async fn open_tunnel(mut tcp: TcpStream, proxy: &ProxyUrl, name: &str, target: &str) -> Result<TcpStream, TunnelError> {
    let io = |source| TunnelError::Io { proxy: name.to_owned(), source };
    tcp.write_all(connect_request(target, proxy.credentials.as_deref()).as_bytes()).await.map_err(io)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let head_len = loop {
        let n = tcp.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(TunnelError::Malformed { proxy: name.to_owned() });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_CONNECT_RESPONSE {
            return Err(TunnelError::Malformed { proxy: name.to_owned() });
        }
    };
    let status = parse_status(&buf[..head_len]).ok_or_else(|| TunnelError::Malformed { proxy: name.to_owned() })?;
    if !(200..300).contains(&status) {
        return Err(TunnelError::Refused { proxy: name.to_owned(), target: target.to_owned(), status });
    }
    // In a tunnel the client speaks first (the TLS ClientHello): bytes after the head
    // mean the proxy is not tunnelling.
    if buf.len() > head_len {
        return Err(TunnelError::Malformed { proxy: name.to_owned() });
    }
    Ok(tcp)
}

/// The `CONNECT` request head (RFC 9110 §9.3.6).
fn connect_request(target: &str, credentials: Option<&str>) -> String {
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(creds) = credentials {
        req.push_str("Proxy-Authorization: Basic ");
        req.push_str(&STANDARD.encode(creds));
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    fn url(text: &str) -> ProxyUrl {
        ProxyUrl::parse(text).unwrap()
    }

    #[test]
    fn proxy_urls() {
        // The text, then host, port and credentials, or the error.
        type Row = (&'static str, Result<(&'static str, u16, Option<&'static str>), ProxyUrlError>);
        let rows: [Row; 9] = [
            ("http://proxy:3128", Ok(("proxy", 3128, None))),
            ("http://proxy:3128/", Ok(("proxy", 3128, None))),
            ("proxy.corp:8080", Ok(("proxy.corp", 8080, None))),
            ("http://Proxy", Ok(("proxy", 80, None))),
            ("http://u%40corp:p%3Ass@proxy:3128", Ok(("proxy", 3128, Some("u@corp:p:ss")))),
            ("http://[::1]:3128", Ok(("::1", 3128, None))),
            ("https://proxy:3128", Err(ProxyUrlError::Scheme)),
            ("http://proxy:99999", Err(ProxyUrlError::Port)),
            ("http://proxy:3128/path", Err(ProxyUrlError::Path)),
        ];
        for (text, want) in rows {
            let got = ProxyUrl::parse(text);
            assert_eq!(got.as_ref().map(|u| (u.host.as_str(), u.port, u.credentials.as_deref())).map_err(|e| *e), want, "{text}");
        }
    }

    #[test]
    fn credentials_never_show() {
        let u = url("http://alice:s3cret@proxy:3128");
        assert_eq!(u.to_string(), "proxy:3128");
        assert!(!format!("{u:?}").contains("s3cret"));
        let e = TunnelError::Refused { proxy: u.to_string(), target: "idp:443".into(), status: 407 };
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn the_config_key_wins_over_the_environment() {
        let vars = [("HTTPS_PROXY", "http://env-proxy:3128"), ("NO_PROXY", "idp.example")];
        let e = Egress::new(&EgressProxy::Via(url("http://cfg-proxy:8080")), env(&vars)).unwrap();
        assert_eq!(e.proxy_for("idp.example").map(|p| p.host.as_str()), Some("cfg-proxy"), "NO_PROXY is the environment's");
        let e = Egress::new(&EgressProxy::Direct, env(&vars)).unwrap();
        assert_eq!(e.proxy_for("other.example"), None);
        let e = Egress::new(&EgressProxy::Environment, env(&vars)).unwrap();
        assert_eq!(e.proxy_for("other.example").map(|p| p.host.as_str()), Some("env-proxy"));
        assert_eq!(e.proxy_for("idp.example"), None);
    }

    #[test]
    fn lower_case_variables_first_and_bad_ones_refused() {
        let vars = [("https_proxy", "http://lower:1"), ("HTTPS_PROXY", "http://upper:2")];
        let e = Egress::new(&EgressProxy::Environment, env(&vars)).unwrap();
        assert_eq!(e.proxy().map(|p| p.host.as_str()), Some("lower"));
        let err = Egress::new(&EgressProxy::Environment, env(&[("HTTPS_PROXY", "socks5://p:1080")])).unwrap_err();
        assert_eq!(err.var, "HTTPS_PROXY");
        assert_eq!(Egress::new(&EgressProxy::Environment, env(&[])).unwrap().proxy(), None);
    }

    #[test]
    fn no_proxy_entries() {
        let n = NoProxy::parse("localhost, .corp.example,*.lab.example, 10.0.0.0/8,192.0.2.7 ,[::1],idp.example:443");
        for (host, covered) in [
            ("localhost", true),
            ("sso.corp.example", true),
            ("corp.example", true),
            ("notcorp.example", false),
            ("x.lab.example", true),
            ("10.2.3.4", true),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("[::1]", true),
            ("idp.example", true),
            ("login.microsoftonline.com", false),
        ] {
            assert_eq!(n.covers(host), covered, "{host}");
        }
        assert!(NoProxy::parse("*").covers("anything.example"));
        assert!(!NoProxy::parse("").covers("anything.example"));
    }

    #[test]
    fn connect_heads() {
        assert_eq!(connect_request("idp:443", None), "CONNECT idp:443 HTTP/1.1\r\nHost: idp:443\r\n\r\n");
        assert_eq!(
            connect_request("idp:443", Some("alice:s3cret")),
            "CONNECT idp:443 HTTP/1.1\r\nHost: idp:443\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
        );
        for (head, want) in [
            (&b"HTTP/1.1 200 Connection established\r\n\r\n"[..], Some(200)),
            (b"HTTP/1.0 200\r\n\r\n", Some(200)),
            (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", Some(407)),
            (b"SSH-2.0-OpenSSH\r\n\r\n", None),
            (b"HTTP/1.1 2000 x\r\n\r\n", None),
        ] {
            assert_eq!(parse_status(head), want, "{}", String::from_utf8_lossy(head));
        }
    }

    /// A proxy that answers `reply` to whatever it is sent, and what it was sent.
    async fn fake_proxy(reply: &'static [u8]) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = vec![0u8; 1024];
            let n = s.read(&mut got).await.unwrap();
            got.truncate(n);
            s.write_all(reply).await.unwrap();
            got
        });
        (addr, task)
    }

    async fn tunnel_via(addr: std::net::SocketAddr, creds: &str) -> Result<TokioIo<TcpStream>, BoxError> {
        let egress = Egress::new(&EgressProxy::Via(url(&format!("http://{creds}{addr}"))), |_| None).unwrap();
        let mut direct = HttpConnector::new();
        direct.enforce_http(false);
        let mut c = Connector::new(direct, egress, Duration::from_secs(2));
        tower_service::Service::call(&mut c, "https://idp.example:8443/x".parse().unwrap()).await
    }

    #[tokio::test]
    async fn a_tunnel_opens_with_the_credentials() {
        let (addr, seen) = fake_proxy(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        tunnel_via(addr, "alice:s3cret@").await.unwrap();
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        assert!(seen.starts_with("CONNECT idp.example:8443 HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"), "{seen}");
    }

    #[tokio::test]
    async fn refusals_and_silence_are_errors_not_hangs() {
        let (addr, _) = fake_proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let e = tunnel_via(addr, "alice:s3cret@").await.unwrap_err().to_string();
        assert!(e.contains("refused CONNECT to idp.example:8443: HTTP 403") && !e.contains("s3cret"), "{e}");
        let (addr, _) = fake_proxy(b"garbage\r\n\r\n").await;
        assert!(tunnel_via(addr, "").await.unwrap_err().to_string().contains("something other than"));
        // Nobody listening.
        let addr = { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap() };
        assert!(tunnel_via(addr, "").await.unwrap_err().to_string().contains("unreachable"));
        // A proxy that accepts and never answers: bounded by the timeout.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let started = std::time::Instant::now();
        assert!(tunnel_via(addr, "").await.unwrap_err().to_string().contains("did not open the tunnel"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
