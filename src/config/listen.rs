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
    /// Peers whose `X-Forwarded-For`, `Forwarded`, PROXY header and JA4 header are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Expect a PROXY protocol (v1 or v2) header from trusted peers.
    pub proxy_protocol: bool,
    /// On a plaintext listener, the header in which a trusted balancer passes the JA4.
    pub ja4_header: Option<HeaderName>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
    let trusted_proxies = read_cidrs(s, "trusted_proxies");
    let proxy_protocol = s.boolean("proxy_protocol").unwrap_or(false);
    let ja4_header = s.parsed::<HeaderName>("ja4_header", "a header name");
    if ja4_header.is_some() && cert_given {
        s.problem("ja4_header", Problem::Conflict { reason: "a JA4 header is only read on a plaintext listener; with TLS tether computes the JA4 itself" });
    }
    let tls = match (cert, key) {
        (Ok(Some(cert)), Ok(Some(key))) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    Some(Listen { addr: addr?, tls, trusted_proxies, proxy_protocol, ja4_header })
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
