//! `[listen]`: where clients connect, with or without TLS, and which peers in front of
//! tether are believed about the client's address and fingerprint.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::header::HeaderName;
use ipnet::IpNet;

use super::decode::Section;
use super::Problem;
use crate::intel::prefix::parse_net;

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    /// `None`: a plaintext listener (behind a TLS-terminating balancer).
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-For`, `Forwarded`, PROXY header and JA4 header are
    /// believed: the configured list and the lines of `trusted_proxies_file`.
    pub trusted_proxies: Vec<IpNet>,
    /// A file of further trusted ranges (one address or CIDR per line, `#` comments),
    /// read with the config, so a CDN's published ranges refresh with a reload.
    pub trusted_proxies_file: Option<PathBuf>,
    /// Expect a PROXY protocol (v1 or v2) header from trusted peers.
    pub proxy_protocol: bool,
    /// The header in which a trusted balancer or CDN passes the client's JA4 (on a TLS
    /// listener too: the connection's own hello is then the CDN's).
    pub ja4_header: Option<HeaderName>,
    /// A CDN's own client-address header (`CF-Connecting-IP`, `True-Client-IP`), believed
    /// from trusted peers before `Forwarded` and `X-Forwarded-For`.
    pub client_ip_header: Option<HeaderName>,
    /// Authenticated origin pulls: the TLS listener requires a client certificate issued
    /// by this CA, so only the CDN can connect at all.
    pub client_ca: Option<PathBuf>,
    /// A shared secret a trusted peer must send in a header on every request before its
    /// forwarded headers are believed (weaker than `client_ca`; see docs/deployment.md).
    pub proxy_secret: Option<ProxySecret>,
    /// Offer HTTP/2 to TLS clients (default); off for consoles that misbehave over it.
    pub http2: bool,
    /// Threads serving connections, each with its own runtime; one per core by default.
    /// Read at start only.
    pub workers: usize,
}

/// `listen.proxy_secret_header` and the secret from `listen.proxy_secret_file`; `Debug`
/// never shows the secret.
#[derive(Clone)]
pub struct ProxySecret {
    pub header: HeaderName,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ProxySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxySecret {{ header: {}, secret: <redacted> }}", self.header)
    }
}

/// A shorter shared secret is guessable; a CDN's configuration takes any length.
const MIN_PROXY_SECRET: usize = 16;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// More threads than this would only switch between each other.
const MAX_WORKERS: i64 = 256;

/// One worker per core the process may use (cgroup limits included).
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(super) fn read(s: &Section<'_>) -> Option<Listen> {
    if !s.is_present() {
        s.problem("addr", Problem::Missing);
    }
    let addr = s.required_string("addr").and_then(|v| s.parse_value::<SocketAddr>("addr", v, "an address such as \"0.0.0.0:8443\""));
    let cert = s.optional_file("tls_cert");
    let key = s.optional_file("tls_key");
    let cert_given = s.has("tls_cert");
    let key_given = s.has("tls_key");
    if cert_given != key_given {
        s.problem(if cert_given { "tls_key" } else { "tls_cert" }, Problem::Conflict { reason: "tls_cert and tls_key go together: give both or neither" });
    }
    let mut trusted_proxies = read_cidrs(s, "trusted_proxies");
    let trusted_proxies_file = s.optional_file("trusted_proxies_file");
    if let Ok(Some(path)) = &trusted_proxies_file {
        trusted_proxies.extend(read_cidr_file(s, "trusted_proxies_file", path));
    }
    let proxy_protocol = s.boolean("proxy_protocol").unwrap_or(false);
    let ja4_header = s.parsed::<HeaderName>("ja4_header", "a header name");
    let client_ip_header = s.parsed::<HeaderName>("client_ip_header", "a header name");
    let client_ca = s.optional_file("client_ca");
    if s.has("client_ca") && !cert_given {
        s.problem("client_ca", Problem::Conflict { reason: "client certificates need a TLS listener (tls_cert and tls_key)" });
    }
    let proxy_secret = read_proxy_secret(s);
    let tls = match (cert, key) {
        (Ok(Some(cert)), Ok(Some(key))) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    Some(Listen {
        addr: addr?,
        tls,
        trusted_proxies,
        trusted_proxies_file: trusted_proxies_file.ok()?,
        proxy_protocol,
        ja4_header,
        client_ip_header,
        client_ca: client_ca.ok()?,
        proxy_secret: proxy_secret?,
        http2: s.boolean("http2").unwrap_or(true),
        workers: s.integer("workers", 1, MAX_WORKERS).map_or_else(default_workers, |n| n as usize),
    })
}

/// `proxy_secret_header` and `proxy_secret_file`: both or neither.
fn read_proxy_secret(s: &Section<'_>) -> Option<Option<ProxySecret>> {
    let header = s.parsed::<HeaderName>("proxy_secret_header", "a header name");
    let file = s.optional_file("proxy_secret_file");
    match (s.has("proxy_secret_header"), s.has("proxy_secret_file")) {
        (false, false) => return Some(None),
        (true, false) => {
            s.problem("proxy_secret_file", Problem::Missing);
            return None;
        }
        (false, true) => {
            s.problem("proxy_secret_header", Problem::Missing);
            return None;
        }
        (true, true) => {}
    }
    let path = file.ok()??;
    let secret = match std::fs::read(&path) {
        Ok(bytes) => bytes.trim_ascii().to_vec(),
        Err(e) => {
            s.problem("proxy_secret_file", Problem::Invalid { expected: "a readable file", found: format!("{}: {e}", path.display()) });
            return None;
        }
    };
    if secret.len() < MIN_PROXY_SECRET {
        s.problem("proxy_secret_file", Problem::Invalid { expected: "a secret of at least 16 bytes", found: format!("{} bytes", secret.len()) });
        return None;
    }
    Some(Some(ProxySecret { header: header?, secret }))
}

/// The addresses and CIDRs in a file, one per line (`#` starts a comment); each bad line
/// is reported with its number.
fn read_cidr_file(s: &Section<'_>, key: &'static str, path: &std::path::Path) -> Vec<IpNet> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            s.problem(key, Problem::Invalid { expected: "a readable file of addresses and CIDRs", found: format!("{}: {e}", path.display()) });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let item = line.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        match parse_net(item) {
            Some(net) => out.push(net),
            None => s.problem(&format!("{key}:{}", n + 1), Problem::Invalid { expected: "an IP address or CIDR", found: item.to_owned() }),
        }
    }
    out
}

/// The addresses and CIDRs under `key`; a bad item is reported and left out.
fn read_cidrs(s: &Section<'_>, key: &'static str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, item) in s.string_array(key).unwrap_or_default().into_iter().enumerate() {
        match parse_net(item) {
            Some(net) => out.push(net),
            None => s.problem(&format!("{key}[{i}]"), Problem::Invalid { expected: "an IP address or CIDR", found: item.to_owned() }),
        }
    }
    out
}
