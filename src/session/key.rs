//! Session keys: a keyed hash of the cookie or token, the only form in which a session
//! identity is ever stored, logged or compared.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// 16 bytes of HMAC-SHA256: collisions are out of reach for any realistic session
/// count, and the record stays small.
pub const SESSION_KEY_LEN: usize = 16;
/// Hash keys are 32 random bytes (hex in a file).
pub const HASH_KEY_LEN: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub [u8; SESSION_KEY_LEN]);

impl SessionKey {
    /// 32 lower-case hex characters, written into a stack buffer.
    pub fn hex(&self) -> HexKey {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; SESSION_KEY_LEN * 2];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        HexKey(out)
    }

    pub fn parse_hex(s: &str) -> Option<SessionKey> {
        let bytes = s.as_bytes();
        if bytes.len() != SESSION_KEY_LEN * 2 {
            return None;
        }
        let mut out = [0u8; SESSION_KEY_LEN];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(SessionKey(out))
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.hex().as_str())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

pub struct HexKey([u8; SESSION_KEY_LEN * 2]);

impl HexKey {
    pub fn as_str(&self) -> &str {
        // invariant: only hex digits are written.
        std::str::from_utf8(&self.0).expect("hex is ASCII")
    }
}

/// The secret that turns raw cookies into [`SessionKey`]s. Replicas must share it (a
/// `hash_key_file`), or each would see the others' sessions as new.
#[derive(Clone)]
pub struct HashKey {
    current: [u8; HASH_KEY_LEN],
    /// The key before a rotation; sessions hashed with it are looked up under it too.
    previous: Option<[u8; HASH_KEY_LEN]>,
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    #[error("cannot read hash key file {}: {source}", path.display())]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("hash key file {} must hold {HASH_KEY_LEN} bytes as {} hex characters", path.display(), HASH_KEY_LEN * 2)]
    Format { path: std::path::PathBuf },
    #[error("no system randomness for a generated hash key: {0}")]
    Random(getrandom::Error),
}

impl HashKey {
    pub fn new(current: [u8; HASH_KEY_LEN], previous: Option<[u8; HASH_KEY_LEN]>) -> HashKey {
        HashKey { current, previous }
    }

    /// A fresh random key, used when the operator configures none.
    pub fn generate() -> Result<HashKey, HashKeyError> {
        let mut k = [0u8; HASH_KEY_LEN];
        getrandom::fill(&mut k).map_err(HashKeyError::Random)?;
        Ok(HashKey { current: k, previous: None })
    }

    /// Reads a key file: the first line is the current key, an optional second line the
    /// previous one (kept during a rotation).
    pub fn from_file(path: &Path) -> Result<HashKey, HashKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| HashKeyError::Read { path: path.to_path_buf(), source })?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let parse = |l: &str| -> Option<[u8; HASH_KEY_LEN]> {
            let bytes = l.as_bytes();
            if bytes.len() != HASH_KEY_LEN * 2 {
                return None;
            }
            let mut out = [0u8; HASH_KEY_LEN];
            for (i, pair) in bytes.chunks(2).enumerate() {
                out[i] = ((pair[0] as char).to_digit(16)? * 16 + (pair[1] as char).to_digit(16)?) as u8;
            }
            Some(out)
        };
        let format = || HashKeyError::Format { path: path.to_path_buf() };
        let current = lines.next().and_then(parse).ok_or_else(format)?;
        let previous = match lines.next() {
            Some(l) => Some(parse(l).ok_or_else(format)?),
            None => None,
        };
        Ok(HashKey { current, previous })
    }

    fn hash_with(key: &[u8; HASH_KEY_LEN], domain: &[u8], value: &[u8]) -> SessionKey {
        // invariant: HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&(domain.len() as u32).to_be_bytes());
        mac.update(domain);
        mac.update(value);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; SESSION_KEY_LEN];
        out.copy_from_slice(&full[..SESSION_KEY_LEN]);
        SessionKey(out)
    }

    /// The session key for a secret `value` from `domain` (the cookie name, `bearer`,
    /// or `sid`), so equal values from different places never collide.
    pub fn session_key(&self, domain: &[u8], value: &[u8]) -> SessionKey {
        HashKey::hash_with(&self.current, domain, value)
    }

    /// The key the same value had under the previous hash key, during a rotation.
    pub fn previous_session_key(&self, domain: &[u8], value: &[u8]) -> Option<SessionKey> {
        self.previous.as_ref().map(|k| HashKey::hash_with(k, domain, value))
    }

    /// A MAC over arbitrary bytes (signed state for step-up).
    pub fn mac(&self, purpose: &[u8], data: &[u8]) -> [u8; 32] {
        // invariant: HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.current).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_keyed_domain_separated_and_hex_round_trip() {
        let a = HashKey::new([1; 32], None);
        let b = HashKey::new([2; 32], None);
        let k = a.session_key(b"session", b"abc");
        assert_eq!(k, a.session_key(b"session", b"abc"));
        assert_ne!(k, b.session_key(b"session", b"abc"));
        assert_ne!(k, a.session_key(b"other", b"abc"));
        // Length-prefixed domain: ("ab","c") and ("a","bc") differ.
        assert_ne!(a.session_key(b"ab", b"c"), a.session_key(b"a", b"bc"));
        assert_eq!(SessionKey::parse_hex(k.hex().as_str()), Some(k));
        assert!(!format!("{:?}", a).contains("01"));
    }

    #[test]
    fn key_file_with_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, format!("# current\n{}\n{}\n", "ab".repeat(32), "cd".repeat(32))).unwrap();
        let k = HashKey::from_file(&p).unwrap();
        let old = HashKey::new([0xcd; 32], None);
        assert_eq!(k.previous_session_key(b"s", b"v"), Some(old.session_key(b"s", b"v")));
        std::fs::write(&p, "short\n").unwrap();
        assert!(matches!(HashKey::from_file(&p), Err(HashKeyError::Format { .. })));
    }
}
