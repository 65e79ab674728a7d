//! A session's registered device key (Device Bound Session Credentials): the public key
//! a browser proved it holds, and the state of a demanded re-proof. Kept here, beside
//! the record that holds it, so the store and its codec need nothing from the DBSC flow.
//!
//! Stored as the raw key components, not as JWK text: an ES256 key is 64 bytes.

use super::record::Secs;

/// The algorithms a device key may use (the spec's `ES256` and `RS256`; never `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAlg {
    Es256,
    Rs256,
}

impl DeviceAlg {
    pub fn code(self) -> u8 {
        match self {
            DeviceAlg::Es256 => 1,
            DeviceAlg::Rs256 => 2,
        }
    }

    pub fn from_code(b: u8) -> Option<DeviceAlg> {
        match b {
            1 => Some(DeviceAlg::Es256),
            2 => Some(DeviceAlg::Rs256),
            _ => None,
        }
    }
}

/// Longest RSA modulus kept (4096 bits) plus its exponent: a key beyond it is refused at
/// registration, so a stored key is always small.
pub const MAX_KEY_BYTES: usize = 512 + 8;

/// A public key: for ES256 the P-256 point's `x ‖ y` (32 bytes each); for RS256 the
/// modulus `n` followed by the exponent `e`, split at `split`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    pub alg: DeviceAlg,
    pub bytes: Box<[u8]>,
    /// Where `e` starts in `bytes` (RS256); the point's half for ES256.
    pub split: u16,
}

/// The binding a registration made: read on every request of the session, so it sits in
/// the record's out-of-line part (`record::Extra`), which an unbound session without
/// step-ups does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBinding {
    pub key: DeviceKey,
    pub registered: Secs,
    /// When tether last demanded a fresh key proof on a risk signal (0: none
    /// outstanding). A bound cookie issued before it no longer answers for the session.
    pub demanded: Secs,
}
