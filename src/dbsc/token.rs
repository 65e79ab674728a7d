//! The values tether hands a DBSC browser, all keyed by the session and the hash key, so
//! none of them has to be stored to be checked: the session identifier, the challenges
//! a proof must name as its `jti`, and the short-lived bound cookie.
//!
//! Each carries its own lifetime under a MAC; nothing here ever holds the console's
//! cookie or any other raw credential, only the session's keyed hash.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::session::{HashKey, Secs, SessionKey};

const SESSION_ID: &[u8] = b"tether-dbsc-session-id";
const CHALLENGE: &[u8] = b"tether-dbsc-challenge";
const BOUND: &[u8] = b"tether-dbsc-bound-cookie";

/// MAC bytes kept in a challenge or cookie: 128 bits is beyond guessing within any
/// lifetime these values have.
const TAG: usize = 16;
/// Random bytes in a challenge, so two issued in the same second differ.
const NONCE: usize = 12;
const CHALLENGE_BYTES: usize = 4 + NONCE + TAG;
const COOKIE_BYTES: usize = 4 + 4 + TAG;

/// A clock a few seconds apart between replicas must not refuse what another just
/// minted.
const SKEW: Secs = 30;

/// The session identifier given to the browser: a keyed digest of the session key, so
/// it names the session without being the key the audit log and admin API use.
pub fn session_id(key: &HashKey, session: &SessionKey) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mac = key.mac(SESSION_ID, &session.0);
    mac[..TAG].iter().flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]).map(char::from).collect()
}

/// Whether `claimed` (a `Sec-Secure-Session-Id`) names `session`; compared in constant
/// time, as the spec advises against timing side channels.
pub fn is_session_id(key: &HashKey, session: &SessionKey, claimed: &str) -> bool {
    bool::from(session_id(key, session).as_bytes().ct_eq(claimed.as_bytes()))
}

/// A challenge for `session`, answerable until `now + ttl`; `None` without system
/// randomness (no challenge is better than a predictable one).
pub fn challenge(key: &HashKey, session: &SessionKey, now: Secs, ttl: Secs) -> Option<String> {
    let mut nonce = [0u8; NONCE];
    getrandom::fill(&mut nonce).ok()?;
    let until = now.saturating_add(ttl);
    let mut out = Vec::with_capacity(CHALLENGE_BYTES);
    out.extend_from_slice(&until.to_be_bytes());
    out.extend_from_slice(&nonce);
    let tag = challenge_tag(key, session, &out);
    out.extend_from_slice(&tag);
    Some(URL_SAFE_NO_PAD.encode(out))
}

fn challenge_tag(key: &HashKey, session: &SessionKey, head: &[u8]) -> [u8; TAG] {
    let mut data = Vec::with_capacity(session.0.len() + head.len());
    data.extend_from_slice(&session.0);
    data.extend_from_slice(head);
    let mac = key.mac(CHALLENGE, &data);
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&mac[..TAG]);
    tag
}

/// Why a proof's `jti` is not a challenge tether issued for this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("not a challenge tether issued for this session")]
    Forged,
    #[error("the challenge has expired")]
    Expired,
}

/// A verified challenge: its tag identifies it in the single-use record, and `until`
/// says how long that record must remember it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub id: [u8; TAG],
    pub until: Secs,
}

/// Checks that `jti` is a live challenge issued for `session`. Single use is the
/// caller's part ([`super::spent`]).
pub fn check_challenge(key: &HashKey, session: &SessionKey, jti: &str, now: Secs, ttl: Secs) -> Result<Challenge, ChallengeError> {
    let bytes = decode_exact::<CHALLENGE_BYTES>(jti).ok_or(ChallengeError::Forged)?;
    let (head, tag) = bytes.split_at(4 + NONCE);
    if !bool::from(challenge_tag(key, session, head).ct_eq(tag)) {
        return Err(ChallengeError::Forged);
    }
    let until = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    // A challenge claiming to live longer than any tether issues was not issued by it.
    if until > now.saturating_add(ttl).saturating_add(SKEW) {
        return Err(ChallengeError::Forged);
    }
    if until < now {
        return Err(ChallengeError::Expired);
    }
    let mut id = [0u8; TAG];
    id.copy_from_slice(tag);
    Ok(Challenge { id, until })
}

/// A bound cookie's value: when it was issued and until when it answers for the
/// session, under a MAC over both and the session key.
pub fn bound_cookie(key: &HashKey, session: &SessionKey, issued: Secs, expires: Secs) -> String {
    let mut out = Vec::with_capacity(COOKIE_BYTES);
    out.extend_from_slice(&issued.to_be_bytes());
    out.extend_from_slice(&expires.to_be_bytes());
    let tag = cookie_tag(key, session, &out);
    out.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(out)
}

fn cookie_tag(key: &HashKey, session: &SessionKey, head: &[u8]) -> [u8; TAG] {
    let mut data = Vec::with_capacity(session.0.len() + head.len());
    data.extend_from_slice(&session.0);
    data.extend_from_slice(head);
    let mac = key.mac(BOUND, &data);
    let mut tag = [0u8; TAG];
    tag.copy_from_slice(&mac[..TAG]);
    tag
}

/// What a request's bound cookie says for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// No bound cookie at all.
    Absent,
    /// A bound cookie that is expired, forged, or minted for another session.
    Invalid,
    /// A bound cookie tether minted for this session, unexpired; `issued` is when the
    /// key proof behind it was made.
    Valid { issued: Secs },
}

/// Judges the bound cookie values a request carries (several may arrive; one valid is
/// enough). Expiry is enforced here, whatever the client's cookie jar did with it.
pub fn read_bound<'a>(key: &HashKey, session: &SessionKey, values: impl Iterator<Item = &'a str>, now: Secs) -> Bound {
    let mut seen = Bound::Absent;
    for v in values {
        seen = Bound::Invalid;
        let Some(bytes) = decode_exact::<COOKIE_BYTES>(v) else { continue };
        let (head, tag) = bytes.split_at(8);
        if !bool::from(cookie_tag(key, session, head).ct_eq(tag)) {
            continue;
        }
        let issued = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let expires = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if expires > now && issued <= now.saturating_add(SKEW) {
            return Bound::Valid { issued };
        }
    }
    seen
}

/// Decodes unpadded base64url of exactly `N` bytes (longer text is refused before
/// decoding, so a hostile value costs nothing).
fn decode_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != (4 * N).div_ceil(3) {
        return None;
    }
    URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Secs = 1_800_000_000;

    fn keys() -> (HashKey, SessionKey, SessionKey) {
        let k = HashKey::new([3; 32], None);
        (k.clone(), k.session_key(b"session", b"a"), k.session_key(b"session", b"b"))
    }

    #[test]
    fn challenges_are_bound_to_their_session_and_lifetime() {
        let (k, a, b) = keys();
        let c = challenge(&k, &a, NOW, 300).unwrap();
        assert!(check_challenge(&k, &a, &c, NOW + 10, 300).is_ok());
        assert_eq!(check_challenge(&k, &b, &c, NOW + 10, 300), Err(ChallengeError::Forged), "another session's");
        assert_eq!(check_challenge(&k, &a, &c, NOW + 301, 300), Err(ChallengeError::Expired));
        assert_eq!(check_challenge(&HashKey::new([4; 32], None), &a, &c, NOW, 300), Err(ChallengeError::Forged), "another key's");
        for bad in ["", "x", &c[1..], &format!("{c}A"), &c.replace(|ch: char| ch.is_ascii_digit(), "Q")] {
            if bad != c {
                assert!(check_challenge(&k, &a, bad, NOW, 300).is_err(), "{bad:?}");
            }
        }
        assert_ne!(challenge(&k, &a, NOW, 300), challenge(&k, &a, NOW, 300), "random per issue");
    }

    #[test]
    fn bound_cookies_are_bound_to_their_session_and_expire() {
        let (k, a, b) = keys();
        let v = bound_cookie(&k, &a, NOW, NOW + 600);
        assert_eq!(read_bound(&k, &a, [v.as_str()].into_iter(), NOW + 1), Bound::Valid { issued: NOW });
        assert_eq!(read_bound(&k, &b, [v.as_str()].into_iter(), NOW + 1), Bound::Invalid);
        assert_eq!(read_bound(&k, &a, [v.as_str()].into_iter(), NOW + 600), Bound::Invalid, "expired at its end");
        assert_eq!(read_bound(&k, &a, std::iter::empty(), NOW), Bound::Absent);
        assert_eq!(read_bound(&k, &a, ["junk", v.as_str()].into_iter(), NOW), Bound::Valid { issued: NOW }, "one valid value is enough");
        let mut forged = URL_SAFE_NO_PAD.decode(&v).unwrap();
        forged[7] ^= 1;
        assert_eq!(read_bound(&k, &a, [URL_SAFE_NO_PAD.encode(forged).as_str()].into_iter(), NOW), Bound::Invalid, "an extended expiry");
    }

    #[test]
    fn session_ids_are_stable_and_not_the_key() {
        let (k, a, b) = keys();
        let id = session_id(&k, &a);
        assert_eq!(id, session_id(&k, &a));
        assert_ne!(id, session_id(&k, &b));
        assert_ne!(id, a.hex().as_str());
        assert!(is_session_id(&k, &a, &id) && !is_session_id(&k, &b, &id) && !is_session_id(&k, &a, ""));
    }
}
