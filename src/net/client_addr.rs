//! Which address is the client: the socket peer, unless the peer is a configured trusted
//! proxy, in which case the rightmost untrusted hop of `Forwarded` (or, without one, of
//! `X-Forwarded-For`).
//!
//! `Forwarded` first: a balancer that speaks the standard header appends to it, and a
//! client can add an `X-Forwarded-For` of its own that such a balancer passes through
//! untouched — read first, it would let the client choose its address. A balancer that
//! speaks `X-Forwarded-For` must overwrite (or strip) a client's `Forwarded`, as the
//! common ones can be told to; docs/detection.md says so.
//!
//! The client address is a risk signal, so believing a forwarded header from anyone but
//! a configured hop would let a thief choose the address tether judges.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, FORWARDED};
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The configured trusted hops.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client address for one request that arrived from `peer` (`peer_trusted`: a
/// configured hop, with the shared secret when one is required). From a trusted peer, a
/// CDN's own `client_ip_header` (a single address) comes first.
pub fn resolve(peer: IpAddr, peer_trusted: bool, headers: &HeaderMap, trusted: &TrustedProxies, client_ip_header: Option<&HeaderName>) -> IpAddr {
    let peer = peer.to_canonical();
    if !peer_trusted {
        return peer;
    }
    if let Some(name) = client_ip_header {
        let mut values = headers.get_all(name).iter();
        // One value naming one address; two values, or one that is not an address, name
        // nobody and the standard headers decide.
        if let (Some(v), None) = (values.next(), values.next()) {
            if let Some(ip) = std::str::from_utf8(v.as_bytes()).ok().and_then(|s| s.trim().parse::<IpAddr>().ok()) {
                return ip.to_canonical();
            }
        }
    }
    if headers.contains_key(FORWARDED) {
        let hops = headers
            .get_all(FORWARDED)
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|&b| b == b','))
            .map(forwarded_for);
        return walk(peer, hops, trusted);
    }
    if headers.contains_key(X_FORWARDED_FOR) {
        let hops = headers.get_all(X_FORWARDED_FOR).iter().rev().flat_map(|v| v.as_bytes().rsplit(|&b| b == b','));
        return walk(peer, hops.map(parse_xff_hop), trusted);
    }
    peer
}

/// Walks hops right to left: the first untrusted one is the client. A hop that cannot be
/// read ends the walk at the last address known good, since nothing left of it is
/// vouched for by a trusted hop.
fn walk(peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>, trusted: &TrustedProxies) -> IpAddr {
    let mut current = peer;
    for hop in hops {
        match hop {
            Some(ip) => {
                current = ip.to_canonical();
                if !trusted.contains(current) {
                    return current;
                }
            }
            None => return current,
        }
    }
    current
}

fn parse_xff_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    s.parse().ok().or_else(|| parse_host_port(s))
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239).
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let element = std::str::from_utf8(element).ok()?;
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    parse_host_port(value.trim_matches('"'))
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_host_port(s: &str) -> Option<IpAddr> {
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    s.parse().ok().or_else(|| s.rsplit_once(':').and_then(|(h, _)| h.parse::<std::net::Ipv4Addr>().ok()).map(IpAddr::V4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Resolves as the proxy does without a client-address header or a secret.
    fn res(peer: IpAddr, h: &HeaderMap, t: &TrustedProxies) -> IpAddr {
        resolve(peer, t.contains(peer), h, t, None)
    }

    #[test]
    fn a_cdns_own_header_comes_first_from_a_trusted_peer_only() {
        let t = trusted(&["10.0.0.0/8"]);
        let name = HeaderName::from_static("cf-connecting-ip");
        // (peer, trusted (secret and all)?, headers, client)
        type Row = (&'static str, bool, &'static [(&'static str, &'static str)], &'static str);
        let rows: [Row; 8] = [
            ("10.0.0.2", true, &[("cf-connecting-ip", "203.0.113.9"), ("x-forwarded-for", "198.51.100.1")], "203.0.113.9"),
            ("10.0.0.2", true, &[("cf-connecting-ip", " 2001:db8::7 ")], "2001:db8::7"),
            ("10.0.0.2", true, &[("cf-connecting-ip", "::ffff:203.0.113.9")], "203.0.113.9"),
            // Unreadable, or two of them: the standard headers decide.
            ("10.0.0.2", true, &[("cf-connecting-ip", "nonsense"), ("x-forwarded-for", "198.51.100.1")], "198.51.100.1"),
            ("10.0.0.2", true, &[("cf-connecting-ip", "203.0.113.9"), ("cf-connecting-ip", "203.0.113.10"), ("x-forwarded-for", "198.51.100.1")], "198.51.100.1"),
            ("10.0.0.2", true, &[("cf-connecting-ip", "203.0.113.9, 203.0.113.10")], "10.0.0.2"),
            // An untrusted peer, or a trusted one without the secret: its own address.
            ("192.0.2.50", false, &[("cf-connecting-ip", "203.0.113.9")], "192.0.2.50"),
            ("10.0.0.2", false, &[("cf-connecting-ip", "203.0.113.9"), ("x-forwarded-for", "198.51.100.1")], "10.0.0.2"),
        ];
        for (peer, peer_trusted, pairs, want) in rows {
            assert_eq!(resolve(ip(peer), peer_trusted, &headers(pairs), &t, Some(&name)), ip(want), "{peer} {pairs:?}");
        }
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=198.51.100.1")]);
        assert_eq!(res(ip("192.0.2.50"), &h, &trusted(&[])), ip("192.0.2.50"));
        assert_eq!(res(ip("192.0.2.50"), &h, &trusted(&["10.0.0.0/8"])), ip("192.0.2.50"));
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client prepended a spoofed hop; the balancer appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("203.0.113.9"));
    }

    #[test]
    fn a_balancer_forwarded_header_wins_over_a_client_x_forwarded_for() {
        let t = trusted(&["10.0.0.0/8"]);
        // The balancer speaks Forwarded; the client sent an X-Forwarded-For of its own.
        let h = headers(&[("x-forwarded-for", "127.0.0.1"), ("forwarded", "for=203.0.113.9;proto=https")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("203.0.113.9"));
        // Without Forwarded, X-Forwarded-For as before.
        let h = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("203.0.113.5"));
    }

    #[test]
    fn all_trusted_gives_leftmost_and_garbage_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("10.1.1.1"));
        let h = headers(&[("x-forwarded-for", "203.0.113.1, bogus, 10.2.2.2")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("10.2.2.2"));
        let h = headers(&[("x-forwarded-for", "")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_header_forms() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("forwarded", "for=198.51.100.1;proto=https, for=\"[2001:db8::7]:4711\"")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080;by=10.0.0.1")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(res(ip("10.0.0.2"), &h, &t), ip("10.0.0.2"));
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.5")]);
        assert_eq!(res(ip("::ffff:10.0.0.2"), &h, &t), ip("203.0.113.5"));
    }
}
