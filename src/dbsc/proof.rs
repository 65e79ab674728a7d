//! The DBSC proof: a JWT the browser signs with its device key (spec §"DBSC Proof JWT
//! Syntax"). Header `typ` is `dbsc+jwt` and `alg` is `ES256` or `RS256` (tether never
//! accepts `none`: a proof must prove possession); `jwk` carries the new public key on
//! registration and must be absent on refresh; the payload's `jti` is the challenge.
//!
//! Pure functions of the token (and, on refresh, the stored key): whether the challenge
//! is one tether issued, and unspent, is the caller's part.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::session::device::{DeviceAlg, DeviceKey, MAX_KEY_BYTES};

/// Longest proof read: an RS256 registration with a 4096-bit key is under 2 KiB.
pub const MAX_PROOF: usize = 8 << 10;

/// RSA moduli accepted: 2048 to 4096 bits.
const RSA_MIN: usize = 256;
const RSA_MAX: usize = 512;

crate::labels::labels! {
    impl Display elsewhere;
    /// Why a proof was refused (the audit detail of `dbsc_refused`).
    #[derive(thiserror::Error)]
    pub enum ProofError {
        #[error("the proof is not a well-formed JWT")]
        Malformed = "proof_malformed",
        #[error("the proof's typ is not dbsc+jwt")]
        Type = "proof_wrong_type",
        #[error("the proof's algorithm is not ES256 or RS256")]
        Algorithm = "proof_algorithm",
        #[error("a registration proof carries no public key")]
        KeyMissing = "proof_key_missing",
        #[error("a refresh proof carries a public key")]
        KeyUnexpected = "proof_key_unexpected",
        #[error("the proof's public key is unusable for its algorithm")]
        KeyUnusable = "proof_key_unusable",
        #[error("the proof's signature does not verify")]
        Signature = "proof_bad_signature",
    }
}

/// A registration proof that verified against the key it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub key: DeviceKey,
    /// The challenge it answers.
    pub jti: String,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
}

/// The legacy layout (the spec's own example, the first origin trial) put `jwk` in the
/// payload.
#[derive(Deserialize)]
struct LegacyClaims {
    jwk: Option<Jwk>,
}

/// What the header says before anything is trusted, read as plain JSON so `none` and
/// unknown algorithms are named as such rather than as parse failures.
#[derive(Deserialize)]
struct RawHeader {
    typ: Option<String>,
    alg: Option<String>,
}

fn precheck(jwt: &str) -> Result<DeviceAlg, ProofError> {
    if jwt.len() > MAX_PROOF || jwt.split('.').count() != 3 {
        return Err(ProofError::Malformed);
    }
    let head = jwt.split('.').next().unwrap_or("");
    let bytes = URL_SAFE_NO_PAD.decode(head).map_err(|_| ProofError::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)?;
    if !raw.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("dbsc+jwt")) {
        return Err(ProofError::Type);
    }
    match raw.alg.as_deref() {
        Some("ES256") => Ok(DeviceAlg::Es256),
        Some("RS256") => Ok(DeviceAlg::Rs256),
        _ => Err(ProofError::Algorithm),
    }
}

/// Verifies a registration proof: typ and algorithm, the public key it carries (in the
/// header; in the payload only in the legacy layout), and its signature by that key.
pub fn verify_registration(jwt: &str) -> Result<Registration, ProofError> {
    let alg = precheck(jwt)?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| ProofError::Malformed)?;
    let jwk = match header.jwk {
        Some(jwk) => jwk,
        None => jsonwebtoken::dangerous::insecure_decode_claims::<LegacyClaims>(jwt).ok().and_then(|c| c.jwk).ok_or(ProofError::KeyMissing)?,
    };
    let key = device_key(&jwk, alg)?;
    let jti = verify(jwt, &key)?;
    Ok(Registration { key, jti })
}

/// Verifies a refresh proof against the session's registered key; returns its `jti`.
pub fn verify_refresh(jwt: &str, key: &DeviceKey) -> Result<String, ProofError> {
    let alg = precheck(jwt)?;
    if alg != key.alg {
        return Err(ProofError::Algorithm);
    }
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| ProofError::Malformed)?;
    if header.jwk.is_some() {
        return Err(ProofError::KeyUnexpected);
    }
    verify(jwt, key)
}

fn verify(jwt: &str, key: &DeviceKey) -> Result<String, ProofError> {
    let (alg, decoding) = decoding_key(key)?;
    let mut v = Validation::new(alg);
    // A proof's freshness is its challenge; it has no registered claims to check.
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    match jsonwebtoken::decode::<Claims>(jwt, &decoding, &v) {
        Ok(data) => Ok(data.claims.jti),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => ProofError::Signature,
            ErrorKind::InvalidAlgorithm => ProofError::Algorithm,
            _ => ProofError::Malformed,
        }),
    }
}

/// The stored form of a JWK, refused unless it fits the proof's algorithm: a P-256
/// point for ES256, an RSA key of 2048 to 4096 bits for RS256.
fn device_key(jwk: &Jwk, alg: DeviceAlg) -> Result<DeviceKey, ProofError> {
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| ProofError::KeyUnusable);
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(p), DeviceAlg::Es256) if p.curve == EllipticCurve::P256 => {
            let (x, y) = (b64(&p.x)?, b64(&p.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(ProofError::KeyUnusable);
            }
            let bytes: Vec<u8> = x.into_iter().chain(y).collect();
            Ok(DeviceKey { alg, bytes: bytes.into(), split: 32 })
        }
        (AlgorithmParameters::RSA(p), DeviceAlg::Rs256) => {
            let n = b64(&p.n)?;
            let e = b64(&p.e)?;
            let n: &[u8] = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
            if !(RSA_MIN..=RSA_MAX).contains(&n.len()) || e.is_empty() || e.len() > 8 || n.len() + e.len() > MAX_KEY_BYTES {
                return Err(ProofError::KeyUnusable);
            }
            let bytes: Vec<u8> = n.iter().copied().chain(e).collect();
            // invariant: n is at most RSA_MAX bytes, so the split fits a u16.
            Ok(DeviceKey { alg, bytes: bytes.into(), split: n.len() as u16 })
        }
        _ => Err(ProofError::KeyUnusable),
    }
}

fn decoding_key(key: &DeviceKey) -> Result<(Algorithm, DecodingKey), ProofError> {
    let (a, b) = key.bytes.split_at(usize::from(key.split).min(key.bytes.len()));
    match key.alg {
        DeviceAlg::Es256 => {
            let k = DecodingKey::from_ec_components(&URL_SAFE_NO_PAD.encode(a), &URL_SAFE_NO_PAD.encode(b)).map_err(|_| ProofError::KeyUnusable)?;
            Ok((Algorithm::ES256, k))
        }
        DeviceAlg::Rs256 => Ok((Algorithm::RS256, DecodingKey::from_rsa_raw_components(a, b))),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};

    use super::*;

    struct Device {
        enc: EncodingKey,
        jwk: Jwk,
    }

    fn device() -> Device {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        Device { enc, jwk }
    }

    fn sign(d: &Device, typ: Option<&str>, jwk: bool, payload: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = typ.map(str::to_owned);
        h.jwk = jwk.then(|| d.jwk.clone());
        encode(&h, &payload, &d.enc).unwrap()
    }

    fn unsigned(header: serde_json::Value, payload: serde_json::Value) -> String {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", part(header), part(payload))
    }

    #[test]
    fn a_registration_then_refreshes_verify_against_the_registered_key() {
        let d = device();
        let reg = verify_registration(&sign(&d, Some("dbsc+jwt"), true, serde_json::json!({"jti": "c1"}))).unwrap();
        assert_eq!((reg.jti.as_str(), reg.key.alg, reg.key.bytes.len()), ("c1", DeviceAlg::Es256, 64));
        let jti = verify_refresh(&sign(&d, Some("dbsc+jwt"), false, serde_json::json!({"jti": "c2"})), &reg.key).unwrap();
        assert_eq!(jti, "c2");
        // The legacy layout, jwk in the payload, still registers.
        let legacy = sign(&d, Some("dbsc+jwt"), false, serde_json::json!({"jti": "c3", "jwk": d.jwk, "aud": "https://x/reg", "iat": 1}));
        assert_eq!(verify_registration(&legacy).unwrap().key, reg.key);
    }

    #[test]
    fn hostile_proofs_are_refused_with_their_reason() {
        let (d, other) = (device(), device());
        let key = verify_registration(&sign(&d, Some("dbsc+jwt"), true, serde_json::json!({"jti": "c"}))).unwrap().key;
        let good_refresh = sign(&d, Some("dbsc+jwt"), false, serde_json::json!({"jti": "c"}));
        let cut_signature = {
            // One character of the signature changed: still base64url, no longer valid.
            let at = good_refresh.len() - 10;
            let c = if &good_refresh[at..=at] == "A" { "B" } else { "A" };
            format!("{}{c}{}", &good_refresh[..at], &good_refresh[at + 1..])
        };
        let swapped_payload = {
            let parts: Vec<&str> = good_refresh.split('.').collect();
            format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(r#"{"jti":"other"}"#), parts[2])
        };
        // (proof, on registration, on refresh against the registered key, why)
        type Row = (String, Option<ProofError>, Option<ProofError>, &'static str);
        let rows: Vec<Row> = vec![
            (unsigned(serde_json::json!({"alg": "none", "typ": "dbsc+jwt"}), serde_json::json!({"jti": "c"})), Some(ProofError::Algorithm), Some(ProofError::Algorithm), "alg none"),
            (unsigned(serde_json::json!({"alg": "HS256", "typ": "dbsc+jwt"}), serde_json::json!({"jti": "c"})), Some(ProofError::Algorithm), Some(ProofError::Algorithm), "a symmetric algorithm"),
            (sign(&d, Some("JWT"), true, serde_json::json!({"jti": "c"})), Some(ProofError::Type), Some(ProofError::Type), "typ JWT"),
            (sign(&d, None, true, serde_json::json!({"jti": "c"})), Some(ProofError::Type), Some(ProofError::Type), "no typ"),
            (sign(&d, Some("dbsc+jwt"), false, serde_json::json!({"jti": "c"})), Some(ProofError::KeyMissing), None, "no key on registration"),
            (sign(&d, Some("dbsc+jwt"), true, serde_json::json!({"jti": "c"})), None, Some(ProofError::KeyUnexpected), "a key on refresh"),
            (sign(&other, Some("dbsc+jwt"), false, serde_json::json!({"jti": "c"})), Some(ProofError::KeyMissing), Some(ProofError::Signature), "signed by another key"),
            (cut_signature, Some(ProofError::KeyMissing), Some(ProofError::Signature), "a damaged signature"),
            (swapped_payload, Some(ProofError::KeyMissing), Some(ProofError::Signature), "a payload swapped under the signature"),
            ("a.b".to_owned(), Some(ProofError::Malformed), Some(ProofError::Malformed), "two parts"),
            ("!!.!!.!!".to_owned(), Some(ProofError::Malformed), Some(ProofError::Malformed), "not base64"),
            ("x".repeat(MAX_PROOF + 1), Some(ProofError::Malformed), Some(ProofError::Malformed), "too long"),
        ];
        for (jwt, on_registration, on_refresh, why) in rows {
            assert_eq!(verify_registration(&jwt).err(), on_registration, "registration: {why}");
            assert_eq!(verify_refresh(&jwt, &key).err(), on_refresh, "refresh: {why}");
        }
        // A key in the header that is not the one that signed: the signature fails.
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("dbsc+jwt".into());
        h.jwk = Some(other.jwk.clone());
        let lying = encode(&h, &serde_json::json!({"jti": "c"}), &d.enc).unwrap();
        assert_eq!(verify_registration(&lying).err(), Some(ProofError::Signature));
        // An RSA key claimed for ES256 is unusable.
        let rsa = Jwk { algorithm: AlgorithmParameters::RSA(jsonwebtoken::jwk::RSAKeyParameters { key_type: Default::default(), n: URL_SAFE_NO_PAD.encode([1u8; 256]), e: "AQAB".into() }), common: Default::default() };
        assert_eq!(device_key(&rsa, DeviceAlg::Es256).err(), Some(ProofError::KeyUnusable));
        assert!(device_key(&rsa, DeviceAlg::Rs256).is_ok());
    }
}
