//! A set of IP prefixes with a value each, looked up by address: one hash probe per
//! distinct prefix length present, so a list of thousands of IoC entries costs a handful
//! of probes rather than a scan.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// A CIDR, or a bare address as a host prefix; host bits are cleared.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from)).map(|n| n.trunc())
}

#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    /// (is_v6, prefix length) → masked address bits → value; longest lengths first.
    by_len: Vec<(bool, u8, HashMap<u128, V>)>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap { by_len: Vec::new() }
    }
}

fn key(ip: IpAddr, len: u8) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let masked = if len == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(len))) };
            (false, u128::from(masked))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let masked = if len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(len))) };
            (true, masked)
        }
    }
}

impl<V> PrefixMap<V> {
    /// Inserts `net`; an existing equal prefix keeps its first value.
    pub fn insert(&mut self, net: IpNet, value: V) {
        let net = net.trunc();
        let (v6, bits) = key(net.addr(), net.prefix_len());
        let len = net.prefix_len();
        let slot = match self.by_len.iter().position(|(s6, l, _)| *s6 == v6 && *l == len) {
            Some(i) => i,
            None => {
                self.by_len.push((v6, len, HashMap::new()));
                self.by_len.sort_by_key(|e| std::cmp::Reverse(e.1));
                // invariant: just pushed an entry with this key.
                self.by_len.iter().position(|(s6, l, _)| *s6 == v6 && *l == len).expect("slot present")
            }
        };
        self.by_len[slot].2.entry(bits).or_insert(value);
    }

    /// The value of the longest prefix containing `ip`.
    pub fn longest(&self, ip: IpAddr) -> Option<&V> {
        let ip = ip.to_canonical();
        let v6 = ip.is_ipv6();
        self.by_len.iter().filter(|(s6, _, _)| *s6 == v6).find_map(|(_, len, map)| map.get(&key(ip, *len).1))
    }

    /// Every value whose prefix contains `ip`, longest first.
    pub fn all(&self, ip: IpAddr) -> impl Iterator<Item = &V> {
        let ip = ip.to_canonical();
        let v6 = ip.is_ipv6();
        self.by_len.iter().filter(move |(s6, _, _)| *s6 == v6).filter_map(move |(_, len, map)| map.get(&key(ip, *len).1))
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_len.iter().map(|(_, _, m)| m.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_v4_v6_and_mapped() {
        let mut m = PrefixMap::default();
        m.insert("10.0.0.0/8".parse().unwrap(), "eight");
        m.insert("10.1.0.0/16".parse().unwrap(), "sixteen");
        m.insert("10.1.2.3/32".parse().unwrap(), "host");
        m.insert("2001:db8::/32".parse().unwrap(), "v6");
        m.insert("0.0.0.0/0".parse().unwrap(), "default");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(m.longest(ip("10.1.2.3")), Some(&"host"));
        assert_eq!(m.longest(ip("10.1.9.9")), Some(&"sixteen"));
        assert_eq!(m.longest(ip("10.200.0.1")), Some(&"eight"));
        assert_eq!(m.longest(ip("192.0.2.1")), Some(&"default"));
        assert_eq!(m.longest(ip("::ffff:10.1.2.3")), Some(&"host"));
        assert_eq!(m.longest(ip("2001:db8:1::1")), Some(&"v6"));
        assert_eq!(m.longest(ip("2001:db9::1")), None);
        assert_eq!(m.all(ip("10.1.2.3")).copied().collect::<Vec<_>>(), vec!["host", "sixteen", "eight", "default"]);
        // A non-truncated CIDR is stored by its network.
        m.insert("172.16.5.5/12".parse().unwrap(), "twelve");
        assert_eq!(m.longest(ip("172.31.0.1")), Some(&"twelve"));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn nets_parse_as_cidr_or_bare_address() {
        assert_eq!(parse_net("10.1.2.3/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_net("192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_net("2001:db8::1"), Some("2001:db8::1/128".parse().unwrap()));
        for bad in ["", "banana", "10.0.0.0/33", "10.0.0.0/", " 10.0.0.1"] {
            assert_eq!(parse_net(bad), None, "{bad:?}");
        }
    }
}
