//! PROXY protocol v1 (text) and v2 (binary) headers, parsed from the bytes read so far.
//!
//! Only consulted for peers in `listen.trusted_proxies`; anyone else could claim any
//! address. Pure: the caller reads, this says "need more", "done" or "invalid".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v1 headers are at most 107 bytes including CRLF (spec §2.1).
const V1_MAX: usize = 107;
/// v2 signature (spec §2.2).
const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Bound on v2 TLVs that tether skips; real balancers send a few dozen bytes.
const V2_MAX_PAYLOAD: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    NeedMore,
    /// `consumed` header bytes; `source` is `None` for LOCAL / UNKNOWN (use the peer).
    Done { consumed: usize, source: Option<SocketAddr> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol signature")]
    NoSignature,
    #[error("malformed PROXY v1 header")]
    MalformedV1,
    #[error("malformed PROXY v2 header")]
    MalformedV2,
    #[error("PROXY v2 header longer than {V2_MAX_PAYLOAD} bytes")]
    TooLong,
}

pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.len() >= V2_SIG.len() || V2_SIG.starts_with(buf) {
        if buf.starts_with(&V2_SIG) {
            return parse_v2(buf);
        }
        if V2_SIG.starts_with(buf) {
            return Ok(Parsed::NeedMore);
        }
    }
    const V1: &[u8] = b"PROXY ";
    if buf.len() < V1.len() {
        return if V1.starts_with(buf) { Ok(Parsed::NeedMore) } else { Err(ProxyHeaderError::NoSignature) };
    }
    if !buf.starts_with(V1) {
        return Err(ProxyHeaderError::NoSignature);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Err(ProxyHeaderError::MalformedV1) } else { Ok(Parsed::NeedMore) };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyHeaderError::MalformedV1)?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let source = match parts.next() {
        Some("UNKNOWN") => None,
        Some(fam @ ("TCP4" | "TCP6")) => {
            let src: IpAddr = parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyHeaderError::MalformedV1)?;
            let _dst: IpAddr = parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyHeaderError::MalformedV1)?;
            let sport: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyHeaderError::MalformedV1)?;
            let _dport: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or(ProxyHeaderError::MalformedV1)?;
            if parts.next().is_some() || (fam == "TCP4") != src.is_ipv4() {
                return Err(ProxyHeaderError::MalformedV1);
            }
            Some(SocketAddr::new(src, sport))
        }
        _ => return Err(ProxyHeaderError::MalformedV1),
    };
    Ok(Parsed::Done { consumed: end + 2, source })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.len() < 16 {
        return Ok(Parsed::NeedMore);
    }
    let ver_cmd = buf[12];
    let family = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::MalformedV2);
    }
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong);
    }
    if buf.len() < 16 + len {
        return Ok(Parsed::NeedMore);
    }
    let payload = &buf[16..16 + len];
    let consumed = 16 + len;
    let source = match (ver_cmd & 0x0f, family) {
        // LOCAL: a health check from the balancer itself.
        (0x0, _) => None,
        (0x1, 0x11) => {
            let a = payload.get(..12).ok_or(ProxyHeaderError::MalformedV2)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (0x1, 0x21) => {
            let a = payload.get(..36).ok_or(ProxyHeaderError::MalformedV2)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([a[32], a[33]])))
        }
        // UNSPEC or UNIX sockets: no usable client address.
        (0x1, _) => None,
        _ => return Err(ProxyHeaderError::MalformedV2),
    };
    Ok(Parsed::Done { consumed, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn v1_tcp4_and_every_prefix() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n\x16\x03\x01";
        let want = Parsed::Done { consumed: h.len() - 3, source: Some("203.0.113.7:51000".parse().unwrap()) };
        assert_eq!(parse(h), Ok(want));
        for n in 0..h.len() - 3 {
            assert_eq!(parse(&h[..n]), Ok(Parsed::NeedMore), "prefix {n}");
        }
    }

    #[test]
    fn v1_tcp6_unknown_and_malformed() {
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\n";
        assert_eq!(parse(h), Ok(Parsed::Done { consumed: h.len(), source: Some("[2001:db8::1]:1234".parse().unwrap()) }));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Done { consumed: 15, source: None }));
        assert_eq!(parse(b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"), Err(ProxyHeaderError::MalformedV1));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"), Err(ProxyHeaderError::MalformedV1));
        assert_eq!(parse(&[b'P'; 200]), Err(ProxyHeaderError::NoSignature));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert_eq!(parse(&long), Err(ProxyHeaderError::MalformedV1));
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Err(ProxyHeaderError::NoSignature));
    }

    #[test]
    fn v2_families_local_and_prefixes() {
        let mut p4 = vec![198, 51, 100, 9, 10, 0, 0, 1];
        p4.extend_from_slice(&4321u16.to_be_bytes());
        p4.extend_from_slice(&443u16.to_be_bytes());
        p4.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, skipped
        let h = v2(1, 0x11, &p4);
        assert_eq!(parse(&h), Ok(Parsed::Done { consumed: h.len(), source: Some("198.51.100.9:4321".parse().unwrap()) }));
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(Parsed::NeedMore), "prefix {n}");
        }
        let mut p6 = vec![0u8; 36];
        p6[..16].copy_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        p6[32..34].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(parse(&v2(1, 0x21, &p6)), Ok(Parsed::Done { consumed: 52, source: Some("[2001:db8::5]:80".parse().unwrap()) }));
        assert_eq!(parse(&v2(0, 0x00, &[])), Ok(Parsed::Done { consumed: 16, source: None }));
        assert_eq!(parse(&v2(1, 0x11, &[1, 2, 3])), Err(ProxyHeaderError::MalformedV2));
        let mut bad_version = v2(1, 0x11, &p4);
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyHeaderError::MalformedV2));
        let mut huge = V2_SIG.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&huge), Err(ProxyHeaderError::TooLong));
    }
}
