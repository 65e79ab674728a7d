//! The shared store's wire form: session records and user baselines as small
//! hand-written binary values, each led by a version byte (pending step-up challenges
//! use the same reader, from the step-up module).
//!
//! Fixed-width big-endian fields, so a record is ~100 bytes and the Lua scripts can read
//! the few header fields they merge (`struct.unpack('>BIIBBH', v)`) without a decoder.
//! Decoding reads only what the value says it holds and refuses anything short, long or
//! out of range: a value in Redis is input like any other.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use crate::fingerprint::{Os, TlsClass, UaFamily, UserAgent};
use crate::intel::{Asn, Category, Coordinates, Country, NetInfo};
use crate::session::record::{Client, Ja4Digest, Moment, OwnerSource, Place, Prefix, Proven, ProvenContext, Recent, Sighting, PROVEN_CONTEXTS, RECENT_ADDRESSES};
use crate::session::device::{DeviceAlg, DeviceBinding, DeviceKey, MAX_KEY_BYTES};
use crate::session::lineage::{Digest, Lineage, DIGEST_LEN};
use crate::session::{Secs, SessionRecord, UserBaseline};

/// Bumped on any layout change: a replica never misreads another version's value, it
/// treats it as absent (the session binds afresh).
pub const RECORD_VERSION: u8 = 1;
pub const BASELINE_VERSION: u8 = 1;
pub const LINEAGE_VERSION: u8 = 1;
const LINEAGE_LEN: usize = 2 + 2 * DIGEST_LEN + 8;

/// Header flags, read by the store script too (keep in step with `scripts.rs`).
pub const FLAG_AUTH: u8 = 1;
pub const FLAG_PENDING: u8 = 1 << 1;
pub const FLAG_SUSPECT: u8 = 1 << 2;
const FLAG_PREVIOUS: u8 = 1 << 3;
const FLAG_JA4: u8 = 1 << 4;
const FLAG_USER: u8 = 1 << 5;
/// A device binding (DBSC) follows the proven contexts, and the value ends with its
/// length, so the store script can carry it over without a decoder.
pub const FLAG_DEVICE: u8 = 1 << 6;

/// Longest user name or challenge string kept; longer ones are not encodable (a user
/// claim is a name, not a document).
pub const MAX_STRING: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("value too short")]
    Truncated,
    #[error("unknown encoding version {0}")]
    Version(u8),
    #[error("field out of range")]
    Invalid,
    #[error("trailing bytes after the value")]
    Trailing,
    #[error("a string is longer than {MAX_STRING} bytes")]
    TooLong,
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CodecError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = usize::from(self.u16()?);
        if n > MAX_STRING {
            return Err(CodecError::TooLong);
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| CodecError::Invalid)
    }

    pub(crate) fn end(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing)
        }
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), CodecError> {
    if s.len() > MAX_STRING {
        return Err(CodecError::TooLong);
    }
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// One code per variant. The matches are exhaustive, so a new variant does not compile
/// until it has a code; `*_from` are their inverses (a unit test walks every code).
fn category_code(c: Category) -> u8 {
    match c {
        Category::Vpn => 0,
        Category::Hosting => 1,
        Category::Tor => 2,
        Category::Proxy => 3,
        Category::PrivacyRelay => 4,
        Category::Corporate => 5,
        Category::Other => 6,
    }
}

fn category_from(b: u8) -> Result<Category, CodecError> {
    Category::ALL.into_iter().find(|c| category_code(*c) == b).ok_or(CodecError::Invalid)
}

const FAMILIES: [UaFamily; 16] = [
    UaFamily::Chrome,
    UaFamily::Edge,
    UaFamily::Firefox,
    UaFamily::Safari,
    UaFamily::Opera,
    UaFamily::OtherBrowser,
    UaFamily::Curl,
    UaFamily::Wget,
    UaFamily::Python,
    UaFamily::Go,
    UaFamily::Java,
    UaFamily::Node,
    UaFamily::PowerShell,
    UaFamily::OkHttp,
    UaFamily::OtherLibrary,
    UaFamily::Unknown,
];

fn family_code(f: UaFamily) -> u8 {
    match f {
        UaFamily::Chrome => 0,
        UaFamily::Edge => 1,
        UaFamily::Firefox => 2,
        UaFamily::Safari => 3,
        UaFamily::Opera => 4,
        UaFamily::OtherBrowser => 5,
        UaFamily::Curl => 6,
        UaFamily::Wget => 7,
        UaFamily::Python => 8,
        UaFamily::Go => 9,
        UaFamily::Java => 10,
        UaFamily::Node => 11,
        UaFamily::PowerShell => 12,
        UaFamily::OkHttp => 13,
        UaFamily::OtherLibrary => 14,
        UaFamily::Unknown => 15,
    }
}

fn family_from(b: u8) -> Result<UaFamily, CodecError> {
    FAMILIES.into_iter().find(|f| family_code(*f) == b).ok_or(CodecError::Invalid)
}

const OSES: [Os; 7] = [Os::Windows, Os::MacOs, Os::Ios, Os::Android, Os::Linux, Os::ChromeOs, Os::Other];

fn os_code(o: Os) -> u8 {
    match o {
        Os::Windows => 0,
        Os::MacOs => 1,
        Os::Ios => 2,
        Os::Android => 3,
        Os::Linux => 4,
        Os::ChromeOs => 5,
        Os::Other => 6,
    }
}

fn os_from(b: u8) -> Result<Os, CodecError> {
    OSES.into_iter().find(|o| os_code(*o) == b).ok_or(CodecError::Invalid)
}

const TLS_CLASSES: [TlsClass; 3] = [TlsClass::Browser, TlsClass::Library, TlsClass::Unknown];

fn tls_code(t: TlsClass) -> u8 {
    match t {
        TlsClass::Browser => 0,
        TlsClass::Library => 1,
        TlsClass::Unknown => 2,
    }
}

fn tls_from(b: u8) -> Result<TlsClass, CodecError> {
    TLS_CLASSES.into_iter().find(|t| tls_code(*t) == b).ok_or(CodecError::Invalid)
}

/// 9 bytes: family, major, os, TLS class, JA4 digest (zero when absent; its presence
/// travels in the record's flags).
fn put_client(out: &mut Vec<u8>, c: &Client) {
    out.push(family_code(c.ua.family));
    out.extend_from_slice(&c.ua.major.to_be_bytes());
    out.push(os_code(c.ua.os));
    out.push(tls_code(c.tls));
    out.extend_from_slice(&c.ja4.map_or(0, Ja4Digest::to_bits).to_be_bytes());
}

fn client(r: &mut Reader<'_>, has_ja4: bool) -> Result<Client, CodecError> {
    let family = family_from(r.u8()?)?;
    let major = r.u16()?;
    let os = os_from(r.u8()?)?;
    let tls = tls_from(r.u8()?)?;
    let ja4 = r.u32()?;
    Ok(Client { ua: UserAgent { family, major, os }, ja4: has_ja4.then_some(Ja4Digest::from_bits(ja4)), tls })
}

/// 25 bytes: prefix, ASN, category, country, latitude, longitude, accuracy, time.
fn put_place(out: &mut Vec<u8>, p: &Place) {
    out.extend_from_slice(&p.prefix.to_bits().to_be_bytes());
    out.extend_from_slice(&p.asn().map_or(0, |a| a.0).to_be_bytes());
    out.push(category_code(p.category));
    match p.country() {
        Some(c) => out.extend_from_slice(c.as_str().as_bytes()),
        None => out.extend_from_slice(&[0, 0]),
    }
    let (lat, lon, acc) = match p.location() {
        Some(c) => ((c.latitude * 100.0).round() as i16, (c.longitude * 100.0).round() as i16, c.accuracy_km),
        None => (0, 0, 0),
    };
    out.extend_from_slice(&lat.to_be_bytes());
    out.extend_from_slice(&lon.to_be_bytes());
    out.extend_from_slice(&acc.to_be_bytes());
    out.extend_from_slice(&p.at.to_be_bytes());
}

fn place(r: &mut Reader<'_>) -> Result<Place, CodecError> {
    let prefix = Prefix::from_bits(r.u64()?);
    let asn = r.u32()?;
    let category = category_from(r.u8()?)?;
    let cc = r.take(2)?;
    let country = match cc {
        [0, 0] => None,
        _ => Some(std::str::from_utf8(cc).ok().and_then(Country::new).ok_or(CodecError::Invalid)?),
    };
    let lat = r.u16()? as i16;
    let lon = r.u16()? as i16;
    let accuracy_km = r.u16()?;
    let at = r.u32()?;
    let location = (accuracy_km != 0).then(|| Coordinates { latitude: f32::from(lat) / 100.0, longitude: f32::from(lon) / 100.0, accuracy_km });
    let net = NetInfo { asn: (asn != 0).then_some(Asn(asn)), country, location, category, ..NetInfo::unknown() };
    // The address only feeds the prefix, which is then set from the stored bits.
    let mut p = Place::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), &net, at);
    p.prefix = prefix;
    Ok(p)
}

/// Header offsets the store script reads (1-based in Lua): version 1, created 2..5,
/// authenticated_at 6..9, flags 10, failures 11, user length 12..13, user 14...
pub fn encode_record(r: &SessionRecord) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    let mut flags = 0;
    if r.authenticated_at.get().is_some() {
        flags |= FLAG_AUTH;
    }
    if r.step_up_pending {
        flags |= FLAG_PENDING;
    }
    if r.bound_suspect {
        flags |= FLAG_SUSPECT;
    }
    if r.previous.is_some() {
        flags |= FLAG_PREVIOUS;
    }
    if r.client.ja4.is_some() {
        flags |= FLAG_JA4;
    }
    if r.user.is_some() {
        flags |= FLAG_USER;
    }
    if r.device().is_some() {
        flags |= FLAG_DEVICE;
    }
    out.push(RECORD_VERSION);
    out.extend_from_slice(&r.created.to_be_bytes());
    out.extend_from_slice(&r.authenticated_at.get().unwrap_or(0).to_be_bytes());
    out.push(flags);
    out.push(r.step_up_failures);
    put_str(&mut out, r.user.as_deref().unwrap_or(""))?;
    put_client(&mut out, &r.client);
    put_place(&mut out, &r.bound);
    put_place(&mut out, &r.last);
    // The earlier network is kept without its location: it is written as unknown, in
    // the same layout.
    if let Some(p) = &r.previous {
        put_place(&mut out, &p.place());
    }
    for a in r.recent_addresses {
        out.extend_from_slice(&a.to_be_bytes());
    }
    put_owner_and_proven(&mut out, r);
    if let Some(d) = r.device() {
        put_device(&mut out, d)?;
    }
    Ok(out)
}

/// The device binding, last of all: algorithm (1), registered (4), demanded (4), the
/// key's split (2) and length (2) and bytes, then the length of all of that (2), which
/// the store script reads from the value's end to carry a binding another replica wrote.
fn put_device(out: &mut Vec<u8>, d: &DeviceBinding) -> Result<(), CodecError> {
    if d.key.bytes.len() > MAX_KEY_BYTES {
        return Err(CodecError::TooLong);
    }
    let start = out.len();
    out.push(d.key.alg.code());
    out.extend_from_slice(&d.registered.to_be_bytes());
    out.extend_from_slice(&d.demanded.to_be_bytes());
    out.extend_from_slice(&d.key.split.to_be_bytes());
    // invariant: bounded by MAX_KEY_BYTES above, so it fits a u16.
    out.extend_from_slice(&(d.key.bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(&d.key.bytes);
    let len = out.len() - start;
    out.extend_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

fn device(r: &mut Reader<'_>) -> Result<DeviceBinding, CodecError> {
    let before = r.buf.len();
    let alg = DeviceAlg::from_code(r.u8()?).ok_or(CodecError::Invalid)?;
    let registered = r.u32()?;
    let demanded = r.u32()?;
    let split = r.u16()?;
    let n = usize::from(r.u16()?);
    if n > MAX_KEY_BYTES || usize::from(split) > n {
        return Err(CodecError::Invalid);
    }
    let bytes: Box<[u8]> = r.take(n)?.into();
    let written = before - r.buf.len();
    if usize::from(r.u16()?) != written {
        return Err(CodecError::Invalid);
    }
    Ok(DeviceBinding { key: DeviceKey { alg, bytes, split }, registered, demanded })
}

/// The tail written after the recent addresses: the owner's source (1 byte), when a
/// silent identification was last tried (4), and the proven contexts (a count, then 20
/// bytes each: prefix, ASN, time, country, category, TLS class). A value without the
/// tail (written before owners and proven contexts were kept) reads as none of them.
fn put_owner_and_proven(out: &mut Vec<u8>, r: &SessionRecord) {
    out.push(owner_code(r.owner_source));
    out.extend_from_slice(&r.identify_at.to_be_bytes());
    // invariant: PROVEN_CONTEXTS is a small constant, so the count fits a byte.
    let proven = r.proven();
    out.push(proven.iter().count() as u8);
    for c in proven.iter() {
        let (prefix, asn, country) = c.parts();
        out.extend_from_slice(&prefix.to_be_bytes());
        out.extend_from_slice(&asn.to_be_bytes());
        out.extend_from_slice(&c.at.to_be_bytes());
        out.extend_from_slice(&country);
        out.push(category_code(c.category));
        out.push(tls_code(c.tls));
    }
}

fn owner_and_proven(r: &mut Reader<'_>) -> Result<(OwnerSource, Secs, Proven), CodecError> {
    if r.buf.is_empty() {
        return Ok((OwnerSource::Unknown, 0, Proven::default()));
    }
    let source = owner_from(r.u8()?)?;
    let identify_at = r.u32()?;
    let n = usize::from(r.u8()?);
    if n > PROVEN_CONTEXTS {
        return Err(CodecError::Invalid);
    }
    let mut contexts = Vec::with_capacity(n);
    for _ in 0..n {
        let prefix = r.u64()?;
        let asn = r.u32()?;
        let at = r.u32()?;
        let cc = r.take(2)?;
        let country = [cc[0], cc[1]];
        if country != [0, 0] && std::str::from_utf8(&country).ok().and_then(Country::new).is_none() {
            return Err(CodecError::Invalid);
        }
        let category = category_from(r.u8()?)?;
        let tls = tls_from(r.u8()?)?;
        contexts.push(ProvenContext::from_parts(prefix, asn, at, country, category, tls));
    }
    Ok((source, identify_at, Proven::from_contexts(contexts)))
}

fn owner_code(s: OwnerSource) -> u8 {
    match s {
        OwnerSource::Unknown => 0,
        OwnerSource::Silent => 1,
        OwnerSource::StepUp => 2,
        OwnerSource::ResponseHeader => 3,
        OwnerSource::UserHeader => 4,
        OwnerSource::Jwt => 5,
    }
}

fn owner_from(b: u8) -> Result<OwnerSource, CodecError> {
    Ok(match b {
        0 => OwnerSource::Unknown,
        1 => OwnerSource::Silent,
        2 => OwnerSource::StepUp,
        3 => OwnerSource::ResponseHeader,
        4 => OwnerSource::UserHeader,
        5 => OwnerSource::Jwt,
        _ => return Err(CodecError::Invalid),
    })
}

pub fn decode_record(buf: &[u8]) -> Result<SessionRecord, CodecError> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(CodecError::Version(version));
    }
    let created = r.u32()?;
    let auth = r.u32()?;
    let flags = r.u8()?;
    let step_up_failures = r.u8()?;
    let user = r.str()?;
    let user = if flags & FLAG_USER != 0 {
        Some(Arc::<str>::from(user))
    } else if user.is_empty() {
        None
    } else {
        return Err(CodecError::Invalid);
    };
    let client = client(&mut r, flags & FLAG_JA4 != 0)?;
    let bound = place(&mut r)?;
    let last = place(&mut r)?;
    let previous = if flags & FLAG_PREVIOUS != 0 { Some(Sighting::of(&place(&mut r)?)) } else { None };
    let mut recent_addresses = [0u32; RECENT_ADDRESSES];
    for a in &mut recent_addresses {
        *a = r.u32()?;
    }
    let (owner_source, identify_at, proven) = owner_and_proven(&mut r)?;
    let device = if flags & FLAG_DEVICE != 0 { Some(device(&mut r)?) } else { None };
    r.end()?;
    let mut record = SessionRecord {
        bound,
        client,
        last,
        previous,
        created,
        user,
        // A zero time (flagged by an older replica) reads as never, as it compares.
        authenticated_at: Moment::from((flags & FLAG_AUTH != 0).then_some(auth)),
        step_up_pending: flags & FLAG_PENDING != 0,
        bound_suspect: flags & FLAG_SUSPECT != 0,
        step_up_failures,
        recent_addresses,
        owner_source,
        identify_at,
        first_proven: None,
        extra: None,
        // The shared store keeps a session's lineage under a key of its own.
        lineage: None,
    };
    record.set_proven(proven);
    record.set_device(device);
    Ok(record)
}

fn put_recent<T: Copy + PartialEq, const N: usize>(out: &mut Vec<u8>, r: &Recent<T, N>, mut item: impl FnMut(&mut Vec<u8>, &T)) {
    // invariant: N is a small constant (at most 16), so the count fits a byte.
    out.push(r.len() as u8);
    for (x, at) in r.iter() {
        item(out, x);
        out.extend_from_slice(&at.to_be_bytes());
    }
}

fn recent<T: Copy + PartialEq, const N: usize>(
    r: &mut Reader<'_>,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, CodecError>,
) -> Result<Recent<T, N>, CodecError> {
    let n = usize::from(r.u8()?);
    if n > N {
        return Err(CodecError::Invalid);
    }
    let mut out = Recent::<T, N>::default();
    for _ in 0..n {
        let x = item(r)?;
        let at = r.u32()?;
        // Slots fill in order and are never freed, so noting in stored order rebuilds the
        // same table; a repeated item is refused rather than merged.
        if out.contains(&x) {
            return Err(CodecError::Invalid);
        }
        out.note(x, at);
    }
    Ok(out)
}

/// A session's lineage, under its own key (`<prefix>l:<session>`): 22 bytes, version,
/// current and previous digests, issue and first-return times, flags (bit 0 armed, bits
/// 1–2 the lost answers re-issued in a row). Kept
/// apart from the record so that a record written back by any replica can never undo a
/// rotation, and a value written before lineage existed needs no new tail.
pub fn encode_lineage(l: &Lineage) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINEAGE_LEN);
    out.push(LINEAGE_VERSION);
    out.extend_from_slice(&l.current);
    out.extend_from_slice(&l.previous);
    out.extend_from_slice(&l.issued_at.to_be_bytes());
    out.extend_from_slice(&l.seen_at().unwrap_or(0).to_be_bytes());
    // invariant: reissues never exceeds MAX_REISSUES (1; the format keeps two bits).
    out.push(u8::from(l.armed) | (l.reissues.min(3) << 1));
    out
}

pub fn decode_lineage(buf: &[u8]) -> Result<Lineage, CodecError> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != LINEAGE_VERSION {
        return Err(CodecError::Version(version));
    }
    let mut digest = || -> Result<Digest, CodecError> {
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(r.take(DIGEST_LEN)?);
        Ok(d)
    };
    let (current, previous) = (digest()?, digest()?);
    let issued_at = r.u32()?;
    let seen_at = r.u32()?;
    let flags = r.u8()?;
    if flags > 7 {
        return Err(CodecError::Invalid);
    }
    r.end()?;
    let mut l = Lineage::new(current, previous, issued_at, (seen_at != 0).then_some(seen_at), flags & 1 != 0);
    l.reissues = flags >> 1;
    Ok(l)
}

pub fn encode_baseline(b: &UserBaseline) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(BASELINE_VERSION);
    out.extend_from_slice(&b.updated.to_be_bytes());
    put_recent(&mut out, &b.networks, |o, a| o.extend_from_slice(&a.0.to_be_bytes()));
    put_recent(&mut out, &b.countries, |o, c| o.extend_from_slice(c.as_str().as_bytes()));
    put_recent(&mut out, &b.clients, |o, c| {
        o.push(u8::from(c.ja4.is_some()));
        put_client(o, c);
    });
    out
}

pub fn decode_baseline(buf: &[u8]) -> Result<UserBaseline, CodecError> {
    let mut r = Reader { buf };
    let version = r.u8()?;
    if version != BASELINE_VERSION {
        return Err(CodecError::Version(version));
    }
    let updated = r.u32()?;
    let networks = recent(&mut r, |r| Ok(Asn(r.u32()?)))?;
    let countries = recent(&mut r, |r| std::str::from_utf8(r.take(2)?).ok().and_then(Country::new).ok_or(CodecError::Invalid))?;
    let clients = recent(&mut r, |r| {
        let has_ja4 = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(CodecError::Invalid),
        };
        client(r, has_ja4)
    })?;
    r.end()?;
    Ok(UserBaseline { networks, countries, clients, updated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::NetInfo;

    fn place_at(ip: &str, net: &NetInfo, at: Secs) -> Place {
        Place::new(ip.parse().unwrap(), net, at)
    }

    fn sample_record() -> SessionRecord {
        let net = NetInfo {
            asn: Some(Asn(64496)),
            country: Country::new("SE"),
            location: Some(Coordinates { latitude: 59.3293, longitude: -18.0686, accuracy_km: 20 }),
            category: Category::PrivacyRelay,
            ..NetInfo::unknown()
        };
        let client = Client {
            ua: UserAgent { family: UaFamily::Firefox, major: 140, os: Os::Linux },
            ja4: Some(Ja4Digest::from_bits(0xdead_beef)),
            tls: TlsClass::Browser,
        };
        let mut r = SessionRecord {
            bound: place_at("2001:db8:1:2::1", &net, 1_700_000_000),
            client,
            last: place_at("192.0.2.10", &NetInfo::unknown(), 1_700_000_100),
            previous: Some(Sighting::of(&place_at("198.51.100.7", &net, 1_700_000_050))),
            created: 1_700_000_000,
            user: Some(Arc::from("alice@example.com")),
            authenticated_at: Moment::at(1_700_000_001),
            step_up_pending: true,
            bound_suspect: false,
            step_up_failures: 2,
            recent_addresses: [7, 6, 0, 0],
            owner_source: OwnerSource::ResponseHeader,
            identify_at: 1_700_000_002,
            first_proven: None,
            extra: None,
            lineage: None,
        };
        r.prove(&place_at("2001:db8:1:2::1", &net, 1_700_000_000), TlsClass::Browser);
        r.prove(&place_at("192.0.2.10", &NetInfo { category: Category::Vpn, ..NetInfo::unknown() }, 1_700_000_100), TlsClass::Library);
        r
    }

    fn sample_baseline() -> UserBaseline {
        let mut b = UserBaseline::default();
        let r = sample_record();
        b.learn(&r.bound, r.client);
        b.learn(&r.previous.unwrap().place(), Client { ja4: None, ..r.client });
        b
    }

    #[test]
    fn records_round_trip() {
        let r = sample_record();
        let bytes = encode_record(&r).unwrap();
        assert_eq!(decode_record(&bytes).unwrap(), r);
        let bare = SessionRecord {
            previous: None,
            user: None,
            authenticated_at: Moment::NEVER,
            step_up_pending: false,
            owner_source: OwnerSource::Unknown,
            identify_at: 0,
            first_proven: None,
            extra: None,
            ..r
        };
        let bytes = encode_record(&bare).unwrap();
        assert_eq!(decode_record(&bytes).unwrap(), bare);
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        // Written before owners and proven contexts were kept: no tail, read as none.
        let old = &bytes[..bytes.len() - 6];
        assert_eq!(decode_record(old).unwrap(), bare);
        // Every cut inside the tail is refused.
        let full = encode_record(&r).unwrap();
        let tail_start = full.len() - 6 - 2 * 20;
        for n in tail_start + 1..full.len() {
            assert!(decode_record(&full[..n]).is_err(), "cut at {n} accepted");
        }
        // A zero time flagged as present (no authentication is that old) reads as never.
        let mut zero = encode_record(&bare).unwrap();
        zero[9] |= FLAG_AUTH;
        assert_eq!(decode_record(&zero).unwrap(), bare);
    }

    fn device_binding() -> Box<DeviceBinding> {
        Box::new(DeviceBinding {
            key: DeviceKey { alg: DeviceAlg::Es256, bytes: (0..64u8).collect::<Vec<_>>().into(), split: 32 },
            registered: 1_700_000_003,
            demanded: 0,
        })
    }

    #[test]
    fn device_bindings_round_trip_and_old_values_read_without_one() {
        let plain = sample_record();
        let mut bound = plain.clone();
        bound.set_device(Some(*device_binding()));
        let bytes = encode_record(&bound).unwrap();
        assert_eq!(decode_record(&bytes).unwrap(), bound);
        // The binding is the value's last part, and its last two bytes say how long it is.
        let tail = usize::from(u16::from_be_bytes([bytes[bytes.len() - 2], bytes[bytes.len() - 1]]));
        assert_eq!(tail, 1 + 4 + 4 + 2 + 2 + 64);
        let without = encode_record(&plain).unwrap();
        assert_eq!(&bytes[11..without.len()], &without[11..], "the binding only appends (and sets a flag)");
        assert_eq!(decode_record(&without).unwrap().device(), None);
        // Every cut inside the binding is refused, as is a flag without the binding.
        for n in without.len()..bytes.len() {
            assert!(decode_record(&bytes[..n]).is_err(), "cut at {n} accepted");
        }
        let mut lying = without.clone();
        lying[9] |= FLAG_DEVICE;
        assert!(decode_record(&lying).is_err());
        // An RSA key too long to keep is not encodable.
        let huge = DeviceBinding { key: DeviceKey { alg: DeviceAlg::Rs256, bytes: vec![1; MAX_KEY_BYTES + 1].into(), split: 3 }, ..*device_binding() };
        let mut too_long = plain;
        too_long.set_device(Some(huge));
        assert_eq!(encode_record(&too_long), Err(CodecError::TooLong));
    }

    #[test]
    fn baselines_round_trip() {
        let b = sample_baseline();
        assert_eq!(decode_baseline(&encode_baseline(&b)).unwrap(), b);
        assert_eq!(decode_baseline(&encode_baseline(&UserBaseline::default())).unwrap(), UserBaseline::default());
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let values = [encode_record(&sample_record()).unwrap(), encode_baseline(&sample_baseline())];
        // A record cut exactly before its owner-and-proven tail is a value written before
        // those were kept, and reads (tested in `records_round_trip`).
        let old_record_end = values[0].len() - 6 - 2 * 20;
        for (i, v) in values.iter().enumerate() {
            for n in (0..v.len()).filter(|n| i != 0 || *n != old_record_end) {
                let cut = &v[..n];
                let refused = if i == 0 { decode_record(cut).is_err() } else { decode_baseline(cut).is_err() };
                assert!(refused, "value {i} cut at {n} was accepted");
            }
            let mut long = v.clone();
            long.push(0);
            let refused = if i == 0 { decode_record(&long) == Err(CodecError::Trailing) } else { decode_baseline(&long) == Err(CodecError::Trailing) };
            assert!(refused, "value {i} with a trailing byte was accepted");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Every single-byte corruption of a valid value decodes or is refused; none panics.
        let v = encode_record(&sample_record()).unwrap();
        for i in 0..v.len() {
            for x in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut w = v.clone();
                w[i] = x;
                let _ = decode_record(&w);
            }
        }
        assert_eq!(decode_record(&[2]), Err(CodecError::Version(2)));
    }

    #[test]
    fn every_code_decodes_to_its_variant() {
        for c in Category::ALL {
            assert_eq!(category_from(category_code(c)), Ok(c));
        }
        for f in FAMILIES {
            assert_eq!(family_from(family_code(f)), Ok(f));
        }
        for o in OSES {
            assert_eq!(os_from(os_code(o)), Ok(o));
        }
        for t in TLS_CLASSES {
            assert_eq!(tls_from(tls_code(t)), Ok(t));
        }
    }

    #[test]
    fn lineages_round_trip_and_refuse_damage() {
        let mut l = Lineage::new([1, 2, 3, 4, 5, 6], [9; DIGEST_LEN], 1_700_000_000, Some(1_700_000_004), true);
        assert_eq!(decode_lineage(&encode_lineage(&l)), Ok(l));
        l.reissues = 3;
        let v = encode_lineage(&l);
        assert_eq!(v.len(), LINEAGE_LEN);
        assert_eq!(decode_lineage(&v), Ok(l));
        for n in 0..v.len() {
            assert!(decode_lineage(&v[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut long = v.clone();
        long.push(0);
        assert_eq!(decode_lineage(&long), Err(CodecError::Trailing));
        let mut flag = v.clone();
        flag[LINEAGE_LEN - 1] = 8;
        assert_eq!(decode_lineage(&flag), Err(CodecError::Invalid));
        let mut version = v;
        version[0] = 9;
        assert_eq!(decode_lineage(&version), Err(CodecError::Version(9)));
    }
}
